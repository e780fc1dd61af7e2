"""`bnas_tf.export`: every artifact written, and each one checked against Keras.

The models are small 1-bit networks made of the DARTS blocks (ReLUConvBN,
BinarizedSepConv, BinarizedDilConv) with binary activations, PCNN and XNOR
kernels, and random BatchNorm statistics, PReLU slopes and amplitudes (so
that no layer is the identity). The independent references are the
TensorFlow Lite interpreter and Larq Compute Engine's interpreter.

Tolerances:
- SavedModel and .keras reload run the same TensorFlow graph on the same
  weights: identical outputs (checked at 1e-6).
- Float TFLite (builtin kernels) and LCE: 1e-4 relative to the largest
  logit. Both compute the float layers in float32 in another order than
  TensorFlow (~1e-7 relative per layer), and LCE computes each binary
  convolution as an exact integer popcount where TensorFlow sums +-A in
  float; over the ~10 layers here that is ~1e-6. A sign that flips would
  move a logit by O(1), far beyond 1e-4: the tolerance separates rounding
  from a wrong conversion. (On a deep network such flips do happen: a 1-bit
  network is discontinuous, and a 20-cell one moves a logit by O(1) under
  a 1e-6 change of its input; there LCE is judged by accuracy, not here.)
"""

import json
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from bnas_tf import export  # noqa: E402
from bnas_tf import layers  # noqa: E402
from bnas_tf import network  # noqa: E402
from bnas_tf import summary  # noqa: E402
from bnas_tf.errors import BnasError, ConfigError  # noqa: E402

SEED = 7
INPUT_SHAPE = (16, 16, 3)
ROUND_TRIP_ATOL = 1e-6
CONVERTED_RTOL = 1e-4
TARGET_LCE_RATIO = 1 / 8


