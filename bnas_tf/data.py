"""Datasets and input pipelines for the search and the evaluation.

Datasets, by name (`DATASETS`, `spec(name)`):

- ``cifar10``, ``cifar100``: TensorFlow Datasets (tfds). Prepared data is read
  from ``data_dir`` (tfds's default when ``None``); nothing is downloaded
  unless ``download=True``.
- ``imagenet2012``: tfds ``imagenet2012``, which tfds cannot download; the
  `DataError` raised when it is missing gives the manual steps.
- ``digits``: scikit-learn's handwritten digits (1797 real 8x8 grayscale
  images, 10 classes, shipped inside the scikit-learn package), resized
  bilinearly to 32x32 with the gray level replicated to 3 channels. No
  download, loads in milliseconds; the default of the demo configuration.
  Fixed stratified split: 20 % of each class (rounded) is the test set,
  drawn with ``numpy.random.RandomState(0)`` (a frozen stream), so the
  split is the same on every machine: 1438 train / 359 test images.

Every pipeline yields ``(image, label)`` batches: ``image`` float32 in
[-1, 1] (``x / 127.5 - 1``, applied after the augmentation), ``label`` int32.

**Search** (`search_splits`): the training set is permuted with
``RandomState(seed)``; the first half (``n // 2``) trains the supernet
weights, the second half the architecture parameters (α, β). The held-out
set used to score sampled architectures is the first
``min(heldout_size, n // 10)`` examples of the (permuted) architecture half:
5000 for CIFAR as in the paper, scaled down on small data (143 for digits).
On ``imagenet2012`` the search uses a class-balanced subset instead, as
PC-DARTS does: ``weights_fraction`` (10 %) of the training set for the
weights and ``arch_fraction`` (2.5 %) for the architecture, the same number
of images for every class (`class_balanced_split`); the held-out set is
``min(heldout_size, subset // 10)`` images drawn at random from the
architecture subset (5000). `SearchSplits.with_batch_size` re-batches the
same split (BNAS: 128 for the warm-up, 400 for the reduction).

**Augmentation.** Search (DARTS): random crop with 4-pixel zero padding and
a horizontal flip, no cutout; ``digits`` is never flipped (a mirrored digit
is not the same digit; `DatasetSpec.flip`). Evaluation training
(`train_test`): the same plus cutout (DARTS: a ``cutout``-pixel square,
centre uniform over the image, clipped at the border, written as 0 in the
[-1, 1] space, i.e. mid-gray — what DARTS's "0 after normalisation" is in
this scaling). ImageNet training: random-resized crop to 224 (area
8-100 %, aspect 3/4-4/3), flip, color jitter (brightness, contrast,
saturation factors uniform in [0.6, 1.4], applied in this fixed order);
ImageNet evaluation: shorter side resized to 256, centre crop 224. The
ImageNet search trains with the ImageNet training transform (PC-DARTS).
Held-out and test data are never augmented.

**Determinism and resuming.** Splits depend on ``seed`` only (NumPy's
frozen ``RandomState``). Training data is reshuffled and re-augmented every
epoch with stateless random ops: the order from ``(seed, stream, epoch)``,
an example's augmentation from ``(seed, stream, epoch, example index)`` —
never from TensorFlow's global seed or from iterator state. So
``weights_epoch(e)`` returns the same batches every time it is called, in
this or in a resumed process (same TensorFlow version), and
``weights_from(e)`` is epochs ``e, e+1, ...`` back to back. In-memory
datasets are fully shuffled each epoch; streamed ones (ImageNet) are
shuffled within windows of `STREAM_SHUFFLE_WINDOW` examples (and the cache
shards are read in a new order every epoch). Training batches drop the
remainder; held-out and test batches keep it.

**Memory.** CIFAR and digits are decoded once into uint8 arrays that stay in
memory (this is the role ``Dataset.cache()`` would play; random access to
the array is what makes the full per-epoch shuffle cheap). ImageNet is
streamed from the tfds files; for the ImageNet search pass ``cache_dir`` so
that the training labels and the chosen subset are written once (as
TFRecord shards) instead of re-reading the whole training set every epoch.

**Distribution.** Functions take the GLOBAL batch size and return ordinary
batched datasets; the caller distributes them with
``strategy.experimental_distribute_dataset(ds)`` (which splits each global
batch over the replicas). Auto-sharding is set to ``DATA`` so that every
worker of a multi-worker job builds the same pipeline and keeps its share
of the batches. No ``input_context`` is taken.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os

from absl import logging
import numpy as np
import tensorflow as tf

from bnas_tf.errors import ConfigError, DataError, bad_value

AUTOTUNE = tf.data.AUTOTUNE

#: Window (examples) of the per-epoch shuffle of streamed datasets.
STREAM_SHUFFLE_WINDOW = 10_000

_DIGITS_TEST_FRACTION = 0.2
_DIGITS_SPLIT_SEED = 0

# Tags that give each training stream its own random numbers.
_TAG_WEIGHTS, _TAG_ARCH, _TAG_TRAIN = 1, 2, 3

_NUM_DRAWS = 5  # Uniform numbers per example: crop y, crop x, flip, cutout y, x.
_IMAGENET_RESIZE = 256
_JITTER = 0.4
_LAST_EPOCH = 2**62


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Static facts about a dataset.

    Attributes:
        name: the name `bnas_tf` knows it by.
        num_classes: number of classes (labels are ``0 .. num_classes - 1``).
        image_size: side of the square images the pipelines produce.
        train_size: examples in the training split (``None`` if unknown).
        test_size: examples in the split used as the test set.
        test_split: the tfds split used as the test set.
        flip: whether a horizontal flip preserves the label.
        crop_padding: zero padding (pixels) of the random crop; 0 = none.
        cutout: default cutout length of `train_test` (0 = none).
        in_memory: whether the decoded split is held in memory.
        tfds_name: the tfds builder name, ``None`` for embedded data.
        manual_download: whether tfds needs the files downloaded by hand.
        channels: image channels (always 3).
        imagenet_stem: networks read the images through DARTS's ImageNet
            stems (three stride-2 convolutions: 224 -> 28, 112 -> 14).
    """

    name: str
    num_classes: int
    image_size: int
    train_size: int | None
    test_size: int | None
    test_split: str
    flip: bool
    crop_padding: int
    cutout: int
    in_memory: bool
    tfds_name: str | None = None
    manual_download: bool = False
    channels: int = 3
    imagenet_stem: bool = False

    @property
    def image_shape(self):
        """``(image_size, image_size, channels)``, a model's input shape."""
        return (self.image_size, self.image_size, self.channels)


