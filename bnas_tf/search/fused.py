"""Edges that read the same input run as one wide operation.

In a cell of the supernet every edge leaving a node applies the same
candidate operations to the same tensor: PC-DARTS feeds each edge the first
C/c channels of its source node (Eq. 6), and the source is shared by the 4,
4, 3, 2 and 1 edges leaving nodes 0 to 4. `FusedOps` runs operation k of E
such edges as one operation over E times the channels, each edge with its
own weights:

- a depthwise convolution on the shared input becomes one depthwise
  convolution with channel multiplier E (kernels stacked), and on E
  different inputs one depthwise convolution over E x C channels;
- a 1 x 1 convolution on the shared input becomes one convolution to E x C'
  channels, and on E different inputs one with a block-diagonal kernel
  (edge e's kernel in block e, zeros elsewhere, so the outputs do not mix);
- ReLU, the sign of binary activations, PReLU, pooling and BatchNorm act
  per channel, so they apply to the E x C channels at once.

Activations are laid out channel-major, [N, H, W, C, E] (flattened to
[N, H, W, C * E] for the convolutions), and parameter-free work on a
shared input (pooling, its BatchNorm statistics in training, the identity)
is done once. The mathematics of each edge is unchanged: each binarized
kernel is X_hat = A_hat (.) sign(X) of its own edge (Eq. 1), its amplitude
loss is Eq. 2, BatchNorm statistics are per channel of each edge. The tests
hold a fused cell to the per-edge layers, outputs and gradients.

In training, the backward pass keeps few of the forward pass's tensors: a
body runs as segments, each ending at a depthwise convolution, and the
backward pass keeps each segment's input (the body's input, then each
depthwise convolution's output, which the next 1 x 1 convolution reads)
and runs the segment again to differentiate it (`_recomputed`). ReLU
outputs, batch-folded copies and the 1 x 1 convolutions' outputs, which
BatchNorm's gradient reads, are derived again instead of kept: the 1 x 1
convolutions and BatchNorms run twice, for a smaller peak (BUILD.md,
"Segments differentiated by running them again").

Each fused operation is traced once per (operation, stride, input shape,
training, number of edges E) and shared by every cell. It is called with its
edges' variables (each replica's own copy under tf.distribute): it reads and
stacks them along a leading axis and writes the new BatchNorm statistics
back itself, so that the step graphs that call it hold none of that
per-variable work, and it is not inlined into them.
"""

import functools

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from bnas_tf import amplitude as amp
from bnas_tf import layers as bl
from bnas_tf import ops as bops
from bnas_tf import tracing
from bnas_tf.errors import ConfigError
from bnas_tf.optim import _tf_variable


def _sublayers(op):
    """The sequential body of operation `op` as (kind, layer) pairs."""
    if isinstance(op, bops.PoolBN):
        body = [("pool", op)] + ([("bn", op.bn)] if op.bn is not None else [])
        return body
    if isinstance(op, (bl.BinarizedSepConv, bl.BinarizedDilConv)):
        out = []
        for layer in op._body:
            if isinstance(layer, keras.layers.PReLU):
                out.append(("prelu", layer))
            elif isinstance(layer, keras.layers.ReLU):
                out.append(("relu", layer))
            elif isinstance(layer, bl.BinarizedDepthwiseConv2D):
                out.append(("dw", layer))
            elif isinstance(layer, bl.BinarizedConv2D):
                out.append(("conv", layer))
            elif isinstance(layer, keras.layers.BatchNormalization):
                out.append(("bn", layer))
            else:
                raise ConfigError(f"Cannot fuse layer {layer.name!r} of {op.name!r}.")
        return out
    if isinstance(op, bl.FactorizedReduce):
        if op.binary_activations:  # the convolutions sign their input; PReLU acts on their output
            return [("fr_convs", op), ("prelu", op.act), ("bn", op.bn)]
        return [("relu", op.act), ("fr_convs", op), ("bn", op.bn)]
    if isinstance(op, keras.layers.Identity):
        return []
    raise ConfigError(f"Cannot fuse operation {op.name!r} ({type(op).__name__}).")


def _conv_vars(conv):
    return [conv.kernel] + ([conv.amplitude] if conv.binarization == "pcnn" else [])


