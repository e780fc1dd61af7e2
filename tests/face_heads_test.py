"""bnas_tf.face.heads: the logits against NumPy transcriptions of the formulas, saving, errors.

- SoftmaxHead, CosFace and ArcFace logits (with labels [batch] and
  [batch, 1], and without labels) against formulas written here in NumPy
  from the papers' definitions (ArcFace through arccos / cos(theta + m), not
  the layer's cos m / sin m expansion);
- ArcFace's two fallbacks, with embeddings set near the opposite of their
  class weight (theta_y > pi - m) so that the fallback branch is taken;
- float32 variables and logits under a mixed_float16 policy;
- `.keras` round trip of Model([embeddings, labels] -> head) with random
  weights, get_config / from_config, make_head;
- finite gradients, also at cos theta = +-1;
- bad arguments raise ConfigError naming the argument.
"""

import math
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from bnas_tf.errors import ConfigError  # noqa: E402
from bnas_tf.face import heads  # noqa: E402

D, C, B = 6, 5, 8


# --------------------------------------------------------------------------
# NumPy transcriptions of the formulas
# --------------------------------------------------------------------------


def np_cosines(x, w):
    """cos theta_j = <x / |x|, W_j / |W_j|>, W_j the columns of w [D, C]."""
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    wn = w / np.linalg.norm(w, axis=0, keepdims=True)
    return np.clip(xn @ wn, -1.0, 1.0)


def np_cosface(x, w, y, s, m):
    cos = np_cosines(x, w)
    if y is None:
        return s * cos
    out = cos.copy()
    for i, label in enumerate(y):
        out[i, label] -= m
    return s * out


def np_arcface(x, w, y, s, m, easy_margin=False):
    cos = np_cosines(x, w)
    out = cos.copy()
    if y is not None:
        for i, label in enumerate(y):
            c = cos[i, label]
            theta = math.acos(c)
            if easy_margin:
                out[i, label] = math.cos(theta + m) if c > 0 else c
            elif theta + m <= math.pi:  # cos theta > cos(pi - m)
                out[i, label] = math.cos(theta + m)
            else:
                out[i, label] = c - m * math.sin(m)
    return s * out


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(B, D)).astype(np.float32)
    w = rng.normal(size=(D, C)).astype(np.float32)
    y = rng.integers(0, C, size=B)
    y[:C] = np.arange(C)  # every class labelled at least once
    return x, w, y


def _built(head, w):
    head.build((None, w.shape[0]))
    head.kernel.assign(w)
    return head


def _labels(y, shape):
    return y.astype(np.int32) if shape == "flat" else y.astype(np.int32)[:, None]


# --------------------------------------------------------------------------
# Logits
# --------------------------------------------------------------------------


