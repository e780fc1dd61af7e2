"""PC-DARTS search steps and epochs over the supernet (BNAS paper, Eqs. 5-6).

First-order bilevel optimisation (Eq. 5): the weights X descend the training
loss on the weights half of the training set, the architecture parameters
(alpha, beta) descend the validation loss on the other half. Weights use SGD
with momentum in PyTorch's form, global-norm gradient clipping and then
coupled L2 weight decay (as `clip_grad_norm_` and `torch.optim.SGD` in the
PC-DARTS code), all as one vector (`bnas_tf.optim.FlatSGD`); alpha and beta use
Adam with coupled L2 weight decay. PCNN amplitude matrices A take their own
plain SGD step, A <- |A - eta2 dA| (Eq. 19), after the weights (Eq. 15).

The unit of progress is an *epoch unit*: one warm-up or PC-DARTS epoch, or
one sampled-architecture trial. The unit counter lives in the checkpoint; it
indexes the cosine learning-rate schedule and the data order, so a resumed
search replays exactly what an uninterrupted one does.
"""

import collections
import contextlib
import dataclasses
import math
import os
import time

import keras
import tensorflow as tf
from absl import logging

from bnas_tf import amplitude
from bnas_tf import checkpoints
from bnas_tf import console
from bnas_tf import data as data_lib
from bnas_tf import distribute
from bnas_tf import interrupt
from bnas_tf import tracing
from bnas_tf.search import board
from bnas_tf.optim import OPTIMIZERS, FlatSGD
from bnas_tf.errors import ConfigError, StateError, TrainingError
from bnas_tf.search import statefile
from bnas_tf.search.abandon import ACCURACY_SCALES
from bnas_tf.search.supernet import Supernet


