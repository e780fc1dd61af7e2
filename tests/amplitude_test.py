"""One optimizer step of the binarized convolutions against a NumPy transcription
of the BNAS paper (Sec. 3.2 and 3.4, Eqs. 1, 2 and 14-21).

Every reference value here is computed in NumPy from the kernel X, the
amplitude A, the input and the upstream weights R of the loss
L_S = sum(y * R); TensorFlow only runs the code under test. A convolution
with stride 1 and "valid" padding is a sum over input patches, so both its
output and dL_S/dX_hat (the gradient with respect to the kernel that the
convolution consumes) are one `einsum` over `sliding_window_view` patches.

The update the layers must give (PCNN, theta > 0):

    A_hat = mean(A) (every element),   D = sign(X) (never 0),   X_hat = A_hat D
    G     = dL_S/dX_hat
    dX    = G A_hat 1{|X| <= 1} + theta (X - A_hat D)           Eqs. 14, 16, 17
    X'    = X - eta1 dX                                         Eq. 15
    dA    = sum_i G_i D_i - theta sum_i (X_i - A_hat D_i) D_i   Eqs. 18, 20, 21
    A'    = |A - eta2 dA|                                       Eq. 19

where i runs over the filters that share A (the output filters of a
convolution, the channels of a depthwise convolution) and dA_hat/dA := 1.
The amplitude loss is L_A = theta/2 sum_i ||X_i - A_hat D_i||^2 (Eq. 2).
"""

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from bnas_tf import amplitude as amp  # noqa: E402
from bnas_tf import layers  # noqa: E402

SEED = 1234
THETA = 0.5
ETA1 = 0.05
KERNEL = 2
IN_CHANNELS = 3
FILTERS = 4
INPUT_SHAPE = (2, 5, 5, IN_CHANNELS)
RTOL = ATOL = 1e-5  # float32 sums of a few hundred O(1) terms


# --------------------------------------------------------------------------
# NumPy reference
# --------------------------------------------------------------------------


def np_sign(x):
    """Larq's sign: +1 for x >= 0, -1 for x < 0."""
    return np.where(x < 0, -1.0, 1.0).astype(np.float32)


def _patches(x, k):
    """(n, h', w', c, k, k) patches of a stride-1 "valid" convolution."""
    return np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))


def np_conv(x, kernel):
    """y[n,i,j,o] = sum_{a,b,c} x[n,i+a,j+b,c] K[a,b,c,o]."""
    return np.einsum("nijcab,abco->nijo", _patches(x, kernel.shape[0]), kernel)


def np_conv_kernel_grad(x, upstream, k):
    """dL/dK[a,b,c,o] for L = sum(conv(x, K) * upstream)."""
    return np.einsum("nijcab,nijo->abco", _patches(x, k), upstream)


def np_depthwise(x, kernel):
    """y[n,i,j,c] = sum_{a,b} x[n,i+a,j+b,c] K[a,b,c,0] (depth multiplier 1)."""
    return np.einsum("nijcab,abc->nijc", _patches(x, kernel.shape[0]), kernel[..., 0])


def np_depthwise_kernel_grad(x, upstream, k):
    return np.einsum("nijcab,nijc->abc", _patches(x, k), upstream)[..., None]


def pcnn_reference(kernel, amplitude, g, theta, eta1, eta2):
    """Eqs. 1, 2 and 14-21; returns a dict of every intermediate quantity."""
    a_hat = np.full_like(amplitude, amplitude.mean())
    d = np_sign(kernel)
    residual = kernel - a_hat * d  # X_i - A_hat (.) D_i, broadcast over the filters i
    indicator = (np.abs(kernel) <= 1.0).astype(np.float32)
    dx = g * a_hat * indicator + theta * residual  # Eqs. 14, 16, 17
    # A broadcasts over the axes of size 1 (the filter index i): sum them out.
    filter_index_axes = tuple(ax for ax, n in enumerate(amplitude.shape) if n == 1 and kernel.shape[ax] != 1)
    da_s = np.sum(g * d, axis=filter_index_axes, keepdims=True)  # Eq. 20
    da_a = -theta * np.sum(residual * d, axis=filter_index_axes, keepdims=True)  # Eq. 21
    da = da_s + da_a  # Eq. 18
    return {
        "a_hat": a_hat,
        "x_hat": a_hat * d,  # Eq. 1
        "loss_a": 0.5 * theta * np.sum(residual**2),  # Eq. 2
        "dx": dx,
        "x_new": kernel - eta1 * dx,  # Eq. 15
        "da": da,
        "a_step": amplitude - eta2 * da,
        "a_new": np.abs(amplitude - eta2 * da),  # Eq. 19
    }


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------


