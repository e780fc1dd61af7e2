"""Quantizers with Larq's names and Larq's forward and backward behaviour.

Larq 0.14 does not import under Keras 3 (it subclasses `tf.keras` layers that
Keras 3 removed), so bnas_tf carries these quantizers, written on
`keras.ops`. Each is available three ways, as in Larq:

```python
BinarizedConv2D(16, 3, input_quantizer="ste_sign")
BinarizedConv2D(16, 3, input_quantizer={"class_name": "SteSign",
                                        "config": {"clip_value": 1.0}})
BinarizedConv2D(16, 3, input_quantizer=quantizers.SteSign(clip_value=1.0))
```

The functional forms (`ste_sign(x)`, ...) are plain functions with a custom
gradient; the classes are serializable Keras layers carrying a `precision`
attribute (bits) used by the model summary.

The sign never returns 0: `sign(x) = sign(sign(x) + 0.1)` (Larq's
`larq.math.sign`). Larq Compute Engine recognises exactly this pattern on the
input of a convolution and turns it into a bit-packed `LceQuantize`.
"""

import keras
from keras import ops

from bnas_tf import metrics as bnas_metrics
from bnas_tf.errors import ConfigError

_PACKAGE = "bnas_tf"


def sign(x):
    """Sign that is never zero: -1 for x < 0, +1 for x >= 0 (Larq `math.sign`)."""
    return ops.sign(ops.add(ops.sign(x), 0.1))


def heaviside(x):
    """Heaviside step with values {0, 1}: 1 for x > 0, else 0."""
    return ops.sign(ops.relu(x))


def _clipped_gradient(x, dy, clip_value):
    """dy * 1{|x| <= clip_value}; the identity when clip_value is None."""
    if clip_value is None:
        return dy
    return ops.where(ops.less_equal(ops.abs(x), clip_value), dy, ops.zeros_like(dy))


def _tensor(x):
    """A tensor (not a variable) for a custom-gradient function to close over."""
    return ops.copy(x)


def _upstream(args, upstream):
    """Keras 3's custom-gradient calling convention, for every backend."""
    return args[0] if upstream is None else upstream


def ste_sign(x, clip_value=1.0):
    r"""Sign binarization with the straight-through estimator.

    Forward: q(x) = -1 if x < 0 else +1 (never 0).
    Backward: dq/dx = 1{|x| <= clip_value} (Eq. 16 of the BNAS paper with
    clip_value = 1; the identity when clip_value is None).

    Reference: Courbariaux et al., "Binarized Neural Networks", 2016.
    """

    @ops.custom_gradient
    def _call(x):
        def grad(*args, upstream=None):
            return _clipped_gradient(x, _upstream(args, upstream), clip_value)

        return sign(x), grad

    return _call(_tensor(x))


def approx_sign(x):
    r"""Sign binarization with the ApproxSign gradient of Bi-Real Net.

    Forward: q(x) = -1 if x < 0 else +1.
    Backward: dq/dx = (2 - 2|x|) for |x| <= 1, else 0.

    Reference: Liu et al., "Bi-Real Net", ECCV 2018.
    """

    @ops.custom_gradient
    def _call(x):
        def grad(*args, upstream=None):
            dy = _upstream(args, upstream)
            abs_x = ops.abs(x)
            return ops.where(
                ops.less_equal(abs_x, 1.0), (1.0 - abs_x) * 2.0 * dy, ops.zeros_like(dy)
            )

        return sign(x), grad

    return _call(_tensor(x))


def swish_sign(x, beta=5.0):
    r"""Sign binarization with the SignSwish gradient of BNN+.

    Forward: q(x) = -1 if x < 0 else +1.
    Backward: dq/dx = beta * (2 - beta*x * tanh(beta*x / 2)) / (1 + cosh(beta*x)).

    Reference: Darabi et al., "BNN+: Improved Binary Network Training", 2018.
    """

    @ops.custom_gradient
    def _call(x):
        def grad(*args, upstream=None):
            dy = _upstream(args, upstream)
            b_x = beta * x
            return dy * beta * (2.0 - b_x * ops.tanh(b_x * 0.5)) / (1.0 + ops.cosh(b_x))

        return sign(x), grad

    return _call(_tensor(x))


