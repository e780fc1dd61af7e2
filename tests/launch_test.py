"""End to end through the command line: the demo (--mode=all).

The killed and resumed search is `resume_test.py` (a shorter search, so that
the two files run side by side on the test workers)."""

import json

import pytest

from bnas_tf import genotypes as gt

from cli_util import DEMO, LAUNCH, check_genotype, read_history, run  # noqa: E402

pytestmark = pytest.mark.slow  # end-to-end runs of the command line


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo config, --mode=all: search (K 8 -> 1), training, export.

    Epochs are capped at 4 steps (--steps_per_epoch): every round, trial,
    traced graph, checkpoint and output of the demo, in about three quarters
    of its time (739 s against 1018 s in CI-like runs).
    """
    model_dir = tmp_path_factory.mktemp("demo")
    # The demo's evaluation network at its former, smaller size (its 10 epochs of 5 cells are
    # what the accuracy tests in learning_test.py exercise).
    result = run(DEMO + [f"--model_dir={model_dir}", "--steps_per_epoch=4", "--epochs=2", "--init_channels=8",
                         "--layers=3"])
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return model_dir, result


def test_1bit_demo_exports_bit_packed_convolutions(tmp_path):
    """configs/demo_1bit.flags end to end (1-bit BNAS search, training, export), smaller:
    its LCE model runs its binary convolutions as LceBconv2d."""
    demo_1bit = [a.replace("demo.flags", "demo_1bit.flags") for a in DEMO]
    # K from 4 (rounds K = 4, 3, 2): the 1-bit path of Algorithm 1 in a third of the demo's trials.
    result = run(demo_1bit + [f"--model_dir={tmp_path}", "--k=4", "--steps_per_epoch=1", "--search_init_channels=4",
                              "--epochs=1", "--init_channels=8", "--layers=3"])
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    history = read_history(tmp_path)
    rounds = [r for r in history if r["record"] == "round"]
    assert [r["k"] for r in rounds] == [4, 3, 2]
    # 1-bit Algorithm 1: O_smaller = O, ceil(K/2) samples per repetition (T = 1), UCB (Eq. 10).
    assert [r["num_trials"] for r in rounds] == [2, 2, 1]
    assert len([r for r in history if r["record"] == "trial"]) == 5
    assert all(len(r["o_smaller"]["normal"][0]) == r["k"] and "ucb_bonus" in r for r in rounds)
    with open(tmp_path / "export" / "model_lce.tflite", "rb") as f:
        assert b"LceBconv2d" in f.read()


def test_demo_search_runs_algorithm_1(demo):
    model_dir, _ = demo
    history = read_history(model_dir)
    rounds = [r for r in history if r["record"] == "round"]
    assert [r["k"] for r in rounds] == [8, 7, 6, 5, 4, 3, 2]  # 7 rounds, K from 8 to 1
    trials = [r for r in history if r["record"] == "trial"]
    # T = 1 in the demo: ceil(K/2) trials per round.
    assert len(trials) == sum((k + 1) // 2 for k in range(8, 1, -1))
    assert len({t["trial_id"] for t in trials}) == len(trials)  # none counted twice
    last = rounds[-1]
    for cell_type in gt.CELL_TYPES:
        assert all(len(ops) == 1 for ops in last["ops_left"][cell_type])
    check_genotype(model_dir / "genotype.json")


def test_demo_writes_every_output(demo):
    model_dir, result = demo
    for name in ("genotype.json", "normal.png", "reduce.png", "search_history.jsonl", "search_cost.json"):
        assert (model_dir / name).exists(), name
    with open(model_dir / "normal.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert any((model_dir / "tensorboard").rglob("events.out.tfevents.*"))
    export = model_dir / "export"
    for name in ("saved_model/saved_model.pb", "model.keras", "model.tflite", "model_lce.tflite", "summary.json"):
        assert (export / name).exists(), name
    with open(export / "summary.json") as f:
        summary = json.load(f)
    for key in ("params", "params_1bit", "params_32bit", "memory_float_bytes", "memory_binary_bytes",
                "macs_binary", "macs_float"):
        assert key in summary, key
    assert summary["params_1bit"] > 0
    assert summary.get("test_accuracy") is not None
    assert "CPU-hours" in result.stderr  # the search cost in the log
    with open(model_dir / "search_cost.json") as f:
        cost = json.load(f)
    # A new graph per round and per trial: their first calls are a real part of a demo search.
    assert 0 < cost["trace_seconds"] < cost["seconds"] and 0 < cost["checkpoint_seconds"] < cost["seconds"]
    assert "Traced the search step" in result.stderr


def test_export_alone_on_the_trained_run_directory(demo):
    """The README's `--mode=export --model_dir=DIR` and nothing else (the demo trained on
    the digits; the default --dataset is CIFAR-10, which is not there): the model loads
    because `import bnas_tf` registers its layers, and the export is checked on the test
    images that training saved beside the model."""
    model_dir, _ = demo
    assert (model_dir / "train" / "sample_inputs.npy").exists()
    result = run(LAUNCH + ["--mode=export", f"--model_dir={model_dir}"])
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "Export check" in result.stderr
    assert (model_dir / "export" / "model_lce.tflite").exists()


def test_demo_log_is_plain_text_without_tensorflow_noise(demo):
    """Redirected output (a log file, a cluster job): no progress-bar redraws or colours,
    no TensorFlow INFO lines, no warning about gradients an inference model never needs."""
    _, result = demo
    output = result.stdout + result.stderr
    assert "\x1b[" not in output and "\r" not in output
    assert "Sharding callback" not in output and "unsaved custom gradients" not in output
    assert "Test: accuracy" in output