@dataclasses.dataclass
class SearchConfig:
    """Every setting of a search; defaults are the BNAS paper's (Sec. 4.1.2)."""

    dataset: str = "cifar10"
    data_dir: str | None = None
    seed: int = 0
    init_channels: int = 16
    layers: int = 6
    reduction_cells: tuple | None = (1, 3)
    partial_channels: int = 2
    binarization: str = "pcnn"
    binary_activations: bool = False
    full_precision_preprocess: bool = False  # the cells' input preprocessing (the paper's ImageNet setting)
    theta: float = 1e-4
    batch_size: int = 128  # warm-up and PC-DARTS phases
    trial_batch_size: int = 400  # sampled architectures (Sec. 4.1.2)
    learning_rate: float = 0.025
    learning_rate_min: float = 0.0
    optimizer: str = "sgd"  # of the weights: "sgd" (the paper's) or "adam" (binary networks)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    grad_clip: float = 5.0
    arch_learning_rate: float = 0.01
    arch_beta1: float = 0.5
    arch_beta2: float = 0.999
    arch_weight_decay: float = 1e-3
    amplitude_learning_rate: float | None = None  # eta2; None: the weight learning rate
    epochs: int = 50  # plain PC-DARTS mode
    arch_freeze_epochs: int = 15  # plain PC-DARTS mode (PC-DARTS code: 15)
    heldout_size: int = 5000
    steps_per_epoch: int | None = None  # cap, for smoke runs
    # BNAS (Algorithm 1)
    k: int = 8
    t: int = 3
    v: int = 1
    warmup_epochs: int = 5  # L
    warmup_freeze_epochs: int = 3
    delta: float = 2.0
    one_bit: bool = False
    ucb: bool | None = None  # Eq. 10; None: one_bit (the paper)
    accuracy_unit: str = "percent"  # of Eq. 7: "percent" (the PC-DARTS code's) or "fraction"

    def validate(self):
        positive = ("init_channels", "layers", "partial_channels", "batch_size", "trial_batch_size", "t")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"Invalid `{name}`: expected a positive integer. Received: {name}={value!r}")
        for name in ("learning_rate", "arch_learning_rate", "grad_clip"):
            value = getattr(self, name)
            if not value > 0:
                raise ConfigError(f"Invalid `{name}`: expected a positive number. Received: {name}={value!r}")
        for name in ("weight_decay", "arch_weight_decay", "momentum", "theta", "delta"):
            value = getattr(self, name)
            if not value >= 0:
                raise ConfigError(f"Invalid `{name}`: expected a number >= 0. Received: {name}={value!r}")
        if (self.init_channels % self.partial_channels) or (self.init_channels // self.partial_channels) % 2:
            raise ConfigError(
                "Invalid `partial_channels`: init_channels / partial_channels must be an even integer "
                f"(init_channels={self.init_channels}). Received: partial_channels={self.partial_channels!r}"
            )
        if self.ucb not in (None, True, False):
            raise ConfigError(f"Invalid `ucb`: expected a bool or None. Received: ucb={self.ucb!r}")
        if self.accuracy_unit not in ACCURACY_SCALES:
            raise ConfigError(f"Invalid `accuracy_unit`: expected one of {', '.join(ACCURACY_SCALES)}. "
                              f"Received: accuracy_unit={self.accuracy_unit!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"Invalid `optimizer`: expected one of {', '.join(OPTIMIZERS)}. "
                              f"Received: optimizer={self.optimizer!r}")
        return self


SETTINGS_FILE = "search_settings.json"
# Settings a resumed search may change: where the data lives, and the learning rates (the advice
# after a diverged loss is to resume with lower ones); a change of these is logged.
_RESUMABLE_CHANGES = ("data_dir", "learning_rate", "learning_rate_min", "arch_learning_rate",
                      "amplitude_learning_rate")


def check_resume_settings(config, model_dir, method):
    """Records the search's settings in `model_dir` at its start; a resume with other settings
    (another method, batch size, held-out size, steps, ...) is a `StateError` that names every
    difference, since it would silently mix two searches. Learning rates may change (logged)."""
    current = {"method": method, **dataclasses.asdict(config)}
    os.makedirs(model_dir, exist_ok=True)
    try:
        diff = statefile.settings_changes(os.path.join(model_dir, SETTINGS_FILE), current)
    except statefile.Unreadable as err:
        raise StateError(f"Cannot read the search settings ({err}). Start the search over with "
                         "--restart=search, or in a new --model_dir.") from None
    allowed = {k: v for k, v in diff.items() if k in _RESUMABLE_CHANGES}
    refused = {k: v for k, v in diff.items() if k not in _RESUMABLE_CHANGES}
    if refused:
        raise StateError(
            f"The search in {model_dir} was started with other settings: {statefile.describe(refused)}. "
            "Resume it with the same flags, start it over with these with --restart=search, or start a new "
            "search in another --model_dir.")
    if allowed:
        logging.warning("Resuming the search with %s.", statefile.describe(allowed))


def search_data(config):
    """The search's data: `data.search_splits` of the config's dataset, at its warm-up batch."""
    return data_lib.search_splits(config.dataset, batch_size=config.batch_size, seed=config.seed,
                                  data_dir=config.data_dir, heldout_size=config.heldout_size)


def check_trial_batch_size(config, splits, replicas=1):
    """A `ConfigError` that names `trial_batch_size` when the sampled architectures' batch does not
    fit the split (`data.SearchSplits.with_batch_size` drops the remainder of both halves).

    Called before anything is recorded or trained: unchecked, it failed at the first trial, after
    the whole warm-up, as the data's `batch_size` (the training's flag's name).
    """
    batch = config.trial_batch_size
    size, part = splits.weights_size, "weights part"
    if splits.arch_size < size:
        size, part = splits.arch_size, "architecture part"
    if batch > size:
        per_replica = f" ({batch // replicas} per replica times {replicas} replicas)" if replicas > 1 else ""
        raise ConfigError(
            f"Invalid `trial_batch_size`: expected at most the {size} examples of the {splits.spec.name} search's "
            f"{part} (the batches of the sampled architectures drop the remainder); lower --trial_batch_size. "
            f"Received: trial_batch_size={batch}{per_replica}")


@contextlib.contextmanager
def search_graph_options():
    """How the search graphs are built, restored afterwards (for training):

    - Grappler off: the search graphs are many calls of a few shared
      operation functions, and rewriting them costs far more than it saves;
    - each traced op records only bnas_tf's and the script's stack frames
      (`tracing.package_frames_only`): TensorFlow's and Keras's frames, 60 to
      100 per op, held 370 MB at the peak of a search step (BUILD.md).
    """
    previous = tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False)
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    try:
        with tracing.package_frames_only():
            yield
    finally:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": previous})


