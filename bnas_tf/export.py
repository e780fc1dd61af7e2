"""Export of a trained network for inference: SavedModel, .keras, TFLite, LCE.

`export(model, export_dir, sample_inputs=x)` writes

    export_dir/saved_model/      as Keras 3 `model.export(..., format="tf_saved_model")`,
                                 endpoint `serve` (and signature `serving_default`);
                                 inference only: custom gradients are not saved
    export_dir/model.keras       the Keras model (reload with `keras.saving.load_model`)
    export_dir/model.tflite      float TFLite (`tf.lite.TFLiteConverter.from_saved_model`)
    export_dir/model_lce.tflite  Larq Compute Engine (`convert_saved_model`): binary
                                 convolutions become bit-packed `LceBconv2d` ops, and
                                 binary depthwise kernels (which LCE keeps in float32)
                                 are stored as exact int8 (`bnas_tf.tflite_pack`)
    export_dir/summary.json      `bnas_tf.summary.summarize` of the model, the sizes of
                                 both TFLite files, their op counts, and `summary_extra`

The exported model is the inference network: `training=False`, no auxiliary
head. A model whose call returns a tuple `(logits, aux)` is exported through
`inference_model`, which keeps the first output only (a functional model is cut
down to the layers its first output needs; a subclassed model is wrapped in
`InferenceModel`, which calls it with `training=False` and returns `outputs[0]`).

Everything is written to a hidden staging directory inside `export_dir` first
and moved into place only when every artifact is complete, `summary.json` last:
a directory with a `summary.json` holds a complete export. A failed export
leaves `export_dir` as it was (an older `summary.json` is removed before the
new artifacts move in).

`verify(export_dir, sample_inputs, keras_model)` runs the four artifacts on the
same inputs and compares them with the Keras model.
"""

import json
import os
import shutil
import tempfile
import warnings

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from bnas_tf import network as network_lib
from bnas_tf import summary as summary_lib
from bnas_tf import tflite_pack
from bnas_tf.errors import BnasError, ConfigError

SAVED_MODEL = "saved_model"
KERAS_FILE = "model.keras"
TFLITE_FILE = "model.tflite"
LCE_FILE = "model_lce.tflite"
SUMMARY_FILE = "summary.json"
ARTIFACTS = (SAVED_MODEL, KERAS_FILE, TFLITE_FILE, LCE_FILE, SUMMARY_FILE)
_STAGING_PREFIX = ".export-staging-"


class ExportError(BnasError):
    """The model could not be exported (bad directory, a conversion failed)."""


def _first(outputs):
    return outputs[0] if isinstance(outputs, (tuple, list)) else outputs


def _check_sample_inputs(sample_inputs):
    if isinstance(sample_inputs, (tf.Tensor, tf.Variable)):
        sample_inputs = sample_inputs.numpy()
    if not isinstance(sample_inputs, np.ndarray) or sample_inputs.ndim < 2 or sample_inputs.shape[0] < 1:
        raise ConfigError(
            "Invalid `sample_inputs`: expected a NumPy array with a batch dimension and at least one example. "
            f"Received: sample_inputs={type(sample_inputs).__name__} of shape {getattr(sample_inputs, 'shape', None)}"
        )
    if sample_inputs.dtype == np.float64:
        sample_inputs = sample_inputs.astype(np.float32)
    return sample_inputs


def inference_model(model, sample_inputs):
    """`network.inference_model(model)`, built on `sample_inputs` (checked)."""
    return network_lib.inference_model(model, _check_sample_inputs(sample_inputs))


