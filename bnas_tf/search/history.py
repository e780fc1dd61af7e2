"""The search history: one JSON record a line in `search_history.jsonl`.

The oracle writes a record per scored trial and per finished abandoning
round. Records are keyed (`("trial", trial_id)`, `("round", r)`); a record
whose key is already in the file is not written again, so replaying the
records after a restart never duplicates a line.

Every line is a JSON object with a `"record"` field naming its kind
(`"trial"` or `"round"`) and the fields given by the writer. `BnasOracle`
writes, per cell type ("normal", "reduce") and per edge (14 each):

    trial: trial_id, round, slot (index in the round's plan),
           ops {cell: [op name per edge]}, val_accuracy.
    round: round (1-based), k (K before abandoning), num_trials,
           o_smaller {cell: [[op names] per edge]},
           mean_accuracy {cell: [{op: ybar} per edge]}    (Eq. 7 inputs),
           likelihood {cell: [{op: s} per edge]}          (after Eq. 9, + Eq. 10
                                                           in 1-bit mode),
           abandoned {cell: [op name per edge]}           (Eq. 11),
           ops_left {cell: [[op names] per edge]}         (after abandoning),
           ucb_bonus {cell: [{op: bonus} per edge]}       (1-bit mode only).
"""

import json
import os

from absl import logging

from bnas_tf.errors import StateError

FILENAME = "search_history.jsonl"

# The field that identifies a record of each kind.
_KEY_FIELDS = {"trial": "trial_id", "round": "round"}


def _key(record):
    kind = record["record"]
    return (kind, record[_KEY_FIELDS[kind]])


class History:
    """Appends keyed JSON records to a `.jsonl` file, at most once per key.

    Args:
        path: the file to append to, or a directory (then
            `<path>/search_history.jsonl` is used). Parent directories are
            created on the first write.

    Raises:
        StateError: the existing file holds a line that is not a record
            (other than a last line cut short by a crash, which is dropped).
    """

    def __init__(self, path):
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, FILENAME)
        self.path = path
        self._records = []
        self._keys = set()
        self._load()

    def _load(self):
        if not os.path.exists(self.path):
            return
        with open(self.path, encoding="utf-8") as f:
            text = f.read()
        lines = text.split("\n")
        # A crash during a write can leave the last line cut short.
        torn = bool(lines[-1])
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                key = _key(record)
            except (ValueError, KeyError, TypeError) as e:
                if torn and number == len(lines):
                    logging.warning(
                        "Dropping the unfinished last line of %s (the search stopped while "
                        "writing it).",
                        self.path,
                    )
                    self._rewrite()
                    return
                raise StateError(
                    f"The search history {self.path} is corrupt (line {number}: {e}). "
                    "Delete the file to go on (it is only a log: the search state is kept in "
                    "oracle.json, but the records it held are lost), start the search over "
                    "with --restart=search, or use another --model_dir."
                ) from e
            self._records.append(record)
            self._keys.add(key)
        if torn:
            # The last line is a complete record without its newline.
            with open(self.path, "a", encoding="utf-8") as f:
                f.write("\n")

    def _rewrite(self):
        with open(self.path, "w", encoding="utf-8") as f:
            for record in self._records:
                f.write(json.dumps(record) + "\n")

    def has(self, kind, key):
        """Whether a record `(kind, key)` is already in the file."""
        return (kind, key) in self._keys

    def append(self, kind, record):
        """Appends `record` (a dict) as kind `"trial"` or `"round"`.

        Returns:
            True if the record was written, False if a record with the same
            key was already there.
        """
        if kind not in _KEY_FIELDS:
            raise ValueError(f"Unknown record kind. Received: kind={kind!r}")
        record = {"record": kind, **record}
        key = _key(record)
        if key in self._keys:
            return False
        line = json.dumps(record)
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
        self._records.append(json.loads(line))
        self._keys.add(key)
        return True

    def records(self, kind=None):
        """The records in file order, optionally only those of one kind."""
        return [r for r in self._records if kind is None or r["record"] == kind]
