"""bnas_tf.face.verify: the 10-fold protocol against an independent transcription, known answers, errors.

- `kfold_accuracy` against a brute-force transcription written here (folds
  from the formula [i n / 10, (i + 1) n / 10) or from sklearn's unshuffled
  KFold, accuracy of every grid threshold computed pair by pair, the first
  maximisers grouped into runs, the middle of the first run), on scores
  that tie often;
- the chosen threshold reaches the best training accuracy of *any*
  threshold (brute force over the midpoints of the sorted scores) when the
  grid has a point in every gap, and is the middle of the lowest run of grid
  points that do;
- known answers: separable pairs -> 1.0, random pairs -> about 0.5, TAR@FAR
  on a case worked by hand;
- `embed` with and without flip against normalize(f(x) + f(flip(x))) on a
  tiny Keras model, over batches that do not divide N; `evaluate` pairs the
  interleaved images 2i, 2i + 1;
- `results_table`; bad inputs raise DataError or ConfigError.
"""

import dataclasses
import math
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from bnas_tf.errors import ConfigError, DataError  # noqa: E402
from bnas_tf.face import verify  # noqa: E402


def pairs_with_scores(scores, dim=3, seed=0):
    """Unnormalised embedding pairs whose cosine similarities are `scores`."""
    rng = np.random.default_rng(seed)
    n = len(scores)
    phi = np.arccos(np.clip(scores, -1.0, 1.0))
    e1 = np.zeros((n, dim))
    e2 = np.zeros((n, dim))
    e1[:, 0] = 1.0
    e2[:, 0], e2[:, 1] = np.cos(phi), np.sin(phi)
    # A random rotation and random norms: the protocol must not depend on either.
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    return (e1 @ q) * rng.uniform(0.5, 3.0, (n, 1)), (e2 @ q) * rng.uniform(0.5, 3.0, (n, 1))


def lattice_scores(n, seed, step=0.005, offset=0.37):
    """Scores on (j + offset) * step - 1 (many ties, none within 1e-4 / 3 of a grid point), and
    labels correlated with them (positives score higher on average) but not separable."""
    rng = np.random.default_rng(seed)
    issame = rng.random(n) < 0.5
    centre = np.where(issame, 0.3, -0.1)
    j = np.clip(np.round((centre + rng.normal(0.0, 0.35, n) + 1.0) / step - offset), 0, 2.0 / step - 1)
    return (j + offset) * step - 1.0, issame


# --------------------------------------------------------------------------
# The independent transcription of the 10-fold protocol
# --------------------------------------------------------------------------


