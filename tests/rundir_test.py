"""bnas_tf.rundir: --restart clears exactly its set, a killed restart is finished, killed writes' litter goes.

The command-line run of --restart=search on a finished search is in resume_test.py.
"""

import logging
import os

import pytest

from bnas_tf import rundir
from bnas_tf.errors import ConfigError

SEARCH = {
    "checkpoints/checkpoint", "checkpoints/ckpt-3.index", "checkpoints/ckpt-3.data-00000-of-00001",
    "tuner/oracle.json", "tuner/tuner0.json", "tuner/trial_0001/trial.json",
    "tensorboard/search/events.out.tfevents.1.host", "search_history.jsonl", "genotype.json", "normal.png",
    "reduce.png", "search_cost.json", "elapsed.json", "search_settings.json", "pending_unit.json", "phase.json",
}
TRAIN = {"train/checkpoints/checkpoint", "train/checkpoints/ckpt-2.index", "train/train_settings.json",
         "train/tensorboard/train/events.out.tfevents.1.host", "train/model.keras", "train/results.json",
         "train/sample_inputs.npy"}
EXPORT = {"export/summary.json", "export/model.tflite", "export/saved_model/saved_model.pb"}
# Not bnas_tf's: a restart leaves them, whatever it removes.
USER = {"notes.txt", "tensorboard/mine/events.out.tfevents.2.host", "checkpoints_old/ckpt-1.index",
        "genotype_v1.json"}


def _make(root, paths):
    for path in paths:
        full = root / path
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_text(path)


def _files(root):
    return {os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files}


@pytest.mark.parametrize("what, kept", [
    ("none", SEARCH | TRAIN | EXPORT | USER),
    ("train", SEARCH | USER),  # the export is of the trained network
    ("search", USER),  # the training and the export are of the search's genotype
    ("all", USER),
])
def test_each_restart_removes_exactly_its_set(tmp_path, what, kept):
    _make(tmp_path, SEARCH | TRAIN | EXPORT | USER)
    removed = rundir.restart(tmp_path, what)
    assert _files(tmp_path) == kept
    assert set(removed) == {p.split("/")[0] if not p.startswith("tensorboard/") else "tensorboard/search"
                            for p in (SEARCH | TRAIN | EXPORT | USER) - kept}
    assert not list(tmp_path.glob(rundir.MARKER_PREFIX + "*"))


def test_a_search_restart_takes_the_emptied_tensorboard_directory_too(tmp_path):
    _make(tmp_path, SEARCH)
    rundir.restart(tmp_path, "search")
    assert os.listdir(tmp_path) == []


def test_an_unknown_restart_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"restart.*Received: restart='everything'"):
        rundir.restart(tmp_path, "everything")


def test_a_restart_killed_half_way_is_finished_by_the_next_start(tmp_path, monkeypatch):
    """A kill after a few renames leaves the marker: the next run's start finishes the restart
    before anything reads the directory, so no half search (checkpoints gone, Oracle kept) is left."""
    _make(tmp_path, SEARCH | TRAIN | USER)
    renames = []
    real_rename = rundir._rename

    def killed_after_two(source, target):
        if len(renames) == 2:
            raise KeyboardInterrupt  # stands for the kill
        renames.append(source)
        real_rename(source, target)

    monkeypatch.setattr(rundir, "_rename", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        rundir.restart(tmp_path, "search")
    monkeypatch.setattr(rundir, "_rename", real_rename)
    assert not (tmp_path / "checkpoints").exists() and (tmp_path / "genotype.json").exists()  # half done
    assert (tmp_path / (rundir.MARKER_PREFIX + "search")).is_dir()
    assert rundir.finish_interrupted_restarts(tmp_path) == ["search"]
    assert _files(tmp_path) == USER
    assert rundir.finish_interrupted_restarts(tmp_path) == []  # nothing left to finish


def test_a_delete_killed_after_the_renames_is_finished_too(tmp_path):
    _make(tmp_path, USER)
    _make(tmp_path / (rundir.MARKER_PREFIX + "train"), TRAIN)  # every path moved, the marker not yet deleted
    assert rundir.finish_interrupted_restarts(tmp_path) == ["train"]
    assert _files(tmp_path) == USER


STRAY = {
    "checkpoints/ckpt-5_temp/part-00000-of-00001.index", "checkpoints/checkpoint.tmp" + "0123456789abcdef" * 2,
    "train/checkpoints/ckpt-4_temp/part-00000-of-00001.data-00000-of-00001",
    "train/.worker_1/checkpoints/ckpt-4_temp/part-00000-of-00001.index",
    "tuner/oracle.json.tmp", "tuner/tuner0.json.tmp", "tuner/trial_0002/trial.json.tmp",
    "pending_unit.json.tmp", "elapsed.json.tmp", "phase.json.tmp", "search_settings.json.tmp", "genotype.json.tmp",
    "train/train_settings.json.tmp", "export/.export-staging-x1y2/model.tflite",
}
# What a stray temporary's name resembles, and a user's .tmp file: kept.
LOOKALIKES = {"checkpoints/ckpt-5.index", "checkpoints/checkpoint", "tuner/oracle.json", "notes.tmp",
              "checkpoints_old/ckpt-1_temp/x", "export/model.tflite", "data/cache.tmp"}


def test_stray_temporaries_are_removed_with_one_line_each(tmp_path, caplog):
    _make(tmp_path, STRAY | LOOKALIKES)
    with caplog.at_level(logging.WARNING):
        removed = rundir.remove_stray_temporaries(tmp_path)
    assert _files(tmp_path) == LOOKALIKES
    strays = {p.split("_temp/")[0] + "_temp" if "_temp/" in p else
              "export/" + p.split("/")[1] if p.startswith("export/") else p for p in STRAY}
    assert {os.path.relpath(p, tmp_path) for p in removed} == strays
    lines = [r.getMessage() for r in caplog.records if "left by a write that was interrupted" in r.getMessage()]
    assert len(lines) == len(strays) and all(any(s in line for line in lines) for s in strays)
    assert rundir.remove_stray_temporaries(tmp_path) == []


def test_the_names_agree_with_the_modules_that_write_them():
    from bnas_tf import export, train
    from bnas_tf.face import data as face_data
    from bnas_tf.search import history, pcdarts

    assert pcdarts.SETTINGS_FILE in rundir.SEARCH_PATHS and pcdarts.Searcher.ELAPSED_FILE in rundir.SEARCH_PATHS
    assert history.FILENAME in rundir.SEARCH_PATHS
    assert export._STAGING_PREFIX == rundir.EXPORT_STAGING_PREFIX
    assert {face_data.META_FILE, face_data.LABELS_FILE} <= set(rundir._TOP_LEVEL_FILES)
    assert train.CHECKPOINT_DIR == "checkpoints"
