"""Tests of bnas_tf.network: the DARTS evaluation network built from a genotype.

The golden parameter counts and the parameter shapes come from the PyTorch
reference (quark0/darts), not from this code.
"""

import json
import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from bnas_tf import genotypes
from bnas_tf import layers
from bnas_tf import network
from bnas_tf.errors import ConfigError

_DATA = os.path.join(os.path.dirname(__file__), "data")

# Parameters of the DARTS reference networks without the auxiliary head,
# exactly what DARTS's utils.count_parameters_in_MB sums (times 1e6): PyTorch
# NetworkCIFAR(36, 10, 20, auxiliary=True, genotype) and
# NetworkImageNet(48, 1000, 14, auxiliary=True, genotype) from quark0/darts
# cnn/model.py (commit f276dd3), genotypes DARTS_V1 / DARTS_V2 from its
# cnn/genotypes.py and PC_DARTS_cifar / PC_DARTS_image from
# yuhuixu1993/PC-DARTS genotypes.py (commit b74702f), built with torch 2.13.0
# (CPU) in a scratch directory outside this repository, counted as
# sum(p.numel() for name, p in net.named_parameters() if "auxiliary" not in name).
# DARTS_V2 on CIFAR is the "param size = 3.349342MB" DARTS's train.py prints.
REFERENCE_PARAMS = {
    # genotype: (CIFAR 20 cells 36 channels 10 classes, ImageNet 14 cells 48 channels 1000 classes)
    "DARTS_V1": (3_169_414, 4_510_432),
    "DARTS_V2": (3_349_342, 4_718_752),
    "PC_DARTS": (3_634_678, 5_270_560),
    "PC_DARTS_IMAGENET": (3_721_510, 5_342_464),
}
CIFAR = dict(num_classes=10, init_channels=36, layers=20, imagenet=False)
IMAGENET = dict(num_classes=1000, init_channels=48, layers=14, imagenet=True)

# One small network per layout, for the fast tests.
SMALL = dict(num_classes=10, init_channels=8, layers=3)


def _reference_shapes(key):
    """The fixture's PyTorch shapes grouped by module, converted to Keras layouts."""
    with open(os.path.join(_DATA, "darts_reference_shapes.json")) as f:
        entries = json.load(f)[key]
    groups = {}
    for name, shape in entries:
        module = re.match(r"(cells\.\d+|stem\d?|auxiliary_head|classifier)\.", name).group(1)
        if len(shape) == 4:
            out, inp, kh, kw = shape
            # (out, in/groups, kh, kw) -> Keras (kh, kw, in, out); depthwise -> (kh, kw, C, 1).
            shape = [kh, kw, out, 1] if inp == 1 and kh > 1 else [kh, kw, inp, out]
        elif len(shape) == 2:
            shape = shape[::-1]  # Linear (out, in) -> Dense kernel (in, out).
        groups.setdefault(module, []).append(list(shape))
    return groups


def _shapes(layer_or_layers):
    if not isinstance(layer_or_layers, list):
        layer_or_layers = [layer_or_layers]
    return [list(w.shape) for layer in layer_or_layers for w in layer.trainable_weights]


def _check_layer_for_layer(model, key):
    reference = _reference_shapes(key)
    stem = [layer for layer in model.layers if layer.name.startswith("stem")]
    assert _shapes(stem) == [s for k in ("stem", "stem0", "stem1") for s in reference.get(k, [])]
    cells = network.cells(model)
    assert len(cells) == sum(k.startswith("cells.") for k in reference)
    for i, cell in enumerate(cells):
        assert _shapes(cell) == reference[f"cells.{i}"], f"cell {i}"
    assert _shapes(model.get_layer(network.AUXILIARY_HEAD_NAME)) == reference["auxiliary_head"]
    assert _shapes(model.get_layer("classifier")) == reference["classifier"]


# Golden counts -------------------------------------------------------------


def test_darts_v2_cifar_is_the_reference_network_layer_for_layer():
    model = network.build_network("DARTS_V2", auxiliary=True, **CIFAR)
    assert network.count_params(model) == REFERENCE_PARAMS["DARTS_V2"][0]
    _check_layer_for_layer(model, "DARTS_V2/cifar")