# Held-out batches up to which a sampled architecture is scored eagerly rather than through a
# graph traced for it. Measured at the BNAS setting (6 cells, C=16, batch 128): an eager batch
# takes 2.3x a traced one (0.64 against 0.28 s) and tracing costs the first call about 6
# traced batches (1.6 s), so the graph wins from about 4 batches; at the bench's digits scale
# eager still won at 4 (BUILD.md). CIFAR-10's 5000 held-out images are 40 batches of 128.
EAGER_EVAL_MAX_BATCHES = 8


def without_autotuning(dataset):
    """`dataset` with tf.data's autotuning off.

    The search makes a new iterator for every epoch unit and every held-out
    pass, and deleting an iterator waits for its autotuning thread: 2.2-2.4 s
    for one unit in three on this 2-core machine, while the steps keep the
    cores busy (BUILD.md). Without autotuning, parallel maps use one call per
    core and the in-memory pipelines still outpace the steps.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def cosine_learning_rate(unit, total_units, lr, lr_min):
    """lr_min + (lr - lr_min) * (1 + cos(pi * unit / total)) / 2 (per epoch, as DARTS)."""
    progress = min(unit, total_units) / max(total_units, 1)
    return lr_min + 0.5 * (lr - lr_min) * (1.0 + math.cos(math.pi * progress))


class _SummedGradients:
    """Keras optimizer whose gradients come already summed over the replicas.

    In a replica context Keras's TensorFlow optimizer sums the gradients that
    `apply` receives over the replicas (`_all_reduce_sum_gradients`). The
    architecture step sums them first itself, because the coupled weight
    decay must act on the global gradient; this keeps the optimizer from
    summing them a second time.
    """

    def _all_reduce_sum_gradients(self, grads_and_vars):
        return list(grads_and_vars)


class _Adam(_SummedGradients, keras.optimizers.Adam):
    pass


def _sum_over_replicas(grads):
    """Gradients summed over the replicas (in a replica context; one collective)."""
    if not grads:
        return grads
    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, list(grads))


class _TimedFirstCall:
    """A traced step whose first call (trace, graph build, one step) is timed and logged."""

    def __init__(self, fn, kind, seconds):
        self._fn, self._kind, self._seconds = fn, kind, seconds

    @property
    def function(self):
        """The traced function (a `tracing.GraphFreeFunction`)."""
        return self._fn

    def __call__(self, *args):
        if self._kind is None:
            return self._fn(*args)
        start = time.perf_counter()
        result = self._fn(*args)
        elapsed = time.perf_counter() - start
        self._seconds["trace"] += elapsed
        logging.info("Traced the %s step in %.1f s.", self._kind, elapsed)
        self._kind = None
        return result


class Searcher:
    """Owns the supernet, its optimizers, the traced steps and the checkpoint.

    Args:
      config: a `SearchConfig`.
      model_dir: where checkpoints, TensorBoard logs and outputs go.
      strategy: a `tf.distribute.Strategy` (default: the one in scope).
      total_units: epoch units of the whole search, for the cosine schedule.
      splits: the search's data, by default `data.search_splits` of the
        config's dataset. Only its `spec` is read until an epoch runs: a caller
        that feeds the steps its own tensors (the bench) passes an object with
        the `DatasetSpec` alone, and no dataset is loaded.
    """

    def __init__(self, config, model_dir, strategy=None, total_units=None, splits=None):
        self.config = config.validate()
        self.model_dir = model_dir
        self.strategy = strategy or tf.distribute.get_strategy()
        self.total_units = total_units or config.epochs
        self._start_clock()  # restarted by restore()
        os.makedirs(model_dir, exist_ok=True)
        self.splits = search_data(config) if splits is None else splits
        spec = self.splits.spec
        keras.utils.set_random_seed(config.seed)
        with self.strategy.scope():
            self.model = Supernet(
                spec.num_classes,
                tuple(spec.image_shape),
                init_channels=config.init_channels,
                num_layers=config.layers,
                reduction_cells=config.reduction_cells,
                partial_channels=config.partial_channels,
                binarization=config.binarization,
                binary_activations=config.binary_activations,
                full_precision_preprocess=config.full_precision_preprocess,
                theta=config.theta,
                imagenet=spec.imagenet_stem,
                seed=config.seed,
            )
            self.weight_vars = self.model.weight_variables
            self.amp_vars = amplitude.amplitude_variables(self.model)
            self.arch_vars = self.model.arch_variables
            self.w_opt = FlatSGD(self.weight_vars, learning_rate=config.learning_rate, momentum=config.momentum,
                                 weight_decay=config.weight_decay, clip_norm=config.grad_clip,
                                 adam=config.optimizer == "adam", name="w_opt")
            self.a_opt = _Adam(
                config.arch_learning_rate, beta_1=config.arch_beta1, beta_2=config.arch_beta2, name="a_opt"
            )
            amp_lr = config.amplitude_learning_rate or config.learning_rate
            self.amp_opt = FlatSGD(self.amp_vars, learning_rate=amp_lr, absolute=True, name="amp_opt")
            self.a_opt.build(self.arch_vars)
            self.unit = tf.Variable(0, dtype=tf.int64, trainable=False, name="unit")
        self._amp_lr_tied = config.amplitude_learning_rate is None
        # Keras 3 layers held in lists are not tracked by tf.train.Checkpoint, so
        # the supernet is checkpointed as the ordered list of all its variables
        # (weights, alpha, beta, BatchNorm statistics, the alive mask).
        self.checkpoint = tf.train.Checkpoint(
            model=[getattr(v, "value", v) for v in self.model.variables],
            w_opt=self.w_opt,
            a_opt=self.a_opt,
            amp_opt=self.amp_opt,
            unit=self.unit,
        )
        self.manager = checkpoints.manager(self.checkpoint, os.path.join(model_dir, "checkpoints"), max_to_keep=2)
        self._fns = {}
        # Where the search loop's time goes besides training steps: "trace" is the
        # first call of every new step graph (tracing, building the graph and that
        # call's step), "checkpoint" the saves. A BNAS round traces a new graph.
        self.seconds = collections.Counter()
        # BatchNorm moving statistics: Keras updates each replica's copy on its own (aggregation "none").
        self._bn_stats = [v for v in self.model.non_trainable_variables if v.name in ("moving_mean", "moving_variance")]
        self._sync_bn_fn = None
        self.writer = tf.summary.create_file_writer(os.path.join(model_dir, "tensorboard", "search"))
        self.loss_fn = keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="sum"
        )

    # ---- checkpoints ------------------------------------------------------------------
    ELAPSED_FILE = "elapsed.json"

    @property
    def elapsed_seconds(self):
        """The search's wall time over every process that ran it: the time each one spent up
        to its last checkpoint (kept in elapsed.json), plus this one's since `restore()`."""
        return self._seconds_before + (time.time() - self._clock_start)

    def _start_clock(self, seconds_before=0.0):
        self._seconds_before, self._clock_start = float(seconds_before), time.time()

    def restore(self):
        """Restores the latest checkpoint if any; returns the finished unit count."""
        self._start_clock()
        latest = self.manager.latest_checkpoint
        if latest is None:
            return 0
        try:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
        except (tf.errors.OpError, AssertionError, ValueError) as err:
            raise StateError(
                f"Cannot restore the search checkpoint {latest}: {str(err).splitlines()[0]}. "
                "It is corrupt or from a different configuration. Start the search over with --restart=search "
                "(or in a new --model_dir); do not delete the checkpoints alone: they and the Oracle state "
                "belong together, and deleting one of them mixes a fresh start with a search in progress."
            ) from None
        self.model.refresh_alive()
        elapsed_path = os.path.join(self.model_dir, self.ELAPSED_FILE)
        try:
            elapsed = statefile.read(elapsed_path) or {}
        except statefile.Unreadable:
            logging.warning("%s is unreadable: the search cost counts this process's time only.", elapsed_path)
            elapsed = {}
        if elapsed.get("unit") == int(self.unit.numpy()):
            self._start_clock(elapsed.get("seconds", 0.0))
        logging.info("Restored the search checkpoint %s (unit %d).", latest, int(self.unit.numpy()))
        return int(self.unit.numpy())

    def save(self, pending=None):
        """Checkpoints after a unit; `pending` (the unit's result) is written first."""
        start = time.perf_counter()
        if pending is not None:
            statefile.write(os.path.join(self.model_dir, "pending_unit.json"), pending, indent=1)
        if self.is_chief:
            self.manager.save(checkpoint_number=int(self.unit.numpy()))
            statefile.write(os.path.join(self.model_dir, self.ELAPSED_FILE),
                            {"unit": int(self.unit.numpy()), "seconds": self.elapsed_seconds})
        self.seconds["checkpoint"] += time.perf_counter() - start

    def pending(self):
        """The result of the last checkpointed unit, if it is the current one."""
        path = os.path.join(self.model_dir, "pending_unit.json")
        try:
            result = statefile.read(path)
        except statefile.Unreadable:
            logging.warning("%s is unreadable; a trial that finished just before the interruption, if any, "
                            "runs again.", path)
            return None
        if result is None:
            return None
        return result if result.get("unit") == int(self.unit.numpy()) else None

    @property
    def is_chief(self):
        """Whether this task writes checkpoints and outputs."""
        return distribute.is_chief(self.strategy)

    # ---- traced steps -----------------------------------------------------------------------
    def _apply_weights(self, tape, loss):
        """Eq. 15 for the weights (SGD, global-norm clipping, coupled L2), Eq. 19 for A (`FlatSGD`).

        Only variables that the step used get a gradient: operations outside
        the traced structure (abandoned, or not sampled) are left untouched,
        momentum included, as PyTorch's SGD skips parameters without a gradient.
        """
        n = len(self.weight_vars)
        grads = tape.gradient(loss, self.weight_vars + self.amp_vars)
        self.w_opt.apply(grads[:n])
        self.amp_opt.apply(grads[n:])

    def _loss(self, logits, labels, global_batch):
        loss = self.loss_fn(labels, logits) / global_batch
        if self.model.losses:
            # Amplitude loss (Eq. 2), once per replica step.
            loss += tf.add_n(self.model.losses) / self.strategy.num_replicas_in_sync
        return loss

    def _weight_step(self, x, y, choice, global_batch):
        with tf.GradientTape() as tape:
            logits = self.model(x, training=True, choice=choice)
            loss = self._loss(logits, y, global_batch)
        self._apply_weights(tape, loss)
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), y), tf.float32))
        return loss, correct

    def _arch_step(self, x, y, global_batch):
        cfg = self.config
        with tf.GradientTape() as tape:
            logits = self.model(x, training=True)
            loss = self.loss_fn(y, logits) / global_batch
        grads = _sum_over_replicas(tape.gradient(loss, self.arch_vars))
        grads = [g + cfg.arch_weight_decay * v for g, v in zip(grads, self.arch_vars)]
        self.a_opt.apply(grads, self.arch_vars)
        return loss

    def _distributed(self, key, replica_fn, from_iterator=False):
        """A tf.function running `replica_fn` on every replica, cached under `key`.

        Graphs of an old alive set or an earlier trial are dropped: they are
        never needed again. With `from_iterator`, the function takes a
        distributed iterator and runs on its next batch: it is traced once for
        the dataset's element spec, a partial last batch included, instead of
        once more for the last batch's shape.
        """
        if key not in self._fns:
            # The last element of a key is the network structure; drop older ones of the same kind.
            for stale in [k for k in self._fns if k[:-1] == key[:-1]]:
                self._release(self._fns.pop(stale))

            # Each replica's arguments behind the scan marker (`tracing.without_reference_scan`:
            # a shorter first call), all of it under the stack-trace filter in the replica's own
            # thread (MirroredStrategy), which the filter entered by search_graph_options does not reach.
            replica = replica_fn if distribute.is_tpu(self.strategy) else tracing.without_reference_scan(replica_fn)
            replica = tracing.with_package_frames(replica)

            def fn(*args):
                if from_iterator:
                    args = next(args[0])
                results = self.strategy.run(replica, args=args)
                return tf.nest.map_structure(
                    lambda r: self.strategy.reduce(tf.distribute.ReduceOp.SUM, r, axis=None), results
                )

            # Called by name once traced, the step's graph freed (BUILD.md, "The step's graph
            # freed once traced").
            fn = tracing.GraphFreeFunction(tf.function(tracing.counted_apart(fn), autograph=False))
            self._fns[key] = _TimedFirstCall(fn, key[0], self.seconds)
        return self._fns[key]

    @staticmethod
    def _release(step):
        """Lets a dropped step's graphs be freed: TensorFlow's registry of custom gradients
        would otherwise hold every graph a search traces (`tracing.release_gradients`)."""
        for concrete in step.function._list_all_concrete_functions():  # noqa: SLF001
            tracing.release_gradients(concrete.graph)

    def search_step_fn(self, update_arch):
        """One weight step (and, with update_arch, first one architecture step)."""
        gb = self.config.batch_size

        def replica(xw, yw, xa, ya):
            if update_arch:
                arch_loss = self._arch_step(xa, ya, gb)
                # The weight step starts once alpha and beta are updated. Nothing else orders
                # its forward pass after the architecture step's backward pass, and run side
                # by side the two passes' activations peaked together (BUILD.md, "Peak memory").
                with tf.control_dependencies([arch_loss] + [tf.identity(v) for v in self.arch_vars]):
                    xw = tf.identity(xw)
            else:
                arch_loss = tf.constant(0.0)
            loss, correct = self._weight_step(xw, yw, None, gb)
            return loss, correct, arch_loss

        return self._distributed(("search", update_arch, self._alive_key()), replica)

    def trial_step_fn(self, choice):
        """One weight step of the sampled single-path architecture `choice`."""
        gb = self.config.trial_batch_size

        def replica(x, y):
            loss, correct = self._weight_step(x, y, choice, gb)
            return loss, correct, tf.constant(0.0)

        return self._distributed(("trial", choice), replica)

    def eval_fn(self, choice=None):
        """Held-out accuracy of the supernet, or of the single path `choice`: a function of a
        distributed iterator over the held-out set, giving (correct, examples) of its next batch.

        A sampled architecture's BatchNorms normalise with the statistics of
        the held-out batch (training mode, no gradient): the moving averages,
        shared by every path and mixed from the batches of the last steps
        while the weights still move fast (mid-schedule learning rate, binary
        weights flipping sign), describe none of the paths. On the demo they
        scored trained paths at chance (0.10, while the same weights with
        batch statistics scored 0.33-0.54; BUILD.md, "How a sampled
        architecture is scored"). The moving averages this updates are read
        by nothing the search decides. The supernet (``choice=None``) is
        scored on its moving averages.

        A sampled architecture is scored once. On a held-out set of at most
        `EAGER_EVAL_MAX_BATCHES` batches it runs eagerly (its operations are the
        shared functions already traced for its training); on more, through a
        graph traced for it, whose batches cost less than half as much (BUILD.md).
        """

        def replica(x, y):
            logits = tf.stop_gradient(self.model(x, training=choice is not None, choice=choice))
            correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), y), tf.float32))
            return correct, tf.cast(tf.shape(y)[0], tf.float32)

        if choice is None:
            return self._distributed(("eval", self._alive_key()), replica, from_iterator=True)
        if self.splits.heldout_steps > EAGER_EVAL_MAX_BATCHES:
            return self._distributed(("eval_path", choice), replica, from_iterator=True)

        filtered = tracing.with_package_frames(replica)

        def eager(iterator):
            results = self.strategy.run(filtered, args=next(iterator))
            return tuple(self.strategy.reduce(tf.distribute.ReduceOp.SUM, r, axis=None) for r in results)

        return eager

    def _alive_key(self):
        alive = self.model.alive
        return (alive["normal"], alive["reduce"])

    def sync_batch_norm(self):
        """Averages the BatchNorm moving statistics over the replicas.

        Every replica normalises with the statistics of its own part of the
        batch (as PyTorch's DataParallel in DARTS) and updates its own copy of
        the moving averages. Called at the end of every training epoch unit,
        before held-out evaluation and checkpoints: the moving average is
        linear, so the mean of the replicas' copies is the moving average of
        the replica-averaged batch statistics, and every replica (and the
        checkpoint, which saves the first replica's copy) then holds it.
        """
        if self.strategy.num_replicas_in_sync == 1 or not self._bn_stats:
            return
        if self._sync_bn_fn is None:

            def replica():
                ctx = tf.distribute.get_replica_context()
                means = ctx.all_reduce(tf.distribute.ReduceOp.MEAN, [tf.identity(v.value) for v in self._bn_stats])
                for variable, mean in zip(self._bn_stats, means):
                    variable.assign(mean)

            self._sync_bn_fn = tf.function(lambda: self.strategy.run(replica), autograph=False)
        self._sync_bn_fn()

    # ---- epochs --------------------------------------------------------------------------
    def _set_learning_rate(self):
        cfg = self.config
        lr = cosine_learning_rate(int(self.unit.numpy()), self.total_units, cfg.learning_rate, cfg.learning_rate_min)
        self.w_opt.learning_rate.assign(lr)
        if self._amp_lr_tied:
            self.amp_opt.learning_rate.assign(lr)
        return lr

    def _steps(self, steps):
        cap = self.config.steps_per_epoch
        return steps if cap is None else min(steps, cap)

    def _distribute(self, dataset):
        """`dataset` split over the replicas, tf.data's autotuning off (`without_autotuning`)."""
        return self.strategy.experimental_distribute_dataset(without_autotuning(dataset))

    def _run(self, dataset, steps, step, label, batch_size):
        progbar = console.progress_bar(steps, ["loss", "acc"])
        total_loss = total_correct = seen = 0.0
        dist = self._distribute(dataset)
        for i, batch in enumerate(dist):
            if i >= steps:
                break
            loss, correct, _ = step(*batch)
            interrupt.check()
            loss = float(loss)
            if not math.isfinite(loss):
                latest = self.manager.latest_checkpoint
                kept = (f"The last good checkpoint, {latest}, is kept" if latest else
                        "No checkpoint had been written yet")
                # The search's own flags: --learning_rate is the evaluation network's.
                raise TrainingError(
                    f"The search's loss became {loss} in {label}, step {i + 1}. {kept}; run the same command "
                    "again with a lower --search_learning_rate (or --arch_learning_rate) to go on from there."
                )
            total_loss += loss
            total_correct += float(correct)
            seen += 1
            progbar.update(i + 1, [("loss", total_loss / seen), ("acc", total_correct / (seen * batch_size))])
        return total_loss / max(seen, 1), total_correct / max(seen * batch_size, 1)

    def search_epoch(self, update_arch, label):
        """One PC-DARTS epoch (unit): weights on one half, alpha/beta on the other."""
        unit = int(self.unit.numpy())
        lr = self._set_learning_rate()
        splits = self.splits
        steps = self._steps(min(splits.weights_steps, splits.arch_steps))
        ds = tf.data.Dataset.zip((splits.weights_epoch(unit), splits.arch_epoch(unit))).map(
            lambda w, a: (w[0], w[1], a[0], a[1])
        )
        start = time.time()
        loss, acc = self._run(ds, steps, self.search_step_fn(update_arch), label, self.config.batch_size)
        self.sync_batch_norm()
        self.unit.assign_add(1)
        self._summaries({"search/loss": loss, "search/train_acc": acc, "search/lr": lr}, time.time() - start)
        return {"loss": loss, "train_accuracy": acc, "lr": lr}

    def trial_epoch(self, ops_by_type, label):
        """Trains one sampled architecture for an epoch; returns held-out accuracy."""
        unit = int(self.unit.numpy())
        lr = self._set_learning_rate()
        choice = self.model.choice(ops_by_type)
        splits = self.splits.with_batch_size(self.config.trial_batch_size)
        steps = self._steps(splits.weights_steps)
        start = time.time()
        loss, acc = self._run(
            splits.weights_epoch(unit), steps, self.trial_step_fn(choice), label, self.config.trial_batch_size
        )
        self.sync_batch_norm()
        val = self.evaluate(choice)
        self.unit.assign_add(1)
        self._summaries({"trial/loss": loss, "trial/train_acc": acc, "trial/val_acc": val, "trial/lr": lr},
                        time.time() - start)
        return {"loss": loss, "train_accuracy": acc, "val_accuracy": val, "lr": lr}

    def evaluate(self, choice=None):
        """Accuracy on the held-out subset (single path when `choice` is given)."""
        fn = self.eval_fn(choice)
        correct = total = 0.0
        batches = iter(self._distribute(self.splits.heldout))
        for _ in range(self.splits.heldout_steps):
            c, n = fn(batches)
            correct += float(c)
            total += float(n)
        if choice is not None:
            self.sync_batch_norm()  # a path is scored in training mode: its replicas' statistics moved apart
        return correct / max(total, 1.0)

    def _summaries(self, scalars, seconds):
        if not self.is_chief:
            return
        step = int(self.unit.numpy())
        with self.writer.as_default():
            for name, value in scalars.items():
                tf.summary.scalar(name, value, step=step)
            tf.summary.scalar("time/unit_seconds", seconds, step=step)
        self.writer.flush()

    def genotype(self):
        return self.model.genotype()


