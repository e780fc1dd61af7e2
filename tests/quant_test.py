"""`bnas_tf.quant` (Larq's Quant* layers on Keras 3), quantizer metrics and `bnas_tf.summary.summary`.

The reference is Larq itself: the models of tests/larq_models.py (Larq's
MNIST guide model, and one that covers the other layers and quantizers) run
under tf-keras in ONE subprocess per module (tests/larq_quant_reference.py,
TF_USE_LEGACY_KERAS=1, as tests/quantizers_test.py runs Larq), with weights
drawn there; here the same source, with only its import lines changed, builds
the model from `bnas_tf.quant`, loads those weights and must give the same
outputs, gradients, SGD step (constraints applied), flip ratios and summary
totals.
"""

import importlib.util
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import larq_models  # noqa: E402  (tests/ is on sys.path)
from bnas_tf import layers, quant, quantizers, summary  # noqa: E402
from bnas_tf.errors import ConfigError  # noqa: E402
from bnas_tf.metrics import FlipRatio  # noqa: E402

_REFERENCE = Path(__file__).with_name("larq_quant_reference.py")
_SEED = 20240612
_ATOL = 1e-5


# --------------------------------------------------------------------------
# Larq, in one subprocess per module
# --------------------------------------------------------------------------


def _inputs():
    rng = np.random.default_rng(_SEED)
    arrays = {}
    for name in larq_models.MODELS:
        # The guide scales MNIST pixels to [-1, 1].
        arrays[f"{name}/x"] = rng.uniform(-1.0, 1.0, larq_models.INPUT_SHAPES[name]).astype(np.float32)
        arrays[f"{name}/dy"] = rng.normal(0.0, 1.0, larq_models.OUTPUT_SHAPES[name]).astype(np.float32)
        arrays[f"{name}/seed"] = np.array(_SEED + len(arrays))
    return arrays


@pytest.fixture(scope="module")
def larq_ref(tmp_path_factory):
    for module in ("larq", "tf_keras"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install -e '.[test]')")
    tmp = tmp_path_factory.mktemp("larq_quant_reference")
    inputs = _inputs()
    np.savez(tmp / "inputs.npz", **inputs)
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, str(_REFERENCE), str(tmp / "inputs.npz"), str(tmp / "out.npz")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"Larq reference failed:\n{proc.stdout}\n{proc.stderr[-5000:]}"
    with np.load(tmp / "out.npz") as out:
        ref = {key: out[key] for key in out.files}
    ref.update(inputs)
    return ref


def _ported(name, ref):
    """MODELS[name] built from bnas_tf.quant, with the weights Larq's run drew."""
    model = larq_models.build(name, larq_models.BNAS_IMPORTS)
    ours = larq_models.weights(model)
    theirs = {key[len(f"{name}/w/"):] for key in ref if key.startswith(f"{name}/w/")}
    assert set(ours) == theirs
    for key, w in ours.items():
        value = ref[f"{name}/w/{key}"]
        assert tuple(w.shape) == value.shape, key
        w.assign(value)
    return model


@pytest.fixture(scope="module")
def ported(larq_ref):
    """{name: (model, experiment results)}: each model built here and run through the same steps."""
    out = {}
    for name in larq_models.MODELS:
        with warnings.catch_warnings():
            # Keras 3 advises an Input layer over the guide's `input_shape=` argument.
            warnings.filterwarnings("ignore", message="Do not pass an `input_shape`")
            model = _ported(name, larq_ref)
        out[name] = (model, larq_models.experiment(model, larq_ref[f"{name}/x"], larq_ref[f"{name}/dy"]))
    return out


def _max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) if np.size(a) else 0.0


