"""Tests of bnas_tf.face.models: the IR-ResNet baselines and the BNAS face network (IJCV Table 5).

The ResNet parameter counts are checked against counts computed here from
the architecture's arithmetic (`_ir_resnet_params`), not from the model code,
and those against the paper's figures.
"""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from bnas_tf import amplitude
from bnas_tf import layers
from bnas_tf import network
from bnas_tf.errors import ConfigError
from bnas_tf.face import models

# Small BNAS face network for the running tests: C = 8, 3 cells (normal, reduce, reduce).
SMALL = dict(init_channels=8, layers=3)


def _ir_resnet_params(stages, *, channels=(64, 128, 256, 512), stem=64, in_channels=3, embedding=512, side=7):
    """Trainable parameters of an IR-ResNet face network, from its layer list.

    stem conv3x3 (no bias) + BN (gamma, beta) + PReLU (one slope per channel);
    per unit BN(in) + conv3x3(in -> out) + BN(out) + PReLU(out) + conv3x3(out -> out) + BN(out),
    and on the first unit of each stage (stride 2) the shortcut conv1x1(in -> out) + BN(out);
    head BN(512) + Dense(side * side * 512 -> embedding, with bias) + BN(embedding).
    """
    def bn(c):
        return 2 * c

    total = 9 * in_channels * stem + bn(stem) + stem
    c_in = stem
    for c_out, units in zip(channels, stages):
        for unit in range(units):
            total += bn(c_in) + 9 * c_in * c_out + bn(c_out) + c_out + 9 * c_out * c_out + bn(c_out)
            if unit == 0:
                total += c_in * c_out + bn(c_out)
            c_in = c_out
    return total + bn(c_in) + side * side * c_in * embedding + embedding + bn(embedding)


# Table 5's "# Params (M)" and how far the IR layout is from it. ResNet-18 matches; no stage
# configuration of IR blocks reproduces the 34/50/100 figures (see build_face_resnet's docstring).
# insightface's iresnet has the same parameters; with its final BN scale frozen it reports 512
# fewer trainable ones (iresnet18: 24,025,088; iresnet100: 65,155,648).
PAPER_M = {18: 24.02, 34: 36.56, 50: 45.46, 100: 75.58}
EXPECTED = {18: 24_025_600, 34: 34_139_328, 50: 43_590_848, 100: 65_156_160}
TOLERANCE = {18: 0.001, 34: 0.07, 50: 0.05, 100: 0.14}  # relative |count - paper| / paper


def _images(n=2, size=112, seed=0):
    pixels = np.random.RandomState(seed).randint(0, 256, (n, size, size, 3)).astype("float32")
    return np.asarray(models.normalize_images(pixels))


# Parameter counts ------------------------------------------------------------


@pytest.mark.parametrize("depth", [18, 34, 50, 100])
def test_resnet_parameter_counts_follow_the_architecture_and_the_paper(depth):
    expected = _ir_resnet_params(models.RESNET_STAGES[depth])
    assert expected == EXPECTED[depth]
    model = models.build_face_resnet(depth)
    assert network.count_params(model) == expected
    assert abs(expected / 1e6 - PAPER_M[depth]) / PAPER_M[depth] < TOLERANCE[depth]
    # The Dense of the flattened 7x7x512 map: 12.85 M of them.
    assert model.get_layer("fc").count_params() == 7 * 7 * 512 * 512 + 512


def test_default_bnas_face_network_is_near_the_papers_size():
    model = models.build_face_network("PC_DARTS_IMAGENET", **models.FACE_NETWORK_DEFAULTS)
    # 7x7 map of 16 C = 384 channels; its Dense dominates the count.
    assert model.get_layer("fc").count_params() == 7 * 7 * 384 * 512 + 512
    count = network.count_params(model)
    assert count == 10_332_636  # the figure of build_face_network's docstring
    assert abs(count / 1e6 - models.PAPER_BNAS_PARAMS_M["W1A32"]) / models.PAPER_BNAS_PARAMS_M["W1A32"] < 0.02


# ResNet layout and binarization ------------------------------------------------


@pytest.mark.parametrize("binarization, binary_activations", [("xnor", True), ("pcnn", False)])
def test_binarized_resnet18_binarizes_the_block_convs_only(binarization, binary_activations):
    model = models.build_face_resnet(18, binarization=binarization, binary_activations=binary_activations)
    block_convs = [l for l in model.layers if l.name.startswith("stage") and l.name[-6:] in ("_conv1", "_conv2")]
    assert len(block_convs) == 16
    for conv in block_convs:
        assert isinstance(conv, layers.BinarizedConv2D), conv.name
        assert conv.binarization == binarization and conv.binary_activations == binary_activations
        assert conv.kernel_size == (3, 3)
        # The stride-2 convolutions pad as PyTorch does.
        assert conv.symmetric_padding == (conv.strides == (2, 2)), conv.name
    shortcuts = [l for l in model.layers if l.name.endswith("_shortcut_conv")]
    assert [l.name for l in shortcuts] == [f"stage{s}_unit0_shortcut_conv" for s in range(1, 5)]
    for layer in [model.get_layer("stem_conv"), *shortcuts]:
        assert isinstance(layer, keras.layers.Conv2D) and not isinstance(layer, layers.BinarizedConv2D)
    assert type(model.get_layer("fc")) is keras.layers.Dense
    assert isinstance(model.get_layer("stage1_unit0_prelu"), keras.layers.PReLU)
    # XNOR keeps the count; PCNN adds one (3, 3, C_in, 1) amplitude per block conv.
    extra = sum(9 * conv.kernel.shape[2] for conv in block_convs) if binarization == "pcnn" else 0
    assert network.count_params(model) == EXPECTED[18] + extra
    assert sum(int(np.prod(a.shape)) for a in amplitude.amplitude_variables(model)) == extra


