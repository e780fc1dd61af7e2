"""`bnas_tf.summary` against parameter and MAC counts worked out by hand.

Conventions (see the module docstring): a conv's MACs are
H_out * W_out * k_h * k_w * C_in * C_out (depthwise: H_out * W_out * k_h * k_w * C);
a MAC is binary only when both the kernel and the input are 1 bit;
memory_binary_bytes = ceil(params_1bit / 8) + 4 * params_32bit.
"""

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from bnas_tf import layers  # noqa: E402
from bnas_tf import summary  # noqa: E402
from bnas_tf.errors import ConfigError  # noqa: E402


def _model(layer, input_shape):
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, layer(inputs))


def _conv(binarization, binary_activations, **kwargs):
    options = dict(padding="same", use_bias=False)
    options.update(kwargs)
    return layers.BinarizedConv2D(
        16, 3, binarization=binarization, binary_activations=binary_activations, **options
    )


K3_8_16 = 3 * 3 * 8 * 16  # 1152 kernel elements
MACS_3x3_8x8 = 8 * 8 * K3_8_16  # 73,728 MACs on an 8x8 output


@pytest.mark.parametrize("binary_activations", [True, False])
def test_pcnn_conv(binary_activations):
    s = summary.summarize(_model(_conv("pcnn", binary_activations), (8, 8, 8)))
    amplitude = 3 * 3 * 8  # A has the kernel's filter shape (k, k, C_in, 1): 32-bit
    assert s["params"] == K3_8_16 + amplitude
    assert s["params_1bit"] == K3_8_16
    assert s["params_32bit"] == amplitude
    assert s["params_non_trainable"] == 0
    assert s["memory_float_bytes"] == 4 * (K3_8_16 + amplitude)
    assert s["memory_binary_bytes"] == K3_8_16 // 8 + 4 * amplitude
    # A binarized kernel on a float input is a float MAC.
    assert s["macs_binary"] == (MACS_3x3_8x8 if binary_activations else 0)
    assert s["macs_float"] == (0 if binary_activations else MACS_3x3_8x8)
    assert s["macs_binary_fraction"] == (1.0 if binary_activations else 0.0)
    assert s["input_shape"] == [8, 8, 8]
    (row,) = s["layers"]
    assert row["output_shape"] == [8, 8, 16]
    assert row["params_1bit"] == K3_8_16


def test_xnor_conv_has_no_amplitude_parameter_and_counts_the_bias():
    s = summary.summarize(_model(_conv("xnor", True, use_bias=True), (8, 8, 8)))
    assert s["params"] == K3_8_16 + 16
    assert s["params_1bit"] == K3_8_16
    assert s["params_32bit"] == 16
    assert s["memory_binary_bytes"] == K3_8_16 // 8 + 4 * 16
    assert s["macs_binary"] == MACS_3x3_8x8


def test_full_precision_conv_with_sign_input_is_float():
    s = summary.summarize(_model(_conv("none", True), (8, 8, 8)))
    assert s["params_1bit"] == 0
    assert s["memory_binary_bytes"] == s["memory_float_bytes"] == 4 * K3_8_16
    assert s["macs_binary"] == 0 and s["macs_float"] == MACS_3x3_8x8


def test_output_size_of_strided_valid_conv():
    s = summary.summarize(_model(_conv("xnor", True, strides=2, padding="valid"), (9, 9, 8)))
    assert s["layers"][0]["output_shape"] == [4, 4, 16]
    assert s["macs_binary"] == 4 * 4 * K3_8_16


def test_odd_bit_count_rounds_up_to_a_byte():
    layer = layers.BinarizedConv2D(1, 1, binarization="xnor", use_bias=False)
    s = summary.summarize(_model(layer, (4, 4, 3)))
    assert s["params_1bit"] == 3
    assert s["memory_binary_bytes"] == 1


def test_binary_depthwise_conv():
    layer = layers.BinarizedDepthwiseConv2D(
        3, padding="same", use_bias=False, binarization="pcnn", binary_activations=True
    )
    s = summary.summarize(_model(layer, (8, 8, 8)))
    assert s["params_1bit"] == 3 * 3 * 8
    assert s["params_32bit"] == 3 * 3  # A: (k, k, 1, 1)
    assert s["macs_binary"] == s["macs_binary_depthwise"] == 8 * 8 * 3 * 3 * 8