# --------------------------------------------------------------------------
# (a) The same model, the same weights: the same numbers
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(larq_models.MODELS))
def test_outputs_and_gradients_match_larq(name, larq_ref, ported):
    _, ours = ported[name]
    expected = {key[len(name) + 1:]: value for key, value in larq_ref.items() if key.startswith(f"{name}/")}
    keys = [k for k in ours if k == "y" or k.startswith("grad/")]
    assert set(keys) == {k for k in expected if k == "y" or k.startswith("grad/")}
    diffs = {key: _max_diff(ours[key], expected[key]) for key in keys}
    print(f"{name}: max |diff| output {diffs['y']:.3g}, gradients "
          f"{max(v for k, v in diffs.items() if k.startswith('grad/')):.3g}")
    for key in keys:
        assert ours[key].shape == expected[key].shape, key
        np.testing.assert_allclose(ours[key], expected[key], rtol=1e-5, atol=_ATOL, err_msg=key)
    # Informative: outputs are not constant, and STE gradients are zero exactly where |w| > 1.
    assert np.std(ours["y"]) > 0.1
    kernel = larq_ref[f"{name}/w/0/0"]
    grad = ours["grad/0/0"]
    assert np.all(grad[np.abs(kernel) > 1.0] == 0) and np.any(grad[np.abs(kernel) <= 1.0] != 0)


@pytest.mark.parametrize("name", list(larq_models.MODELS))
def test_sgd_step_and_training_mode_match_larq(name, larq_ref, ported):
    _, ours = ported[name]
    for key in [k for k in ours if k.startswith("after/")] + ["y_after", "y_train"]:
        np.testing.assert_allclose(ours[key], larq_ref[f"{name}/{key}"], rtol=1e-5, atol=_ATOL, err_msg=key)
    # weight_clip acted: kernels that left [-1, 1] are back on its edge.
    after = ours["after/0/0"]
    assert np.max(np.abs(after)) == 1.0 and np.max(np.abs(larq_ref[f"{name}/w/0/0"])) > 1.0


def test_flip_ratio_matches_larq(larq_ref, ported):
    _, ours = ported["mixed"]
    flips = {k: v for k, v in ours.items() if k.startswith("flip/")}
    assert set(flips) == {k[len("mixed/"):] for k in larq_ref if k.startswith("mixed/flip/")} != set()
    for key, value in flips.items():
        assert 0 < value < 0.5
        np.testing.assert_allclose(value, larq_ref[f"mixed/{key}"], rtol=1e-6, err_msg=key)


# --------------------------------------------------------------------------
# (e) summary against larq.models.summary
# --------------------------------------------------------------------------


def _printed_totals(model):
    lines = []
    prof = summary.summary(model, print_fn=lines.append)
    total = next(line for line in lines if line.startswith("| Total "))
    tokens = total.strip("| ").split()
    counts = [int(t.replace(",", "")) for t in tokens[1:-1]]
    return lines, prof, dict(zip(prof["bits"], counts)), float(tokens[-1])


@pytest.mark.parametrize("name", list(larq_models.MODELS))
def test_summary_totals_match_larq(name, larq_ref, ported):
    model, _ = ported[name]
    lines, prof, counts, memory_kb = _printed_totals(model)
    theirs = dict(zip(larq_ref[f"{name}/summary/bits"].tolist(), larq_ref[f"{name}/summary/params"].tolist()))
    assert {b: n for b, n in counts.items() if n or b in theirs} == theirs, "\n".join(lines)
    assert memory_kb == float(larq_ref[f"{name}/summary/memory_kb"])
    assert all(len(line) <= summary.MAX_WIDTH for line in lines)


def test_summary_of_the_larq_guide_model_by_hand(larq_ref, ported):
    model, _ = ported["mnist"]
    _, prof, counts, memory_kb = _printed_totals(model)
    one_bit = 3 * 3 * 1 * 32 + 3 * 3 * 32 * 64 + 3 * 3 * 64 * 64 + 576 * 64 + 64 * 10
    batch_norm = 2 * (32 + 64 + 64 + 64 + 10)  # scale and shift per channel
    assert counts == {1: one_bit, 32: batch_norm} == {1: 93088, 32: 468}
    assert prof["memory_bits"] == one_bit + 32 * batch_norm
    assert memory_kb == round((one_bit + 32 * batch_norm) / 8192, 2)
    assert prof["float32_bits"] == 32 * (one_bit + batch_norm)
    # The MACs of `summarize` are Larq's too: binary = 1-bit MACs, float = 32-bit MACs.
    macs = dict(zip(larq_ref["mnist/summary/mac_bits"].tolist(), larq_ref["mnist/summary/macs"].tolist()))
    s = summary.summarize(model)
    assert (s["macs_binary"], s["macs_float"]) == (macs[1], macs[32])
    assert s["params_1bit"] == one_bit


