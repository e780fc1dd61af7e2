"""Binarized Keras 3 layers: the convolutions and the DARTS building blocks.

Every layer takes

- ``binarization``: ``"none"`` (full precision), ``"xnor"`` (closed-form
  amplitude) or ``"pcnn"`` (learned amplitude matrix A with the asynchronous
  A_hat / A update); see `bnas_tf.amplitude` for the formulas (Eqs. 1-4, 14-21);
- ``binary_activations``: with ``True`` (1-bit BNAS, Sec. 3.4) the input of
  every binarized convolution goes through ``ste_sign`` (Larq's never-zero
  sign, which Larq Compute Engine turns into bit-packed ops) and ReLU becomes
  PReLU, which keeps the negative values that a sign needs.

**Where PReLU sits in 1-bit blocks.** DARTS's blocks run ReLU -> conv -> BN.
With binary activations a PReLU there would sit right before the sign of the
convolution's input, and sign(PReLU(x)) = sign(x): it would change nothing
in the forward pass. In 1-bit blocks the PReLU therefore acts on the
convolutions' real-valued output, before the BatchNorm, as the binary
blocks of Bi-Real Net and ReActNet place it after the convolution:

    DARTS, float or binary weights:  ReLU -> conv(s) -> BN
    1-bit (binary_activations):      sign -> conv(s) -> PReLU -> BN

(each binarized convolution signs its own input). The BatchNorm that
follows shifts each channel, so the next sign's threshold moves with
PReLU's slope: the slope changes which activations are +1. BUILD.md ("Binary
networks that learn") has the measurements behind this choice.

The composite blocks follow DARTS's `operations.py`: convolutions without
bias, BatchNorm with PyTorch's momentum 0.1 (Keras momentum 0.9) and
epsilon 1e-5, and `affine=False` for the search supernet. `BatchNorm` is
Keras's BatchNormalization, training on one fused kernel (`normalize_batch`).
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from bnas_tf import amplitude as amp
from bnas_tf import quantizers
from bnas_tf.errors import ConfigError

_PACKAGE = "bnas_tf"
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
DEFAULT_THETA = 1e-4


def _check_kernel_size(kernel_size, allowed=None):
    ok = isinstance(kernel_size, (int, np.integer)) and not isinstance(kernel_size, bool) and kernel_size >= 1
    if ok and allowed is not None:
        ok = kernel_size in allowed
    if not ok:
        expected = f"one of {sorted(allowed)}" if allowed else "a positive integer"
        raise ConfigError(f"Invalid `kernel_size`: expected {expected}. Received: kernel_size={kernel_size!r}")
    return int(kernel_size)


def _check_positive_int(name, value):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"Invalid `{name}`: expected a positive integer. Received: {name}={value!r}")
    return int(value)


def _check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"Invalid `{name}`: expected True or False. Received: {name}={value!r}")
    return bool(value)


def pcnn_convs(layer):
    """The PCNN-binarized convolutions inside `layer` (itself included)."""
    return [
        sub
        for sub in layer._flatten_layers(include_self=True)
        if isinstance(sub, _BinarizedKernelMixin) and sub.binarization == "pcnn"
    ]


class _BinarizedKernelMixin:
    """The binarization of a Keras convolution's kernel and input.

    Subclasses call `_setup_binarization` in `__init__` and
    `_build_amplitude` at the end of `build`; `_binarized_inputs_and_kernel`
    gives what the convolution op consumes.
    """

    # Axes of the kernel that form one filter D_i (reduced for XNOR, kept in A).
    _filter_axes = (0, 1, 2)

    def _setup_binarization(self, binarization, binary_activations, input_quantizer, theta):
        self.binarization = amp.check_scheme(binarization)
        self.binary_activations = _check_bool("binary_activations", binary_activations)
        self.theta = amp.check_theta(theta)
        if input_quantizer is None and self.binary_activations:
            input_quantizer = "ste_sign"
        self.input_quantizer = quantizers.get(input_quantizer)
        # Containers that add the amplitude loss themselves (the supernet,
        # whose operations run inside tf.cond branches) switch this off.
        self.adds_amplitude_loss = True

    def _setup_padding(self, padding):
        """Keras's padding for the parent class; "symmetric" is done here (see `symmetric_pads`)."""
        self.symmetric_padding = padding == "symmetric"
        return "valid" if self.symmetric_padding else padding

    def _check_symmetric_kernel(self, kernel_size):
        if self.symmetric_padding and any(k % 2 == 0 for k in self.kernel_size):
            raise ConfigError(
                f"Invalid `kernel_size`: padding='symmetric' needs odd sizes. Received: kernel_size={kernel_size!r}"
            )

    def symmetric_pads(self):
        """[[before, after]] per spatial axis of padding="symmetric": (k - 1) * d / 2 each."""
        return [[(k - 1) * d // 2] * 2 for k, d in zip(self.kernel_size, self.dilation_rate)]

    def _padded(self, inputs):
        """``inputs`` (already quantized) with the symmetric zero padding, if any."""
        if not self.symmetric_padding:
            return inputs
        return ops.pad(inputs, [[0, 0], *self.symmetric_pads(), [0, 0]])

    def _padded_shape(self, input_shape):
        if not self.symmetric_padding:
            return input_shape
        n, h, w, c = input_shape
        (ph, _), (pw, _) = self.symmetric_pads()
        return (n, None if h is None else h + 2 * ph, None if w is None else w + 2 * pw, c)

    def _padding_config(self, config):
        return {**config, "padding": "symmetric"} if self.symmetric_padding else config

    def _build_amplitude(self):
        if self.binarization != "pcnn":
            self.amplitude = None
            return
        kernel_shape = tuple(self.kernel.shape)
        shape = tuple(d if i in self._filter_axes else 1 for i, d in enumerate(kernel_shape))
        # Start A at the XNOR closed form, mean(|X|), so that A_hat begins optimal.
        with tf.init_scope():
            start = float(np.mean(np.abs(ops.convert_to_numpy(self.kernel))))
        self.amplitude = self.add_weight(
            name=amp.AMPLITUDE_WEIGHT_NAME,
            shape=shape,
            initializer=keras.initializers.Constant(start),
            constraint=amp.AbsConstraint(),
            trainable=True,
        )

    def binarized_kernel(self, kernel=None):
        """X_hat for the current scheme (Eq. 1)."""
        kernel = self.kernel if kernel is None else kernel
        if self.binarization == "xnor":
            return amp.xnor_kernel(kernel, self._filter_axes)
        if self.binarization == "pcnn":
            return amp.pcnn_kernel(kernel, self.amplitude)
        return kernel

    def amplitude_loss(self):
        """L_A of this layer (Eq. 2); 0 unless binarization is 'pcnn'."""
        if self.binarization != "pcnn" or self.theta == 0:
            return ops.zeros(())
        return amp.pcnn_amplitude_loss(self.kernel, self.amplitude, self.theta)

    def _binarized_inputs_and_kernel(self, inputs, kernel):
        if self.binarization == "pcnn" and self.theta > 0 and self.adds_amplitude_loss:
            self.add_loss(amp.pcnn_amplitude_loss(kernel, self.amplitude, self.theta))
        if self.input_quantizer is not None:
            inputs = self.input_quantizer(inputs)
        return inputs, self.binarized_kernel(kernel)

    def _binarization_config(self):
        return {
            "binarization": self.binarization,
            "binary_activations": self.binary_activations,
            "input_quantizer": None if self.input_quantizer is None else quantizers.serialize(self.input_quantizer),
            "theta": self.theta,
        }

    @property
    def kernel_precision(self):
        """Bits per kernel element at inference: 1 when binarized, else 32."""
        return 32 if self.binarization == "none" else 1


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BinarizedConv2D(_BinarizedKernelMixin, keras.layers.Conv2D):
    """`keras.layers.Conv2D` whose kernel (and optionally input) is binarized.

    y = conv(q(x), A_hat (.) sign(X)) (Eqs. 12-13), q = ste_sign with binary
    activations, else the identity. All `Conv2D` arguments are accepted, and
    ``padding="symmetric"`` (PyTorch's ``padding=k // 2 * d``, see
    `BinarizedDepthwiseConv2D`): the stride-2 3x3 convolutions of ResNets
    beside a 1x1 stride-2 shortcut, which samples the even pixels.
    """

    def __init__(
        self,
        filters,
        kernel_size,
        *,
        binarization="pcnn",
        binary_activations=False,
        input_quantizer=None,
        theta=DEFAULT_THETA,
        padding="valid",
        **kwargs,
    ):
        super().__init__(filters, kernel_size, padding=self._setup_padding(padding), **kwargs)
        self._check_symmetric_kernel(kernel_size)
        self._setup_binarization(binarization, binary_activations, input_quantizer, theta)

    def build(self, input_shape):
        super().build(input_shape)
        self._build_amplitude()

    def compute_output_shape(self, input_shape):
        return super().compute_output_shape(self._padded_shape(input_shape))

    def convolution_op(self, inputs, kernel):
        inputs, kernel = self._binarized_inputs_and_kernel(inputs, kernel)
        return super().convolution_op(self._padded(inputs), kernel)

    # Keras's BaseConv stores only kernel and bias; A is stored beside them.
    def save_own_variables(self, store):
        super().save_own_variables(store)
        if self.built and self.amplitude is not None:
            store[amp.AMPLITUDE_WEIGHT_NAME] = self.amplitude

    def load_own_variables(self, store):
        super().load_own_variables(store)
        if self.built and self.amplitude is not None:
            self.amplitude.assign(store[amp.AMPLITUDE_WEIGHT_NAME])

    def get_config(self):
        return self._padding_config({**super().get_config(), **self._binarization_config()})


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BinarizedDepthwiseConv2D(_BinarizedKernelMixin, keras.layers.DepthwiseConv2D):
    """`keras.layers.DepthwiseConv2D` with a binarized kernel (and input).

    Each channel's k x k kernel is one filter D_i, so A has shape (k, k, 1, 1)
    and the XNOR amplitude is taken per channel.

    Besides Keras's "valid" and "same", ``padding="symmetric"`` pads
    `(k - 1) * d / 2` zeros on every side (after the input quantizer, as
    "same" does), PyTorch's `padding=k // 2 * d` of the DARTS code. At stride
    1 it equals "same"; at stride 2 on an even size, "same" pads only at the
    end, so its windows centre on the odd pixels 2i + 1, where DARTS's (and
    "symmetric"'s) centre on 2i. The output size is the same, ceil(n / s).
    """

    _filter_axes = (0, 1)

    def __init__(
        self,
        kernel_size,
        *,
        binarization="pcnn",
        binary_activations=False,
        input_quantizer=None,
        theta=DEFAULT_THETA,
        padding="valid",
        **kwargs,
    ):
        super().__init__(kernel_size, padding=self._setup_padding(padding), **kwargs)
        self._check_symmetric_kernel(kernel_size)
        self._setup_binarization(binarization, binary_activations, input_quantizer, theta)

    def build(self, input_shape):
        super().build(input_shape)
        self._build_amplitude()

    def compute_output_shape(self, input_shape):
        return super().compute_output_shape(self._padded_shape(input_shape))

    def call(self, inputs):
        inputs, kernel = self._binarized_inputs_and_kernel(inputs, self.kernel)
        inputs = self._padded(inputs)
        outputs = ops.depthwise_conv(
            inputs,
            kernel,
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )
        if self.use_bias:
            outputs = ops.add(outputs, self.bias)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def get_config(self):
        return self._padding_config({**super().get_config(), **self._binarization_config()})


def activation(binary_activations, name=None):
    """ReLU, or PReLU (one slope per channel, 0.25 at start) for 1-bit BNAS (Sec. 3.4)."""
    if binary_activations:
        return keras.layers.PReLU(
            alpha_initializer=keras.initializers.Constant(0.25), shared_axes=[1, 2], name=name
        )
    return keras.layers.ReLU(name=name)


# cuDNN's least BatchNorm epsilon, which tf.nn.fused_batch_norm also enforces: PyTorch's
# 1e-5 in float32 falls just below it. The difference is ~1e-8 of a unit-variance output.
FUSED_BN_MIN_EPSILON = 1.001e-5


def static_dims(x):
    """x's sizes: Python ints where static (a reshape to them takes one constant shape),
    the others from one `unstack` of tf.shape (one op, not a slice per axis)."""
    static = x.shape.as_list()
    if None not in static:
        return static
    dynamic = tf.unstack(tf.shape(x), num=len(static))
    return [d if s is None else s for s, d in zip(static, dynamic)]


def shift_pixels(x):
    """x [N, H, W, ...] moved one pixel up and left, zeros in the last row and column:
    y[:, i, j] = x[:, i + 1, j + 1] (the second path of `FactorizedReduce`).

    One Slice and one Pad, whose gradients are one Pad and one Slice. The
    indexing x[:, 1:, 1:] is a StridedSlice instead, whose gradient is a generic
    kernel that took about 10 ms per call on a supernet's preprocessing input
    (BUILD.md).
    """
    rank = len(x.shape)
    start = [0, 1, 1] + [0] * (rank - 3)
    return tf.pad(tf.slice(x, start, [-1] * rank), [[0, 0], [0, 1], [0, 1]] + [[0, 0]] * (rank - 3))


def normalize_batch(x, epsilon, scale=None, offset=None):
    """(y, batch mean, biased batch variance) of x [N, H, W, C] in float32:
    y = scale (x - mean) / sqrt(var + epsilon) + offset per channel, the moments over N, H, W.

    One FusedBatchNormV3 kernel forward and one backward, where moments and
    normalisation as separate ops are a dozen passes over x (they took a fifth
    of the search step; BUILD.md). The kernel's variance output carries
    Bessel's correction, undone here: Keras's moving variance takes the biased
    one. Epsilon is at least `FUSED_BN_MIN_EPSILON`.
    """
    n, height, width, c = static_dims(x)
    y, mean, var, _, _, _ = tf.raw_ops.FusedBatchNormV3(
        x=x,
        scale=tf.ones([c]) if scale is None else tf.convert_to_tensor(scale),
        offset=tf.zeros([c]) if offset is None else tf.convert_to_tensor(offset),
        mean=tf.zeros([0]),
        variance=tf.zeros([0]),
        epsilon=max(epsilon, FUSED_BN_MIN_EPSILON),
        is_training=True,
    )
    count = tf.cast(n * height * width, tf.float32)
    return y, mean, var * ((count - 1.0) / count)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BatchNorm(keras.layers.BatchNormalization):
    """Keras's BatchNormalization, training on one fused kernel where it can.

    y = gamma (x - mu_B) / sqrt(sigma_B^2 + eps) + beta with the batch moments,
    and moving = momentum * moving + (1 - momentum) * batch statistic, as
    Keras computes them; training on TensorFlow in float32 over the last axis of
    4-D inputs runs `normalize_batch`, everything else (inference, masks,
    renorm, float64, mixed precision) Keras's own code.
    """

    def call(self, inputs, training=None, mask=None):
        fused = (
            training is True
            and self.trainable
            and mask is None
            and not self.renorm
            and keras.backend.backend() == "tensorflow"
            and len(inputs.shape) == 4
            and self.axis in (3, -1)
            and inputs.dtype == "float32"
        )
        if not fused:
            return super().call(inputs, training=training, mask=mask)
        y, mean, var = normalize_batch(
            inputs, self.epsilon, self.gamma if self.scale else None, self.beta if self.center else None
        )
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + var * (1.0 - self.momentum))
        return y


def batch_norm(affine=True, name=None):
    """BatchNorm with DARTS's (PyTorch's) momentum and epsilon."""
    return BatchNorm(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, center=affine, scale=affine, name=name)


def strided_shape(input_shape, strides, channels=None):
    """(n, ceil(h / strides), ceil(w / strides), channels) of an NHWC `input_shape`
    ("same" output sizes; `channels` None keeps the input's)."""
    n, h, w, c = input_shape
    s = strides
    return (n, None if h is None else -(-h // s), None if w is None else -(-w // s),
            c if channels is None else channels)


def apply_sequence(sequence, x, training=None):
    """Calls the layers of `sequence` in turn; BatchNorm layers get `training`."""
    for layer in sequence:
        x = layer(x, training=training) if isinstance(layer, keras.layers.BatchNormalization) else layer(x)
    return x


def track_sublayers(owner, attribute, sublayers):
    """Makes the layers of the list `owner.<attribute>` visible to `tf.train.Checkpoint`.

    Keras 3 tracks layers kept in a list for its own saving (`.keras`), but
    TensorFlow's object-based checkpoint only follows attributes, and without
    this saved none of their weights while `assert_consumed()` passed. Each
    layer is also set as the private attribute `_<attribute>_<i>`; Keras's
    saving visits such attributes after the list itself, so `.keras` files
    keep their layout.
    """
    for i, layer in enumerate(sublayers):
        setattr(owner, f"_{attribute.lstrip('_')}_{i}", layer)


class _Block(keras.layers.Layer):
    """Base of the DARTS blocks: binarization options, a sequential body, a config."""

    def _set_body(self, body):
        self._body = body
        track_sublayers(self, "_body", body)

    def _unit(self, convs, suffix="", full_precision=False):
        """One activation, convolutions, BatchNorm unit of the body (see the module docstring):
        ReLU -> convs -> BN, or with 1-bit activations convs -> PReLU -> BN."""
        norm = batch_norm(self.affine, name=f"bn{suffix}")
        if self.binary_activations and not full_precision:
            return [*convs, activation(True, name=f"act{suffix}"), norm]
        return [activation(False, name=f"act{suffix}"), *convs, norm]

    def __init__(
        self,
        filters,
        *,
        binarization="pcnn",
        binary_activations=False,
        affine=True,
        theta=DEFAULT_THETA,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = _check_positive_int("filters", filters)
        self.binarization = amp.check_scheme(binarization)
        self.binary_activations = _check_bool("binary_activations", binary_activations)
        self.affine = _check_bool("affine", affine)
        self.theta = amp.check_theta(theta)

    def _conv_options(self, full_precision=False):
        return dict(
            binarization="none" if full_precision else self.binarization,
            binary_activations=False if full_precision else self.binary_activations,
            theta=self.theta,
            use_bias=False,
            padding="same",
        )

    def _conv(self, filters, kernel_size, strides=1, dilation_rate=1, full_precision=False, name=None):
        return BinarizedConv2D(
            filters,
            kernel_size,
            strides=strides,
            dilation_rate=dilation_rate,
            name=name,
            **self._conv_options(full_precision),
        )

    def _depthwise(self, kernel_size, strides=1, dilation_rate=1, full_precision=False, name=None):
        # Strided: DARTS's symmetric padding, so that stride-2 windows centre on the even
        # pixels as those of every other operation of a reduction cell do.
        options = {**self._conv_options(full_precision), "padding": "symmetric" if strides > 1 else "same"}
        return BinarizedDepthwiseConv2D(kernel_size, strides=strides, dilation_rate=dilation_rate, name=name,
                                        **options)

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self._body:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)

    def call(self, inputs, training=None):
        return apply_sequence(self._body, inputs, training)

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        for layer in self._body:
            shape = layer.compute_output_shape(shape)
        return shape

    def binarized_convs(self):
        """The binarized convolution layers of this block, in call order."""
        return [layer for layer in self._body if isinstance(layer, _BinarizedKernelMixin)]

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "binarization": self.binarization,
            "binary_activations": self.binary_activations,
            "affine": self.affine,
            "theta": self.theta,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ReLUConvBN(_Block):
    """activation -> k x k binarized conv (stride) -> BatchNorm (DARTS `ReLUConvBN`);
    with 1-bit activations sign -> conv -> PReLU -> BatchNorm."""

    def __init__(self, filters, kernel_size=1, strides=1, *, full_precision=False, **kwargs):
        super().__init__(filters, **kwargs)
        self.kernel_size = _check_kernel_size(kernel_size)
        self.strides = _check_positive_int("strides", strides)
        self.full_precision = _check_bool("full_precision", full_precision)
        self._set_body(self._unit(
            [self._conv(self.filters, self.kernel_size, self.strides, full_precision=self.full_precision, name="conv")],
            full_precision=self.full_precision,
        ))

    def get_config(self):
        return {
            **super().get_config(),
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "full_precision": self.full_precision,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BinarizedSepConv(_Block):
    """The DARTS separable block, binarized, applied twice.

    (activation -> k x k depthwise (stride) -> 1 x 1 pointwise -> BatchNorm)
    -> (activation -> k x k depthwise -> 1 x 1 pointwise to `filters` -> BatchNorm);
    with 1-bit activations each unit is depthwise -> pointwise -> PReLU -> BatchNorm,
    each convolution on the sign of its input.
    With ``full_precision_first`` the first depthwise convolution stays full
    precision (the paper's ImageNet setting, Sec. 4.1.2).
    """

    def __init__(self, filters, kernel_size=3, strides=1, *, full_precision_first=False, **kwargs):
        super().__init__(filters, **kwargs)
        self.kernel_size = _check_kernel_size(kernel_size, allowed=(3, 5, 7))
        self.strides = _check_positive_int("strides", strides)
        self.full_precision_first = _check_bool("full_precision_first", full_precision_first)
        self._in_channels = None
        self._body = None

    def build(self, input_shape):
        channels = int(input_shape[-1])
        fp_first = self.full_precision_first
        self._set_body(self._unit(
            [self._depthwise(self.kernel_size, self.strides, full_precision=fp_first, name="dw1"),
             self._conv(channels, 1, name="pw1")],
            "1",
        ) + self._unit([self._depthwise(self.kernel_size, name="dw2"), self._conv(self.filters, 1, name="pw2")], "2"))
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        if self._body is not None:
            return super().compute_output_shape(input_shape)
        return strided_shape(input_shape, self.strides, self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "full_precision_first": self.full_precision_first,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BinarizedDilConv(_Block):
    """activation -> k x k dilated depthwise (stride) -> 1 x 1 pointwise -> BatchNorm;
    with 1-bit activations depthwise -> pointwise -> PReLU -> BatchNorm."""

    def __init__(self, filters, kernel_size=3, strides=1, dilation_rate=2, *, full_precision_first=False, **kwargs):
        super().__init__(filters, **kwargs)
        self.kernel_size = _check_kernel_size(kernel_size, allowed=(3, 5, 7))
        self.strides = _check_positive_int("strides", strides)
        self.dilation_rate = _check_positive_int("dilation_rate", dilation_rate)
        # Keras's depthwise op cannot combine stride and dilation; the stride goes
        # on the 1 x 1 pointwise conv, which subsamples the same values.
        self.full_precision_first = _check_bool("full_precision_first", full_precision_first)
        fp_first = self.full_precision_first
        self._set_body(self._unit([
            self._depthwise(self.kernel_size, 1, self.dilation_rate, full_precision=fp_first, name="dw"),
            self._conv(self.filters, 1, strides=self.strides, name="pw"),
        ]))

    def get_config(self):
        return {
            **super().get_config(),
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "dilation_rate": self.dilation_rate,
            "full_precision_first": self.full_precision_first,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FactorizedReduce(_Block):
    """Halves the resolution: activation -> two 1 x 1 stride-2 convs, the second
    on the input shifted by one pixel, concatenated -> BatchNorm (DARTS).

    With 1-bit activations: two convs on the sign of the input -> PReLU -> BatchNorm.
    `filters` must be even. The shifted input is zero-padded at the end so that
    odd sizes work too (ceil(n / 2) outputs on both paths).
    """

    def __init__(self, filters, **kwargs):
        super().__init__(filters, **kwargs)
        if self.filters % 2:
            raise ConfigError(f"Invalid `filters`: FactorizedReduce needs an even number. Received: filters={filters!r}")
        self.act = activation(self.binary_activations, name="act")
        self.conv_1 = self._conv(self.filters // 2, 1, strides=2, name="conv_1")
        self.conv_2 = self._conv(self.filters // 2, 1, strides=2, name="conv_2")
        self.bn = batch_norm(self.affine, name="bn")

    def build(self, input_shape):
        self.act.build(self.compute_output_shape(input_shape) if self.binary_activations else input_shape)
        self.conv_1.build(input_shape)
        self.conv_2.build(input_shape)
        self.bn.build(self.compute_output_shape(input_shape))

    def call(self, inputs, training=None):
        x = inputs if self.binary_activations else self.act(inputs)
        shifted = shift_pixels(x)
        y = ops.concatenate([self.conv_1(x), self.conv_2(shifted)], axis=-1)
        if self.binary_activations:
            y = self.act(y)
        return self.bn(y, training=training)

    def compute_output_shape(self, input_shape):
        return strided_shape(input_shape, 2, self.filters)

    def binarized_convs(self):
        return [self.conv_1, self.conv_2]
