"""The evaluation network built from a genotype (DARTS's `NetworkCIFAR` / `NetworkImageNet`).

`build_network(genotype, ...)` stacks ``layers`` cells as DARTS does
(quark0/darts, ``cnn/model.py``):

- **stem**: CIFAR, a 3x3 convolution to ``3 * C`` channels and a BatchNorm;
  ImageNet, ``stem0`` (3x3 stride-2 conv to C/2, BN, ReLU, 3x3 stride-2 conv
  to C, BN) and ``stem1`` (ReLU, 3x3 stride-2 conv to C, BN): 224 -> 28.
  Both cells after the stem take the stem output(s): CIFAR ``(stem, stem)``,
  ImageNet ``(stem0, stem1)``.
- **cells**: reduction cells at positions ``layers // 3`` and
  ``2 * layers // 3`` (they double the channels); every other cell is normal.
  A cell preprocesses its two inputs (``preprocess0`` = `FactorizedReduce`
  when the previous cell halved the resolution, else a 1x1 `ReLUConvBN`;
  ``preprocess1`` = a 1x1 `ReLUConvBN`), computes each intermediate node as
  the sum of its two operations, and outputs the concatenation of its
  ``concat`` nodes. During training every operation except the identity is
  followed by drop path (`DropPath`).
- **auxiliary head** (``auxiliary=True``) on the output of the second
  reduction cell (8x8 on CIFAR, 7x7 on ImageNet).
- global average pooling and a Dense classifier.

With ``binarization="none"`` and ``binary_activations=False`` this is the
DARTS reference network, layer for layer: the same operations in the same
order with the same parameter count (`tests/network_test.py` checks it
against the PyTorch reference). The stem, the auxiliary head and the
classifier always stay full precision; the cell operations and the cell
preprocessing take ``binarization`` / ``binary_activations``.

**The paper's ImageNet changes** (Sec. 4.3, "Different from the architecture
settings for CIFAR-10, we do not binarize the first convolutional layer in
depth-wise separable convolution and the preprocessing operations for 2
input nodes. Instead, we replace the concatenation with summation for the
preprocessing operations and increase the number of channels for each
cell."). With ``imagenet=True`` and a binarized network
(``binarization != "none"``) this module reads it as:

1. the first (depthwise) convolution of every `sep_conv_*` and `dil_conv_*`
   operation (both are depthwise-separable) stays full precision
   (``make_op(..., full_precision_first=True)``);
2. ``preprocess0`` and ``preprocess1`` stay full precision (ReLU, full
   precision conv, BN);
3. the cell output is the SUM of its ``concat`` nodes instead of their
   concatenation (``cell_output="sum"``), so that the next cell's
   preprocessing takes C channels instead of ``len(concat) * C``. The
   channels lost by summing are given back by a wider network: the paper
   uses 64 initial channels on ImageNet where DARTS uses 48 (pass
   ``init_channels=64``).

Reading 3 is an interpretation: the concatenation that feeds the
preprocessing operations is the previous cell's output. Pass
``cell_output="concat"`` to keep DARTS's concatenation (or ``"sum"`` to
use the summation elsewhere).

**Outputs.** With ``auxiliary=False`` the model returns the logits. With
``auxiliary=True`` it returns ``[logits, auxiliary_logits]`` in training
and inference alike (one graph, one signature); the training loop weighs
the second, and `inference_model(model)` gives the model without the head
(for evaluation and export). Parameter counts follow DARTS
(``utils.count_parameters_in_MB``): trainable parameters without the
auxiliary head (`count_params`).

**Drop path.** Each cell owns a `DropPath` layer whose ``rate`` is a
non-trainable variable; the training loop sets it each epoch with
`set_drop_path_rate` (DARTS: ``drop_path_prob * epoch / epochs``). It is
never active at inference (``training=False``).

**Reuse.** The stems (`cifar_stem`, `imagenet_stem`) and the cell loop
(`cell_stack`) are separate functions, so that other heads can sit on the
same cells: the face network (`bnas_tf.face.models.build_face_network`)
stacks them under a flatten-and-Dense embedding instead of pooling.
"""