def op_counts(tflite_model):
    """{op name: count} over every subgraph of a TFLite flatbuffer (bytes).

    Builtin ops by their schema name (`CONV_2D`), custom ops by their custom
    code (`LceBconv2d`, `LceQuantize`, ...).
    """
    from larq_compute_engine.mlir.python import tflite_schema

    builtin_names = {
        value: name for name, value in vars(tflite_schema.BuiltinOperator).items() if not name.startswith("_")
    }
    model = tflite_schema.Model.GetRootAsModel(tflite_model, 0)
    names = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        custom = code.CustomCode()
        if custom:
            names.append(custom.decode())
        else:
            # Codes above 127 live only in BuiltinCode; older files only fill the deprecated field.
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            names.append(builtin_names.get(builtin, f"BUILTIN_{builtin}"))
    counts = {}
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        for j in range(subgraph.OperatorsLength()):
            name = names[subgraph.Operators(j).OpcodeIndex()]
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def _prepare_dir(export_dir):
    export_dir = os.path.abspath(os.fspath(export_dir))
    parent = os.path.dirname(export_dir)
    if not os.path.isdir(parent):
        raise ExportError(
            f"Cannot export to {export_dir}: its parent directory {parent} does not exist. "
            f"Create it first or choose another directory. Received: export_dir={export_dir!r}"
        )
    if os.path.exists(export_dir) and not os.path.isdir(export_dir):
        raise ExportError(
            f"Cannot export to {export_dir}: it is a file, not a directory. Received: export_dir={export_dir!r}"
        )
    os.makedirs(export_dir, exist_ok=True)
    return export_dir


def _stage(what, fn):
    try:
        return fn()
    except BnasError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure of a converter is reported the same way
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        # TF errors open with "in user code:" and end with the cause; converters open with it.
        detail = " ... ".join(dict.fromkeys(lines[:1] + lines[-1:])) or "no message"
        raise ExportError(
            f"Export failed while {what}: {type(err).__name__}: {detail[:2000]}. Nothing was written to the "
            "export directory. Layers must be serializable for .keras and use ops that TFLite supports."
        ) from err


def _publish(staging, export_dir):
    """Moves the staged artifacts into `export_dir`, `summary.json` last."""
    marker = os.path.join(export_dir, SUMMARY_FILE)
    if os.path.exists(marker):
        os.remove(marker)
    for name in ARTIFACTS:
        target = os.path.join(export_dir, name)
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target)
        elif os.path.lexists(target):
            os.remove(target)
        os.replace(os.path.join(staging, name), target)


def _json_default(value):
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"summary_extra values must be JSON-serializable. Received: {value!r}")


