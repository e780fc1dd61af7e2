"""What bnas_tf keeps in a model directory: starting parts of it over, and clearing the litter of killed writes.

A model directory holds three things, each made from the one before:

- the search: its checkpoints, the Oracle's Keras-Tuner project (``tuner/``),
  ``search_history.jsonl``, the small state files (``search_settings.json``,
  ``elapsed.json``, ``pending_unit.json``, ``phase.json``), its TensorBoard
  logs (``tensorboard/search``) and its outputs (``genotype.json``, the cell
  diagrams, ``search_cost.json``);
- the training of a genotype (``train/``);
- its export (``export/``).

`restart` removes the parts that a run is to make again: ``search`` the search
and, since the training is that of its genotype, the training and the export;
``train`` the training and the export; ``all`` everything bnas_tf writes
there. As the search's restart already takes the training and the export made
from it, ``all`` removes the same paths as ``search``. Anything else in the
directory (a user's notes, other runs, face data converted into it by
``--mode=convert``, which is data and not a run) is left alone.

A restart killed half way must not leave half a search that a resume reads as
valid: a fresh supernet beside an Oracle in mid-round runs to a wrong genotype
with exit status 0. So a restart is rolled forward. It first makes the
directory ``.bnas_restart_<what>`` (one atomic mkdir: from then on the restart
counts as asked for), moves every doomed path into it (one rename each) and
then deletes it. A run that starts and finds such a directory finishes that
restart before it reads anything (`finish_interrupted_restarts`).

`remove_stray_temporaries` clears what a killed write leaves behind and
nothing reads: TensorFlow's ``ckpt-N_temp/`` directories and
``checkpoint.tmp<hex>`` lists, the ``*.tmp`` files of bnas_tf's
write-then-rename (`bnas_tf.search.statefile`, the genotype, the converted face
data's metadata), and the staging directories of an export.

Local paths use `os`; other file systems (gs://...) `tf.io.gfile`, whose
renames of directories on object stores copy object by object: there the
roll-forward still holds, the speed of one rename does not.
"""

import fnmatch
import os
import re
import shutil

from absl import logging

from bnas_tf.errors import bad_value

RESTARTS = ("none", "search", "train", "all")

# The search's paths, relative to the model directory: bnas_tf/search/pcdarts.py (checkpoints,
# tensorboard/search, search_settings.json, elapsed.json, pending_unit.json), tuner.py (the "tuner"
# project, phase.json, search_history.jsonl), outputs.py and viz.py (genotype.json, the diagrams,
# search_cost.json). tests/rundir_test.py checks these names against those modules.
SEARCH_PATHS = (
    "checkpoints", "tuner", os.path.join("tensorboard", "search"), "search_history.jsonl", "genotype.json",
    "normal.png", "reduce.png", "search_cost.json", "elapsed.json", "search_settings.json", "pending_unit.json",
    "phase.json",
)
TRAIN_PATHS = ("train",)  # bnas_tf.train and bnas_tf.face.train, under launch's --model_dir/train
EXPORT_PATHS = ("export",)
RESTART_PATHS = {
    "none": (),
    "search": SEARCH_PATHS + TRAIN_PATHS + EXPORT_PATHS,
    "train": TRAIN_PATHS + EXPORT_PATHS,
    "all": SEARCH_PATHS + TRAIN_PATHS + EXPORT_PATHS,
}
MARKER_PREFIX = ".bnas_restart_"
EXPORT_STAGING_PREFIX = ".export-staging-"  # bnas_tf.export's staging directories

# Where killed writes leave litter: (directory pattern relative to the model directory, regular
# expression of the stray names there). Each of these directories is bnas_tf's own, except the
# model directory itself, where only the temporaries of bnas_tf's files count.
_TOP_LEVEL_FILES = ("genotype.json", "search_settings.json", "elapsed.json", "pending_unit.json", "phase.json",
                    "meta.json", "labels.npy")
_CHECKPOINT_LITTER = r"ckpt-\d+_temp|checkpoint\.tmp[0-9a-f]{32}"
_STRAYS = (
    ("", "|".join(re.escape(name + ".tmp") for name in _TOP_LEVEL_FILES)),
    ("checkpoints", _CHECKPOINT_LITTER),
    ("tuner", r".+\.tmp"),
    (os.path.join("tuner", "trial_*"), r".+\.tmp"),
    ("train", r".+\.tmp"),
    (os.path.join("train", "checkpoints"), _CHECKPOINT_LITTER),
    (os.path.join("train", ".worker_*", "checkpoints"), _CHECKPOINT_LITTER),
    ("export", re.escape(EXPORT_STAGING_PREFIX) + r".+"),
)


