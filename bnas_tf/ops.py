"""The eight candidate operations of the search space, as binarized layers.

`make_op(name, filters, strides, ...)` builds one operation by its name in
`bnas_tf.genotypes.PRIMITIVES` (DARTS's `OPS` table):

    none          zero (on the strided grid in reduction cells)
    max_pool_3x3  3x3 max pooling
    avg_pool_3x3  3x3 average pooling (padding not counted)
    skip_connect  identity, or FactorizedReduce when strided
    sep_conv_3x3  BinarizedSepConv, k=3          sep_conv_5x5  k=5
    dil_conv_3x3  BinarizedDilConv, k=3, d=2     dil_conv_5x5  k=5, d=2

With ``pool_bn`` (the search supernet, as in PC-DARTS's `MixedOp`) a
BatchNorm without affine parameters follows the pooling operations.
"""

import keras
from keras import ops

from bnas_tf import layers
from bnas_tf.errors import ConfigError
from bnas_tf.genotypes import PRIMITIVES

_PACKAGE = "bnas_tf"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Zero(keras.layers.Layer):
    """The `none` operation: zeros on the output grid (stride 1 or 2)."""

    def __init__(self, strides=1, **kwargs):
        super().__init__(**kwargs)
        self.strides = int(strides)

    def call(self, inputs):
        if self.strides > 1:
            inputs = inputs[:, :: self.strides, :: self.strides, :]
        return ops.zeros_like(inputs)

    def compute_output_shape(self, input_shape):
        return layers.strided_shape(input_shape, self.strides)

    def get_config(self):
        return {**super().get_config(), "strides": self.strides}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PoolBN(keras.layers.Layer):
    """3x3 max or average pooling, optionally followed by a BatchNorm.

    Strided, the windows centre on the even pixels 2i, as DARTS's PyTorch
    pooling with padding 1 (and every other operation of a reduction cell):
    Keras's "same" at stride 2 pads only at the end on even sizes and would
    centre them on 2i + 1. So the pooling runs at stride 1 ("same": max over,
    or mean of, the pixels inside the image, PyTorch's `count_include_pad=False`)
    and every `strides`-th output is kept.
    """

    def __init__(self, pool="max", strides=1, bn=False, affine=False, **kwargs):
        super().__init__(**kwargs)
        if pool not in ("max", "avg"):
            raise ConfigError(f"Invalid `pool`: expected 'max' or 'avg'. Received: pool={pool!r}")
        self.pool_type = pool
        self.strides = int(strides)
        self.use_bn = bool(bn)
        self.affine = bool(affine)
        cls = keras.layers.MaxPooling2D if pool == "max" else keras.layers.AveragePooling2D
        self.pool = cls(pool_size=3, strides=1, padding="same", name="pool")
        self.bn = layers.batch_norm(self.affine, name="bn") if self.use_bn else None

    def build(self, input_shape):
        if self.bn is not None:
            self.bn.build(self.compute_output_shape(input_shape))

    def pooled(self, inputs):
        """The pooling, with DARTS's alignment of strided windows."""
        x = self.pool(inputs)
        return x if self.strides == 1 else x[:, :: self.strides, :: self.strides, :]

    def call(self, inputs, training=None):
        x = self.pooled(inputs)
        return x if self.bn is None else self.bn(x, training=training)

    def compute_output_shape(self, input_shape):
        return layers.strided_shape(input_shape, self.strides)

    def get_config(self):
        return {
            **super().get_config(),
            "pool": self.pool_type,
            "strides": self.strides,
            "bn": self.use_bn,
            "affine": self.affine,
        }


def make_op(
    name,
    filters,
    strides=1,
    *,
    affine=True,
    binarization="none",
    binary_activations=False,
    theta=layers.DEFAULT_THETA,
    pool_bn=False,
    full_precision_first=False,
    layer_name=None,
):
    """Builds operation `name` producing `filters` channels (stride 1 or 2)."""
    if name not in PRIMITIVES:
        raise ConfigError(f"Unknown operation: expected one of {', '.join(PRIMITIVES)}. Received: name={name!r}")
    conv_options = dict(
        binarization=binarization,
        binary_activations=binary_activations,
        affine=affine,
        theta=theta,
        name=layer_name,
    )
    if name == "none":
        return Zero(strides, name=layer_name)
    if name in ("max_pool_3x3", "avg_pool_3x3"):
        return PoolBN(name[:3], strides, bn=pool_bn, affine=False, name=layer_name)
    if name == "skip_connect":
        if strides == 1:
            return keras.layers.Identity(name=layer_name)
        return layers.FactorizedReduce(filters, **conv_options)
    kernel_size = int(name[-1])
    if name.startswith("sep_conv"):
        return layers.BinarizedSepConv(
            filters, kernel_size, strides, full_precision_first=full_precision_first, **conv_options
        )
    return layers.BinarizedDilConv(
        filters, kernel_size, strides, 2, full_precision_first=full_precision_first, **conv_options
    )


def is_parametric(name):
    """Whether operation `name` has weights at stride 1."""
    return name not in ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect")
