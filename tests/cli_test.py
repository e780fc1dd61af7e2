"""The command line: a PC-DARTS search end to end, reproducibility, clean errors."""

import pytest


from cli_util import DEMO, LAUNCH, check_genotype, run  # noqa: E402


# alpha/beta train from the first epoch: one step graph to trace (the frozen-alpha step is
# exercised by the BNAS warm-up in search_test.py).
PCDARTS = LAUNCH + ["--flagfile=configs/demo.flags", "--mode=search", "--search=pcdarts", "--search_epochs=2",
                    "--arch_freeze_epochs=0", "--steps_per_epoch=3"]


@pytest.mark.slow
def test_pcdarts_search_end_to_end(tmp_path):
    """Plain PC-DARTS (the baseline) through the command line: a valid genotype and its diagrams.

    Reproducibility with one seed is shown by the BNAS kill-and-resume test
    (`launch_test.py`), which ends with the genotype of an uninterrupted run.
    """
    model_dir = tmp_path / "pcdarts"
    result = run(PCDARTS + [f"--model_dir={model_dir}"])
    assert result.returncode == 0, result.stderr[-4000:]
    check_genotype(model_dir / "genotype.json")
    assert (model_dir / "normal.png").exists() and (model_dir / "reduce.png").exists()
    assert "PC-DARTS epoch 2/2" in result.stderr
    assert "--k is set but not used: only --search=bnas reads it." in result.stderr  # the demo's BNAS flags


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--binarize=foo"], "binarize"),
        (["--dataset=mnist"], "dataset"),
        (["--k=9"], "k"),
        (["--mode=train", "--genotype=NOT_A_GENOTYPE"], "NOT_A_GENOTYPE"),
        (["--mode=search", "--dataset=cifar10", "--data_dir={tmp}"], "cifar10"),
        (["--mode=export"], "No trained model"),
        (["--mode=search", "--search=pcdarts", "--search_epochs=2", "--arch_freeze_epochs=2"], "arch_freeze_epochs"),
        (["--mode=search", "--warmup_epochs=1", "--warmup_freeze_epochs=2"], "warmup_freeze_epochs"),
        # Named as the flag the user set, before the warm-up (not as the data's batch_size after it).
        (["--mode=search", "--trial_batch_size=5000"], "Invalid `trial_batch_size`"),
        (["--mode=train", "--genotype=DARTS_V2", "--restart=search"], "--restart=search removes the search"),
    ],
)
def test_bad_input_gives_a_clear_error(tmp_path, flags, message):
    flags = [f.replace("{tmp}", str(tmp_path / "empty")) for f in flags]
    result = run(DEMO + [f"--model_dir={tmp_path / 'run'}"] + flags)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
