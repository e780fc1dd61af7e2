"""Ctrl-C: recorded, acted upon after the current step, one message; a second one raises at once."""

import signal
import subprocess
import time

import pytest

from bnas_tf import interrupt


def test_the_first_ctrl_c_is_recorded_for_the_loops_the_second_raises():
    # The first never raises (inside a finalizer Python would swallow it); the loops' check() does.
    try:
        interrupt._handler(signal.SIGINT, None)
        assert interrupt.requested()
        with pytest.raises(KeyboardInterrupt):
            interrupt.check()
        with pytest.raises(KeyboardInterrupt):
            interrupt._handler(signal.SIGINT, None)
    finally:
        interrupt._requested.clear()
    interrupt.check()  # nothing requested: returns


@pytest.mark.slow
def test_ctrl_c_stops_a_search_with_one_message(tmp_path):
    from cli_util import DEMO, ENV, REPO, TIMEOUT

    args = DEMO + ["--mode=search", f"--model_dir={tmp_path}", "--k=2", "--steps_per_epoch=50"]
    process = subprocess.Popen(args, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + TIMEOUT
    try:
        while not (tmp_path / "tensorboard").exists() and time.time() < deadline:  # the search has started
            assert process.poll() is None, process.communicate()[1][-3000:]
            time.sleep(0.2)
        time.sleep(2.0)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr[-3000:]
    assert "Interrupted" in stderr and "run the same command again to resume" in stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr
    assert not (tmp_path / "genotype.json").exists()