def reference_folds(n, nfolds):
    if n % nfolds == 0:
        return [np.arange(i * n // nfolds, (i + 1) * n // nfolds) for i in range(nfolds)]
    from sklearn.model_selection import KFold

    return [test for _, test in KFold(n_splits=nfolds, shuffle=False).split(np.arange(n))]


def middle_of_first_run(indices):
    """The middle (the lower of two) of the first run of consecutive integers in sorted `indices`."""
    run = [indices[0]]
    for i in indices[1:]:
        if i != run[-1] + 1:
            break
        run.append(i)
    return run[(len(run) - 1) // 2]


def reference_protocol(e1, e2, issame, grid, nfolds=10):
    """Per fold: the accuracy of every grid threshold on the other folds, pair by pair; the middle
    of the lowest run of maximisers; its accuracy on the fold."""
    scores = np.array([a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) for a, b in zip(e1, e2)])
    accuracies, thresholds = [], []
    for test in reference_folds(len(scores), nfolds):
        train = np.setdiff1d(np.arange(len(scores)), test)
        predicted = scores[train][None, :] > grid[:, None]  # [thresholds, pairs]
        train_acc = (predicted == issame[train][None, :]).mean(axis=1)
        t = grid[middle_of_first_run(list(np.flatnonzero(train_acc == train_acc.max())))]
        thresholds.append(t)
        accuracies.append(np.mean((scores[test] > t) == issame[test]))
    return np.array(accuracies), np.array(thresholds)


@pytest.mark.parametrize("n", [600, 613])
def test_kfold_matches_brute_force_transcription(n):
    scores, issame = lattice_scores(n, seed=n)
    e1, e2 = pairs_with_scores(scores, seed=n)
    grid = np.arange(-1000, 1001) / 1000.0  # 1e-3 steps: ties between grid points and lattice gaps
    result = verify.kfold_accuracy(e1, e2, issame, thresholds=grid)
    accuracies, thresholds = reference_protocol(e1, e2, issame, grid)
    np.testing.assert_array_equal(result.thresholds, thresholds)
    np.testing.assert_allclose(result.fold_accuracies, accuracies, rtol=0, atol=1e-12)
    assert result.accuracy_mean == pytest.approx(accuracies.mean(), abs=1e-12)
    assert result.accuracy_std == pytest.approx(accuracies.std(), abs=1e-12)
    assert 0.6 < result.accuracy_mean < 0.95  # informative but not separable: the thresholds matter
    assert len(set(result.thresholds)) > 1


def test_ties_in_two_runs_take_the_middle_of_the_lower():
    """Scores 0.105 (neg), 0.205 (pos), 0.305 (neg), 0.405 (pos), the pattern once per fold: 3 of 4
    right for thresholds in [0.105, 0.205) and in [0.305, 0.405), 2 of 4 elsewhere. On the 0.01 grid
    the lower run is 0.11 .. 0.20 (ten points), whose middle (the lower of two) is 0.15; the mean
    of all tied thresholds, 0.255, would be no maximiser."""
    pattern = np.array([0.105, 0.205, 0.305, 0.405])
    same = np.array([False, True, False, True])
    scores, issame = np.tile(pattern, 10), np.tile(same, 10)
    e1, e2 = pairs_with_scores(scores, seed=4)
    grid = np.round(np.arange(0, 101) / 100, 2)
    result = verify.kfold_accuracy(e1, e2, issame, thresholds=grid)
    assert result.thresholds == (0.15,) * 10
    assert result.fold_accuracies == (0.75,) * 10
    _, thresholds = reference_protocol(e1, e2, issame, grid)
    assert tuple(thresholds) == result.thresholds


def test_a_score_equal_to_the_threshold_is_declared_different():
    """Exact scores: (1, 0) against (0, 1) -> 0, (3, 4) -> 0.6, (2, 0) -> 1. A pair is "same" only
    strictly above the threshold, in the fold accuracy and in TAR@FAR."""
    vectors = {0.0: [0.0, 1.0], 0.6: [3.0, 4.0], 1.0: [2.0, 0.0]}
    # Per fold: a negative at 0, positives at 0.6 and 1. On the grid 0, 0.3, 0.6, 0.9 the maximisers
    # are 0 and 0.3 (at 0.6 the 0.6 positive is wrong): the lower middle is 0. Accepting a positive
    # at the threshold would add 0.6 to the run (middle 0.3); accepting a negative would drop 0.
    fold = [(0.0, False), (0.6, True), (1.0, True)]
    e2 = np.array([vectors[score] for score, _ in fold] * 10)
    issame = np.array([same for _, same in fold] * 10)
    e1 = np.tile([1.0, 0.0], (len(e2), 1))
    result = verify.kfold_accuracy(e1, e2, issame, thresholds=[0.0, 0.3, 0.6, 0.9])
    assert result.thresholds == (0.0,) * 10 and result.accuracy_mean == 1.0
    # TAR@FAR 1e-2 over 100 negatives (k = 1): two negatives at 0.6 put the threshold at 0.6, where
    # the positive at 0.6 is not accepted and the one at 1 is.
    negatives = [0.6, 0.6] + [0.0] * 98
    e2 = np.array([vectors[v] for v in negatives + [0.6, 1.0]])
    issame = np.array([False] * 100 + [True, True])
    e1 = np.tile([1.0, 0.0], (len(e2), 1))
    assert verify.kfold_accuracy(e1, e2, issame, fars=(1e-2,)).tar_at_far == {1e-2: 0.5}


def test_default_grid_threshold_is_the_best_of_any_threshold():
    """With a lattice of scores 0.005 apart, every gap between distinct scores holds points of the
    default 1e-4 grid, so the grid's best training accuracy is the best of any threshold (brute force
    over the midpoints of the sorted distinct scores and beyond both ends); the chosen threshold
    reaches it, and sits in the middle of the lowest run of grid points that do."""
    scores, issame = lattice_scores(1000, seed=7)
    e1, e2 = pairs_with_scores(scores, seed=7)
    result = verify.kfold_accuracy(e1, e2, issame)
    assert len(np.unique(scores)) < 500  # many ties
    for test, threshold in zip(reference_folds(1000, 10), result.thresholds, strict=True):
        train = np.setdiff1d(np.arange(1000), test)
        s, same = scores[train], issame[train]
        distinct = np.unique(s)
        candidates = np.concatenate([[distinct[0] - 1.0], (distinct[1:] + distinct[:-1]) / 2, [distinct[-1] + 1.0]])
        best = max(np.mean((s > c) == same) for c in candidates)
        assert np.mean((s > threshold) == same) == best
        assert threshold in verify.DEFAULT_THRESHOLDS
        # Walk the grid down and up from the threshold while the accuracy stays the best.
        grid = verify.DEFAULT_THRESHOLDS
        i = int(np.flatnonzero(grid == threshold)[0])
        down = up = 0
        while i - down - 1 >= 0 and np.mean((s > grid[i - down - 1]) == same) == best:
            down += 1
        while i + up + 1 < len(grid) and np.mean((s > grid[i + up + 1]) == same) == best:
            up += 1
        assert up - down in (0, 1) and up + down >= 40  # the middle of a run across a 0.005 gap
        below = grid[: i - down][:, None]
        assert ((s[None, :] > below) == same[None, :]).mean(axis=1).max(initial=0.0) < best  # the lowest run


def test_separable_pairs_score_one():
    rng = np.random.default_rng(0)
    issame = np.repeat([True, False], 300)
    rng.shuffle(issame)
    scores = np.where(issame, rng.uniform(0.6, 0.99, 600), rng.uniform(-0.5, 0.4, 600))
    e1, e2 = pairs_with_scores(scores)
    result = verify.kfold_accuracy(e1, e2, issame)
    assert result.accuracy_mean == 1.0 and result.accuracy_std == 0.0
    assert result.fold_accuracies == (1.0,) * 10
    for test, t in zip(reference_folds(600, 10), result.thresholds, strict=True):
        train = np.setdiff1d(np.arange(600), test)
        top_negative, bottom_positive = scores[train][~issame[train]].max(), scores[train][issame[train]].min()
        assert top_negative <= t < bottom_positive  # mid-gap, not at its lower edge
        assert abs(t - (top_negative + bottom_positive) / 2) <= 1e-4
    assert result.tar_at_far == {1e-3: None, 1e-2: 1.0}  # 300 negatives: FAR 1e-3 needs 1000


def test_random_embeddings_score_about_half():
    rng = np.random.default_rng(1)
    e1, e2 = rng.normal(size=(2, 6000, 64))
    issame = rng.random(6000) < 0.5
    result = verify.kfold_accuracy(e1, e2, issame)
    assert abs(result.accuracy_mean - 0.5) < 0.03
    assert len(result.fold_accuracies) == len(result.thresholds) == 10
    for far, tar in result.tar_at_far.items():  # chance: TAR about FAR
        assert tar < far + 0.03


def test_tar_at_far_by_hand():
    """1000 negatives: 998 at score 0, one at 0.6, one at 0.8. FAR 1e-3 allows k = 1 false accept:
    threshold 0.6 (the 2nd highest), positives above it: 0.9, 0.7, 0.65 of five -> 0.6.
    FAR 1e-2 (k = 10): threshold 0, four positives above. FAR 1e-4: k = 0 -> None."""
    neg = np.concatenate([np.zeros(998), [0.6, 0.8]])
    pos = np.array([0.9, 0.7, 0.65, 0.55, -0.2])
    scores = np.concatenate([pos, neg])
    issame = np.concatenate([np.ones(5, bool), np.zeros(1000, bool)])
    e1, e2 = pairs_with_scores(scores, seed=3)
    result = verify.kfold_accuracy(e1, e2, issame, fars=(1e-4, 1e-3, 1e-2))
    assert result.tar_at_far[1e-4] is None
    assert result.tar_at_far[1e-3] == pytest.approx(3 / 5)
    assert result.tar_at_far[1e-2] == pytest.approx(4 / 5)
    # No positive pair: None.
    assert verify.tar_at_far(neg, np.zeros(1000, bool), 1e-2) is None


def test_issame_as_integers_and_result_is_frozen():
    scores, issame = lattice_scores(200, seed=5)
    e1, e2 = pairs_with_scores(scores)
    a = verify.kfold_accuracy(e1, e2, issame)
    b = verify.kfold_accuracy(e1.tolist(), e2.tolist(), issame.astype(int))
    assert a == b
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.accuracy_mean = 1.0


# --------------------------------------------------------------------------
# embed, evaluate, results_table
# --------------------------------------------------------------------------


def tiny_model(seed=0):
    """A model whose embedding changes under a left-right flip."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 5, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(8)(x))


@pytest.mark.parametrize("batch_size", [3, 64])
def test_embed_with_and_without_flip(batch_size):
    model = tiny_model()
    images = np.random.default_rng(0).normal(size=(7, 6, 5, 3)).astype(np.float32)
    f = np.asarray(model(images, training=False), np.float64)
    f_flip = np.asarray(model(images[:, :, ::-1, :].copy(), training=False), np.float64)
    assert np.abs(f - f_flip).max() > 1e-2  # the flip matters for this model

    def normalize(v):
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    got = verify.embed(model, images, batch_size=batch_size)
    assert got.shape == (7, 8) and got.dtype == np.float32
    np.testing.assert_allclose(got, normalize(f + f_flip), atol=1e-5)
    np.testing.assert_allclose(verify.embed(model, images, batch_size=batch_size, flip=False), normalize(f),
                               atol=1e-5)


@dataclasses.dataclass
class PairSet:
    name: str
    images: np.ndarray
    issame: np.ndarray


def test_evaluate_pairs_interleaved_images():
    """Same pairs are one image twice (score 1), different pairs an image and its negative (score
    -1: the tiny model is linear, its biases 0): the set is separable only when pair i is images
    2i and 2i + 1."""
    rng = np.random.default_rng(2)
    n = 40
    issame = np.arange(n) % 2 == 0
    rng.shuffle(issame)
    images = rng.normal(size=(2 * n, 6, 5, 3)).astype(np.float32)
    images[1::2] = np.where(issame[:, None, None, None], images[0::2], -images[0::2])
    vset = PairSet("toy", images, issame)
    model = tiny_model(1)
    result = verify.evaluate(model, vset, batch_size=16)
    assert result.accuracy_mean == 1.0
    embeddings = verify.embed(model, images, batch_size=16)
    assert result == verify.kfold_accuracy(embeddings[0::2], embeddings[1::2], issame)
    halves = verify.kfold_accuracy(embeddings[:n], embeddings[n:], issame)
    assert halves.accuracy_mean < 0.9  # the other layout would not be separable


def test_results_table():
    a = verify.VerificationResult(0.99125, 0.00351, (0.99,) * 10, (0.2,) * 10, {1e-3: 0.9512, 1e-2: 0.98})
    b = verify.VerificationResult(0.9, 0.0123, (0.9,) * 10, (0.2,) * 10, {1e-3: None, 1e-2: 0.5})
    table = verify.results_table({"lfw": a, "cfp_fp": b})
    assert table.splitlines() == [
        "| Set | Accuracy (%) | TAR@FAR=1e-3 (%) | TAR@FAR=1e-2 (%) |",
        "|---|---:|---:|---:|",
        "| lfw | 99.12 ± 0.35 | 95.12 | 98.00 |",
        "| cfp_fp | 90.00 ± 1.23 | n/a | 50.00 |",
    ]


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


def _pairs(n=20, d=4):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, d)), rng.normal(size=(n, d)), rng.random(n) < 0.5


@pytest.mark.parametrize("case,error,match", [
    ("length", DataError, "one shape"),
    ("issame_length", DataError, "one flag per pair"),
    ("few_pairs", DataError, "cannot make 10 folds"),
    ("nan", DataError, "non-finite"),
    ("inf", DataError, "non-finite"),
    ("issame_values", DataError, "booleans"),
    ("nfolds", ConfigError, "Invalid `nfolds`"),
    ("thresholds", ConfigError, "Invalid `thresholds`"),
    ("fars", ConfigError, "Invalid `fars`"),
])
def test_kfold_errors(case, error, match):
    e1, e2, issame = _pairs()
    kwargs = {}
    if case == "length":
        e2 = e2[:-1]
    elif case == "issame_length":
        issame = issame[:-1]
    elif case == "few_pairs":
        e1, e2, issame = e1[:9], e2[:9], issame[:9]
    elif case == "nan":
        e1[3, 1] = np.nan
    elif case == "inf":
        e2[0, 0] = np.inf
    elif case == "issame_values":
        issame = issame.astype(int) * 2
    elif case == "nfolds":
        kwargs["nfolds"] = 1
    elif case == "thresholds":
        kwargs["thresholds"] = [0.1, np.nan]
    elif case == "fars":
        kwargs["fars"] = (1e-3, 1.5)
    with pytest.raises(error, match=match):
        verify.kfold_accuracy(e1, e2, issame, **kwargs)


def test_embed_and_evaluate_errors():
    model = tiny_model()
    images = np.zeros((4, 6, 5, 3), np.float32)
    with pytest.raises(DataError, match="dtype uint8"):
        verify.embed(model, images.astype(np.uint8))
    with pytest.raises(DataError, match=r"\[N, H, W, C\]"):
        verify.embed(model, images[0])
    with pytest.raises(DataError, match=r"\[N, H, W, C\]"):
        verify.embed(model, images[:0])
    with pytest.raises(ConfigError, match="Invalid `batch_size`"):
        verify.embed(model, images, batch_size=0)
    with pytest.raises(ConfigError, match="Invalid `flip`"):
        verify.embed(model, images, flip="yes")
    with pytest.raises(DataError, match="non-finite embeddings for 1 of 4"):
        verify.embed(model, np.where(np.arange(4)[:, None, None, None] == 2, np.nan, images).astype(np.float32))
    inputs = keras.Input((6, 5, 3))
    with pytest.raises(DataError, match=r"\[batch, D\]"):
        verify.embed(keras.Model(inputs, keras.layers.Conv2D(2, 1)(inputs)), images)
    with pytest.raises(DataError, match="'odd'.*two images per pair"):
        verify.evaluate(model, PairSet("odd", np.zeros((5, 6, 5, 3), np.float32), np.ones(2, bool)))
    with pytest.raises(ConfigError, match="empty"):
        verify.results_table({})


def test_far_labels():
    assert [verify._far_label(f) for f in (1e-3, 1e-2, 1e-4, 0.05)] == ["1e-3", "1e-2", "1e-4", "0.05"]
    assert math.isclose(verify.DEFAULT_THRESHOLDS[1] - verify.DEFAULT_THRESHOLDS[0], 1e-4)
    assert verify.DEFAULT_THRESHOLDS[0] == -1.0 and verify.DEFAULT_THRESHOLDS[-1] == 1.0
