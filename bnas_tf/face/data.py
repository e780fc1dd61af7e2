"""Face recognition data (IJCV BNAS Sec. 4.4): CASIA-WebFace for training, LFW / CFP-FP / AgeDB-30 for verification.

**Training data** (CASIA-WebFace, ~0.49 M aligned 112x112 images of 10575
identities) is read in any of three layouts, told apart by `describe`:

- ``folder``: one directory per identity, ``<root>/<identity>/<image>.jpg``
  (.jpeg, .png, .bmp). Identities are the sorted names of the directories that
  hold images; a label is the index of its identity in that list.
- ``recordio``: insightface's MXNet RecordIO release (``train.rec`` +
  ``train.idx``, e.g. faces_webface_112x112), parsed in pure Python
  (`bnas_tf.face.bin_format`); labels are the records' own.
- ``tfrecord``: what `convert` writes from either of the above, the fast path:
  shards ``train-00000-of-000NN.tfrecord`` of ``tf.train.Example`` with
  ``image`` (the encoded bytes, unchanged), ``label`` and ``index`` (the
  image's position in the source, so index subsets survive conversion), plus
  ``labels.npy`` and ``meta.json``. ``meta.json`` is written last (temporary
  file, then ``os.replace``) and removed first when converting again, so an
  interrupted conversion is never taken for a finished one. Examples are
  written in a fixed random order (``RandomState(0)``), dealt round-robin
  over the shards, so every shard mixes all identities; the default shard
  count aims at ~150 MB per shard (CASIA-WebFace: about 17 shards).

**Pipeline** (`training_dataset`): decode (3 channels, grayscale expanded),
bilinear resize only when the image is not ``image_size`` square, random
horizontal flip, normalize as ``(x - 127.5) / 127.5`` (`normalize`): that is
Face_Pytorch's ``ToTensor()`` + ``Normalize(mean=0.5, std=0.5)`` and
insightface arcface_torch's transform, values in [-1, 1] (the older MXNet
insightface code divides by 128 instead). Images are RGB (Face_Pytorch
feeds OpenCV's BGR; only consistency between training and verification
matters). Determinism follows `bnas_tf.data`: epoch ``e`` is ordered by a
stateless shuffle seeded from ``(seed, e)``, and an image's flip from
``(seed, e, index)`` — never TensorFlow's global seed. Folder and RecordIO
sources are permuted whole every epoch (paths and offsets are cheap);
TFRecord sources read their shards in a new order and shuffle windows of
``shuffle_buffer`` examples. ``shuffle_buffer=0`` keeps the source order.
Reading RecordIO directly goes through Python (``tf.numpy_function``);
`convert` it for long runs.

**Search** (`split_heldout`): held-out images are drawn inside every
identity, so they come from training identities and classification accuracy
on them scores a sampled architecture.

Verification sets (LFW, CFP-FP, AgeDB-30) are read by `bnas_tf.face.pairs`.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import json
import math
import os

from absl import logging
import numpy as np
import tensorflow as tf

from bnas_tf.errors import ConfigError, DataError, bad_value
from bnas_tf.face import bin_format

AUTOTUNE = tf.data.AUTOTUNE

META_FILE = "meta.json"
LABELS_FILE = "labels.npy"
FORMAT_VERSION = 1
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
#: Shard size `convert` aims at when ``num_shards`` is not given.
TARGET_SHARD_BYTES = 150 * 2**20

_SHARD_NAME = "train-{:05d}-of-{:05d}.tfrecord"
_SHARD_GLOB = "train-*-of-*.tfrecord*"
_CONVERT_ORDER_SEED = 0
_TAG_FLIP = 11
_LAST_EPOCH = 2**62

TRAINING_LAYOUT = (
    "CASIA-WebFace is read as one folder per identity, <data_dir>/<identity>/<image>.jpg (.jpeg, .png, .bmp; "
    "the aligned 112x112 release), or as insightface's MXNet RecordIO release, <data_dir>/train.rec plus "
    "<data_dir>/train.idx (faces_webface_112x112). `bnas_tf.face.data.convert(<data_dir>, <tfrecord_dir>)` "
    "turns either into TFRecord shards, the fastest input; pass <tfrecord_dir> afterwards.")


@dataclasses.dataclass(frozen=True)
class FaceDataInfo:
    """What `describe` reports about a training source.

    Attributes:
        num_classes: identities (labels are ``0 .. num_classes - 1``).
        num_images: images.
        image_size: side of the (square) images, ``None`` if unknown or not square.
        layout: ``"folder"``, ``"recordio"`` or ``"tfrecord"``.
    """

    num_classes: int
    num_images: int
    image_size: int | None
    layout: str


def normalize(images):
    """Pixel values in [0, 255] -> float32 ``(x - 127.5) / 127.5`` in [-1, 1]."""
    return (tf.cast(images, tf.float32) - 127.5) / 127.5


# --------------------------------------------------------------------------
# Training sources.
# --------------------------------------------------------------------------


def scan_identity_folder(root):
    """Lists an image folder per identity (``root/<identity>/<image>``).

    Returns:
        (paths, labels, names): image paths (list of str, identities in
        sorted order, images sorted within each), int32 labels [n], and the
        sorted identity names; ``labels[i]`` indexes ``names``. Directories
        without images are not identities; hidden entries are ignored.

    Raises:
        DataError: ``root`` is missing or holds no identity folder with images.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise DataError(f"No CASIA-WebFace training data at {root}: not a directory. {TRAINING_LAYOUT}")
    paths, labels, names = [], [], []
    identities = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    for identity in identities:
        directory = os.path.join(root, identity)
        files = sorted(e.name for e in os.scandir(directory) if e.is_file() and not e.name.startswith(".")
                       and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS)
        if not files:
            continue
        paths.extend(os.path.join(directory, name) for name in files)
        labels.extend([len(names)] * len(files))
        names.append(identity)
    if not names:
        raise DataError(f"{root} holds no identity folders with images. {TRAINING_LAYOUT}")
    return paths, np.asarray(labels, np.int32), names