def pcdarts_units(config):
    return config.epochs


def run_pcdarts(config, model_dir, strategy=None):
    """Plain PC-DARTS search (the baseline); writes genotype.json. Resumable per epoch."""
    with search_graph_options():
        return _run_pcdarts(config, model_dir, strategy)


def _run_pcdarts(config, model_dir, strategy):
    if config.arch_freeze_epochs >= config.epochs:
        raise ConfigError(
            f"Invalid `arch_freeze_epochs`: alpha/beta would never be trained in a {config.epochs}-epoch "
            f"search; expected fewer than epochs={config.epochs}. Received: "
            f"arch_freeze_epochs={config.arch_freeze_epochs}")
    splits = search_data(config.validate())  # data first: a failure here records no settings
    check_resume_settings(config, model_dir, "pcdarts")
    searcher = Searcher(config, model_dir, strategy, total_units=pcdarts_units(config), splits=splits)
    start_unit = searcher.restore()
    for epoch in range(start_unit, config.epochs):
        update_arch = epoch >= config.arch_freeze_epochs
        logging.info("PC-DARTS epoch %d/%d (lr %.5f, %s)", epoch + 1, config.epochs,
                     cosine_learning_rate(epoch, config.epochs, config.learning_rate, config.learning_rate_min),
                     "alpha/beta updated" if update_arch else "alpha/beta frozen")
        result = searcher.search_epoch(update_arch, f"pcdarts epoch {epoch + 1}")
        result["val_accuracy"] = searcher.evaluate()
        logging.info("epoch %d: loss %.4f train acc %.4f held-out acc %.4f", epoch + 1, result["loss"],
                     result["train_accuracy"], result["val_accuracy"])
        logging.info("genotype: %s", searcher.genotype())
        if searcher.is_chief:
            board.write_architecture(searcher.writer, searcher.model, epoch + 1)
            board.write_cells(searcher.writer, searcher.genotype(), epoch + 1, f"(epoch {epoch + 1})")
        searcher.save()
    genotype = searcher.genotype()
    return searcher, genotype, searcher.elapsed_seconds