def _kernel_with_large_entries(rng, shape):
    """A kernel whose entries straddle the indicator's edge |X| = 1."""
    x = rng.normal(0.0, 0.9, shape).astype(np.float32)
    flat = x.reshape(-1)
    flat[:4] = [1.7, -1.4, 0.3, -0.2]  # at least two entries with |X| > 1
    return x


def _case(kind, binary_activations, rng, theta=THETA):
    """Builds the layer and the fixed arrays of one test case."""
    x = rng.normal(0.0, 1.0, INPUT_SHAPE).astype(np.float32)
    if kind == "conv":
        layer = layers.BinarizedConv2D(
            FILTERS,
            KERNEL,
            binarization="pcnn",
            binary_activations=binary_activations,
            theta=theta,
            use_bias=True,
        )
        kernel_shape = (KERNEL, KERNEL, IN_CHANNELS, FILTERS)
        amplitude_shape = (KERNEL, KERNEL, IN_CHANNELS, 1)
        out_channels = FILTERS
    else:
        layer = layers.BinarizedDepthwiseConv2D(
            KERNEL,
            binarization="pcnn",
            binary_activations=binary_activations,
            theta=theta,
            use_bias=True,
        )
        kernel_shape = (KERNEL, KERNEL, IN_CHANNELS, 1)
        amplitude_shape = (KERNEL, KERNEL, 1, 1)  # every channel's k x k kernel is a filter
        out_channels = IN_CHANNELS
    layer.build(INPUT_SHAPE)
    kernel = _kernel_with_large_entries(rng, kernel_shape)
    amplitude = rng.uniform(0.2, 1.2, amplitude_shape).astype(np.float32)  # mean(A) != A
    bias = rng.normal(0.0, 0.1, (out_channels,)).astype(np.float32)
    out_shape = (INPUT_SHAPE[0], INPUT_SHAPE[1] - KERNEL + 1, INPUT_SHAPE[2] - KERNEL + 1, out_channels)
    upstream = rng.normal(0.0, 1.0, out_shape).astype(np.float32)
    return layer, x, kernel, amplitude, bias, upstream


def _np_forward(kind, x_in, x_hat, bias):
    return (np_conv(x_in, x_hat) if kind == "conv" else np_depthwise(x_in, x_hat)) + bias


def _np_kernel_grad(kind, x_in, upstream):
    if kind == "conv":
        return np_conv_kernel_grad(x_in, upstream, KERNEL)
    return np_depthwise_kernel_grad(x_in, upstream, KERNEL)


def _one_step(layer, x, upstream, eta1, eta2):
    """L = L_S + sum(layer.losses); SGD(eta1) on X and the bias, SGD(eta2) on A."""
    weights = amp.non_amplitude_variables(layer)
    amplitudes = amp.amplitude_variables(layer)
    with tf.GradientTape() as tape:
        y = layer(x)
        loss_s = tf.reduce_sum(y * upstream)
        loss_a = sum(layer.losses, tf.zeros(()))
        loss = loss_s + loss_a
    grads = tape.gradient(loss, weights + amplitudes)
    keras.optimizers.SGD(eta1).apply(grads[: len(weights)], weights)
    keras.optimizers.SGD(eta2).apply(grads[len(weights):], amplitudes)
    return y.numpy(), float(loss_a), grads