DIGITS_FACES_TRAIN_CLASSES = 7

_SPECS = {
    "cifar10": DatasetSpec(
        name="cifar10", num_classes=10, image_size=32, train_size=50_000,
        test_size=10_000, test_split="test", flip=True, crop_padding=4,
        cutout=16, in_memory=True, tfds_name="cifar10"),
    "cifar100": DatasetSpec(
        name="cifar100", num_classes=100, image_size=32, train_size=50_000,
        test_size=10_000, test_split="test", flip=True, crop_padding=4,
        cutout=16, in_memory=True, tfds_name="cifar100"),
    "imagenet2012": DatasetSpec(
        name="imagenet2012", num_classes=1000, image_size=224,
        train_size=1_281_167, test_size=50_000, test_split="validation",
        flip=True, crop_padding=0, cutout=0, in_memory=False,
        tfds_name="imagenet2012", manual_download=True, imagenet_stem=True),
    # Face recognition (Sec. 4.4): the identities of the data in data_dir (its num_classes is
    # read there by `search_splits`); aligned 112x112 faces, flipped, never cropped.
    "casia_webface": DatasetSpec(
        name="casia_webface", num_classes=0, image_size=112, train_size=None,
        test_size=None, test_split="", flip=True, crop_padding=0, cutout=0,
        in_memory=False, imagenet_stem=True),
    "digits": DatasetSpec(
        name="digits", num_classes=10, image_size=32, train_size=1438,
        test_size=359, test_split="test", flip=False, crop_padding=4,
        cutout=8, in_memory=True),
    # The face demo's training identities: digits 0-6 (7-9 are the unseen identities of
    # its verification pairs, `bnas_tf.face.sources.digits_identities`).
    "digits_faces": DatasetSpec(
        name="digits_faces", num_classes=DIGITS_FACES_TRAIN_CLASSES, image_size=32, train_size=None,
        test_size=None, test_split="test", flip=False, crop_padding=4,
        cutout=8, in_memory=True),
}

#: The dataset names `spec`, `search_splits` and `train_test` accept.
DATASETS = tuple(_SPECS)


def spec(name):
    """Returns the `DatasetSpec` of dataset ``name``.

    Raises:
        ConfigError: ``name`` is not one of `DATASETS`.
    """
    if not isinstance(name, str) or name not in _SPECS:
        raise bad_value("dataset", name, f"one of {', '.join(DATASETS)}")
    return _SPECS[name]


# --------------------------------------------------------------------------
# Public results.
# --------------------------------------------------------------------------


class _Stream:
    """A training stream: one deterministic dataset per epoch.

    ``epoch_fn(batch_size, epoch)`` (``epoch`` a scalar int64 tensor) returns
    that epoch's batched dataset, built from TensorFlow ops only so that it
    also runs inside ``flat_map``.
    """

    def __init__(self, epoch_fn, size):
        self._epoch_fn = epoch_fn
        self.size = size

    def epoch(self, batch_size, epoch):
        epoch = _check_epoch(epoch)
        return _finish(self._epoch_fn(batch_size, tf.constant(epoch, tf.int64)))

    def repeat_from(self, batch_size, start_epoch):
        start_epoch = _check_epoch(start_epoch)
        epochs = tf.data.Dataset.range(start_epoch, _LAST_EPOCH)
        return _finish(epochs.flat_map(
            functools.partial(self._epoch_fn, batch_size)))


class SearchSplits:
    """The three datasets of the search (see the module docstring).

    Attributes:
        spec: the `DatasetSpec`.
        batch_size: the global batch size.
        seed: the seed of the split, shuffles and augmentation.
        weights_size, arch_size, heldout_size: examples in each part.
        weights_steps, arch_steps: full batches per epoch (remainder dropped).
        heldout_steps: batches in one pass over the held-out set.
        weights_indices, arch_indices, heldout_indices: positions of the
            examples in the training split as read (int64 arrays).
    """

    def __init__(self, spec_, batch_size, seed, weights, arch, heldout_fn,
                 indices):
        _check_enough(spec_, "weights part", weights.size, batch_size)
        _check_enough(spec_, "architecture part", arch.size, batch_size)
        self.spec = spec_
        self.batch_size = batch_size
        self.seed = seed
        self._weights = weights
        self._arch = arch
        self._heldout_fn = heldout_fn
        self._indices = indices
        self.weights_indices, self.arch_indices, self.heldout_indices = indices
        self.weights_size = weights.size
        self.arch_size = arch.size
        self.heldout_size = len(self.heldout_indices)
        self.weights_steps = weights.size // batch_size
        self.arch_steps = arch.size // batch_size
        self.heldout_steps = math.ceil(self.heldout_size / batch_size)

    def with_batch_size(self, batch_size):
        """The same split (no reloading) with another global batch size.

        BNAS warms up with batch 128 and reduces the space with batch 400.
        """
        return SearchSplits(self.spec, _check_batch_size(batch_size),
                            self.seed, self._weights, self._arch,
                            self._heldout_fn, self._indices)

    @property
    def weights(self):
        """Weights part, epochs 0, 1, 2, ... one after the other, forever."""
        return self._weights.repeat_from(self.batch_size, 0)

    @property
    def arch(self):
        """Architecture part, epochs 0, 1, 2, ... one after the other, forever."""
        return self._arch.repeat_from(self.batch_size, 0)

    @property
    def heldout(self):
        """One pass over the held-out set, unaugmented, in a fixed order."""
        return self._heldout_fn(self.batch_size)

    def weights_epoch(self, epoch):
        """Epoch ``epoch`` of the weights part: ``weights_steps`` batches."""
        return self._weights.epoch(self.batch_size, epoch)

    def arch_epoch(self, epoch):
        """Epoch ``epoch`` of the architecture part: ``arch_steps`` batches."""
        return self._arch.epoch(self.batch_size, epoch)

    def weights_from(self, epoch):
        """The weights stream from epoch ``epoch`` on (to resume), forever."""
        return self._weights.repeat_from(self.batch_size, epoch)

    def arch_from(self, epoch):
        """The architecture stream from epoch ``epoch`` on, forever."""
        return self._arch.repeat_from(self.batch_size, epoch)