def magnitude_aware_sign(x, clip_value=1.0):
    r"""Sign scaled per output channel by the mean absolute value (Bi-Real Net).

    Forward: q(x) = a_c * sign(x), a_c = mean(|x|) over every axis but the last
    (the closed-form XNOR-Net amplitude); a_c is a constant for the gradient.
    Backward: dq/dx = a_c * 1{|x| <= clip_value}.
    """
    scale = ops.stop_gradient(ops.mean(ops.abs(x), axis=tuple(range(len(x.shape) - 1))))
    return scale * ste_sign(x, clip_value=clip_value)


def ste_tern(x, threshold_value=0.05, ternary_weight_networks=False, clip_value=1.0):
    r"""Ternarization with the straight-through estimator.

    Forward: q(x) = +1 if x > D, 0 if |x| < D, -1 if x < -D, where D is
    `threshold_value`, or D = 0.7 * mean(|x|) with `ternary_weight_networks`.
    Backward: dq/dx = 1{|x| <= clip_value}.

    Reference: Li et al., "Ternary Weight Networks", 2016.
    """

    @ops.custom_gradient
    def _call(x):
        if ternary_weight_networks:
            threshold = 0.7 * ops.mean(ops.abs(x))
        else:
            threshold = threshold_value

        def grad(*args, upstream=None):
            return _clipped_gradient(x, _upstream(args, upstream), clip_value)

        return ops.sign(ops.sign(x + threshold) + ops.sign(x - threshold)), grad

    return _call(_tensor(x))


def ste_heaviside(x, clip_value=1.0):
    r"""Binarization to {0, 1}: forward 1{x > 0}; backward 1{|x| <= clip_value}."""

    @ops.custom_gradient
    def _call(x):
        def grad(*args, upstream=None):
            return _clipped_gradient(x, _upstream(args, upstream), clip_value)

        return heaviside(x), grad

    return _call(_tensor(x))


def _k_bit_identity_grad(x, k_bit):
    """round(x * n) / n with n = 2^k - 1, identity gradient."""

    @ops.custom_gradient
    def _call(x):
        n = 2**k_bit - 1

        def grad(*args, upstream=None):
            return _upstream(args, upstream)

        return ops.round(x * n) / n, grad

    return _call(_tensor(x))


def dorefa_quantizer(x, k_bit=2, mode="activations"):
    r"""k-bit quantizer of DoReFa-Net.

    activations: q(x) = round(clip(x, 0, 1) * n) / n, n = 2^k - 1; the gradient
    is 1{0 <= x <= 1} (clip's gradient times the identity).
    weights: t = tanh(x); u = t / (2 max|t|) + 1/2 (max|t| a constant for the
    gradient); q = 2 * round(u * n) / n - 1.

    Reference: Zhou et al., "DoReFa-Net", 2016.
    """
    if mode == "activations":
        x = ops.clip(x, 0.0, 1.0)
    else:
        limited = ops.tanh(x)
        dividend = ops.stop_gradient(ops.max(ops.abs(limited)))
        x = ops.divide_no_nan(limited, 2.0 * dividend) + 0.5
    outputs = _k_bit_identity_grad(x, k_bit)
    if mode == "weights":
        outputs = 2.0 * outputs - 1.0
    return outputs


def _check_clip(clip_value):
    if clip_value is not None and not clip_value > 0:
        raise ConfigError(
            "Invalid `clip_value`: expected a positive number or None. "
            f"Received: clip_value={clip_value!r}"
        )
    return clip_value


