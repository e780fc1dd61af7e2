"""The command line: a PC-DARTS search end to end, reproducibility, clean errors."""

import json
import os
import subprocess
import sys

import pytest

from bnas_tf import genotypes as gt

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = [sys.executable, "-m", "bnas_tf.launch"]
DEMO = LAUNCH + ["--flagfile=configs/demo.flags"]
ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
TIMEOUT = 900


def _run(args, **kwargs):
    return subprocess.run(args, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=TIMEOUT, **kwargs)


def _history(model_dir):
    with open(os.path.join(model_dir, "search_history.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def _check_genotype(path):
    genotype = gt.load(str(path))  # validates: known ops, input ranges, 2 inputs per node
    for cell_type in gt.CELL_TYPES:
        edges, _ = genotype.cell(cell_type)
        assert all(op != "none" for op, _ in edges)
        assert len(edges) == 8
    return genotype


PCDARTS = DEMO + ["--mode=search", "--search=pcdarts", "--search_epochs=2", "--arch_freeze_epochs=1"]


def test_pcdarts_search_end_to_end_and_reproducible(tmp_path):
    """Two PC-DARTS searches with one seed, side by side: the same genotype."""
    dirs = [tmp_path / "a", tmp_path / "b"]
    processes = [
        subprocess.Popen(PCDARTS + [f"--model_dir={d}"], cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for d in dirs
    ]
    for process in processes:
        _, err = process.communicate(timeout=TIMEOUT)
        assert process.returncode == 0, err[-4000:]
    first, second = (_check_genotype(d / "genotype.json") for d in dirs)
    assert first == second
    assert (dirs[0] / "normal.png").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--binarize=foo"], "binarize"),
        (["--dataset=mnist"], "dataset"),
        (["--k=9"], "k"),
        (["--mode=train", "--genotype=NOT_A_GENOTYPE"], "NOT_A_GENOTYPE"),
        (["--mode=search", "--dataset=cifar10", "--data_dir={tmp}"], "cifar10"),
        (["--mode=export"], "No trained model"),
    ],
)
def test_bad_input_gives_a_clear_error(tmp_path, flags, message):
    flags = [f.replace("{tmp}", str(tmp_path / "empty")) for f in flags]
    result = _run(DEMO + [f"--model_dir={tmp_path / 'run'}"] + flags)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
