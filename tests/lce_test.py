"""1-bit BNAS models convert with Larq Compute Engine and run the same there.

A small model of every binarized block (BinarizedConv2D, ReLUConvBN,
BinarizedSepConv, BinarizedDilConv, FactorizedReduce) with binary
activations is exported with Keras 3's `model.export` (a TF SavedModel),
converted by `larq_compute_engine.convert_saved_model` and run by LCE's
interpreter (`larq_compute_engine.testing.Interpreter`; on x86 it runs LCE's
reference kernels, which compute the bit-packed binary convolution exactly).

What must convert: every regular (k x k and 1 x 1) binarized convolution
becomes an `LceBconv2d` fed by an `LceQuantize`; BatchNorm after a binary
convolution is folded into the LceBconv2d's per-channel multiplier and bias.
LCE has no binary depthwise convolution, so the binarized depthwise
convolutions stay float `DEPTHWISE_CONV_2D` ops on dequantized +-1 inputs
(`LceQuantize` -> `LceDequantize`), with the +-A_hat kernel as float weights.
No float `CONV_2D` may remain.

Why the amplitudes are powers of two here. A binary convolution is a sum of
+-A_hat terms. LCE computes it as an integer popcount times A_hat, so a sum
that is exactly 0 gives exactly 0; Keras computes it in float32, where
A_hat * k is rounded for most A_hat, so the same sum can come out as
+-1 ulp, and the next sign (which maps 0 to +1) then disagrees. One flipped
sign changes the next binary convolution by 2 A_hat and the difference
cascades through the network (seen with the initial amplitudes: errors of
the order of the outputs themselves). With A_hat (PCNN) and mean|X_i| (XNOR)
powers of two, every binary and depthwise convolution on +-1 inputs is exact
in float32 on both sides, so the signs agree exactly and the remaining
differences come only from float operations done in a different order:
BatchNorm folded into one multiply-add (y*m + b against
(y - mean) / sqrt(var + eps) * gamma + beta), PReLU, the global average and
the dense layer. Those are a few float32 ulps of values of order 1, hence
the tolerance atol = rtol = 1e-4 below (observed: ~1e-6).
"""

import collections
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

lce = pytest.importorskip("larq_compute_engine")

from larq_compute_engine.mlir.python import tflite_schema  # noqa: E402

from bnas_tf import layers  # noqa: E402

SEED = 7
INPUT_SHAPE = (16, 16, 8)
TOLERANCE = 1e-4  # see the module docstring

_BUILTIN_NAMES = {v: k for k, v in vars(tflite_schema.BuiltinOperator).items() if not k.startswith("_")}


def op_names(flatbuffer):
    """The operators of the main subgraph of a TFLite flatbuffer, in order."""
    model = tflite_schema.Model.GetRootAsModel(flatbuffer, 0)
    codes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        if code.CustomCode():
            codes.append(code.CustomCode().decode())
        else:
            codes.append(_BUILTIN_NAMES[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())])
    graph = model.Subgraphs(0)
    return [codes[graph.Operators(j).OpcodeIndex()] for j in range(graph.OperatorsLength())]


def _conv_layers(model):
    return [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, (layers.BinarizedConv2D, layers.BinarizedDepthwiseConv2D))
    ]


