"""Larq's quantized layers on Keras 3: `QuantDense`, `QuantConv2D`, `QuantDepthwiseConv2D`, `QuantSeparableConv2D`.

Larq 0.14 does not import under Keras 3. These layers take Larq's arguments
with Larq's names and defaults, so that a Larq model definition runs here by
changing its import::

    from larq import layers as lq_layers        # Larq, tf-keras
    from bnas_tf import quant as lq_layers      # bnas_tf, Keras 3

    lq_layers.QuantConv2D(64, 3, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                          kernel_constraint="weight_clip", use_bias=False)

Each layer is a subclass of the Keras layer of the same name without
``Quant`` and takes all of its arguments, plus

- ``input_quantizer``: applied to the layer's input before anything else;
- ``kernel_quantizer`` (`QuantDense`, `QuantConv2D`), ``depthwise_quantizer``
  (`QuantDepthwiseConv2D`), ``depthwise_quantizer`` and ``pointwise_quantizer``
  (`QuantSeparableConv2D`): applied to the kernel in every forward pass; the
  optimizer updates the latent full-precision kernel, and the quantizer's
  pseudo-gradient (e.g. the STE of ``"ste_sign"``) carries the gradient to it;
- ``pad_values`` (convolutions): the value that ``padding="same"`` pads with
  (after the input quantizer). 0 is Keras's padding; Larq's binary networks
  often use 1.0, so that a padded ±1 input stays ±1.

Quantizers are anything `bnas_tf.quantizers.get` accepts: a name
(``"ste_sign"``), a config dict, a quantizer instance, a callable, or None.
Every quantizer defaults to None (no quantization), as in Larq: a
``QuantConv2D`` with no quantizer is a ``Conv2D``. Constraint arguments
(``kernel_constraint``, ``bias_constraint``, ``depthwise_constraint``,
``pointwise_constraint``) also take Larq's ``"weight_clip"``, `WeightClip`.

Differences from Larq: the quantized kernel is computed in `call` from the
latent weight (Larq wraps the variable in a `QuantizedVariable`), so
``layer.kernel`` is always the latent weight; positional arguments follow
Keras 3's order (Larq inserts ``pad_values`` after ``padding``), so
``pad_values`` is keyword-only here.
"""

import keras
from keras import ops

from bnas_tf import quantizers
from bnas_tf.errors import ConfigError, bad_value

_PACKAGE = "bnas_tf"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class WeightClip(keras.constraints.Constraint):
    """Clips every weight to [-clip_value, clip_value] after each optimizer step (Larq's `WeightClip`).

    Binary networks need it: the STE passes the gradient only where
    |w| <= 1, so a latent weight that drifted past 1 would never change sign
    again. Available as ``kernel_constraint="weight_clip"`` in this module's layers.
    """

    def __init__(self, clip_value=1.0):
        if isinstance(clip_value, bool) or not isinstance(clip_value, (int, float)) or not clip_value > 0:
            raise bad_value("clip_value", clip_value, "a positive number")
        self.clip_value = clip_value

    def __call__(self, w):
        return ops.clip(w, -self.clip_value, self.clip_value)

    def get_config(self):
        return {"clip_value": self.clip_value}


# Larq's lower-case alias of the class.
weight_clip = WeightClip

_CONSTRAINT_ALIASES = {"weight_clip": WeightClip, "WeightClip": WeightClip}
_CONSTRAINT_ARGS = ("kernel_constraint", "bias_constraint", "depthwise_constraint", "pointwise_constraint")


def get_constraint(identifier, name="kernel_constraint"):
    """A Keras constraint from `identifier`: what `keras.constraints.get` accepts, plus Larq's names.

    "weight_clip" / "WeightClip" and Larq's config dict
    ``{"class_name": "WeightClip", "config": {"clip_value": 1}}`` give a
    `WeightClip`; anything else goes to `keras.constraints.get`. Raises a
    ConfigError naming the argument `name` for what neither understands.
    """
    if isinstance(identifier, str) and identifier in _CONSTRAINT_ALIASES:
        return _CONSTRAINT_ALIASES[identifier]()
    if isinstance(identifier, dict) and identifier.get("class_name") in _CONSTRAINT_ALIASES:
        if "module" not in identifier or identifier.get("registered_name") in (None, f"{_PACKAGE}>WeightClip"):
            return WeightClip.from_config(identifier.get("config") or {})
    try:
        return keras.constraints.get(identifier)
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise bad_value(name, identifier, f"a constraint, its name ('weight_clip', 'non_neg', ...) or config") from None


def _resolve_constraints(kwargs):
    """`kwargs` with each constraint argument resolved by `get_constraint`."""
    return {key: get_constraint(value, key) if key in _CONSTRAINT_ARGS else value for key, value in kwargs.items()}


