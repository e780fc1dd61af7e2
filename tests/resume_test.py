"""A BNAS search stopped in the middle of a round (SIGKILL, Ctrl-C, SIGTERM) and resumed by the
same command; a finished one started over with --restart=search.

The search is the demo's, shortened (K from 4: rounds K = 4, 3, 2 with 2, 2
and 1 trials; a few steps per epoch): the property is the same as for the
demo's 7 rounds, and it costs a third as much. The uninterrupted run of the
same command is the reference.
"""

import json
import shutil
import signal
import subprocess
import time

import pytest

from bnas_tf import rundir
from cli_util import DEMO, ENV, REPO, TIMEOUT, check_genotype, read_history, run  # noqa: E402

pytestmark = pytest.mark.slow  # end-to-end runs of the command line

SHORT = DEMO + ["--mode=search", "--k=4", "--t=1", "--v_epochs=0", "--warmup_epochs=1", "--steps_per_epoch=4",
                "--heldout_size=64"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("uninterrupted")
    result = run(SHORT + [f"--model_dir={model_dir}"])
    assert result.returncode == 0, result.stderr[-4000:]
    return model_dir


def _stop_mid_round_2(args, model_dir, signum, log_path=None):
    """Runs `args` and sends `signum` once a trial of round 2 has finished and the round has not;
    returns the exit status (its stderr goes to `log_path`: a pipe left unread could fill)."""
    log = open(log_path, "w") if log_path else subprocess.DEVNULL
    process = subprocess.Popen(args, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=log)
    history_path = model_dir / "search_history.jsonl"
    deadline = time.time() + TIMEOUT
    try:
        while time.time() < deadline:
            if history_path.exists():
                records = read_history(model_dir)
                round2 = [r for r in records if r["record"] == "trial" and r["round"] == 2]
                if round2 and not any(r["record"] == "round" and r["round"] == 2 for r in records):
                    break  # mid-round 2: a trial of it finished, the round has not
            assert process.poll() is None, "the search ended before it could be interrupted"
            time.sleep(0.1)
        process.send_signal(signum)
        return process.wait(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
        if log_path:
            log.close()


def _check_resumed(result, model_dir, reference):
    """The resumed search ends as the uninterrupted one: same genotype, every trial once."""
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Restored the search checkpoint" in result.stderr
    assert check_genotype(model_dir / "genotype.json") == check_genotype(reference / "genotype.json")
    history = read_history(model_dir)
    trials = [r["trial_id"] for r in history if r["record"] == "trial"]
    assert len(trials) == len(set(trials))  # no trial counted twice
    reference_trials = [r for r in read_history(reference) if r["record"] == "trial"]
    assert len(trials) == len(reference_trials) == 5  # none lost
    assert [r["k"] for r in history if r["record"] == "round"] == [4, 3, 2]


def test_killed_search_resumes_to_the_same_genotype(reference, tmp_path):
    """A real SIGKILL in the middle of round 2; the same command finishes the search."""
    model_dir = tmp_path / "resumed"
    args = SHORT + [f"--model_dir={model_dir}"]
    _stop_mid_round_2(args, model_dir, signal.SIGKILL)
    assert not (model_dir / "genotype.json").exists()
    with open(model_dir / "elapsed.json") as f:
        before = json.load(f)["seconds"]  # the killed process's time up to its last checkpoint
    # What a kill during a checkpoint write or a write-then-rename leaves (the review's #74, #76).
    litter = [model_dir / "checkpoints" / "ckpt-99_temp" / "part-00000-of-00001.index",
              model_dir / "tuner" / "oracle.json.tmp"]
    for path in litter:
        path.parent.mkdir(exist_ok=True)
        path.write_text("half")
    started = time.time()
    result = run(args)
    resumed_seconds = time.time() - started
    _check_resumed(result, model_dir, reference)
    assert not (model_dir / "checkpoints" / "ckpt-99_temp").exists() and not litter[1].exists()
    assert result.stderr.count("left by a write that was interrupted") == 2
    # The search cost (the paper's GPU-days) counts both processes, not the last one alone.
    with open(model_dir / "search_cost.json") as f:
        seconds = json.load(f)["seconds"]
    assert before < seconds < before + resumed_seconds


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl_c", "sigterm"])
def test_ctrl_c_or_sigterm_stops_a_search_with_one_message_and_it_resumes(reference, tmp_path, signum):
    """Ctrl-C, or the SIGTERM of a preemption: the step in flight finishes, exit status 130, one
    line that says how to go on, no traceback; the same command then ends where an uninterrupted
    run does."""
    model_dir = tmp_path / "stopped"
    args = SHORT + [f"--model_dir={model_dir}"]
    status = _stop_mid_round_2(args, model_dir, signum, log_path=tmp_path / "stopped.log")
    stderr = (tmp_path / "stopped.log").read_text()
    assert status == 130, stderr[-3000:]
    last = [line for line in stderr.splitlines() if line.startswith("bnas_tf: ")][-1]
    what = "Terminated (SIGTERM)" if signum == signal.SIGTERM else "Interrupted"
    assert last == (f"bnas_tf: {what}. What was checkpointed in {model_dir} is kept: run the same command again "
                    "to resume."), stderr[-3000:]
    assert "Traceback" not in stderr and "Exception ignored" not in stderr
    assert not (model_dir / "genotype.json").exists()
    _check_resumed(run(args), model_dir, reference)


def test_restart_search_starts_a_finished_search_over(reference, tmp_path):
    """--restart=search on a finished search: the search runs again from its warm-up, and its
    history holds the new run's trials only; files that are not bnas_tf's stay."""
    model_dir = tmp_path / "again"
    shutil.copytree(reference, model_dir)
    # Every path the search wrote is one that the restart removes: the list in rundir is whole.
    written = {p.name for p in model_dir.iterdir()}
    assert written <= {path.split("/")[0] for path in rundir.RESTART_PATHS["search"]}, written
    lines = (model_dir / "search_history.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    lines[0] = json.dumps({**first, "stale": True})  # a record of the old run, told apart
    (model_dir / "search_history.jsonl").write_text("\n".join(lines) + "\n")
    (model_dir / "train").mkdir()
    (model_dir / "train" / "results.json").write_text("{}")  # the training of the old genotype
    (model_dir / "notes.txt").write_text("mine")
    result = run(SHORT + [f"--model_dir={model_dir}", "--restart=search"])
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Restored the search checkpoint" not in result.stderr and "warmup epoch 1/1" in result.stderr
    history = read_history(model_dir)
    assert not any(r.get("stale") for r in history)
    assert history == read_history(reference)  # the same seed, a search from scratch: the same records
    assert check_genotype(model_dir / "genotype.json") == check_genotype(reference / "genotype.json")
    assert not (model_dir / "train").exists() and (model_dir / "notes.txt").read_text() == "mine"
    assert not list(model_dir.glob(rundir.MARKER_PREFIX + "*"))
