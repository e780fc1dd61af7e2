"""Model summary of a binarized network: 1-bit and 32-bit parameters, memory, MACs.

In the spirit of `larq.models.summary` (Larq is Keras 2 and does not import
under Keras 3), but as a dict first, so that the export can store it as JSON,
and a text table second.

Definitions (the inference network only: layers whose name contains one of
the `exclude` patterns, by default the auxiliary head, are left out with all
their sublayers):

- ``params``: trainable parameters. BatchNorm moving statistics are not
  counted (at inference they fold into the BatchNorm scale and shift, which
  are); ``params_non_trainable`` reports them.
- ``params_1bit``: kernel elements of binarized convolutions
  (``kernel_precision == 1``, i.e. ``binarization`` is ``"xnor"`` or
  ``"pcnn"``). The PCNN amplitude matrix A is a trainable 32-bit weight; the
  XNOR scale is computed from the kernel and is not a parameter (at inference
  it is a per-filter constant that folds into the BatchNorm).
- ``params_32bit``: ``params - params_1bit``: BatchNorm, PReLU, amplitudes,
  full-precision convolutions, the classifier.
- ``memory_float_bytes = 4 * params`` (every parameter at 32 bits).
- ``memory_binary_bytes = ceil(params_1bit / 8) + 4 * params_32bit`` (1-bit
  parameters bit-packed, the rest at 32 bits, as Larq's summary counts it).
- MACs (multiply-accumulates) of convolutions and dense layers for one
  example: ``prod(output spatial dims) * kernel.size`` (Conv, DepthwiseConv,
  Dense; padded positions included, as usual). Pooling, BatchNorm, PReLU and
  additions are not MACs. A MAC is *binary* when both the kernel and the
  input of the layer are 1 bit (``kernel_precision == 1`` and an input
  quantizer with ``precision == 1``): an XNOR-popcount. A binarized kernel on
  a float input is a float MAC (a multiplication by +-A).
  ``macs_binary_depthwise`` is the part of ``macs_binary`` done by depthwise
  convolutions: Larq Compute Engine has no binary depthwise op, so it runs
  those in float.
- ``macs_binary_fraction = macs_binary / (macs_binary + macs_float)``.

The output sizes the MACs need come from one forward pass (batch 1, zeros,
``training=False``) with each conv and dense layer's ``call`` recorded.

`summary(model)` prints the per-layer table of `larq.models.summary`
instead (one row per top-level layer: input bits, output shape, parameters
per precision, memory), counting parameters as Larq does, so that its totals
are Larq's for the same model: every weight, BatchNorm as 2 per channel
(moving statistics included), a kernel at its quantizer's precision (a
`bnas_tf.quant` layer) or at `kernel_precision` (`bnas_tf.layers`).
"""

import math

import keras
import numpy as np

from bnas_tf.errors import ConfigError

DEFAULT_EXCLUDE = ("auxiliary",)
FLOAT_BYTES = 4

_SUMMARY_ROWS = (
    ("params", "Parameters (trainable)"),
    ("params_1bit", "  1-bit (binarized kernels)"),
    ("params_32bit", "  32-bit"),
    ("params_non_trainable", "Non-trainable (BN statistics)"),
    ("memory_float_bytes", "Memory, all 32-bit"),
    ("memory_binary_bytes", "Memory, 1-bit packed"),
    ("memory_ratio", "  binary / float"),
    ("macs_binary", "MACs binary (per example)"),
    ("macs_binary_depthwise", "  of which depthwise"),
    ("macs_float", "MACs float (per example)"),
    ("macs_binary_fraction", "  binary fraction"),
)


def _precision(obj, default=32):
    precision = getattr(obj, "precision", None)
    return default if precision is None else int(precision)


def _is_binary_mac(layer):
    """Both the kernel and the input of `layer` are 1 bit."""
    return getattr(layer, "kernel_precision", 32) == 1 and _precision(getattr(layer, "input_quantizer", None)) == 1


def _sublayers(layer):
    # Keras 3 has no public accessor for the direct children of a Layer.
    return list(layer._flatten_layers(include_self=False, recursive=False))


def _excluded(layer, exclude):
    return any(pattern in layer.name for pattern in exclude)


