"""Tests of bnas_tf.data: loaders, splits, augmentation, determinism, errors.

tfds datasets are mocked (`tfds.testing.mock_data`, no download); the
digits dataset is the real one shipped with scikit-learn.
"""

import functools

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from bnas_tf import data
from bnas_tf.errors import ConfigError, DataError

_MOCK_EXAMPLES = 80


def _mock(num_examples=_MOCK_EXAMPLES, **kwargs):
    return tfds.testing.mock_data(
        num_examples=num_examples, policy=tfds.testing.MockPolicy.USE_CODE,
        **kwargs)


def _labelled_imagenet(labels):
    """A mock `_as_dataset` yielding ImageNet examples with given labels."""

    def as_dataset(self, split, decoders=None, read_config=None, **kwargs):
        del split, read_config, kwargs
        features = self.info.features

        def examples():
            rng = np.random.RandomState(0)
            for i, label in enumerate(labels):
                shape = (24 + i % 5, 30 - i % 7, 3)
                yield features.encode_example({
                    "image": rng.randint(0, 256, shape, np.uint8),
                    "label": int(label),
                    "file_name": f"image_{i}.JPEG",
                })

        specs = features.get_serialized_info()
        signature = tf.nest.map_structure(
            lambda s: tf.TensorSpec(s.shape, s.tf_dtype), specs)
        ds = tf.data.Dataset.from_generator(examples,
                                            output_signature=signature)
        ds = ds.apply(tf.data.experimental.assert_cardinality(len(labels)))
        return ds.map(functools.partial(features.decode_example,
                                        decoders=decoders))

    return as_dataset


def _batches(ds):
    return [(x.numpy(), y.numpy()) for x, y in ds]


def _assert_same_batches(first, second):
    assert len(first) == len(second)
    for (x1, y1), (x2, y2) in zip(first, second):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)


def _assert_images(x, y, size, num_classes):
    assert x.dtype == np.float32 and y.dtype == np.int32
    assert x.shape[1:] == (size, size, 3)
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert y.min() >= 0 and y.max() < num_classes


# --- Specs and errors ------------------------------------------------------


def test_spec_values():
    assert data.spec("cifar10").num_classes == 10
    assert data.spec("cifar100").num_classes == 100
    imagenet = data.spec("imagenet2012")
    assert (imagenet.num_classes, imagenet.image_size) == (1000, 224)
    digits = data.spec("digits")
    assert (digits.num_classes, digits.image_size) == (10, 32)
    assert digits.image_shape == (32, 32, 3)
    assert imagenet.image_shape == (224, 224, 3)
    assert not digits.flip and data.spec("cifar10").flip
    assert set(data.DATASETS) == {"cifar10", "cifar100", "imagenet2012",
                                  "digits", "digits_faces", "casia_webface"}
    assert data.spec("digits_faces").num_classes == data.DIGITS_FACES_TRAIN_CLASSES == 7


def test_digits_faces_holds_only_the_training_identities():
    splits = data.search_splits("digits_faces", batch_size=32, seed=0, heldout_size=50)
    labels = np.concatenate([y.numpy() for _, y in splits.heldout])
    (_, y_train), _ = data.digits_arrays()
    assert splits.weights_size + splits.arch_size == int(np.sum(y_train < 7))
    assert set(labels) <= set(range(7)) and len(labels) == 50


@pytest.mark.parametrize("call", [
    lambda: data.spec("mnist"),
    lambda: data.search_splits("mnist", batch_size=8, seed=0),
    lambda: data.train_test("CIFAR10", batch_size=8, seed=0),
])
def test_unknown_dataset_lists_valid_names(call):
    with pytest.raises(ConfigError) as info:
        call()
    message = str(info.value)
    for name in data.DATASETS:
        assert name in message
    assert "Received: dataset=" in message


@pytest.mark.parametrize("kwargs", [
    {"batch_size": 0, "seed": 0},
    {"batch_size": 8, "seed": -1},
    {"batch_size": 8, "seed": 0, "heldout_size": 0},
    {"batch_size": 5000, "seed": 0},  # More than the weights half.
])
def test_bad_search_arguments(kwargs):
    with pytest.raises(ConfigError, match="Received"):
        data.search_splits("digits", **kwargs)


def test_bad_cutout():
    with pytest.raises(ConfigError, match="cutout"):
        data.train_test("digits", batch_size=8, seed=0, cutout=-1)