def _check_pad_values(pad_values):
    if isinstance(pad_values, bool) or not isinstance(pad_values, (int, float)):
        raise bad_value("pad_values", pad_values, "a number")
    return float(pad_values)


def _serialize(quantizer):
    return None if quantizer is None else quantizers.serialize(quantizer)


def _bits(quantizer):
    """Bits of a quantized weight: the quantizer's precision, 32 without a quantizer or precision."""
    precision = getattr(quantizer, "precision", None)
    return 32 if precision is None else int(precision)


class _QuantMixin:
    """Input and kernel quantization for a Keras layer (mixed in before the Keras class).

    `_KERNELS` maps each kernel-quantizer argument to the attribute of the
    kernel it quantizes. Subclasses call `_setup_quantizers` at the end of
    `__init__` and use `_quantize_input` / `_quantize_kernel` in `call`.
    """

    _KERNELS = {"kernel_quantizer": "kernel"}

    def _setup_quantizers(self, input_quantizer, kernel_quantizers):
        self.input_quantizer = quantizers.get(input_quantizer)
        if getattr(self.input_quantizer, "quantizer_metrics", None):
            # A flip ratio compares a tensor with its previous value: a kernel, not a batch.
            raise bad_value(
                "input_quantizer", input_quantizer, "a quantizer without `metrics` (give them to kernel quantizers)"
            )
        for argument, identifier in kernel_quantizers.items():
            setattr(self, argument, quantizers.get(identifier))

    def build(self, input_shape):
        super().build(input_shape)
        # Build the kernel quantizers here, outside any traced step: their
        # metrics (flip_ratio) create variables of the kernel's shape.
        for argument, attribute in self._KERNELS.items():
            quantizer = getattr(self, argument)
            if isinstance(quantizer, keras.layers.Layer) and not quantizer.built:
                quantizer.build(tuple(self._latent(attribute).shape))

    def _latent(self, attribute):
        """The kernel variable itself (Keras's `kernel` property may add a LoRA term)."""
        variable = getattr(self, "_" + attribute, None)
        return variable if isinstance(variable, keras.Variable) else getattr(self, attribute)

    def _quantize_input(self, inputs):
        return inputs if self.input_quantizer is None else self.input_quantizer(inputs)

    def _quantize_kernel(self, argument, kernel):
        quantizer = getattr(self, argument)
        return kernel if quantizer is None else quantizer(kernel)

    def kernel_precisions(self):
        """[(kernel variable, bits)] for each kernel: its quantizer's precision, 32 without one."""
        return [
            (self._latent(attribute), _bits(getattr(self, argument))) for argument, attribute in self._KERNELS.items()
        ]

    @property
    def kernel_precision(self):
        """Bits per kernel element at inference (the widest kernel's, for a separable layer)."""
        return max(_bits(getattr(self, argument)) for argument in self._KERNELS)

    def _quantizer_config(self):
        config = {"input_quantizer": _serialize(self.input_quantizer)}
        config.update({argument: _serialize(getattr(self, argument)) for argument in self._KERNELS})
        return config


