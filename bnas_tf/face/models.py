"""Face recognition networks: BNAS cells and the IR-ResNet baselines (IJCV Sec. 4.4, Table 5).

The paper trains, on CASIA-WebFace 112x112 aligned faces, networks built
from BNAS genotypes and ResNet-18/34/50/100 baselines ("kernel stage
64-128-256-512"), full precision and with XNOR or PCNN 1-bit kernels, with
the face code of github.com/wujiyang/Face_Pytorch, where "the pooling
operation before FC layer [is] removed ... It makes the fully connected
layer parameters large". Both models here map images to an embedding
(the margin head that turns it into class logits lives elsewhere):

- `build_face_resnet(depth)`: the "IR" ResNet of ArcFace (insightface's
  ``iresnet18/34/50/100``, the ``BottleNeck_IR`` of Face_Pytorch).
- `build_face_network(genotype)`: the cells of `bnas_tf.network` on a 112x112
  stem, with the same embedding head.

**Embedding head** (insightface's "E" output, no global pooling): BN ->
Dropout -> Flatten -> Dense(embedding_size) -> BN, on the final 7x7 map.
The Dense of a 7x7x512 map holds 25088 x 512 = 12.85 M weights, half of
ResNet-18's parameters and most of a BNAS face network's. It and the final
BN compute in float32 (the model output is float32 under mixed precision).

**Input.** float32 RGB images normalized as (x - 127.5) / 128 (`normalize_images`),
112x112 by default (CASIA-WebFace aligned crops).

**What stays full precision** in the binarized variants (``binarization``
"xnor" / "pcnn", ``binary_activations``): the stem convolution(s), the 1x1
shortcut convolutions of the ResNets, and the embedding head, the usual
XNOR-Net / Bi-Real Net practice (first and last layers and the downsampling
shortcuts are a small share of the weights and carry most of the precision
loss). In the ResNets every 3x3 convolution of the residual blocks is a
`bnas_tf.layers.BinarizedConv2D`; in the BNAS network the cells are
binarized as `bnas_tf.network` binarizes them (preprocessing too, unless
``full_precision_preprocess``). With ``binary_activations`` the sign is the
input quantizer of each binarized convolution; the block's PReLU acts on real
values (after a BN), as in the full-precision block.

**Loading.** Every layer is a registered `bnas_tf` layer: ``import bnas_tf``
is all `keras.saving.load_model` needs.

**Parameter counts** (trainable weights, what PyTorch's ``parameters()``
sums; BN moving statistics excluded) against Table 5 are in the docstrings of
the two builders; `tests/face_models_test.py` recomputes them from the
architecture arithmetic.
"""

import keras
from keras import ops

from bnas_tf import amplitude as amp
from bnas_tf import genotypes as genotypes_lib
from bnas_tf import layers as layers_lib
from bnas_tf import network as network_lib
from bnas_tf.errors import bad_value

_PACKAGE = "bnas_tf"
#: The face networks: the cells of a genotype, or an IR ResNet of that depth.
BACKBONES = ("genotype", "resnet18", "resnet34", "resnet50", "resnet100")

FACE_INPUT_SHAPE = (112, 112, 3)
EMBEDDING_SIZE = 512
INPUT_MEAN = 127.5
INPUT_SCALE = 128.0

# IR-ResNet units per stage (insightface iresnet / Face_Pytorch arcfacenet).
RESNET_STAGES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 14, 3), 100: (3, 13, 30, 3)}
RESNET_STAGE_CHANNELS = (64, 128, 256, 512)
RESNET_STEM_CHANNELS = 64
# Table 5, "# Params (M)", for the same rows full precision and 1-bit.
PAPER_RESNET_PARAMS_M = {18: 24.02, 34: 36.56, 50: 45.46, 100: 75.58}
PAPER_BNAS_PARAMS_M = {"W1A32": 10.224, "W1A1": 10.768}

# Input size / final map size of both networks: 4 stride-2 steps.
TOTAL_STRIDE = 16
# Suggested sizes of the BNAS face network (see `build_face_network`).
FACE_NETWORK_DEFAULTS = {"init_channels": 24, "layers": 8}


def normalize_images(images):
    """uint8-range RGB images -> the networks' input, (x - 127.5) / 128, float32."""
    return (ops.cast(images, "float32") - INPUT_MEAN) / INPUT_SCALE


# ---------------------------------------------------------------------------
# Layers.
# ---------------------------------------------------------------------------


# ---------------------------------------------------------------------------
# Shared pieces.
# ---------------------------------------------------------------------------