class _Source:
    """A resolved training source: labels in index order and a way to read it."""

    layout = ""

    def __init__(self, where, labels, num_classes, names):
        self.where = where
        self.labels = labels
        self.num_classes = int(num_classes)
        self.names = names

    @property
    def num_images(self):
        return len(self.labels)


class _FolderSource(_Source):
    layout = "folder"

    def __init__(self, root):
        paths, labels, names = scan_identity_folder(root)
        super().__init__(root, labels, len(names), names)
        self.paths = paths

    def total_bytes(self):
        return sum(os.path.getsize(p) for p in self.paths)

    def reader(self):
        return _FolderReader(self.paths)

    def epoch_fn(self, indices, seed, shuffle_buffer):
        order_fn = _order_fn(indices, self.num_images, seed, shuffle_buffer)
        with tf.device("/CPU:0"):
            paths, labels = tf.constant(self.paths), tf.constant(self.labels)
        return lambda epoch: tf.data.Dataset.from_tensor_slices(order_fn(epoch)).map(
            lambda i: (i, tf.io.read_file(tf.gather(paths, i)), tf.gather(labels, i)), num_parallel_calls=AUTOTUNE)


class _FolderReader:
    def __init__(self, paths):
        self.paths = paths

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def read(self, i):
        try:
            with open(self.paths[i], "rb") as f:
                return f.read(), self.paths[i]
        except OSError as err:
            raise DataError(f"Cannot read {self.paths[i]}: {err.strerror or err}.") from None


