"""File formats of the face datasets: MXNet RecordIO, insightface .bin pickles, pairs lists.

Read in pure Python/NumPy (no mxnet), and without trusting pickles.

**MXNet RecordIO** (insightface's ``train.rec`` + ``train.idx``, e.g. the
faces_webface_112x112 release of CASIA-WebFace). ``train.idx`` is text, one
``key<TAB>byte offset`` line per record. At each offset of ``train.rec`` a
record is stored as (little-endian): the magic ``0xced7230a``, a uint32
``lrec`` whose top 3 bits are a continuation flag and low 29 bits the length,
then the payload padded to a multiple of 4 bytes. dmlc's writer splits a
payload wherever the magic occurs at a 4-byte aligned position: the parts
carry flags 1 (first), 2 (middle), 3 (last) and the reader puts the magic
back between them; flag 0 is a whole record. A payload starts with an
``IRHeader``, struct ``<IfQQ`` (flag, label, id, id2, 24 bytes); when
``flag > 0`` the label is instead ``flag`` float32 values that follow the
header. The rest of the payload is the encoded image.

insightface writes a header record at key 0 whose label is ``(a, b)``:
records ``1 .. a-1`` are the images (label = class, or label[0] when it is an
array) and records ``a .. b-1`` describe one identity each (no image). When
record 0 has ``flag == 0`` there is no header and every key holding an
encoded image is an image record (other records are skipped).

**Verification .bin files** (insightface's lfw.bin, cfp_fp.bin, agedb_30.bin)
are pickles of ``(bins, issame_list)``: ``bins`` are the encoded images, two
per pair, and ``issame_list`` the pair labels. insightface's writers
(``src/data/lfw2pack.py``, ``agedb2pack2.py``, ``cfp2pack.py``, run under
Python 2) store ``bins`` as raw JPEG bytes (LFW: the file contents) or as the
uint8 numpy arrays ``cv2.imencode`` returns (AgeDB-30, CFP-FP), and
``issame_list`` as a list of bools; readers load them with
``encoding="bytes"`` and ``np.asarray(issame_list)``.

Unpickling runs code named by the file, so `read_bin` uses an unpickler that
resolves only these names, each to a checking stand-in rather than to the
real object:

- numpy arrays, protocol 2 (Python 2 files): ``numpy.core.multiarray._reconstruct``
  (``numpy._core`` under numpy 2), ``numpy.ndarray`` (only as its argument)
  and ``numpy.dtype`` (plain integer and bool types only);
- numpy arrays, protocol 5: ``numpy.core.numeric._frombuffer`` (``numpy._core``);
- Python 3 bytes at protocol < 3: ``_codecs.encode`` (latin-1 only) and
  ``builtins.bytes`` (empty only).

Every other global (``os.system``, ``builtins.eval``, any class) raises
`DataError` before anything is called; the stand-ins check their arguments
and cannot be modified by the pickle, and the result must be exactly bytes or
uint8 arrays and bools. By the writers' code, lfw.bin needs no global at all
and agedb_30.bin / cfp_fp.bin need the protocol-2 numpy names.

**Pairs lists** (`read_pairs`) of verification image folders: LFW's
``pairs.txt`` or generic ``path1 path2 1|0`` lines.
"""

from __future__ import annotations

import io
import os
import pickle
import struct

import numpy as np

from bnas_tf.errors import DataError

#: dmlc RecordIO magic number.
RECORDIO_MAGIC = 0xCED7230A
_LENGTH_MASK = (1 << 29) - 1
_IR_FORMAT = "<IfQQ"
_IR_SIZE = struct.calcsize(_IR_FORMAT)  # 24
# First bytes of the encoded images we accept.
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"GIF87a", b"GIF89a")


def is_encoded_image(data):
    """Whether ``data`` starts like a JPEG, PNG, BMP or GIF file."""
    return bytes(data[:8]).startswith(_SIGNATURES)


# --------------------------------------------------------------------------
# MXNet RecordIO.
# --------------------------------------------------------------------------