class Quantizer(keras.layers.Layer):
    """Base class: an element-wise quantizer; `precision` is its bit width.

    ``metrics``: names of training metrics to keep on the quantized output,
    as Larq's quantizers take them; only ``"flip_ratio"``
    (`bnas_tf.metrics.FlipRatio`: the mean fraction of the quantized values,
    e.g. the binarized kernel's signs, that changed between calls). The metric
    is created in `build` (it needs the full shape, so it suits kernel
    quantizers), updated on every call and reported by `fit` as
    ``flip_ratio/<quantizer name>``.
    """

    precision = None

    def __init__(self, metrics=None, **kwargs):
        super().__init__(**kwargs)
        self.quantizer_metrics = bnas_metrics.check(metrics)
        self.flip_ratio = None

    def build(self, input_shape):
        if "flip_ratio" in self.quantizer_metrics and self.flip_ratio is None:
            # int8 holds every level of a quantizer up to 7 bits exactly (Larq's choice).
            values_dtype = "int8" if self.precision is not None and self.precision <= 7 else "int32"
            self.flip_ratio = bnas_metrics.FlipRatio(values_dtype=values_dtype, name=f"flip_ratio/{self.name}")
            self.flip_ratio.build(input_shape)
        super().build(input_shape)

    def _observe(self, outputs, levels=None):
        """Updates the quantizer's metrics; returns `outputs` unchanged.

        The metrics watch `levels`, the integer level of each output (by
        default the output itself: the ±1 of a sign, the -1/0/+1 of a
        ternarization). Quantizers whose outputs are scaled pass the level
        so that a change of scale is not counted as a flip.
        """
        if self.flip_ratio is not None:
            self.flip_ratio.update_state(outputs if levels is None else levels)
        return outputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        # Written only when set, so that a config without metrics is Larq's exactly.
        if self.quantizer_metrics:
            config["metrics"] = list(self.quantizer_metrics)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class NoOp(Quantizer):
    """Identity quantizer that only records a precision (e.g. 8 bits)."""

    def __init__(self, precision=32, **kwargs):
        super().__init__(**kwargs)
        self.precision = precision

    def call(self, inputs):
        return self._observe(inputs)

    def get_config(self):
        return {**super().get_config(), "precision": self.precision}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SteSign(Quantizer):
    """Layer form of `ste_sign`."""

    precision = 1

    def __init__(self, clip_value=1.0, **kwargs):
        super().__init__(**kwargs)
        self.clip_value = _check_clip(clip_value)

    def call(self, inputs):
        return self._observe(ste_sign(inputs, clip_value=self.clip_value))

    def get_config(self):
        return {**super().get_config(), "clip_value": self.clip_value}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ApproxSign(Quantizer):
    """Layer form of `approx_sign`."""

    precision = 1

    def call(self, inputs):
        return self._observe(approx_sign(inputs))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SwishSign(Quantizer):
    """Layer form of `swish_sign`."""

    precision = 1

    def __init__(self, beta=5.0, **kwargs):
        super().__init__(**kwargs)
        if not beta > 0:
            raise ConfigError(f"Invalid `beta`: expected a positive number. Received: beta={beta!r}")
        self.beta = beta

    def call(self, inputs):
        return self._observe(swish_sign(inputs, beta=self.beta))

    def get_config(self):
        return {**super().get_config(), "beta": self.beta}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MagnitudeAwareSign(Quantizer):
    """Layer form of `magnitude_aware_sign`."""

    precision = 1

    def __init__(self, clip_value=1.0, **kwargs):
        super().__init__(**kwargs)
        self.clip_value = _check_clip(clip_value)

    def call(self, inputs):
        # The level is the sign: a new per-channel scale alone flips nothing.
        return self._observe(magnitude_aware_sign(inputs, clip_value=self.clip_value), levels=sign(inputs))

    def get_config(self):
        return {**super().get_config(), "clip_value": self.clip_value}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SteTern(Quantizer):
    """Layer form of `ste_tern`."""

    precision = 2

    def __init__(self, threshold_value=0.05, ternary_weight_networks=False, clip_value=1.0, **kwargs):
        super().__init__(**kwargs)
        self.threshold_value = threshold_value
        self.ternary_weight_networks = bool(ternary_weight_networks)
        self.clip_value = _check_clip(clip_value)

    def call(self, inputs):
        outputs = ste_tern(
            inputs,
            threshold_value=self.threshold_value,
            ternary_weight_networks=self.ternary_weight_networks,
            clip_value=self.clip_value,
        )
        return self._observe(outputs)

    def get_config(self):
        return {
            **super().get_config(),
            "threshold_value": self.threshold_value,
            "ternary_weight_networks": self.ternary_weight_networks,
            "clip_value": self.clip_value,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SteHeaviside(Quantizer):
    """Layer form of `ste_heaviside`."""

    precision = 1

    def __init__(self, clip_value=1.0, **kwargs):
        super().__init__(**kwargs)
        self.clip_value = _check_clip(clip_value)

    def call(self, inputs):
        return self._observe(ste_heaviside(inputs, clip_value=self.clip_value))

    def get_config(self):
        return {**super().get_config(), "clip_value": self.clip_value}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DoReFa(Quantizer):
    """Layer form of `dorefa_quantizer`; `precision` is `k_bit`."""

    def __init__(self, k_bit=2, mode="activations", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("activations", "weights"):
            raise ConfigError(
                "Invalid `mode`: expected 'activations' or 'weights'. " f"Received: mode={mode!r}"
            )
        if not isinstance(k_bit, int) or k_bit < 1:
            raise ConfigError(f"Invalid `k_bit`: expected an integer >= 1. Received: k_bit={k_bit!r}")
        self.precision = k_bit
        self.mode = mode

    def call(self, inputs):
        outputs = dorefa_quantizer(inputs, k_bit=self.precision, mode=self.mode)
        if self.flip_ratio is None:
            return outputs
        # The level index i in {0, ..., n}: outputs are i / n (activations) or 2 i / n - 1 (weights).
        n = 2**self.precision - 1
        unit = outputs if self.mode == "activations" else (outputs + 1.0) * 0.5
        return self._observe(outputs, levels=ops.round(unit * n))

    def get_config(self):
        return {**super().get_config(), "k_bit": self.precision, "mode": self.mode}


# Larq's aliases: `DoReFaQuantizer` and `NoOpQuantizer` are older class names.
DoReFaQuantizer = DoReFa
NoOpQuantizer = NoOp

_ALIASES = {
    "ste_sign": SteSign,
    "approx_sign": ApproxSign,
    "swish_sign": SwishSign,
    "magnitude_aware_sign": MagnitudeAwareSign,
    "ste_tern": SteTern,
    "ste_heaviside": SteHeaviside,
    "dorefa_quantizer": DoReFa,
    "noop": NoOp,
}
_CLASSES = {
    cls.__name__: cls
    for cls in (SteSign, ApproxSign, SwishSign, MagnitudeAwareSign, SteTern, SteHeaviside, DoReFa, NoOp)
}
_CLASSES.update({"DoReFaQuantizer": DoReFa, "NoOpQuantizer": NoOp})


def serialize(quantizer):
    """Returns the Keras config dict of a quantizer instance."""
    return keras.saving.serialize_keras_object(quantizer)


def deserialize(config, custom_objects=None):
    """Builds a quantizer from `serialize`'s output or a `{"class_name", "config"}` dict."""
    if isinstance(config, dict) and "module" not in config:
        # Larq also accepts its aliases here: {"class_name": "ste_sign", "config": {...}}.
        cls = _CLASSES.get(config.get("class_name")) or _ALIASES.get(config.get("class_name"))
        if cls is not None:
            return cls.from_config(config.get("config") or {})
    return keras.saving.deserialize_keras_object(
        config, custom_objects={**_CLASSES, **(custom_objects or {})}
    )


def names():
    """The string identifiers `get` accepts."""
    return sorted(set(_ALIASES) | set(_CLASSES))


def get(identifier):
    """Returns a quantizer from a name, a config dict, an instance or a callable.

    `None` gives `None` (no quantization). Unknown names raise a ConfigError
    that lists the known ones.
    """
    if identifier is None:
        return None
    if isinstance(identifier, str):
        cls = _ALIASES.get(identifier) or _CLASSES.get(identifier)
        if cls is None:
            raise ConfigError(
                f"Unknown quantizer {identifier!r}: expected one of {', '.join(names())}. "
                f"Received: quantizer={identifier!r}"
            )
        return cls()
    if isinstance(identifier, dict):
        try:
            return deserialize(identifier)
        except (TypeError, ValueError) as err:
            raise ConfigError(
                f"Could not build a quantizer from {identifier!r}: {err}. "
                f"Received: quantizer={identifier!r}"
            ) from None
    if callable(identifier):
        return identifier
    raise ConfigError(
        "Could not interpret quantizer identifier: expected a name, a config dict, "
        f"a Quantizer or a callable. Received: quantizer={identifier!r}"
    )