def test_summary_table_layout():
    inputs = keras.Input((8, 8, 3))
    x = quant.QuantConv2D(4, 3, kernel_quantizer="ste_sign", name="a_layer_name_" + "x" * 80)(inputs)
    x = layers.BinarizedConv2D(6, 3, binarization="pcnn", input_quantizer="ste_sign", use_bias=False)(x)
    x = quant.QuantSeparableConv2D(5, 3, depthwise_quantizer=quantizers.DoReFa(k_bit=4, mode="weights"),
                                   pointwise_quantizer="ste_sign")(x)
    model = keras.Model(inputs, x, name="layout")
    lines = []
    prof = summary.summary(model, print_fn=lines.append)
    assert all(len(line) <= summary.MAX_WIDTH for line in lines), "\n".join(lines)
    assert any("a_layer_name_xxx" in line and "..." in line for line in lines)
    rows = {row["class"]: row for row in prof["layers"]}
    assert rows["QuantConv2D"]["params"] == {1: 3 * 3 * 3 * 4, 32: 4}
    # PCNN: the kernel is 1-bit, its amplitude A (k, k, C_in, 1) 32-bit; the input is signed.
    assert rows["BinarizedConv2D"]["params"] == {1: 3 * 3 * 4 * 6, 32: 3 * 3 * 4}
    assert rows["BinarizedConv2D"]["input_bits"] == "1"
    assert rows["QuantSeparableConv2D"]["params"] == {4: 3 * 3 * 6, 1: 6 * 5, 32: 5}
    assert prof["bits"] == [1, 4, 32]
    assert rows["QuantSeparableConv2D"]["output_shape"] == "(2, 2, 5)"


def test_summarize_counts_both_separable_kernels():
    """`summarize` (the export's figures) takes the Quant layers' 1-bit kernels and binary MACs too."""
    inputs = keras.Input((6, 6, 4))
    x = quant.QuantSeparableConv2D(8, 3, padding="same", input_quantizer="ste_sign", depthwise_quantizer="ste_sign",
                                   pointwise_quantizer="ste_sign", use_bias=False)(inputs)
    s = summary.summarize(keras.Model(inputs, x))
    kernels = 3 * 3 * 4 + 4 * 8
    assert (s["params_1bit"], s["params_32bit"]) == (kernels, 0)
    assert (s["macs_binary"], s["macs_float"]) == (6 * 6 * kernels, 0)


def test_summary_needs_a_built_model():
    model = keras.Sequential([quant.QuantDense(3)])
    with pytest.raises(ConfigError, match="built"):
        summary.summary(model)


# --------------------------------------------------------------------------
# Layers: defaults, arguments, errors
# --------------------------------------------------------------------------


def test_default_is_no_quantization():
    """As Larq: with no quantizer, a Quant layer is its Keras layer."""
    x = np.random.default_rng(0).normal(size=(2, 7, 7, 3)).astype(np.float32)
    pairs = [
        (quant.QuantConv2D(4, 3, padding="same"), keras.layers.Conv2D(4, 3, padding="same")),
        (quant.QuantDepthwiseConv2D(3, strides=2), keras.layers.DepthwiseConv2D(3, strides=2)),
        (quant.QuantSeparableConv2D(4, 3), keras.layers.SeparableConv2D(4, 3)),
        (quant.QuantDense(5), keras.layers.Dense(5)),
    ]
    for ours, theirs in pairs:
        assert ours.input_quantizer is None and ours.kernel_precision == 32
        ours.build(x.shape)
        theirs.build(x.shape)
        theirs.set_weights(ours.get_weights())
        np.testing.assert_array_equal(np.asarray(ours(x)), np.asarray(theirs(x)))
    assert quant.QuantConv2D(4, 3).pad_values == 0.0


