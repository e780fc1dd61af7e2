"""Ctrl-C and SIGTERM that always stop a run, with one message.

Python turns SIGINT into a `KeyboardInterrupt` at whatever bytecode runs
next. When that is a finalizer (TensorFlow frees graphs and functions in
`__del__`), Python prints "Exception ignored in ..." and goes on: the
interrupt is lost and the search runs to its end. So the launcher's handler
(`install()`) only records the first Ctrl-C, and the training and search
loops call `check()` after every step, which raises `KeyboardInterrupt`
there: the run stops within one step, at a point where nothing half-written
is left. A second Ctrl-C raises at once.

SIGTERM, what a scheduler sends before it preempts a job (Kubernetes, Slurm,
spot and preemptible VMs, then SIGKILL after a grace period), takes the same
path. Its default action kills the process at once, in the middle of whatever
it writes; handled here, the step in flight finishes and the run stops as
after a Ctrl-C, so that the same command resumes it.
"""

import signal
import sys
import threading

_requested = threading.Event()
_signal = [None]  # the signal that was recorded first

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_NOTICES = {
    signal.SIGINT: "bnas_tf: interrupted: stopping after the current step (Ctrl-C again to stop at once).\n",
    signal.SIGTERM: "bnas_tf: terminated (SIGTERM): stopping after the current step (a second SIGTERM or "
                    "Ctrl-C stops at once).\n",
}


def _handler(signum, frame):
    del frame
    if _requested.is_set():
        raise KeyboardInterrupt
    _signal[0] = signum
    _requested.set()
    sys.stderr.write(_NOTICES.get(signum, _NOTICES[signal.SIGINT]))


def install():
    """Routes SIGINT and SIGTERM through the handler above (main thread only, as `signal` requires)."""
    if threading.current_thread() is threading.main_thread():
        for signum in SIGNALS:
            signal.signal(signum, _handler)


def requested():
    """Whether a Ctrl-C or a SIGTERM was recorded."""
    return _requested.is_set()


def reason():
    """What stopped the run, for its last message: 'Terminated (SIGTERM)' or 'Interrupted'."""
    return "Terminated (SIGTERM)" if _signal[0] == signal.SIGTERM else "Interrupted"


def reset():
    """Forgets a recorded signal (tests, and a caller that goes on after handling one)."""
    _signal[0] = None
    _requested.clear()


def check():
    """Raises `KeyboardInterrupt` if a Ctrl-C or a SIGTERM was recorded."""
    if _requested.is_set():
        raise KeyboardInterrupt