def _included_layers(model, exclude):
    """Every layer under `model` (itself included), depth first, minus excluded subtrees."""
    found, stack, seen = [], [model], set()
    while stack:
        layer = stack.pop()
        if id(layer) in seen or (layer is not model and _excluded(layer, exclude)):
            continue
        seen.add(id(layer))
        found.append(layer)
        stack.extend(reversed(_sublayers(layer)))
    return found


_TRANSPOSED = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)
_MAC_KINDS = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
    keras.layers.Dense,
) + _TRANSPOSED


def _mac_layers(layers):
    return [layer for layer in layers if isinstance(layer, _MAC_KINDS)]


def _kernel_size(layer):
    if isinstance(layer, keras.layers.SeparableConv2D):
        return int(np.prod(layer.depthwise_kernel.shape)) + int(np.prod(layer.pointwise_kernel.shape))
    return int(np.prod(layer.kernel.shape))


def _macs(layer, input_shape, output_shape):
    """MACs of one example: positions the kernel is applied at, times kernel.size."""
    shape = input_shape if isinstance(layer, _TRANSPOSED) else output_shape
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        positions = shape[2:]
    else:
        positions = shape[1:-1]
    return int(np.prod(positions, dtype=np.int64)) * _kernel_size(layer)


def _record_shapes(model, layers, input_shape, dtype):
    """{id(layer): (input_shape, output_shape)} from one eager forward pass."""
    shapes = {}

    def wrap(layer):
        original = layer.call

        def call(inputs, *args, **kwargs):
            outputs = original(inputs, *args, **kwargs)
            shapes[id(layer)] = (tuple(inputs.shape), tuple(outputs.shape))
            return outputs

        return call

    # An instance attribute shadows the class's `call` for the duration of the
    # pass; `object.__setattr__` keeps Keras's attribute tracking out of it.
    for layer in layers:
        object.__setattr__(layer, "call", wrap(layer))
    try:
        model(np.zeros((1,) + tuple(input_shape), dtype=dtype), training=False)
    finally:
        for layer in layers:
            object.__delattr__(layer, "call")
    return shapes


def _input_shape_and_dtype(model, input_shape):
    inputs = getattr(model, "inputs", None)
    dtype = "float32"
    if inputs:
        if len(inputs) != 1:
            raise ConfigError(f"summarize() supports models with one input. Received: {len(inputs)} inputs")
        dtype = inputs[0].dtype
        if input_shape is None:
            input_shape = tuple(inputs[0].shape[1:])
    if input_shape is None or any(d is None for d in input_shape):
        raise ConfigError(
            "summarize() needs the input shape without the batch dimension, every size known "
            f"(e.g. input_shape=(32, 32, 3)). Received: input_shape={input_shape!r}"
        )
    return tuple(int(d) for d in input_shape), dtype