def test_pad_values_pad_the_quantized_input():
    """padding="same" with pad_values=1: a sign input and +1 borders, as if the input were bigger."""
    x = np.random.default_rng(1).normal(size=(1, 6, 5, 2)).astype(np.float32)
    layer = quant.QuantConv2D(3, 3, strides=2, padding="same", pad_values=1.0, input_quantizer="ste_sign",
                              kernel_quantizer="ste_sign", use_bias=False)
    y = np.asarray(layer(x))
    kernel = np.where(np.asarray(layer.kernel) < 0, -1.0, 1.0)
    signed = np.where(x < 0, -1.0, 1.0)
    # "same" at stride 2: 6 rows need 1 pad (after); 5 columns need 2 (one each side).
    padded = np.pad(signed, [(0, 0), (0, 1), (1, 1), (0, 0)], constant_values=1.0)
    expected = keras.ops.conv(padded, kernel, strides=2, padding="valid")
    np.testing.assert_array_equal(y, np.asarray(expected))


def test_kernel_precisions():
    layer = quant.QuantSeparableConv2D(4, 3, depthwise_quantizer="ste_tern", pointwise_quantizer="ste_sign")
    layer.build((None, 5, 5, 2))
    assert [(v is layer.depthwise_kernel, b) for v, b in layer.kernel_precisions()][0] == (True, 2)
    assert [b for _, b in layer.kernel_precisions()] == [2, 1]
    assert layer.kernel_precision == 2
    dense = quant.QuantDense(3, kernel_quantizer=quantizers.ste_sign)  # a function: no precision
    dense.build((None, 4))
    assert dense.kernel_precision == 32


@pytest.mark.parametrize(("kwargs", "received"), [
    (dict(kernel_quantizer="ste_sing"), "quantizer='ste_sing'"),
    (dict(input_quantizer=3), "quantizer=3"),
    (dict(kernel_constraint="weight_clap"), "kernel_constraint='weight_clap'"),
    (dict(bias_constraint=1.5), "bias_constraint=1.5"),
    (dict(pad_values="1"), "pad_values='1'"),
])
def test_bad_arguments(kwargs, received):
    with pytest.raises(ConfigError) as info:
        quant.QuantConv2D(4, 3, **kwargs)
    assert received in str(info.value)


# --------------------------------------------------------------------------
# (b) weight_clip
# --------------------------------------------------------------------------


@pytest.mark.parametrize("constraint", ["weight_clip", "WeightClip", quant.WeightClip(),
                                        {"class_name": "WeightClip", "config": {"clip_value": 1}}])
def test_weight_clip_after_an_optimizer_step(constraint):
    layer = quant.QuantDense(3, kernel_quantizer="ste_sign", kernel_constraint=constraint, use_bias=False)
    layer.build((None, 2))
    assert isinstance(layer.kernel_constraint, quant.WeightClip)
    layer.kernel.assign([[0.9, -0.9, 0.2], [0.5, -1.0, 0.0]])
    grad = np.array([[-1.0, 1.0, 1.0], [0.0, 0.5, 0.0]], np.float32)
    keras.optimizers.SGD(learning_rate=0.5).apply_gradients([(grad, layer.kernel)])
    # w - 0.5 g, then clipped to [-1, 1].
    np.testing.assert_allclose(np.asarray(layer.kernel), [[1.0, -1.0, -0.3], [0.5, -1.0, 0.0]], atol=1e-7)


def test_weight_clip_value_and_errors():
    clip = quant.WeightClip(0.25)
    np.testing.assert_array_equal(np.asarray(clip(np.array([-1.0, -0.1, 0.3], np.float32))),
                                  np.array([-0.25, -0.1, 0.25], np.float32))
    assert quant.WeightClip.from_config(clip.get_config()).clip_value == 0.25
    assert quant.weight_clip is quant.WeightClip
    for bad in (0, -1.0, "1", True):
        with pytest.raises(ConfigError, match="clip_value="):
            quant.WeightClip(bad)
    # Keras's own constraints still work.
    assert isinstance(quant.QuantDense(2, kernel_constraint="non_neg").kernel_constraint, keras.constraints.NonNeg)


