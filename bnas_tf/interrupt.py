"""Ctrl-C that always stops a run, with one message.

Python turns SIGINT into a `KeyboardInterrupt` at whatever bytecode runs
next. When that is a finalizer (TensorFlow frees graphs and functions in
`__del__`), Python prints "Exception ignored in ..." and goes on: the
interrupt is lost and the search runs to its end. So the launcher's handler
(`install()`) only records the first Ctrl-C, and the training and search
loops call `check()` after every step, which raises `KeyboardInterrupt`
there: the run stops within one step, at a point where nothing half-written
is left. A second Ctrl-C raises at once.
"""

import signal
import sys
import threading

_requested = threading.Event()


def _handler(signum, frame):
    del signum, frame
    if _requested.is_set():
        raise KeyboardInterrupt
    _requested.set()
    sys.stderr.write("bnas_tf: interrupted: stopping after the current step (Ctrl-C again to stop at once).\n")


def install():
    """Routes SIGINT through the handler above (main thread only, as `signal` requires)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _handler)


def requested():
    """Whether a Ctrl-C was recorded."""
    return _requested.is_set()


def check():
    """Raises `KeyboardInterrupt` if a Ctrl-C was recorded."""
    if _requested.is_set():
        raise KeyboardInterrupt