class _RecordIOSource(_Source):
    layout = "recordio"

    def __init__(self, path):
        self.rec, self.idx = bin_format.rec_paths(path)
        for needed in (self.rec, self.idx):
            if not os.path.isfile(needed):
                raise DataError(f"Missing {needed}: insightface's RecordIO release needs both train.rec and "
                                f"train.idx. {TRAINING_LAYOUT}")
        stats = tuple((os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in (self.rec, self.idx))
        self.keys, self.offsets, labels, identities = _scan_recordio(os.path.abspath(self.rec),
                                                                     os.path.abspath(self.idx), stats)
        num_classes = max(int(labels.max()) + 1, identities or 0)
        super().__init__(self.rec, labels, num_classes, [str(i) for i in range(num_classes)])

    def total_bytes(self):
        return os.path.getsize(self.rec)

    def reader(self):
        return _RecordIOReader(self)

    def epoch_fn(self, indices, seed, shuffle_buffer):
        order_fn = _order_fn(indices, self.num_images, seed, shuffle_buffer)
        with tf.device("/CPU:0"):
            labels = tf.constant(self.labels)
        rec, keys, offsets = self.rec, self.keys, self.offsets

        def read(i):
            with open(rec, "rb") as f:
                return bin_format.read_image_record(f, rec, int(keys[i]), int(offsets[i]))

        def element(i):
            encoded = tf.numpy_function(read, [i], tf.string, stateful=False)
            encoded.set_shape([])
            return i, encoded, tf.gather(labels, i)

        return lambda epoch: tf.data.Dataset.from_tensor_slices(order_fn(epoch)).map(
            element, num_parallel_calls=AUTOTUNE)


@functools.lru_cache(maxsize=4)
def _scan_recordio(rec, idx, stats):
    """`bin_format.scan_recordio`, once per file version (``stats``): a scan reads every record's header."""
    del stats  # Part of the cache key only.
    logging.info("Scanning the records of %s...", rec)
    result = bin_format.scan_recordio(rec, idx)
    for array in result[:3]:
        array.setflags(write=False)
    return result


class _RecordIOReader:
    def __init__(self, source):
        self.source = source
        self.file = None

    def __enter__(self):
        self.file = open(self.source.rec, "rb")  # pylint: disable=consider-using-with
        return self

    def __exit__(self, *exc):
        self.file.close()
        return False

    def read(self, i):
        key = int(self.source.keys[i])
        data = bin_format.read_image_record(self.file, self.source.rec, key, int(self.source.offsets[i]))
        return data, f"{self.source.rec} record {key}"


class _TFRecordSource(_Source):
    layout = "tfrecord"

    def __init__(self, directory):
        self.meta = _read_meta(directory)
        labels_path = os.path.join(directory, LABELS_FILE)
        try:
            labels = np.load(labels_path).astype(np.int32)
        except (OSError, ValueError) as err:
            raise DataError(f"Cannot read {labels_path} ({err}); convert the data again.") from None
        if len(labels) != self.meta["num_images"]:
            raise DataError(f"{labels_path} has {len(labels)} labels, {META_FILE} says {self.meta['num_images']} "
                            "images; convert the data again.")
        self.files = [os.path.join(directory, shard["file"]) for shard in self.meta["shards"]]
        missing = [f for f in self.files if not os.path.isfile(f)]
        if missing:
            raise DataError(f"TFRecord shard {missing[0]} is missing ({len(missing)} of {len(self.files)} shards); "
                            "convert the data again.")
        super().__init__(directory, labels, self.meta["num_classes"], self.meta["identity_names"])

    def epoch_fn(self, indices, seed, shuffle_buffer):
        with tf.device("/CPU:0"):
            files = tf.constant(self.files)
            mask = None
            if indices is not None:
                mask = np.zeros(self.num_images, bool)
                mask[indices] = True
                mask = tf.constant(mask)
        features = {"image": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64),
                    "index": tf.io.FixedLenFeature([], tf.int64)}

        def parse(record):
            ex = tf.io.parse_single_example(record, features)
            return ex["index"], ex["image"], tf.cast(ex["label"], tf.int32)

        def epoch_fn(epoch):
            order = files
            if shuffle_buffer:
                order = tf.random.experimental.stateless_shuffle(files, seed=_epoch_seed(seed, epoch, -1))
            ds = tf.data.Dataset.from_tensor_slices(order).interleave(
                tf.data.TFRecordDataset, cycle_length=min(len(self.files), 16), block_length=1,
                num_parallel_calls=AUTOTUNE, deterministic=True).map(parse, num_parallel_calls=AUTOTUNE)
            if mask is not None:
                ds = ds.filter(lambda i, image, label: tf.gather(mask, i))
            if shuffle_buffer:
                ds = _shuffle_windows(ds, shuffle_buffer, _epoch_seed(seed, epoch, -2))
            return ds

        return epoch_fn