def summarize(model, input_shape=None, *, exclude=DEFAULT_EXCLUDE):
    """Counts the 1-bit and 32-bit parameters, memory and MACs of `model`.

    Args:
        model: a built Keras model (or layer); if it returns a tuple, only the
            layers that run in `model(x, training=False)` count towards MACs.
        input_shape: the input shape without the batch dimension; defaults to
            the functional model's input shape.
        exclude: substrings of layer names whose layers (and sublayers) are
            left out, by default the auxiliary head. `model` itself is never
            left out, whatever its name.

    Returns:
        A dict with the figures described in the module docstring, the
        `input_shape` used, and `layers`: one row per layer that owns
        parameters or computes MACs (name, class, params_1bit, params_32bit,
        macs_binary, macs_float, output_shape).
    """
    exclude = tuple(exclude or ())
    input_shape, dtype = _input_shape_and_dtype(model, input_shape)
    layers = _included_layers(model, exclude)
    mac_layers = _mac_layers(layers)
    shapes = _record_shapes(model, mac_layers, input_shape, dtype)

    excluded_vars = set()
    for layer in _all_layers(model):
        if layer is not model and _excluded(layer, exclude):
            excluded_vars.update(id(v) for v in layer.weights)

    # Each variable belongs to the deepest included layer that holds it.
    owner = {}
    for layer in layers:  # depth first: children come after their parents
        for variable in layer.weights:
            if id(variable) not in excluded_vars:
                owner[id(variable)] = (layer, variable)

    one_bit_kernels = {key for key, bits in weight_bits(model).items() if bits == 1}
    rows = {}
    totals = dict(params=0, params_1bit=0, params_non_trainable=0, macs_binary=0, macs_binary_depthwise=0, macs_float=0)
    for layer, variable in owner.values():
        size = int(np.prod(variable.shape, dtype=np.int64))
        row = rows.setdefault(id(layer), _row(layer))
        if not variable.trainable:
            totals["params_non_trainable"] += size
            continue
        totals["params"] += size
        if id(variable) in one_bit_kernels:
            totals["params_1bit"] += size
            row["params_1bit"] += size
        else:
            row["params_32bit"] += size
    for layer in mac_layers:
        if id(layer) not in shapes:
            continue  # did not run at inference
        layer_in, layer_out = shapes[id(layer)]
        macs = _macs(layer, layer_in, layer_out)
        row = rows.setdefault(id(layer), _row(layer))
        row["output_shape"] = list(layer_out[1:])
        if _is_binary_mac(layer):
            totals["macs_binary"] += macs
            row["macs_binary"] += macs
            if isinstance(layer, keras.layers.DepthwiseConv2D):
                totals["macs_binary_depthwise"] += macs
        else:
            totals["macs_float"] += macs
            row["macs_float"] += macs

    params_32bit = totals["params"] - totals["params_1bit"]
    memory_float = FLOAT_BYTES * totals["params"]
    memory_binary = math.ceil(totals["params_1bit"] / 8) + FLOAT_BYTES * params_32bit
    macs_total = totals["macs_binary"] + totals["macs_float"]
    order = {id(layer): i for i, layer in enumerate(layers)}
    return {
        "name": model.name,
        "input_shape": list(input_shape),
        "params": totals["params"],
        "params_1bit": totals["params_1bit"],
        "params_32bit": params_32bit,
        "params_non_trainable": totals["params_non_trainable"],
        "memory_float_bytes": memory_float,
        "memory_binary_bytes": memory_binary,
        "memory_ratio": memory_binary / memory_float if memory_float else 1.0,
        "macs_binary": totals["macs_binary"],
        "macs_binary_depthwise": totals["macs_binary_depthwise"],
        "macs_float": totals["macs_float"],
        "macs_binary_fraction": totals["macs_binary"] / macs_total if macs_total else 0.0,
        "exclude": list(exclude),
        "layers": [rows[key] for key in sorted(rows, key=order.get) if _row_counts(rows[key])],
    }


def _all_layers(model):
    return [model] + list(model._flatten_layers(include_self=False, recursive=True))


def weight_bits(model):
    """{id(variable): bits} of every quantized kernel under `model` (itself included).

    A `bnas_tf.quant` layer reports each kernel with its quantizer's
    precision (`kernel_precisions`); a `bnas_tf.layers` binarized
    convolution reports its kernel with `kernel_precision` (1 unless
    ``binarization="none"``). Every other variable is 32-bit.
    """
    bits = {}
    for layer in _all_layers(model):
        if not layer.built:
            continue
        if callable(getattr(layer, "kernel_precisions", None)):
            bits.update((id(variable), int(b)) for variable, b in layer.kernel_precisions())
        elif getattr(layer, "kernel_precision", None) is not None and hasattr(layer, "kernel"):
            bits[id(layer.kernel)] = int(layer.kernel_precision)
    return bits


def _row(layer):
    return {
        "name": layer.path if hasattr(layer, "path") else layer.name,
        "class": type(layer).__name__,
        "params_1bit": 0,
        "params_32bit": 0,
        "macs_binary": 0,
        "macs_float": 0,
        "output_shape": None,
    }


def _row_counts(row):
    return row["params_1bit"] or row["params_32bit"] or row["macs_binary"] or row["macs_float"]


def _human_bytes(n):
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def _format_value(key, value):
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, (int, np.integer)):
        text = f"{int(value):,}"
        if key.endswith("_bytes"):
            text += f" ({_human_bytes(int(value))})"
        return text
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}"
    return str(value)


