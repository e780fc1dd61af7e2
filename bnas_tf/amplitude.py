"""Amplitude schemes for binarized kernels (BNAS paper, Sec. 3.2 and 3.4).

A kernel X is replaced in the forward pass by (Eq. 1)

    X_hat = A_hat (.) D,      D = sign(X),

where `A_hat` has the shape of the amplitude matrix A and every element equal
to mean(A): in the forward pass it acts as a scalar. Schemes:

- ``none``: full precision, X_hat = X.
- ``xnor``: A_hat in closed form, the mean absolute value of each output
  filter (XNOR-Net); it is a constant for the gradient (as Larq's
  `magnitude_aware_sign`).
- ``pcnn``: A is a learned weight shared by every filter D_i of the layer.
  Gradients (Eqs. 14-21), with dA_hat/dA := 1 as the paper sets it:

      dL_S/dX_i  = dL_S/dX_hat_i * A_hat * 1{|X_i| <= 1}          (Eq. 16)
      dL_A/dX_i  = theta * (X_i - A_hat (.) D_i)                    (Eq. 17)
      dL_S/dA    = sum_i dL_S/dX_hat_i (.) D_i                      (Eq. 20)
      dL_A/dA    = -theta * sum_i (X_i - A_hat (.) D_i) (.) D_i     (Eq. 21)

  with the amplitude loss L_A = theta/2 * sum_i ||X_i - A_hat (.) D_i||^2
  (Eq. 2). X is updated by the weight optimizer, X <- X - eta1 dX (Eq. 15),
  and A by its own step A <- |A - eta2 dA| (Eq. 19): `AbsConstraint` is A's
  constraint, so any Keras optimizer that steps A yields Eq. 19.
"""

import keras
from keras import ops

from bnas_tf import quantizers
from bnas_tf.errors import ConfigError

SCHEMES = ("none", "xnor", "pcnn")
AMPLITUDE_WEIGHT_NAME = "amplitude"


def check_scheme(binarization):
    """Returns `binarization` if it is a known scheme, else raises ConfigError."""
    if binarization not in SCHEMES:
        raise ConfigError(
            f"Unknown binarization scheme: expected one of {', '.join(SCHEMES)}. "
            f"Received: binarization={binarization!r}"
        )
    return binarization


def check_theta(theta):
    """theta >= 0 is the weight of the amplitude loss (Eq. 2)."""
    try:
        ok = float(theta) >= 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(
            f"Invalid `theta`: expected a number >= 0 (the weight of the amplitude loss, Eq. 2). "
            f"Received: theta={theta!r}"
        )
    return float(theta)


@keras.saving.register_keras_serializable(package="bnas_tf")
class AbsConstraint(keras.constraints.Constraint):
    """w <- |w|: applied after each optimizer step, it turns A - eta2*dA into Eq. 19."""

    def __call__(self, w):
        return ops.abs(w)


def mean_broadcast(amplitude, axis=None):
    """A_hat: every element equals mean(A); backward dA_hat/dA := 1 (after Eq. 21).

    `axis`: the axes averaged (default all); the fused supernet passes every
    axis but the leading one, which stacks the A of several layers.
    """

    @ops.custom_gradient
    def _call(a):
        def grad(*args, upstream=None):
            return args[0] if upstream is None else upstream

        return ops.ones_like(a) * ops.mean(a, axis=axis, keepdims=axis is not None), grad

    return _call(ops.copy(amplitude))


def xnor_kernel(kernel, reduce_axes):
    """X_hat = mean(|X|) per filter (a constant) * ste_sign(X) (XNOR-Net, Eq. 1)."""
    scale = ops.stop_gradient(ops.mean(ops.abs(kernel), axis=reduce_axes, keepdims=True))
    return scale * quantizers.ste_sign(kernel)


def pcnn_kernel(kernel, amplitude, axis=None):
    """X_hat = A_hat (.) ste_sign(X); gradients Eqs. 16 and 20. `axis`: see `mean_broadcast`."""
    return mean_broadcast(amplitude, axis) * quantizers.ste_sign(kernel)


def pcnn_amplitude_loss(kernel, amplitude, theta, axis=None):
    """L_A = theta/2 * sum_i ||X_i - A_hat (.) D_i||^2 (Eq. 2); gradients Eqs. 17, 21.

    D = sign(X) is a constant here, as in Eq. 17. `axis`: see `mean_broadcast`.
    Computed in at least float32 (under ``mixed_float16`` the kernel arrives
    in float16, and Keras sums the losses in float32).
    """
    if keras.backend.standardize_dtype(kernel.dtype) in ("float16", "bfloat16"):
        kernel, amplitude = ops.cast(kernel, "float32"), ops.cast(amplitude, "float32")
    direction = ops.stop_gradient(quantizers.sign(kernel))
    residual = kernel - mean_broadcast(amplitude, axis) * direction
    return 0.5 * theta * ops.sum(ops.square(residual))


def amplitude_variables(model_or_layer):
    """The PCNN amplitude matrices A among `model_or_layer`'s trainable weights."""
    return [w for w in model_or_layer.trainable_weights if _is_amplitude(w)]


def non_amplitude_variables(model_or_layer):
    """Every trainable weight except the amplitude matrices (updated by Eq. 15)."""
    return [w for w in model_or_layer.trainable_weights if not _is_amplitude(w)]


def _is_amplitude(variable):
    return variable.name == AMPLITUDE_WEIGHT_NAME or variable.path.endswith("/" + AMPLITUDE_WEIGHT_NAME)