import re

import keras
import numpy as np
from keras import ops

from bnas_tf import amplitude as amp
from bnas_tf import genotypes as genotypes_lib
from bnas_tf import layers as layers_lib
from bnas_tf import ops as ops_lib
from bnas_tf.errors import ConfigError
from bnas_tf.errors import bad_value

_PACKAGE = "bnas_tf"

CIFAR_INPUT_SHAPE = (32, 32, 3)
IMAGENET_INPUT_SHAPE = (224, 224, 3)
CIFAR_STEM_MULTIPLIER = 3
AUXILIARY_HEAD_NAME = "auxiliary_head"
CELL_OUTPUTS = ("concat", "sum")


# ---------------------------------------------------------------------------
# Layers.
# ---------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DropPath(keras.layers.Layer):
    """Drops a whole example's path with probability ``rate`` (training only).

    y = x / (1 - rate) * m,  m ~ Bernoulli(1 - rate), one draw per example
    (DARTS's ``utils.drop_path``). ``rate`` is a non-trainable float32
    variable, set between steps (e.g. by `set_drop_path_rate`) without
    retracing. At ``rate = 0`` or ``training=False`` it is the identity.
    The random state is a Keras `SeedGenerator`; its state variable is in
    ``model.variables`` (so in the training checkpoints of `bnas_tf.train`)
    but not in a ``.keras`` file, which Keras writes without random states.

    Args:
        rate: initial drop probability in [0, 1).
        seed: int seed of the masks (``None``: drawn from Keras's global seed).
    """

    def __init__(self, rate=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.initial_rate = _check_rate(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.rate = self.add_weight(
            name="rate",
            shape=(),
            dtype="float32",
            initializer=keras.initializers.Constant(self.initial_rate),
            trainable=False,
        )

    def call(self, inputs, training=None):
        if not training:
            return inputs
        keep = ops.cast(1.0 - self.rate, inputs.dtype)
        shape = (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
        noise = keras.random.uniform(shape, dtype=inputs.dtype, seed=self.seed_generator)
        mask = ops.floor(keep + noise)
        return inputs / keep * mask

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.initial_rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Cell(keras.layers.Layer):
    """A DARTS cell derived from a genotype.

    Called on ``[s0, s1]`` (the outputs of the two previous cells). Node
    ``j`` (2..5) = op(state[i1]) + op(state[i2]) with drop path on every
    non-identity operation in training; the output is the concatenation
    (``cell_output="concat"``) or the sum (``"sum"``) of the ``concat`` nodes.

    Args:
        edges: the 8 ``(op, input_node)`` pairs of the cell (genotype order).
        concat: the intermediate nodes that form the output.
        filters: C, the channels of every node.
        reduction: whether this cell halves the resolution (stride 2 on the
            operations that read the input nodes 0 and 1).
        reduction_prev: whether the previous cell halved the resolution
            (then ``preprocess0`` is a `FactorizedReduce`).
        binarization, binary_activations, theta: see `bnas_tf.layers`.
        full_precision_preprocess: keep the preprocessing full precision.
        full_precision_first: keep the first (depthwise) convolution of the
            separable operations full precision.
        cell_output: "concat" (DARTS) or "sum".
        drop_path_seed: seed of the cell's `DropPath`.
    """

    def __init__(
        self,
        edges,
        concat,
        filters,
        *,
        reduction=False,
        reduction_prev=False,
        binarization="none",
        binary_activations=False,
        theta=layers_lib.DEFAULT_THETA,
        full_precision_preprocess=False,
        full_precision_first=False,
        cell_output="concat",
        drop_path_seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        # Validate edges and concat with the Genotype rules (one cell = both cells).
        checked = genotypes_lib.Genotype(normal=edges, normal_concat=concat, reduce=edges, reduce_concat=concat)
        self.edges = [list(edge) for edge in checked.normal]
        self.concat = list(checked.normal_concat)
        self.filters = layers_lib._check_positive_int("filters", filters)
        self.reduction = bool(reduction)
        self.reduction_prev = bool(reduction_prev)
        self.binarization = amp.check_scheme(binarization)
        self.binary_activations = bool(binary_activations)
        self.theta = amp.check_theta(theta)
        self.full_precision_preprocess = bool(full_precision_preprocess)
        self.full_precision_first = bool(full_precision_first)
        self.cell_output = _check_cell_output(cell_output)
        self.drop_path_seed = drop_path_seed

        pre = dict(
            binarization="none" if self.full_precision_preprocess else self.binarization,
            binary_activations=False if self.full_precision_preprocess else self.binary_activations,
            theta=self.theta,
        )
        if self.reduction_prev:
            self.preprocess0 = layers_lib.FactorizedReduce(self.filters, name="preprocess0", **pre)
        else:
            self.preprocess0 = layers_lib.ReLUConvBN(self.filters, 1, 1, name="preprocess0", **pre)
        self.preprocess1 = layers_lib.ReLUConvBN(self.filters, 1, 1, name="preprocess1", **pre)
        self.cell_ops = []
        for i, (op_name, index) in enumerate(self.edges):
            strides = 2 if self.reduction and index < 2 else 1
            self.cell_ops.append(
                ops_lib.make_op(
                    op_name,
                    self.filters,
                    strides,
                    affine=True,
                    binarization=self.binarization,
                    binary_activations=self.binary_activations,
                    theta=self.theta,
                    full_precision_first=self.full_precision_first,
                    layer_name=f"op{i}_{op_name}",
                )
            )
        layers_lib.track_sublayers(self, "cell_ops", self.cell_ops)
        self.drop_path = DropPath(0.0, seed=drop_path_seed, name="drop_path")

    @property
    def multiplier(self):
        """Output channels / filters: len(concat) when concatenating, else 1."""
        return len(self.concat) if self.cell_output == "concat" else 1

    def build(self, input_shape):
        shape0, shape1 = (tuple(s) for s in input_shape)
        self.preprocess0.build(shape0)
        self.preprocess1.build(shape1)
        node_shape = self.preprocess1.compute_output_shape(shape1)
        for op in self.cell_ops:
            op.build(node_shape)

    def call(self, inputs, training=None):
        s0, s1 = inputs
        states = [self.preprocess0(s0, training=training), self.preprocess1(s1, training=training)]
        for j in range(len(self.edges) // 2):
            total = None
            for k in (2 * j, 2 * j + 1):
                op = self.cell_ops[k]
                h = op(states[self.edges[k][1]], training=training)
                if training and not isinstance(op, keras.layers.Identity):
                    h = self.drop_path(h, training=training)
                total = h if total is None else total + h
            states.append(total)
        outputs = [states[i] for i in self.concat]
        if self.cell_output == "sum":
            return outputs[0] if len(outputs) == 1 else ops.sum(ops.stack(outputs, axis=0), axis=0)
        return ops.concatenate(outputs, axis=-1)

    def compute_output_shape(self, input_shape):
        n, h, w, _ = self.preprocess1.compute_output_shape(tuple(input_shape[1]))
        if self.reduction:
            h = None if h is None else -(-h // 2)
            w = None if w is None else -(-w // 2)
        return (n, h, w, self.multiplier * self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "edges": self.edges,
            "concat": self.concat,
            "filters": self.filters,
            "reduction": self.reduction,
            "reduction_prev": self.reduction_prev,
            "binarization": self.binarization,
            "binary_activations": self.binary_activations,
            "theta": self.theta,
            "full_precision_preprocess": self.full_precision_preprocess,
            "full_precision_first": self.full_precision_first,
            "cell_output": self.cell_output,
            "drop_path_seed": self.drop_path_seed,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class AuxiliaryHead(keras.layers.Layer):
    """DARTS's auxiliary classifier (`AuxiliaryHeadCIFAR` / `AuxiliaryHeadImageNet`).

    ReLU -> 5x5 average pooling (stride 3 on CIFAR, 2 on ImageNet, no
    padding) -> 1x1 conv to 128, BN, ReLU -> 2x2 conv to 768 (BN on CIFAR
    only: DARTS's ImageNet head omits it), ReLU -> Dense. On an 8x8 (CIFAR)
    or 7x7 (ImageNet) input the map before the Dense is 1x1, as in DARTS;
    on larger inputs it is averaged. Always full precision.

    Args:
        num_classes: outputs of the Dense layer.
        imagenet: the ImageNet variant.
    """

    def __init__(self, num_classes, imagenet=False, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = layers_lib._check_positive_int("num_classes", num_classes)
        self.imagenet = bool(imagenet)
        self._body = [
            keras.layers.ReLU(name="relu0"),
            keras.layers.AveragePooling2D(5, strides=2 if self.imagenet else 3, padding="valid", name="pool"),
            keras.layers.Conv2D(128, 1, use_bias=False, name="conv1"),
            layers_lib.batch_norm(name="bn1"),
            keras.layers.ReLU(name="relu1"),
            keras.layers.Conv2D(768, 2, use_bias=False, name="conv2"),
        ]
        if not self.imagenet:
            self._body.append(layers_lib.batch_norm(name="bn2"))
        self._body.append(keras.layers.ReLU(name="relu2"))
        layers_lib.track_sublayers(self, "_body", self._body)
        self.classifier = keras.layers.Dense(self.num_classes, dtype="float32", name="classifier")

    def build(self, input_shape):
        _, h, w, _ = input_shape
        smallest = 5 + self._body[1].strides[0]  # pooled to at least 2x2 for the 2x2 conv
        if (h is not None and h < smallest) or (w is not None and w < smallest):
            raise ConfigError(
                f"The auxiliary head needs a feature map of at least {smallest}x{smallest} after the "
                "second reduction cell (DARTS: 8x8 on CIFAR, 7x7 on ImageNet); use larger inputs or "
                f"auxiliary=False. Received: input_shape={tuple(input_shape)}"
            )
        shape = tuple(input_shape)
        for layer in self._body:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.classifier.build((shape[0], shape[-1]))

    def call(self, inputs, training=None):
        x = inputs
        for layer in self._body:
            x = layer(x, training=training)
        return self.classifier(ops.mean(x, axis=(1, 2)))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "imagenet": self.imagenet}


# ---------------------------------------------------------------------------
# The network.
# ---------------------------------------------------------------------------


def build_network(
    genotype,
    *,
    num_classes,
    init_channels,
    layers,
    auxiliary,
    imagenet=False,
    binarization="none",
    binary_activations=False,
    full_precision_preprocess=False,
    drop_path=0.0,
    theta=layers_lib.DEFAULT_THETA,
    input_shape=None,
    cell_output=None,
    seed=None,
    name=None,
):
    """Builds the evaluation network of `genotype` as a functional `keras.Model`.

    Args:
        genotype: a `Genotype`, a published name or a genotype file
            (anything `bnas_tf.genotypes.load` takes).
        num_classes: classifier outputs.
        init_channels: C, the channels of the first cells (DARTS: 36 on
            CIFAR, 48 on ImageNet; the paper: 64 on binarized ImageNet).
        layers: number of cells (CIFAR 20, ImageNet 14).
        auxiliary: add the auxiliary head; the model then returns
            ``[logits, auxiliary_logits]``.
        imagenet: the ImageNet layout (three stride-2 stem convolutions).
        binarization: "none", "xnor" or "pcnn" for the cell operations and
            preprocessing.
        binary_activations: 1-bit activations (sign) and PReLU in the cells.
        full_precision_preprocess: keep every cell's preprocessing (the 1x1
            `ReLUConvBN` / `FactorizedReduce` of its two inputs) full
            precision, as the paper does on binarized ImageNet (always on
            there). A 1-bit network needs it on small data: binarized, each
            cell's inputs reach its operations only through a sign (BUILD.md,
            "Binary networks that learn").
        drop_path: initial drop path rate of every cell (the training loop
            sets it per epoch with `set_drop_path_rate`).
        theta: weight of the PCNN amplitude loss (Eq. 2).
        input_shape: (height, width, 3); default 32x32x3 (CIFAR) or
            224x224x3 (ImageNet).
        cell_output: "concat" or "sum"; ``None`` = "sum" for a binarized
            ImageNet network (the paper's change, see the module docstring),
            else "concat".
        seed: base seed of the drop path masks (cell i uses seed + i).
        name: model name.

    Returns:
        A `keras.Model`.

    Raises:
        ConfigError: a bad argument. GenotypeError: a bad genotype.
    """
    genotype = genotypes_lib.load(genotype)
    num_classes = layers_lib._check_positive_int("num_classes", num_classes)
    init_channels, num_cells, binarization, binary_activations, drop_path = check_stack_options(
        init_channels, layers, binarization, binary_activations, drop_path
    )
    imagenet = bool(imagenet)
    binarized_imagenet = imagenet and binarization != "none"
    if cell_output is None:
        cell_output = "sum" if binarized_imagenet else "concat"
    cell_output = _check_cell_output(cell_output)
    if imagenet and init_channels % 2:
        # The ImageNet stem halves C, and the first cell's FactorizedReduce splits C in two.
        raise bad_value("init_channels", init_channels, "an even number on ImageNet")
    if input_shape is None:
        input_shape = IMAGENET_INPUT_SHAPE if imagenet else CIFAR_INPUT_SHAPE
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise bad_value("input_shape", input_shape, "(height, width, channels)")

    inputs = keras.Input(shape=input_shape, name="images")
    if imagenet:
        s0, s1, reduction_prev = imagenet_stem(inputs, init_channels)
    else:
        s0, s1, reduction_prev = cifar_stem(inputs, init_channels)

    aux = {}

    def add_auxiliary_head(i, state):
        if auxiliary and i == reduction_positions(num_cells)[1]:
            aux["logits"] = AuxiliaryHead(num_classes, imagenet=imagenet, name=AUXILIARY_HEAD_NAME)(state)

    s1 = cell_stack(
        genotype,
        s0,
        s1,
        init_channels=init_channels,
        num_cells=num_cells,
        reduction_prev=reduction_prev,
        binarization=binarization,
        binary_activations=binary_activations,
        theta=theta,
        full_precision_preprocess=binarized_imagenet or full_precision_preprocess,
        full_precision_first=binarized_imagenet,
        cell_output=cell_output,
        seed=seed,
        after_cell=add_auxiliary_head,
    )
    x = keras.layers.GlobalAveragePooling2D(name="global_pooling")(s1)
    logits = keras.layers.Dense(num_classes, dtype="float32", name="classifier")(x)
    outputs = [logits, aux["logits"]] if auxiliary else logits
    model = keras.Model(inputs, outputs, name=name or ("network_imagenet" if imagenet else "network_cifar"))
    if drop_path:
        set_drop_path_rate(model, drop_path)
    return model


def cifar_stem(inputs, init_channels):
    """DARTS's CIFAR stem: 3x3 conv to ``3 * C`` channels -> BN, at full resolution.

    Returns ``(s0, s1, reduction_prev)``: the inputs of the first cell (both
    the stem output) and False (the stem keeps the resolution).
    """
    x = keras.layers.Conv2D(
        CIFAR_STEM_MULTIPLIER * init_channels, 3, padding="same", use_bias=False, name="stem_conv"
    )(inputs)
    s = layers_lib.batch_norm(name="stem_bn")(x)
    return s, s, False


def imagenet_stem(inputs, init_channels, stem1_strides=2):
    """DARTS's ImageNet stem; ``init_channels`` (C) must be even.

    ``stem0``: 3x3 stride-2 conv to C/2 -> BN -> ReLU -> 3x3 stride-2 conv to
    C -> BN (s0, input / 4); ``stem1``: ReLU -> 3x3 conv to C with stride
    ``stem1_strides`` -> BN (s1). DARTS: ``stem1_strides=2``, 224 -> 56 -> 28.
    The face network (`bnas_tf.face.models`) uses 1: 112 -> 28 and 28.

    Returns ``(s0, s1, reduction_prev)``, ``reduction_prev`` True when s1 is
    smaller than s0 (the first cell then reduces s0 with `FactorizedReduce`).
    """
    c = init_channels
    x = keras.layers.Conv2D(c // 2, 3, strides=2, padding="same", use_bias=False, name="stem0_conv1")(inputs)
    x = layers_lib.batch_norm(name="stem0_bn1")(x)
    x = keras.layers.ReLU(name="stem0_relu")(x)
    x = keras.layers.Conv2D(c, 3, strides=2, padding="same", use_bias=False, name="stem0_conv2")(x)
    s0 = layers_lib.batch_norm(name="stem0_bn2")(x)
    x = keras.layers.ReLU(name="stem1_relu")(s0)
    x = keras.layers.Conv2D(c, 3, strides=stem1_strides, padding="same", use_bias=False, name="stem1_conv")(x)
    s1 = layers_lib.batch_norm(name="stem1_bn")(x)
    return s0, s1, stem1_strides > 1


def cell_stack(
    genotype,
    s0,
    s1,
    *,
    init_channels,
    num_cells,
    reduction_prev,
    binarization="none",
    binary_activations=False,
    theta=layers_lib.DEFAULT_THETA,
    full_precision_preprocess=False,
    full_precision_first=False,
    cell_output="concat",
    seed=None,
    after_cell=None,
):
    """Applies ``num_cells`` cells of `genotype` to the stem outputs ``(s0, s1)``.

    Reduction cells sit at `reduction_positions` and double the channels
    (starting from ``init_channels``); cell ``i`` is named
    ``cell_{i}_normal`` / ``cell_{i}_reduce`` and its drop path seed is
    ``seed + i``. ``reduction_prev``: whether s1 is smaller than s0 (a
    strided stem). ``after_cell(i, output)``, when given, is called after
    each cell (`build_network` hangs the auxiliary head there).

    Returns the last cell's output (a symbolic tensor).
    """
    reductions = reduction_positions(num_cells)
    c = init_channels
    for i in range(num_cells):
        reduction = i in reductions
        if reduction:
            c *= 2
        cell_type = "reduce" if reduction else "normal"
        edges, concat = genotype.cell(cell_type)
        cell = Cell(
            edges,
            concat,
            c,
            reduction=reduction,
            reduction_prev=reduction_prev,
            binarization=binarization,
            binary_activations=binary_activations,
            theta=theta,
            full_precision_preprocess=full_precision_preprocess,
            full_precision_first=full_precision_first,
            cell_output=cell_output,
            drop_path_seed=None if seed is None else int(seed) + i,
            name=f"cell_{i}_{cell_type}",
        )
        s0, s1 = s1, cell([s0, s1])
        reduction_prev = reduction
        if after_cell is not None:
            after_cell(i, s1)
    return s1


def check_stack_options(init_channels, layers, binarization, binary_activations, drop_path):
    """Checks the options of a cell stack; returns them normalized (ConfigError if bad)."""
    init_channels = layers_lib._check_positive_int("init_channels", init_channels)
    num_cells = layers_lib._check_positive_int("layers", layers)
    if num_cells < 3:
        raise bad_value("layers", layers, "an int >= 3 (two reduction cells and at least one normal cell)")
    binarization = amp.check_scheme(binarization)
    binary_activations = layers_lib._check_bool("binary_activations", binary_activations)
    return init_channels, num_cells, binarization, binary_activations, _check_rate(drop_path)


def reduction_positions(num_cells):
    """Indices of the two reduction cells: ``layers // 3`` and ``2 * layers // 3``."""
    return (num_cells // 3, 2 * num_cells // 3)


def cells(model):
    """The `Cell` layers of `model`, in order."""
    return [layer for layer in model.layers if isinstance(layer, Cell)]


def set_drop_path_rate(model, rate):
    """Sets the drop path rate of every cell of `model` (no retracing)."""
    rate = _check_rate(rate)
    for cell in cells(model):
        cell.drop_path.rate.assign(rate)


def drop_path_rate(model):
    """The current drop path rate of `model` (0.0 without cells)."""
    found = cells(model)
    return float(ops.convert_to_numpy(found[0].drop_path.rate)) if found else 0.0


def has_auxiliary_head(model):
    """Whether `model` has the auxiliary head (and returns two outputs)."""
    return any(layer.name == AUXILIARY_HEAD_NAME for layer in model.layers)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class InferenceModel(keras.Model):
    """Calls `network` with `training=False` and returns its first output.

    For subclassed networks whose call returns `(logits, aux)`: the model to
    export returns the logits only.
    """

    def __init__(self, network, **kwargs):
        super().__init__(**kwargs)
        self.network = network

    def call(self, inputs):
        outputs = self.network(inputs, training=False)
        return outputs[0] if isinstance(outputs, (tuple, list)) else outputs

    def get_config(self):
        return {"name": self.name, "network": keras.saving.serialize_keras_object(self.network)}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        network = keras.saving.deserialize_keras_object(config.pop("network"), custom_objects=custom_objects)
        return cls(network, **config)


def inference_model(model, sample_inputs=None):
    """The model to evaluate, save for deployment or convert: the first output
    of `model(x, training=False)`, the logits without the auxiliary head.

    A functional model with one output is returned as is; one with several
    outputs is cut to its first, sharing `model`'s layers and weights (no
    copy); any other model is wrapped in `InferenceModel` (so that
    `training=False` is explicit), built on `sample_inputs[:1]` when given.
    """
    if isinstance(model, keras.Model) and _has_graph(model):
        if len(model.outputs) == 1:
            return model
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        return keras.Model(inputs, model.outputs[0], name=_inference_name(model))
    wrapped = InferenceModel(model, name=_inference_name(model))
    if sample_inputs is not None:
        wrapped(sample_inputs[:1])
    return wrapped


def _inference_name(model):
    # A TF name scope may not start with "_" (Keras names `_Net` "_net").
    return re.sub(r"^[^A-Za-z0-9.]+", "", f"{model.name}_inference")


def _has_graph(model):
    try:
        return bool(model.inputs) and bool(model.outputs)
    except (AttributeError, ValueError):
        return False


def count_params(model, *, auxiliary=False):
    """Trainable parameters, without the auxiliary head unless `auxiliary`.

    What DARTS's ``utils.count_parameters_in_MB`` counts (times 1e6).
    """
    weights = model.trainable_weights
    if not auxiliary:
        head = {id(w) for layer in model.layers if layer.name == AUXILIARY_HEAD_NAME for w in layer.weights}
        weights = [w for w in weights if id(w) not in head]
    return int(sum(int(np.prod(w.shape)) for w in weights))


def _check_rate(rate):
    try:
        ok = 0.0 <= float(rate) < 1.0
    except (TypeError, ValueError):
        ok = False
    if not ok or isinstance(rate, bool):
        raise bad_value("drop_path", rate, "a number in [0, 1)")
    return float(rate)


def _check_cell_output(cell_output):
    if cell_output not in CELL_OUTPUTS:
        raise bad_value("cell_output", cell_output, f"one of {CELL_OUTPUTS}")
    return cell_output
