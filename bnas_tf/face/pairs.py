"""Face verification sets (LFW, CFP-FP, AgeDB-30): pairs of images, same person or not.

A `VerificationSet` holds the pairs interleaved, ``images[2i]`` and
``images[2i+1]`` being pair ``i``, as insightface's ``.bin`` files do. Read
from insightface's ``.bin`` pickles (`load_bin`, unpickled by a restricted
unpickler that runs nothing: `bnas_tf.face.bin_format`), or from image
folders with a pairs list (`load_pairs`: LFW's ``pairs.txt`` or
``path1 path2 1|0`` lines). Images are decoded, resized and normalized as the
training images (`bnas_tf.face.data.normalize`) and held in memory as float32:
LFW (6000 pairs) takes 1.8 GB at 112x112.
"""

import dataclasses
import functools
import os
import re

from absl import logging
import numpy as np
import tensorflow as tf

from bnas_tf.errors import DataError
from bnas_tf.face import bin_format
from bnas_tf.face.data import check_int, decode_resize, first_line, normalize

VERIFICATION_SOURCES = (
    "lfw.bin, cfp_fp.bin and agedb_30.bin come with insightface's training-data releases: faces_webface_112x112 "
    "(CASIA-WebFace) ships all three next to train.rec and train.idx (github.com/deepinsight/insightface, "
    "recognition datasets).")


@dataclasses.dataclass(frozen=True, eq=False)
class VerificationSet:
    """A face verification benchmark.

    Attributes:
        name: e.g. ``"lfw"``, ``"cfp_fp"``, ``"agedb_30"``.
        images: float32 [2N, H, W, 3], normalized (`normalize`); ``images[2i]``
            and ``images[2i + 1]`` are pair ``i``.
        issame: bool [N], whether pair ``i`` shows one person.
    """

    name: str
    images: np.ndarray
    issame: np.ndarray

    def __post_init__(self):
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.float32:
            raise DataError(f"Verification set {self.name}: images must be float32 [2N, H, W, 3], got "
                            f"{self.images.dtype} {self.images.shape}.")
        if self.issame.ndim != 1 or self.issame.dtype != bool or len(self.images) != 2 * len(self.issame):
            raise DataError(f"Verification set {self.name}: {len(self.images)} images for "
                            f"{len(self.issame)} pairs; expected two per pair and a bool issame [N].")

    @property
    def num_pairs(self):
        """N, the number of pairs."""
        return len(self.issame)


def load_bin(path, *, image_size=112, name=None):
    """Loads an insightface verification ``.bin`` (lfw.bin, cfp_fp.bin, agedb_30.bin) as a `VerificationSet`.

    The pickle is read by `bin_format.read_bin`, which resolves no global
    beyond numpy's array reconstructors and refuses anything else.

    Args:
        path: the ``.bin`` file.
        image_size: output side; other sizes are resized bilinearly.
        name: the set's name; defaults to the file stem.

    Raises:
        DataError: the file is missing (the message says where .bin files
            come from), hostile, truncated or malformed, or an image does not decode.
    """
    path = os.fspath(path)
    image_size = check_int("image_size", image_size, 1)
    name = name or os.path.splitext(os.path.basename(path))[0]
    if not os.path.isfile(path):
        raise DataError(_missing_verification(name, path))
    bins, issame = bin_format.read_bin(path)
    images = _decode_all(bins, image_size, lambda i: f"{path}: image {i} (pair {i // 2})")
    logging.info("Loaded verification set %s from %s: %d pairs.", name, path, len(issame))
    return VerificationSet(name, images, issame)


def load_pairs(root, pairs_file, *, image_size=112, name=None):
    """Loads a verification set from an image folder and a pairs list (`bin_format.read_pairs`).

    Args:
        root: the image folder.
        pairs_file: LFW's ``pairs.txt`` or ``path1 path2 1|0`` lines.
        image_size: output side; other sizes are resized bilinearly.
        name: the set's name; defaults to the folder's name.

    Raises:
        DataError: a missing folder or image, a malformed line, an undecodable image.
    """
    root, pairs_file = os.fspath(root), os.fspath(pairs_file)
    image_size = check_int("image_size", image_size, 1)
    name = name or os.path.basename(os.path.normpath(root))
    if not os.path.isdir(root):
        raise DataError(_missing_verification(name, root))
    pairs = bin_format.read_pairs(root, pairs_file)
    paths = [p for path1, path2, _, _ in pairs for p in (path1, path2)]
    encoded = []
    for path in paths:
        with open(path, "rb") as f:
            encoded.append(f.read())
    images = _decode_all(encoded, image_size,
                         lambda i: f"{paths[i]} ({pairs_file}, line {pairs[i // 2][3]})")
    logging.info("Loaded verification set %s from %s: %d pairs.", name, pairs_file, len(pairs))
    return VerificationSet(name, images, np.array([same for _, _, same, _ in pairs], bool))


def load_verification(spec, *, image_size=112):
    """Loads a verification set from ``"name=path"`` or a path.

    A path ending in ``.bin`` goes to `load_bin`; a directory holding
    ``pairs.txt``, or ``DIR:PAIRS_FILE``, to `load_pairs`. The name defaults
    to the file stem (lfw, cfp_fp, agedb_30) or the directory name.

    Raises:
        DataError: the data is missing (the message says where to get and put it) or unusable.
    """
    text = os.fspath(spec)
    match = re.fullmatch(r"([A-Za-z0-9_.+-]+)=(.+)", text)
    name, path = match.groups() if match else (None, text)
    if path.endswith(".bin"):
        return load_bin(path, image_size=image_size, name=name)
    if os.path.isdir(path):
        pairs = os.path.join(path, "pairs.txt")
        if not os.path.isfile(pairs):
            raise DataError(f"{path} has no pairs.txt; pass {name or 'NAME'}={path}:PAIRS_FILE to name the pairs "
                            "list (LFW pairs.txt or `path1 path2 1|0` lines).")
        return load_pairs(path, pairs, image_size=image_size, name=name)
    if ":" in path:
        root, pairs = path.rsplit(":", 1)
        if os.path.isdir(root):
            if not os.path.isabs(pairs) and not os.path.isfile(pairs):
                pairs = os.path.join(root, pairs)
            return load_pairs(root, pairs, image_size=image_size, name=name)
    raise DataError(_missing_verification(name or os.path.basename(os.path.normpath(path)), path))


def _missing_verification(name, path):
    return (f"Verification set {name}: {path} does not exist. {VERIFICATION_SOURCES} Put the file at {path} "
            "(e.g. <data_dir>/lfw.bin), or give an image folder: NAME=DIR with DIR/pairs.txt (LFW layout "
            "DIR/<name>/<name>_0001.jpg), or NAME=DIR:PAIRS_FILE with `path1 path2 1|0` lines.")


@functools.lru_cache(maxsize=None)
def _decoder(image_size):
    return tf.function(lambda x: normalize(decode_resize(x, image_size)),
                       input_signature=[tf.TensorSpec([], tf.string)])


def _decode_all(encoded, image_size, where):
    """Decodes, resizes and normalizes encoded images into float32 [n, size, size, 3]."""
    fn = _decoder(image_size)
    with tf.device("/CPU:0"):
        out = np.empty((len(encoded), image_size, image_size, 3), np.float32)
        for i, data in enumerate(encoded):
            try:
                out[i] = fn(tf.constant(data)).numpy()
            except tf.errors.OpError as err:
                raise DataError(f"{where(i)} cannot be decoded as an image: {first_line(err.message)}") from None
    return out