def read_recordio_index(idx_path):
    """Reads a ``.idx`` file: returns (keys, offsets) int64 arrays in file order."""
    keys, offsets = [], []
    try:
        with open(idx_path, encoding="ascii") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                fields = line.split("\t")
                if len(fields) != 2:
                    raise DataError(f"{idx_path}, line {line_no}: expected `key<TAB>offset`, got {line.strip()!r}.")
                keys.append(int(fields[0]))
                offsets.append(int(fields[1]))
    except (UnicodeDecodeError, ValueError) as err:
        raise DataError(f"{idx_path} is not a RecordIO index (`key<TAB>offset` lines): {err}.") from None
    if not keys:
        raise DataError(f"The RecordIO index {idx_path} is empty.")
    return np.asarray(keys, np.int64), np.asarray(offsets, np.int64)


def read_record(f, offset, path, *, limit=None):
    """Reads the record at byte ``offset`` of the open RecordIO file ``f``.

    Multi-part records are joined with the magic number between the parts, as
    dmlc's reader does. With ``limit`` at most the first ``limit`` bytes of the
    payload are read (enough for a header and an image signature).

    Raises:
        DataError: no valid record at ``offset``.
    """
    out = bytearray()
    position = offset
    while True:
        f.seek(position)
        head = f.read(8)
        if len(head) != 8:
            raise DataError(f"{path}: truncated RecordIO record at byte {position} (index offset {offset}).")
        magic, lrec = struct.unpack("<II", head)
        if magic != RECORDIO_MAGIC:
            raise DataError(f"{path}: no RecordIO record at byte {position} (magic {magic:#010x}, expected "
                            f"{RECORDIO_MAGIC:#010x}); train.idx does not match train.rec.")
        cflag, length = lrec >> 29, lrec & _LENGTH_MASK
        want = length if limit is None else min(length, limit - len(out))
        part = f.read(want)
        if len(part) != want:
            raise DataError(f"{path}: truncated RecordIO record at byte {position}: {len(part)} of {length} bytes.")
        out += part
        if cflag in (0, 3) or (limit is not None and len(out) >= limit):
            return bytes(out)
        if cflag not in (1, 2):
            raise DataError(f"{path}: bad RecordIO continuation flag {cflag} at byte {position}.")
        out += struct.pack("<I", RECORDIO_MAGIC)
        position += 8 + ((length + 3) & ~3)


def unpack_header(payload, where):
    """Splits an image record payload: returns (flag, labels tuple, image bytes)."""
    if len(payload) < _IR_SIZE:
        raise DataError(f"{where}: record of {len(payload)} bytes is shorter than its {_IR_SIZE}-byte header.")
    flag, label, _, _ = struct.unpack_from(_IR_FORMAT, payload)
    if flag == 0:
        return 0, (label,), payload[_IR_SIZE:]
    end = _IR_SIZE + 4 * flag
    if len(payload) < end:
        raise DataError(f"{where}: header announces {flag} labels but the record has {len(payload)} bytes.")
    labels = struct.unpack_from(f"<{flag}f", payload, _IR_SIZE)
    return flag, labels, payload[end:]


