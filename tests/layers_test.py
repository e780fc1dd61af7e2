"""bnas_tf.layers: serialization, shapes, what the convolutions consume, errors.

- `.keras` round trip (model.save / keras.models.load_model) and
  get_config / from_config of every layer with every option, with weights,
  BatchNorm statistics, PReLU slopes and amplitudes set to random values so
  that a freshly initialised layer would not pass;
- output shapes (the model's and `compute_output_shape`);
- PReLU replaces ReLU exactly in front of a convolution with binary
  activations;
- a probe on the convolution ops: with binary activations every binarized
  convolution consumes +-1, and its kernel is +-A_hat (pcnn), +-mean|X_i|
  per filter (xnor) or X itself (none / full precision);
- bad arguments raise bnas_tf.errors.ConfigError at construction, naming the
  argument and the value received.
"""

import json
import os
import re

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from bnas_tf import layers  # noqa: E402
from bnas_tf import quantizers  # noqa: E402
from bnas_tf.errors import ConfigError  # noqa: E402

SEED = 99
# Odd spatial size: stride 2 with "same" padding gives ceil(7 / 2) = 4.
INPUT_SHAPE = (2, 7, 7, 8)

SCHEMES = ["none", "xnor", "pcnn"]
BASE = [(b, a) for b in SCHEMES for a in (False, True)]
BASE_IDS = [f"{b}-{'binact' if a else 'fpact'}" for b, a in BASE]


# Each layer's own options: every value of every option appears at least once.
# (constructor, kwargs, expected output shape for INPUT_SHAPE)
VARIANTS = {
    "BinarizedConv2D": [
        (dict(filters=6, kernel_size=1), (2, 7, 7, 6)),
        (dict(filters=6, kernel_size=3, strides=2, padding="same"), (2, 4, 4, 6)),
        (dict(filters=4, kernel_size=3, dilation_rate=2, padding="same", use_bias=True), (2, 7, 7, 4)),
        (dict(filters=4, kernel_size=2, input_quantizer="approx_sign", theta=0.0), (2, 6, 6, 4)),
    ],
    "BinarizedDepthwiseConv2D": [
        (dict(kernel_size=3, padding="same"), (2, 7, 7, 8)),
        (dict(kernel_size=3, strides=2, padding="same", use_bias=True), (2, 4, 4, 8)),
        (dict(kernel_size=5, dilation_rate=2, padding="same", depth_multiplier=2), (2, 7, 7, 16)),
    ],
    "ReLUConvBN": [
        (dict(filters=6, kernel_size=1, strides=1), (2, 7, 7, 6)),
        (dict(filters=6, kernel_size=3, strides=2, affine=False), (2, 4, 4, 6)),
        (dict(filters=4, kernel_size=5, full_precision=True, theta=0.3), (2, 7, 7, 4)),
    ],
    "BinarizedSepConv": [
        (dict(filters=6, kernel_size=3), (2, 7, 7, 6)),
        (dict(filters=6, kernel_size=5, strides=2, affine=False, full_precision_first=True), (2, 4, 4, 6)),
        (dict(filters=4, kernel_size=7, affine=False), (2, 7, 7, 4)),
    ],
    "BinarizedDilConv": [
        (dict(filters=6, kernel_size=3), (2, 7, 7, 6)),
        (dict(filters=6, kernel_size=5, strides=2, dilation_rate=3, affine=False, full_precision_first=True),
         (2, 4, 4, 6)),
        (dict(filters=4, kernel_size=7, strides=2, dilation_rate=1, theta=0.0), (2, 4, 4, 4)),
    ],
    "FactorizedReduce": [
        (dict(filters=8), (2, 4, 4, 8)),
        (dict(filters=6, affine=False, theta=0.2), (2, 4, 4, 6)),
    ],
}
BLOCKS = ["ReLUConvBN", "BinarizedSepConv", "BinarizedDilConv", "FactorizedReduce"]


def make(name, binarization, binary_activations, options):
    return getattr(layers, name)(binarization=binarization, binary_activations=binary_activations, **options)


def _input(rng):
    return rng.normal(0.0, 1.0, INPUT_SHAPE).astype(np.float32)