class TrainTest:
    """Training and test datasets of the evaluation.

    Attributes:
        spec: the `DatasetSpec`.
        batch_size: the global batch size.
        seed: the seed of the shuffles and augmentation.
        cutout: the cutout length in use (0 = none).
        train_size, test_size: examples.
        train_steps: full batches per training epoch (remainder dropped).
        test_steps: batches in one pass over the test set.
    """

    def __init__(self, spec_, batch_size, seed, cutout, train, test_fn,
                 test_size):
        _check_enough(spec_, "training set", train.size, batch_size)
        self.spec = spec_
        self.batch_size = batch_size
        self.seed = seed
        self.cutout = cutout
        self._train = train
        self._test_fn = test_fn
        self.train_size = train.size
        self.train_steps = train.size // batch_size
        self.test_size = test_size
        self.test_steps = math.ceil(test_size / batch_size)

    @property
    def train(self):
        """Training epochs 0, 1, 2, ... one after the other, forever.

        For ``model.fit(tt.train, steps_per_epoch=tt.train_steps, ...)``; use
        `train_from` with ``initial_epoch`` to resume.
        """
        return self._train.repeat_from(self.batch_size, 0)

    @property
    def test(self):
        """One pass over the test set, unaugmented, in a fixed order."""
        return self._test_fn(self.batch_size)

    def train_epoch(self, epoch):
        """Training epoch ``epoch``: ``train_steps`` batches."""
        return self._train.epoch(self.batch_size, epoch)

    def train_from(self, epoch):
        """The training stream from epoch ``epoch`` on, forever."""
        return self._train.repeat_from(self.batch_size, epoch)


# --------------------------------------------------------------------------
# Entry points.
# --------------------------------------------------------------------------


