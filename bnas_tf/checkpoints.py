"""Checkpoint managers that trust the checkpoint files over their list.

`tf.train.CheckpointManager` learns which checkpoints exist from the list
file `<directory>/checkpoint`. When that list is missing, unreadable or names
a checkpoint whose files are gone, TensorFlow only warns: the run starts
again from scratch, writes `ckpt-1` over the good checkpoints' numbers and
then deletes them. `manager` rebuilds the list from the `ckpt-N.index` files
first, so a run resumes from its newest checkpoint on disk, and deleting a
bad checkpoint's files is enough to resume from the one before.
"""

import os
import re

import tensorflow as tf
from absl import logging
from google.protobuf import text_format

_INDEX = re.compile(r"^ckpt-(\d+)\.index$")


def on_disk(directory):
    """The checkpoint prefixes in `directory` with an index file, oldest (lowest N) first."""
    if not tf.io.gfile.isdir(directory):
        return []
    numbered = [(int(m.group(1)), name[: -len(".index")])
                for name in tf.io.gfile.listdir(directory) if (m := _INDEX.match(name))]
    return [os.path.join(directory, prefix) for _, prefix in sorted(numbered)]


def _listed(directory):
    """The newest checkpoint the list names, or None when the list is missing or unreadable."""
    try:
        state = tf.train.get_checkpoint_state(directory)
    except (tf.errors.OpError, ValueError, text_format.ParseError):
        return None
    if state is None or not state.model_checkpoint_path:
        return None
    path = state.model_checkpoint_path
    return path if os.path.isabs(path) or "://" in path else os.path.join(directory, path)


def manager(checkpoint, directory, max_to_keep):
    """`tf.train.CheckpointManager(checkpoint, directory, max_to_keep)`, its list first
    rebuilt from the files on disk when it does not name the newest one that exists."""
    files = on_disk(directory)
    listed = _listed(directory)
    if files and listed not in files:
        what = ("is missing or unreadable" if listed is None
                else f"names {os.path.basename(listed)}, whose files are gone")
        logging.warning("The checkpoint list in %s %s; rebuilt from the files on disk (%s), resuming from %s.",
                        directory, what, ", ".join(os.path.basename(f) for f in files), os.path.basename(files[-1]))
        tf.compat.v1.train.update_checkpoint_state(directory, files[-1], all_model_checkpoint_paths=files)
    return tf.train.CheckpointManager(checkpoint, directory, max_to_keep=max_to_keep)