def _randomize(model, seed=SEED):
    """Non-trivial BatchNorm statistics and affine terms, PReLU slopes, amplitudes."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.moving_mean.shape
            layer.moving_mean.assign(rng.normal(0.0, 0.5, c).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.2, 2.0, c).astype("float32"))
            if layer.gamma is not None:
                layer.gamma.assign(rng.uniform(0.5, 1.5, c).astype("float32"))
                layer.beta.assign(rng.normal(0.0, 0.3, c).astype("float32"))
        elif isinstance(layer, keras.layers.PReLU):
            layer.alpha.assign(rng.uniform(0.05, 0.5, layer.alpha.shape).astype("float32"))
        elif getattr(layer, "amplitude", None) is not None:
            layer.amplitude.assign(rng.uniform(0.05, 0.5, layer.amplitude.shape).astype("float32"))
    return model


def _cell_model(binarization, name):
    """stem (float) -> ReLUConvBN 3x3 -> SepConv 3x3 + DilConv 3x3 -> GAP -> Dense."""
    options = dict(binarization=binarization, binary_activations=True)
    inputs = keras.Input(INPUT_SHAPE, name="images")
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = layers.batch_norm(name="stem_bn")(x)
    x = layers.ReLUConvBN(16, 3, name="preprocess", **options)(x)
    x = keras.layers.Add()([layers.BinarizedSepConv(16, 3, name="sep", **options)(x),
                            layers.BinarizedDilConv(16, 3, name="dil", **options)(x)])
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10, name="classifier")(x)
    return _randomize(keras.Model(inputs, outputs, name=name))


# Binary 2D convolutions (1-bit kernel and input) of `_cell_model`: preprocess's
# 3x3 conv, the two pointwise convs of sep, the pointwise conv of dil.
CELL_MODEL_BCONVS = 4


def _sample_inputs(n=16, shape=INPUT_SHAPE, seed=SEED):
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (n,) + shape).astype("float32")


@pytest.fixture(scope="module", params=["pcnn", "xnor"])
def exported(request, tmp_path_factory):
    keras.utils.set_random_seed(SEED)
    model = _cell_model(request.param, name=f"cell_{request.param}")
    x = _sample_inputs()
    export_dir = tmp_path_factory.mktemp("export") / request.param
    result = export.export(model, export_dir, sample_inputs=x, summary_extra={"test_accuracy": 0.5})
    return dict(model=model, x=x, result=result, report=export.verify(export_dir, x, model))


def test_every_artifact_is_written(exported):
    result = exported["result"]
    export_dir = result["export_dir"]
    assert os.path.isfile(os.path.join(result["saved_model"], "saved_model.pb"))
    for key in ("keras", "tflite", "lce_tflite", "summary_json"):
        assert os.path.isfile(result[key]) and os.path.getsize(result[key]) > 0
    assert sorted(os.listdir(export_dir)) == sorted(export.ARTIFACTS)  # no staging directory left


def test_round_trips_are_identical(exported):
    report = exported["report"]
    assert report["saved_model"]["max_abs_diff"] <= ROUND_TRIP_ATOL
    assert report["keras"]["max_abs_diff"] <= ROUND_TRIP_ATOL


def test_float_tflite_matches_keras(exported):
    report = exported["report"]
    assert report["reference_max_abs"] > 1.0  # the comparison is not trivially small
    assert report["tflite"]["max_abs_diff"] <= CONVERTED_RTOL * report["reference_max_abs"]
    assert report["tflite"]["argmax_agreement"] == 1.0


def test_lce_model_has_binary_ops_and_matches_keras(exported):
    ops = exported["result"]["summary"]["lce_tflite_ops"]
    assert ops.get("LceBconv2d") == CELL_MODEL_BCONVS
    assert ops.get("LceQuantize", 0) >= CELL_MODEL_BCONVS
    assert ops.get("CONV_2D") == 1  # the float stem only
    assert "SIGN" not in ops
    with open(exported["result"]["lce_tflite"], "rb") as f:
        assert export.op_counts(f.read()) == ops
    report = exported["report"]
    assert report["lce_tflite"]["argmax_agreement"] == 1.0
    assert report["lce_tflite"]["max_abs_diff"] <= CONVERTED_RTOL * report["reference_max_abs"]


def test_summary_json_matches_summarize(exported):
    result = exported["result"]
    with open(result["summary_json"]) as f:
        saved = json.load(f)
    expected = summary.summarize(exported["model"])
    for key in ("params", "params_1bit", "params_32bit", "memory_float_bytes", "memory_binary_bytes",
                "macs_binary", "macs_float", "macs_binary_fraction"):
        assert saved[key] == expected[key], key
    assert saved["input_shape"] == list(INPUT_SHAPE)
    assert saved["tflite_bytes"] == os.path.getsize(result["tflite"])
    assert saved["lce_tflite_bytes"] == os.path.getsize(result["lce_tflite"])
    assert saved["lce_size_ratio"] == pytest.approx(saved["lce_tflite_bytes"] / saved["tflite_bytes"])
    assert saved["test_accuracy"] == 0.5
    assert saved == json.loads(json.dumps(result["summary"]))
    assert saved["lce_tflite_bytes"] < saved["tflite_bytes"] / 2


def test_one_bit_network_of_full_convolutions_is_below_an_eighth(tmp_path):
    # Three binary 3x3 convs, 64 -> 64 channels: the float model is almost all
    # kernels; the LCE model keeps the per-channel multiplier/bias, the float
    # stem and classifier, and the flatbuffer's op and tensor tables.
    options = dict(binarization="pcnn", binary_activations=True)
    inputs = keras.Input(INPUT_SHAPE)
    x = layers.batch_norm()(keras.layers.Conv2D(64, 3, padding="same", use_bias=False)(inputs))
    for i in range(3):
        x = layers.ReLUConvBN(64, 3, name=f"conv_{i}", **options)(x)
    outputs = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(x))
    model = _randomize(keras.Model(inputs, outputs))
    x = _sample_inputs(4)
    result = export.export(model, tmp_path / "wide", sample_inputs=x)
    figures = result["summary"]
    assert figures["lce_tflite_ops"]["LceBconv2d"] == 3
    assert figures["lce_size_ratio"] <= TARGET_LCE_RATIO, figures["lce_size_ratio"]
    report = export.verify(result["export_dir"], x, model)
    assert report["lce_tflite"]["argmax_agreement"] == 1.0


@keras.saving.register_keras_serializable(package="bnas_tf_export_test")
class _WithAuxiliary(keras.Model):
    """A subclassed network that returns (logits, aux) in training and inference."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.body = layers.BinarizedSepConv(8, 3, binarization="xnor", binary_activations=True, name="body")
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.classifier = keras.layers.Dense(4, name="classifier")
        self.auxiliary_head = keras.layers.Dense(3, name="auxiliary_head")

    def call(self, inputs, training=None):
        x = self.pool(self.body(inputs, training=training))
        return self.classifier(x), self.auxiliary_head(x)


def test_tuple_output_model_exports_its_logits(tmp_path):
    keras.utils.set_random_seed(SEED)
    model = _WithAuxiliary(name="with_auxiliary")
    x = _sample_inputs(4, (8, 8, 8))
    model(x)
    _randomize(model)
    result = export.export(model, tmp_path / "aux", sample_inputs=x)
    reloaded = keras.saving.load_model(result["keras"])
    assert isinstance(reloaded, network.InferenceModel)
    assert reloaded(x).shape == (4, 4)
    report = export.verify(result["export_dir"], x, model)
    for artifact in ("saved_model", "keras", "tflite", "lce_tflite"):
        assert report[artifact]["argmax_agreement"] == 1.0, artifact
    assert report["keras"]["max_abs_diff"] <= ROUND_TRIP_ATOL
    figures = result["summary"]
    assert figures["params"] == summary.summarize(model, (8, 8, 8))["params"]
    assert figures["params"] == model.count_params() - 2 * 8 * 2 - (8 * 3 + 3)  # BN statistics, aux head