def search_splits(name, *, batch_size, seed, data_dir=None, heldout_size=5000,
                  download=False, weights_fraction=0.1, arch_fraction=0.025,
                  cache_dir=None):
    """Returns the weights / architecture / held-out datasets of the search.

    Args:
        name: one of `DATASETS`.
        batch_size: GLOBAL batch size of every dataset
            (`SearchSplits.with_batch_size` changes it later).
        seed: int in [0, 2**31); fixes the split, the shuffles and the
            augmentation.
        data_dir: tfds data directory (tfds's default when ``None``).
        heldout_size: held-out examples wanted; the set gets
            ``min(heldout_size, n // 10)`` where ``n`` is the number of
            examples the search uses (50000 for CIFAR, 1438 for digits).
        download: let tfds download missing data (needs internet; never for
            ImageNet).
        weights_fraction, arch_fraction: ``imagenet2012`` only: fractions of
            the training set, class-balanced, for the weights and the
            architecture (PC-DARTS: 10 % and 2.5 %).
        cache_dir: ``imagenet2012`` only: a writable directory where the
            training labels and the chosen subset are stored after the first
            run. Without it every epoch reads the whole training set.

    Returns:
        A `SearchSplits`.

    Raises:
        ConfigError: a bad argument.
        DataError: the data is missing or too small.
    """
    spec_ = spec(name)
    batch_size = _check_batch_size(batch_size)
    seed = _check_seed(seed)
    if isinstance(heldout_size, bool) or not isinstance(
            heldout_size, (int, np.integer)) or heldout_size < 1:
        raise bad_value("heldout_size", heldout_size, "an int >= 1")
    if spec_.name == "casia_webface":
        return _face_search(spec_, batch_size, seed, data_dir, int(heldout_size))
    if spec_.name == "imagenet2012":
        fractions = _check_fractions(weights_fraction, arch_fraction)
        return _imagenet_search(spec_, batch_size, seed, data_dir,
                                int(heldout_size), download, fractions,
                                cache_dir)

    source = _ArraySource(*_load_split(spec_, "train", data_dir, download))
    n = source.size
    perm = np.random.RandomState(seed).permutation(n).astype(np.int64)
    weights_idx, arch_idx = perm[:n // 2], perm[n // 2:]
    heldout_idx = arch_idx[:min(heldout_size, n // 10)]
    if len(heldout_idx) == 0:
        raise DataError(
            f"The {spec_.name} training set has {n} examples, too few for a "
            "held-out set (10 % of it). Use a larger dataset.")
    logging.info("%s search split (seed %d): %d weights, %d architecture "
                 "(%d of them held out).", spec_.name, seed, len(weights_idx),
                 len(arch_idx), len(heldout_idx))
    weights = _array_stream(spec_, source, weights_idx, seed, _TAG_WEIGHTS,
                            flip=spec_.flip, cutout=0)
    arch = _array_stream(spec_, source, arch_idx, seed, _TAG_ARCH,
                         flip=spec_.flip, cutout=0)
    heldout = functools.partial(_array_eval, source, heldout_idx)
    return SearchSplits(spec_, batch_size, seed, weights, arch, heldout,
                        (weights_idx, arch_idx, heldout_idx))


def train_test(name, *, batch_size, seed, data_dir=None, cutout=None,
               download=False):
    """Returns the training and test datasets of the evaluation.

    Args:
        name: one of `DATASETS`.
        batch_size: GLOBAL batch size of both datasets.
        seed: int in [0, 2**31); fixes the shuffles and the augmentation.
        data_dir: tfds data directory (tfds's default when ``None``).
        cutout: cutout length in pixels, 0 for none; ``None`` takes the
            dataset's default (`DatasetSpec.cutout`: 16 for CIFAR, 8 for
            digits, 0 for ImageNet).
        download: let tfds download missing data (needs internet; never for
            ImageNet).

    Returns:
        A `TrainTest`.

    Raises:
        ConfigError: a bad argument.
        DataError: the data is missing.
    """
    spec_ = spec(name)
    if spec_.name == "casia_webface":
        raise ConfigError("casia_webface has no classification test split: face networks are trained with "
                          "bnas_tf.face.train.train_face and verified on LFW, CFP-FP and AgeDB-30.")
    batch_size = _check_batch_size(batch_size)
    seed = _check_seed(seed)
    if cutout is None:
        cutout = spec_.cutout
    if isinstance(cutout, bool) or not isinstance(
            cutout, (int, np.integer)) or not 0 <= cutout <= spec_.image_size:
        raise bad_value("cutout", cutout,
                        f"an int in [0, {spec_.image_size}] (0 disables it)")
    cutout = int(cutout)

    if spec_.in_memory:
        train_source = _ArraySource(
            *_load_split(spec_, "train", data_dir, download))
        test_source = _ArraySource(
            *_load_split(spec_, spec_.test_split, data_dir, download))
        train = _array_stream(
            spec_, train_source, np.arange(train_source.size, dtype=np.int64),
            seed, _TAG_TRAIN, flip=spec_.flip, cutout=cutout)
        test = functools.partial(
            _array_eval, test_source,
            np.arange(test_source.size, dtype=np.int64))
        test_size = test_source.size
    else:
        builder = _builder(spec_, data_dir, download)
        train_ds = _read_encoded(builder, spec_, "train", data_dir)
        test_ds = _read_encoded(builder, spec_, spec_.test_split, data_dir)
        test_size = _cardinality(test_ds, builder, spec_.test_split)
        train_fn = functools.partial(_imagenet_train_transform, spec_,
                                     cutout=cutout)
        eval_fn = functools.partial(_imagenet_eval_transform, spec_)
        train = _Stream(
            functools.partial(_window_epoch, train_ds, train_fn, seed,
                              _TAG_TRAIN),
            _cardinality(train_ds, builder, "train"))
        test = functools.partial(_stream_eval, test_ds, eval_fn)

    logging.info("%s evaluation data: %d train, %d test, cutout %d.",
                 spec_.name, train.size, test_size, cutout)
    return TrainTest(spec_, batch_size, seed, cutout, train, test, test_size)


def class_balanced_split(labels, fractions, seed):
    """Draws disjoint class-balanced subsets, as PC-DARTS does on ImageNet.

    Subset ``j`` holds ``k_j = floor(fractions[j] * n / c)`` examples of every
    class, where ``n`` is ``len(labels)`` and ``c`` the number of classes
    present. Each class's examples are permuted with
    ``RandomState(seed)`` and cut into consecutive pieces, so the subsets
    are disjoint and depend only on ``labels`` and ``seed``.

    Args:
        labels: 1-D int array, the label of every training example.
        fractions: sequence of fractions of the training set, sum <= 1.
        seed: non-negative int.

    Returns:
        A tuple of sorted int64 index arrays, one per fraction.

    Raises:
        DataError: a subset would be empty, or a class has too few examples.
    """
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    classes, counts = np.unique(labels, return_counts=True)
    n, c = len(labels), len(classes)
    quotas = [int(math.floor(f * n / c)) if c else 0 for f in fractions]
    if min(quotas, default=0) < 1:
        raise DataError(
            f"A class-balanced subset of {fractions} of a training set of {n} "
            f"examples in {c} classes would be empty. Use larger fractions or "
            "more data.")
    if counts.min() < sum(quotas):
        raise DataError(
            f"Class {classes[np.argmin(counts)]} has {counts.min()} examples; "
            f"class-balanced subsets of {fractions} need {sum(quotas)} per "
            "class. Use smaller fractions.")
    rng = np.random.RandomState(seed)
    order = np.argsort(labels, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])
    parts = [[] for _ in fractions]
    for i in range(c):
        members = rng.permutation(order[starts[i]:starts[i + 1]])
        offset = 0
        for j, k in enumerate(quotas):
            parts[j].append(members[offset:offset + k])
            offset += k
    return tuple(np.sort(np.concatenate(p)).astype(np.int64) for p in parts)


# --------------------------------------------------------------------------
# Argument checks.
# --------------------------------------------------------------------------


def _check_batch_size(batch_size):
    if isinstance(batch_size, bool) or not isinstance(
            batch_size, (int, np.integer)) or batch_size < 1:
        raise bad_value("batch_size", batch_size, "an int >= 1 (global batch)")
    return int(batch_size)


def _check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) \
            or not 0 <= seed < 2**31:
        raise bad_value("seed", seed, "an int in [0, 2**31)")
    return int(seed)


def _check_epoch(epoch):
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) \
            or epoch < 0:
        raise bad_value("epoch", epoch, "an int >= 0")
    return int(epoch)