def test_missing_tfds_data_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError) as info:
        data.search_splits("cifar10", batch_size=8, seed=0,
                           data_dir=str(tmp_path))
    message = str(info.value)
    assert "cifar10" in message and str(tmp_path) in message
    assert "tfds build cifar10 --data_dir=" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_missing_imagenet_gives_manual_steps(tmp_path):
    for call in (data.train_test, data.search_splits):
        with pytest.raises(DataError) as info:
            call("imagenet2012", batch_size=8, seed=0, data_dir=str(tmp_path))
        message = str(info.value)
        assert str(tmp_path) in message
        for needed in ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar",
                       "tfds build imagenet2012 --manual_dir=",
                       "--data_dir="):
            assert needed in message


def test_imagenet_download_without_archives(tmp_path):
    with pytest.raises(DataError, match="ILSVRC2012_img_train.tar"):
        data.train_test("imagenet2012", batch_size=8, seed=0,
                        data_dir=str(tmp_path), download=True)


# --- Digits (real data) ----------------------------------------------------


def test_digits_are_the_real_sklearn_digits():
    from sklearn.datasets import load_digits

    reference = load_digits()
    tt = data.train_test("digits", batch_size=400, seed=0)
    assert (tt.train_size, tt.test_size) == (1438, 359)
    assert (tt.train_size, tt.test_size) == (
        data.spec("digits").train_size, data.spec("digits").test_size)
    x, y = (np.concatenate(parts) for parts in zip(*_batches(tt.test)))
    _assert_images(x, y, 32, 10)
    # Gray replicated to three channels.
    np.testing.assert_array_equal(x[..., 0], x[..., 2])
    # Stratified: 20 % (rounded) of every class.
    counts = np.bincount(reference.target, minlength=10)
    np.testing.assert_array_equal(np.bincount(y, minlength=10),
                                  np.round(0.2 * counts))
    # Not noise: mostly background, strongly correlated neighbours.
    pixels = (x[..., 0] + 1) * 127.5
    assert np.mean(pixels < 32) > 0.4
    neighbours = np.corrcoef(pixels[:, :, :-1].ravel(),
                             pixels[:, :, 1:].ravel())[0, 1]
    assert neighbours > 0.9
    # Each image, shrunk back to 8x8, is its sklearn original (same label).
    small = pixels.reshape(-1, 8, 4, 8, 4).mean(axis=(2, 4)) * 16 / 255
    flat = reference.images.reshape(len(reference.images), -1)
    distances = ((small.reshape(len(small), 1, -1) - flat[None]) ** 2).sum(-1)
    nearest = distances.argmin(axis=1)
    np.testing.assert_array_equal(reference.target[nearest], y)
    assert len(set(nearest.tolist())) == len(y)


def test_digits_split_is_fixed():
    first = data.train_test("digits", batch_size=359, seed=0)
    second = data.train_test("digits", batch_size=359, seed=7)
    _assert_same_batches(_batches(first.test), _batches(second.test))


# --- Search splits ---------------------------------------------------------