def format_table(summary, extra=None):
    """A text table of `summarize`'s totals, then the `extra` rows (name -> value).

    `extra` holds figures such as the test accuracy or the search cost; a
    value is printed as given (floats with 4 significant digits).
    """
    rows = [(label, _format_value(key, summary[key])) for key, label in _SUMMARY_ROWS if key in summary]
    for key in ("tflite_bytes", "lce_tflite_bytes", "lce_size_ratio", "lce_model", "lce_binary_convolutions"):
        if key in summary:
            rows.append((key, _format_value(key, summary[key])))
    rows.extend((str(key), _format_value(str(key), value)) for key, value in (extra or {}).items())
    title = f"Model summary: {summary.get('name', '')}".rstrip(": ")
    width_l = max([len(label) for label, _ in rows] + [len(title)])
    width_r = max([len(value) for _, value in rows] + [1])
    rule = "+" + "-" * (width_l + 2) + "+" + "-" * (width_r + 2) + "+"
    lines = [rule, f"| {title:<{width_l + width_r + 3}} |", rule]
    lines += [f"| {label:<{width_l}} | {value:>{width_r}} |" for label, value in rows]
    lines.append(rule)
    return "\n".join(lines)


# --------------------------------------------------------------------------
# The printed per-layer table (larq.models.summary)
# --------------------------------------------------------------------------

MAX_WIDTH = 100


def _bn_layers(layer):
    return [sub for sub in _all_layers(layer) if isinstance(sub, keras.layers.BatchNormalization)]


def _layer_params(layer, bits):
    """{bits: count} of the parameters of `layer` and its sublayers, counted as Larq counts them.

    Every weight counts (trainable or not) at its precision from `bits`
    (32 by default); a BatchNormalization counts 2 per channel whatever its
    `center`/`scale`, the scale and shift it folds into at inference.
    """
    counts = {}
    skip = set()
    for bn in _bn_layers(layer):
        if bn.built:
            skip.update(id(v) for v in bn.weights)
            counts[32] = counts.get(32, 0) + 2 * int(np.prod(bn.moving_mean.shape))
    for variable in layer.weights:
        if id(variable) not in skip:
            b = bits.get(id(variable), 32)
            counts[b] = counts.get(b, 0) + int(np.prod(variable.shape, dtype=np.int64))
    return counts


def _output_shape(layer):
    """The layer's symbolic output shape without the batch dimension, e.g. "(13, 13, 32)";
    "?" when it has none (subclassed models) and "multiple" for a layer called more than once."""
    try:
        output = layer.output
    except (AttributeError, ValueError, RuntimeError) as err:
        return "multiple" if "multiple" in str(err) else "?"
    shapes = [tuple(t.shape)[1:] for t in keras.tree.flatten(output)]
    text = ", ".join(str(tuple(shape)) for shape in shapes)
    return text if len(shapes) == 1 else f"[{text}]"


def _input_bits(layer):
    quantizer = getattr(layer, "input_quantizer", None)
    precision = getattr(quantizer, "precision", None)
    return "-" if precision is None else str(int(precision))


def _top_layers(model):
    layers = getattr(model, "layers", None)
    return list(layers) if layers is not None else _sublayers(model)


def profile(model):
    """The figures `summary` prints: one row per top-level layer, and the totals.

    Returns a dict: ``bits`` (the precisions present, ascending), ``layers``
    (name, class, input_bits, output_shape without the batch dimension, params {bits: count},
    memory_bits), ``params`` {bits: count}, ``memory_bits`` (sum of
    bits x count: the model with its quantized weights packed),
    ``float32_bits`` (every parameter at 32 bits), and Keras's own
    ``trainable`` / ``non_trainable`` weight counts.
    """
    if not model.built:
        raise ConfigError(
            "summary() needs a built model: call it on data, build() it or give its first layer an input shape. "
            f"Received: model={model.name!r} (not built)"
        )
    bits = weight_bits(model)
    rows = []
    for layer in _top_layers(model):
        params = _layer_params(layer, bits)
        rows.append({
            "name": layer.name,
            "class": type(layer).__name__,
            "input_bits": _input_bits(layer),
            "output_shape": _output_shape(layer),
            "params": params,
            "memory_bits": sum(b * n for b, n in params.items()),
        })
    totals = {}
    for row in rows:
        for b, n in row["params"].items():
            totals[b] = totals.get(b, 0) + n
    return {
        "name": model.name,
        "bits": sorted(set(totals) | {1, 32}),
        "layers": rows,
        "params": totals,
        "memory_bits": sum(row["memory_bits"] for row in rows),
        "float32_bits": 32 * sum(totals.values()),
        "trainable": sum(int(np.prod(v.shape, dtype=np.int64)) for v in model.trainable_weights),
        "non_trainable": sum(int(np.prod(v.shape, dtype=np.int64)) for v in model.non_trainable_weights),
    }


