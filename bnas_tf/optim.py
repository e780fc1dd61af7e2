"""SGD over many variables as one vector, in PyTorch's form (the search's Eqs. 15 and 19).

The supernet has thousands of small variables (every edge's kernels and
amplitude matrices). A Keras optimizer adds about ten graph ops per variable
to each traced step, plus three for clipping and three for weight decay,
which made the optimizer a third of the search graph (BUILD.md, "Graph
size"). `FlatSGD` works on one vector instead. For the variables that got a
gradient (the others, abandoned or not sampled, are left alone, momentum
included, as ``torch.optim.SGD`` skips parameters without a gradient):

    g <- sum over replicas of the gradients, concatenated     (one all-reduce)
    g <- g * c / max(||g||_2, c)        (``clip_grad_norm_``, clip_norm c)
    g <- g + lambda * w                 (coupled L2 weight decay, lambda)
    v <- mu * v + g;  w <- w - lr * v   (``torch.optim.SGD``; Eq. 15)
    w <- |w|                            (absolute=True: A <- |A - eta2 dA|, Eq. 19)

Keras's SGD folds the learning rate into the velocity (v <- mu v - lr g),
which differs while the cosine schedule decays it; this is the DARTS /
PC-DARTS reference's form. Clipping acts on the raw gradient and the decay
is added after it, in the reference's order (``clip_grad_norm_`` before
``optimizer.step()``).

With ``adam=True`` the last two lines become Adam's step (as `keras.optimizers.Adam`,
bias-corrected, one step count for the whole vector), for the binary networks whose
latent weights SGD barely moves (`bnas_tf.train.Adam` says why):

    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
    w <- w - lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps)

Variables of one shape are stacked and split together, so that the step
graph holds a few ops per shape and only the read and the update of each
variable (BUILD.md, "Graph size").
"""

import numpy as np
import tensorflow as tf


# The weight optimizers a search or a training takes: "sgd" (the paper's) or "adam".
OPTIMIZERS = ("sgd", "adam")

# Adam's constants, Keras's defaults.
ADAM_BETA_1 = 0.9
ADAM_BETA_2 = 0.999
ADAM_EPSILON = 1e-7


def adam_step_size(learning_rate, t, beta_1=ADAM_BETA_1, beta_2=ADAM_BETA_2):
    """Adam's bias-corrected step size at step t (from 1): lr sqrt(1 - b2^t) / (1 - b1^t)."""
    return learning_rate * tf.sqrt(1.0 - beta_2**t) / (1.0 - beta_1**t)


def _tf_variable(variable):
    """The tf.Variable under a Keras variable (a distributed one under a strategy)."""
    return getattr(variable, "value", variable) if not isinstance(variable, tf.Variable) else variable


