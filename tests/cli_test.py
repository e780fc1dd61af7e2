"""The command line: a PC-DARTS search end to end, reproducibility, clean errors."""

import subprocess

import pytest


from cli_util import DEMO, ENV, REPO, TIMEOUT, check_genotype, run  # noqa: E402


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
    first, second = (check_genotype(d / "genotype.json") for d in dirs)
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
    result = run(DEMO + [f"--model_dir={tmp_path / 'run'}"] + flags)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