def test_resnet_feature_maps_and_output():
    model = models.build_face_resnet(18, binarization="xnor", binary_activations=True)
    sizes = [model.get_layer(f"stage{s}_unit1_add").output.shape for s in range(1, 5)]
    assert sizes == [(None, 56, 56, 64), (None, 28, 28, 128), (None, 14, 14, 256), (None, 7, 7, 512)]
    y = model(_images(), training=False)
    assert y.shape == (2, 512) and y.dtype == "float32" and np.all(np.isfinite(y))


def test_symmetric_conv_pads_after_the_sign_like_pytorch():
    conv = layers.BinarizedConv2D(
        1, 3, strides=2, padding="symmetric", use_bias=False, binarization="none", binary_activations=True, kernel_initializer="ones"
    )
    # All-ones input: a corner window sees 2 x 2 inputs and 5 zeros of padding (not sign(0) = +1).
    y = conv(np.ones((1, 8, 8, 1), "float32")).numpy()[0, :, :, 0]
    assert y.shape == (4, 4) and y[0, 0] == 4.0 and y[1, 1] == 9.0
    # An impulse at pixel 4 reaches only output 2: windows centred on the even pixels 2i.
    x = np.zeros((1, 8, 8, 1), "float32")
    x[0, 4, 4, 0] = 1.0
    plain = layers.BinarizedConv2D(1, 3, strides=2, padding="symmetric", binarization="none",
                                   kernel_initializer="ones")
    support = np.argwhere(plain(x).numpy()[0, :, :, 0] != 0).tolist()
    assert support == [[2, 2]]
    assert layers.BinarizedConv2D.from_config(conv.get_config()).get_config() == conv.get_config()


# BNAS face network ------------------------------------------------------------


def test_face_network_layout_and_output():
    model = models.build_face_network("PC_DARTS_IMAGENET", binarization="pcnn", binary_activations=True, **SMALL)
    assert not any(isinstance(l, keras.layers.GlobalAveragePooling2D) for l in model.layers)
    assert model.get_layer("stem0_bn2").output.shape == (None, 28, 28, 8)
    assert model.get_layer("stem1_bn").output.shape == (None, 28, 28, 8)
    cells = network.cells(model)
    assert [c.reduction for c in cells] == [False, True, True]
    assert [tuple(c.output.shape) for c in cells] == [(None, 28, 28, 32), (None, 14, 14, 64), (None, 7, 7, 128)]
    assert models.final_map_size(models.FACE_INPUT_SHAPE) == (7, 7)
    assert model.get_layer("flatten").output.shape == (None, 7 * 7 * 128)
    # The stem and the head stay full precision.
    for name in ("stem0_conv1", "stem0_conv2", "stem1_conv"):
        assert not isinstance(model.get_layer(name), layers.BinarizedConv2D)
    assert type(model.get_layer("fc")) is keras.layers.Dense
    y = model(_images(), training=False)
    assert y.shape == (2, 512) and y.dtype == "float32" and np.all(np.isfinite(y))
    narrow = models.build_face_network("PC_DARTS_IMAGENET", embedding_size=128, **SMALL)
    assert narrow.output.shape == (None, 128)


def test_gradient_step_is_finite():
    model = models.build_face_network("DARTS_V2", binarization="xnor", binary_activations=True, dropout=0.2,
                                      drop_path=0.2, seed=0, **SMALL)
    x = _images(seed=1)
    optimizer = keras.optimizers.SGD(0.01)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(x, training=True)))
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None and np.all(np.isfinite(g)) for g in grads)
    optimizer.apply(grads, model.trainable_variables)
    assert np.all(np.isfinite(model(x, training=False)))


@pytest.mark.parametrize("kind", ["network", "resnet"])
def test_keras_round_trip_gives_identical_outputs(tmp_path, kind):
    if kind == "network":
        model = models.build_face_network("PC_DARTS", binarization="pcnn", binary_activations=True, **SMALL)
        x = _images(n=2, seed=2)
    else:  # 16x16: a 1x1 map, a small Dense; the conv weights are ResNet-18's.
        model = models.build_face_resnet(18, binarization="pcnn", binary_activations=True, input_shape=(16, 16, 3))
        x = _images(n=2, size=16, seed=2)
    model(x, training=True)  # Moves the BatchNorm statistics away from their start.
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(model(x, training=False), loaded(x, training=False))
    assert [w.path for w in loaded.weights] == [w.path for w in model.weights]


# Errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(depth=20), "depth"),
        (dict(depth=True), "depth"),
        (dict(depth=[18]), "depth"),
        (dict(embedding_size=0), "embedding_size"),
        (dict(dropout=1.0), "dropout"),
        (dict(input_shape=(8, 8, 3)), "input_shape"),
        (dict(input_shape=(None, 112, 3)), "input_shape"),
        (dict(input_shape=(112, 112)), "input_shape"),
        (dict(binarization="ternary"), "binarization"),
        (dict(binary_activations="yes"), "binary_activations"),
    ],
)
def test_resnet_bad_arguments_raise_config_error(kwargs, match):
    options = dict(depth=18)
    options.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        models.build_face_resnet(options.pop("depth"), **options)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(init_channels=7), "init_channels"),
        (dict(layers=2), "layers"),
        (dict(embedding_size=-1), "embedding_size"),
        (dict(input_shape=(12, 112, 3)), "input_shape"),
        (dict(drop_path=1.0), "drop_path"),
        (dict(binarization="ternary"), "binarization"),
    ],
)
def test_face_network_bad_arguments_raise_config_error(kwargs, match):
    options = dict(SMALL)
    options.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        models.build_face_network("DARTS_V2", **options)
