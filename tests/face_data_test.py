"""Tests of bnas_tf.face.data and bin_format: training layouts, conversion, .bin safety, pairs lists.

Everything runs on tiny images the tests write into tmp_path: PNGs where
pixel values must survive exactly, JPEGs where only decoding matters. The
RecordIO files and the Python 2 style pickles come from independent writers
below that follow the published formats (dmlc recordio.h, mxnet recordio.py,
the pickle opcodes), not from the code under test.
"""

import json
import os
import pickle
import struct

import numpy as np
import pytest
import tensorflow as tf

from bnas_tf.errors import ConfigError, DataError
from bnas_tf.face import bin_format
from bnas_tf.face import data
from bnas_tf.face import pairs

_SIZE = 8
_MAGIC = 0xCED7230A


def _image(seed, size=_SIZE):
    return np.random.RandomState(seed).randint(0, 256, (size, size, 3)).astype(np.uint8)


def _png(array):
    return tf.io.encode_png(array).numpy()


def _jpeg(array):
    return tf.io.encode_jpeg(array, quality=95).numpy()


def _identity_folder(root, counts=(3, 2, 4), ext=".png"):
    """root/<identity>/<k>.png with distinct random images; returns {path: (array, label)}."""
    written = {}
    names = [f"id_{chr(ord('c') - i)}" for i in range(len(counts))]  # id_c, id_b, id_a: unsorted on purpose
    for i, (name, count) in enumerate(zip(names, counts)):
        os.makedirs(root / name)
        for k in range(count):
            array = _image(100 * i + k)
            path = root / name / f"{k:03d}{ext}"
            path.write_bytes(_png(array) if ext == ".png" else _jpeg(array))
            written[str(path)] = (array, sorted(names).index(name))
    (root / "empty_dir").mkdir()
    (root / names[0] / "notes.txt").write_text("not an image")
    return written


def _collect(ds):
    images, labels = [], []
    for x, y in ds:
        images.append(x.numpy())
        labels.append(y.numpy())
    return np.concatenate(images), np.concatenate(labels)


def _pixels(images):
    """Normalized images back to uint8 pixel values (exact for unresized images)."""
    return np.round(np.asarray(images) * 127.5 + 127.5).astype(np.uint8)


def _multiset(images, labels):
    return sorted((int(y), x.tobytes()) for x, y in zip(_pixels(images), labels))


def _normalized(arrays):
    return (np.asarray(arrays, np.float32) - 127.5) / 127.5


def _assert_images(got, arrays):
    """``got`` is ``arrays`` normalized as (x - 127.5) / 127.5."""
    np.testing.assert_allclose(got, _normalized(arrays), rtol=0, atol=1e-6)


# --------------------------------------------------------------------------
# Independent writers.
# --------------------------------------------------------------------------


def _recordio_record(payload):
    """One dmlc RecordIO record, split wherever the magic sits at an aligned offset."""
    magic = struct.pack("<I", _MAGIC)
    parts, start = [], 0
    for i in range(0, len(payload) - len(payload) % 4, 4):
        if payload[i:i + 4] == magic:
            parts.append(payload[start:i])
            start = i + 4
    parts.append(payload[start:])
    out = b""
    for k, part in enumerate(parts):
        cflag = 0 if len(parts) == 1 else 1 if k == 0 else 3 if k == len(parts) - 1 else 2
        out += magic + struct.pack("<I", (cflag << 29) | len(part)) + part + b"\0" * (-len(part) % 4)
    return out


def _ir_payload(label, image, *, flag=0, labels=()):
    if flag:
        return struct.pack("<IfQQ", flag, 0.0, 0, 0) + struct.pack(f"<{flag}f", *labels) + image
    return struct.pack("<IfQQ", 0, float(label), 0, 0) + image