def _set_exact_weights(model, rng):
    """Random signs, power-of-two amplitudes, random BatchNorm and PReLU."""
    for layer in _conv_layers(model):
        kernel = np.where(rng.random(layer.kernel.shape) < 0.5, -1.0, 1.0)
        if layer.binarization == "xnor":
            # |X| = 2^-k per filter (output filter; channel for a depthwise conv),
            # so that mean|X_i| is a power of two.
            depthwise = isinstance(layer, layers.BinarizedDepthwiseConv2D)
            cin, cout = layer.kernel.shape[2:]
            scale = 2.0 ** -rng.integers(0, 4, size=(1, 1, cin, 1) if depthwise else (1, 1, 1, cout))
            layer.kernel.assign((kernel * scale).astype(np.float32))
        elif layer.binarization == "pcnn":
            layer.kernel.assign((kernel * rng.uniform(0.2, 1.5, kernel.shape)).astype(np.float32))
            # A not constant, but mean(A) = 2^-k exactly: A = c (1 +- 1/2) in
            # equal numbers (exact float sums); constant when its size is odd.
            c = 2.0 ** -int(rng.integers(0, 4))
            n = int(np.prod(layer.amplitude.shape))
            signs = np.resize([0.5, -0.5], n) if n % 2 == 0 else np.zeros(n)
            layer.amplitude.assign((c * (1.0 + rng.permutation(signs))).reshape(layer.amplitude.shape).astype(np.float32))
            assert np.mean(layer.amplitude.numpy()) == c
        else:  # full precision
            layer.kernel.assign(rng.normal(0.0, 0.5, kernel.shape).astype(np.float32))
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0.0, 1.0, n).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 4.0, n).astype(np.float32))
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype(np.float32))
                layer.beta.assign(rng.normal(0.0, 0.3, n).astype(np.float32))
        elif isinstance(layer, keras.layers.PReLU):
            # Negative slopes too: a trained PReLU can flip the sign of x < 0.
            layer.alpha.assign(rng.uniform(-0.5, 0.5, layer.alpha.shape).astype(np.float32))