@pytest.mark.parametrize("label_shape", ["flat", "column"])
def test_softmax_head_logits(label_shape):
    x, w, y = _data()
    head = _built(heads.SoftmaxHead(C), w)
    expected = x.astype(np.float64) @ w
    np.testing.assert_allclose(np.asarray(head([x, _labels(y, label_shape)])), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(head(x)), expected, rtol=1e-5, atol=1e-5)
    assert [v.name for v in head.weights] == ["kernel"]

    biased = _built(heads.SoftmaxHead(C, use_bias=True), w)
    b = np.linspace(-1.0, 1.0, C).astype(np.float32)
    biased.bias.assign(b)
    np.testing.assert_allclose(np.asarray(biased(x)), expected + b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("label_shape", ["flat", "column"])
@pytest.mark.parametrize("scale,margin", [(None, None), (64.0, 0.35), (2.0, 0.0)])
def test_cosface_logits(scale, margin, label_shape):
    x, w, y = _data(1)
    options = {k: v for k, v in (("scale", scale), ("margin", margin)) if v is not None}
    head = _built(heads.CosFace(C, **options), w)
    s, m = options.get("scale", 30.0), options.get("margin", 0.4)
    got = np.asarray(head([x, _labels(y, label_shape)]))
    np.testing.assert_allclose(got, np_cosface(x, w, y, s, m), atol=2e-5 * s)
    np.testing.assert_allclose(np.asarray(head(x)), np_cosface(x, w, None, s, m), atol=2e-5 * s)
    np.testing.assert_allclose(np.asarray(head([x])), np_cosface(x, w, None, s, m), atol=2e-5 * s)
    # The margin lowers exactly the labelled logit, by s * m.
    diff = np.asarray(head(x)) - got
    np.testing.assert_allclose(diff, s * m * np.eye(C)[y], atol=1e-4 * s)


def _near_opposite(w, y, rng, fraction):
    """Embeddings, the first `fraction` of them close to -W_y (theta_y near pi)."""
    x = rng.normal(size=(len(y), w.shape[0])).astype(np.float32)
    k = int(len(y) * fraction)
    x[:k] = -w[:, y[:k]].T + 0.05 * rng.normal(size=(k, w.shape[0]))
    return x


@pytest.mark.parametrize("label_shape", ["flat", "column"])
@pytest.mark.parametrize("easy_margin", [False, True])
@pytest.mark.parametrize("scale,margin", [(None, None), (64.0, 0.3)])
def test_arcface_logits_both_branches(scale, margin, easy_margin, label_shape):
    rng = np.random.default_rng(2)
    _, w, y = _data(2)
    y = np.concatenate([y, y])
    x = _near_opposite(w, y, rng, 0.5)
    options = {k: v for k, v in (("scale", scale), ("margin", margin)) if v is not None}
    head = _built(heads.ArcFace(C, easy_margin=easy_margin, **options), w)
    s, m = options.get("scale", 32.0), options.get("margin", 0.5)

    theta_y = np.arccos(np_cosines(x, w)[np.arange(len(y)), y])
    # Both branches of the chosen fallback are taken, away from its boundary.
    boundary = math.pi / 2 if easy_margin else math.pi - m
    assert (theta_y > boundary + 1e-2).sum() >= 4 and (theta_y < boundary - 1e-2).sum() >= 4

    got = np.asarray(head([x, _labels(y, label_shape)]))
    np.testing.assert_allclose(got, np_arcface(x, w, y, s, m, easy_margin), atol=5e-5 * s)
    np.testing.assert_allclose(np.asarray(head(x)), s * np_cosines(x, w), atol=5e-5 * s)
    # Off-target logits are untouched by the labels.
    off = np.eye(C)[y] == 0
    np.testing.assert_allclose(got[off], np.asarray(head(x))[off], atol=1e-6 * s)


def test_arcface_fallback_value_by_hand():
    """theta_y = pi exactly (x = -W_y): the fallback gives s (-1 - m sin m), not s cos(pi + m)."""
    w = np.eye(3, dtype=np.float32)
    head = _built(heads.ArcFace(3, scale=10.0, margin=0.5), w)
    x = np.array([[-2.0, 0.0, 0.0], [0.0, 3.0, 0.0]], np.float32)
    got = np.asarray(head([x, np.array([0, 1])]))
    expected = 10.0 * np.array([[-1.0 - 0.5 * math.sin(0.5), 0.0, 0.0], [0.0, math.cos(0.5), 0.0]])
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_mixed_float16_policy_computes_in_float32():
    x, w, y = _data(3)
    try:
        keras.mixed_precision.set_global_policy("mixed_float16")
        for head in (heads.SoftmaxHead(C), heads.CosFace(C), heads.ArcFace(C)):
            _built(head, w)
            assert head.kernel.dtype == "float32" and head.compute_dtype == "float32"
            out = head([tf.constant(x, tf.float16), tf.constant(y)])
            assert out.dtype == tf.float32
            x16 = x.astype(np.float16).astype(np.float32)
            if isinstance(head, heads.SoftmaxHead):
                expected = x16.astype(np.float64) @ w
            elif isinstance(head, heads.CosFace):
                expected = np_cosface(x16, w, y, 30.0, 0.4)
            else:
                expected = np_arcface(x16, w, y, 32.0, 0.5)
            np.testing.assert_allclose(np.asarray(out), expected, atol=1e-3)
    finally:
        keras.mixed_precision.set_global_policy("float32")


# --------------------------------------------------------------------------
# Saving, config, make_head
# --------------------------------------------------------------------------

HEAD_VARIANTS = [
    (heads.SoftmaxHead, dict(num_classes=C)),
    (heads.SoftmaxHead, dict(num_classes=C, use_bias=True)),
    (heads.CosFace, dict(num_classes=C)),
    (heads.CosFace, dict(num_classes=C, scale=16.0, margin=0.25)),
    (heads.ArcFace, dict(num_classes=C)),
    (heads.ArcFace, dict(num_classes=C, scale=64.0, margin=0.3, easy_margin=True)),
]
VARIANT_IDS = ["softmax", "softmax-bias", "cosface", "cosface-opts", "arcface", "arcface-opts"]


@pytest.mark.parametrize("cls,options", HEAD_VARIANTS, ids=VARIANT_IDS)
def test_keras_round_trip(cls, options, tmp_path):
    rng = np.random.default_rng(4)
    x, _, y = _data(4)
    embeddings = keras.Input((D,), name="embeddings")
    labels = keras.Input((), dtype="int32", name="labels")
    head = cls(name="head", **options)
    model = keras.Model([embeddings, labels], head([embeddings, labels]))
    for v in head.weights:  # a fresh head would not pass
        v.assign(rng.normal(size=v.shape).astype(np.float32))
    expected = np.asarray(model([x, y]))
    path = tmp_path / "head.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(np.asarray(loaded([x, y])), expected)
    twin = loaded.get_layer("head")
    assert type(twin) is cls and twin.get_config() == head.get_config()
    assert [v.name for v in twin.weights] == [v.name for v in head.weights]
    for a, b in zip(head.weights, twin.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(b), np.asarray(a))


@pytest.mark.parametrize("cls,options", HEAD_VARIANTS, ids=VARIANT_IDS)
def test_get_config_from_config(cls, options):
    head = cls(**options)
    config = head.get_config()
    for key, value in options.items():
        assert config[key] == value
    clone = cls.from_config(config)
    assert clone.get_config() == config
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(head))
    assert type(revived) is cls and revived.get_config() == config