def _randomize(layer_or_model, rng):
    """Random values in every state a fresh layer would initialise differently."""
    for layer in layer_or_model._flatten_layers(include_self=True, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0.0, 0.5, n).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype(np.float32))
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype(np.float32))
                layer.beta.assign(rng.normal(0.0, 0.3, n).astype(np.float32))
        elif isinstance(layer, keras.layers.PReLU):
            layer.alpha.assign(rng.uniform(-0.5, 0.5, layer.alpha.shape).astype(np.float32))
        elif isinstance(layer, (layers.BinarizedConv2D, layers.BinarizedDepthwiseConv2D)):
            if layer.amplitude is not None:  # A not constant, so A_hat = mean(A) != A
                layer.amplitude.assign(rng.uniform(0.05, 1.0, layer.amplitude.shape).astype(np.float32))
            if layer.use_bias:
                layer.bias.assign(rng.normal(0.0, 0.3, layer.bias.shape).astype(np.float32))


def _normalized(config):
    """A config as JSON sees it (a nested quantizer's build_config keeps its
    input shape as a tuple before saving and as a list after loading)."""
    return json.loads(json.dumps(config))


def _convs(layer):
    """The convolution layers of a layer, in call order."""
    if isinstance(layer, (layers.BinarizedConv2D, layers.BinarizedDepthwiseConv2D)):
        return [layer]
    return layer.binarized_convs()


# --------------------------------------------------------------------------
# .keras round trip, get_config / from_config, output shapes
# --------------------------------------------------------------------------


@pytest.mark.parametrize("binarization,binary_activations", BASE, ids=BASE_IDS)
@pytest.mark.parametrize("name", list(VARIANTS))
def test_keras_round_trip_and_shapes(name, binarization, binary_activations, tmp_path):
    """One model per layer class and base option: one branch per variant."""
    keras.utils.set_random_seed(SEED)
    rng = np.random.default_rng(SEED)
    inputs = keras.Input(INPUT_SHAPE[1:])
    blocks = [make(name, binarization, binary_activations, opts) for opts, _ in VARIANTS[name]]
    # compute_output_shape before build (the blocks that build their body lazily).
    for block, (_, shape) in zip(blocks, VARIANTS[name]):
        assert tuple(block.compute_output_shape(INPUT_SHAPE)) == shape
    model = keras.Model(inputs, [block(inputs) for block in blocks])
    _randomize(model, rng)
    x = _input(rng)
    expected = [np.asarray(y) for y in model(x, training=False)]
    for block, y, (_, shape) in zip(blocks, expected, VARIANTS[name]):
        assert y.shape == shape
        assert tuple(block.compute_output_shape(INPUT_SHAPE)) == shape
        assert np.isfinite(y).all()

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    got = [np.asarray(y) for y in loaded(x, training=False)]
    for y, g in zip(expected, got):
        np.testing.assert_array_equal(g, y)
    # Training mode too (BatchNorm on batch statistics; same weights, same output).
    for y, g in zip(model(x, training=True), loaded(x, training=True)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(y), rtol=1e-6, atol=1e-6)
    for block in blocks:
        twin = loaded.get_layer(block.name)
        assert type(twin) is type(block)
        assert _normalized(twin.get_config()) == _normalized(block.get_config())
        assert len(twin.weights) == len(block.weights)
        for w, v in zip(block.weights, twin.weights):
            np.testing.assert_array_equal(np.asarray(v), np.asarray(w), err_msg=w.path)

    # get_config / from_config (load_model above went through from_config and
    # gave the same outputs): the config is a fixed point.
    for block in blocks:
        config = block.get_config()
        assert config["binarization"] == binarization
        assert config["binary_activations"] == binary_activations
        clone = type(block).from_config(config)
        assert _normalized(clone.get_config()) == _normalized(config)