def _check_fractions(weights_fraction, arch_fraction):
    for key, value in (("weights_fraction", weights_fraction),
                       ("arch_fraction", arch_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not 0 < value <= 1:
            raise bad_value(key, value, "a fraction in (0, 1]")
    if weights_fraction + arch_fraction > 1:
        raise bad_value("weights_fraction + arch_fraction",
                        weights_fraction + arch_fraction, "at most 1")
    return float(weights_fraction), float(arch_fraction)


def _check_enough(spec_, part, size, batch_size):
    if size < batch_size:
        raise bad_value(
            "batch_size", batch_size,
            f"at most the {size} examples of the {spec_.name} {part} "
            "(training batches drop the remainder); lower batch_size")


# --------------------------------------------------------------------------
# Sources: where (index, image, label) examples come from.
# --------------------------------------------------------------------------


class _ArraySource:
    """A split held in memory: uint8 images [n, h, w, 3], int32 labels."""

    def __init__(self, images, labels):
        with tf.device("/CPU:0"):
            self.images = tf.constant(images, tf.uint8)
            self.labels = tf.constant(labels, tf.int32)
        self.size = len(labels)

    def batches(self, indices, batch_size, drop_remainder):
        """Dataset of (indices, images, labels) batches, in ``indices`` order."""
        images, labels = self.images, self.labels
        return tf.data.Dataset.from_tensor_slices(indices).batch(
            batch_size, drop_remainder=drop_remainder).map(
                lambda i: (i, tf.gather(images, i), tf.gather(labels, i)),
                num_parallel_calls=AUTOTUNE)


def _array_stream(spec_, source, indices, seed, tag, *, flip, cutout):
    """A `_Stream` over ``indices`` of an in-memory source.

    Each epoch permutes ``indices`` statelessly and draws a table of
    uniform numbers, one row per example of the split; an example's
    augmentation reads the row of its index, so it depends on
    ``(seed, epoch, index)`` only, not on the batch it lands in.
    """
    with tf.device("/CPU:0"):
        indices_t = tf.constant(indices, tf.int64)

    def epoch_fn(batch_size, epoch):
        epoch_seed = _epoch_seed(seed, tag, epoch)
        shuffle_seed, draw_seed = tf.unstack(
            tf.random.experimental.stateless_split(epoch_seed, 2))
        order = tf.random.experimental.stateless_shuffle(indices_t,
                                                         seed=shuffle_seed)
        draws = tf.random.stateless_uniform([source.size, _NUM_DRAWS],
                                            draw_seed)
        return source.batches(order, batch_size, drop_remainder=True).map(
            lambda i, images, labels: (
                _augment_batch(spec_, images, tf.gather(draws, i), flip=flip,
                               cutout=cutout),
                labels),
            num_parallel_calls=AUTOTUNE)

    return _Stream(epoch_fn, len(indices))


def _array_eval(source, indices, batch_size):
    """One unaugmented pass over ``indices`` of an in-memory source."""
    with tf.device("/CPU:0"):
        indices_t = tf.constant(indices, tf.int64)
    return _finish(source.batches(indices_t, batch_size,
                                  drop_remainder=False).map(
        lambda i, images, labels: (_scale(images), labels),
        num_parallel_calls=AUTOTUNE))


def _window_epoch(elements, transform, seed, tag, batch_size, epoch):
    """One epoch of a streamed source, shuffled within fixed windows."""
    epoch_seed = _epoch_seed(seed, tag, epoch)
    shuffle_seed = tf.random.experimental.stateless_fold_in(epoch_seed, -1)

    def shuffle_window(k, window):
        index, image, label = window
        perm = tf.random.experimental.stateless_shuffle(
            tf.range(tf.shape(index)[0]),
            seed=tf.random.experimental.stateless_fold_in(shuffle_seed, k))
        return (tf.gather(index, perm), tf.gather(image, perm),
                tf.gather(label, perm))

    shuffled = elements.batch(STREAM_SHUFFLE_WINDOW).enumerate().map(
        shuffle_window).unbatch()
    return _batch(shuffled, transform, batch_size, drop_remainder=True,
                  seed=epoch_seed)


def _shard_epoch(files, transform, seed, tag, batch_size, epoch):
    """One epoch of cached TFRecord shards: shard order and windows shuffled."""
    epoch_seed = _epoch_seed(seed, tag, epoch)
    order_seed = tf.random.experimental.stateless_fold_in(epoch_seed, -2)
    files = tf.random.experimental.stateless_shuffle(
        tf.constant(files), seed=order_seed)
    return _window_epoch(_read_shards(files), transform, seed, tag, batch_size,
                         epoch)


def _epoch_seed(seed, tag, epoch):
    """The [2] int64 seed of one epoch of one stream."""
    base = tf.constant([seed, tag], tf.int64)
    return tf.random.experimental.stateless_fold_in(
        base, tf.cast(epoch, tf.int64))


def _batch(elements, transform, batch_size, drop_remainder, seed=None):
    """Maps (index, image, label) -> (float image, int32 label) and batches.

    With ``seed`` each example's random numbers are seeded from
    ``(seed, index)``.
    """

    def map_fn(index, image, label):
        if seed is None:
            example_seed = tf.zeros([2], tf.int64)
        else:
            example_seed = tf.random.experimental.stateless_fold_in(seed, index)
        return transform(image, example_seed), tf.cast(label, tf.int32)

    return elements.map(map_fn, num_parallel_calls=AUTOTUNE).batch(
        batch_size, drop_remainder=drop_remainder)


def _stream_eval(elements, transform, batch_size):
    """One unaugmented pass over a streamed source."""
    return _finish(_batch(elements, transform, batch_size,
                          drop_remainder=False))


def _finish(ds):
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    return ds.prefetch(AUTOTUNE).with_options(options)


# --------------------------------------------------------------------------
# Transforms: uint8 (or encoded) images -> float32 images in [-1, 1].
# --------------------------------------------------------------------------


def _scale(image):
    return tf.cast(image, tf.float32) / 127.5 - 1.0


def _augment_batch(spec_, images, draws, *, flip, cutout):
    """Pad-and-crop, flip, scale, cutout for a uint8 batch [b, h, w, c].

    ``draws`` [b, _NUM_DRAWS] are uniform numbers in [0, 1), one row per
    example: crop offsets, flip coin, cutout centre.
    """
    size, pad = spec_.image_size, spec_.crop_padding
    images = tf.convert_to_tensor(images)
    if pad:
        span = 2 * pad + 1
        offsets = tf.minimum(tf.cast(draws[:, 0:2] * span, tf.int32), span - 1)
        padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        rows = offsets[:, 0:1] + tf.range(size)[None, :]
        cols = offsets[:, 1:2] + tf.range(size)[None, :]
        images = tf.gather(padded, rows, axis=1, batch_dims=1)
        images = tf.gather(images, cols, axis=2, batch_dims=1)
    if flip:
        images = tf.where((draws[:, 2] < 0.5)[:, None, None, None],
                          tf.reverse(images, axis=[2]), images)
    images = _scale(images)
    if cutout:
        centre = tf.minimum(tf.cast(draws[:, 3:5] * size, tf.int32), size - 1)
        images = _cutout_batch(images, cutout, centre)
    images.set_shape([None, size, size, spec_.channels])
    return images


def _cutout_batch(images, length, centre):
    """Writes 0 into a ``length`` square around ``centre`` [b, 2], clipped."""
    grid = tf.range(tf.shape(images)[1])
    low, high = centre - length // 2, centre + length // 2
    in_rows = (grid[None, :] >= low[:, 0:1]) & (grid[None, :] < high[:, 0:1])
    in_cols = (grid[None, :] >= low[:, 1:2]) & (grid[None, :] < high[:, 1:2])
    mask = in_rows[:, :, None] & in_cols[:, None, :]
    return tf.where(mask[..., None], tf.zeros_like(images), images)


def _decode(encoded):
    return tf.io.decode_image(encoded, channels=3, expand_animations=False)


def _grayscale(image):
    return tf.image.rgb_to_grayscale(image)


def _imagenet_train_transform(spec_, encoded, seed, *, cutout=0):
    """Random-resized crop, flip, color jitter, scale, optional cutout."""
    size = spec_.image_size
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 5))
    image = _decode(encoded)
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
        seed=seeds[0], min_object_covered=0.0,
        aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0),
        max_attempts=10, use_image_if_no_bounding_boxes=True)
    image = tf.slice(image, begin, crop_size)
    image = tf.image.resize(image, [size, size], method="bilinear")
    image = tf.image.stateless_random_flip_left_right(image, seeds[1])
    factors = tf.random.stateless_uniform(
        [3], seeds[2], minval=1.0 - _JITTER, maxval=1.0 + _JITTER)
    image = tf.clip_by_value(image * factors[0], 0.0, 255.0)
    mean = tf.reduce_mean(_grayscale(image))
    image = tf.clip_by_value((image - mean) * factors[1] + mean, 0.0, 255.0)
    gray = _grayscale(image)
    image = tf.clip_by_value((image - gray) * factors[2] + gray, 0.0, 255.0)
    image = tf.clip_by_value(_scale(image), -1.0, 1.0)
    if cutout:
        centre = tf.random.stateless_uniform([1, 2], seeds[3], minval=0,
                                             maxval=size, dtype=tf.int32)
        image = _cutout_batch(image[None], cutout, centre)[0]
    image.set_shape([size, size, 3])
    return image


