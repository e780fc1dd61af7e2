"""Larq model definitions run twice: by Larq under tf-keras, and by `bnas_tf.quant` under Keras 3.

Each entry of MODELS is Python source that defines ``model``. It is
executed after LARQ_IMPORTS in tests/larq_quant_reference.py (a subprocess
with TF_USE_LEGACY_KERAS=1, so ``tf.keras`` is tf-keras) and after
BNAS_IMPORTS in tests/quant_test.py (``tf.keras`` is Keras 3): porting a
model is changing its import lines, nothing else.

- ``mnist``: the model of Larq's "Introduction to BNNs with Larq" guide
  (docs/examples/mnist.ipynb), verbatim except that ``lq.layers.X`` is
  written ``lq_layers.X`` so that one import line names the layer module.
- ``mixed``: not from Larq's documentation; it covers what ``mnist`` does
  not: depthwise and separable layers, ``pad_values``, strides with "same"
  padding, biases, activations, magnitude-aware, approx, tern and DoReFa
  quantizers, a quantizer object with ``metrics=["flip_ratio"]``.

`randomize` and `experiment` use only the API common to both Kerases, so
the two processes run the same steps.
"""

import numpy as np
import tensorflow as tf

LARQ_IMPORTS = """
import tensorflow as tf
from larq import layers as lq_layers
from larq import quantizers as lq_quantizers
"""

BNAS_IMPORTS = """
import tensorflow as tf
from bnas_tf import quant as lq_layers
from bnas_tf import quantizers as lq_quantizers
"""

MNIST = """
# All quantized layers except the first will use the same options
kwargs = dict(input_quantizer="ste_sign",
              kernel_quantizer="ste_sign",
              kernel_constraint="weight_clip")

model = tf.keras.models.Sequential()

# In the first layer we only quantize the weights and not the input
model.add(lq_layers.QuantConv2D(32, (3, 3),
                                kernel_quantizer="ste_sign",
                                kernel_constraint="weight_clip",
                                use_bias=False,
                                input_shape=(28, 28, 1)))
model.add(tf.keras.layers.MaxPooling2D((2, 2)))
model.add(tf.keras.layers.BatchNormalization(scale=False))

model.add(lq_layers.QuantConv2D(64, (3, 3), use_bias=False, **kwargs))
model.add(tf.keras.layers.MaxPooling2D((2, 2)))
model.add(tf.keras.layers.BatchNormalization(scale=False))

model.add(lq_layers.QuantConv2D(64, (3, 3), use_bias=False, **kwargs))
model.add(tf.keras.layers.BatchNormalization(scale=False))
model.add(tf.keras.layers.Flatten())

model.add(lq_layers.QuantDense(64, use_bias=False, **kwargs))
model.add(tf.keras.layers.BatchNormalization(scale=False))
model.add(lq_layers.QuantDense(10, use_bias=False, **kwargs))
model.add(tf.keras.layers.BatchNormalization(scale=False))
model.add(tf.keras.layers.Activation("softmax"))
"""

MIXED = """
inputs = tf.keras.Input((11, 11, 3))
x = lq_layers.QuantConv2D(8, 3, strides=2, padding="same", pad_values=1.0,
                          kernel_quantizer=lq_quantizers.SteSign(metrics=["flip_ratio"]),
                          kernel_constraint="weight_clip")(inputs)
x = tf.keras.layers.BatchNormalization(momentum=0.9)(x)
x = lq_layers.QuantDepthwiseConv2D(3, padding="same", pad_values=1.0, depth_multiplier=2,
                                   input_quantizer="ste_sign", depthwise_quantizer="ste_sign",
                                   depthwise_constraint="weight_clip", use_bias=False)(x)
x = tf.keras.layers.BatchNormalization()(x)
x = lq_layers.QuantSeparableConv2D(12, 3, strides=2, padding="same", pad_values=-1.0,
                                   input_quantizer="approx_sign",
                                   depthwise_quantizer="magnitude_aware_sign",
                                   pointwise_quantizer=lq_quantizers.SteSign(clip_value=0.5),
                                   depthwise_constraint="weight_clip",
                                   pointwise_constraint="weight_clip", activation="relu")(x)
x = lq_layers.QuantConv2D(10, 1, input_quantizer="ste_heaviside", kernel_quantizer="ste_tern",
                          kernel_constraint=tf.keras.constraints.MaxNorm(2.0))(x)
x = lq_layers.QuantConv2D(6, 2, padding="same", input_quantizer="swish_sign",
                          kernel_quantizer=lq_quantizers.DoReFa(k_bit=2, mode="weights"))(x)
x = tf.keras.layers.GlobalAveragePooling2D()(x)
x = lq_layers.QuantDense(5, input_quantizer=lq_quantizers.DoReFa(k_bit=3), kernel_quantizer="ste_sign",
                         kernel_constraint="weight_clip", activation="tanh")(x)
outputs = lq_layers.QuantDense(4)(x)  # no quantizer: a plain Dense
model = tf.keras.Model(inputs, outputs)
"""