# --------------------------------------------------------------------------
# (c) flip_ratio
# --------------------------------------------------------------------------


def test_flip_ratio_after_known_updates():
    quantizer = quantizers.SteSign(metrics=["flip_ratio"])
    layer = quant.QuantDense(4, kernel_quantizer=quantizer, use_bias=False)
    model = keras.Sequential([keras.Input((3,)), layer])
    metric = quantizer.flip_ratio
    assert isinstance(metric, FlipRatio) and metric.name == f"flip_ratio/{quantizer.name}"
    assert metric in model.metrics
    layer.kernel.assign(np.full((3, 4), 0.1, np.float32))
    x = np.ones((1, 3), np.float32)
    model(x)  # records the signs: nothing to compare with yet
    assert float(metric.result()) == 0.0
    sgd = keras.optimizers.SGD(learning_rate=0.3)
    grad = np.zeros((3, 4), np.float32)
    grad[0, :3] = 1.0  # 0.1 - 0.3 < 0: three of twelve signs flip
    sgd.apply_gradients([(grad, layer.kernel)])
    model(x)
    assert float(metric.result()) == pytest.approx(3 / 12)
    sgd.apply_gradients([(np.full((3, 4), -0.1, np.float32), layer.kernel)])  # no sign changes
    model(x)
    assert float(metric.result()) == pytest.approx((3 / 12 + 0) / 2)
    metric.reset_state()
    assert float(metric.result()) == 0.0


def test_flip_ratio_in_fit_logs():
    quantizer = quantizers.SteSign(metrics=["flip_ratio"])
    model = keras.Sequential([keras.Input((3,)), quant.QuantDense(2, kernel_quantizer=quantizer)])
    model.compile(keras.optimizers.SGD(0.5), "mse")
    rng = np.random.default_rng(0)
    history = model.fit(rng.normal(size=(8, 3)), rng.normal(size=(8, 2)), batch_size=2, epochs=1, verbose=0)
    value = history.history[f"flip_ratio/{quantizer.name}"][0]
    assert 0.0 <= value <= 1.0


def test_flip_ratio_metric_like_larq_docs():
    m = FlipRatio()
    m.update_state(np.array([1, 1]))
    assert float(m.result()) == 0.0
    m.update_state(np.array([2, 2]))
    assert float(m.result()) == 1.0
    m.update_state(np.array([1, 2]))
    assert float(m.result()) == 0.75


def test_flip_ratio_counts_levels_not_scales():
    """A magnitude-aware sign whose scale changes but whose signs do not flips nothing."""
    quantizer = quantizers.MagnitudeAwareSign(metrics=["flip_ratio"])
    w = np.array([[0.2, -0.4], [0.6, -0.8]], np.float32)
    quantizer(w)
    quantizer(w * 1.5)
    assert float(quantizer.flip_ratio.result()) == 0.0
    quantizer(-w * 1.5)
    assert float(quantizer.flip_ratio.result()) == pytest.approx(0.5)
    dorefa = quantizers.DoReFa(k_bit=2, metrics=["flip_ratio"])
    dorefa(np.array([0.0, 0.3, 0.6, 1.0], np.float32))
    dorefa(np.array([0.0, 0.3, 0.9, 1.0], np.float32))  # one level of four changed
    assert float(dorefa.flip_ratio.result()) == pytest.approx(0.25)


@pytest.mark.parametrize("metrics", [["fllip_ratio"], "flip_ratio", [3]])
def test_unknown_metrics(metrics):
    with pytest.raises(ConfigError, match="metrics="):
        quantizers.SteSign(metrics=metrics)