def test_make_head_kinds_and_defaults():
    assert heads.HEADS == ("softmax", "cosface", "arcface")
    soft = heads.make_head("softmax", 7)
    assert type(soft) is heads.SoftmaxHead and soft.num_classes == 7 and not soft.use_bias
    cos = heads.make_head("cosface", 7)
    assert type(cos) is heads.CosFace and (cos.scale, cos.margin) == (30.0, 0.4)
    arc = heads.make_head("arcface", 7)
    assert type(arc) is heads.ArcFace and (arc.scale, arc.margin, arc.easy_margin) == (32.0, 0.5, False)
    arc = heads.make_head("arcface", 7, scale=64.0)
    assert (arc.scale, arc.margin) == (64.0, 0.5)
    cos = heads.make_head("cosface", 7, margin=0.35)
    assert (cos.scale, cos.margin) == (30.0, 0.35)


# --------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", heads.HEADS)
def test_gradients_finite_also_at_cos_plus_minus_one(kind):
    _, w, _ = _data(5)
    head = _built(heads.make_head(kind, C), w)
    # Rows 0-1 exactly along +W_0 / -W_1 (cos theta_y = +-1), the rest random.
    x = np.concatenate([w[:, [0]].T, -w[:, [1]].T, np.random.default_rng(5).normal(size=(4, D))]).astype(np.float32)
    y = np.array([0, 1, 2, 3, 4, 0])
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        logits = head([xt, tf.constant(y)])
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
    grad_x, grad_w = tape.gradient(loss, [xt, head.kernel])
    assert np.isfinite(loss.numpy())
    assert np.isfinite(grad_x.numpy()).all() and np.isfinite(np.asarray(grad_w)).all()
    assert np.abs(np.asarray(grad_w)).sum() > 0


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------

BAD = [
    (heads.SoftmaxHead, dict(num_classes=0), "num_classes"),
    (heads.SoftmaxHead, dict(num_classes=2.5), "num_classes"),
    (heads.SoftmaxHead, dict(num_classes=True), "num_classes"),
    (heads.SoftmaxHead, dict(num_classes=3, use_bias="yes"), "use_bias"),
    (heads.CosFace, dict(num_classes=-1), "num_classes"),
    (heads.CosFace, dict(num_classes=3, scale=0.0), "scale"),
    (heads.CosFace, dict(num_classes=3, scale=float("inf")), "scale"),
    (heads.CosFace, dict(num_classes=3, scale="30"), "scale"),
    (heads.CosFace, dict(num_classes=3, margin=-0.1), "margin"),
    (heads.CosFace, dict(num_classes=3, margin=float("nan")), "margin"),
    (heads.ArcFace, dict(num_classes=3, scale=-1.0), "scale"),
    (heads.ArcFace, dict(num_classes=3, margin=2.0), "margin"),
    (heads.ArcFace, dict(num_classes=3, margin=-0.5), "margin"),
    (heads.ArcFace, dict(num_classes=3, easy_margin=1), "easy_margin"),
    (heads.ArcFace, dict(num_classes=3, dtype="mixed_float16"), "dtype"),
    (heads.CosFace, dict(num_classes=3, dtype="float16"), "dtype"),
]


@pytest.mark.parametrize("cls,options,name", BAD, ids=[f"{c.__name__}-{n}-{i}" for i, (c, _, n) in enumerate(BAD)])
def test_bad_arguments_raise_config_error(cls, options, name):
    with pytest.raises(ConfigError, match=f"Invalid `{name}`.*Received: {name}="):
        cls(**options)


@pytest.mark.parametrize("kwargs,name", [
    (dict(kind="sphereface", num_classes=3), "kind"),
    (dict(kind="softmax", num_classes=3, scale=30.0), "scale"),
    (dict(kind="softmax", num_classes=3, margin=0.5), "margin"),
    (dict(kind="arcface", num_classes=3, margin=3.0), "margin"),
    (dict(kind="cosface", num_classes=0), "num_classes"),
])
def test_make_head_errors(kwargs, name):
    with pytest.raises(ConfigError, match=f"Invalid `{name}`"):
        heads.make_head(kwargs.pop("kind"), kwargs.pop("num_classes"), **kwargs)


def test_bad_inputs():
    head = heads.CosFace(3)
    with pytest.raises(ConfigError, match=r"\[batch, D\]"):
        head.build((None, 4, 4))
    x = np.zeros((2, 4), np.float32)
    with pytest.raises(ConfigError, match="3 inputs"):
        heads.CosFace(3)([x, np.zeros(2, np.int32), x])
    # A float32 dtype given explicitly (as from_config passes it) is accepted.
    assert heads.CosFace(3, dtype="float32").dtype_policy.name == "float32"