def test_quantizer_config_round_trip():
    layer = layers.BinarizedConv2D(
        4, 3, binarization="xnor", input_quantizer=quantizers.SteSign(clip_value=0.5), theta=0.1
    )
    clone = layers.BinarizedConv2D.from_config(layer.get_config())
    assert isinstance(clone.input_quantizer, quantizers.SteSign)
    assert clone.input_quantizer.clip_value == 0.5
    # binary_activations=True defaults the input quantizer to ste_sign.
    layer = layers.BinarizedConv2D(4, 3, binary_activations=True)
    assert isinstance(layer.input_quantizer, quantizers.SteSign)
    assert layers.BinarizedConv2D(4, 3).input_quantizer is None


@pytest.mark.parametrize("binarization", SCHEMES)
def test_kernel_precision(binarization):
    layer = layers.BinarizedConv2D(4, 3, binarization=binarization)
    assert layer.kernel_precision == (32 if binarization == "none" else 1)


# --------------------------------------------------------------------------
# Activations and what the convolutions consume
# --------------------------------------------------------------------------


def _expected_binary_inputs(name, options, binary_activations):
    """Per convolution (call order): does it take binary activations?"""
    fp = options.get("full_precision", False)
    fp_first = options.get("full_precision_first", False)
    if name == "ReLUConvBN":
        return [binary_activations and not fp]
    if name == "BinarizedSepConv":
        return [binary_activations and not fp_first] + [binary_activations] * 3
    if name == "BinarizedDilConv":
        return [binary_activations and not fp_first, binary_activations]
    if name == "FactorizedReduce":
        return [binary_activations] * 2
    return [binary_activations or options.get("input_quantizer") is not None]


def _expected_prelu(name, options, binary_activations):
    """Per activation layer (call order): PReLU (True) or ReLU (False)."""
    # 1-bit units run convs -> PReLU -> BN (one per unit, two in a separable block);
    # a full precision ReLUConvBN keeps its ReLU.
    one_bit = binary_activations and not options.get("full_precision", False)
    return [one_bit] * (2 if name == "BinarizedSepConv" else 1)


@pytest.mark.parametrize("binarization,binary_activations", BASE, ids=BASE_IDS)
@pytest.mark.parametrize("name", BLOCKS)
def test_prelu_exactly_with_binary_activations(name, binarization, binary_activations):
    for options, _ in VARIANTS[name]:
        block = make(name, binarization, binary_activations, options)
        block.build(INPUT_SHAPE)
        acts = [
            layer
            for layer in block._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, (keras.layers.ReLU, keras.layers.PReLU))
        ]
        expected = _expected_prelu(name, options, binary_activations)
        assert [type(a) is keras.layers.PReLU for a in acts] == expected, options
        assert all(type(a) in (keras.layers.ReLU, keras.layers.PReLU) for a in acts)


class ConvProbe:
    """Records (inputs, kernel) of every convolution op the layers run."""

    def __init__(self, monkeypatch):
        self.calls = []
        import keras.src.ops as src_ops

        for module in (keras.ops, src_ops):
            for op_name in ("conv", "depthwise_conv"):
                original = getattr(module, op_name)
                monkeypatch.setattr(module, op_name, self._wrap(original, op_name))

    def _wrap(self, original, op_name):
        def probe(inputs, kernel, *args, **kwargs):
            self.calls.append((op_name, np.array(inputs), np.array(kernel)))
            return original(inputs, kernel, *args, **kwargs)

        return probe


def _expected_kernel(conv):
    x = np.asarray(conv.kernel)
    sign = np.where(x < 0, -1.0, 1.0)
    if conv.binarization == "pcnn":
        return np.mean(np.asarray(conv.amplitude)) * sign  # +-A_hat, one scalar per layer
    if conv.binarization == "xnor":
        axes = (0, 1) if isinstance(conv, layers.BinarizedDepthwiseConv2D) else (0, 1, 2)
        return np.mean(np.abs(x), axis=axes, keepdims=True) * sign  # +-mean|X_i| per filter
    return x