def _write_recordio(directory, records):
    """Writes train.rec / train.idx with (key, payload) records."""
    rec, lines = b"", []
    for key, payload in records:
        lines.append(f"{key}\t{len(rec)}\n")
        rec += _recordio_record(payload)
    (directory / "train.rec").write_bytes(rec)
    (directory / "train.idx").write_text("".join(lines))


def _insightface_recordio(directory, items, num_ids):
    """insightface layout: header 0, images 1..n, identity records n+1..n+num_ids."""
    n = len(items)
    records = [(0, _ir_payload(0, b"", flag=2, labels=(n + 1, n + 1 + num_ids)))]
    records += [(k + 1, _ir_payload(label, encoded, flag=2 if k % 2 else 0, labels=(label, 0)))
                for k, (encoded, label) in enumerate(items)]
    records += [(n + 1 + c, _ir_payload(0, b"", flag=2, labels=(1, n + 1))) for c in range(num_ids)]
    _write_recordio(directory, records)


def _py2_string(raw):
    """A Python 2 `str` (SHORT_BINSTRING / BINSTRING); Python 3 reads it as bytes with encoding="bytes"."""
    return (b"U" + bytes([len(raw)]) + raw) if len(raw) < 256 else (b"T" + struct.pack("<i", len(raw)) + raw)


def _py2_uint8_array(raw):
    """numpy 1.x under Python 2, protocol 2: a (len, 1) uint8 array as cv2.imencode returns."""
    return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + _py2_string(b"b") + b"\x87R"
            + b"(K\x01J" + struct.pack("<i", len(raw)) + b"K\x01\x86cnumpy\ndtype\n" + _py2_string(b"u1")
            + b"K\x00K\x01\x87R(K\x03" + _py2_string(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89"
            + _py2_string(raw) + b"tb")


def _py2_bin(encoded, issame, as_arrays):
    """What insightface's Python 2 packers wrote: (list of str or uint8 arrays, list of bools)."""
    items = b"".join(_py2_uint8_array(e) if as_arrays else _py2_string(e) for e in encoded)
    flags = b"".join(b"\x88" if s else b"\x89" for s in issame)
    return b"\x80\x02(](" + items + b"e](" + flags + b"et."


class _Hostile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# --------------------------------------------------------------------------
# Identity folders.
# --------------------------------------------------------------------------


def test_scan_identity_folder_sorts_identities_and_skips_non_images(tmp_path):
    written = _identity_folder(tmp_path)
    paths, labels, names = data.scan_identity_folder(tmp_path)
    assert names == ["id_a", "id_b", "id_c"]
    assert labels.dtype == np.int32
    assert [written[p][1] for p in paths] == labels.tolist()
    assert labels.tolist() == [0, 0, 0, 0, 1, 1, 2, 2, 2]
    assert all(p.endswith(".png") for p in paths)


def test_folder_dataset_shapes_labels_normalization(tmp_path):
    written = _identity_folder(tmp_path)
    ds = data.training_dataset(tmp_path, batch_size=4, seed=1, flip=False, drop_remainder=False, image_size=_SIZE)
    assert ds.element_spec[0].shape.as_list() == [None, _SIZE, _SIZE, 3]
    images, labels = _collect(ds)
    assert images.dtype == np.float32 and labels.dtype == np.int32
    assert images.min() >= -1.0 and images.max() <= 1.0
    expected = [(label, array.tobytes()) for array, label in written.values()]
    assert _multiset(images, labels) == sorted(expected)
    info = data.describe(tmp_path)
    assert info == data.FaceDataInfo(num_classes=3, num_images=9, image_size=_SIZE, layout="folder")


def test_flip_is_deterministic_and_only_flips(tmp_path):
    written = _identity_folder(tmp_path, counts=(6, 6))
    originals = {(label, a.tobytes()) for a, label in written.values()}
    mirrored = {(label, a[:, ::-1].tobytes()) for a, label in written.values()}

    def run(seed):
        return _collect(data.training_dataset(tmp_path, batch_size=3, seed=seed, image_size=_SIZE, repeat=True)
                        .take(8))

    first, again, other = run(5), run(5), run(6)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])
    seen = set(zip(first[1].tolist(), (x.tobytes() for x in _pixels(first[0]))))
    assert seen <= originals | mirrored
    assert seen & mirrored and seen & originals  # Both flipped and unflipped images occur.