def test_flip_ratio_needs_a_known_shape():
    with pytest.raises(ConfigError, match="input_quantizer="):
        quant.QuantDense(2, input_quantizer=quantizers.SteSign(metrics=["flip_ratio"]))
    with pytest.raises(ConfigError, match="every dimension"):
        FlipRatio().build((None, 3))


def test_quantizer_config_with_and_without_metrics():
    assert "metrics" not in quantizers.SteSign().get_config()  # Larq's config exactly
    config = quantizers.SteSign(metrics=["flip_ratio"]).get_config()
    assert config["metrics"] == ["flip_ratio"]
    assert quantizers.SteSign.from_config(config).quantizer_metrics == ["flip_ratio"]


# --------------------------------------------------------------------------
# (d) .keras round trips
# --------------------------------------------------------------------------

_ROUND_TRIP = {
    "QuantDense": lambda: quant.QuantDense(
        4, input_quantizer="ste_sign", kernel_quantizer=quantizers.SteSign(clip_value=0.5, metrics=["flip_ratio"]),
        kernel_constraint="weight_clip", activation="relu"),
    "QuantConv2D": lambda: quant.QuantConv2D(
        4, 3, strides=2, padding="same", pad_values=1.0, input_quantizer="approx_sign",
        kernel_quantizer="magnitude_aware_sign", kernel_constraint=quant.WeightClip(0.5)),
    "QuantDepthwiseConv2D": lambda: quant.QuantDepthwiseConv2D(
        3, padding="same", pad_values=-1.0, depth_multiplier=2, input_quantizer="ste_sign",
        depthwise_quantizer="ste_tern", depthwise_constraint="weight_clip", bias_constraint="weight_clip"),
    "QuantSeparableConv2D": lambda: quant.QuantSeparableConv2D(
        5, 3, padding="same", pad_values=1.0, input_quantizer="swish_sign",
        depthwise_quantizer=quantizers.DoReFa(k_bit=2, mode="weights"), pointwise_quantizer="ste_sign",
        depthwise_constraint="weight_clip", pointwise_constraint=quant.WeightClip(2.0)),
}


def _quantizer_state(layer):
    return {arg: (type(q).__name__, q.get_config() if hasattr(q, "get_config") else q)
            for arg in ("input_quantizer",) + larq_models.KERNEL_QUANTIZERS
            if (q := getattr(layer, arg, None)) is not None}


@pytest.mark.parametrize("name", sorted(_ROUND_TRIP))
def test_keras_round_trip(name, tmp_path):
    layer = _ROUND_TRIP[name]()
    shape = (6,) if name == "QuantDense" else (7, 7, 3)
    model = keras.Sequential([keras.Input(shape), layer])
    rng = np.random.default_rng(2)
    for w in model.weights:
        w.assign(rng.uniform(-1.5, 1.5, tuple(w.shape)).astype(np.float32))
    x = rng.normal(size=(2, *shape)).astype(np.float32)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # safe mode
    restored = loaded.layers[-1]
    assert type(restored) is type(layer)
    # Compared through JSON, as the file stores configs: tuples may come back as lists.
    assert json.loads(json.dumps(restored.get_config())) == json.loads(json.dumps(layer.get_config()))
    assert _quantizer_state(restored) == _quantizer_state(layer)
    for arg in ("kernel_constraint", "depthwise_constraint", "pointwise_constraint", "bias_constraint"):
        ours, theirs = getattr(layer, arg, None), getattr(restored, arg, None)
        assert type(ours) is type(theirs) and getattr(ours, "clip_value", None) == getattr(theirs, "clip_value", None)
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))


def test_import_bnas_tf_is_enough_to_load(tmp_path):
    model = keras.Sequential([keras.Input((7, 7, 3)), _ROUND_TRIP["QuantConv2D"](), keras.layers.Flatten(),
                              _ROUND_TRIP["QuantDense"]()])
    path = tmp_path / "model.keras"
    model.save(path)
    code = f"import bnas_tf, keras; m = keras.models.load_model({str(path)!r}); print(type(m.layers[0]).__name__)"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("QuantConv2D")