def _shuffle_windows(ds, window, seed):
    """Shuffles consecutive windows of ``window`` elements, window ``k`` from ``fold_in(seed, k)``."""

    def shuffle_window(k, elements):
        perm = tf.random.experimental.stateless_shuffle(
            tf.range(tf.shape(elements[0])[0]), seed=tf.random.experimental.stateless_fold_in(seed, k))
        return tuple(tf.gather(t, perm) for t in elements)

    return ds.batch(window).enumerate().map(shuffle_window).unbatch()


def _read_meta(directory):
    path = os.path.join(directory, META_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as err:
        raise DataError(f"Cannot read {path} ({err}); convert the data again.") from None
    keys = ("format_version", "num_classes", "num_images", "image_size", "identity_names", "shards")
    if not isinstance(meta, dict) or any(k not in meta for k in keys):
        raise DataError(f"{path} is not a bnas_tf face data description; convert the data again.")
    if meta["format_version"] != FORMAT_VERSION:
        raise DataError(f"{path} has format version {meta['format_version']}, this code reads {FORMAT_VERSION}; "
                        "convert the data again.")
    return meta


def _resolve(source):
    """The `_Source` for a TFRecord directory, an identity folder or a RecordIO path."""
    if isinstance(source, _Source):
        return source
    path = os.fspath(source)
    if not os.path.exists(path):
        raise DataError(f"No CASIA-WebFace training data at {path}: it does not exist. {TRAINING_LAYOUT}")
    if os.path.isfile(path):
        if path.endswith(".rec"):
            return _RecordIOSource(path)
        if os.path.basename(path) == META_FILE:
            return _TFRecordSource(os.path.dirname(path) or ".")
        raise DataError(f"{path} is a file but not a RecordIO train.rec. {TRAINING_LAYOUT}")
    if os.path.isfile(os.path.join(path, META_FILE)):
        return _TFRecordSource(path)
    if os.path.isfile(os.path.join(path, "train.rec")):
        return _RecordIOSource(path)
    if glob.glob(os.path.join(path, _SHARD_GLOB)):
        raise DataError(f"{path} holds TFRecord shards but no {META_FILE}: the conversion did not finish. Run "
                        "`bnas_tf.face.data.convert` again.")
    return _FolderSource(path)


def describe(source):
    """Returns the `FaceDataInfo` of a training source (TFRecord dir, identity folder or RecordIO path).

    For folder and RecordIO sources ``image_size`` is the side of the first
    image (``None`` if it is not square).

    Raises:
        DataError: the source is missing or unusable; the message gives the expected layout.
    """
    src = _resolve(source)
    if src.layout == "tfrecord":
        size = src.meta["image_size"]
    else:
        with src.reader() as reader:
            data, where = reader.read(0)
        shape = _decode_checked(data, where).shape
        size = int(shape[0]) if shape[0] == shape[1] else None
    return FaceDataInfo(src.num_classes, src.num_images, size, src.layout)


def source_labels(source):
    """The int32 label of every image of a training source, in index order (for `split_heldout`)."""
    return _resolve(source).labels.copy()


# --------------------------------------------------------------------------
# Conversion to TFRecords.
# --------------------------------------------------------------------------


def convert(source, output_dir, *, num_shards=None, image_size=112):
    """Writes a folder or RecordIO source as TFRecord shards plus ``labels.npy`` and ``meta.json``.

    Args:
        source: an identity folder, or a RecordIO directory / ``train.rec``.
        output_dir: where the shards go (created); earlier shards and
            ``meta.json`` there are removed first.
        num_shards: shard count; ``None`` aims at `TARGET_SHARD_BYTES` per shard.
        image_size: recorded in ``meta.json``, the size `training_dataset` produces.

    Returns:
        The `FaceDataInfo` of the written data (layout ``"tfrecord"``).

    Raises:
        ConfigError: a bad argument, or ``source`` is already converted.
        DataError: the source is missing or holds a file that is not an image.
    """
    image_size = check_int("image_size", image_size, 1)
    if num_shards is not None:
        num_shards = check_int("num_shards", num_shards, 1)
    src = _resolve(source)
    if src.layout == "tfrecord":
        raise bad_value("source", os.fspath(source), "an identity folder or a RecordIO train.rec (this is "
                        "already a converted TFRecord directory)")
    output_dir = os.fspath(output_dir)
    if num_shards is None:
        num_shards = max(1, math.ceil(src.total_bytes() / TARGET_SHARD_BYTES))
    num_shards = min(num_shards, src.num_images)
    os.makedirs(output_dir, exist_ok=True)
    for stale in [os.path.join(output_dir, META_FILE), os.path.join(output_dir, LABELS_FILE)] + glob.glob(
            os.path.join(output_dir, _SHARD_GLOB)):
        if os.path.isfile(stale):
            os.remove(stale)
    names = [_SHARD_NAME.format(k, num_shards) for k in range(num_shards)]
    logging.info("Converting %d images of %d identities (%s) to %d TFRecord shards in %s...", src.num_images,
                 src.num_classes, src.where, num_shards, output_dir)
    counts = _write_shards(src, [os.path.join(output_dir, n) for n in names])
    _atomic_write(os.path.join(output_dir, LABELS_FILE), lambda f: np.save(f, src.labels), binary=True)
    meta = {
        "format_version": FORMAT_VERSION, "num_classes": src.num_classes, "num_images": src.num_images,
        "image_size": image_size, "source": os.path.abspath(src.where), "source_layout": src.layout,
        "identity_names": list(src.names),
        "shards": [{"file": n, "num_images": c} for n, c in zip(names, counts)],
    }
    _atomic_write(os.path.join(output_dir, META_FILE), lambda f: json.dump(meta, f, indent=1))
    logging.info("Wrote %s.", os.path.join(output_dir, META_FILE))
    return FaceDataInfo(src.num_classes, src.num_images, image_size, "tfrecord")


def _write_shards(src, paths):
    """Writes every image, in a fixed random order, round-robin over ``paths``; returns per-shard counts."""
    order = np.random.RandomState(_CONVERT_ORDER_SEED).permutation(src.num_images)
    temps = [p + ".tmp" for p in paths]
    writers = [tf.io.TFRecordWriter(t) for t in temps]
    counts = [0] * len(paths)
    try:
        with src.reader() as reader:
            for k, i in enumerate(order):
                data, where = reader.read(int(i))
                if not bin_format.is_encoded_image(data):
                    raise DataError(f"{where} is not a JPEG, PNG, BMP or GIF image.")
                example = tf.train.Example(features=tf.train.Features(feature={
                    "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data])),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(src.labels[i])])),
                    "index": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(i)])),
                }))
                writers[k % len(writers)].write(example.SerializeToString())
                counts[k % len(writers)] += 1
    finally:
        for writer in writers:
            writer.close()
    for temp, path in zip(temps, paths):
        os.replace(temp, path)
    return counts


