"""The small JSON files that hold a search's state between units.

The Oracle's and the tuner's files, the result of the last unit
(pending_unit.json) and the current phase (phase.json). Each is written
through a temporary file and a rename, so that a search killed at any moment
leaves the old file or the new one, never half of one. Local paths use
`os.replace`; other file systems (gs://...) go through `tf.io.gfile`, as
Keras-Tuner reads its project directory.
"""

import json
import os

import tensorflow as tf


def write(path, obj, indent=None):
    """Writes `obj` as JSON to `path` atomically (see the module docstring)."""
    text = json.dumps(obj, indent=indent)
    tmp = path + ".tmp"
    if "://" not in path:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
        return
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(text)
    tf.io.gfile.rename(tmp, path, overwrite=True)


class Unreadable(Exception):
    """A state file that cannot be read, is not JSON, or holds no JSON object."""


def read(path):
    """The JSON object (a dict) in `path`; None when there is no such file.

    Raises `Unreadable` for anything else; the callers decide what that costs them.
    """
    if not tf.io.gfile.exists(path):
        return None
    try:
        with tf.io.gfile.GFile(path) as f:
            state = json.load(f)
    except (OSError, ValueError, tf.errors.OpError) as err:
        raise Unreadable(f"{path}: {err}") from err
    if not isinstance(state, dict):
        raise Unreadable(f"{path} holds a JSON {type(state).__name__}, not an object.")
    return state


def settings_changes(path, settings):
    """Records `settings` (a JSON-able dict) in `path` if it holds none; else the differences
    from the recorded ones, {key: (recorded, now)} (empty: the same settings).

    Raises `Unreadable` for a file that is there but cannot be read.
    """
    settings = json.loads(json.dumps(settings))  # tuples as lists, as read back
    saved = read(path)
    if saved is None:
        write(path, settings, indent=1)
        return {}
    return {key: (saved.get(key), settings.get(key))
            for key in sorted(set(saved) | set(settings)) if saved.get(key) != settings.get(key)}


def describe(changes):
    """"key=recorded (now current), ..." of `settings_changes`'s result."""

    def shown(value):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."

    return ", ".join(f"{key}={shown(old)} (now {shown(new)})" for key, (old, new) in changes.items())