def restart(model_dir, what):
    """Removes from `model_dir` what the restart `what` (one of `RESTARTS`) names; see the module
    docstring. Returns the removed paths, relative to `model_dir`."""
    if what not in RESTARTS:
        raise bad_value("restart", what, f"one of {', '.join(RESTARTS)}")
    if what == "none":
        return []
    return _roll_forward(os.fspath(model_dir), what)


def finish_interrupted_restarts(model_dir):
    """Finishes every restart that a kill stopped half way in `model_dir` (its marker directory is
    still there); returns the restarts finished."""
    model_dir = os.fspath(model_dir)
    finished = []
    for name in _listdir(model_dir):
        what = name[len(MARKER_PREFIX):] if name.startswith(MARKER_PREFIX) else None
        if what in RESTART_PATHS and what != "none" and _isdir(_join(model_dir, name)):
            logging.warning("Finishing the restart (%s) that was interrupted in %s.", what, model_dir)
            _roll_forward(model_dir, what)
            finished.append(what)
    return finished


def remove_stray_temporaries(model_dir):
    """Removes what killed writes left in `model_dir` (see the module docstring), one log line each;
    returns the removed paths."""
    model_dir = os.fspath(model_dir)
    stray = []
    for place, names in _STRAYS:
        pattern = re.compile(names)
        for directory in _glob(model_dir, place):
            stray += [_join(directory, name) for name in _listdir(directory) if pattern.fullmatch(name)]
    for path in stray:
        _delete(path)
        logging.warning("Removed %s, left by a write that was interrupted.", path)
    return stray


def _roll_forward(model_dir, what):
    """Moves the doomed paths of `what` into its marker directory, then deletes it."""
    trash = _join(model_dir, MARKER_PREFIX + what)
    _makedirs(trash)
    moved = []
    for relative in RESTART_PATHS[what]:
        source = _join(model_dir, relative)
        if not _exists(source):
            continue
        target = _join(trash, relative)
        _makedirs(os.path.dirname(target))
        if _exists(target):  # moved by an earlier, interrupted try and made again since: older
            _delete(target)
        _rename(source, target)
        moved.append(relative)
    tensorboard = _join(model_dir, "tensorboard")
    if _isdir(tensorboard) and not _listdir(tensorboard):
        _delete(tensorboard)
    _delete(trash)
    if moved:
        logging.info("Started over (%s): removed %s from %s.", what, ", ".join(moved), model_dir)
    return moved


# ---- files: local paths through os, others (gs://...) through tf.io.gfile ----------------------------------------

def _remote(path):
    return "://" in path


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def _join(directory, name):
    return f"{directory.rstrip('/')}/{name}" if _remote(directory) else os.path.join(directory, name)


def _exists(path):
    return _gfile().exists(path) if _remote(path) else os.path.lexists(path)


def _isdir(path):
    return _gfile().isdir(path) if _remote(path) else os.path.isdir(path) and not os.path.islink(path)


def _listdir(path):
    """The sorted names in directory `path`; none when it is not a directory."""
    if not _isdir(path):
        return []
    names = _gfile().listdir(path) if _remote(path) else os.listdir(path)
    return sorted(name.rstrip("/") for name in names)


def _glob(model_dir, place):
    """The directories that `place` (a pattern relative to `model_dir`, '' itself) matches."""
    found = [model_dir]
    for part in [p for p in place.split(os.sep) if p]:
        found = [_join(d, name) for d in found for name in _listdir(d) if fnmatch.fnmatchcase(name, part)]
    return [d for d in found if _isdir(d)]


def _makedirs(path):
    if _remote(path):
        _gfile().makedirs(path)
    else:
        os.makedirs(path, exist_ok=True)


def _rename(source, target):
    if _remote(source):
        _gfile().rename(source, target)
    else:
        os.replace(source, target)


def _delete(path):
    if _remote(path):
        if _gfile().isdir(path):
            _gfile().rmtree(path)
        else:
            _gfile().remove(path)
    elif _isdir(path):
        shutil.rmtree(path)
    else:
        os.remove(path)
