"""Fused edges (`bnas_tf.search.fused`) compute what each edge's own layers compute.

The reference is the supernet with `fuse_edges=False`: every edge runs its
Keras layers (`BinarizedSepConv`, `BinarizedDilConv`, `FactorizedReduce`,
`PoolBN`, ...) one by one, as PC-DARTS's `MixedOp` does. Both run from the
same weights, perturbed so that no two edges hold equal values, and must give
the same logits, the same gradient for every trainable variable (alpha, beta,
PCNN amplitudes and PReLU slopes included) and the same BatchNorm statistics
afterwards, in training and inference mode, in mixed mode with every
operation alive, with random abandoned operations, and on sampled single
paths.

The comparison runs in float64: with binary activations sign() turns a
1e-7 rounding difference (another summation order in a wider depthwise
convolution) into a flipped activation, so float32 runs can differ by O(1)
for the same mathematics. In float64 both paths agree to ~1e-15; the
tolerance 1e-9 (relative) separates rounding from any real difference, which
is O(1e-2) or more (a kernel of another edge, a missing amplitude, a
statistic not written back).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from bnas_tf import amplitude
from bnas_tf import genotypes as gt
from bnas_tf.search.supernet import Supernet

TOLERANCE = 1e-9


@pytest.fixture(autouse=True)
def float64():
    previous, policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")  # the policy is cached once any layer was built
    yield
    keras.config.set_floatx(previous)
    keras.config.set_dtype_policy(policy)


def _step(model, x, y, training, choice):
    """(logits, gradients, variable values after the call); restores the variables."""
    before = [v.numpy() for v in model.variables]
    with tf.GradientTape() as tape:
        logits = model(x, training=training, choice=choice)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
        if model.losses:
            loss += tf.add_n(model.losses)
    grads = tape.gradient(loss, model.trainable_variables)
    after = [v.numpy() for v in model.variables]
    for variable, value in zip(model.variables, before):
        variable.assign(value)
    grads = [np.zeros(v.shape) if g is None else tf.convert_to_tensor(g).numpy() for g, v in zip(grads, model.trainable_variables)]
    return logits.numpy(), grads, after


def _relative(a, b):
    return float(np.max(np.abs(a - b)) / max(1e-6, float(np.max(np.abs(a)))))


CASES = {
    # Every operation alive, float, half the channels.
    "float_pc2": dict(binarization="none", partial_channels=2),
    # Random abandoned operations, PCNN amplitudes, 1-bit activations (PReLU, sign of the inputs).
    "pcnn_1bit_pc2_abandoned": dict(binarization="pcnn", binary_activations=True, partial_channels=2, abandon=True),
    # A sampled single path, XNOR, every channel through the operations (no bypass, no shuffle).
    "xnor_pc1_single_path": dict(binarization="xnor", partial_channels=1, single=True),
    # float32 only (`test_fused_float32_batchnorm_kernel_matches_per_edge_layers`).
    "pcnn_pc2_abandoned_float32": dict(binarization="pcnn", partial_channels=2, abandon=True),
}
FLOAT64_CASES = sorted(c for c in CASES if not c.endswith("float32"))


@pytest.mark.parametrize("case", FLOAT64_CASES)
def test_fused_supernet_matches_per_edge_layers(case):
    _compare(case, TOLERANCE)


def test_fused_float32_batchnorm_kernel_matches_per_edge_layers():
    """In float32 the fused operations normalise with one FusedBatchNormV3 kernel (its
    variance output unbiased, converted back): same comparison, at float32's rounding,
    without binary activations (whose sign() would turn rounding into flips)."""
    keras.config.set_floatx("float32")
    keras.config.set_dtype_policy("float32")
    model = _compare("pcnn_pc2_abandoned_float32", 2e-4)
    model.fuse_edges = True
    graph = tf.function(lambda t: model(t, training=True)).get_concrete_function(tf.zeros((2, 8, 8, 3))).graph
    library = graph.as_graph_def().library.function
    assert sum(node.op == "FusedBatchNormV3" for f in library for node in f.node_def) >= 10


def _compare(case, tolerance):
    options = dict(CASES[case])
    abandon, single = options.pop("abandon", False), options.pop("single", False)
    rng = np.random.default_rng(list(CASES).index(case))
    model = Supernet(10, (8, 8, 3), init_channels=8, num_layers=2, reduction_cells=(1,), **options)
    for v in model.trainable_variables:
        v.assign(v.numpy() + rng.normal(0.0, 0.05, v.shape))
    for v in model.non_trainable_variables:
        if "moving" in v.path:
            v.assign(v.numpy() + rng.uniform(0.0, 0.2, v.shape))
    if options.get("binary_activations"):
        # Power-of-two amplitudes: a 1-bit convolution's outputs (sums of +-A_hat) are then exact
        # in any order, and exact zeros stay zeros; otherwise the two paths' different summation
        # orders round a tie at 0 either way, where the PReLU after the convolution has a kink.
        for v in amplitude.amplitude_variables(model):
            v.assign(2.0 ** np.round(np.log2(np.abs(v.numpy()))))
    if abandon:
        model.set_alive({
            t: [list(rng.choice(gt.PRIMITIVES, size=rng.integers(1, 8), replace=False)) for _ in range(gt.NUM_EDGES)]
            for t in gt.CELL_TYPES
        })
    choice = None
    if single:
        choice = tuple(tuple(int(i) for i in rng.integers(0, len(gt.PRIMITIVES), gt.NUM_EDGES)) for _ in gt.CELL_TYPES)
    x = tf.constant(rng.normal(size=(4, 8, 8, 3)), dtype=keras.config.floatx())
    y = tf.constant(rng.integers(0, 10, 4))
    before = [v.numpy() for v in model.variables]
    for training in (True, False):
        model.fuse_edges = False
        ref = _step(model, x, y, training, choice)
        model.fuse_edges = True
        got = _step(model, x, y, training, choice)
        assert _relative(ref[0], got[0]) < tolerance, ("logits", training)
        for v, a, b in zip(model.trainable_variables, ref[1], got[1]):
            assert np.max(np.abs(a - b)) <= tolerance * max(1e-3, float(np.max(np.abs(a)))), (v.path, training)
        for v, a, b in zip(model.variables, ref[2], got[2]):
            np.testing.assert_allclose(b, a, rtol=tolerance, atol=tolerance, err_msg=f"{v.path} {training}")
        if training:  # not vacuous: the step moved the BatchNorm statistics, and gradients are not all zero
            assert sum(np.max(np.abs(a - b)) > 1e-4 for a, b in zip(got[2], before)) >= 10
            assert sum(np.max(np.abs(g)) > 0 for g in got[1]) >= (20 if single or abandon else len(got[1]) // 2)
    return model


def test_fused_graph_has_fewer_depthwise_convolutions():
    """Each source node runs one depthwise convolution per kind instead of one per edge,
    inside shared functions that are not inlined."""
    model = Supernet(10, (12, 12, 3), init_channels=8, num_layers=1, reduction_cells=(), partial_channels=2,
                     binarization="none")
    x = tf.zeros((2, 12, 12, 3))

    def count(fused):
        model.fuse_edges = fused
        graph = tf.function(lambda t: model(t, training=True)).get_concrete_function(x).graph
        n = sum(op.type == "DepthwiseConv2dNative" for op in graph.get_operations())
        # Depthwise convolutions live inside the shared per-kind functions; count their calls.
        library = graph.as_graph_def().library.function
        per_fn = {f.signature.name: sum(node.op == "DepthwiseConv2dNative" for node in f.node_def) for f in library}
        calls = [node for node in graph.as_graph_def().node if node.op in ("PartitionedCall", "StatefulPartitionedCall")]
        if fused:  # called, not copied into the caller's graph at every call (`_noinline`)
            assert all(f.attr["_noinline"].b for f in library if per_fn[f.signature.name])
        return n + sum(per_fn.get(node.attr["f"].func.name, 0) for node in calls)

    # Per edge: sep 3x3 and 5x5 have 2 depthwise convs each, dil 3x3 and 5x5 one: 6 per edge, 14 edges.
    assert count(False) == 6 * gt.NUM_EDGES
    # Fused: the same 6 per source node, 5 sources.
    assert count(True) == 6 * 5


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("strides, dilation, padding", [(1, 1, "same"), (2, 1, "same"), (2, 1, "symmetric"),
                                                       (1, 2, "same")])
def test_folded_depthwise_matches_tf_depthwise(strides, dilation, padding, relu):
    """Examples folded into the channels (`fused.fold_groups`), 5 examples in groups of 4
    (one padded group): outputs and both gradients are `tf.nn.depthwise_conv2d`'s (of
    relu(x) with `relu`, which acts on the folded copy, feeding the convolution itself).
    "symmetric" (DARTS's padding, on an even size where it differs from "same") is
    `tf.nn.depthwise_conv2d`'s explicit padding of one pixel on every side."""
    from bnas_tf import layers as bl
    from bnas_tf.search import fused

    rng = np.random.default_rng(strides + 2 * dilation)
    conv = bl.BinarizedDepthwiseConv2D(3, strides=strides, dilation_rate=dilation, padding=padding,
                                       binarization="none")
    size = 10 if padding == "symmetric" else 9
    explicit = [[0, 0], [1, 1], [1, 1], [0, 0]] if padding == "symmetric" else "SAME"
    x = tf.constant(rng.normal(size=(5, size, size, 2)))
    kernels = tf.constant(rng.normal(size=(3, 3, 3, 2, 1)))  # 3 edges on a shared input
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, kernels])
        got = fused._depthwise(conv, fused._Activations(x, True), kernels, 4, relu=relu).value
        kernel = tf.transpose(kernels[..., 0], [1, 2, 3, 0])  # channel c, edge e -> c * 3 + e
        want = tf.nn.depthwise_conv2d(tf.nn.relu(x) if relu else x, kernel, [1, strides, strides, 1],
                                      explicit, dilations=[dilation, dilation])
        want = tf.reshape(want, tf.shape(got))
        weights = tf.constant(rng.normal(size=want.shape))
        loss_got, loss_want = tf.reduce_sum(got * weights), tf.reduce_sum(want * weights)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-12, atol=1e-12)
    for a, b in zip(tape.gradient(loss_got, [x, kernels]), tape.gradient(loss_want, [x, kernels])):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-12)
    assert fused.fold_groups(4) == fused.FOLD_CHANNELS // 4 and fused.fold_groups(64) == 1
    if relu and padding == "same":  # the backward pass keeps the convolution's input alone, not also an unfolded ReLU output
        graph = tf.function(lambda t: fused._depthwise(conv, fused._Activations(t, True), kernels, 4, relu=True).value
                            ).get_concrete_function(x).graph
        (dw,) = [op for op in graph.get_operations() if op.type == "DepthwiseConv2dNative"]
        assert dw.inputs[0].op.type == "Relu"