def _atomic_write(path, write, binary=False):
    temp = path + ".tmp"
    with open(temp, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, path)


# --------------------------------------------------------------------------
# Training pipeline.
# --------------------------------------------------------------------------


def training_dataset(source, *, batch_size, seed, image_size=112, flip=True, shuffle_buffer=10000,
                     drop_remainder=True, repeat=False, indices=None):
    """Batches of (images float32 [B, H, W, 3] in [-1, 1], labels int32 [B]) from a training source.

    Args:
        source: a converted TFRecord directory (``meta.json``), an identity
            folder, or a RecordIO directory / ``train.rec``.
        batch_size: GLOBAL batch size.
        seed: int in [0, 2**63); fixes the order and the flips.
        image_size: output side; images of another size are resized bilinearly.
        flip: random horizontal flips.
        shuffle_buffer: TFRecord shuffle window (examples); 0 keeps the source
            order for every layout (no shuffling).
        drop_remainder: drop the last partial batch (of each pass without ``repeat``).
        repeat: epochs 0, 1, 2, ... back to back, forever.
        indices: optional image indices (into `source_labels`) to read, e.g.
            the training part of `split_heldout`.

    Raises:
        ConfigError: a bad argument.
        DataError: the source is missing or unusable.
    """
    batch_size = check_int("batch_size", batch_size, 1)
    epoch_fn, size, where = _epochs(source, seed, image_size, flip, shuffle_buffer, indices)
    if drop_remainder and size < batch_size:
        raise bad_value("batch_size", batch_size, f"at most the {size} images of {where} (drop_remainder)")
    epochs = tf.data.Dataset.range(_LAST_EPOCH if repeat else 1)
    ds = epochs.flat_map(epoch_fn).batch(batch_size, drop_remainder=drop_remainder)
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.prefetch(AUTOTUNE).with_options(options)