class FlatSGD(tf.Module):
    """SGD with momentum for a fixed list of variables, stepped as one vector.

    Args:
      variables: the variables (Keras or tf), all of one dtype.
      learning_rate: the initial learning rate (a variable: `learning_rate.assign`).
      momentum: mu; 0 keeps no velocity.
      weight_decay: lambda, coupled L2.
      clip_norm: global-norm clip of the summed gradient; None or 0: none.
      absolute: step to |w| (the amplitude matrices' Eq. 19).

    Create it inside ``strategy.scope()``. Call `apply` inside ``strategy.run``
    (or with no strategy) with each replica's own gradients.
    """

    def __init__(self, variables, *, learning_rate, momentum=0.0, weight_decay=0.0, clip_norm=None,
                 absolute=False, adam=False, name):
        super().__init__(name=name)
        targets = [_tf_variable(v) for v in variables]
        dtypes = {v.dtype for v in targets}
        if len(dtypes) > 1:
            raise ValueError(f"FlatSGD needs variables of one dtype; got {sorted(d.name for d in dtypes)}.")
        dtype = dtypes.pop() if dtypes else tf.float32
        # Held by a closure so that tf.Module does not track (and checkpoint) them a second time.
        self._targets = lambda: targets
        self._shapes = [v.shape for v in targets]
        self._sizes = [int(np.prod(s)) for s in self._shapes]
        ranks = {}
        for shape in self._shapes:
            ranks.setdefault(tuple(shape), len(ranks))
        self._group_rank = lambda shape: ranks[shape]  # a closure: tf.Module would track a dict
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.clip_norm = float(clip_norm or 0.0)
        self.absolute = bool(absolute)
        self.learning_rate = tf.Variable(learning_rate, dtype=dtype, trainable=False, name=f"{name}/learning_rate")
        self.adam = bool(adam)
        self.velocity = self.second_moment = self.iterations = None
        if (self.momentum or self.adam) and targets:
            self.velocity = tf.Variable(tf.zeros([sum(self._sizes)], dtype), trainable=False,
                                        name=f"{name}/velocity")
        if self.adam and targets:
            self.second_moment = tf.Variable(tf.zeros([sum(self._sizes)], dtype), trainable=False,
                                             name=f"{name}/second_moment")
            self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name=f"{name}/iterations")

    @property
    def state(self):
        """The optimizer's own variables (moments, step count, learning rate)."""
        return [v for v in (self.velocity, self.second_moment, self.iterations, self.learning_rate) if v is not None]

    def _groups(self, used):
        """The variables `used` grouped by shape: [(shape, [index, ...])], groups in order of
        first appearance in the whole list, so that the grouped order of any subset is a
        subsequence of the grouped order of all variables."""
        groups = {}
        for i in used:
            groups.setdefault(tuple(self._shapes[i]), []).append(i)
        return sorted(groups.items(), key=lambda item: self._group_rank(item[0]))

    @staticmethod
    def _as_vector(tensors):
        """One flat vector of tensors of one shape: one stack (none for one tensor) and one reshape."""
        stacked = tensors[0] if len(tensors) == 1 else tf.stack(tensors)
        return tf.reshape(stacked, tf.constant([-1]))

    def apply(self, grads):
        """One step; ``grads[i]`` is variable i's gradient on this replica, or None."""
        used = tuple(i for i, g in enumerate(grads) if g is not None)
        if not used:
            return
        targets = self._targets()
        dtype = targets[used[0]].dtype
        # Grouped by shape: a stack and a reshape per shape instead of a reshape per variable
        # (thousands in a supernet step).
        groups = self._groups(used)
        flat = tf.concat([self._as_vector([tf.cast(grads[i], dtype) for i in idx]) for _, idx in groups], 0)
        ctx = tf.distribute.get_replica_context()
        if ctx is None:
            self._update(tf.distribute.get_strategy(), flat, groups)
            return
        flat = ctx.all_reduce(tf.distribute.ReduceOp.SUM, flat)
        ctx.merge_call(lambda strategy, g: self._update(strategy, g, groups), args=(flat,))

    def _update(self, strategy, flat, groups):
        """Cross-replica: the step on every device's copy, from its (identical) summed gradient."""
        targets = self._targets()
        anchor = self.velocity if self.velocity is not None else targets[groups[0][1][0]]
        strategy.extended.update(anchor, lambda _, g: self._step(g, groups), args=(flat,), group=False)

    def _step(self, g, groups):
        # Inside `extended.update`: reads and assigns reach this device's copy of each variable.
        # g holds the used variables in grouped order (`_groups`).
        targets = self._targets()
        order = [i for _, idx in groups for i in idx]
        if self.clip_norm:
            g = tf.clip_by_norm(g, self.clip_norm)
        if self.weight_decay or self.absolute:
            w = tf.concat([self._as_vector([targets[i] for i in idx]) for _, idx in groups], 0)
        if self.weight_decay:
            g = g + self.weight_decay * w
        if self.adam:
            m = self._moment(self.velocity, order, lambda m: ADAM_BETA_1 * m + (1.0 - ADAM_BETA_1) * g)
            v = self._moment(self.second_moment, order, lambda v: ADAM_BETA_2 * v + (1.0 - ADAM_BETA_2) * g * g)
            t = tf.cast(self.iterations.assign_add(1), g.dtype)
            g = adam_step_size(1.0, t) * m / (tf.sqrt(v) + ADAM_EPSILON)
        elif self.velocity is not None:
            g = self._moment(self.velocity, order, lambda v: self.momentum * v + g)
        new = tf.abs(w - self.learning_rate * g) if self.absolute else self.learning_rate * g
        chunks = tf.split(new, [len(idx) * self._sizes[idx[0]] for _, idx in groups])
        for (shape, idx), chunk in zip(groups, chunks):
            values = [tf.reshape(chunk, shape)] if len(idx) == 1 else tf.unstack(
                tf.reshape(chunk, (len(idx),) + shape), num=len(idx))
            for i, value in zip(idx, values):
                if self.absolute:
                    targets[i].assign(value)
                else:
                    targets[i].assign_sub(value)

    def _moment(self, slot, order, update):
        """slot <- update(slot) on the used variables' pieces; returns them in grouped order.

        A slot is kept in the variables' own order: one split and one concat move it to
        the grouped order and back.
        """
        if order == list(range(len(self._sizes))):
            new = update(slot)
            slot.assign(new)
            return new
        pieces = tf.split(slot, self._sizes)
        new = update(tf.concat([pieces[i] for i in order], 0))
        for i, piece in zip(order, tf.split(new, [self._sizes[i] for i in order])):
            pieces[i] = piece
        slot.assign(tf.concat(pieces, 0))
        return new
