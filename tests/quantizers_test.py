"""bnas_tf.quantizers against Larq 0.14, the reference it reimplements.

Larq only imports under Keras 2, so its values come from ONE subprocess
(tests/larq_reference.py, with TF_USE_LEGACY_KERAS=1) run once per session:
the inputs and upstream gradients are generated here with NumPy (fixed seed
plus hand-picked special and boundary values), Larq's forward values and
vector-Jacobian products come back in an .npz, and ours are computed in this
process (Keras 3) on the same arrays, in eager and in graph mode, through
both the functional and the layer form.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from bnas_tf import quantizers  # noqa: E402
from bnas_tf.errors import ConfigError  # noqa: E402

_REFERENCE = Path(__file__).with_name("larq_reference.py")
_SEED = 20240611

# --------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------

# Zeros of both signs, denormals, tiny and huge values, infinities.
_COMMON = [0.0, -0.0, 1e-45, -1e-45, 1e-30, -1e-30, 0.1, -0.1, 0.25, -0.25,
           0.5, -0.5, 0.75, -0.75, 1.0, -1.0, 1.5, -1.5, 2.0, -2.0, 5.0, -5.0,
           20.0, -20.0, 100.0, -100.0, np.inf, -np.inf]


def _around(values, dtype):
    """±v and the neighbouring floats on both sides of each v."""
    out = []
    for v in values:
        v = dtype(v)
        for w in (v, np.nextafter(v, dtype(0)), np.nextafter(v, dtype(np.inf))):
            out += [w, -w]
    return out


def _elementwise(rng, boundaries, dtype=np.float32, finite=False):
    """Special values, exact boundaries and their neighbours, then random ones."""
    special = [v for v in _COMMON if not (finite and np.isinf(v))]
    values = np.array(special + _around(boundaries, dtype), dtype=dtype)
    noise = np.concatenate([rng.normal(0.0, 1.0, 64), rng.uniform(-2.5, 2.5, 64)])
    return np.concatenate([values, noise.astype(dtype)])


def _kernel(rng, shape, boundaries=(1.0,)):
    """A kernel-shaped tensor with zeros, exact boundaries and a zero output channel."""
    x = rng.normal(0.0, 0.6, shape).astype(np.float32)
    flat = x.reshape(-1)  # a view
    specials = np.array([0.0, -0.0] + _around(boundaries, np.float32), np.float32)
    flat[: specials.size] = specials
    x[..., -1] = 0.0  # scale 0 for the last output channel
    x[..., 0] = np.abs(x[..., 0])  # a channel of one sign
    return x


def _dorefa_activation_inputs(rng, k_bit):
    n = 2**k_bit - 1
    steps = [i / n for i in range(n + 1)]  # the levels
    edges = [(2 * i + 1) / (2 * n) for i in range(n)]  # the 0.5/n rounding edges
    values = [0.0, -0.0, 1.0, -1.0, 1.5, -0.5, 2.0, np.inf, -np.inf]
    for v in steps + edges:
        v = np.float32(v)
        values += [v, np.nextafter(v, np.float32(-1)), np.nextafter(v, np.float32(2))]
    noise = rng.uniform(-0.5, 1.5, 96)
    return np.concatenate([np.array(values, np.float32), noise.astype(np.float32)])


def _dorefa_weight_inputs(rng):
    x = rng.normal(0.0, 0.7, (6, 8)).astype(np.float32)
    x[0, :4] = [0.0, -0.0, 1.0, -1.0]
    return x


def _build_cases():
    rng = np.random.default_rng(_SEED)
    cases = []

    def add(class_name, config, x, tag=""):
        key = f"{class_name}({','.join(f'{k}={v!r}' for k, v in config.items())}){tag}"
        dy = rng.normal(0.0, 1.0, np.shape(x)).astype(np.asarray(x).dtype)
        cases.append({"id": key, "class_name": class_name, "config": config, "x": x, "dy": dy})

    for clip in (1.0, 0.5, None):
        add("SteSign", {"clip_value": clip}, _elementwise(rng, [1.0, 0.5]))
    add("SteSign", {"clip_value": 1.0}, _elementwise(rng, [1.0], np.float64), "[float64]")
    add("SteSign", {"clip_value": 1.0}, _kernel(rng, (3, 3, 4, 8)), "[4d]")
    add("ApproxSign", {}, _elementwise(rng, [1.0, 0.5]))
    add("ApproxSign", {}, _elementwise(rng, [1.0], np.float64), "[float64]")
    for beta in (5.0, 2.0):
        add("SwishSign", {"beta": beta}, _elementwise(rng, [1.0, 17.5, 18.0, 44.0, 45.0]))
    for clip in (1.0, 0.5, None):
        add("MagnitudeAwareSign", {"clip_value": clip}, _kernel(rng, (3, 3, 4, 8), (1.0, 0.5)))
    add("MagnitudeAwareSign", {"clip_value": 1.0}, _kernel(rng, (16, 5)), "[dense]")
    add("SteTern", {}, _elementwise(rng, [0.05, 1.0]))
    add("SteTern", {"threshold_value": 0.3}, _elementwise(rng, [0.3, 1.0]))
    add("SteTern", {"threshold_value": 0.3, "clip_value": 0.5}, _elementwise(rng, [0.3, 0.5]))
    add("SteTern", {"threshold_value": 0.3, "clip_value": None}, _elementwise(rng, [0.3]))
    add("SteTern", {"ternary_weight_networks": True}, _elementwise(rng, [1.0], finite=True))
    add("SteTern", {"ternary_weight_networks": True, "clip_value": 0.5},
        _kernel(rng, (3, 3, 4, 8), (0.5,)), "[4d]")
    for clip in (1.0, 0.5, None):
        add("SteHeaviside", {"clip_value": clip}, _elementwise(rng, [1.0, 0.5]))
    for k_bit in (1, 2, 4):
        add("DoReFa", {"k_bit": k_bit, "mode": "activations"}, _dorefa_activation_inputs(rng, k_bit))
        add("DoReFa", {"k_bit": k_bit, "mode": "weights"}, _dorefa_weight_inputs(rng))
    add("DoReFa", {"k_bit": 2, "mode": "weights"}, np.zeros((4, 3), np.float32), "[zeros]")
    add("DoReFa", {"k_bit": 2, "mode": "weights"}, _kernel(rng, (3, 3, 4, 8)), "[4d]")
    add("DoReFa", {}, _dorefa_activation_inputs(rng, 2), "[defaults]")
    for precision in (1, 8):
        add("NoOp", {"precision": precision}, _elementwise(rng, [1.0]))
    return cases


CASES = _build_cases()
_IDS = [case["id"] for case in CASES]
assert len(set(_IDS)) == len(_IDS)

# Quantizers whose forward values are exact levels (compared bit for bit), and
# whose gradient is a mask times dy (compared bit for bit as well).
_EXACT_FORWARD = {"SteSign", "ApproxSign", "SwishSign", "SteTern", "SteHeaviside", "NoOp"}
_EXACT_GRADIENT = {"SteSign", "SteTern", "SteHeaviside", "NoOp", "MagnitudeAwareSign"}
_SIGNS = {"SteSign", "ApproxSign", "SwishSign"}

_FUNCTIONAL = {
    "SteSign": quantizers.ste_sign,
    "ApproxSign": quantizers.approx_sign,
    "SwishSign": quantizers.swish_sign,
    "MagnitudeAwareSign": quantizers.magnitude_aware_sign,
    "SteTern": quantizers.ste_tern,
    "SteHeaviside": quantizers.ste_heaviside,
    "DoReFa": quantizers.dorefa_quantizer,
}


# --------------------------------------------------------------------------
# Larq, in one subprocess per session
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def larq_ref(tmp_path_factory):
    for module in ("larq", "tf_keras"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install -e '.[test]')")
    tmp = tmp_path_factory.mktemp("larq_reference")
    spec = [{k: case[k] for k in ("id", "class_name", "config")} for case in CASES]
    (tmp / "cases.json").write_text(json.dumps(spec))
    arrays = {}
    for case in CASES:
        arrays[f"{case['id']}/x"] = case["x"]
        arrays[f"{case['id']}/dy"] = case["dy"]
    np.savez(tmp / "inputs.npz", **arrays)
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "CUDA_VISIBLE_DEVICES": "",
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, str(_REFERENCE), str(tmp / "cases.json"), str(tmp / "inputs.npz"),
         str(tmp / "out.npz")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"Larq reference failed:\n{proc.stdout}\n{proc.stderr[-5000:]}"
    with np.load(tmp / "out.npz") as out:
        return {key: out[key] for key in out.files}


def _value_and_grad(fn, x, dy, graph):
    def run(x, dy):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        # A layer casts a float64 input to its float32 compute dtype.
        return y, tape.gradient(y, x, output_gradients=tf.cast(dy, y.dtype))

    if graph:
        run = tf.function(run)
    y, dx = run(tf.constant(x), tf.constant(dy))
    return y.numpy(), dx.numpy()


def _compare(case, ours, ref, what):
    y, dx = ours
    ref_y, ref_dx = ref
    assert y.dtype == ref_y.dtype and dx.dtype == ref_dx.dtype, what
    assert y.shape == ref_y.shape and dx.shape == ref_dx.shape, what
    name = case["class_name"]
    if name in _EXACT_FORWARD:
        np.testing.assert_array_equal(y, ref_y, err_msg=f"{what}: forward")
    else:
        np.testing.assert_allclose(y, ref_y, rtol=1e-6, atol=1e-6, err_msg=f"{what}: forward")
    if name in _EXACT_GRADIENT:
        np.testing.assert_array_equal(dx, ref_dx, err_msg=f"{what}: gradient")
    else:
        np.testing.assert_allclose(dx, ref_dx, rtol=1e-6, atol=1e-6, err_msg=f"{what}: gradient")


# --------------------------------------------------------------------------
# Values and gradients against Larq
# --------------------------------------------------------------------------


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "graph"])
@pytest.mark.parametrize("case", CASES, ids=_IDS)
def test_matches_larq(case, graph, larq_ref):
    key = case["id"]
    ref = (larq_ref[f"{key}/y"], larq_ref[f"{key}/dx"])
    layer = getattr(quantizers, case["class_name"])(**case["config"])
    _compare(case, _value_and_grad(layer, case["x"], case["dy"], graph), ref, "layer")

    fn = _FUNCTIONAL.get(case["class_name"])
    if fn is not None:
        # Larq's functional form where it has one (it has no function for
        # MagnitudeAwareSign and DoReFa: compare those with its layer).
        ref_fn = (larq_ref.get(f"{key}/y_fn", ref[0]), larq_ref.get(f"{key}/dx_fn", ref[1]))
        ours = _value_and_grad(lambda t: fn(t, **case["config"]), case["x"], case["dy"], graph)
        _compare(case, ours, ref_fn, "function")


def test_reference_is_informative(larq_ref):
    """Guards the comparison itself: dy is not all ones, masks cut somewhere."""
    for case in CASES:
        assert not np.all(case["dy"] == 1)
    dx = larq_ref["SteSign(clip_value=0.5)/dx"]
    dy = next(c["dy"] for c in CASES if c["id"] == "SteSign(clip_value=0.5)")
    assert np.any(dx == 0) and np.any(dx == dy) and np.any((dx != 0) & (dx != 1))


@pytest.mark.parametrize("case", CASES, ids=_IDS)
def test_precision_matches_larq(case, larq_ref):
    ours = getattr(quantizers, case["class_name"])(**case["config"]).precision
    assert ours == int(larq_ref[f"{case['id']}/precision"])


def test_precision_values():
    for cls in (quantizers.SteSign, quantizers.ApproxSign, quantizers.SwishSign,
                quantizers.MagnitudeAwareSign, quantizers.SteHeaviside):
        assert cls().precision == 1
    assert quantizers.SteTern().precision == 2
    for k_bit in (1, 2, 4, 8):
        assert quantizers.DoReFa(k_bit=k_bit).precision == k_bit
    assert quantizers.NoOp(precision=8).precision == 8


@pytest.mark.parametrize("case", CASES, ids=_IDS)
def test_larq_config_loads(case, larq_ref):
    """A quantizer config written by Larq builds the same quantizer here."""
    config = json.loads(str(larq_ref[f"{case['id']}/config"]))
    ours = quantizers.get({"class_name": case["class_name"], "config": config})
    assert type(ours) is getattr(quantizers, case["class_name"])
    expected = getattr(quantizers, case["class_name"])(**case["config"]).get_config()
    for k, v in config.items():
        if k not in ("name", "dtype", "trainable"):
            assert ours.get_config()[k] == v == expected[k]


# --------------------------------------------------------------------------
# The sign is never zero
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sign_never_zero(dtype):
    x = np.array([0.0, -0.0, 1e-300, -1e-300, 1e-45, -1e-45, 1e-30, -1e-30, 0.3, -0.3,
                  np.inf, -np.inf], dtype)
    fns = [quantizers.sign, quantizers.ste_sign, quantizers.approx_sign, quantizers.swish_sign,
           lambda t: quantizers.ste_sign(t, clip_value=None)]
    for fn in fns:
        y = np.asarray(fn(tf.constant(x)))
        assert np.all(np.abs(y) == 1), y
        # +0.0 and -0.0 both map to +1 (x >= 0), with a positive sign bit.
        assert y[0] == 1 and y[1] == 1 and not np.signbit(y[0]) and not np.signbit(y[1])
        normal = np.abs(x) >= np.finfo(np.float32).tiny
        np.testing.assert_array_equal(y[normal], np.where(x[normal] < 0, -1, 1))
    for cls in (quantizers.SteSign, quantizers.ApproxSign, quantizers.SwishSign):
        assert np.all(np.abs(np.asarray(cls()(tf.constant(x)))) == 1)
    y = np.asarray(quantizers.magnitude_aware_sign(tf.constant(np.array([[0.0, -0.0], [-0.0, 2.0]],
                                                                        dtype))))
    assert not np.any(np.signbit(y[:, 0]))  # a zero channel gives +0, never -0 * scale


def test_heaviside_and_tern_values():
    x = tf.constant([-1.0, -0.0, 0.0, 1e-30, 0.3, -0.3, 0.31, -0.31])
    np.testing.assert_array_equal(quantizers.ste_heaviside(x), [0, 0, 0, 1, 1, 0, 1, 0])
    np.testing.assert_array_equal(
        quantizers.ste_tern(x, threshold_value=0.3), [-1, 0, 0, 0, 1, -1, 1, -1])  # ±1 at |x| = D


# --------------------------------------------------------------------------
# get / serialize / deserialize
# --------------------------------------------------------------------------

_LARQ_NAMES = {
    "ste_sign": quantizers.SteSign,
    "approx_sign": quantizers.ApproxSign,
    "swish_sign": quantizers.SwishSign,
    "magnitude_aware_sign": quantizers.MagnitudeAwareSign,
    "ste_tern": quantizers.SteTern,
    "ste_heaviside": quantizers.SteHeaviside,
    "dorefa_quantizer": quantizers.DoReFa,
    "SteSign": quantizers.SteSign,
    "ApproxSign": quantizers.ApproxSign,
    "SwishSign": quantizers.SwishSign,
    "MagnitudeAwareSign": quantizers.MagnitudeAwareSign,
    "SteTern": quantizers.SteTern,
    "SteHeaviside": quantizers.SteHeaviside,
    "DoReFa": quantizers.DoReFa,
    "DoReFaQuantizer": quantizers.DoReFa,
}


@pytest.mark.parametrize("name", sorted(_LARQ_NAMES))
def test_get_by_name(name):
    assert name in quantizers.names()
    q = quantizers.get(name)
    assert type(q) is _LARQ_NAMES[name]
    assert quantizers.get(name) is not q  # a fresh instance each time


def test_get_every_listed_name():
    for name in quantizers.names():
        assert isinstance(quantizers.get(name), quantizers.Quantizer)


def test_get_defaults_match_larq():
    assert quantizers.get("ste_sign").clip_value == 1.0
    assert quantizers.get("swish_sign").beta == 5.0
    tern = quantizers.get("ste_tern")
    assert (tern.threshold_value, tern.ternary_weight_networks, tern.clip_value) == (0.05, False, 1.0)
    dorefa = quantizers.get("dorefa_quantizer")
    assert (dorefa.precision, dorefa.mode) == (2, "activations")


@pytest.mark.parametrize("class_name", ["SteSign", "ste_sign"])
def test_get_config_dict(class_name):
    q = quantizers.get({"class_name": class_name, "config": {"clip_value": 0.5}})
    assert type(q) is quantizers.SteSign and q.clip_value == 0.5
    q = quantizers.get({"class_name": class_name, "config": {}})
    assert q.clip_value == 1.0
    q = quantizers.get({"class_name": "DoReFa", "config": {"k_bit": 4, "mode": "weights"}})
    assert (q.precision, q.mode) == (4, "weights")


def test_get_serialized_instance_and_callable():
    original = quantizers.SteTern(threshold_value=0.3, ternary_weight_networks=True, clip_value=None)
    q = quantizers.get(quantizers.serialize(original))
    assert type(q) is quantizers.SteTern and q.get_config() == original.get_config()
    q = quantizers.get(json.loads(json.dumps(quantizers.serialize(original))))
    assert q.get_config() == original.get_config()

    assert quantizers.get(original) is original
    assert quantizers.get(quantizers.ste_sign) is quantizers.ste_sign
    fn = lambda t: t  # noqa: E731
    assert quantizers.get(fn) is fn
    assert quantizers.get(None) is None


@pytest.mark.parametrize("identifier", ["ste_sing", "sign", "", "STE_SIGN"])
def test_get_unknown_name(identifier):
    with pytest.raises(ConfigError) as info:
        quantizers.get(identifier)
    message = str(info.value)
    assert f"quantizer={identifier!r}" in message
    assert "ste_sign" in message  # lists the known names


@pytest.mark.parametrize("identifier", [{"class_name": "Foo", "config": {}}, 3, 1.5, [1]])
def test_get_uninterpretable(identifier):
    with pytest.raises(ConfigError) as info:
        quantizers.get(identifier)
    assert f"quantizer={identifier!r}" in str(info.value)


_BAD_PARAMETERS = [
    (quantizers.SteSign, "clip_value", 0.0),
    (quantizers.SteSign, "clip_value", -1.0),
    (quantizers.MagnitudeAwareSign, "clip_value", -0.5),
    (quantizers.SteTern, "clip_value", 0),
    (quantizers.SteHeaviside, "clip_value", -2.0),
    (quantizers.SwishSign, "beta", 0.0),
    (quantizers.SwishSign, "beta", -5.0),
    (quantizers.DoReFa, "k_bit", 0),
    (quantizers.DoReFa, "k_bit", 2.5),
    (quantizers.DoReFa, "k_bit", "2"),
    (quantizers.DoReFa, "mode", "weight"),
    (quantizers.DoReFa, "mode", None),
]


@pytest.mark.parametrize(("cls", "arg", "value"), _BAD_PARAMETERS,
                         ids=[f"{c.__name__}-{a}={v!r}" for c, a, v in _BAD_PARAMETERS])
def test_bad_parameters(cls, arg, value):
    with pytest.raises(ConfigError) as info:
        cls(**{arg: value})
    assert f"{arg}={value!r}" in str(info.value)
    # The same through `get` with a config dict.
    with pytest.raises(ConfigError) as info:
        quantizers.get({"class_name": cls.__name__, "config": {arg: value}})
    assert f"{arg}={value!r}" in str(info.value)


# --------------------------------------------------------------------------
# Serialization and .keras round trips
# --------------------------------------------------------------------------

_INSTANCES = [
    lambda: quantizers.SteSign(clip_value=0.5),
    lambda: quantizers.SteSign(clip_value=None),
    lambda: quantizers.ApproxSign(),
    lambda: quantizers.SwishSign(beta=2.0),
    lambda: quantizers.MagnitudeAwareSign(clip_value=0.5),
    lambda: quantizers.SteTern(threshold_value=0.3, ternary_weight_networks=True, clip_value=None),
    lambda: quantizers.SteTern(threshold_value=0.2),
    lambda: quantizers.SteHeaviside(clip_value=0.25),
    lambda: quantizers.DoReFa(k_bit=4, mode="weights"),
    lambda: quantizers.DoReFa(k_bit=1),
    lambda: quantizers.NoOp(precision=8),
]
_INSTANCE_IDS = [
    "SteSign-0.5", "SteSign-None", "ApproxSign", "SwishSign-2", "MagnitudeAwareSign-0.5",
    "SteTern-twn", "SteTern-0.2", "SteHeaviside-0.25", "DoReFa-4-weights", "DoReFa-1", "NoOp-8",
]


@pytest.mark.parametrize("make", _INSTANCES, ids=_INSTANCE_IDS)
def test_serialize_deserialize(make):
    original = make()
    config = json.loads(json.dumps(quantizers.serialize(original)))
    restored = quantizers.deserialize(config)
    assert type(restored) is type(original)
    assert restored.get_config() == original.get_config()
    assert restored.precision == original.precision
    # keras' own deserializer finds the registered class too.
    assert keras.saving.deserialize_keras_object(config).get_config() == original.get_config()


@pytest.mark.parametrize("make", _INSTANCES, ids=_INSTANCE_IDS)
def test_keras_save_load(make, tmp_path):
    original = make()
    shape = (3, 4, 8) if isinstance(original, quantizers.MagnitudeAwareSign) else (5,)
    model = keras.Sequential([keras.Input(shape), original])
    x = np.random.default_rng(_SEED).normal(0.0, 0.8, (3, *shape)).astype(np.float32)
    x.reshape(-1)[:4] = [0.0, -0.0, 0.5, -0.3]
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    layer = loaded.layers[-1]
    assert type(layer) is type(original)
    assert layer.get_config() == original.get_config()
    assert layer.precision == original.precision
    expected = np.asarray(model(x))
    np.testing.assert_array_equal(np.asarray(loaded(x)), expected)
    # predict() runs a compiled graph, where grappler may reassociate DoReFa's
    # round(x * n) / n: equal to the last float32 bit.
    np.testing.assert_allclose(np.asarray(loaded.predict(x, verbose=0)), expected,
                               rtol=1e-6, atol=1e-6)