# --------------------------------------------------------------------------
# PCNN (Eqs. 14-21)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("binary_activations", [False, True], ids=["fp_act", "bin_act"])
@pytest.mark.parametrize("kind", ["conv", "depthwise"])
def test_pcnn_one_step_matches_equations_14_to_21(kind, binary_activations):
    rng = np.random.default_rng(SEED)
    layer, x, kernel, amplitude, bias, upstream = _case(kind, binary_activations, rng)
    layer.kernel.assign(kernel)
    layer.amplitude.assign(amplitude)
    layer.bias.assign(bias)

    # The variables are split as the paper's two updates need them.
    assert [v.path for v in amp.amplitude_variables(layer)] == [layer.amplitude.path]
    assert {v.path for v in amp.non_amplitude_variables(layer)} == {layer.kernel.path, layer.bias.path}
    assert tuple(layer.amplitude.shape) == amplitude.shape

    # Reference. The convolution consumes sign(x) with binary activations.
    x_in = np_sign(x) if binary_activations else x
    a_hat = np.full_like(amplitude, amplitude.mean())
    g = _np_kernel_grad(kind, x_in, upstream)  # dL_S/dX_hat: L_S is linear in X_hat
    # eta2 such that A - eta2*dA is negative somewhere (and positive elsewhere),
    # so that the absolute value of Eq. 19 matters.
    da = pcnn_reference(kernel, amplitude, g, THETA, ETA1, 1.0)["da"]
    ratio = amplitude[da > 0] / da[da > 0]
    assert ratio.size, "the case must have a positive dA somewhere"
    eta2 = float(1.5 * ratio.min())
    ref = pcnn_reference(kernel, amplitude, g, THETA, ETA1, eta2)
    assert (ref["a_step"] < 0).any() and (ref["a_step"] > 0).any()
    # The indicator 1{|X| <= 1} drops some non-zero gradient entries.
    assert (np.abs(kernel) > 1).any() and (np.abs(kernel) <= 1).any()

    # The forward pass uses X_hat = A_hat * sign(X) (Eq. 1), and L_A is Eq. 2.
    y, loss_a, grads = _one_step(layer, x, upstream, ETA1, eta2)
    np.testing.assert_allclose(y, _np_forward(kind, x_in, ref["x_hat"], bias), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(loss_a, ref["loss_a"], rtol=RTOL)
    assert ref["loss_a"] > 1e-2  # theta matters

    # Gradients (the optimizer sees dX and dA before it steps).
    by_path = dict(zip([v.path for v in amp.non_amplitude_variables(layer)]
                       + [v.path for v in amp.amplitude_variables(layer)], grads))
    np.testing.assert_allclose(by_path[layer.kernel.path].numpy(), ref["dx"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(by_path[layer.amplitude.path].numpy(), ref["da"], rtol=RTOL, atol=ATOL)

    # The updates, Eqs. 15 and 19; the bias takes a plain SGD step.
    np.testing.assert_allclose(layer.kernel.numpy(), ref["x_new"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(layer.amplitude.numpy(), ref["a_new"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(
        layer.bias.numpy(), bias - ETA1 * upstream.sum(axis=(0, 1, 2)), rtol=RTOL, atol=ATOL
    )
    # The absolute value of Eq. 19 was taken: A stays non-negative.
    assert (layer.amplitude.numpy() >= 0).all()

    # The layer's own L_A accessor agrees with the loss it adds, now at X', A'.
    ref_after = pcnn_reference(ref["x_new"], ref["a_new"], g, THETA, ETA1, eta2)
    np.testing.assert_allclose(float(layer.amplitude_loss()), ref_after["loss_a"], rtol=1e-4)


@pytest.mark.parametrize("kind", ["conv", "depthwise"])
def test_pcnn_without_theta_has_no_amplitude_term(kind):
    """theta = 0: no loss is added, dX = G A_hat 1{|X|<=1} and dA = sum_i G_i D_i."""
    rng = np.random.default_rng(SEED + 1)
    layer, x, kernel, amplitude, bias, upstream = _case(kind, False, rng, theta=0.0)
    layer.kernel.assign(kernel)
    layer.amplitude.assign(amplitude)
    layer.bias.assign(bias)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x) * upstream) + sum(layer.losses)
    dx, da = tape.gradient(loss, [layer.kernel, layer.amplitude])
    assert float(sum(layer.losses, tf.zeros(()))) == 0.0
    g = _np_kernel_grad(kind, x, upstream)
    ref = pcnn_reference(kernel, amplitude, g, 0.0, ETA1, 0.0)
    np.testing.assert_allclose(dx.numpy(), ref["dx"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(da.numpy(), ref["da"], rtol=RTOL, atol=ATOL)


def test_build_starts_amplitude_at_mean_abs_kernel():
    """A starts at the XNOR closed form mean(|X|), so A_hat starts optimal for L_A."""
    layer = layers.BinarizedConv2D(FILTERS, KERNEL, binarization="pcnn")
    layer.build(INPUT_SHAPE)
    np.testing.assert_allclose(
        layer.amplitude.numpy(), np.full(layer.amplitude.shape, np.abs(layer.kernel.numpy()).mean()), rtol=1e-6
    )
    assert isinstance(layer.amplitude.constraint, amp.AbsConstraint)


# --------------------------------------------------------------------------
# XNOR and none
# --------------------------------------------------------------------------


@pytest.mark.parametrize("binary_activations", [False, True], ids=["fp_act", "bin_act"])
@pytest.mark.parametrize("kind", ["conv", "depthwise"])
def test_xnor_forward_and_gradient(kind, binary_activations):
    """X_hat = mean|X_i| sign(X_i) per filter (a constant); dX = G mean|X_i| 1{|X|<=1}."""
    rng = np.random.default_rng(SEED + 2)
    _, x, kernel, _, bias, upstream = _case(kind, binary_activations, rng)
    kwargs = dict(binarization="xnor", binary_activations=binary_activations, theta=THETA, use_bias=True)
    layer = layers.BinarizedConv2D(FILTERS, KERNEL, **kwargs) if kind == "conv" else (
        layers.BinarizedDepthwiseConv2D(KERNEL, **kwargs))
    layer.build(INPUT_SHAPE)
    layer.kernel.assign(kernel)
    layer.bias.assign(bias)
    assert amp.amplitude_variables(layer) == []

    filter_axes = (0, 1, 2) if kind == "conv" else (0, 1)
    scale = np.abs(kernel).mean(axis=filter_axes, keepdims=True)
    assert np.unique(np.round(scale, 6)).size > 1  # the scale differs per filter
    x_hat = scale * np_sign(kernel)
    x_in = np_sign(x) if binary_activations else x
    g = _np_kernel_grad(kind, x_in, upstream)

    y, _, _ = _one_step(layer, x, upstream, ETA1, 0.1)
    assert not layer.losses  # XNOR has no amplitude loss, whatever theta
    np.testing.assert_allclose(y, _np_forward(kind, x_in, x_hat, bias), rtol=RTOL, atol=ATOL)
    dx = g * scale * (np.abs(kernel) <= 1)
    np.testing.assert_allclose(layer.kernel.numpy(), kernel - ETA1 * dx, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("kind", ["conv", "depthwise"])
def test_none_is_a_plain_convolution(kind):
    rng = np.random.default_rng(SEED + 3)
    _, x, kernel, _, bias, upstream = _case(kind, False, rng)
    kwargs = dict(binarization="none", theta=THETA, use_bias=True)
    layer = layers.BinarizedConv2D(FILTERS, KERNEL, **kwargs) if kind == "conv" else (
        layers.BinarizedDepthwiseConv2D(KERNEL, **kwargs))
    layer.build(INPUT_SHAPE)
    layer.kernel.assign(kernel)
    layer.bias.assign(bias)
    y, _, _ = _one_step(layer, x, upstream, ETA1, 0.1)
    assert not layer.losses and amp.amplitude_variables(layer) == []
    np.testing.assert_allclose(y, _np_forward(kind, x, kernel, bias), rtol=RTOL, atol=ATOL)
    g = _np_kernel_grad(kind, x, upstream)
    np.testing.assert_allclose(layer.kernel.numpy(), kernel - ETA1 * g, rtol=RTOL, atol=ATOL)


# --------------------------------------------------------------------------
# Building blocks of the amplitude module
# --------------------------------------------------------------------------


def test_mean_broadcast_forward_and_straight_through_gradient():
    a = tf.constant(np.arange(1.0, 7.0, dtype=np.float32).reshape(2, 3, 1, 1))
    upstream = tf.constant(np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3, 1, 1))
    with tf.GradientTape() as tape:
        tape.watch(a)
        a_hat = amp.mean_broadcast(a)
    np.testing.assert_array_equal(a_hat.numpy(), np.full((2, 3, 1, 1), 3.5, np.float32))
    # dA_hat/dA := 1 (the paper's choice after Eq. 21), not 1/|A|.
    np.testing.assert_array_equal(tape.gradient(a_hat, a, output_gradients=upstream).numpy(), upstream.numpy())


def test_abs_constraint():
    w = np.array([-1.5, 0.0, 2.0, -0.25], np.float32)
    np.testing.assert_array_equal(np.asarray(amp.AbsConstraint()(w)), np.abs(w))