@pytest.mark.parametrize("binarization,binary_activations", BASE, ids=BASE_IDS)
@pytest.mark.parametrize("name", list(VARIANTS))
def test_convolutions_consume_signs_and_binarized_kernels(name, binarization, binary_activations, monkeypatch):
    rng = np.random.default_rng(SEED)
    x = _input(rng)
    for options, _ in VARIANTS[name]:
        layer = make(name, binarization, binary_activations, options)
        layer.build(INPUT_SHAPE)
        _randomize(layer, rng)
        convs = _convs(layer)
        probe = ConvProbe(monkeypatch)
        layer(x, training=False)
        monkeypatch.undo()
        assert len(probe.calls) == len(convs), options
        binary = _expected_binary_inputs(name, options, binary_activations)
        for i, (conv, (op_name, inputs, kernel), is_binary) in enumerate(zip(convs, probe.calls, binary)):
            depthwise = isinstance(conv, layers.BinarizedDepthwiseConv2D)
            assert op_name == ("depthwise_conv" if depthwise else "conv")
            # full_precision(_first) convolutions are float in weights and activations.
            forced = options.get("full_precision", False) or (options.get("full_precision_first", False) and i == 0)
            assert conv.binarization == ("none" if forced else binarization)
            if name in BLOCKS:
                assert conv.binary_activations == (binary_activations and not forced)
            # What the convolution consumes: exactly +-1 with binary activations.
            if is_binary:
                assert set(np.unique(inputs)) <= {-1.0, 1.0}, (options, conv.name)
            else:
                assert not set(np.unique(inputs)) <= {-1.0, 1.0}, (options, conv.name)
            # The kernel the op sees.
            np.testing.assert_allclose(kernel, _expected_kernel(conv), rtol=1e-6, err_msg=conv.name)
            if conv.binarization != "none":
                magnitudes = np.abs(kernel)
                reduce = (0, 1) if depthwise else (0, 1, 2)
                # One magnitude per layer (pcnn) or per filter (xnor).
                spread = np.ptp(magnitudes) if conv.binarization == "pcnn" else np.ptp(magnitudes, axis=reduce)
                np.testing.assert_allclose(spread, 0.0, atol=1e-6)


def test_pcnn_kernel_is_not_xnor_kernel():
    """With A != mean|X| the pcnn kernel differs from the xnor one (the probe is sharp)."""
    layer = layers.BinarizedConv2D(4, 3, binarization="pcnn")
    layer.build(INPUT_SHAPE)
    layer.amplitude.assign(np.full(layer.amplitude.shape, 0.125, np.float32))
    kernel = np.asarray(layer.binarized_kernel())
    np.testing.assert_allclose(np.abs(kernel), 0.125)
    assert not np.allclose(np.abs(kernel), np.mean(np.abs(np.asarray(layer.kernel))))


# --------------------------------------------------------------------------
# Bad arguments
# --------------------------------------------------------------------------