def test_sep_conv_block_by_hand():
    # dw1 3x3 -> pw1 1x1 C->C -> act1 (PReLU, C) -> bn1 -> dw2 -> pw2 C->F -> act2 (PReLU, F) -> bn2
    c, f, h = 8, 16, 6
    block = layers.BinarizedSepConv(f, 3, binarization="pcnn", binary_activations=True)
    s = summary.summarize(_model(block, (h, h, c)))
    one_bit = 9 * c + c * c + 9 * c + c * f
    amplitudes = 9 + c + 9 + c  # dw: (3, 3, 1, 1); pw: (1, 1, C_in, 1)
    prelu = c + f
    bn = 2 * c + 2 * f
    assert s["params_1bit"] == one_bit
    assert s["params_32bit"] == amplitudes + prelu + bn
    assert s["params_non_trainable"] == bn
    assert s["macs_binary"] == h * h * (9 * c + c * c + 9 * c + c * f)
    assert s["macs_binary_depthwise"] == h * h * 2 * 9 * c
    assert s["macs_float"] == 0
    model = _model(block, (h, h, c))
    assert s["params"] + s["params_non_trainable"] == model.count_params()


def test_dense_and_full_precision_stem_are_float_macs():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", use_bias=False)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10)(x)
    s = summary.summarize(keras.Model(inputs, outputs))
    assert s["macs_float"] == 4 * 4 * 3 * 3 * 3 * 4 + 4 * 10
    assert s["params"] == 3 * 3 * 3 * 4 + 4 * 10 + 10
    assert s["params_1bit"] == 0


def _model_with_auxiliary():
    inputs = keras.Input((8, 8, 8))
    x = _conv("pcnn", True, name="main_conv")(inputs)
    aux = keras.layers.Dense(5, name="auxiliary_head")(keras.layers.Flatten()(x))
    logits = keras.layers.Dense(3, name="classifier")(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, [logits, aux])


def test_auxiliary_head_is_excluded():
    model = _model_with_auxiliary()
    s = summary.summarize(model)
    assert s["params"] == K3_8_16 + 72 + 16 * 3 + 3
    assert s["macs_float"] == 16 * 3
    assert s["macs_binary"] == MACS_3x3_8x8
    assert all("auxiliary" not in row["name"] for row in s["layers"]), s["layers"]
    with_head = summary.summarize(model, exclude=())
    assert with_head["params"] == s["params"] + 8 * 8 * 16 * 5 + 5
    assert with_head["macs_float"] == s["macs_float"] + 8 * 8 * 16 * 5


@keras.saving.register_keras_serializable(package="bnas_tf_summary_test")
class _TwoHeads(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.body = layers.ReLUConvBN(8, 3, binarization="xnor", binary_activations=True, name="body")
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.head = keras.layers.Dense(4, name="classifier")
        self.aux = keras.layers.Dense(4, name="my_auxiliary")

    def call(self, inputs, training=None):
        x = self.pool(self.body(inputs, training=training))
        return self.head(x), self.aux(x)


def test_subclassed_model_needs_an_input_shape():
    model = _TwoHeads()
    model(np.zeros((1, 5, 5, 4), "float32"))
    with pytest.raises(ConfigError, match="input_shape"):
        summary.summarize(model)
    s = summary.summarize(model, (5, 5, 4))
    # 1-bit kernel 3*3*4*8 + PReLU alpha on its 8 outputs + BN gamma/beta (16) + Dense 8*4+4.
    assert s["params_1bit"] == 3 * 3 * 4 * 8
    assert s["params_32bit"] == 8 + 16 + 36
    assert s["macs_binary"] == 5 * 5 * 3 * 3 * 4 * 8
    assert s["macs_float"] == 8 * 4


def test_forward_pass_hooks_are_removed():
    model = _model(_conv("pcnn", True), (8, 8, 8))
    summary.summarize(model)
    assert all("call" not in vars(layer) for layer in model._flatten_layers())
    assert model(np.ones((2, 8, 8, 8), "float32")).shape == (2, 8, 8, 16)


def test_format_table_has_totals_and_extra_rows():
    s = summary.summarize(_model(_conv("pcnn", True), (8, 8, 8)))
    table = summary.format_table(s, extra={"test_accuracy": 0.96061, "search_cost": "0.094 GPU-days"})
    lines = table.splitlines()
    assert len({len(line) for line in lines}) == 1  # a rectangle
    assert "1,152" in table and "73,728" in table
    assert "| test_accuracy" in table and "0.9606" in table
    assert "0.094 GPU-days" in table
    assert "432 B" in table