def _imagenet_eval_transform(spec_, encoded, seed):
    """Shorter side to 256, centre crop 224, scale."""
    del seed  # No randomness.
    size = spec_.image_size
    image = _decode(encoded)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = _IMAGENET_RESIZE / tf.reduce_min(shape)
    new_shape = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), size)
    image = tf.image.resize(image, new_shape, method="bilinear")
    top = (new_shape[0] - size) // 2
    left = (new_shape[1] - size) // 2
    image = image[top:top + size, left:left + size]
    image = tf.clip_by_value(_scale(image), -1.0, 1.0)
    image.set_shape([size, size, 3])
    return image


# --------------------------------------------------------------------------
# Loading.
# --------------------------------------------------------------------------


def _load_split(spec_, split, data_dir, download):
    """Returns (uint8 images [n, h, w, 3], int32 labels [n]) of a split."""
    if spec_.name in ("digits", "digits_faces"):
        train, test = digits_arrays()
        images, labels = train if split == "train" else test
        if spec_.name == "digits_faces":
            seen = labels < DIGITS_FACES_TRAIN_CLASSES
            images, labels = images[seen], labels[seen]
        return images, labels
    builder = _builder(spec_, data_dir, download)
    ds = _as_dataset(builder, spec_, split, data_dir)
    ds = ds.map(lambda ex: (ex["image"], tf.cast(ex["label"], tf.int32)),
                num_parallel_calls=AUTOTUNE).batch(4096)
    images, labels = [], []
    for x, y in ds.as_numpy_iterator():
        images.append(x)
        labels.append(y)
    if not labels:
        raise DataError(
            f"The {split} split of {spec_.name} in "
            f"{_data_dir_root(builder, data_dir)} is empty. Prepare it again "
            f"with `tfds build {spec_.tfds_name} --data_dir=DIR`.")
    images, labels = np.concatenate(images), np.concatenate(labels)
    expected = (spec_.image_size, spec_.image_size, spec_.channels)
    if images.shape[1:] != expected:
        raise DataError(
            f"{spec_.name} images have shape {images.shape[1:]}, expected "
            f"{expected}. Check that --data_dir holds {spec_.tfds_name}.")
    logging.info("Loaded %s %s: %d examples.", spec_.name, split, len(labels))
    return images, labels


@functools.lru_cache(maxsize=1)
def digits_arrays():
    """scikit-learn digits at 32x32x3 uint8: ((x_train, y_train), (x_test, y_test))."""
    from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top

    digits = load_digits()
    gray = digits.images.astype(np.float32) * (255.0 / 16.0)
    size = _SPECS["digits"].image_size
    resized = tf.image.resize(gray[..., None], [size, size], method="bilinear")
    images = np.clip(np.round(resized.numpy()), 0, 255).astype(np.uint8)
    images = np.repeat(images, 3, axis=-1)
    labels = digits.target.astype(np.int32)

    rng = np.random.RandomState(_DIGITS_SPLIT_SEED)
    is_test = np.zeros(len(labels), bool)
    for c in range(10):
        members = np.flatnonzero(labels == c)
        n_test = int(round(len(members) * _DIGITS_TEST_FRACTION))
        is_test[rng.permutation(members)[:n_test]] = True
    train, test = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    arrays = (images[train], labels[train], images[test], labels[test])
    for array in arrays:  # Shared by every caller (lru_cache).
        array.setflags(write=False)
    return arrays[:2], arrays[2:]


def _tfds():
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    return tfds


def _builder(spec_, data_dir, download):
    tfds = _tfds()
    try:
        builder = tfds.builder(spec_.tfds_name, data_dir=data_dir)
    except Exception as err:  # pylint: disable=broad-except
        raise DataError(
            f"Cannot open the tfds dataset {spec_.tfds_name} in "
            f"{data_dir or 'the tfds default data_dir'}: {err}. Check "
            "--data_dir.") from None
    if download:
        # For ImageNet this builds from the manual directory if the archives
        # are already there; otherwise the message says how to get them.
        try:
            builder.download_and_prepare()
        except Exception as err:  # pylint: disable=broad-except
            first_line = str(err).strip().splitlines()[0] if str(err) else ""
            raise DataError(
                f"Preparing {spec_.tfds_name} failed ({type(err).__name__}: "
                f"{first_line}). "
                + _missing_message(spec_, builder, data_dir, True)) from None
    return builder