def _fit(text, width):
    return text if len(text) <= width else text[: max(width - 3, 1)] + "..."


def _kib(memory_bits):
    return memory_bits / 8 / 1024


def _layers_table(prof):
    """The per-layer table as lines, at most MAX_WIDTH characters wide."""
    header = ["Layer (type)", "In bits", "Output shape"] + [f"# {b}-bit" for b in prof["bits"]] + ["Memory kB"]
    body = [
        [f"{row['name']} ({row['class']})", row["input_bits"], row["output_shape"]]
        + [f"{row['params'].get(b, 0):,}" for b in prof["bits"]]
        + [f"{_kib(row['memory_bits']):.2f}"]
        for row in prof["layers"]
    ]
    total = ["Total", "", ""] + [f"{prof['params'].get(b, 0):,}" for b in prof["bits"]]
    total.append(f"{_kib(prof['memory_bits']):.2f}")
    widths = [max(len(r[i]) for r in [header, total] + body) for i in range(len(header))]
    # Columns are separated by two spaces inside "| ... |"; the names give way first, then the shapes.
    overflow = sum(widths) + 2 * (len(widths) - 1) + 4 - MAX_WIDTH
    for column, least in ((0, 24), (2, 12)):
        if overflow > 0:
            cut = min(overflow, max(widths[column] - least, 0))
            widths[column] -= cut
            overflow -= cut

    def line(cells):
        texts = [_fit(c, w).ljust(w) if i == 0 else _fit(c, w).rjust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "| " + "  ".join(texts) + " |"

    inner = sum(widths) + 2 * (len(widths) - 1) + 2
    rule = "+" + "-" * inner + "+"
    title = f"+{_fit(' ' + prof['name'] + ' layers ', inner):-^{inner}}+"
    return [title, line(header), rule] + [line(r) for r in body] + [rule, line(total), rule]


def _totals_box(prof):
    total = sum(prof["params"].values())
    size = prof["memory_bits"]
    by_bits = ", ".join(f"{b}-bit {prof['params'].get(b, 0):,}" for b in prof["bits"])
    rows = [
        ("Total params", f"{total:,}"),
        ("  by precision", by_bits),
        ("Keras weights: trainable", f"{prof['trainable']:,}"),
        ("Keras weights: non-trainable", f"{prof['non_trainable']:,}"),
        ("Model size, quantized weights packed", f"{_kib(size):,.2f} KiB"),
        ("Model size, all float32", f"{_kib(prof['float32_bits']):,.2f} KiB"),
        ("Float32 / packed", f"{prof['float32_bits'] / size:.2f}x" if size else "-"),
    ]
    left = max(len(label) for label, _ in rows)
    right = min(max(len(value) for _, value in rows), MAX_WIDTH - left - 7)
    inner = left + right + 4
    title = f"+{_fit(' ' + prof['name'] + ' summary ', inner):-^{inner}}+"
    lines = [title] + [f"| {label.ljust(left)}  {_fit(value, right).rjust(right)} |" for label, value in rows]
    return lines + ["+" + "-" * inner + "+"]


def summary(model, print_fn=print):
    """Prints a per-layer table of `model` and its totals, in the spirit of `larq.models.summary`.

    One row per top-level layer (a nested block or model is one row with
    everything under it): name and type, the input quantizer's bits ("-"
    for none), the output shape (without the batch dimension), the number of parameters at each precision
    present (1-bit and 32-bit at least), and its memory in kB (1 kB = 8 x 1024
    bits: a 1-bit weight takes 1 bit, a 32-bit one 32). A weight is 1-bit
    when its layer quantizes it to 1 bit: a `bnas_tf.quant` layer's kernel
    with a 1-bit quantizer, or a `bnas_tf.layers` binarized convolution's
    kernel (``binarization`` other than ``"none"``). Parameters are counted as
    Larq counts them (see `_layer_params`: BatchNorm 2 per channel), so the
    totals equal `larq.models.summary`'s for the same model. The box below
    gives the model size with the quantized weights packed and in float32.
    MACs are in `summarize`. Every line is at most 100 characters wide.

    Args:
        model: a built Keras model (or layer).
        print_fn: called with each line.

    Returns:
        `profile(model)`, the figures printed.
    """
    prof = profile(model)
    for text in _layers_table(prof) + _totals_box(prof):
        print_fn(text)
    return prof