MODELS = {"mnist": MNIST, "mixed": MIXED}
INPUT_SHAPES = {"mnist": (6, 28, 28, 1), "mixed": (4, 11, 11, 3)}
OUTPUT_SHAPES = {"mnist": (6, 10), "mixed": (4, 4)}
LEARNING_RATE = 0.05
KERNEL_QUANTIZERS = ("kernel_quantizer", "depthwise_quantizer", "pointwise_quantizer")


def build(name, imports):
    """Runs MODELS[name] after `imports`; returns its `model`."""
    namespace = {}
    exec(imports + MODELS[name], namespace)  # noqa: S102 (test fixtures of this repository)
    return namespace["model"]


def layers(model):
    """The model's layers without the InputLayer (tf-keras lists it, Keras 3 does not)."""
    return [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]


def weights(model):
    """{"i/j": variable}: the j-th weight of the i-th layer, the same key in both Kerases."""
    return {f"{i}/{j}": w for i, layer in enumerate(layers(model)) for j, w in enumerate(layer.weights)}


def randomize(model, rng):
    """New values for every weight, drawn from `rng`, so that nothing is at its initial value.

    Kernels are uniform in [-1.3, 1.3] (some beyond the STE's and
    weight_clip's 1); BatchNorm statistics are centred near the sums the
    binary layers produce, so that their outputs change sign.
    """
    for key, w in weights(model).items():
        name = w.name.split("/")[-1].split(":")[0]
        shape = tuple(w.shape)
        if "kernel" in name:
            value = rng.uniform(-1.3, 1.3, shape)
        elif name == "moving_variance":
            value = rng.uniform(0.5, 4.0, shape)
        elif name == "gamma":
            value = rng.uniform(0.5, 1.5, shape)
        else:  # bias, beta, moving_mean
            value = rng.normal(0.0, 0.5, shape)
        w.assign(value.astype(np.float32))


def flip_ratios(model):
    """{"flip/i/argument": result} of every kernel quantizer that keeps a flip_ratio metric."""
    out = {}
    for i, layer in enumerate(layers(model)):
        for argument in KERNEL_QUANTIZERS:
            metric = getattr(getattr(layer, argument, None), "flip_ratio", None)
            if metric is not None:
                out[f"flip/{i}/{argument}"] = np.asarray(metric.result())
    return out


def experiment(model, x, dy):
    """Outputs, gradients, one SGD step and its flip ratios, as {key: array}.

    ``y``: inference output; ``grad/i/j``: d sum(y * dy) / d weight i/j
    (trainable weights); ``after/i/j``: every weight after one SGD step
    (LEARNING_RATE) on those gradients, constraints applied; ``y_after``:
    the output after the step; ``flip/...``: the flip ratios then;
    ``y_train``: the output in training mode (batch statistics), run last.
    """
    out = {"y": np.asarray(model(x, training=False))}
    trainable = {key: w for key, w in weights(model).items() if w.trainable}
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x, training=False) * dy)
    grads = tape.gradient(loss, list(trainable.values()))
    for key, grad in zip(trainable, grads):
        out[f"grad/{key}"] = np.asarray(grad)
    tf.keras.optimizers.SGD(learning_rate=LEARNING_RATE).apply_gradients(zip(grads, trainable.values()))
    out.update({f"after/{key}": np.asarray(w) for key, w in weights(model).items()})
    out["y_after"] = np.asarray(model(x, training=False))
    out.update(flip_ratios(model))
    out["y_train"] = np.asarray(model(x, training=True))
    return out
