"""Classification heads for face recognition training: softmax, CosFace, ArcFace.

IJCV Sec. 4.4 (Table 5) trains the face networks on CASIA-WebFace's
identities with a margin loss on top of the embedding, with the authors'
code base Face_Pytorch (github.com/wujiyang/Face_Pytorch). The head maps an
embedding x [batch, D] to logits [batch, num_classes]; the cross-entropy of
those logits is the training loss, and the head is dropped after training:
verification (`bnas_tf.face.verify`) compares embeddings only.

- `SoftmaxHead`: a linear classifier, logits = x W (+ b) (Face_Pytorch's
  ``InnerProduct``);
- `CosFace` (additive cosine margin, Wang et al. 2018):
  logits_j = s (cos theta_j - m [j = y]);
- `ArcFace` (additive angular margin, Deng et al. 2019):
  logits_y = s cos(theta_y + m), logits_j = s cos theta_j for j != y,
  with the fallback of insightface / Face_Pytorch where theta_y + m > pi.

theta_j is the angle between the embedding and class j's weight column:
cos theta_j = <x / |x|, W_j / |W_j|>. The margin heads need the label in the
forward pass: ``head([embeddings, labels])`` applies the margin to the
labelled class, ``head(embeddings)`` (inference) returns s cos theta_j for
every class (x W + b for the softmax head).

Every head keeps one weight, ``kernel`` [D, num_classes], Glorot (Xavier)
uniform as Face_Pytorch's ``nn.init.xavier_uniform_``, and computes in float32
whatever the global dtype policy: the layer's policy is float32, so under
``mixed_float16`` the float16 embeddings are cast up and the logits come out
in float32 (a scale of 30 times cosines needs float32's resolution, and the
softmax cross-entropy that follows should run in float32 anyway).
"""

import math

import keras
import numpy as np
from keras import ops

from bnas_tf.errors import ConfigError, bad_value

_PACKAGE = "bnas_tf"

HEADS = ("softmax", "cosface", "arcface")

# Face_Pytorch's defaults: margin/CosineMarginProduct.py (s=30, m=0.40) and
# margin/ArcMarginProduct.py (s=32, m=0.50, easy_margin=False); its train.py
# passes --scale_size 32 to ArcFace.
COSFACE_SCALE = 30.0
COSFACE_MARGIN = 0.4
ARCFACE_SCALE = 32.0
ARCFACE_MARGIN = 0.5

# Least squared norm in the normalisation, and least sin^2 theta under the
# square root: keeps the gradients finite at |x| = 0 and at cos theta = +-1.
_NORM_EPSILON = 1e-12
_SIN2_EPSILON = 1e-12


def _check_num_classes(value):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise bad_value("num_classes", value, "a positive integer")
    return int(value)


def _check_real(name, value, low, high, expected):
    """A finite real in [low, high) (`high` None: no upper bound); bools are refused."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    ok = ok and math.isfinite(value) and value >= low and (high is None or value < high)
    if not ok:
        raise bad_value(name, value, expected)
    return float(value)


def _check_scale(value):
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if not ok or not math.isfinite(value) or value <= 0:
        raise bad_value("scale", value, "a positive finite number")
    return float(value)


def _check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise bad_value(name, value, "True or False")
    return bool(value)


def _float32_policy(kwargs):
    """Sets kwargs["dtype"] to float32; a policy computing or storing in anything else is refused."""
    dtype = kwargs.get("dtype")
    if dtype is not None:
        try:
            policy = keras.dtype_policies.get(dtype)
        except (ValueError, TypeError) as e:
            raise bad_value("dtype", dtype, "float32 (the heads compute in float32)") from e
        if policy.compute_dtype != "float32" or policy.variable_dtype != "float32":
            raise bad_value("dtype", dtype, "float32 (the heads compute in float32)")
    kwargs["dtype"] = "float32"
    return kwargs


def _split_inputs(inputs):
    """(embeddings, labels or None) of `head(x)` / `head([x])` / `head([x, labels])`."""
    if isinstance(inputs, (list, tuple)):
        if len(inputs) == 1:
            return inputs[0], None
        if len(inputs) == 2:
            return inputs[0], inputs[1]
        raise ConfigError(f"A face head takes `embeddings` or `[embeddings, labels]`; received {len(inputs)} inputs.")
    return inputs, None


def _embedding_shape(input_shape):
    """The embeddings' shape from the shape(s) `build` receives."""
    if isinstance(input_shape, (list, tuple)) and input_shape and isinstance(input_shape[0], (list, tuple)):
        return tuple(input_shape[0])
    return tuple(input_shape)