def test_pc_darts_imagenet_is_the_reference_network_layer_for_layer():
    model = network.build_network("PC_DARTS_IMAGENET", auxiliary=True, **IMAGENET)
    assert network.count_params(model) == REFERENCE_PARAMS["PC_DARTS_IMAGENET"][1]
    _check_layer_for_layer(model, "PC_DARTS_IMAGENET/imagenet")


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, layout",
    [
        ("DARTS_V1", "cifar"),
        ("PC_DARTS", "cifar"),
        ("PC_DARTS_IMAGENET", "cifar"),
        ("DARTS_V1", "imagenet"),
        ("DARTS_V2", "imagenet"),
        ("PC_DARTS", "imagenet"),
    ],
)
def test_golden_parameter_counts(name, layout):
    model = network.build_network(name, auxiliary=False, **(CIFAR if layout == "cifar" else IMAGENET))
    assert network.count_params(model) == REFERENCE_PARAMS[name][layout == "imagenet"]


# Layouts and outputs ---------------------------------------------------------


def test_cifar_layout_shapes_and_outputs():
    model = network.build_network("DARTS_V2", auxiliary=True, layers=5, num_classes=10, init_channels=8)
    cells = network.cells(model)
    assert [c.reduction for c in cells] == [False, True, False, True, False]
    assert [c.reduction_prev for c in cells] == [False, False, True, False, True]
    assert isinstance(cells[2].preprocess0, layers.FactorizedReduce)
    assert isinstance(cells[1].preprocess0, layers.ReLUConvBN)
    assert model.get_layer("stem_bn").output.shape == (None, 32, 32, 24)
    assert [tuple(c.output.shape) for c in cells] == [
        (None, 32, 32, 32), (None, 16, 16, 64), (None, 16, 16, 64), (None, 8, 8, 128), (None, 8, 8, 128)
    ]
    x = np.random.RandomState(0).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    logits, aux_logits = model(x, training=True)
    assert logits.shape == (2, 10) and aux_logits.shape == (2, 10)
    logits, aux_logits = model(x, training=False)
    assert np.all(np.isfinite(logits)) and np.all(np.isfinite(aux_logits))


def test_imagenet_layout_shapes_and_outputs():
    model = network.build_network("PC_DARTS_IMAGENET", auxiliary=True, imagenet=True, **SMALL)
    assert model.input.shape == (None, 224, 224, 3)
    assert model.get_layer("stem0_bn2").output.shape == (None, 56, 56, 8)
    assert model.get_layer("stem1_bn").output.shape == (None, 28, 28, 8)
    cells = network.cells(model)
    assert [c.reduction for c in cells] == [False, True, True]
    # After the stride-2 stem, the first cell's preprocess0 is a FactorizedReduce (DARTS).
    assert isinstance(cells[0].preprocess0, layers.FactorizedReduce)
    assert [tuple(c.output.shape) for c in cells] == [(None, 28, 28, 32), (None, 14, 14, 64), (None, 7, 7, 128)]
    x = np.zeros((1, 224, 224, 3), "float32")
    logits, aux_logits = model(x, training=False)
    assert logits.shape == (1, 10) and aux_logits.shape == (1, 10)


def test_inference_model_drops_the_auxiliary_head():
    model = network.build_network("DARTS_V2", auxiliary=True, **SMALL)
    inference = network.inference_model(model)
    assert not network.has_auxiliary_head(inference)
    assert network.count_params(model) == network.count_params(inference)
    assert network.count_params(model, auxiliary=True) > network.count_params(model)
    x = np.random.RandomState(1).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(model(x, training=False)[0], inference(x, training=False))
    plain = network.build_network("DARTS_V2", auxiliary=False, **SMALL)
    assert network.inference_model(plain) is plain


# Binarization ---------------------------------------------------------------


@pytest.mark.parametrize("binarization", ["none", "xnor", "pcnn"])
@pytest.mark.parametrize("binary_activations", [False, True])
def test_binarization_options(binarization, binary_activations):
    model = network.build_network(
        "PC_DARTS", auxiliary=True, binarization=binarization, binary_activations=binary_activations, **SMALL
    )
    cell = network.cells(model)[0]
    binarized = (layers.BinarizedConv2D, layers.BinarizedDepthwiseConv2D)
    convs = [layer for layer in cell._flatten_layers() if isinstance(layer, binarized)]
    assert convs and all(c.binarization == binarization for c in convs)
    assert all(c.binary_activations == binary_activations for c in convs)
    has_prelu = any(isinstance(layer, keras.layers.PReLU) for layer in cell._flatten_layers())
    assert has_prelu == binary_activations
    # Stem, auxiliary head and classifier stay full precision.
    assert isinstance(model.get_layer("stem_conv"), keras.layers.Conv2D)
    assert not isinstance(model.get_layer("stem_conv"), layers.BinarizedConv2D)
    head = model.get_layer(network.AUXILIARY_HEAD_NAME)
    assert not any(isinstance(layer, layers.BinarizedConv2D) for layer in head._flatten_layers())

    x = np.random.RandomState(2).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    logits, aux_logits = model(x, training=True)
    assert np.all(np.isfinite(logits)) and np.all(np.isfinite(aux_logits))
    assert (len(model.losses) > 0) == (binarization == "pcnn")