BAD_ARGUMENTS = [
    # (constructor, kwargs, argument named in the message, value received)
    (layers.BinarizedConv2D, dict(filters=4, kernel_size=3, binarization="bnn"), "binarization", "bnn"),
    (layers.BinarizedDepthwiseConv2D, dict(kernel_size=3, binarization="XNOR"), "binarization", "XNOR"),
    (layers.ReLUConvBN, dict(filters=4, binarization=None), "binarization", None),
    (layers.BinarizedSepConv, dict(filters=4, binarization="pcn"), "binarization", "pcn"),
    (layers.BinarizedDilConv, dict(filters=4, binarization=""), "binarization", ""),
    (layers.FactorizedReduce, dict(filters=4, binarization="dorefa"), "binarization", "dorefa"),
    (layers.BinarizedConv2D, dict(filters=4, kernel_size=3, input_quantizer="sign_ste"), "quantizer", "sign_ste"),
    (layers.BinarizedDepthwiseConv2D, dict(kernel_size=3, input_quantizer="nope"), "quantizer", "nope"),
    (layers.BinarizedConv2D, dict(filters=4, kernel_size=3, theta=-1e-4), "theta", -1e-4),
    (layers.BinarizedDepthwiseConv2D, dict(kernel_size=3, theta=-1), "theta", -1),
    (layers.ReLUConvBN, dict(filters=4, theta=-0.5), "theta", -0.5),
    (layers.BinarizedSepConv, dict(filters=4, theta="big"), "theta", "big"),
    (layers.BinarizedDilConv, dict(filters=4, theta=None), "theta", None),
    (layers.FactorizedReduce, dict(filters=4, theta=float("nan")), "theta", float("nan")),
    (layers.BinarizedSepConv, dict(filters=4, kernel_size=4), "kernel_size", 4),
    (layers.BinarizedSepConv, dict(filters=4, kernel_size=0), "kernel_size", 0),
    (layers.BinarizedSepConv, dict(filters=4, kernel_size="3"), "kernel_size", "3"),
    (layers.BinarizedSepConv, dict(filters=4, kernel_size=True), "kernel_size", True),
    (layers.BinarizedDilConv, dict(filters=4, kernel_size=4), "kernel_size", 4),
    (layers.BinarizedDilConv, dict(filters=4, kernel_size=0), "kernel_size", 0),
    (layers.BinarizedDilConv, dict(filters=4, kernel_size="3"), "kernel_size", "3"),
    (layers.BinarizedDilConv, dict(filters=4, kernel_size=3.0), "kernel_size", 3.0),
    (layers.ReLUConvBN, dict(filters=4, kernel_size=0), "kernel_size", 0),
    (layers.ReLUConvBN, dict(filters=4, kernel_size="1"), "kernel_size", "1"),
    (layers.FactorizedReduce, dict(filters=3), "filters", 3),
    (layers.FactorizedReduce, dict(filters=7, binary_activations=True), "filters", 7),
    (layers.ReLUConvBN, dict(filters=0), "filters", 0),
    (layers.BinarizedSepConv, dict(filters=2.5), "filters", 2.5),
    (layers.BinarizedConv2D, dict(filters=4, kernel_size=3, binary_activations="yes"), "binary_activations", "yes"),
    (layers.BinarizedDepthwiseConv2D, dict(kernel_size=3, binary_activations=1), "binary_activations", 1),
    (layers.ReLUConvBN, dict(filters=4, binary_activations=None), "binary_activations", None),
    (layers.BinarizedSepConv, dict(filters=4, binary_activations="False"), "binary_activations", "False"),
    (layers.BinarizedDilConv, dict(filters=4, binary_activations=0), "binary_activations", 0),
    (layers.FactorizedReduce, dict(filters=4, binary_activations="true"), "binary_activations", "true"),
    (layers.ReLUConvBN, dict(filters=4, affine="no"), "affine", "no"),
    (layers.ReLUConvBN, dict(filters=4, full_precision=1), "full_precision", 1),
    (layers.BinarizedSepConv, dict(filters=4, full_precision_first="yes"), "full_precision_first", "yes"),
    (layers.BinarizedDilConv, dict(filters=4, full_precision_first=None), "full_precision_first", None),
    (layers.ReLUConvBN, dict(filters=4, strides=0), "strides", 0),
    (layers.BinarizedSepConv, dict(filters=4, strides=-1), "strides", -1),
    (layers.BinarizedDilConv, dict(filters=4, dilation_rate=0), "dilation_rate", 0),
]


@pytest.mark.parametrize(
    "cls,kwargs,argument,value",
    BAD_ARGUMENTS,
    ids=[f"{c.__name__}-{a}={v!r}" for c, _, a, v in BAD_ARGUMENTS],
)
def test_bad_arguments_raise_config_error(cls, kwargs, argument, value):
    with pytest.raises(ConfigError, match=re.escape(f"{argument}={value!r}")):
        cls(**kwargs)


def test_config_error_is_a_value_error():
    """Keras-style callers that catch ValueError still catch it."""
    with pytest.raises(ValueError):
        layers.BinarizedConv2D(4, 3, binarization="bnn")