class _Head(keras.layers.Layer):
    """Base: the kernel, the input handling and the config of the heads."""

    def __init__(self, num_classes, **kwargs):
        super().__init__(**_float32_policy(kwargs))
        self.num_classes = _check_num_classes(num_classes)

    def build(self, input_shape):
        shape = _embedding_shape(input_shape)
        if len(shape) != 2 or shape[-1] is None:
            raise ConfigError(
                f"A face head takes embeddings of shape [batch, D] with D known. Received: shape={shape}"
            )
        self.kernel = self.add_weight(
            name="kernel",
            shape=(int(shape[-1]), self.num_classes),
            initializer="glorot_uniform",
            trainable=True,
        )

    def compute_output_shape(self, input_shape):
        return (_embedding_shape(input_shape)[0], self.num_classes)

    def _cosines(self, embeddings):
        """cos theta [batch, num_classes] of float32 `embeddings` [batch, D] and the kernel's columns."""
        x = embeddings * ops.rsqrt(ops.maximum(ops.sum(ops.square(embeddings), axis=-1, keepdims=True),
                                               _NORM_EPSILON))
        w = self.kernel * ops.rsqrt(ops.maximum(ops.sum(ops.square(self.kernel), axis=0, keepdims=True),
                                                _NORM_EPSILON))
        return ops.clip(ops.matmul(x, w), -1.0, 1.0)

    def _one_hot(self, labels):
        """[batch, num_classes] float32 indicator of the labels ([batch] or [batch, 1] integers)."""
        labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
        return ops.one_hot(labels, self.num_classes, dtype="float32")

    def call(self, inputs):
        embeddings, labels = _split_inputs(inputs)
        return self.logits(ops.cast(embeddings, "float32"), labels)

    def logits(self, embeddings, labels):
        raise NotImplementedError

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SoftmaxHead(_Head):
    """Plain linear classifier (Face_Pytorch's ``InnerProduct``): logits = x W (+ b).

    x [batch, D], W = ``kernel`` [D, num_classes], b = ``bias`` [num_classes]
    (only with ``use_bias=True``). Labels, if given, are ignored: the logits
    are the same in training and inference.

    Args:
        num_classes: number of identities.
        use_bias: add a bias b. Default False, as Face_Pytorch's
            ``InnerProduct`` (``F.linear(input, weight)``, no bias).
    """

    def __init__(self, num_classes, *, use_bias=False, **kwargs):
        super().__init__(num_classes, **kwargs)
        self.use_bias = _check_bool("use_bias", use_bias)

    def build(self, input_shape):
        super().build(input_shape)
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.num_classes,), initializer="zeros", trainable=True)

    def logits(self, embeddings, labels):
        out = ops.matmul(embeddings, self.kernel)
        return out if self.bias is None else out + self.bias

    def get_config(self):
        return {**super().get_config(), "use_bias": self.use_bias}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CosFace(_Head):
    """Additive cosine margin (CosFace / LMCL): logits_j = s (cos theta_j - m [j = y]).

    cos theta_j = <x / |x|, W_j / |W_j|>, W_j the j-th column of ``kernel``
    [D, num_classes]; [j = y] is 1 for the labelled class, else 0. Without
    labels (inference): s cos theta_j for every j.

    Args:
        num_classes: number of identities.
        scale: s > 0. Default 30, Face_Pytorch's (``CosineMarginProduct``).
        margin: m >= 0. Default 0.4, Face_Pytorch's.
    """

    def __init__(self, num_classes, *, scale=COSFACE_SCALE, margin=COSFACE_MARGIN, **kwargs):
        super().__init__(num_classes, **kwargs)
        self.scale = _check_scale(scale)
        self.margin = _check_real("margin", margin, 0.0, None, "a finite number >= 0")

    def logits(self, embeddings, labels):
        cosine = self._cosines(embeddings)
        if labels is not None:
            cosine = cosine - self.margin * self._one_hot(labels)
        return self.scale * cosine

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "margin": self.margin}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ArcFace(_Head):
    """Additive angular margin (ArcFace): s cos(theta_y + m) for the labelled class y.

    With cos theta_j = <x / |x|, W_j / |W_j|> (clipped to [-1, 1]) and
    sin theta_j = sqrt(max(1 - cos^2 theta_j, 1e-12)), the target logit is
    s phi(theta_y) and every other logit s cos theta_j, where

        phi = cos(theta + m) = cos theta cos m - sin theta sin m   if cos theta > cos(pi - m),
        phi = cos theta - m sin(pi - m) = cos theta - m sin m      otherwise

    (insightface's and Face_Pytorch's ``ArcMarginProduct``: for theta > pi - m,
    cos(theta + m) would grow again with theta; the fallback keeps the target
    logit decreasing in theta. It is not continuous at theta = pi - m: there
    cos(theta + m) = -1 and the fallback is -cos m - m sin m.) With
    ``easy_margin=True``: phi = cos(theta + m) if cos theta > 0, else cos theta.
    The floor 1e-12 under the square root only keeps the gradient finite at
    cos theta = +-1. Without labels (inference): s cos theta_j for every j.

    Args:
        num_classes: number of identities.
        scale: s > 0. Default 32, Face_Pytorch's (``ArcMarginProduct``, and
            its train.py's ``--scale_size``).
        margin: m in [0, pi / 2). Default 0.5, Face_Pytorch's.
        easy_margin: the alternative fallback above. Default False, Face_Pytorch's.
    """

    def __init__(self, num_classes, *, scale=ARCFACE_SCALE, margin=ARCFACE_MARGIN, easy_margin=False, **kwargs):
        super().__init__(num_classes, **kwargs)
        self.scale = _check_scale(scale)
        self.margin = _check_real("margin", margin, 0.0, math.pi / 2, "a number in [0, pi/2)")
        self.easy_margin = _check_bool("easy_margin", easy_margin)

    def logits(self, embeddings, labels):
        cosine = self._cosines(embeddings)
        if labels is None:
            return self.scale * cosine
        m = self.margin
        sine = ops.sqrt(ops.maximum(1.0 - ops.square(cosine), _SIN2_EPSILON))
        phi = cosine * math.cos(m) - sine * math.sin(m)
        if self.easy_margin:
            phi = ops.where(cosine > 0.0, phi, cosine)
        else:
            phi = ops.where(cosine > math.cos(math.pi - m), phi, cosine - m * math.sin(math.pi - m))
        one_hot = self._one_hot(labels)
        return self.scale * (one_hot * phi + (1.0 - one_hot) * cosine)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "margin": self.margin, "easy_margin": self.easy_margin}


def make_head(kind, num_classes, *, scale=None, margin=None):
    """The head `kind` ("softmax", "cosface" or "arcface") for `num_classes` identities.

    `scale` and `margin` of None take the head's default (Face_Pytorch's:
    CosFace s=30, m=0.4; ArcFace s=32, m=0.5); the softmax head has neither,
    and refuses them.
    """
    if kind not in HEADS:
        raise bad_value("kind", kind, f"one of {', '.join(HEADS)}")
    if kind == "softmax":
        for name, value in (("scale", scale), ("margin", margin)):
            if value is not None:
                raise bad_value(name, value, "None: the softmax head has no scale or margin")
        return SoftmaxHead(num_classes)
    options = {k: v for k, v in (("scale", scale), ("margin", margin)) if v is not None}
    return (CosFace if kind == "cosface" else ArcFace)(num_classes, **options)