def test_binarized_imagenet_keeps_preprocessing_and_first_depthwise_full_precision_and_sums():
    model = network.build_network(
        "PC_DARTS_IMAGENET", auxiliary=False, imagenet=True, binarization="pcnn", binary_activations=True, **SMALL
    )
    for cell in network.cells(model):
        assert cell.cell_output == "sum" and cell.multiplier == 1
        for pre in (cell.preprocess0, cell.preprocess1):
            convs = [c for c in pre._flatten_layers() if isinstance(c, layers.BinarizedConv2D)]
            assert convs and all(c.binarization == "none" and not c.binary_activations for c in convs)
        for op in cell.cell_ops:
            if isinstance(op, (layers.BinarizedSepConv, layers.BinarizedDilConv)):
                depthwise = [c for c in op._flatten_layers() if isinstance(c, layers.BinarizedDepthwiseConv2D)]
                assert depthwise[0].binarization == "none"
                assert all(c.binarization == "pcnn" for c in depthwise[1:])
    cells = network.cells(model)
    # Summation: a cell outputs C channels, not 4 C.
    assert [c.output.shape[-1] for c in cells] == [8, 16, 32]
    # A full-precision ImageNet network keeps DARTS's concatenation; cell_output overrides.
    full_precision = network.build_network("PC_DARTS_IMAGENET", auxiliary=False, imagenet=True, **SMALL)
    assert network.cells(full_precision)[0].multiplier == 4
    concat = network.build_network(
        "PC_DARTS_IMAGENET", auxiliary=False, imagenet=True, binarization="xnor", cell_output="concat", **SMALL
    )
    assert network.cells(concat)[0].multiplier == 4


# Serialization and drop path ------------------------------------------------------


def test_keras_round_trip_gives_identical_outputs(tmp_path):
    model = network.build_network(
        "PC_DARTS", auxiliary=True, binarization="pcnn", binary_activations=True, drop_path=0.3, seed=3, **SMALL
    )
    x = np.random.RandomState(3).uniform(-1, 1, (4, 32, 32, 3)).astype("float32")
    model(x, training=True)  # Moves the BatchNorm statistics away from their start.
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert network.drop_path_rate(loaded) == pytest.approx(0.3)
    for expected, actual in zip(model(x, training=False), loaded(x, training=False)):
        np.testing.assert_array_equal(expected, actual)
    assert len(loaded.weights) == len(model.weights)
    for w, v in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(w.numpy(), v.numpy(), err_msg=w.path)


def test_cell_config_round_trip():
    cell = network.Cell(
        genotypes.DARTS_V2.reduce, genotypes.DARTS_V2.reduce_concat, 16, reduction=True, reduction_prev=False,
        binarization="xnor", full_precision_first=True, cell_output="sum", drop_path_seed=7, name="c",
    )
    clone = network.Cell.from_config(cell.get_config())
    assert clone.get_config() == cell.get_config()


def test_drop_path_layer():
    layer = network.DropPath(0.5, seed=0)
    x = np.ones((2000, 2, 2, 3), "float32")
    np.testing.assert_array_equal(layer(x, training=False), x)
    y = layer(x, training=True).numpy()
    kept = y[:, 0, 0, 0] > 0
    assert set(np.unique(y)) == {0.0, 2.0}
    assert np.all(y == y[:, :1, :1, :1])  # One draw per example.
    assert 0.45 < kept.mean() < 0.55
    layer.rate.assign(0.0)
    np.testing.assert_array_equal(layer(x, training=True), x)


def test_drop_path_is_active_only_in_training():
    model = network.build_network("DARTS_V2", auxiliary=False, seed=0, **SMALL)
    x = np.random.RandomState(4).uniform(-1, 1, (8, 32, 32, 3)).astype("float32")
    eval_without = model(x, training=False)
    network.set_drop_path_rate(model, 0.5)
    assert network.drop_path_rate(model) == 0.5
    np.testing.assert_array_equal(model(x, training=False), eval_without)
    # Training calls move the BatchNorm statistics but use batch statistics.
    train_with = model(x, training=True)
    network.set_drop_path_rate(model, 0.0)
    train_without = model(x, training=True)
    assert not np.allclose(train_with, train_without)
    np.testing.assert_allclose(model(x, training=True), train_without, rtol=1e-5, atol=1e-5)