def _data_dir_root(builder, data_dir):
    if data_dir:
        return str(data_dir)
    root = getattr(builder, "_data_dir_root", None)
    if root:
        return f"{root} (the tfds default)"
    return "the tfds default data_dir"


def _missing_message(spec_, builder, data_dir, downloading):
    where = _data_dir_root(builder, data_dir)
    if spec_.manual_download:
        return (
            f"ImageNet ({spec_.tfds_name}) is not prepared in {where} and "
            "tfds cannot download it. Register at "
            "https://image-net.org/download-images and download "
            "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar; put both "
            "files in one directory MANUAL_DIR; run `tfds build "
            f"{spec_.tfds_name} --manual_dir=MANUAL_DIR --data_dir=DATA_DIR` "
            "(about 150 GB); then pass --data_dir=DATA_DIR.")
    action = "could not be downloaded" if downloading else "is not prepared"
    return (
        f"Dataset {spec_.tfds_name} {action} in {where}. On a machine with "
        f"internet access run `tfds build {spec_.tfds_name} --data_dir=DIR`, "
        "copy DIR here and pass --data_dir=DIR (or set TFDS_DATA_DIR), or "
        "allow downloading (download=True) where there is internet.")


def _as_dataset(builder, spec_, split, data_dir, **kwargs):
    try:
        return builder.as_dataset(split=split, shuffle_files=False, **kwargs)
    except (AssertionError, FileNotFoundError, tf.errors.NotFoundError):
        raise DataError(
            _missing_message(spec_, builder, data_dir, False)) from None


def _read_encoded(builder, spec_, split, data_dir):
    """(index, encoded image, label) of a tfds split, in a fixed order."""
    tfds = _tfds()
    ds = _as_dataset(builder, spec_, split, data_dir,
                     decoders={"image": tfds.decode.SkipDecoding()})
    return ds.enumerate().map(
        lambda i, ex: (i, ex["image"], tf.cast(ex["label"], tf.int32)),
        num_parallel_calls=AUTOTUNE)


def _cardinality(ds, builder, split):
    n = int(ds.cardinality())
    if n >= 0:
        return n
    try:
        return int(builder.info.splits[split].num_examples)
    except (KeyError, ValueError):
        return int(ds.reduce(np.int64(0), lambda count, _: count + 1))


# --------------------------------------------------------------------------
# Face search: CASIA-WebFace, streamed.
# --------------------------------------------------------------------------