def export(model, export_dir, *, sample_inputs, summary_extra=None):
    """Writes the SavedModel, .keras, float TFLite, LCE TFLite and summary.json.

    Args:
        model: the trained Keras model; a call that returns `(logits, aux)`
            is exported as its logits (see `inference_model`).
        export_dir: the directory to write; its parent must exist. Existing
            artifacts of the same names are replaced.
        sample_inputs: a NumPy batch of inputs; its shape without the batch
            dimension and dtype make the input signature (batch size left
            free) and the summary's input shape.
        summary_extra: a dict of extra figures for summary.json and the log
            table, e.g. {"test_accuracy": 0.96, "search_cost_gpu_days": 0.09}.

    Returns:
        A dict: `export_dir`, the path of each artifact (`saved_model`,
        `keras`, `tflite`, `lce_tflite`, `summary_json`) and `summary`, the
        content of summary.json.

    Raises:
        ExportError: the parent of `export_dir` does not exist, or saving or
            a conversion failed (the message names the step).
    """
    sample_inputs = _check_sample_inputs(sample_inputs)
    extra = dict(summary_extra or {})
    export_dir = _prepare_dir(export_dir)
    network = _stage("building the inference model", lambda: inference_model(model, sample_inputs))
    # The summary reads the network itself (the root is never excluded by name).
    counted = network.network if isinstance(network, network_lib.InferenceModel) else network
    figures = _stage("counting parameters and MACs", lambda: summary_lib.summarize(counted, sample_inputs.shape[1:]))
    clashes = sorted(set(extra) & (set(figures) | {"tflite_bytes", "lce_tflite_bytes", "lce_size_ratio"}))
    if clashes:
        raise ConfigError(f"`summary_extra` may not redefine summary figures. Received: keys {clashes}")

    staging = tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=export_dir)
    try:
        staged = {name: os.path.join(staging, name) for name in ARTIFACTS}
        signature = [tf.TensorSpec((None,) + sample_inputs.shape[1:], tf.as_dtype(sample_inputs.dtype), name="inputs")]
        _stage("writing the SavedModel", lambda: _write_saved_model(network, staged[SAVED_MODEL], signature))
        _stage("saving model.keras", lambda: network.save(staged[KERAS_FILE]))
        tflite = _stage(
            "converting to float TFLite",
            lambda: tf.lite.TFLiteConverter.from_saved_model(staged[SAVED_MODEL]).convert(),
        )
        lce_tflite = _stage("converting with Larq Compute Engine", lambda: _lce_convert(staged[SAVED_MODEL]))
        for name, content in ((TFLITE_FILE, tflite), (LCE_FILE, lce_tflite)):
            with open(staged[name], "wb") as f:
                f.write(content)
        figures.update(
            tflite_bytes=len(tflite),
            lce_tflite_bytes=len(lce_tflite),
            lce_size_ratio=len(lce_tflite) / len(tflite),
            tflite_ops=op_counts(tflite),
            lce_tflite_ops=op_counts(lce_tflite),
            files={"saved_model": SAVED_MODEL, "keras": KERAS_FILE, "tflite": TFLITE_FILE, "lce_tflite": LCE_FILE},
        )
        figures.update(_lce_kind(figures))
        figures.update(extra)
        with open(staged[SUMMARY_FILE], "w") as f:
            json.dump(figures, f, indent=2, default=_json_default)
        _publish(staging, export_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    logging.info("Exported %s to %s\n%s", network.name, export_dir, summary_lib.format_table(figures, extra=extra))
    return {
        "export_dir": export_dir,
        "saved_model": os.path.join(export_dir, SAVED_MODEL),
        "keras": os.path.join(export_dir, KERAS_FILE),
        "tflite": os.path.join(export_dir, TFLITE_FILE),
        "lce_tflite": os.path.join(export_dir, LCE_FILE),
        "summary_json": os.path.join(export_dir, SUMMARY_FILE),
        "summary": figures,
    }


def _lce_kind(figures):
    """What the LCE file is: ``lce_binary_convolutions`` (its bit-packed ``LceBconv2d`` ops) and
    ``lce_model``, "binary" or "float kernels (W1A32)".

    Larq Compute Engine bit-packs a convolution only when its input is binary
    too: a network with binary weights and float activations (W1A32, the
    paper's BNAS and the demo) keeps its +-A_hat kernels in float32 in the LCE
    file, whose size is then close to the float file's, not `memory_ratio`
    (what 1-bit kernel storage would give). The export says so rather than
    call the file binary.
    """
    bconvs = int(figures["lce_tflite_ops"].get("LceBconv2d", 0))
    if bconvs or not figures.get("params_1bit"):
        return {"lce_binary_convolutions": bconvs, "lce_model": "binary" if bconvs else "float"}
    logging.warning(
        "The LCE model has no bit-packed convolution: Larq Compute Engine packs a convolution only when its "
        "input is binary too (binary activations). This network's %d binarized kernel weights are stored in "
        "float32 there (size ratio %.2f of the float file, against %.2f with 1-bit storage).",
        figures["params_1bit"], figures["lce_size_ratio"], figures["memory_ratio"])
    return {"lce_binary_convolutions": 0, "lce_model": "float kernels (W1A32)"}


def _write_saved_model(network, path, signature):
    """`network.export(path, format="tf_saved_model")`, without custom gradients.

    This is what `Model.export` does (`keras.export.ExportArchive`, endpoint
    `serve`, signature `serving_default`), with one `SaveOptions` change:
    the straight-through gradients of the sign functions are not saved.
    The SavedModel is for inference (train from model.keras); saving every
    `custom_gradient` as a function doubled the export time of a 1-bit
    network. Loading it logs "Importing a function ... with ops with unsaved
    custom gradients": expected.
    """
    archive = keras.export.ExportArchive()
    archive.track_and_add_endpoint("serve", network, signature)
    archive.write_out(path, options=tf.saved_model.SaveOptions(experimental_custom_gradients=False), verbose=False)


def _lce_convert(saved_model_dir):
    """LCE's flatbuffer, its binary depthwise kernels packed to int8 (exact; `tflite_pack`)."""
    import larq_compute_engine as lce

    flatbuffer, packed = tflite_pack.pack_binary_depthwise(lce.convert_saved_model(saved_model_dir))
    if packed:
        logging.info("LCE model: %d binary depthwise kernels stored as int8 (exact).", packed)
    return flatbuffer


def _tflite_interpreter(model_path):
    """tf.lite.Interpreter on the builtin kernels, without the XNNPACK delegate.

    A binarized depthwise convolution on sign inputs sums +-A terms; with
    zero padding an even number of them often cancels to exactly 0 in
    TensorFlow. XNNPACK (the default delegate) sums in another order and
    gets +-1e-8 there, the next sign flips, and a 1-bit network's outputs
    differ by O(1). The builtin kernels sum as TensorFlow does.
    """
    with warnings.catch_warnings():
        # "tf.lite.Interpreter is deprecated ... use ai_edge_litert": that
        # package is not a dependency; the interpreter still works in TF 2.21.
        warnings.filterwarnings("ignore", message=r".*tf\.lite\.Interpreter is deprecated")
        return tf.lite.Interpreter(
            model_path=model_path,
            experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )


def _run_tflite(model_path, inputs):
    interpreter = _tflite_interpreter(model_path)
    runner = interpreter.get_signature_runner()
    (input_name,) = interpreter.get_signature_list()["serving_default"]["inputs"]
    outputs = runner(**{input_name: inputs})
    return _single_output(outputs)


def _single_output(outputs):
    if isinstance(outputs, dict):
        if len(outputs) != 1:
            raise ExportError(f"Expected a model with one output. Received: outputs {sorted(outputs)}")
        outputs = next(iter(outputs.values()))
    return np.asarray(outputs)


def _run_lce(model_path, inputs):
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    with open(model_path, "rb") as f:
        interpreter = Interpreter(f.read())
    return np.asarray(interpreter.predict(inputs))


def _compare(outputs, reference):
    outputs = np.asarray(outputs, dtype=np.float64).reshape(reference.shape)
    result = {"max_abs_diff": float(np.max(np.abs(outputs - reference)))}
    if reference.ndim >= 2:
        result["argmax_agreement"] = float(np.mean(np.argmax(outputs, -1) == np.argmax(reference, -1)))
    return result


def verify(export_dir, sample_inputs, keras_model):
    """Runs every artifact of `export_dir` on `sample_inputs` and compares with Keras.

    The reference is `keras_model(sample_inputs, training=False)` (its first
    output if it returns a tuple). The SavedModel runs through
    `tf.saved_model.load(...).serve`, the .keras file through
    `keras.saving.load_model`, the float TFLite through `tf.lite.Interpreter`
    on the builtin kernels (see `_tflite_interpreter` for why not XNNPACK),
    the LCE model through LCE's interpreter (reference kernels on x86, one
    example at a time).

    Returns:
        {"reference_max_abs": max |reference|, "saved_model" | "keras" |
        "tflite" | "lce_tflite": {"max_abs_diff": ..., "argmax_agreement": ...}}
    """
    export_dir = os.fspath(export_dir)
    if not os.path.isfile(os.path.join(export_dir, SUMMARY_FILE)):
        raise ExportError(
            f"{export_dir} holds no complete export (no {SUMMARY_FILE}); run `export` first. "
            f"Received: export_dir={export_dir!r}"
        )
    x = _check_sample_inputs(sample_inputs)
    reference = np.asarray(_first(keras_model(x, training=False)), dtype=np.float64)

    loaded = tf.saved_model.load(os.path.join(export_dir, SAVED_MODEL))
    saved_model_out = _single_output(loaded.serve(tf.constant(x)))
    reloaded = keras.saving.load_model(os.path.join(export_dir, KERAS_FILE))
    keras_out = np.asarray(_first(reloaded(x, training=False)))
    report = {
        "reference_max_abs": float(np.max(np.abs(reference))),
        "saved_model": _compare(saved_model_out, reference),
        "keras": _compare(keras_out, reference),
        "tflite": _compare(_run_tflite(os.path.join(export_dir, TFLITE_FILE), x), reference),
        "lce_tflite": _compare(_run_lce(os.path.join(export_dir, LCE_FILE), x), reference),
    }
    logging.info(
        "Export check against Keras (max |logit| %.4g): %s",
        report["reference_max_abs"],
        ", ".join(f"{k} max|diff| {v['max_abs_diff']:.3g} argmax {v.get('argmax_agreement', 1.0):.3f}"
                  for k, v in report.items() if isinstance(v, dict)),
    )
    return report