def _check_split_indices(splits, n):
    w, a, h = (set(s.tolist()) for s in (
        splits.weights_indices, splits.arch_indices, splits.heldout_indices))
    assert len(w) == splits.weights_size == n // 2
    assert len(a) == splits.arch_size == n - n // 2
    assert not w & a and w | a == set(range(n))
    assert h <= a
    assert len(h) == splits.heldout_size == min(5000, n // 10)


def test_digits_search_split():
    splits = data.search_splits("digits", batch_size=64, seed=3)
    _check_split_indices(splits, 1438)
    assert splits.heldout_size == 143
    assert splits.weights_steps == 719 // 64
    assert splits.arch_steps == 719 // 64
    assert splits.heldout_steps == 3
    weights = _batches(splits.weights_epoch(0))
    assert len(weights) == splits.weights_steps
    for x, y in weights:
        assert x.shape[0] == 64
        _assert_images(x, y, 32, 10)
    heldout = _batches(splits.heldout)
    assert [len(y) for _, y in heldout] == [64, 64, 15]
    # BNAS's reduction phase: same split, batch 400.
    large = splits.with_batch_size(400)
    np.testing.assert_array_equal(large.arch_indices, splits.arch_indices)
    assert (large.weights_steps, large.heldout_steps) == (1, 1)
    assert _batches(large.arch_epoch(0))[0][0].shape[0] == 400
    with pytest.raises(ConfigError, match="batch_size"):
        splits.with_batch_size(720)


def test_search_split_is_deterministic_and_resumable():
    first = data.search_splits("digits", batch_size=128, seed=5)
    second = data.search_splits("digits", batch_size=128, seed=5)
    other = data.search_splits("digits", batch_size=128, seed=6)
    np.testing.assert_array_equal(first.weights_indices, second.weights_indices)
    np.testing.assert_array_equal(first.heldout_indices, second.heldout_indices)
    assert set(first.weights_indices) != set(other.weights_indices)
    # A fresh object (a resumed run) reproduces any epoch.
    epoch2 = _batches(first.arch_epoch(2))
    _assert_same_batches(epoch2, _batches(second.arch_epoch(2)))
    _assert_same_batches(_batches(first.heldout), _batches(second.heldout))
    # Epochs differ from each other; the stream is the epochs in a row.
    epoch1 = _batches(first.arch_epoch(1))
    assert not np.array_equal(epoch1[0][0], epoch2[0][0])
    steps = first.arch_steps
    stream = _batches(second.arch_from(1).take(2 * steps))
    _assert_same_batches(stream, epoch1 + epoch2)
    _assert_same_batches(_batches(first.weights.take(steps)),
                         _batches(second.weights_epoch(0)))


def test_digits_are_never_flipped_cifar_is():
    # An image whose mirror image no crop of the original can produce: a
    # vertical bar with a top bar running off to its right.
    image = np.zeros((32, 32, 3), np.uint8)
    image[8:24, 6:10] = 255
    image[8:12, 10:26] = 255
    images = tf.constant(np.repeat(image[None], 64, axis=0))
    draws = tf.constant(np.random.RandomState(0).rand(64, 5), tf.float32)
    for name, flips in (("digits", False), ("cifar10", True)):
        spec = data.spec(name)
        out = data._augment_batch(  # pylint: disable=protected-access
            spec, images, draws, flip=spec.flip, cutout=0).numpy()
        bright = out[..., 0] > 0
        flipped = 0
        for mask in bright:
            bar = np.flatnonzero(mask.sum(axis=0) >= 12)
            assert bar.size == 4  # The crop moved it at most 4 pixels.
            flipped += bar.min() > np.flatnonzero(mask.any(axis=0)).min()
        assert (flipped > 0) == flips, name
        if flips:
            assert 16 < flipped < 48  # A fair coin.


# --- CIFAR (mocked tfds) ---------------------------------------------------


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_pipelines(name):
    spec = data.spec(name)
    with _mock():
        splits = data.search_splits(name, batch_size=8, seed=0)
        _check_split_indices(splits, _MOCK_EXAMPLES)
        for ds in (splits.weights_epoch(0), splits.arch_epoch(0),
                   splits.heldout):
            for x, y in _batches(ds):
                _assert_images(x, y, 32, spec.num_classes)
        tt = data.train_test(name, batch_size=16, seed=0)
        assert tt.cutout == 16
        train = _batches(tt.train_epoch(0))
        assert len(train) == tt.train_steps == _MOCK_EXAMPLES // 16
        for x, y in train + _batches(tt.test):
            _assert_images(x, y, 32, spec.num_classes)


def _zero_boxes(x):
    """Bounding boxes (height, width) of the all-channel zeros of each image."""
    boxes = []
    for image in x:
        zero = (image == 0).all(axis=-1)
        rows, cols = np.flatnonzero(zero.any(1)), np.flatnonzero(zero.any(0))
        if not rows.size:
            boxes.append((0, 0))
            continue
        box = zero[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        assert box.all(), "cutout must zero a filled rectangle"
        boxes.append(box.shape)
    return boxes


def test_cutout_writes_zero_square():
    with _mock():
        tt = data.train_test("cifar10", batch_size=40, seed=1, cutout=16)
        x, _ = _batches(tt.train_epoch(0))[0]
        boxes = _zero_boxes(x)
        # Centre inside the image: at least half the side each way survives.
        for height, width in boxes:
            assert 8 <= height <= 16 and 8 <= width <= 16
        assert (16, 16) in boxes
        none = data.train_test("cifar10", batch_size=40, seed=1, cutout=0)
        x, _ = _batches(none.train_epoch(0))[0]
        assert not (x == 0).all(axis=-1).any()
        # Search data never gets cutout.
        splits = data.search_splits("cifar10", batch_size=40, seed=1)
        x, _ = _batches(splits.weights_epoch(0))[0]
        assert not (x == 0).all(axis=-1).any()


def test_cifar_epoch_is_reproduced():
    with _mock():
        first = data.train_test("cifar10", batch_size=16, seed=4)
        second = data.train_test("cifar10", batch_size=16, seed=4)
        _assert_same_batches(_batches(first.train_epoch(3)),
                             _batches(second.train_epoch(3)))


def test_distribute_global_batch():
    strategy = tf.distribute.MirroredStrategy(
        [d.name for d in tf.config.list_logical_devices("CPU")])
    splits = data.search_splits("digits", batch_size=32, seed=0)
    dist = strategy.experimental_distribute_dataset(splits.weights_epoch(0))
    x, y = next(iter(dist))
    sizes = [int(t.shape[0]) for t in strategy.experimental_local_results(y)]
    assert sum(sizes) == 32


# --- ImageNet (mocked tfds) ------------------------------------------------

# 3 classes with 15, 20 and 25 examples, interleaved.
_IMAGENET_LABELS = np.array(([0, 1, 2] * 15) + ([1, 2] * 5) + [2] * 5)


def test_class_balanced_split():
    rng = np.random.RandomState(0)
    labels = rng.randint(0, 7, 700)
    weights, arch = data.class_balanced_split(labels, (0.1, 0.025), seed=3)
    np.testing.assert_array_equal(np.bincount(labels[weights]), [10] * 7)
    np.testing.assert_array_equal(np.bincount(labels[arch]), [2] * 7)
    assert not set(weights) & set(arch)
    again = data.class_balanced_split(labels, (0.1, 0.025), seed=3)
    np.testing.assert_array_equal(weights, again[0])
    other = data.class_balanced_split(labels, (0.1, 0.025), seed=4)
    assert set(other[0]) != set(weights)
    with pytest.raises(DataError, match="empty"):
        data.class_balanced_split(labels, (0.001,), seed=0)
    with pytest.raises(DataError, match="Class"):
        data.class_balanced_split(np.r_[labels, 7], (0.5,), seed=0)


@pytest.mark.parametrize("cached", [False, True])
def test_imagenet_search_subset(cached, tmp_path):
    as_dataset = _labelled_imagenet(_IMAGENET_LABELS)
    cache_dir = str(tmp_path) if cached else None
    with _mock(as_dataset_fn=as_dataset):
        splits = data.search_splits(
            "imagenet2012", batch_size=4, seed=0, weights_fraction=0.5,
            arch_fraction=0.25, cache_dir=cache_dir)
        w, a = splits.weights_indices, splits.arch_indices
        # Class-balanced: 60 examples, 3 classes -> 10 and 5 per class.
        np.testing.assert_array_equal(np.bincount(_IMAGENET_LABELS[w]),
                                      [10, 10, 10])
        np.testing.assert_array_equal(np.bincount(_IMAGENET_LABELS[a]),
                                      [5, 5, 5])
        assert not set(w) & set(a)
        assert set(splits.heldout_indices) <= set(a)
        assert splits.heldout_size == 4  # min(5000, 45 // 10)
        weights = _batches(splits.weights_epoch(0))
        assert len(weights) == splits.weights_steps == 7
        labels = np.concatenate([y for _, y in weights])
        assert set(np.bincount(labels, minlength=3)) <= {9, 10}
        for x, y in weights:
            _assert_images(x, y, 224, 1000)
        heldout = _batches(splits.heldout)
        np.testing.assert_array_equal(
            np.concatenate([y for _, y in heldout]),
            _IMAGENET_LABELS[np.sort(splits.heldout_indices)])
        for x, y in heldout:
            _assert_images(x, y, 224, 1000)
        arch1 = _batches(splits.arch_epoch(1))
        _assert_same_batches(arch1, _batches(splits.arch_epoch(1)))
        _assert_same_batches(arch1, _batches(splits.arch_from(1).take(3)))
        if cached:  # A second run reads the cache.
            again = data.search_splits(
                "imagenet2012", batch_size=4, seed=0, weights_fraction=0.5,
                arch_fraction=0.25, cache_dir=cache_dir)
            _assert_same_batches(weights, _batches(again.weights_epoch(0)))


def test_imagenet_train_test():
    with _mock(num_examples=12):
        tt = data.train_test("imagenet2012", batch_size=4, seed=0)
        assert (tt.train_size, tt.test_size, tt.cutout) == (12, 12, 0)
        train = _batches(tt.train_epoch(0))
        assert len(train) == 3
        for x, y in train + _batches(tt.test):
            _assert_images(x, y, 224, 1000)
        _assert_same_batches(train, _batches(tt.train_epoch(0)))
        _assert_same_batches(train, _batches(tt.train.take(3)))
        assert tt.test_steps == 3