def scan_recordio(rec_path, idx_path):
    """Lists the image records of a RecordIO file.

    Returns:
        (keys int64, offsets int64, labels int32, num_identities or None):
        the image records in index order, and the identity count announced by
        the header record (``None`` without one).

    Raises:
        DataError: unreadable files, a bad label, or no image record.
    """
    keys, offsets = read_recordio_index(idx_path)
    where = {int(k): int(o) for k, o in zip(keys, offsets)}
    image_keys, identities = None, None
    out_keys, out_offsets, labels = [], [], []
    with open(rec_path, "rb") as f:
        if 0 in where:
            flag, header_labels, _ = unpack_header(read_record(f, where[0], rec_path), f"{rec_path} record 0")
            if flag > 0:
                if flag < 2:
                    raise DataError(f"{rec_path}: header record 0 has {flag} label; expected the range (a, b).")
                first_identity, end_identity = int(header_labels[0]), int(header_labels[1])
                image_keys = range(1, first_identity)
                identities = max(0, end_identity - first_identity)
        candidates = image_keys if image_keys is not None else keys.tolist()
        for key in candidates:
            if key not in where:
                raise DataError(f"{idx_path} has no entry for image record {key} (the header announces records "
                                f"1 .. {len(image_keys)}).")
            label, is_image = _record_label(f, rec_path, key, where[key])
            if not is_image:
                if image_keys is not None:
                    raise DataError(f"{rec_path}: record {key} holds no encoded image.")
                continue
            out_keys.append(key)
            out_offsets.append(where[key])
            labels.append(label)
    if not labels:
        raise DataError(f"{rec_path} holds no image records.")
    return (np.asarray(out_keys, np.int64), np.asarray(out_offsets, np.int64), np.asarray(labels, np.int32),
            identities)


def _record_label(f, rec_path, key, offset):
    """(label, whether the record holds an encoded image) of one record, from its first bytes."""
    where = f"{rec_path} record {key}"
    limit = _IR_SIZE + 4 * 8 + 8
    payload = read_record(f, offset, rec_path, limit=limit)
    flag = struct.unpack_from("<I", payload)[0] if len(payload) >= 4 else 0
    if _IR_SIZE + 4 * flag + 8 > limit:
        payload = read_record(f, offset, rec_path, limit=_IR_SIZE + 4 * flag + 8)
    _, labels, image = unpack_header(payload, where)
    if not is_encoded_image(image):
        return -1, False
    value = labels[0]
    if not (value == value and 0 <= value < 2**31 and float(value).is_integer()):
        raise DataError(f"{where}: label {value!r} is not a class index (a non-negative integer).")
    return int(value), True


def read_image_record(f, rec_path, key, offset):
    """The encoded image bytes of image record ``key`` at ``offset``."""
    _, _, image = unpack_header(read_record(f, offset, rec_path), f"{rec_path} record {key}")
    return image


# --------------------------------------------------------------------------
# Verification .bin files: a restricted unpickler.
# --------------------------------------------------------------------------


class _StandIn:
    """A callable the pickle may call but never modify (no attributes can be set)."""

    __slots__ = ("_fn",)

    def __init__(self, fn=None):
        object.__setattr__(self, "_fn", fn)

    def __setattr__(self, name, value):
        raise pickle.UnpicklingError("the pickle tries to modify a reconstructor")

    def __call__(self, *args):
        if self._fn is None:
            raise pickle.UnpicklingError("numpy.ndarray may only be an argument of _reconstruct")
        return self._fn(*args)


_NDARRAY = _StandIn()  # Stands for numpy.ndarray; only `_safe_reconstruct` accepts it.
_DTYPES = frozenset({"u1", "b1", "i1", "i2", "i4", "i8", "u2", "u4", "u8"})
_REAL_RECONSTRUCT = np.zeros(1).__reduce__()[0]
_REAL_FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]


def _text(value):
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _safe_reconstruct(subtype, shape, typecode):
    if subtype is not _NDARRAY or tuple(shape) != (0,) or _text(typecode) != "b":
        raise pickle.UnpicklingError("unexpected numpy._reconstruct arguments")
    return _REAL_RECONSTRUCT(np.ndarray, (0,), b"b")


def _safe_dtype(name, align=False, copy=True):
    name = _text(name)
    if not isinstance(name, str) or name not in _DTYPES:
        raise pickle.UnpicklingError(f"numpy dtype {name!r} is not allowed (only integer and bool types)")
    return np.dtype(name, bool(align), bool(copy))


def _safe_frombuffer(buf, dtype, shape, order):
    if not isinstance(buf, (bytes, bytearray)) or not isinstance(dtype, np.dtype) or dtype.kind not in "uib" \
            or not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape) \
            or _text(order) not in ("C", "F"):
        raise pickle.UnpicklingError("unexpected numpy._frombuffer arguments")
    return _REAL_FROMBUFFER(buf, dtype, shape, _text(order))