@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_fused_training_matches_keras_and_numpy(affine):
    """`BatchNorm` trains on one FusedBatchNormV3 kernel: its output, its gradients (input,
    gamma, beta) and its moving statistics are Keras's BatchNormalization's, and the
    moving variance is the biased one of the NumPy formula."""
    import tensorflow as tf

    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(1.0, 3.0, (3, 5, 4, 6)), tf.float32)  # n = 60 per channel
    weights = tf.constant(rng.normal(size=(3, 5, 4, 6)), tf.float32)
    ours = layers.batch_norm(affine)
    ref = keras.layers.BatchNormalization(momentum=layers.BN_MOMENTUM, epsilon=layers.BN_EPSILON, center=affine,
                                          scale=affine)
    ours.build(x.shape)
    ref.build(x.shape)
    start = [rng.normal(size=6), rng.uniform(0.5, 2.0, 6)] + ([rng.uniform(0.5, 2.0, 6), rng.normal(size=6)] if affine else [])
    for layer in (ours, ref):
        layer.moving_mean.assign(start[0])
        layer.moving_variance.assign(start[1])
        if affine:
            layer.gamma.assign(start[2])
            layer.beta.assign(start[3])

    def run(layer):
        fn = tf.function(lambda t: layer(t, training=True))
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
            loss = tf.reduce_sum(y * weights)
        grads = tape.gradient(loss, [x] + [v.value for v in layer.trainable_variables])
        graph = fn.get_concrete_function(x).graph
        return y.numpy(), [g.numpy() for g in grads], [v.numpy() for v in layer.non_trainable_variables], graph

    y, grads, stats, graph = run(ours)
    y_ref, grads_ref, stats_ref, _ = run(ref)
    assert any(op.type == "FusedBatchNormV3" for op in graph.get_operations())
    np.testing.assert_allclose(y, y_ref, atol=2e-5)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        np.testing.assert_allclose(g, g_ref, atol=2e-4)
    xs = x.numpy().reshape(-1, 6)
    expected = [0.9 * start[0] + 0.1 * xs.mean(0), 0.9 * start[1] + 0.1 * xs.var(0)]  # np.var: biased
    for got, want, keras_value in zip(stats, expected, stats_ref):
        np.testing.assert_allclose(got, want, rtol=1e-5)
        np.testing.assert_allclose(keras_value, want, rtol=1e-5)
    # Inference is Keras's own code, with the statistics just written.
    np.testing.assert_allclose(ours(x, training=False).numpy(), ref(x, training=False).numpy(), atol=1e-5)
    clone = layers.BatchNorm.from_config(keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(ours)).get_config())
    assert type(clone) is layers.BatchNorm and clone.epsilon == layers.BN_EPSILON


@pytest.mark.parametrize("name", BLOCKS)
def test_tf_train_checkpoint_round_trip_of_every_block(name, tmp_path):
    """tf.train.Checkpoint saves and restores every weight of a block (the layers of a
    block's body are kept in a list, which TensorFlow's checkpoint does not follow alone)."""
    import tensorflow as tf

    rng = np.random.default_rng(3)
    options = VARIANTS[name][0][0]
    saved, restored = (make(name, "pcnn", True, options) for _ in range(2))
    x = _input(rng)
    saved(x), restored(x)
    for w in saved.weights:
        w.assign(rng.normal(0.0, 1.0, w.shape).astype(np.float32))
    path = tf.train.Checkpoint(block=saved).save(str(tmp_path / "ckpt"))
    tf.train.Checkpoint(block=restored).restore(path).assert_consumed()
    assert len(saved.weights) == len(restored.weights) > 0
    for a, b in zip(saved.weights, restored.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)


@pytest.fixture
def mixed_float16():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    yield
    keras.config.set_dtype_policy(previous)


@pytest.mark.parametrize("name", list(VARIANTS))
@pytest.mark.parametrize("binarization, binary_activations", BASE, ids=BASE_IDS)
def test_fit_under_mixed_float16(mixed_float16, name, binarization, binary_activations):
    # The PCNN amplitude loss is added in float32: Keras sums the model's losses in float32.
    options, _ = VARIANTS[name][0]
    rng = np.random.default_rng(SEED)
    model = keras.Sequential([
        keras.Input(INPUT_SHAPE[1:]), make(name, binarization, binary_activations, options),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, dtype="float32"),
    ])
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    history = model.fit(_input(rng), rng.integers(0, 2, INPUT_SHAPE[0]), epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    if binarization == "pcnn" and model.losses:
        assert all(loss.dtype == "float32" for loss in model.losses)