def _face_search(spec_, batch_size, seed, data_dir, heldout_size):
    """The search splits of face data (converted TFRecords, identity folders or train.rec).

    As on CIFAR: the images shuffled with the seed, half for the weights,
    half for alpha / beta, the held-out images the first min(heldout_size,
    n / 10) of the second half. Every part holds images of the same
    identities, so a sampled architecture is scored by classification
    accuracy on held-out images of the training identities.
    """
    from bnas_tf.face import data as face_data  # pylint: disable=g-import-not-at-top

    if not data_dir:
        raise DataError("The search on casia_webface reads the training images from data_dir: TFRecords made by "
                        "`python -m bnas_tf.launch --mode=convert`, identity folders or train.rec.")
    labels = face_data.source_labels(data_dir)
    n = len(labels)
    spec_ = dataclasses.replace(spec_, num_classes=int(labels.max()) + 1, train_size=n)
    perm = np.random.RandomState(seed).permutation(n).astype(np.int64)
    weights_idx, arch_idx = np.sort(perm[:n // 2]), np.sort(perm[n // 2:])
    heldout_idx = np.sort(perm[n // 2:][:min(heldout_size, n // 10)])
    if len(heldout_idx) == 0:
        raise DataError(f"{data_dir} has {n} images, too few for a held-out set (10 % of them).")
    logging.info("%s search split (seed %d): %d weights, %d architecture (%d of them held out), %d identities.",
                 spec_.name, seed, len(weights_idx), len(arch_idx), len(heldout_idx), spec_.num_classes)

    def stream(indices, tag):
        epoch_fn, size = face_data.epoch_stream(data_dir, seed=seed * 8 + tag, image_size=spec_.image_size,
                                                flip=spec_.flip, indices=indices)
        return _Stream(lambda batch_size, epoch: epoch_fn(epoch).batch(batch_size, drop_remainder=True), size)

    heldout_fn, _ = face_data.epoch_stream(data_dir, seed=seed, image_size=spec_.image_size, flip=False,
                                           shuffle_buffer=0, indices=heldout_idx)
    return SearchSplits(spec_, batch_size, seed, stream(weights_idx, _TAG_WEIGHTS), stream(arch_idx, _TAG_ARCH),
                        lambda batch_size: _finish(heldout_fn(0).batch(batch_size)),
                        (weights_idx, arch_idx, heldout_idx))


# --------------------------------------------------------------------------
# ImageNet search: class-balanced subset, optional on-disk cache.
# --------------------------------------------------------------------------


def _imagenet_search(spec_, batch_size, seed, data_dir, heldout_size, download,
                     fractions, cache_dir):
    builder = _builder(spec_, data_dir, download)
    train = _read_encoded(builder, spec_, "train", data_dir)
    n = _cardinality(train, builder, "train")
    labels = _imagenet_labels(train, n, cache_dir)
    weights_idx, arch_idx = class_balanced_split(labels, fractions, seed)
    held = min(heldout_size, (len(weights_idx) + len(arch_idx)) // 10)
    heldout_idx = np.sort(
        np.random.RandomState(seed).permutation(arch_idx)[:held])
    if held == 0:
        raise DataError(
            f"The {spec_.name} search subset has "
            f"{len(weights_idx) + len(arch_idx)} examples, too few for a "
            "held-out set (10 % of it). Use larger fractions.")
    _check_enough(spec_, "weights part", len(weights_idx), batch_size)
    _check_enough(spec_, "architecture part", len(arch_idx), batch_size)
    logging.info("%s search subset (seed %d): %d weights, %d architecture "
                 "(%d held out), %d per class.", spec_.name, seed,
                 len(weights_idx), len(arch_idx), held,
                 len(weights_idx) // max(1, len(np.unique(labels))))

    train_fn = functools.partial(_imagenet_train_transform, spec_, cutout=0)
    eval_fn = functools.partial(_imagenet_eval_transform, spec_)
    if cache_dir:
        files = _imagenet_subset_cache(train, n, weights_idx, arch_idx, seed,
                                       fractions, cache_dir)
        weights = _Stream(
            functools.partial(_shard_epoch, files["weights"], train_fn, seed,
                              _TAG_WEIGHTS),
            len(weights_idx))
        arch = _Stream(
            functools.partial(_shard_epoch, files["arch"], train_fn, seed,
                              _TAG_ARCH),
            len(arch_idx))
        arch_elements = _read_shards(files["arch"])
    else:
        logging.warning(
            "Searching on %s without cache_dir: every epoch reads the whole "
            "training set to pick out the %d-image subset. Pass cache_dir to "
            "write the subset once.", spec_.name,
            len(weights_idx) + len(arch_idx))
        arch_elements = _select(train, arch_idx, n)
        weights = _Stream(
            functools.partial(_window_epoch, _select(train, weights_idx, n),
                              train_fn, seed, _TAG_WEIGHTS),
            len(weights_idx))
        arch = _Stream(
            functools.partial(_window_epoch, arch_elements, train_fn, seed,
                              _TAG_ARCH),
            len(arch_idx))
    heldout = functools.partial(
        _stream_eval, _select(arch_elements, heldout_idx, n), eval_fn)
    return SearchSplits(spec_, batch_size, seed, weights, arch, heldout,
                        (weights_idx, arch_idx, heldout_idx))


def _select(elements, indices, n):
    """Keeps the (index, ...) elements whose index is in ``indices``."""
    mask = np.zeros(n, bool)
    mask[indices] = True
    with tf.device("/CPU:0"):
        mask_t = tf.constant(mask)
    return elements.filter(lambda i, image, label: tf.gather(mask_t, i))


def _imagenet_labels(train, n, cache_dir):
    """Labels of the training split in read order (one pass; cached)."""
    path = None
    if cache_dir:
        path = os.path.join(cache_dir, f"imagenet2012-train-labels-{n}.npy")
        if tf.io.gfile.exists(path):
            with tf.io.gfile.GFile(path, "rb") as f:
                labels = np.load(f)
            if len(labels) == n:
                return labels
            logging.warning("Ignoring %s: %d labels, expected %d.", path,
                            len(labels), n)
    logging.info("Reading the labels of %d training images (one pass over "
                 "the training set)...", n)
    chunks = [y for y in train.map(lambda i, image, label: label).batch(
        65536).as_numpy_iterator()]
    labels = np.concatenate(chunks).astype(np.int32) if chunks else np.zeros(
        0, np.int32)
    if len(labels) != n:
        raise DataError(f"Read {len(labels)} ImageNet training labels, "
                        f"expected {n}. Prepare the dataset again.")
    if path:
        tf.io.gfile.makedirs(cache_dir)
        with tf.io.gfile.GFile(path + ".tmp", "wb") as f:
            np.save(f, labels)
        tf.io.gfile.rename(path + ".tmp", path, overwrite=True)
    return labels


def _imagenet_subset_cache(train, n, weights_idx, arch_idx, seed, fractions,
                           cache_dir):
    """Writes the search subset as TFRecord shards once; returns the files."""
    key = f"imagenet2012-search-n{n}-seed{seed}-w{fractions[0]:g}-a{fractions[1]:g}"
    directory = os.path.join(cache_dir, key)
    marker = os.path.join(directory, "COMPLETE.json")
    sizes = {"weights": len(weights_idx), "arch": len(arch_idx)}
    shards = {part: max(1, min(256, size // 2048))
              for part, size in sizes.items()}
    files = {part: [os.path.join(directory,
                                 f"{part}-{k:05d}-of-{count:05d}.tfrecord")
                    for k in range(count)]
             for part, count in shards.items()}
    if tf.io.gfile.exists(marker):
        with tf.io.gfile.GFile(marker) as f:
            if json.load(f) == sizes:
                return files
        logging.warning("Rewriting %s: its sizes do not match.", directory)
    logging.info("Writing the %s search subset to %s (one pass over the "
                 "training set)...", "imagenet2012", directory)
    tf.io.gfile.makedirs(directory)
    role = np.zeros(n, np.int8)
    role[weights_idx] = 1
    role[arch_idx] = 2
    with tf.device("/CPU:0"):
        role_t = tf.constant(role)
    tagged = train.map(lambda i, image, label: (i, image, label,
                                                tf.gather(role_t, i)))
    tagged = tagged.filter(lambda i, image, label, r: r > 0)
    writers = {part: [tf.io.TFRecordWriter(path) for path in paths]
               for part, paths in files.items()}
    written = {"weights": 0, "arch": 0}
    try:
        for index, image, label, r in tagged.as_numpy_iterator():
            part = "weights" if r == 1 else "arch"
            example = tf.train.Example(features=tf.train.Features(feature={
                "index": tf.train.Feature(
                    int64_list=tf.train.Int64List(value=[index])),
                "image": tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[image])),
                "label": tf.train.Feature(
                    int64_list=tf.train.Int64List(value=[label])),
            }))
            group = writers[part]
            group[written[part] % len(group)].write(example.SerializeToString())
            written[part] += 1
    finally:
        for group in writers.values():
            for writer in group:
                writer.close()
    if written != sizes:
        raise DataError(f"Wrote {written} ImageNet subset examples, expected "
                        f"{sizes}. Prepare the dataset again.")
    with tf.io.gfile.GFile(marker, "w") as f:
        json.dump(sizes, f)
    return files


def _read_shards(files):
    """(index, encoded image, label) from subset shards, interleaved."""
    files = tf.convert_to_tensor(files, tf.string)
    features = {
        "index": tf.io.FixedLenFeature([], tf.int64),
        "image": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
    }

    def parse(record):
        ex = tf.io.parse_single_example(record, features)
        return ex["index"], ex["image"], tf.cast(ex["label"], tf.int32)

    return tf.data.Dataset.from_tensor_slices(files).interleave(
        tf.data.TFRecordDataset, cycle_length=8, block_length=1,
        num_parallel_calls=AUTOTUNE, deterministic=True).map(
            parse, num_parallel_calls=AUTOTUNE)