def test_drop_path_rate_change_does_not_retrace():
    model = network.build_network("DARTS_V2", auxiliary=False, seed=0, **SMALL)
    traces = []

    @tf.function
    def step(x):
        traces.append(1)
        return model(x, training=True)

    x = tf.zeros((2, 32, 32, 3))
    for rate in (0.0, 0.1, 0.2):
        network.set_drop_path_rate(model, rate)
        step(x)
    assert len(traces) == 1


# Errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(cell_output="mean"), "cell_output"),
        (dict(drop_path=1.0), "drop_path"),
        (dict(layers=2), "layers"),
        (dict(binarization="ternary"), "binarization"),
        (dict(imagenet=True, init_channels=7), "init_channels"),
        (dict(input_shape=(16, 16, 3), auxiliary=True), "auxiliary head"),
    ],
)
def test_bad_arguments_raise_config_error(kwargs, match):
    options = dict(SMALL, auxiliary=False)
    options.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        network.build_network("DARTS_V2", **options)


def _support(y, axis):
    """The output indices along `axis` (1: rows, 2: columns) where `y` is not zero."""
    other = tuple(a for a in range(4) if a != axis)
    return np.flatnonzero(np.abs(np.asarray(y)).sum(axis=other) > 0).tolist()


@pytest.mark.parametrize("name", [p for p in genotypes.PRIMITIVES if p != "none"])
@pytest.mark.parametrize("size", [16, 15])
def test_stride_two_windows_are_aligned_as_in_darts(name, size):
    # A reduction cell sums branches of different operations into one node, so their
    # stride-2 windows must sit on the same pixels. DARTS (PyTorch padding k // 2 * d)
    # centres them on the even pixels 2i. An impulse at pixel 8 then reaches outputs
    # centred on 4 in every operation: max/avg pooling only output 4; sep_conv_3x3 its
    # first (strided) depthwise conv at 4, then 3..5 after the second; the dilated,
    # FactorizedReduce (the even pixels on its first conv) and sep_conv_5x5 (2..6) alike.
    # With Keras's "same" padding at stride 2 pooling reached {3, 4} and sep_conv_3x3 {2..5}.
    from bnas_tf import ops as bops

    op = bops.make_op(name, 8, 2, binarization="none", affine=False)
    x = np.zeros((1, size, size, 8), np.float32)
    x[0, 8, 8, :] = 1.0
    op(x)  # build
    for w in op.weights:
        if "kernel" in w.path:
            w.assign(np.abs(np.asarray(w)) + 0.1)  # positive kernels: no cancellation
    y = op(x, training=False)
    assert y.shape[1] == (size + 1) // 2
    for axis in (1, 2):
        support = _support(y, axis)
        assert support and min(support) + max(support) == 8, (name, support)
        if name.endswith("pool_3x3"):
            assert support == [4]


def test_import_bnas_tf_is_enough_to_load_a_saved_network(tmp_path):
    """A fresh process that imports only `bnas_tf` (and Keras) loads a saved network
    in safe mode: every block, quantizer, constraint and the inference wrapper is registered."""
    import subprocess
    import sys

    model = network.build_network(genotypes.get("DARTS_V2"), num_classes=10, init_channels=8, layers=5,
                                  auxiliary=True, binarization="pcnn", binary_activations=True)
    x = np.random.RandomState(0).randn(2, 32, 32, 3).astype("float32")
    path, inputs, expected = tmp_path / "net.keras", tmp_path / "x.npy", tmp_path / "y.npy"
    model.save(path)
    np.save(inputs, x)
    np.save(expected, np.asarray(model(x, training=False)[0]))
    code = ("import sys, numpy as np, bnas_tf, keras; "
            "m = keras.models.load_model(sys.argv[1], safe_mode=True); "
            "y = m(np.load(sys.argv[2]), training=False)[0]; "
            "print(float(np.abs(np.asarray(y) - np.load(sys.argv[3])).max()))")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-c", code, str(path), str(inputs), str(expected)],
                            capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert float(result.stdout.strip().splitlines()[-1]) == 0.0