def embedding_head(x, embedding_size, dropout=0.0):
    """BN -> Dropout -> Flatten -> Dense(embedding_size) -> BN (insightface's "E" output).

    Full precision; the Dense and the last BN in float32. Layer names:
    ``output_bn``, ``output_dropout``, ``flatten``, ``fc``, ``embedding``.
    """
    x = layers_lib.batch_norm(name="output_bn")(x)
    x = keras.layers.Dropout(dropout, name="output_dropout")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(embedding_size, dtype="float32", name="fc")(x)
    return layers_lib.BatchNorm(
        momentum=layers_lib.BN_MOMENTUM, epsilon=layers_lib.BN_EPSILON, dtype="float32", name="embedding"
    )(x)


def _check_face_options(embedding_size, dropout, input_shape):
    embedding_size = layers_lib._check_positive_int("embedding_size", embedding_size)
    try:
        ok = 0.0 <= float(dropout) < 1.0 and not isinstance(dropout, bool)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise bad_value("dropout", dropout, "a number in [0, 1)")
    try:
        shape = tuple(int(d) for d in input_shape)
        ok = len(shape) == 3 and all(d >= 1 for d in shape) and tuple(input_shape) == shape
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise bad_value("input_shape", input_shape, "(height, width, channels) of positive ints")
    if min(shape[:2]) < TOTAL_STRIDE:
        raise bad_value(
            "input_shape", input_shape, f"height and width >= {TOTAL_STRIDE} (the networks stride by {TOTAL_STRIDE})"
        )
    return embedding_size, float(dropout), shape


