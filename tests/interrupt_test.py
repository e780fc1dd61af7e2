"""Ctrl-C and SIGTERM: recorded, acted upon after the current step, one message; a second one raises at once.

The command-line runs (a search stopped by either signal, then resumed by the same command to
the genotype of an uninterrupted run) are in resume_test.py, beside the SIGKILL one.
"""

import signal

import pytest

from bnas_tf import interrupt


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_the_first_signal_is_recorded_for_the_loops_the_second_raises(signum, capsys):
    # The first never raises (inside a finalizer Python would swallow it); the loops' check() does.
    try:
        interrupt._handler(signum, None)
        assert interrupt.requested()
        with pytest.raises(KeyboardInterrupt):
            interrupt.check()
        with pytest.raises(KeyboardInterrupt):
            interrupt._handler(signal.SIGINT, None)  # a second one of either kind
        notice = capsys.readouterr().err
        assert notice.count("\n") == 1 and "stopping after the current step" in notice
        if signum == signal.SIGTERM:
            assert "SIGTERM" in notice and interrupt.reason() == "Terminated (SIGTERM)"
        else:
            assert "Ctrl-C" in notice and interrupt.reason() == "Interrupted"
    finally:
        interrupt.reset()
    interrupt.check()  # nothing requested: returns
    assert interrupt.reason() == "Interrupted"


def test_install_routes_sigint_and_sigterm_through_the_handler():
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        interrupt.install()
        assert signal.getsignal(signal.SIGINT) is interrupt._handler
        assert signal.getsignal(signal.SIGTERM) is interrupt._handler  # preemption stops like a Ctrl-C
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