def epoch_stream(source, *, seed, image_size=112, flip=True, shuffle_buffer=10000, indices=None):
    """``(epoch_fn, size)``: ``epoch_fn(epoch)`` is one epoch of unbatched (image, label) pairs.

    What `training_dataset` batches, built from TensorFlow ops only: ``epoch``
    may be a tensor, so the function also runs inside ``flat_map`` (the
    search's streams in `bnas_tf.data`). ``size`` is the number of images.
    """
    epoch_fn, size, _ = _epochs(source, seed, image_size, flip, shuffle_buffer, indices)
    return epoch_fn, size


def _epochs(source, seed, image_size, flip, shuffle_buffer, indices):
    """(epoch -> dataset of (image, label), number of images, where the source is)."""
    seed = check_int("seed", seed, 0, 2**63 - 1)
    image_size = check_int("image_size", image_size, 1)
    shuffle_buffer = check_int("shuffle_buffer", shuffle_buffer, 0)
    src = _resolve(source)
    if indices is not None:
        indices = np.unique(np.asarray(indices, np.int64).reshape(-1))
        if len(indices) and (indices[0] < 0 or indices[-1] >= src.num_images):
            raise ConfigError(f"Invalid `indices`: expected image indices in [0, {src.num_images}). Received "
                              f"values from {indices[0]} to {indices[-1]}.")
    size = src.num_images if indices is None else len(indices)
    source_epoch = src.epoch_fn(indices, seed, shuffle_buffer)

    def prepare(epoch, index, encoded, label):
        image = decode_resize(encoded, image_size)
        if flip:
            image = tf.image.stateless_random_flip_left_right(image, seed=_epoch_seed(seed, epoch, index))
        return normalize(image), label

    def epoch_fn(epoch):
        epoch = tf.cast(epoch, tf.int64)
        return source_epoch(epoch).map(lambda i, x, y: prepare(epoch, i, x, y), num_parallel_calls=AUTOTUNE)

    return epoch_fn, size, src.where