def _safe_encode(text, encoding="utf-8"):
    if not isinstance(text, str) or not isinstance(encoding, str) \
            or encoding.replace("_", "-").lower() not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("only latin-1 _codecs.encode (Python 3 bytes at protocol 2) is allowed")
    return text.encode("latin-1")


def _safe_bytes(*args):
    if args:
        raise pickle.UnpicklingError("only bytes() without arguments is allowed")
    return b""


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _StandIn(_safe_reconstruct),
    ("numpy._core.multiarray", "_reconstruct"): _StandIn(_safe_reconstruct),
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _StandIn(_safe_dtype),
    ("numpy.core.numeric", "_frombuffer"): _StandIn(_safe_frombuffer),
    ("numpy._core.numeric", "_frombuffer"): _StandIn(_safe_frombuffer),
    ("_codecs", "encode"): _StandIn(_safe_encode),
    ("__builtin__", "bytes"): _StandIn(_safe_bytes),
    ("builtins", "bytes"): _StandIn(_safe_bytes),
}


class _Refused(Exception):
    """A global the restricted unpickler will not resolve."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the names in `_ALLOWED`, to their checking stand-ins."""

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None

    def persistent_load(self, pid):
        raise _Refused(f"persistent id {pid!r}")


def read_bin(path):
    """Reads an insightface verification ``.bin`` file without running its code.

    Returns:
        (bins, issame): a list of ``2 * n`` encoded images (bytes) and a bool
        array [n].

    Raises:
        DataError: the file is missing, names a global outside the allowed
            numpy/bytes reconstructors (a hostile or foreign pickle), is
            truncated or malformed, or is not ``(bins, issame_list)`` with
            ``len(bins) == 2 * len(issame_list)``.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as err:
        raise DataError(f"Cannot read the verification file {path}: {err.strerror or err}.") from None
    try:
        obj = _RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except _Refused as err:
        raise DataError(
            f"Refusing to load {path}: the pickle calls {err}, which a verification .bin (a pickle of "
            "(bins, issame_list)) never needs; the file may be hostile. Nothing in it was run.") from None
    except EOFError:
        raise DataError(f"{path} is truncated (the pickle ends early); download it again.") from None
    except Exception as err:  # pylint: disable=broad-except
        raise DataError(f"{path} is not a readable verification .bin pickle: {type(err).__name__}: {err}.") from None
    return _check_bin(obj, path)


def _check_bin(obj, path):
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        kind = f"a {len(obj)}-tuple" if isinstance(obj, (tuple, list)) else type(obj).__name__
        raise DataError(f"{path} holds {kind}, expected the pair (bins, issame_list).")
    bins, issame = obj
    if not isinstance(bins, (list, tuple)):
        raise DataError(f"{path}: bins is a {type(bins).__name__}, expected a list of encoded images.")
    images = []
    for i, item in enumerate(bins):
        if isinstance(item, (bytes, bytearray)):
            images.append(bytes(item))
        elif isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.ndim <= 2:
            images.append(item.tobytes())
        else:
            kind = f"{item.dtype} array" if isinstance(item, np.ndarray) else type(item).__name__
            raise DataError(f"{path}: image {i} is a {kind}, expected encoded image bytes.")
    issame = _check_issame(issame, path)
    if len(images) != 2 * len(issame):
        raise DataError(f"{path}: {len(images)} images for {len(issame)} pairs; a .bin holds exactly two images "
                        "per pair.")
    return images, issame


def _check_issame(issame, path):
    if isinstance(issame, np.ndarray):
        if issame.ndim != 1 or issame.dtype.kind not in "bui" or not np.isin(issame, (0, 1)).all():
            raise DataError(f"{path}: issame_list is a {issame.dtype} array of shape {issame.shape}, "
                            "expected 0/1 or bool values [n].")
        return issame.astype(bool)
    if not isinstance(issame, (list, tuple)):
        raise DataError(f"{path}: issame_list is a {type(issame).__name__}, expected a list of bools.")
    for i, value in enumerate(issame):
        if not (isinstance(value, bool) or (isinstance(value, int) and value in (0, 1))):
            raise DataError(f"{path}: issame_list[{i}] is {value!r}, expected a bool.")
    return np.asarray(issame, bool).reshape(-1)


def rec_paths(path):
    """(train.rec, train.idx) paths for a RecordIO source (directory or .rec file)."""
    path = os.fspath(path)
    rec = os.path.join(path, "train.rec") if os.path.isdir(path) else path
    return rec, rec[:-4] + ".idx"


# --------------------------------------------------------------------------
# Pairs lists of verification image folders.
# --------------------------------------------------------------------------


def read_pairs(root, pairs_file):
    """Reads a verification pairs list; every image must exist under ``root``.

    Two formats, told apart per file: LFW's ``pairs.txt`` (a header line of one
    or two integers such as ``10 300``, then ``name i j`` for a same-person
    pair and ``name1 i name2 j`` for a different-person pair, images at
    ``root/name/name_%04d.jpg``, or .png), recognized by its header or by a
    four-field line; otherwise generic ``path1 path2 flag`` lines, paths
    relative to ``root``, flag 1 for the same person and 0 (or Face_Pytorch's
    -1) for different people. Fields are separated by whitespace; blank lines
    and lines starting with ``#`` are skipped.

    Returns:
        A list of (path1, path2, issame, line number).

    Raises:
        DataError: the file is unreadable or empty, a line is malformed (its
            number is given), or an image is missing (named).
    """
    try:
        with open(pairs_file, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"Cannot read the pairs list {pairs_file}: {err}.") from None
    rows = [(n, line.split()) for n, line in enumerate(lines, 1)
            if line.strip() and not line.lstrip().startswith("#")]
    header = bool(rows) and len(rows[0][1]) <= 2 and all(_is_int(x) for x in rows[0][1])
    if header:
        rows = rows[1:]
    if not rows:
        raise DataError(f"The pairs list {pairs_file} holds no pairs.")
    lfw = header or any(len(fields) == 4 for _, fields in rows)
    pairs = []
    for line_no, fields in rows:
        path1, path2, same = (_lfw_pair if lfw else _generic_pair)(root, fields, f"{pairs_file}, line {line_no}")
        for path in (path1, path2):
            if not os.path.isfile(path):
                raise DataError(f"{pairs_file}, line {line_no}: image {path} does not exist.")
        pairs.append((path1, path2, same, line_no))
    return pairs


def _is_int(text):
    return text.lstrip("+-").isdigit()


def _lfw_pair(root, fields, where):
    if len(fields) == 3 and _is_int(fields[1]) and _is_int(fields[2]):
        return _lfw_image(root, fields[0], fields[1]), _lfw_image(root, fields[0], fields[2]), True
    if len(fields) == 4 and _is_int(fields[1]) and _is_int(fields[3]):
        return _lfw_image(root, fields[0], fields[1]), _lfw_image(root, fields[2], fields[3]), False
    raise DataError(f"{where}: expected `name i j` or `name1 i name2 j` (LFW pairs.txt), got {' '.join(fields)!r}.")


def _lfw_image(root, name, number):
    base = os.path.join(root, name, f"{name}_{int(number):04d}")
    for ext in (".jpg", ".png", ".jpeg"):
        if os.path.isfile(base + ext):
            return base + ext
    return base + ".jpg"


def _generic_pair(root, fields, where):
    if len(fields) != 3 or fields[2] not in ("1", "0", "-1"):
        raise DataError(f"{where}: expected `path1 path2 1|0` (1: same person), got {' '.join(fields)!r}.")
    return os.path.join(root, fields[0]), os.path.join(root, fields[1]), fields[2] == "1"
