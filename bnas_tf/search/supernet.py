"""The search supernet: DARTS cells whose edges mix every operation.

Each edge (i, j) of a cell applies PC-DARTS's partially connected mixed
operation (Eq. 6 of the BNAS paper):

    f_ij(x) = shuffle( concat( sum_k softmax(alpha_ij)_k * o_k(x[:C/c]),  bypass(x[C/c:]) ) )

where only 1/c of the channels (`partial_channels` = c) enter the
operations, the others bypass them (max-pooled by 2 on reduction edges) and a
channel shuffle follows. A node sums its incoming edges weighted by the edge
normalisation softmax(beta) over those edges (PC-DARTS).

The supernet runs in two modes that share every weight:

- **mixed**: the operations still alive on each edge (`set_alive`, kept in the
  non-trainable `alive_mask` variable, so checkpointed) are mixed with
  softmax(alpha) over the alive ones. Abandoned operations are not in the
  traced graph at all, so they cost nothing; a new alive set is traced once
  (once per BNAS round).
- **single path**: `call(x, choice=...)` with `choice` from `Supernet.choice`
  (one operation index per edge and cell type) runs only the chosen
  operations: a step costs what the single-path network costs.

Tracing stays cheap because every kind of operation is traced once and shared
by all edges (`OpTemplates`).
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from bnas_tf import genotypes as gt
from bnas_tf import layers
from bnas_tf import tracing
from bnas_tf.errors import ConfigError
from bnas_tf.ops import make_op
from bnas_tf.search.fused import FusedOps


def channel_shuffle(x, groups):
    """PC-DARTS's channel shuffle, NHWC: (.., g, C/g) -> (.., C/g, g) -> (.., C)."""
    if groups == 1:
        return x
    shape = ops.shape(x)
    channels = x.shape[-1]
    x = ops.reshape(x, (shape[0], shape[1], shape[2], groups, channels // groups))
    x = ops.transpose(x, (0, 1, 2, 4, 3))
    return ops.reshape(x, (shape[0], shape[1], shape[2], channels))


class OpTemplates:
    """One traced function per kind of operation, shared by every edge.

    The supernet holds hundreds of operation instances; tracing each one into
    the step graph makes tracing take minutes. Instead, each kind of operation
    (name, stride, width) is traced once, as a `tf.function` that runs a
    template instance statelessly on the variable values it is given
    (`keras.StatelessScope`) and returns its output, its new BatchNorm
    statistics and its amplitude loss (Eq. 2). Every edge calls that function
    with its own variables: the gradient reaches them through the call, and
    the statistics are assigned back.
    """

    def __init__(self):
        self._fns = {}

    def _function(self, key, template):
        if key not in self._fns:
            convs = layers.pcnn_convs(template)

            def run(trainable, non_trainable, x, training):
                mapping = list(zip(template.trainable_variables, trainable))
                mapping += list(zip(template.non_trainable_variables, non_trainable))
                with keras.StatelessScope(state_mapping=mapping) as scope:
                    y = template(x, training=training)
                    amp = ops.sum(ops.stack([c.amplitude_loss() for c in convs])) if convs else ops.zeros(())
                new = [scope.get_current_value(v) for v in template.non_trainable_variables]
                new = [n if n is not None else old for n, old in zip(new, non_trainable)]
                return y, new, amp

            self._fns[key] = tf.function(tracing.counted_apart(run), autograph=False)
        return self._fns[key]

    def call(self, key, layer, x, training):
        """(output, amplitude loss) of `layer` on `x`, through the shared function."""
        fn = self._function(key, layer)
        # Values, not variables: a tf.function given a tf.distribute variable reuses the graph traced for another.
        trainable = [tf.convert_to_tensor(v) for v in layer.trainable_variables]
        non_trainable = [tf.convert_to_tensor(v) for v in layer.non_trainable_variables]
        y, new, amp = fn(trainable, non_trainable, x, bool(training))
        if training:
            for variable, value in zip(layer.non_trainable_variables, new):
                variable.assign(value)
        return y, amp


class MixedEdge(keras.layers.Layer):
    """One edge: every operation on 1/c of the channels, plus the bypass (Eq. 6)."""

    def __init__(self, channels, strides, partial_channels, primitives, op_options, templates=None, **kwargs):
        super().__init__(**kwargs)
        self._templates = templates
        if channels % partial_channels:
            raise ConfigError(
                f"Invalid `partial_channels`: it must divide the cell width {channels}. "
                f"Received: partial_channels={partial_channels!r}"
            )
        self.channels = channels
        self.strides = strides
        self.partial_channels = partial_channels
        self.sub_channels = channels // partial_channels
        self.primitives = tuple(primitives)
        self.candidates = [
            make_op(name, self.sub_channels, strides, affine=False, pool_bn=True, layer_name=name, **op_options)
            for name in self.primitives
        ]
        self.bypass_pool = (
            keras.layers.MaxPooling2D(2, 2, name="bypass_pool") if strides > 1 and partial_channels > 1 else None
        )

    def build(self, *args, **kwargs):
        # Sublayers build on the first (eager) call; Keras's default would
        # instead run `call` symbolically, tracing every branch once more.
        pass

    def _split(self, x):
        return x[..., : self.sub_channels], x[..., self.sub_channels :]

    def _merge(self, mixed, rest):
        if self.partial_channels == 1:
            return mixed
        if self.bypass_pool is not None:
            rest = self.bypass_pool(rest)
        return channel_shuffle(ops.concatenate([mixed, rest], axis=-1), self.partial_channels)

    def _zeros(self, x):
        if self.strides > 1:
            x = x[:, :: self.strides, :: self.strides, :]
        return ops.zeros_like(x)

    def _apply(self, index, x, training):
        """(o_index(x), its amplitude loss)."""
        name = self.primitives[index]
        if name == "none":
            return self._zeros(x), ops.zeros(())
        op = self.candidates[index]
        if not op.built or self._templates is None or not op.trainable_variables:
            y = op(x, training=training)
            convs = layers.pcnn_convs(op) if op.built else []
            amp = ops.sum(ops.stack([c.amplitude_loss() for c in convs])) if convs else ops.zeros(())
            return y, amp
        key = (name, self.strides, self.sub_channels)
        return self._templates.call(key, op, x, training)

    def call_mixed(self, x, weights, alive, training=None):
        """(sum_k w_k o_k(x) over the alive operations, their amplitude loss).

        `weights` [K] are softmax(alpha) over the alive operations and `alive`
        their indices (a Python tuple): abandoned operations are not in the
        traced graph at all, so they cost nothing.
        """
        part, rest = self._split(x)
        mixed, amp = None, ops.zeros(())
        for index in alive:
            if self.primitives[index] == "none":
                continue  # o(x) = 0 adds nothing: never computed.
            y, loss = self._apply(index, part, training)
            term = weights[index] * y
            mixed = term if mixed is None else mixed + term
            amp = amp + loss
        return self._merge(self._zeros(part) if mixed is None else mixed, rest), amp

    def call_single(self, x, index, training=None):
        """(o_index(x), its amplitude loss): only the chosen operation runs."""
        part, rest = self._split(x)
        out, amp = self._apply(index, part, training)
        return self._merge(out, rest), amp


class SearchCell(keras.layers.Layer):
    """A cell of the supernet: 2 inputs, 4 intermediate nodes, 14 mixed edges.

    `call` returns the cell output and the amplitude loss of the edge
    operations in use.
    """

    def __init__(self, channels, reduction, reduction_prev, partial_channels, primitives, op_options,
                 templates=None, full_precision_preprocess=False, **kwargs):
        super().__init__(**kwargs)
        self.reduction = reduction
        conv_options = {k: v for k, v in op_options.items() if k in ("binarization", "binary_activations", "theta")}
        if full_precision_preprocess:
            conv_options.update(binarization="none", binary_activations=False)
        if reduction_prev:
            self.preprocess0 = layers.FactorizedReduce(channels, affine=False, name="pre0", **conv_options)
        else:
            self.preprocess0 = layers.ReLUConvBN(channels, 1, 1, affine=False, name="pre0", **conv_options)
        self.preprocess1 = layers.ReLUConvBN(channels, 1, 1, affine=False, name="pre1", **conv_options)
        self.edges = [
            MixedEdge(
                channels,
                2 if reduction and src < 2 else 1,
                partial_channels,
                primitives,
                op_options,
                templates,
                name=f"edge_{src}_{dst}",
            )
            for src, dst in gt.EDGES
        ]

    def build(self, *args, **kwargs):
        # Sublayers build on the first (eager) call; Keras's default would
        # instead run `call` symbolically, tracing every branch once more.
        pass

    def call(self, s0, s1, edge_weights, op_weights=None, alive=None, choice=None, training=None, fused=None,
             mixer=None):
        states = [self.preprocess0(s0, training=training), self.preprocess1(s1, training=training)]
        if fused is not None:
            return self._call_fused(states, mixer, alive, choice, training, fused)
        amp = ops.zeros(())
        offset = 0
        for node in range(gt.STEPS):
            total = None
            for src in range(node + 2):
                e = offset + src
                edge = self.edges[e]
                if choice is not None:
                    out, loss = edge.call_single(states[src], choice[e], training)
                else:
                    out, loss = edge.call_mixed(states[src], op_weights[e], alive[e], training)
                amp = amp + loss
                term = edge_weights[e] * out
                total = term if total is None else total + term
            offset += node + 2
            states.append(total)
        return ops.concatenate(states[2:], axis=-1), amp

    def _call_fused(self, states, mixer, alive, choice, training, fused):
        """`call` with the edges leaving each node fused (`fused.FusedOps`).

        Node j = sum_i beta_ij shuffle(concat(m_ij, r_i)) is computed as
        shuffle(concat(sum_i beta_ij m_ij, sum_i beta_ij r_i)): the shuffle is a
        permutation, so one per node gives the same result as one per edge.
        The beta-weighted mixtures beta_ij m_ij of all edges leaving node i come
        from one product with the weights of `mixer` (`_Mixer`).
        """
        first = self.edges[0]
        sub, partial = first.sub_channels, first.partial_channels
        amp = ops.zeros(())
        mixed, rests, parts = {}, {}, {}
        for src in range(gt.STEPS + 2):
            if src >= 2:
                states.append(self._node(src, mixed, rests, parts, mixer))
            if src == gt.STEPS + 1:
                break
            out_edges = [e for e, (s, _) in enumerate(gt.EDGES) if s == src]
            edge = self.edges[out_edges[0]]
            x = states[src]
            if partial > 1:
                part, rest = tf.split(x, [sub, x.shape[-1] - sub], axis=-1)
                rests[src] = rest if edge.bypass_pool is None else edge.bypass_pool(rest)
            else:
                part = x
            parts[src] = part
            amp = amp + self._fused_source(out_edges, part, mixer, alive, choice, training, fused, mixed)
        return ops.concatenate(states[2:], axis=-1), amp

    def _fused_source(self, out_edges, part, mixer, alive, choice, training, fused, mixed):
        """Runs every operation of the edges `out_edges` (one source) on `part`; fills `mixed`
        with beta_e * sum_k w_ek o_k(part) for each edge e (None where no operation runs).

        Each fused operation k gives one output for all its member edges (shared) or
        one per member; on a sampled path (`choice`) every edge is a call of its own.
        These columns, stacked along a leading axis as rows of
        N*H*W*C values, times a [columns, edges] matrix of weights
        (`_Mixer.matrix`: w_ek beta_e where column and edge match, 0 elsewhere)
        give every edge's mixture in one product. Column-major rows make the
        stacking, the product and the split per edge contiguous copies, in both
        passes; side by side in the last axis, rows of 1 to 4 channels, every
        copy was strided (14 % of the op time of a step at K=2, BUILD.md).
        """
        amp = ops.zeros(())
        primitives = self.edges[out_edges[0]].primitives
        strides = self.edges[out_edges[0]].strides
        pieces, rows = [], []
        for k, name in enumerate(primitives):
            if name == "none":
                continue  # o(x) = 0 adds nothing: never computed.
            members = [e for e in out_edges if (choice[e] == k if choice is not None else k in alive[e])]
            if not members:
                continue
            # A sampled path runs each edge on its own: its member sets change with every
            # sample, and each new set would trace, build and instantiate new functions.
            for group in ([m] for m in members) if choice is not None else [members]:
                y, loss = fused.call((name, strides, part.shape[-1]), [self.edges[e].candidates[k] for e in group],
                                     part, training)
                amp = amp + loss
                if len(y.shape) == 4:  # the same output for every member edge
                    pieces.append(tf.expand_dims(y, 0))
                    rows.append([(e, k) if e in group else None for e in out_edges])
                else:
                    pieces.append(tf.transpose(y, [4, 0, 1, 2, 3]))
                    rows += [[(m, k) if e == m else None for e in out_edges] for m in group]
        if not pieces:
            mixed.update((e, None) for e in out_edges)
            return amp
        columns = tf.concat(pieces, axis=0) if len(pieces) > 1 else pieces[0]
        _, _, h, w, c = columns.shape
        out = tf.matmul(mixer.matrix(rows), tf.reshape(columns, [len(rows), -1]), transpose_a=True)
        mixed.update((e, tf.reshape(o, [-1, h, w, c])) for e, o in zip(out_edges, tf.unstack(out, num=len(out_edges))))
        return amp

    def _node(self, dst, mixed, rests, parts, mixer):
        """Node dst from the beta-weighted mixtures and bypass channels r_i of its incoming edges.

        The bypass part sum_i beta_ij r_i takes one scalar product per edge: a
        [.., E] product of r_i with the betas of its E outgoing edges, unstacked,
        would copy every r_i E times over in both passes.
        """
        incoming = [e for e, (_, d) in enumerate(gt.EDGES) if d == dst]
        terms = [mixed[e] for e in incoming if mixed[e] is not None]
        if terms:
            m = tf.add_n(terms) if len(terms) > 1 else terms[0]
        else:  # every incoming edge gives zero
            e = incoming[0]
            m = self.edges[e]._zeros(parts[gt.EDGES[e][0]])
        if not rests:
            return m
        beta = mixer.betas()
        r = tf.add_n([rests[gt.EDGES[e][0]] * beta[e] for e in incoming])
        return channel_shuffle(ops.concatenate([m, r], axis=-1), self.edges[0].partial_channels)


class _Mixer:
    """The mixing weights of one cell type, prepared once per forward pass and shared by its cells.

    w_ek beta_e: softmax(alpha) over the alive operations of edge e (Eq. 6; ones
    on a single path) times the edge normalisation softmax(beta)_e of PC-DARTS.
    """

    def __init__(self, op_weights, edge_weights):
        self._k = op_weights.shape[1]
        flat = ops.reshape(op_weights * edge_weights[:, None], [-1])
        self._flat = ops.concatenate([flat, ops.zeros([1], dtype=flat.dtype)], axis=0)  # last entry: 0
        self._beta = edge_weights
        self._cache = {}

    def matrix(self, rows):
        """[len(rows), E]: entry (r, e) is w_ek beta_e where rows[r][e] = (e, k), 0 where None."""
        zero = self._flat.shape[0] - 1
        index = tuple(tuple(zero if c is None else c[0] * self._k + c[1] for c in row) for row in rows)
        if index not in self._cache:
            self._cache[index] = tf.reshape(tf.gather(self._flat, np.asarray(index).ravel()), np.shape(index))
        return self._cache[index]

    def betas(self):
        """softmax(beta) of every edge, as scalars (one unstack per forward pass)."""
        if "beta" not in self._cache:
            self._cache["beta"] = tf.unstack(self._beta, num=self._beta.shape[0])
        return self._cache["beta"]


def default_reduction_cells(num_layers):
    """DARTS's rule: reduction cells at layers // 3 and 2 * layers // 3."""
    return (num_layers // 3, 2 * num_layers // 3)


class Supernet(keras.Model):
    """The DARTS search network over every operation, with alpha and beta.

    Args:
      num_classes: classifier outputs.
      input_shape: (H, W, 3).
      init_channels: C of the first cells (16 in the paper).
      num_layers: cells (6 in the BNAS paper, 8 in DARTS/PC-DARTS).
      reduction_cells: positions (0-based) of the reduction cells; None uses
        DARTS's rule. The BNAS paper puts them second and fourth of 6: (1, 3).
      partial_channels: c of PC-DARTS: 1/c of the channels enter the
        operations (2 in the BNAS paper for CIFAR-10, 4 in PC-DARTS's code).
      binarization, binary_activations, theta: options of every convolution
        inside the cells (`bnas_tf.layers`); the stem and classifier stay full
        precision.
      full_precision_preprocess: keep the cells' input preprocessing full
        precision, as `bnas_tf.network.build_network` does.
      stem_multiplier: the stem has stem_multiplier * C channels (3).
      imagenet: PC-DARTS's ImageNet search network (`model_search_imagenet.py`):
        stem0 (3x3 stride-2 conv to 3C/2, BN, ReLU, 3x3 stride-2 conv to 3C,
        BN) and stem1 (ReLU, 3x3 stride-2 conv to 3C, BN) take a 224 input to
        56 and 28 pixels, and the first cell reduces its input s0 as after a
        reduction cell; without it the cells would run at the full 224
        pixels, 64 times the activations.
    """

    def __init__(
        self,
        num_classes,
        input_shape=(32, 32, 3),
        *,
        init_channels=16,
        num_layers=6,
        reduction_cells=(1, 3),
        partial_channels=2,
        binarization="pcnn",
        binary_activations=False,
        full_precision_preprocess=False,
        theta=layers.DEFAULT_THETA,
        stem_multiplier=3,
        imagenet=False,
        primitives=gt.PRIMITIVES,
        seed=0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.image_shape = tuple(input_shape)
        self.primitives = tuple(primitives)
        reduction_cells = default_reduction_cells(num_layers) if reduction_cells is None else tuple(reduction_cells)
        if any(not 0 <= r < num_layers for r in reduction_cells):
            raise ConfigError(
                f"Invalid `reduction_cells`: positions must lie in [0, {num_layers}). "
                f"Received: reduction_cells={reduction_cells!r}"
            )
        self.reduction_cells = reduction_cells
        self.config_summary = dict(
            init_channels=init_channels,
            num_layers=num_layers,
            reduction_cells=list(reduction_cells),
            partial_channels=partial_channels,
            binarization=binarization,
            binary_activations=binary_activations,
            full_precision_preprocess=bool(full_precision_preprocess),
            imagenet=bool(imagenet),
        )
        op_options = dict(binarization=binarization, binary_activations=binary_activations, theta=theta)
        c_curr = stem_multiplier * init_channels
        self.imagenet = bool(imagenet)
        if self.imagenet:
            if c_curr % 2:
                raise ConfigError(
                    "Invalid `init_channels`: the ImageNet stem halves stem_multiplier * init_channels, which "
                    f"must be even. Received: init_channels={init_channels!r}"
                )

            def conv(filters, name):
                return keras.layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False, name=name)

            self.stem0 = [conv(c_curr // 2, "stem0_conv1"), layers.batch_norm(True, name="stem0_bn1"),
                          keras.layers.ReLU(name="stem0_relu"), conv(c_curr, "stem0_conv2"),
                          layers.batch_norm(True, name="stem0_bn2")]
            self.stem1 = [keras.layers.ReLU(name="stem1_relu"), conv(c_curr, "stem1_conv"),
                          layers.batch_norm(True, name="stem1_bn")]
        else:
            self.stem_conv = keras.layers.Conv2D(c_curr, 3, padding="same", use_bias=False, name="stem_conv")
            self.stem_bn = layers.batch_norm(True, name="stem_bn")
        c_curr = init_channels
        self.cells = []
        self._templates = OpTemplates()
        self._fused_ops = FusedOps()
        self.fuse_edges = False  # the building call below runs the per-edge layers
        reduction_prev = self.imagenet  # s0 is twice the size of s1
        for i in range(num_layers):
            reduction = i in reduction_cells
            if reduction:
                c_curr *= 2
            cell = SearchCell(c_curr, reduction, reduction_prev, partial_channels, self.primitives, op_options,
                              self._templates, full_precision_preprocess=bool(full_precision_preprocess),
                              name=f"cell_{i}")
            self.cells.append(cell)
            reduction_prev = reduction
        self.pool = keras.layers.GlobalAveragePooling2D(name="gap")
        self.classifier = keras.layers.Dense(self.num_classes, name="classifier")
        k = len(self.primitives)
        init = keras.initializers.RandomNormal(stddev=1e-3, seed=seed)
        self.alpha_normal = self.add_weight(shape=(gt.NUM_EDGES, k), initializer=init, name="alpha_normal")
        self.alpha_reduce = self.add_weight(shape=(gt.NUM_EDGES, k), initializer=init, name="alpha_reduce")
        self.beta_normal = self.add_weight(shape=(gt.NUM_EDGES,), initializer=init, name="beta_normal")
        self.beta_reduce = self.add_weight(shape=(gt.NUM_EDGES,), initializer=init, name="beta_reduce")
        # 1 where an operation is still in the search space; [cell type, edge, op].
        self.alive_mask = self.add_weight(
            shape=(len(gt.CELL_TYPES), gt.NUM_EDGES, k), initializer="ones", trainable=False, name="alive_mask"
        )
        self.refresh_alive()
        # Build every operation now (eagerly), so that traced graphs never create variables.
        self._pcnn = False
        self(ops.zeros((2,) + self.image_shape), training=False)
        # Operations run inside shared traced functions (OpTemplates), where a
        # layer cannot add a loss; the supernet adds one amplitude loss for all.
        for conv in layers.pcnn_convs(self):
            conv.adds_amplitude_loss = False
        self._pcnn = bool(layers.pcnn_convs(self)) and theta > 0
        # Edges leaving the same node run fused (`bnas_tf.search.fused`); False runs each edge's layers.
        self.fuse_edges = True

    def build(self, *args, **kwargs):
        # Sublayers build on the first (eager) call; Keras's default would
        # instead run `call` symbolically, tracing every branch once more.
        pass

    # ---- search space state -------------------------------------------------------------
    def set_alive(self, alive):
        """Sets the operations left per edge: {"normal": [[op names] x 14], "reduce": ...}."""
        index = {name: i for i, name in enumerate(self.primitives)}
        mask = np.zeros(self.alive_mask.shape, dtype=np.float32)
        for c, cell_type in enumerate(gt.CELL_TYPES):
            edges = alive[cell_type]
            if len(edges) != gt.NUM_EDGES:
                raise ConfigError(f"Expected {gt.NUM_EDGES} edges for the {cell_type} cell, got {len(edges)}.")
            for e, names in enumerate(edges):
                if not names:
                    raise ConfigError(f"Every edge needs an operation; edge {e} of the {cell_type} cell has none.")
                mask[c, e, [index[name] for name in names]] = 1.0
        self.alive_mask.assign(mask)
        self.refresh_alive()

    def refresh_alive(self):
        """Reads the alive sets from `alive_mask` (after a checkpoint restore)."""
        mask = ops.convert_to_numpy(self.alive_mask)
        self._alive = {
            t: tuple(tuple(int(i) for i in np.flatnonzero(mask[c, e])) for e in range(gt.NUM_EDGES))
            for c, t in enumerate(gt.CELL_TYPES)
        }

    @property
    def alive(self):
        """{"normal": ((op indices alive on edge 0), ...), "reduce": ...}: the traced structure."""
        return self._alive

    def choice(self, ops_by_type):
        """A sampled architecture as op indices, ((normal x 14), (reduce x 14)), from names."""
        index = {name: i for i, name in enumerate(self.primitives)}
        return tuple(tuple(index[name] for name in ops_by_type[t]) for t in gt.CELL_TYPES)

    # ---- architecture parameters ------------------------------------------------------------
    @property
    def arch_variables(self):
        return [self.alpha_normal, self.alpha_reduce, self.beta_normal, self.beta_reduce]

    @property
    def weight_variables(self):
        """Trainable weights updated by SGD (everything but alpha, beta and PCNN amplitudes)."""
        arch = {id(v) for v in self.arch_variables}
        from bnas_tf import amplitude

        skip = arch | {id(v) for v in amplitude.amplitude_variables(self)}
        return [v for v in self.trainable_weights if id(v) not in skip]

    def _alpha(self, cell_type):
        return self.alpha_normal if cell_type == "normal" else self.alpha_reduce

    def _beta(self, cell_type):
        return self.beta_normal if cell_type == "normal" else self.beta_reduce

    def _mask(self, cell_type):
        return self.alive_mask[gt.CELL_TYPES.index(cell_type)]

    def op_weights(self, cell_type):
        """softmax(alpha) over the alive operations of each edge, [14, K] (0 where abandoned)."""
        alpha = self._alpha(cell_type)
        masked = ops.where(self._mask(cell_type) > 0, alpha, ops.full_like(alpha, -1e9))
        return ops.softmax(masked, axis=-1)

    def edge_weights(self, cell_type):
        """Edge normalisation: softmax(beta) over the incoming edges of each node, [14]."""
        beta = self._beta(cell_type)
        parts, offset = [], 0
        for node in range(gt.STEPS):
            n = node + 2
            parts.append(ops.softmax(beta[offset : offset + n]))
            offset += n
        return ops.concatenate(parts, axis=0)

    # ---- forward ------------------------------------------------------------------------------
    def stem(self, inputs, training=None):
        """(s0, s1), the two inputs of the first cell."""
        if not self.imagenet:
            x = self.stem_bn(self.stem_conv(inputs), training=training)
            return x, x
        s0 = layers.apply_sequence(self.stem0, inputs, training)
        return s0, layers.apply_sequence(self.stem1, s0, training)

    def call(self, inputs, training=None, choice=None):
        s0, s1 = self.stem(inputs, training=training)
        mixed = {}
        if choice is None:
            mixed = {t: self.op_weights(t) for t in gt.CELL_TYPES}
        edge_w = {t: self.edge_weights(t) for t in gt.CELL_TYPES}
        if choice is not None:
            edge_w = {t: ops.stop_gradient(w) for t, w in edge_w.items()}
        mixers = {}
        if self.fuse_edges:
            op_w = mixed
            if choice is not None:  # a single path: each chosen operation with weight 1
                ones = ops.ones((gt.NUM_EDGES, len(self.primitives)), dtype=edge_w["normal"].dtype)
                op_w = dict.fromkeys(gt.CELL_TYPES, ones)
            mixers = {t: _Mixer(op_w[t], edge_w[t]) for t in gt.CELL_TYPES}
        amp = ops.zeros(())
        for cell in self.cells:
            t = "reduce" if cell.reduction else "normal"
            row = None if choice is None else choice[1 if cell.reduction else 0]
            out, loss = cell(
                s0,
                s1,
                edge_w[t],
                op_weights=mixed.get(t),
                alive=None if choice is not None else self.alive[t],
                choice=row,
                training=training,
                fused=self._fused_ops if self.fuse_edges else None,
                mixer=mixers.get(t),
            )
            amp = amp + loss
            s0, s1 = s1, out
        if self._pcnn:
            for cell in self.cells:
                for pre in (cell.preprocess0, cell.preprocess1):
                    for conv in layers.pcnn_convs(pre):
                        amp = amp + conv.amplitude_loss()
            self.add_loss(amp)
        return self.classifier(self.pool(s1))

    # ---- derivation --------------------------------------------------------------------------------
    def alphas(self):
        """{"normal": [14, K], "reduce": [14, K]} NumPy alpha, NaN where abandoned."""
        out = {}
        for t in gt.CELL_TYPES:
            a = np.full((gt.NUM_EDGES, len(self.primitives)), np.nan, dtype=np.float64)
            values = ops.convert_to_numpy(self._alpha(t))
            for e, alive in enumerate(self.alive[t]):
                a[e, list(alive)] = values[e, list(alive)]
            out[t] = a
        return out

    def derived_weights(self):
        """softmax(alpha) over alive ops times the edge weight, [14, K] per cell type (NaN: abandoned)."""
        out = {}
        for t in gt.CELL_TYPES:
            w = np.full((gt.NUM_EDGES, len(self.primitives)), np.nan, dtype=np.float64)
            op_w = ops.convert_to_numpy(self.op_weights(t))
            edge_w = ops.convert_to_numpy(self.edge_weights(t))
            for e, alive in enumerate(self.alive[t]):
                w[e, list(alive)] = op_w[e, list(alive)] * edge_w[e]
            out[t] = w
        return out

    def genotype(self):
        """PC-DARTS's derivation: per node the two strongest incoming edges by the
        beta-weighted alpha of their strongest non-`none` operation."""
        w = self.derived_weights()
        return gt.derive(w["normal"], w["reduce"], primitives=self.primitives)