def test_resize_and_grayscale_expansion(tmp_path):
    os.makedirs(tmp_path / "person")
    gray = np.full((16, 12, 1), 200, np.uint8)
    (tmp_path / "person" / "a.png").write_bytes(tf.io.encode_png(gray).numpy())
    (tmp_path / "person" / "b.jpg").write_bytes(_jpeg(_image(3, 16)))
    images, _ = _collect(data.training_dataset(tmp_path, batch_size=2, seed=0, image_size=_SIZE, flip=False))
    assert images.shape == (2, _SIZE, _SIZE, 3)
    assert data.describe(tmp_path).image_size in (None, 16)


def test_missing_folder_message_gives_the_layout(tmp_path):
    with pytest.raises(DataError, match=r"<identity>/<image>\.jpg.*train\.rec.*train\.idx.*convert"):
        data.training_dataset(tmp_path / "casia", batch_size=2, seed=0)
    with pytest.raises(DataError, match="no identity folders"):
        data.describe(tmp_path)


# --------------------------------------------------------------------------
# Conversion.
# --------------------------------------------------------------------------


def test_convert_round_trips_the_folder(tmp_path):
    source = tmp_path / "casia"
    _identity_folder(source)
    out = tmp_path / "tfrecords"
    info = data.convert(source, out, num_shards=2, image_size=_SIZE)
    assert info == data.FaceDataInfo(3, 9, _SIZE, "tfrecord")
    assert sorted(os.listdir(out)) == ["labels.npy", "meta.json", "train-00000-of-00002.tfrecord",
                                       "train-00001-of-00002.tfrecord"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["identity_names"] == ["id_a", "id_b", "id_c"]
    assert meta["num_images"] == 9 and meta["num_classes"] == 3 and meta["format_version"] == 1
    assert data.describe(out) == info
    kwargs = dict(batch_size=4, seed=0, image_size=_SIZE, flip=False, drop_remainder=False)
    from_folder = _collect(data.training_dataset(source, **kwargs))
    from_records = _collect(data.training_dataset(out, **kwargs))
    assert _multiset(*from_records) == _multiset(*from_folder)
    np.testing.assert_array_equal(data.source_labels(out), data.source_labels(source))


def test_tfrecord_shuffle_and_flip_deterministic(tmp_path):
    _identity_folder(tmp_path / "casia", counts=(5, 5, 5))
    data.convert(tmp_path / "casia", tmp_path / "out", num_shards=3)
    kwargs = dict(batch_size=5, seed=9, image_size=_SIZE, shuffle_buffer=4, repeat=True)
    first = _collect(data.training_dataset(tmp_path / "out", **kwargs).take(6))
    again = _collect(data.training_dataset(tmp_path / "out", **kwargs).take(6))
    np.testing.assert_array_equal(first[0], again[0])
    epoch0, epoch1 = first[1][:15], first[1][15:]
    assert sorted(epoch0) == sorted(epoch1) and not np.array_equal(epoch0, epoch1)


def test_interrupted_conversion_is_not_taken_for_finished(tmp_path):
    _identity_folder(tmp_path / "casia")
    out = tmp_path / "out"
    data.convert(tmp_path / "casia", out, num_shards=1)
    (out / "meta.json").unlink()  # What a conversion killed before its last step leaves.
    with pytest.raises(DataError, match="did not finish"):
        data.training_dataset(out, batch_size=2, seed=0)
    data.convert(tmp_path / "casia", out, num_shards=2)  # Converting again replaces everything.
    assert sorted(p for p in os.listdir(out) if p.startswith("train-")) == [
        "train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]


def test_convert_rejects_a_non_image(tmp_path):
    _identity_folder(tmp_path / "casia")
    (tmp_path / "casia" / "id_b" / "zzz.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(DataError, match=r"zzz\.jpg is not a JPEG"):
        data.convert(tmp_path / "casia", tmp_path / "out")
    assert not (tmp_path / "out" / "meta.json").exists()


def test_default_shard_count(tmp_path, monkeypatch):
    _identity_folder(tmp_path / "casia")
    assert data.TARGET_SHARD_BYTES == 150 * 2**20
    data.convert(tmp_path / "casia", tmp_path / "one")
    assert json.loads((tmp_path / "one" / "meta.json").read_text())["shards"] == [
        {"file": "train-00000-of-00001.tfrecord", "num_images": 9}]
    total = sum(os.path.getsize(p) for p in data.scan_identity_folder(tmp_path / "casia")[0])
    monkeypatch.setattr(data, "TARGET_SHARD_BYTES", total // 3 + 1)
    data.convert(tmp_path / "casia", tmp_path / "three")
    shards = json.loads((tmp_path / "three" / "meta.json").read_text())["shards"]
    assert [s["num_images"] for s in shards] == [3, 3, 3]


def test_bad_arguments(tmp_path):
    _identity_folder(tmp_path)
    with pytest.raises(ConfigError, match="batch_size"):
        data.training_dataset(tmp_path, batch_size=10, seed=0)  # 9 images, remainder dropped.
    with pytest.raises(ConfigError, match="seed"):
        data.training_dataset(tmp_path, batch_size=2, seed=-1)
    with pytest.raises(ConfigError, match="indices"):
        data.training_dataset(tmp_path, batch_size=2, seed=0, indices=[0, 9])


# --------------------------------------------------------------------------
# MXNet RecordIO.
# --------------------------------------------------------------------------


def test_recordio_reader_rejoins_records_split_at_the_magic(tmp_path):
    payload = b"abcd" + struct.pack("<I", _MAGIC) + b"efgh" + struct.pack("<I", _MAGIC) + b"xy"
    assert len(_recordio_record(payload)) > len(payload) + 8  # The writer did split it.
    _write_recordio(tmp_path, [(0, payload), (1, b"tail")])
    keys, offsets = bin_format.read_recordio_index(tmp_path / "train.idx")
    assert keys.tolist() == [0, 1]
    with open(tmp_path / "train.rec", "rb") as f:
        assert bin_format.read_record(f, int(offsets[0]), "train.rec") == payload
        assert bin_format.read_record(f, int(offsets[1]), "train.rec") == b"tail"
        with pytest.raises(DataError, match="no RecordIO record"):
            bin_format.read_record(f, 4, "train.rec")


def test_recordio_insightface_layout_reads_and_converts(tmp_path):
    arrays = [_image(k) for k in range(7)]
    labels = [0, 0, 1, 1, 1, 2, 2]
    _insightface_recordio(tmp_path, [(_png(a), y) for a, y in zip(arrays, labels)], num_ids=3)
    info = data.describe(tmp_path)
    assert info == data.FaceDataInfo(3, 7, _SIZE, "recordio")
    assert data.describe(tmp_path / "train.rec") == info
    kwargs = dict(batch_size=3, seed=2, image_size=_SIZE, flip=False, drop_remainder=False)
    direct = _collect(data.training_dataset(tmp_path, **kwargs))
    expected = sorted((y, a.tobytes()) for a, y in zip(arrays, labels))
    assert _multiset(*direct) == expected
    data.convert(tmp_path / "train.rec", tmp_path / "out")
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["source_layout"] == "recordio"
    assert _multiset(*_collect(data.training_dataset(tmp_path / "out", **kwargs))) == expected


def test_recordio_without_header_skips_non_image_records(tmp_path):
    records = [(0, _ir_payload(1, _png(_image(0)))), (1, _ir_payload(0, b"meta, not an image")),
               (2, _ir_payload(0, _png(_image(1))))]
    _write_recordio(tmp_path, records)
    keys, _, labels, identities = bin_format.scan_recordio(tmp_path / "train.rec", tmp_path / "train.idx")
    assert keys.tolist() == [0, 2] and labels.tolist() == [1, 0] and identities is None


def test_recordio_missing_idx(tmp_path):
    _write_recordio(tmp_path, [(0, _ir_payload(0, _png(_image(0))))])
    (tmp_path / "train.idx").unlink()
    with pytest.raises(DataError, match=r"train\.idx"):
        data.describe(tmp_path / "train.rec")


# --------------------------------------------------------------------------
# Held-out split.
# --------------------------------------------------------------------------


def test_split_heldout_keeps_identities_and_is_deterministic():
    labels = np.repeat(np.arange(5), [1, 2, 5, 10, 3]).astype(np.int32)
    train, heldout = data.split_heldout(labels, heldout_per_class=2, seed=3)
    again = data.split_heldout(labels, heldout_per_class=2, seed=3)
    np.testing.assert_array_equal(train, again[0])
    np.testing.assert_array_equal(heldout, again[1])
    assert not set(train) & set(heldout) and len(train) + len(heldout) == len(labels)
    assert set(labels[heldout]) <= set(labels[train])
    assert set(labels[train]) == set(labels)  # Every identity keeps training images.
    assert np.bincount(labels[heldout], minlength=5).tolist() == [0, 1, 2, 2, 2]
    other = data.split_heldout(labels, heldout_per_class=2, seed=4)[1]
    assert not np.array_equal(heldout, other)
    _, by_fraction = data.split_heldout(labels, fraction=0.2, seed=0)
    assert np.bincount(labels[by_fraction], minlength=5).tolist() == [0, 0, 1, 2, 1]
    with pytest.raises(ConfigError):
        data.split_heldout(labels, seed=0)
    with pytest.raises(DataError):
        data.split_heldout(np.arange(4), heldout_per_class=1, seed=0)


def test_training_dataset_indices_subset(tmp_path):
    _identity_folder(tmp_path / "casia")
    data.convert(tmp_path / "casia", tmp_path / "out", num_shards=2)
    labels = data.source_labels(tmp_path / "out")
    train, heldout = data.split_heldout(labels, heldout_per_class=1, seed=0)
    kwargs = dict(batch_size=2, seed=0, image_size=_SIZE, flip=False, drop_remainder=False, indices=heldout)
    for source in (tmp_path / "casia", tmp_path / "out"):
        _, got = _collect(data.training_dataset(source, **kwargs))
        assert sorted(got.tolist()) == sorted(labels[heldout].tolist())


# --------------------------------------------------------------------------
# Verification .bin files.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("as_arrays", [False, True])
def test_load_bin(tmp_path, protocol, as_arrays):
    arrays = [_image(k) for k in range(6)]
    encoded = [_png(a) for a in arrays]
    bins = [np.frombuffer(e, np.uint8).reshape(-1, 1) for e in encoded] if as_arrays else encoded
    path = tmp_path / "lfw.bin"
    path.write_bytes(pickle.dumps((bins, [True, False, True]), protocol=protocol))
    verification = pairs.load_bin(path, image_size=_SIZE)
    assert verification.name == "lfw" and verification.num_pairs == 3
    _assert_images(verification.images, arrays)
    assert verification.issame.dtype == bool and verification.issame.tolist() == [True, False, True]


@pytest.mark.parametrize("as_arrays", [False, True])
def test_load_bin_python2_pickles(tmp_path, as_arrays):
    arrays = [_image(k) for k in range(4)]
    path = tmp_path / "agedb_30.bin"
    path.write_bytes(_py2_bin([_png(a) for a in arrays], [False, True], as_arrays))
    verification = pairs.load_verification(str(path), image_size=_SIZE)
    assert verification.name == "agedb_30"
    _assert_images(verification.images, arrays)
    assert verification.issame.tolist() == [False, True]


def test_load_bin_numpy_issame_and_resize(tmp_path):
    encoded = [_jpeg(_image(k, 16)) for k in range(4)]
    (tmp_path / "cfp_fp.bin").write_bytes(pickle.dumps((encoded, np.array([True, False]))))
    verification = pairs.load_verification(f"cfp={tmp_path / 'cfp_fp.bin'}", image_size=_SIZE)
    assert verification.name == "cfp" and verification.images.shape == (4, _SIZE, _SIZE, 3)
    assert verification.issame.tolist() == [True, False]


def test_hostile_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "lfw.bin"
    path.write_bytes(pickle.dumps(([_Hostile(marker)], [True]), protocol=2))
    with pytest.raises(DataError, match=r"Refusing to load .*lfw\.bin.*system"):
        pairs.load_bin(path)
    path.write_bytes(pickle.dumps(_Hostile(marker), protocol=pickle.HIGHEST_PROTOCOL))
    with pytest.raises(DataError, match="Refusing"):
        pairs.load_verification(str(path))
    assert not marker.exists()


def test_pickle_cannot_misuse_the_allowed_names(tmp_path):
    path = tmp_path / "x.bin"
    # numpy.dtype with an object type, and _codecs.encode with another codec.
    path.write_bytes(b"\x80\x02cnumpy\ndtype\nX\x01\x00\x00\x00O\x85R.")
    with pytest.raises(DataError, match="not allowed"):
        pairs.load_bin(path)
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x02\x00\x00\x00hiX\x06\x00\x00\x00base64\x86R.")
    with pytest.raises(DataError, match="latin-1"):
        pairs.load_bin(path)
    path.write_bytes(b"\x80\x02cnumpy\nndarray\nK\x01\x85R.")  # Calling numpy.ndarray itself.
    with pytest.raises(DataError):
        pairs.load_bin(path)


@pytest.mark.parametrize("content, problem", [
    ("truncated", "truncated"),
    ("three", "3-tuple"),
    ("count", "6 images for 2 pairs"),
    ("strings", "image 0 is a str"),
    ("undecodable", "image 1 .* cannot be decoded"),
    ("flags", r"issame_list\[1\]"),
])
def test_malformed_bin(tmp_path, content, problem):
    encoded = [_png(_image(k)) for k in range(6)]
    objects = {
        "three": (encoded, [True] * 3, [0.0]),
        "count": (encoded, [True, False]),
        "strings": (["a", "b"], [True]),
        "undecodable": ([encoded[0], b"\xff\xd8\xffgarbage"], [True]),
        "flags": (encoded, [True, "yes", False]),
    }
    path = tmp_path / "lfw.bin"
    if content == "truncated":
        path.write_bytes(pickle.dumps((encoded, [True] * 3))[:-40])
    else:
        path.write_bytes(pickle.dumps(objects[content]))
    with pytest.raises(DataError, match=problem) as err:
        pairs.load_bin(path, image_size=_SIZE)
    assert "lfw.bin" in str(err.value)


def test_missing_bin_says_where_bins_come_from(tmp_path):
    where = r"lfw\.bin, cfp_fp\.bin and agedb_30\.bin come with .*faces_webface_112x112"
    with pytest.raises(DataError, match=where) as err:
        pairs.load_verification(f"lfw={tmp_path / 'lfw.bin'}")
    assert str(tmp_path / "lfw.bin") in str(err.value)
    with pytest.raises(DataError, match="faces_webface_112x112"):
        pairs.load_verification(str(tmp_path / "nowhere"))


# --------------------------------------------------------------------------
# Pairs lists.
# --------------------------------------------------------------------------


def _lfw_folder(root):
    arrays = {}
    for name, count in (("Ann_Lee", 2), ("Bo_Chen", 3)):
        os.makedirs(root / name)
        for k in range(1, count + 1):
            arrays[(name, k)] = _image(len(arrays))
            (root / name / f"{name}_{k:04d}.jpg").write_bytes(_png(arrays[(name, k)]))  # PNG bytes, .jpg name.
    return arrays


def test_lfw_pairs_txt(tmp_path):
    arrays = _lfw_folder(tmp_path)
    (tmp_path / "pairs.txt").write_text("2\t2\nAnn_Lee\t1\t2\nBo_Chen\t1\t3\n\nAnn_Lee\t2\tBo_Chen\t1\n"
                                        "Bo_Chen 3 Ann_Lee 1\n")
    verification = pairs.load_verification(str(tmp_path), image_size=_SIZE)
    assert verification.name == os.path.basename(tmp_path)
    order = [("Ann_Lee", 1), ("Ann_Lee", 2), ("Bo_Chen", 1), ("Bo_Chen", 3),
             ("Ann_Lee", 2), ("Bo_Chen", 1), ("Bo_Chen", 3), ("Ann_Lee", 1)]
    _assert_images(verification.images, [arrays[k] for k in order])
    assert verification.issame.tolist() == [True, True, False, False]


def test_generic_pairs_list(tmp_path):
    arrays = _lfw_folder(tmp_path / "images")
    (tmp_path / "list.txt").write_text("# comment\nAnn_Lee/Ann_Lee_0001.jpg Bo_Chen/Bo_Chen_0002.jpg 0\n"
                                       "Bo_Chen/Bo_Chen_0001.jpg Bo_Chen/Bo_Chen_0003.jpg 1\n"
                                       "Ann_Lee/Ann_Lee_0002.jpg Bo_Chen/Bo_Chen_0001.jpg -1\n")
    verification = pairs.load_pairs(tmp_path / "images", tmp_path / "list.txt", image_size=_SIZE, name="mine")
    order = [("Ann_Lee", 1), ("Bo_Chen", 2), ("Bo_Chen", 1), ("Bo_Chen", 3), ("Ann_Lee", 2), ("Bo_Chen", 1)]
    _assert_images(verification.images, [arrays[k] for k in order])
    assert verification.name == "mine" and verification.issame.tolist() == [False, True, False]
    spec = pairs.load_verification(f"mine={tmp_path / 'images'}:{tmp_path / 'list.txt'}", image_size=_SIZE)
    np.testing.assert_array_equal(spec.images, verification.images)


def test_malformed_pairs_line_names_the_line(tmp_path):
    _lfw_folder(tmp_path)
    (tmp_path / "pairs.txt").write_text("1 2\nAnn_Lee 1 2\nAnn_Lee one 2\n")
    with pytest.raises(DataError, match=r"pairs\.txt, line 3: expected `name i j`"):
        pairs.load_verification(str(tmp_path))
    (tmp_path / "list.txt").write_text("Ann_Lee/Ann_Lee_0001.jpg Ann_Lee/Ann_Lee_0002.jpg yes\n")
    with pytest.raises(DataError, match=r"list\.txt, line 1: expected `path1 path2 1\|0`"):
        pairs.load_pairs(tmp_path, tmp_path / "list.txt")


def test_missing_pair_image_is_named(tmp_path):
    _lfw_folder(tmp_path)
    (tmp_path / "pairs.txt").write_text("10\t300\nAnn_Lee\t1\t2\nBo_Chen\t1\t7\n")
    with pytest.raises(DataError, match=r"line 3: image .*Bo_Chen_0007\.jpg does not exist"):
        pairs.load_verification(str(tmp_path))


def test_verification_set_checks_its_arrays():
    with pytest.raises(DataError, match="two per pair"):
        pairs.VerificationSet("x", np.zeros((3, 4, 4, 3), np.float32), np.zeros(2, bool))