def _order_fn(indices, size, seed, shuffle_buffer):
    """``epoch -> image indices``: all ``size`` (or ``indices``), permuted unless ``shuffle_buffer == 0``."""
    with tf.device("/CPU:0"):
        order = tf.constant(indices, tf.int64) if indices is not None else tf.range(size, dtype=tf.int64)
    if not shuffle_buffer:
        return lambda epoch: order
    return lambda epoch: tf.random.experimental.stateless_shuffle(order, seed=_epoch_seed(seed, epoch, -1))


def _epoch_seed(seed, epoch, index):
    base = tf.random.experimental.stateless_fold_in(tf.constant([seed, _TAG_FLIP], tf.int64),
                                                    tf.cast(epoch, tf.int64))
    return tf.random.experimental.stateless_fold_in(base, tf.cast(index, tf.int64))


def decode_resize(encoded, size):
    """Encoded image -> float32 [size, size, 3] in [0, 255]."""
    image = tf.cast(tf.io.decode_image(encoded, channels=3, expand_animations=False), tf.float32)
    hw = tf.shape(image)[:2]
    image = tf.cond(tf.reduce_all(tf.equal(hw, size)), lambda: image,
                    lambda: tf.image.resize(image, [size, size], method="bilinear", antialias=True))
    image.set_shape([size, size, 3])
    return image


def split_heldout(labels, *, heldout_per_class=None, fraction=None, seed):
    """Splits image indices into (train, heldout) inside every identity.

    Give exactly one of ``heldout_per_class`` (images held out per identity)
    or ``fraction`` (of each identity, rounded). Each identity's images are
    permuted with ``RandomState(seed)``; the held-out ones are the first of
    the permutation, and at least one image of every identity stays in
    training, so held-out images always come from training identities.

    Returns:
        (train, heldout): sorted int64 index arrays, disjoint, covering all images.

    Raises:
        ConfigError: a bad argument.
        DataError: nothing would be held out.
    """
    if (heldout_per_class is None) == (fraction is None):
        raise ConfigError("split_heldout takes exactly one of `heldout_per_class` and `fraction`.")
    if heldout_per_class is not None:
        heldout_per_class = check_int("heldout_per_class", heldout_per_class, 1)
    elif isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise bad_value("fraction", fraction, "a fraction in (0, 1)")
    seed = check_int("seed", seed, 0, 2**32 - 1)
    labels = np.asarray(labels).reshape(-1)
    if labels.dtype.kind not in "iu":
        raise bad_value("labels", labels.dtype, "integer labels")
    rng = np.random.RandomState(seed)
    order = np.argsort(labels, kind="stable")
    _, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    heldout = []
    for start, count in zip(starts, counts):
        members = rng.permutation(order[start:start + count])
        wanted = heldout_per_class if fraction is None else int(round(fraction * count))
        heldout.append(members[:max(0, min(wanted, count - 1))])
    heldout = np.sort(np.concatenate(heldout)).astype(np.int64) if heldout else np.zeros(0, np.int64)
    if not len(heldout):
        raise DataError(f"No image held out of {len(labels)} in {len(counts)} identities: every identity needs at "
                        "least two images, or use a larger fraction.")
    train = np.setdiff1d(np.arange(len(labels), dtype=np.int64), heldout)
    return train, heldout


def _decode_checked(data, where):
    try:
        return tf.io.decode_image(data, channels=3, expand_animations=False)
    except tf.errors.OpError as err:
        raise DataError(f"{where} cannot be decoded as an image: {first_line(err.message)}") from None


def first_line(text):
    """The first line of an error message."""
    return (str(text).strip().splitlines() or [""])[0]


def check_int(name, value, low, high=None):
    """``value`` as an int in [low, high]; ConfigError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low \
            or (high is not None and value > high):
        expected = f"an int >= {low}" if high is None else f"an int in [{low}, {high}]"
        raise bad_value(name, value, expected)
    return int(value)
