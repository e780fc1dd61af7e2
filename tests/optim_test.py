"""FlatSGD against a NumPy transcription of PyTorch's clip_grad_norm_ + SGD (and Eq. 19)."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from bnas_tf.optim import FlatSGD

# Repeated shapes, interleaved: FlatSGD stacks variables of one shape (its grouped order
# differs from theirs).
SHAPES = [(3, 3, 4, 1), (1, 1, 4, 8), (8,), (2, 5), (3, 3, 4, 1), (8,), (1, 1, 4, 8), (8,)]


def _reference_sgd(weights, grads_per_step, lr_per_step, momentum, weight_decay, clip_norm):
    """torch.nn.utils.clip_grad_norm_ then torch.optim.SGD.step, written out in NumPy.

    Parameters whose gradient is None are skipped (no decay, no momentum step),
    as torch.optim.SGD skips parameters with ``p.grad is None``.
    """
    weights = [w.copy() for w in weights]
    buffers = [None] * len(weights)
    for grads, lr in zip(grads_per_step, lr_per_step):
        present = [i for i, g in enumerate(grads) if g is not None]
        total = np.sqrt(sum(np.sum(grads[i] ** 2) for i in present))
        scale = min(1.0, clip_norm / total) if clip_norm else 1.0
        for i in present:
            d = grads[i] * scale + weight_decay * weights[i]
            buffers[i] = d if buffers[i] is None else momentum * buffers[i] + d
            weights[i] = weights[i] - lr * buffers[i]
    return weights, buffers


def _run_traced(opt, steps, lrs):
    """Applies each step's gradients (None: no gradient) at its learning rate, in one tf.function."""

    @tf.function(autograph=False)
    def step(grads):
        opt.apply(grads)

    for grads, lr in zip(steps, lrs):
        opt.learning_rate.assign(lr)
        step([None if g is None else tf.constant(g) for g in grads])


def _random(rng, shapes):
    return [rng.normal(size=s) for s in shapes]


@pytest.mark.parametrize("clip_norm", [0.0, 0.5])
def test_matches_pytorch_sgd_with_skipped_variables(clip_norm):
    rng = np.random.default_rng(0)
    init = _random(rng, SHAPES)
    steps = [_random(rng, SHAPES) for _ in range(3)]
    steps[1][2] = None  # variable 2 gets no gradient in step 2: untouched, momentum included
    steps[2][0] = None
    steps[2][5] = None  # and in step 3 one of the three (8,) variables
    lrs = [0.1, 0.05, 0.025]
    variables = [tf.Variable(w) for w in init]
    opt = FlatSGD(variables, learning_rate=lrs[0], momentum=0.9, weight_decay=3e-4, clip_norm=clip_norm, name="w")
    _run_traced(opt, steps, lrs)
    expected, buffers = _reference_sgd(init, steps, lrs, 0.9, 3e-4, clip_norm)
    for v, e in zip(variables, expected):
        np.testing.assert_allclose(v.numpy(), e, rtol=1e-12, atol=1e-12)
    velocity = np.split(opt.velocity.numpy(), np.cumsum([np.prod(s) for s in SHAPES])[:-1])
    for v, b, s in zip(velocity, buffers, SHAPES):
        np.testing.assert_allclose(v.reshape(s), b, rtol=1e-12, atol=1e-12)


def test_absolute_step_is_eq_19_on_keras_variables():
    """A <- |A - eta2 dA| (no momentum, no decay), on Keras variables."""
    rng = np.random.default_rng(1)
    init = [np.abs(a) for a in _random(rng, SHAPES[:2])]
    grads = _random(rng, SHAPES[:2])
    variables = [keras.Variable(a) for a in init]
    opt = FlatSGD(variables, learning_rate=2.0, absolute=True, name="amp")
    opt.apply([tf.constant(g) for g in grads])
    for v, a, g in zip(variables, init, grads):
        np.testing.assert_allclose(np.asarray(v), np.abs(a - 2.0 * g), rtol=1e-12)
    assert opt.velocity is None


def test_no_gradient_is_no_step():
    variables = [tf.Variable(np.ones(s)) for s in SHAPES]
    opt = FlatSGD(variables, learning_rate=0.1, momentum=0.9, weight_decay=0.1, name="w")
    opt.apply([None] * len(SHAPES))
    assert all(np.all(v.numpy() == 1.0) for v in variables)


def test_mixed_dtypes_are_refused():
    with pytest.raises(ValueError, match="one dtype"):
        FlatSGD([tf.Variable(1.0), tf.Variable(np.float64(1.0))], learning_rate=0.1, name="w")


