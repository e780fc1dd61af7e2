"""The search's small state files: atomic writes, and what a damaged one costs."""

import json
import logging
import os
import types

import pytest
import tensorflow as tf

from bnas_tf.search import pcdarts, statefile
from bnas_tf.search.tuner import BnasTuner


def test_write_replaces_the_file_whole_and_read_gives_it_back(tmp_path):
    path = str(tmp_path / "state.json")
    assert statefile.read(path) is None  # no file yet
    statefile.write(path, {"unit": 3, "kind": "trial"}, indent=1)
    statefile.write(path, {"unit": 4})
    assert statefile.read(path) == {"unit": 4}
    assert not os.path.exists(path + ".tmp")
    with open(path, "w") as f:
        f.write('{"unit": ')  # torn by something else
    with pytest.raises(statefile.Unreadable, match="state.json"):
        statefile.read(path)
    with open(path, "w") as f:
        f.write("[1, 2]")  # JSON, but not a state object
    with pytest.raises(statefile.Unreadable, match="not an object"):
        statefile.read(path)


def test_unreadable_pending_result_means_the_trial_runs_again(tmp_path, caplog):
    searcher = types.SimpleNamespace(model_dir=str(tmp_path), unit=tf.Variable(5))
    statefile.write(str(tmp_path / "pending_unit.json"), {"unit": 5, "kind": "trial", "trial_id": "03"})
    assert pcdarts.Searcher.pending(searcher)["trial_id"] == "03"
    searcher.unit.assign(6)  # a later unit: the file is stale
    assert pcdarts.Searcher.pending(searcher) is None
    (tmp_path / "pending_unit.json").write_text("[1, 2")
    with caplog.at_level(logging.WARNING):
        assert pcdarts.Searcher.pending(searcher) is None
    assert "pending_unit.json is unreadable" in caplog.text


def test_unreadable_phase_file_restarts_the_phase_count_from_the_current_unit(tmp_path, caplog):
    searcher = types.SimpleNamespace(model_dir=str(tmp_path), unit=tf.Variable(7))
    tuner = types.SimpleNamespace(searcher=searcher)
    assert BnasTuner._phase_start(tuner, "pcdarts-2") == 7
    searcher.unit.assign(9)
    assert BnasTuner._phase_start(tuner, "pcdarts-2") == 7  # the same phase, resumed
    path = tmp_path / "phase.json"
    path.write_text("")
    with caplog.at_level(logging.WARNING):
        assert BnasTuner._phase_start(tuner, "pcdarts-2") == 9
    assert "phase.json is unreadable" in caplog.text
    assert json.loads(path.read_text()) == {"key": "pcdarts-2", "start_unit": 9}