def _variables(op):
    """(read, written): op's variables in the order the fused function consumes
    them, and the BatchNorm statistics it returns new values for."""
    read, written = [], []
    for kind, layer in _sublayers(op):
        if kind == "prelu":
            read.append(layer.alpha)
        elif kind in ("dw", "conv"):
            read += _conv_vars(layer)
        elif kind == "fr_convs":
            read += _conv_vars(layer.conv_1) + _conv_vars(layer.conv_2)
        elif kind == "bn":
            if layer.center or layer.scale:
                raise ConfigError("Fused operations need BatchNorm without affine parameters (as in the supernet).")
            read += [layer.moving_mean, layer.moving_variance]
            written += [layer.moving_mean, layer.moving_variance]
    return read, written


class _Activations:
    """A tensor that is either shared by the E edges ([N, H, W, C]) or per edge ([N, H, W, C, E]).

    Each function is traced per number of edges E (its variables are one list per
    edge), so shapes are static but for the batch, and reshapes take constant shapes.
    """

    def __init__(self, value, shared):
        self.value, self.shared = value, shared

    @classmethod
    def of(cls, value):
        """The activations `value` holds, told apart by rank: [N, H, W, C] shared, [N, H, W, C, E] per edge."""
        return cls(value, len(value.shape) == 4)

    def flat(self):
        """[N, H, W, C * E], channel-major (per edge only)."""
        _, h, w, c, e = _dims(self.value)
        return tf.reshape(self.value, [-1, h, w, c * e])

    @classmethod
    def from_flat(cls, flat, channels):
        _, h, w, ce = _dims(flat)
        return cls(tf.reshape(flat, [-1, h, w, channels, ce // channels]), False)


_dims = bl.static_dims


def _binarized_kernels(conv, values, depthwise):
    """(X_hat of every edge, stacked [E, ...], their amplitude loss or None): Eqs. 1 and 2,
    by `bnas_tf.amplitude` with A_hat taken per edge (every axis but the leading one)."""
    kernel = values[0]
    per_edge = list(range(1, len(kernel.shape)))
    if conv.binarization == "pcnn":
        loss = amp.pcnn_amplitude_loss(kernel, values[1], conv.theta, per_edge) if conv.theta > 0 else None
        return amp.pcnn_kernel(kernel, values[1], per_edge), loss
    if conv.binarization == "xnor":
        return amp.xnor_kernel(kernel, [1, 2] if depthwise else [1, 2, 3]), None
    return kernel, None


def _quantize(conv, x):
    return x if conv.input_quantizer is None else conv.input_quantizer(x)


# On CPU a depthwise convolution is vectorised over its channels: with the 2 to 16
# channels of a supernet edge it runs several times slower per value than with 64.
# Examples of the batch are therefore laid side by side in the channels until each
# edge's share has this many (`_fold_batch`); measured in BUILD.md.
FOLD_CHANNELS = 16


def fold_groups(channels):
    """How many examples `_depthwise` folds into the channels, for edges of `channels`
    channels: FOLD_CHANNELS // channels on CPU (1: none), 1 on GPU. It depends on the
    edge width only, so that one traced function still serves any number of edges."""
    if tf.config.list_logical_devices("GPU"):
        return 1
    return max(1, FOLD_CHANNELS // channels)


def _fold_batch(x, groups):
    """[N, H, W, C] -> [ceil(N / g), H, W, g * C]: g consecutive examples side by side in
    the channels (example i, channel c -> row i // g, channel (i % g) * C + c); zero
    examples pad N to a multiple of g."""
    n, h, w, c = _dims(x)
    x = tf.pad(x, [[0, (groups - n % groups) % groups], [0, 0], [0, 0], [0, 0]])
    x = tf.reshape(x, [-1, groups, h, w, c])
    return tf.reshape(tf.transpose(x, [0, 2, 3, 1, 4]), [-1, h, w, groups * c])


def _unfold_batch(y, groups, n):
    """The inverse of `_fold_batch` on a convolution's output: [N', H, W, g * C] -> [n, H, W, C]."""
    _, h, w, c = _dims(y)
    y = tf.reshape(y, [-1, h, w, groups, c // groups])
    return _first_rows(tf.reshape(tf.transpose(y, [0, 3, 1, 2, 4]), [-1, h, w, c // groups]), n)


@tf.custom_gradient
def _first_rows(y, n):
    """y[:n], whose gradient pads dy back with zero rows. With no padding rows (a batch
    divisible by g) both are free: the slice and the pad pass their input through,
    where StridedSlice's own gradient writes a zero tensor and copies dy into it."""
    extra = tf.shape(y)[0] - n

    def grad(dy):
        return tf.pad(dy, [[0, extra], [0, 0], [0, 0], [0, 0]]), None

    return y[:n], grad


def _depthwise(conv, h, kernels, groups, relu=False):
    """Each edge's depthwise convolution of relu(x) (with `relu`) or x; kernels [E, k, k, C, 1].

    With `groups` g > 1 (`fold_groups`), g examples are folded into the
    channels and the kernel tiled g times: each output channel still sees one
    input channel of one example, so the result is the same. The ReLU before
    the convolution and its input quantizer act per value, so they apply to
    the folded copy.
    """
    stacked = tf.transpose(tf.squeeze(kernels, axis=4), [1, 2, 3, 0])  # [k, k, C, E]: channel c, edge e -> c * E + e
    k0, k1, channels = kernels.shape[1], kernels.shape[2], kernels.shape[3]
    if h.shared:
        x, kernel = h.value, stacked
    else:
        x, kernel = h.flat(), tf.reshape(stacked, [k0, k1, -1, 1])
    strides = [1, *conv.strides, 1]
    if groups > 1:
        n = _dims(x)[0]
        x, kernel = _fold_batch(x, groups), tf.tile(kernel, [1, 1, groups, 1])
    dilated = tuple(conv.dilation_rate) != (1, 1)
    # Dilated, the ReLU can also follow the space-to-batch copy (which pads with zeros, and
    # relu(0) = 0); not a quantizer's sign, which would turn the padding into ones.
    relu_late = relu and dilated and conv.input_quantizer is None
    if relu and not relu_late:
        x = ops.relu(x)
    x = _quantize(conv, x)
    padding = conv.padding.upper()
    if conv.symmetric_padding:  # after the quantizer, as the layer pads
        x, padding = tf.pad(x, [[0, 0], *conv.symmetric_pads(), [0, 0]]), "VALID"

    def depthwise(inputs, num_spatial_dims=2, padding=padding):
        # The raw op accepts a kernel whose channel count is only known at run time.
        inputs = ops.relu(inputs) if relu_late else inputs
        return tf.raw_ops.DepthwiseConv2dNative(input=inputs, filter=kernel, strides=strides, padding=padding)

    if not dilated:
        y = depthwise(x)
    else:  # what tf.nn.depthwise_conv2d does for dilations, without needing static channels
        y = tf.nn.with_space_to_batch(x, dilation_rate=list(conv.dilation_rate), padding=padding,
                                      op=depthwise, filter_shape=[k0, k1])
    if groups > 1:
        y = _unfold_batch(y, groups, n)
    return _Activations.from_flat(y, channels)


def _pointwise(conv, h, kernels):
    """Each edge's 1 x 1 convolution; kernels [E, 1, 1, C, D]."""
    stacked = tf.transpose(tf.squeeze(kernels, axis=[1, 2]), [1, 2, 0])  # [C, D, E]
    c, d = kernels.shape[3], kernels.shape[4]
    edges = kernels.shape[0]  # static: each function is traced per number of edges
    if h.shared:
        kernel = tf.reshape(stacked, [1, 1, c, -1])
        x = h.value
    else:
        # Block diagonal: rows (c, e), columns (d, f), edge e's kernel where e == f.
        eye = tf.constant(np.eye(edges), dtype=stacked.dtype)
        kernel = tf.reshape(tf.einsum("cde,ef->cedf", stacked, eye), [1, 1, c * edges, d * edges])
        x = h.flat()
    y = tf.nn.conv2d(_quantize(conv, x), kernel, [1, *conv.strides, 1], conv.padding.upper())
    return _Activations.from_flat(y, d)


def _normalize(x, eps):
    """(normalised x, batch mean, biased batch variance) of x [N, H, W, C]: one fused
    kernel in float32 (`layers.normalize_batch`), the moments in the float64 tests."""
    if x.dtype == tf.float32:
        return bl.normalize_batch(x, eps)
    mean, var = ops.moments(x, axes=[0, 1, 2])
    return tf.nn.batch_normalization(x, mean, var, None, None, eps), mean, var


def _normalized(h, eps):
    """(normalised h, batch mean [C, E] or [C, 1], biased batch variance alike), per channel of each edge."""
    if h.shared:
        y, mean, var = _normalize(h.value, eps)
        return _Activations(y, True), tf.expand_dims(mean, 1), tf.expand_dims(var, 1)
    _, height, width, c, e = _dims(h.value)
    y, mean, var = _normalize(h.flat(), eps)
    return _Activations(tf.reshape(y, [-1, height, width, c, e]), False), tf.reshape(mean, [c, e]), tf.reshape(var, [c, e])


def _moving(bn, moving, mean, var):
    """The new moving statistics [E, C] of a BatchNorm from its batch statistics [C, E] (or [C, 1]):
    momentum * moving + (1 - momentum) * batch, as Keras updates them."""
    return [m * bn.momentum + tf.transpose(batch) * (1.0 - bn.momentum) for m, batch in zip(moving, (mean, var))]


def _inference_batch_norm(h, moving_mean, moving_var, eps):
    """BatchNorm without affine parameters on the moving statistics [E, C], per channel of each edge."""
    x = tf.expand_dims(h.value, 4) if h.shared else h.value
    y = tf.nn.batch_normalization(x, tf.transpose(moving_mean), tf.transpose(moving_var), None, None, eps)
    return _Activations(y, False)


def _prelu(h, alpha):
    """Keras's PReLU, relu(x) - alpha * relu(-x), with each edge's alpha; alpha [E, 1, 1, C]."""
    alpha = tf.transpose(tf.squeeze(alpha, axis=[1, 2]))  # [C, E]
    x = tf.expand_dims(h.value, 4) if h.shared else h.value
    return _Activations(ops.relu(x) + (-alpha) * ops.relu(-x), False)


def _recomputed(run, value, params):
    """run(value, *params) -> (output, *more), whose backward pass keeps `value` and
    `params` alone and runs `run` again to differentiate it.

    Inside a segment of an operation's body (`_segments`) the backward pass
    would otherwise keep every intermediate tensor a gradient reads (ReLU
    outputs, folded copies, 1 x 1 convolution outputs for BatchNorm) from the
    forward pass to its own. Run again, an op whose output no gradient reads
    (a depthwise convolution: its gradient reads its input and kernel) is
    left out when TensorFlow instantiates the backward function; measured in
    BUILD.md. `more` (BatchNorm batch statistics, written to variables) may
    have no gradient.
    """

    @tf.custom_gradient
    def block(value, *params):
        outputs = run(value, *params)

        def grad(*upstream):
            sources = [value, *params]
            with tf.GradientTape() as tape:
                tape.watch(sources)
                again = run(value, *params)
            upstream = [tf.zeros_like(o) if u is None else u for u, o in zip(upstream, again)]
            return tape.gradient(list(again), sources, output_gradients=upstream)

        return outputs, grad

    return block(value, *params)


def _segments(body):
    """`body`'s layers as segments, each ending with a depthwise convolution (or the body's end).

    The tensors between segments (the body's input, each depthwise
    convolution's output, which a 1 x 1 convolution reads) are what a
    segment's backward pass keeps (`_recomputed`).
    """
    segments, current = [], []
    for i, (kind, layer) in enumerate(body):
        if kind == "relu" and i + 1 < len(body) and body[i + 1][0] == "dw":
            continue  # applied by `_depthwise`, after the batch fold
        current.append((kind, layer, i > 0 and body[i - 1][0] == "relu"))
        if kind == "dw":
            segments.append(current)
            current = []
    return segments + ([current] if current else [])


def _run_body(template, x, values, training, groups=1):
    """Applies `template`'s operation of every edge to `x`; see the module docstring.

    `values` are the edges' variables stacked, [E, ...] each, in `_variables` order;
    `groups` is `fold_groups` of the edge width (examples folded into depthwise channels).
    In training each segment of the body (`_segments`) is differentiated by
    running it again (`_recomputed`): the backward pass keeps the segments'
    inputs, not every tensor inside them.
    """
    cursor = [0]
    new_stats, losses = [], []

    def take(n):
        out = values[cursor[0] : cursor[0] + n]
        cursor[0] += n
        return out

    def kernels(conv, depthwise):
        kernel, loss = _binarized_kernels(conv, take(2 if conv.binarization == "pcnn" else 1), depthwise)
        if loss is not None:
            losses.append(loss)
        return kernel

    def params_of(kind, layer):
        """The tensors of one layer that its segment is differentiated for, as a list."""
        if kind == "prelu":
            return take(1)
        if kind in ("dw", "conv"):
            return [kernels(layer, kind == "dw")]
        if kind == "fr_convs":
            return [kernels(layer.conv_1, False), kernels(layer.conv_2, False)]
        if kind == "bn":
            return take(2)  # the moving statistics, read when not training
        return []

    def apply(kind, layer, after_relu, h, params):
        """(h after the layer, [batch mean, batch variance] of a BatchNorm in training or [])."""
        if kind == "relu":
            return _Activations(ops.relu(h.value), h.shared), []
        if kind == "prelu":
            return _prelu(h, params[0]), []
        if kind == "pool":
            return _Activations(layer.pooled(h.value), True), []  # first in its body: the input is shared
        if kind == "dw":
            return _depthwise(layer, h, params[0], groups, relu=after_relu), []
        if kind == "conv":
            return _pointwise(layer, h, params[0]), []
        if kind == "fr_convs":
            shifted = _Activations(bl.shift_pixels(h.value), h.shared)
            y1 = _pointwise(layer.conv_1, h, params[0])
            y2 = _pointwise(layer.conv_2, shifted, params[1])
            return _Activations(tf.concat([y1.value, y2.value], axis=3), False), []
        if training:  # "bn"
            y, mean, var = _normalized(h, layer.epsilon)
            return y, [mean, var]
        return _inference_batch_norm(h, *params, layer.epsilon), []

    def run(segment, counts, value, *flat):
        """[the segment's output, *batch statistics]; `counts`: how many of `flat` each layer takes."""
        h, stats, at = _Activations.of(value), [], 0
        for (kind, layer, after_relu), count in zip(segment, counts):
            h, more = apply(kind, layer, after_relu, h, list(flat[at : at + count]))
            stats += more
            at += count
        return [h.value, *stats]

    y = x
    for segment in _segments(_sublayers(template)):
        params = [params_of(kind, layer) for kind, layer, _ in segment]
        segment_run = functools.partial(run, segment, [len(p) for p in params])
        flat = [p for group in params for p in group]
        outputs = _recomputed(segment_run, y, flat) if training else segment_run(y, *flat)
        y, stats = outputs[0], iter(outputs[1:])
        for (kind, layer, _), group in zip(segment, params):
            if kind == "bn":
                new_stats += _moving(layer, group, next(stats), next(stats)) if training else group
    loss = tf.add_n(losses) if losses else ops.zeros(())
    return y, new_stats, loss


def _local(variable):
    """The tf.Variable this replica reads and writes: the local copy of a tf.distribute variable.

    A tf.function given a distributed variable reuses the graph traced for
    another one; given the replica's own component it traces per shape only.
    """
    variable = _tf_variable(variable)
    local = getattr(variable, "_get_on_device_or_primary", None)
    return local() if local is not None else variable


class FusedOps:
    """One traced function per fused operation kind and number of edges; see the module docstring."""

    def __init__(self):
        self._fns = {}

    def _function(self, key, template, training, groups, stat_slots):
        if key not in self._fns:

            def run(x, variables):
                # Reading, stacking and writing back the statistics happen here, once per
                # traced function, instead of in every step graph that calls it.
                values = [tf.stack([tf.convert_to_tensor(v) for v in slot]) for slot in variables]
                y, new_stats, loss = _run_body(template, x, values, training, groups)
                if training:
                    for slot, value in zip(stat_slots, new_stats):
                        for variable, edge_value in zip(variables[slot], tf.unstack(value, num=len(variables[slot]))):
                            variable.assign(edge_value)
                return y, loss

            # Not inlined: by default TensorFlow copies a function's body into every graph
            # that calls it, hundreds of times in a supernet step; called, it is built once
            # (BUILD.md, "Performance of the search step").
            self._fns[key] = tf.function(tracing.counted_apart(run), autograph=False, reduce_retracing=True,
                                         experimental_attributes={"_noinline": True})
        return self._fns[key]

    def call(self, key, ops_, x, training):
        """(y, amplitude loss) of the operations `ops_` (one per edge, same kind) on `x`.

        y is [N, H, W, C] when every edge gives the same output (identity,
        pooling in training), else [N, H, W, C, E].
        """
        template = ops_[0]
        if not _sublayers(template):
            return x, ops.zeros(())
        read = [_variables(op) for op in ops_]
        slots = [[_local(r[i]) for r, _ in read] for i in range(len(read[0][0]))]
        written = {id(v) for v in read[0][1]}
        stat_slots = tuple(i for i, v in enumerate(read[0][0]) if id(v) in written)
        groups = fold_groups(x.shape[-1])
        fn = self._function(key + (tuple(x.shape[1:]), bool(training), groups), template, bool(training), groups,
                            stat_slots)
        x = tf.convert_to_tensor(x)
        y, loss = fn(x, slots)
        if len(y.shape) == 5 and y.shape[-1] is None:
            y = tf.ensure_shape(y, [None] * 4 + [len(ops_)])
        return y, loss