class _QuantConvMixin(_QuantMixin):
    """`_QuantMixin` plus Larq's ``pad_values`` for ``padding="same"``."""

    def _setup_pad_values(self, pad_values):
        self.pad_values = _check_pad_values(pad_values)

    def _same_pads(self, size, axis):
        """[before, after] of "same" padding on one spatial axis (TensorFlow's: the odd pixel after).

        total = max((ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0), before = floor(total / 2).
        """
        k, s, d = self.kernel_size[axis], self.strides[axis], self.dilation_rate[axis]
        total = ((size + s - 1) // s - 1) * s + (k - 1) * d + 1 - size
        total = max(total, 0) if isinstance(total, int) else ops.maximum(total, 0)
        return [total // 2, total - total // 2]

    def _quantized_padded_input(self, inputs):
        """(quantized input, padding for the convolution op): explicit padding with
        `pad_values` when "same" pads with something other than 0."""
        inputs = self._quantize_input(inputs)
        if self.padding != "same" or self.pad_values == 0.0:
            return inputs, self.padding
        shape = ops.shape(inputs)
        first = 1 if self.data_format == "channels_last" else 2
        pads = [[0, 0] for _ in shape]
        for axis in range(len(self.kernel_size)):
            pads[first + axis] = self._same_pads(shape[first + axis], axis)
        return ops.pad(inputs, pads, constant_values=self.pad_values), "valid"

    def _bias_and_activation(self, outputs, channels):
        if self.use_bias:
            rank = len(self.kernel_size)
            if self.data_format == "channels_last":
                shape = (1,) * (rank + 1) + (channels,)
            else:
                shape = (1, channels) + (1,) * rank
            outputs = ops.add(outputs, ops.reshape(self.bias, shape))
        return outputs if self.activation is None else self.activation(outputs)

    def _conv_config(self):
        return {**self._quantizer_config(), "pad_values": self.pad_values}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QuantDense(_QuantMixin, keras.layers.Dense):
    """`keras.layers.Dense` with quantized input and kernel (Larq's `QuantDense`).

    y = activation(q_in(x) @ q_k(W) + b), with q_in = `input_quantizer` and
    q_k = `kernel_quantizer` (the identity when None).
    """

    def __init__(self, *args, input_quantizer=None, kernel_quantizer=None, **kwargs):
        super().__init__(*args, **_resolve_constraints(kwargs))
        self._setup_quantizers(input_quantizer, {"kernel_quantizer": kernel_quantizer})

    def call(self, inputs, training=None):
        x = ops.matmul(self._quantize_input(inputs), self._quantize_kernel("kernel_quantizer", self.kernel))
        if self.bias is not None:
            x = ops.add(x, self.bias)
        return x if self.activation is None else self.activation(x)

    def get_config(self):
        return {**super().get_config(), **self._quantizer_config()}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QuantConv2D(_QuantConvMixin, keras.layers.Conv2D):
    """`keras.layers.Conv2D` with quantized input and kernel (Larq's `QuantConv2D`).

    y = activation(conv(pad(q_in(x), pad_values), q_k(K)) + b).
    """

    def __init__(self, *args, input_quantizer=None, kernel_quantizer=None, pad_values=0.0, **kwargs):
        super().__init__(*args, **_resolve_constraints(kwargs))
        self._setup_quantizers(input_quantizer, {"kernel_quantizer": kernel_quantizer})
        self._setup_pad_values(pad_values)

    def convolution_op(self, inputs, kernel):
        inputs, padding = self._quantized_padded_input(inputs)
        return ops.conv(
            inputs,
            self._quantize_kernel("kernel_quantizer", kernel),
            strides=self.strides,
            padding=padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )

    def get_config(self):
        return {**super().get_config(), **self._conv_config()}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QuantDepthwiseConv2D(_QuantConvMixin, keras.layers.DepthwiseConv2D):
    """`keras.layers.DepthwiseConv2D` with quantized input and kernel (Larq's `QuantDepthwiseConv2D`).

    The kernel quantizer is ``depthwise_quantizer``, as in Larq (Keras names
    the constraint ``depthwise_constraint``).
    """

    _KERNELS = {"depthwise_quantizer": "kernel"}

    def __init__(self, *args, input_quantizer=None, depthwise_quantizer=None, pad_values=0.0, **kwargs):
        super().__init__(*args, **_resolve_constraints(kwargs))
        self._setup_quantizers(input_quantizer, {"depthwise_quantizer": depthwise_quantizer})
        self._setup_pad_values(pad_values)

    def call(self, inputs):
        channels = self.depth_multiplier * self._get_input_channel(inputs.shape)
        inputs, padding = self._quantized_padded_input(inputs)
        outputs = ops.depthwise_conv(
            inputs,
            self._quantize_kernel("depthwise_quantizer", self.kernel),
            strides=self.strides,
            padding=padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )
        return self._bias_and_activation(outputs, channels)

    def get_config(self):
        return {**super().get_config(), **self._conv_config()}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QuantSeparableConv2D(_QuantConvMixin, keras.layers.SeparableConv2D):
    """`keras.layers.SeparableConv2D` with quantized input and kernels (Larq's `QuantSeparableConv2D`).

    y = activation(pointwise(depthwise(pad(q_in(x)), q_d(D)), q_p(P)) + b),
    with ``depthwise_quantizer`` q_d and ``pointwise_quantizer`` q_p.
    """

    _KERNELS = {"depthwise_quantizer": "depthwise_kernel", "pointwise_quantizer": "pointwise_kernel"}

    def __init__(
        self,
        *args,
        input_quantizer=None,
        depthwise_quantizer=None,
        pointwise_quantizer=None,
        pad_values=0.0,
        **kwargs,
    ):
        super().__init__(*args, **_resolve_constraints(kwargs))
        self._setup_quantizers(
            input_quantizer, {"depthwise_quantizer": depthwise_quantizer, "pointwise_quantizer": pointwise_quantizer}
        )
        self._setup_pad_values(pad_values)

    def call(self, inputs):
        inputs, padding = self._quantized_padded_input(inputs)
        outputs = ops.separable_conv(
            inputs,
            self._quantize_kernel("depthwise_quantizer", self.depthwise_kernel),
            self._quantize_kernel("pointwise_quantizer", self.pointwise_kernel),
            strides=self.strides,
            padding=padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )
        return self._bias_and_activation(outputs, self.filters)

    def get_config(self):
        return {**super().get_config(), **self._conv_config()}
