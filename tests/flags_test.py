"""The launcher's flags: every shipped config sets only what its run reads."""

import glob
import os

import pytest
from absl import flags

from bnas_tf import launch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "*.flags")))


@pytest.fixture
def parse():
    def parse(*args):
        launch.FLAGS.unparse_flags()
        launch.FLAGS(["launch", "--model_dir=unused", *args])
        return launch.ignored_flags(launch.FLAGS)

    yield parse
    launch.FLAGS.unparse_flags()


@pytest.mark.parametrize("config", CONFIGS, ids=os.path.basename)
def test_shipped_configs_set_nothing_their_search_ignores(parse, config):
    assert parse(f"--flagfile={config}") == []


def test_flags_that_the_search_ignores_are_named(parse):
    demo = f"--flagfile={os.path.join(REPO, 'configs', 'demo.flags')}"
    ignored = dict(parse(demo, "--search=pcdarts"))
    assert set(ignored) == {"k", "t", "v_epochs", "warmup_epochs", "warmup_freeze_epochs", "trial_batch_size"}
    assert "bnas" in ignored["k"]
    assert dict(parse(demo, "--search_epochs=3")) == {"search_epochs": "only --search=pcdarts reads it"}
    assert set(dict(parse(demo, "--binary_activations"))) == {"warmup_epochs", "warmup_freeze_epochs"}
    assert set(dict(parse(demo, "--delta=1"))) == {"delta"}  # UCB is off without binary activations
    assert parse(demo, "--delta=1", "--ucb") == []  # BNAS-dagger
    assert parse(demo, "--search=pcdarts", "--mode=train", "--k=3") == []  # no search: nothing to say


def test_face_and_classification_flags_are_named_where_unused(parse):
    demo = f"--flagfile={os.path.join(REPO, 'configs', 'demo.flags')}"
    face = f"--flagfile={os.path.join(REPO, 'configs', 'demo_face.flags')}"
    assert dict(parse(demo, "--head=cosface")) == {"head": "only the face datasets read it"}
    assert set(dict(parse(face, "--drop_path=0.1", "--auxiliary"))) == {"drop_path", "auxiliary"}
    assert parse(face, "--mode=train", "--head_margin=0.3") == []


@pytest.mark.parametrize("mode, restart, refused", [
    ("all", "search", False), ("search", "search", False), ("train", "search", True), ("export", "search", True),
    ("all", "train", False), ("train", "train", False), ("search", "train", True), ("export", "train", True),
    ("all", "all", False), ("search", "all", False), ("train", "all", True), ("convert", "all", True),
    ("export", "none", False), ("convert", "none", False),
])
def test_a_restart_that_the_mode_does_not_make_again_is_refused(parse, mode, restart, refused):
    """--restart=search with --mode=train would remove the genotype that the training reads, and
    run no search to make it again: only work lost."""
    from bnas_tf.errors import ConfigError

    parse(f"--mode={mode}", f"--restart={restart}")
    if refused:
        with pytest.raises(ConfigError, match=rf"--restart={restart} removes .* --mode={mode} does not make again"):
            launch._check_restart()
    else:
        launch._check_restart()