def build_model(binarization):
    kw = dict(binarization=binarization, binary_activations=True)
    inputs = keras.Input(INPUT_SHAPE, batch_size=1)
    x = layers.BinarizedConv2D(16, 3, padding="same", use_bias=False, **kw)(inputs)
    x = layers.batch_norm()(x)
    x = layers.ReLUConvBN(16, 3, **kw)(x)
    x = layers.ReLUConvBN(16, 1, strides=2, affine=False, **kw)(x)
    x = layers.BinarizedSepConv(16, 3, **kw)(x)
    x = layers.BinarizedSepConv(24, 5, full_precision_first=True, **kw)(x)
    x = layers.BinarizedDilConv(24, 3, **kw)(x)
    x = layers.BinarizedDilConv(24, 3, strides=2, **kw)(x)
    x = layers.FactorizedReduce(32, **kw)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10)(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module", params=["xnor", "pcnn"])
def converted(request, tmp_path_factory):
    keras.utils.set_random_seed(SEED)
    rng = np.random.default_rng(SEED)
    model = build_model(request.param)
    _set_exact_weights(model, rng)
    path = tmp_path_factory.mktemp(f"saved_model_{request.param}")
    model.export(str(path), format="tf_saved_model", verbose=False)
    flatbuffer = lce.convert_saved_model(str(path))
    assert isinstance(flatbuffer, bytes)
    return model, flatbuffer


def test_binary_convolutions_become_lce_bconv2d(converted):
    model, flatbuffer = converted
    ops = op_names(flatbuffer)
    counts = collections.Counter(ops)
    convs = _conv_layers(model)
    regular = [c for c in convs if isinstance(c, layers.BinarizedConv2D)]
    depthwise = [c for c in convs if isinstance(c, layers.BinarizedDepthwiseConv2D)]
    assert all(c.binarization != "none" and c.binary_activations for c in regular)
    # Every regular binarized convolution is a bit-packed LceBconv2d ...
    assert counts["LceBconv2d"] == len(regular) == 11, ops
    assert "CONV_2D" not in counts, ops
    # ... and the depthwise ones stay float (LCE has no binary depthwise op).
    assert counts["DEPTHWISE_CONV_2D"] == len(depthwise) == 6, ops
    # The +-1 inputs of the binarized depthwise convs are LceQuantize -> LceDequantize;
    # the one full-precision depthwise conv (full_precision_first) takes float input.
    assert counts["LceDequantize"] == sum(c.binarization != "none" for c in depthwise) == 5, ops
    assert counts["LceQuantize"] == len(regular) + counts["LceDequantize"], ops
    # A 1-bit unit is sign -> conv(s) -> PReLU -> BN (bnas_tf.layers): the BatchNorm after
    # the PReLU stays one per-channel multiply-add each; nothing else is float arithmetic.
    assert counts["MUL"] == counts["ADD"] == counts["PRELU"], ops


def test_lce_interpreter_matches_keras(converted):
    model, flatbuffer = converted
    rng = np.random.default_rng(SEED + 1)
    x = rng.normal(0.0, 1.0, (4,) + INPUT_SHAPE).astype(np.float32)
    expected = np.asarray(model(x, training=False))
    assert np.abs(expected).max() > 0.1  # not a trivial output
    # The default (optimized) LceBconv2d kernels, then LCE's reference ones.
    for use_reference_bconv in (False, True):
        interpreter = lce.testing.Interpreter(flatbuffer, use_reference_bconv=use_reference_bconv)
        got = interpreter.predict(x)
        got = np.concatenate(got) if isinstance(got, list) else np.asarray(got)
        assert got.shape == expected.shape == (4, 10)
        np.testing.assert_array_equal(got.argmax(-1), expected.argmax(-1))
        np.testing.assert_allclose(got, expected, rtol=TOLERANCE, atol=TOLERANCE * np.abs(expected).max())


# Binary depthwise kernels in 8 bits (bnas_tf.tflite_pack) --------------------------------


def test_binary_depthwise_kernels_pack_to_int8_exactly(converted):
    """Each binary depthwise kernel becomes int8 + DEQUANTIZE; the file shrinks, the outputs do not change."""
    from tensorflow.lite.tools import flatbuffer_utils

    from bnas_tf.tflite_pack import pack_binary_depthwise

    model, flatbuffer = converted
    packed, n = pack_binary_depthwise(flatbuffer)
    depthwise = [c for c in _conv_layers(model) if isinstance(c, layers.BinarizedDepthwiseConv2D)]
    binary = [c for c in depthwise if c.binarization != "none"]
    assert n == len(binary) == 5  # the full-precision depthwise kernel is not binary: left in float32
    counts = collections.Counter(op_names(packed))
    assert counts["DEQUANTIZE"] == n and counts["DEPTHWISE_CONV_2D"] == len(depthwise)
    # 3 bytes saved per packed weight, less the new tensors' scales and zero points (12 bytes per
    # channel) and a few hundred bytes for each new tensor and op.
    weights = sum(int(np.prod(c.kernel.shape)) for c in binary)
    channels = sum(int(c.kernel.shape[-2]) for c in binary)
    assert len(flatbuffer) - len(packed) >= 3 * weights - 12 * channels - 300 * n > 0
    graph = flatbuffer_utils.read_model_from_bytearray(bytearray(packed)).subgraphs[0]
    int8 = [t for t in graph.tensors if t.quantization is not None and t.quantization.scale is not None
            and len(t.quantization.scale) > 1]
    assert len(int8) == n and all(t.quantization.quantizedDimension == 3 for t in int8)
    x = np.random.default_rng(SEED + 2).normal(0.0, 1.0, (4,) + INPUT_SHAPE).astype(np.float32)
    before = lce.testing.Interpreter(flatbuffer).predict(x)
    after = lce.testing.Interpreter(packed).predict(x)
    np.testing.assert_array_equal(np.asarray(after), np.asarray(before))


def test_only_binary_kernels_are_packed():
    from bnas_tf.tflite_pack import _binary_levels

    kernel = np.array([0.5, -2.0, -0.5, 2.0, 0.0, 2.0, 0.5, 0.0], np.float32).reshape(1, 2, 2, 2)  # +-0.5, +-2
    q, scale = _binary_levels(kernel)
    assert q.dtype == np.int8 and set(np.unique(q)) <= {-1, 0, 1}
    np.testing.assert_array_equal(q * scale, kernel)
    assert _binary_levels(np.zeros((1, 3, 3, 2), np.float32))[0].max() == 0  # all-zero channels: exact too
    assert _binary_levels(np.array([0.5, 0.25], np.float32).reshape(1, 1, 2, 1)) is None  # two magnitudes