@pytest.mark.parametrize("name, kept, edges", [("sep_conv_5x5", 3, 2), ("dil_conv_3x3", 2, 2),
                                               ("max_pool_3x3", 1, 1)])
def test_backward_pass_keeps_only_the_segments_inputs(name, kept, edges):
    """In training the backward pass of a fused body keeps the input of each segment
    (`fused._segments`: the body's input, each depthwise convolution's output), and derives
    the rest again (`fused._recomputed`): not the ReLU outputs, folded copies, 1 x 1
    convolution outputs or pooled values it would keep otherwise. Counted in the graph: the
    activation-sized forward tensors that a gradient op reads. Pooling with a BatchNorm that
    has no affine parameters gives every edge the same output, so its output is shared (one
    edge) and the others are per edge."""
    from bnas_tf import ops as bops
    from bnas_tf.search import fused

    ops_ = [bops.make_op(name, 4, affine=False, pool_bn=True) for _ in range(2)]
    x = tf.constant(np.random.default_rng(0).normal(size=(6, 16, 16, 4)))
    for op in ops_:
        op(x, training=True)  # builds the variables
    read = [fused._variables(op)[0] for op in ops_]
    slots = [[r[i] for r in read] for i in range(len(read[0]))]

    forward_ops = []
    # Upstream gradient given directly, so no loss op reads a forward tensor. Not all ones:
    # the sum of a batch-normalized output does not depend on its input, and its gradient is
    # zero up to rounding.
    upstream = tf.constant(np.random.default_rng(1).normal(size=(6, 16, 16, 4, edges)))

    @tf.function
    def gradients(x):
        values = [tf.stack([tf.convert_to_tensor(v) for v in slot]) for slot in slots]
        with tf.GradientTape() as tape:
            tape.watch([x, *values])
            y, _, _ = fused._run_body(ops_[0], x, values, True, fused.fold_groups(4))
        forward_ops[:] = tf.compat.v1.get_default_graph().get_operations()
        assert y.shape.rank == (5 if edges > 1 else 4)
        return tape.gradient(y, [x, *values], output_gradients=tf.reshape(upstream, y.shape))

    gradients.get_concrete_function(x)
    forward = {op.name for op in forward_ops}
    activations = {t.name for op in forward_ops for t in op.outputs
                   if t.shape.rank in (4, 5) and t.shape.num_elements() >= 1000
                   and any(c.name not in forward for c in t.consumers())}
    assert len(activations) == kept, sorted(activations)
    with tf.GradientTape() as tape:  # the same gradient through the Keras layers, per edge
        tape.watch(x)
        y = tf.stack([op(x, training=True) for op in ops_[:edges]], axis=-1)
    want = tape.gradient(y, x, output_gradients=upstream)
    assert float(tf.reduce_max(tf.abs(want))) > 1e-3
    np.testing.assert_allclose(gradients(x)[0], want, rtol=1e-9, atol=1e-9)