# Every operation once, few binarized convolutions: export time grows with the
# number of layers traced (PC_DARTS at 3 cells took ~45 s), not with their width.
LIGHT_GENOTYPE = dict(
    normal=[("sep_conv_3x3", 1), ("skip_connect", 0), ("dil_conv_3x3", 0), ("avg_pool_3x3", 1),
            ("skip_connect", 2), ("max_pool_3x3", 1), ("skip_connect", 3), ("skip_connect", 2)],
    reduce=[("max_pool_3x3", 0), ("dil_conv_5x5", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("sep_conv_5x5", 3), ("skip_connect", 2), ("skip_connect", 4), ("avg_pool_3x3", 3)],
)


@pytest.mark.slow  # ~20 s on 2 cores
def test_build_network(tmp_path):
    network = pytest.importorskip("bnas_tf.network")
    from bnas_tf.genotypes import Genotype

    keras.utils.set_random_seed(SEED)
    model = network.build_network(
        Genotype(**LIGHT_GENOTYPE), num_classes=10, init_channels=4, layers=3, auxiliary=True,
        binarization="pcnn", binary_activations=True,
    )
    _randomize(model)
    x = _sample_inputs(4, (32, 32, 3))
    result = export.export(model, tmp_path / "net", sample_inputs=x, summary_extra={"search_cost_gpu_days": 0.094})
    figures = result["summary"]
    assert figures["params"] == network.count_params(model)  # auxiliary head excluded
    assert figures["lce_tflite_ops"]["LceBconv2d"] > 0
    assert figures["lce_model"] == "binary" and figures["lce_binary_convolutions"] == figures["lce_tflite_ops"][
        "LceBconv2d"]
    report = export.verify(result["export_dir"], x, model)
    assert report["saved_model"]["max_abs_diff"] <= ROUND_TRIP_ATOL
    assert report["keras"]["max_abs_diff"] <= ROUND_TRIP_ATOL
    assert report["tflite"]["argmax_agreement"] == 1.0
    assert report["lce_tflite"]["argmax_agreement"] == 1.0


def test_missing_parent_directory(tmp_path):
    model = _cell_model("pcnn", name="m")
    with pytest.raises(export.ExportError, match="parent directory .* does not exist"):
        export.export(model, tmp_path / "missing" / "out", sample_inputs=_sample_inputs(2))
    assert issubclass(export.ExportError, BnasError)


@keras.saving.register_keras_serializable(package="bnas_tf_export_test")
class _NotConvertible(keras.layers.Layer):
    def call(self, inputs):
        return tf.math.igamma(tf.abs(inputs) + 1.0, tf.abs(inputs) + 1.0)  # no TFLite kernel


def test_failed_conversion_writes_nothing(tmp_path):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, _NotConvertible()(inputs))
    export_dir = tmp_path / "bad"
    with pytest.raises(export.ExportError, match="float TFLite"):
        export.export(model, export_dir, sample_inputs=np.ones((2, 4), "float32"))
    assert os.listdir(export_dir) == []


def test_bad_arguments(tmp_path):
    model = _cell_model("xnor", name="m")
    with pytest.raises(ConfigError, match="summary_extra"):
        export.export(model, tmp_path / "a", sample_inputs=_sample_inputs(2), summary_extra={"params": 1})
    with pytest.raises(ConfigError, match="sample_inputs"):
        export.export(model, tmp_path / "b", sample_inputs=[1.0, 2.0])
    with pytest.raises(export.ExportError, match="no complete export"):
        export.verify(tmp_path, _sample_inputs(2), model)


def test_binary_weight_network_export_is_named_for_what_it_is(tmp_path, caplog):
    """W1A32 (binary weights, float activations): LCE packs no convolution, and the export says so
    instead of presenting the file as the binary model."""
    from bnas_tf import network
    from bnas_tf.genotypes import Genotype

    keras.utils.set_random_seed(SEED)
    model = _randomize(network.build_network(Genotype(**LIGHT_GENOTYPE), num_classes=10, init_channels=4, layers=3,
                                             auxiliary=False, binarization="pcnn"))
    with caplog.at_level("WARNING"):
        figures = export.export(model, tmp_path / "w1a32", sample_inputs=_sample_inputs(2, (32, 32, 3)))["summary"]
    assert figures["params_1bit"] > 0 and "LceBconv2d" not in figures["lce_tflite_ops"]
    assert figures["lce_binary_convolutions"] == 0 and figures["lce_model"] == "float kernels (W1A32)"
    assert figures["lce_size_ratio"] > 2 * figures["memory_ratio"]
    assert "no bit-packed convolution" in caplog.text