def final_map_size(input_shape):
    """(height, width) of the map before the embedding head: ceil(size / 16); 112 -> 7."""
    return tuple(-(-int(d) // TOTAL_STRIDE) for d in input_shape[:2])


# ---------------------------------------------------------------------------
# IR-ResNet.
# ---------------------------------------------------------------------------


def _block_conv(filters, strides, conv_options, name):
    if strides == 1:
        return layers_lib.BinarizedConv2D(filters, 3, padding="same", use_bias=False, name=name, **conv_options)
    # PyTorch's padding=1: the windows centre on the even pixels, as the 1x1 stride-2 shortcut samples them.
    return layers_lib.BinarizedConv2D(filters, 3, strides=strides, padding="symmetric", use_bias=False, name=name,
                                      **conv_options)


def ir_block(x, filters, strides, conv_options, name):
    """One IBasicBlock: BN -> conv3x3 -> BN -> PReLU -> conv3x3 (stride) -> BN, plus the shortcut.

    The shortcut is the identity, or conv1x1 (stride) -> BN (full precision)
    when the stride or the channels change. Both 3x3 convolutions are
    `BinarizedConv2D` with ``conv_options`` (binarization, binary_activations, theta).
    """
    y = layers_lib.batch_norm(name=f"{name}_bn1")(x)
    y = _block_conv(filters, 1, conv_options, f"{name}_conv1")(y)
    y = layers_lib.batch_norm(name=f"{name}_bn2")(y)
    y = layers_lib.activation(True, name=f"{name}_prelu")(y)
    y = _block_conv(filters, strides, conv_options, f"{name}_conv2")(y)
    y = layers_lib.batch_norm(name=f"{name}_bn3")(y)
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(
            filters, 1, strides=strides, use_bias=False, name=f"{name}_shortcut_conv"
        )(x)
        shortcut = layers_lib.batch_norm(name=f"{name}_shortcut_bn")(shortcut)
    return keras.layers.Add(name=f"{name}_add")([y, shortcut])


def build_face_resnet(
    depth,
    *,
    embedding_size=EMBEDDING_SIZE,
    binarization="none",
    binary_activations=False,
    dropout=0.0,
    theta=layers_lib.DEFAULT_THETA,
    input_shape=FACE_INPUT_SHAPE,
    name=None,
):
    """The IR-ResNet face embedding network (ArcFace's LResNet-E-IR, insightface ``iresnet``).

    Architecture (112x112 input):

    - stem: conv3x3 to 64 (stride 1) -> BN -> PReLU, 112x112 (``stem_*``);
    - four stages of 64, 128, 256, 512 channels with (2, 2, 2, 2), (3, 4, 6,
      3), (3, 4, 14, 3), (3, 13, 30, 3) units for depth 18, 34, 50, 100; the
      first unit of each stage strides by 2 (112 -> 56 -> 28 -> 14 -> 7) and
      has the conv1x1 + BN shortcut (stage 1 too: insightface's layout;
      Face_Pytorch's ``arcfacenet.py`` uses a parameter-free 1x1 max pool
      there, 4224 parameters fewer). Unit ``u`` of stage ``s`` is `ir_block`,
      its layers named ``stage{s}_unit{u}_*``;
    - `embedding_head` on the 7x7x512 map.

    Parameters, full precision, 512-d embedding, 112x112 input (trainable
    weights; insightface's own count is 512 fewer, its final BN scale being
    frozen), against Table 5:

    ==========  ===========  ==============  ===========
    depth       this model   paper (Table 5)  difference
    ==========  ===========  ==============  ===========
    18          24,025,600   24.02 M          +0.02 %
    34          34,139,328   36.56 M          -6.6 %
    50          43,590,848   45.46 M          -4.1 %
    100         65,156,160   75.58 M          -13.8 %
    ==========  ===========  ==============  ===========

    ResNet-18 matches. No IR layout found reproduces the paper's 34/50/100
    figures: no stage configuration of these blocks (with or without the
    stage-1 shortcut) gives them, nor do Face_Pytorch's ``LResNet`` (basic
    and bottleneck blocks) or SE-IR variants; 65.2 M is the well-known size of
    LResNet100E-IR. The paper's figures for these rows look taken elsewhere.

    Binarized (``binarization`` "xnor" or "pcnn"): the 3x3 convolutions of
    the blocks are `BinarizedConv2D` (the stride-2 ones
    `BinarizedConv2D` with ``padding="symmetric"``); the stem conv, the 1x1 shortcuts and the
    embedding head stay full precision. The count is unchanged with "xnor";
    "pcnn" adds one amplitude matrix A of shape (3, 3, C_in, 1) per
    binarized conv (ResNet-18: +30,528, 24,056,128 in all), a training-time
    parameter (`bnas_tf.amplitude.non_amplitude_variables` leaves it out).
    With ``binary_activations`` the count is the same (PReLU is in every
    variant).

    Args:
        depth: 18, 34, 50 or 100.
        embedding_size: output features (512).
        binarization: "none", "xnor" or "pcnn" for the blocks' 3x3 convolutions.
        binary_activations: sign of the input of those convolutions.
        dropout: dropout rate of the embedding head (Face_Pytorch 0.4, insightface 0).
        theta: weight of the PCNN amplitude loss (Eq. 2).
        input_shape: (height, width, channels), height and width >= 16.
        name: model name (default ``face_resnet{depth}``).

    Returns:
        A functional `keras.Model`: images [B, H, W, C] -> embedding [B, embedding_size] (float32).

    Raises:
        ConfigError: a bad argument.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth not in RESNET_STAGES:
        raise bad_value("depth", depth, f"one of {tuple(RESNET_STAGES)}")
    embedding_size, dropout, input_shape = _check_face_options(embedding_size, dropout, input_shape)
    conv_options = dict(
        binarization=amp.check_scheme(binarization),
        binary_activations=layers_lib._check_bool("binary_activations", binary_activations),
        theta=amp.check_theta(theta),
    )
    inputs = keras.Input(shape=input_shape, name="images")
    x = keras.layers.Conv2D(RESNET_STEM_CHANNELS, 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers_lib.batch_norm(name="stem_bn")(x)
    x = layers_lib.activation(True, name="stem_prelu")(x)
    for s, (filters, units) in enumerate(zip(RESNET_STAGE_CHANNELS, RESNET_STAGES[depth]), start=1):
        for u in range(units):
            x = ir_block(x, filters, 2 if u == 0 else 1, conv_options, f"stage{s}_unit{u}")
    outputs = embedding_head(x, embedding_size, dropout)
    return keras.Model(inputs, outputs, name=name or f"face_resnet{depth}")


# ---------------------------------------------------------------------------
# BNAS cells.
# ---------------------------------------------------------------------------


def build_face_network(
    genotype,
    *,
    init_channels,
    layers,
    embedding_size=EMBEDDING_SIZE,
    binarization="none",
    binary_activations=False,
    full_precision_preprocess=False,
    dropout=0.0,
    drop_path=0.0,
    theta=layers_lib.DEFAULT_THETA,
    input_shape=FACE_INPUT_SHAPE,
    seed=None,
    name=None,
):
    """The BNAS face embedding network: cells of `genotype` and the embedding head.

    Architecture (112x112 input, C = ``init_channels``):

    - stem (`bnas_tf.network.imagenet_stem` with a stride-1 ``stem1``): 3x3
      stride-2 conv to C/2 -> BN -> ReLU -> 3x3 stride-2 conv to C -> BN
      (s0, 28x28), then ReLU -> 3x3 conv to C -> BN (s1, 28x28). A gentler
      stem than DARTS's ImageNet one (112 -> 14 before the cells, 4x4 after
      them): the cells start at 28x28 and the two reduction cells bring the
      map to 7x7 x 16 C, the final map of the ResNet face networks;
    - ``layers`` cells (`bnas_tf.network.cell_stack`): reductions at
      ``layers // 3`` and ``2 * layers // 3``, C doubling at each, outputs
      concatenated (4 nodes: 4 C, 8 C, 16 C channels); 28 -> 14 -> 7;
    - `embedding_head` on the 7x7 x 16 C map (Dense of 49 * 16 C * 512).

    Parameters with the suggested ``FACE_NETWORK_DEFAULTS`` (C = 24, 8
    cells: 7x7x384 map, a 9.63 M Dense) and the PC_DARTS_IMAGENET genotype,
    512-d embedding, trainable weights (Table 5: BNAS 10.224 M W1A32,
    10.768 M W1A1):

    - full precision or XNOR weights: 10,332,636 (+1.1 % on 10.224 M);
    - PCNN weights: 10,342,236 (+9,600 amplitude entries);
    - XNOR weights, binary activations: 10,339,020 (+6,384: the cells' PReLU);
    - PCNN weights, binary activations: 10,348,620 (-3.9 % on 10.768 M).

    The Dense (9,634,304 with its bias) is 93 % of them. Other sizes, full
    precision: C = 24 with 6 cells 10.09 M, with 14 cells 10.84 M; C = 20 with
    8 cells 8.52 M; C = 28 with 8 cells 12.18 M; C = 24, 8 cells with the
    PC_DARTS (CIFAR) genotype 10.34 M, with DARTS_V2 10.16 M.

    Binarized: the cells as `bnas_tf.network.Cell` binarizes them (operations
    and, unless ``full_precision_preprocess``, the preprocessing; the
    paper's face search follows its CIFAR settings, so cells concatenate);
    the stem and the embedding head stay full precision.

    Args:
        genotype: a `Genotype`, a published name or a genotype file.
        init_channels: C, even (the stem halves it).
        layers: number of cells, >= 3.
        embedding_size: output features (512).
        binarization: "none", "xnor" or "pcnn" for the cells.
        binary_activations: 1-bit activations (sign) and PReLU in the cells.
        full_precision_preprocess: keep the cells' preprocessing full precision.
        dropout: dropout rate of the embedding head.
        drop_path: initial drop path rate of the cells (`bnas_tf.network.set_drop_path_rate`).
        theta: weight of the PCNN amplitude loss (Eq. 2).
        input_shape: (height, width, channels), height and width >= 16.
        seed: base seed of the drop path masks.
        name: model name (default ``face_network``).

    Returns:
        A functional `keras.Model`: images [B, H, W, C] -> embedding [B, embedding_size] (float32).

    Raises:
        ConfigError: a bad argument. GenotypeError: a bad genotype.
    """
    genotype = genotypes_lib.load(genotype)
    init_channels, num_cells, binarization, binary_activations, drop_path = network_lib.check_stack_options(
        init_channels, layers, binarization, binary_activations, drop_path
    )
    if init_channels % 2:
        raise bad_value("init_channels", init_channels, "an even number (the stem halves it)")
    embedding_size, dropout, input_shape = _check_face_options(embedding_size, dropout, input_shape)
    inputs = keras.Input(shape=input_shape, name="images")
    s0, s1, reduction_prev = network_lib.imagenet_stem(inputs, init_channels, stem1_strides=1)
    x = network_lib.cell_stack(
        genotype,
        s0,
        s1,
        init_channels=init_channels,
        num_cells=num_cells,
        reduction_prev=reduction_prev,
        binarization=binarization,
        binary_activations=binary_activations,
        theta=theta,
        full_precision_preprocess=layers_lib._check_bool("full_precision_preprocess", full_precision_preprocess),
        seed=seed,
    )
    outputs = embedding_head(x, embedding_size, dropout)
    model = keras.Model(inputs, outputs, name=name or "face_network")
    if drop_path:
        network_lib.set_drop_path_rate(model, drop_path)
    return model


__all__ = [
    "EMBEDDING_SIZE",
    "FACE_INPUT_SHAPE",
    "FACE_NETWORK_DEFAULTS",
    "PAPER_BNAS_PARAMS_M",
    "PAPER_RESNET_PARAMS_M",
    "RESNET_STAGES",
    "build_face_network",
    "build_face_resnet",
    "embedding_head",
    "final_map_size",
    "ir_block",
    "normalize_images",
]