_MIRRORED_CHILD = textwrap.dedent(
    """
    import json
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from bnas_tf.optim import FlatSGD

    shapes = [(3, 4), (5,), (2, 2, 2)]
    rng = np.random.default_rng(0)
    init = [rng.normal(size=s) for s in shapes]
    per_replica = [[rng.normal(size=s) for s in shapes] for _ in range(2)]
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        variables = [tf.Variable(w) for w in init]
        opt = FlatSGD(variables, learning_rate=0.1, momentum=0.9, weight_decay=0.01, clip_norm=1.0, name="w")

    @tf.function(autograph=False)
    def step():
        def replica():
            rid = tf.distribute.get_replica_context().replica_id_in_sync_group
            grads = [tf.where(tf.equal(rid, 0), tf.constant(a), tf.constant(b)) for a, b in zip(*per_replica)]
            grads[1] = None  # unused on every replica
            opt.apply(grads)
        strategy.run(replica)

    step(); step()
    copies = [[c.numpy().tolist() for c in v.values] for v in variables]
    single = [tf.Variable(w) for w in init]
    ref = FlatSGD(single, learning_rate=0.1, momentum=0.9, weight_decay=0.01, clip_norm=1.0, name="r")
    summed = [a + b for a, b in zip(*per_replica)]
    summed[1] = None
    for _ in range(2):
        ref.apply([None if g is None else tf.constant(g) for g in summed])
    print(json.dumps({"copies": copies, "single": [v.numpy().tolist() for v in single],
                      "unused_kept": bool(np.array_equal(variables[1].values[1].numpy(), init[1]))}))
    """
)


@pytest.mark.slow
def test_mirrored_replicas_sum_then_step_in_sync():
    """Two replicas: one all-reduce of the flat gradient, the same step on every copy as one device summed."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, "-c", _MIRRORED_CHILD], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    for copies, single in zip(out["copies"], out["single"]):
        for copy in copies:
            np.testing.assert_allclose(np.asarray(copy), np.asarray(single), rtol=1e-12, atol=1e-12)
    assert out["unused_kept"]


def _reference_adam(weights, grads_per_step, lr_per_step, weight_decay, clip_norm, b1=0.9, b2=0.999, eps=1e-7):
    """clip_grad_norm_, coupled L2, then Adam with one step count t for every variable
    (variables without a gradient are skipped, moments included), in NumPy."""
    weights = [w.copy() for w in weights]
    m = [np.zeros_like(w) for w in weights]
    v = [np.zeros_like(w) for w in weights]
    for t, (grads, lr) in enumerate(zip(grads_per_step, lr_per_step), start=1):
        present = [i for i, g in enumerate(grads) if g is not None]
        total = np.sqrt(sum(np.sum(grads[i] ** 2) for i in present))
        scale = min(1.0, clip_norm / total) if clip_norm else 1.0
        for i in present:
            d = grads[i] * scale + weight_decay * weights[i]
            m[i] = b1 * m[i] + (1 - b1) * d
            v[i] = b2 * v[i] + (1 - b2) * d * d
            weights[i] = weights[i] - lr * np.sqrt(1 - b2**t) / (1 - b1**t) * m[i] / (np.sqrt(v[i]) + eps)
    return weights


@pytest.mark.parametrize("clip_norm", [0.0, 0.5])
def test_adam_matches_numpy_adam_with_skipped_variables(clip_norm):
    rng = np.random.default_rng(2)
    init = _random(rng, SHAPES)
    steps = [_random(rng, SHAPES) for _ in range(4)]
    steps[1][2] = None
    steps[2][0] = None
    steps[3][5] = None
    lrs = [0.01, 0.005, 0.002, 0.001]
    variables = [tf.Variable(w) for w in init]
    opt = FlatSGD(variables, learning_rate=lrs[0], weight_decay=3e-4, clip_norm=clip_norm, adam=True, name="w")
    _run_traced(opt, steps, lrs)
    expected = _reference_adam(init, steps, lrs, 3e-4, clip_norm)
    for v, e in zip(variables, expected):
        np.testing.assert_allclose(v.numpy(), e, rtol=1e-10, atol=1e-12)
    assert int(opt.iterations.numpy()) == 4
    assert {v.name.split(":")[0] for v in opt.state} >= {"w/velocity", "w/second_moment", "w/iterations"}


def test_training_adam_matches_keras_adam():
    """bnas_tf.train.Adam (the evaluation network's) against keras.optimizers.Adam."""
    from bnas_tf.train import Adam

    rng = np.random.default_rng(3)
    init = _random(rng, SHAPES[:4])
    steps = [[g.astype(np.float32) for g in _random(rng, SHAPES[:4])] for _ in range(3)]
    ours = [tf.Variable(w.astype(np.float32)) for w in init]
    theirs = [keras.Variable(w.astype(np.float32)) for w in init]
    opt = Adam(ours, strategy=tf.distribute.get_strategy(), name="adam")
    reference = keras.optimizers.Adam(learning_rate=0.01)
    for grads in steps:
        opt.apply([tf.constant(g) for g in grads], 0.01)
        reference.apply([tf.constant(g) for g in grads], theirs)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.numpy(), np.asarray(b), rtol=1e-5, atol=1e-6)
    assert int(opt.iterations.numpy()) == 3
