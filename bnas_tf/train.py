"""Training of the evaluation network (DARTS's `train.py` / `train_imagenet.py`).

`train(genotype, dataset=..., model_dir=..., ...)` builds the network of
`bnas_tf.network`, trains it with a custom loop and returns its test
accuracy. What the loop does, per step:

- loss = CE(logits) + ``auxiliary_weight`` * CE(auxiliary logits) (label
  smoothing ``label_smoothing``; ImageNet default 0.1), summed over the
  replica's examples and divided by the GLOBAL batch size, plus the PCNN
  amplitude losses of the model (``model.losses``, Eq. 2, divided by the
  number of replicas);
- gradients are summed over the replicas, clipped to the global norm
  ``grad_clip`` (all trainable variables, as DARTS's
  ``clip_grad_norm_(model.parameters())``), then ``weight_decay * w`` is
  added to the gradient of every convolution and Dense kernel and bias
  (PyTorch SGD's ``weight_decay``, an L2 term; BatchNorm, PReLU and the
  amplitude matrices A are not decayed);
- the weights take an SGD-with-momentum step in PyTorch's form (`SGD`:
  v <- mu v + g, w <- w - lr v), the learning rate cosine-decayed to 0 over
  ``epochs * steps_per_epoch`` steps; the amplitude matrices A take a plain
  SGD step with their own learning rate ``amplitude_lr`` (same cosine), and
  their `AbsConstraint` makes it A <- |A - eta2 dA| (Eq. 19).

The replicas' gradients are summed once (``all_reduce``), clipped and decayed
in replica context; the update runs in cross-replica context
(``merge_call`` + ``strategy.extended.update``), skipped as a whole when a
gradient is not finite.

Per epoch the drop path rate is ``drop_path * epoch / epochs`` (DARTS). The
step is one `tf.function`, traced once, run with ``strategy.run`` under
``strategy`` (default: the current one), on datasets distributed with
``strategy.experimental_distribute_dataset``. Mixed precision
(``mixed_float16``) uses dynamic loss scaling: steps whose gradients
overflow are skipped and the scale halves; it doubles after 2000 good steps.

**State and resuming.** After each epoch a checkpoint (model variables, the
random state of drop path, the momenta, the step and epoch counters, the
loss scale) is written to ``model_dir/checkpoints`` (`tf.train.CheckpointManager`,
the last 2 kept). A run started again with the same ``model_dir`` restores
the last checkpoint and continues with the next epoch; as the data of every
epoch is a function of ``(seed, epoch)`` (`bnas_tf.data`), it ends where an
uninterrupted run ends (bit for bit on CPU with
``tf.config.experimental.enable_op_determinism()``). Hyper-parameters may
change between runs (e.g. a lower learning rate after a divergence); the
architecture may not.

A non-finite loss or gradient raises `TrainingError` (epoch and step named);
no update is applied and no checkpoint is written, so the last good one is
kept. A checkpoint that cannot be read raises `StateError`.

Outputs in ``model_dir``: ``checkpoints/``, ``tensorboard/train`` (loss,
accuracy, learning rate, drop path rate per epoch) and ``tensorboard/test``,
``model.keras`` (the final model, auxiliary head included; see
`bnas_tf.network.inference_model`) and ``results.json``. Only the chief
writes them (``strategy.extended.should_checkpoint``); other workers of a
multi-worker job write their checkpoints to a scratch directory.
"""

import json
import math
import os
import time

from absl import logging
import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from bnas_tf import amplitude as amp
from bnas_tf import checkpoints
from bnas_tf import console
from bnas_tf import data as data_lib
from bnas_tf import genotypes as genotypes_lib
from bnas_tf import interrupt
from bnas_tf import layers as layers_lib
from bnas_tf import network
from bnas_tf import optim
from bnas_tf.errors import StateError
from bnas_tf.errors import TrainingError
from bnas_tf.errors import bad_value
from bnas_tf.search import statefile

CHECKPOINT_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"
MODEL_FILE = "model.keras"
RESULTS_FILE = "results.json"
# A few test images saved beside the model, so that an export checks the converted
# files on real inputs without the dataset (`bnas_tf.launch --mode=export`).
SAMPLE_INPUTS_FILE = "sample_inputs.npy"
NUM_SAMPLE_INPUTS = 8
SETTINGS_FILE = "train_settings.json"  # what a resumed run must match
# What defines the trained network and its data: a resume must keep them. The optimisation
# settings may change (the advice after a diverged loss is a lower learning rate): logged.
_NETWORK_SETTINGS = ("genotype", "dataset", "init_channels", "layers", "binarization", "binary_activations",
                     "full_precision_preprocess", "imagenet", "auxiliary", "theta", "seed")
CHECKPOINTS_TO_KEEP = 2
INITIAL_LOSS_SCALE = 2.0**15
LOSS_SCALE_GROWTH_STEPS = 2000
IMAGENET_LABEL_SMOOTHING = 0.1

# Variables whose name is one of these take weight decay.
_DECAYED_NAMES = ("kernel", "bias")


def train(
    genotype,
    *,
    dataset,
    model_dir,
    data_dir=None,
    epochs,
    batch_size,
    learning_rate=0.025,
    optimizer="sgd",
    momentum=0.9,
    weight_decay=3e-4,
    grad_clip=5.0,
    auxiliary_weight=0.4,
    drop_path=0.2,
    cutout=None,
    label_smoothing=None,
    mixed_precision=False,
    init_channels,
    layers,
    binarization="none",
    binary_activations=False,
    full_precision_preprocess=False,
    theta=layers_lib.DEFAULT_THETA,
    amplitude_lr=None,
    imagenet=None,
    seed=0,
    strategy=None,
    steps_per_epoch=None,
    log_every=50,
    verbose=1,
):
    """Trains the network of `genotype` on `dataset`; resumes from `model_dir`.

    Args:
        genotype: a `Genotype`, a published name or a genotype file.
        dataset: a name in `bnas_tf.data.DATASETS`.
        model_dir: directory of the checkpoints, logs and final model; a run
            with an existing ``model_dir`` resumes from its last checkpoint.
        data_dir: tfds data directory.
        epochs: total epochs (of the whole run, not of this call).
        batch_size: GLOBAL batch size.
        learning_rate: initial weight learning rate (cosine to 0).
        optimizer: "sgd" (SGD with ``momentum``, the paper's) or "adam" (`Adam`).
        momentum: SGD momentum of the weights.
        weight_decay: L2 coefficient added to kernel / bias gradients.
        grad_clip: global gradient norm limit; 0 or None disables clipping.
        auxiliary_weight: weight of the auxiliary loss; 0 builds the network
            without the auxiliary head.
        drop_path: final drop path rate (DARTS's ``drop_path_prob``).
        cutout: cutout length; ``None`` = the dataset's default (16 on CIFAR).
        label_smoothing: ``None`` = 0.1 on ImageNet, else 0.
        mixed_precision: train under the ``mixed_float16`` policy.
        init_channels, layers: network width and depth (cells).
        binarization, binary_activations, full_precision_preprocess, theta:
            see `bnas_tf.network`.
        amplitude_lr: initial learning rate of the amplitude matrices;
            ``None`` = ``learning_rate``.
        imagenet: the ImageNet layout; ``None`` = whether `dataset` is
            ImageNet.
        seed: seed of the initialisation, the data order and drop path.
        strategy: a `tf.distribute.Strategy`; ``None`` = the current one.
        steps_per_epoch: cap on the steps of an epoch (tests, smoke runs).
        log_every: log a line every this many steps (0: epoch lines only).
        verbose: 1 shows a progress bar per epoch (chief only), 0 none.

    Returns:
        A dict: ``test_accuracy``, ``test_top5_accuracy``, ``test_loss``,
        ``train_loss``, ``train_accuracy`` (last epoch run, ``None`` if
        none), ``history`` (per epoch run: ``epoch``, ``loss``, ``accuracy``,
        ``learning_rate``, ``drop_path_rate``), ``params`` (DARTS count, without the auxiliary head),
        ``epochs`` (finished), ``epochs_run`` (in this call),
        ``initial_epoch``, ``steps_per_epoch``, ``wall_time`` (seconds of
        this call), ``train_step_traces``, ``model_path``.

    Raises:
        ConfigError: a bad argument. DataError: missing data.
        TrainingError: the loss diverged. StateError: a bad checkpoint.
    """
    start_time = time.time()
    spec = data_lib.spec(dataset)
    epochs = positive_int("epochs", epochs)
    if steps_per_epoch is not None:
        steps_per_epoch = positive_int("steps_per_epoch", steps_per_epoch)
    learning_rate = non_negative("learning_rate", learning_rate)
    if optimizer not in optim.OPTIMIZERS:
        raise bad_value("optimizer", optimizer, f"one of {', '.join(optim.OPTIMIZERS)}")
    amplitude_lr = learning_rate if amplitude_lr is None else non_negative("amplitude_lr", amplitude_lr)
    weight_decay = non_negative("weight_decay", weight_decay)
    grad_clip = non_negative("grad_clip", grad_clip or 0.0)
    auxiliary_weight = non_negative("auxiliary_weight", auxiliary_weight)
    if not 0.0 <= float(momentum) < 1.0:
        raise bad_value("momentum", momentum, "a number in [0, 1)")
    if imagenet is None:
        imagenet = spec.name == "imagenet2012"
    if label_smoothing is None:
        label_smoothing = IMAGENET_LABEL_SMOOTHING if imagenet else 0.0
    if not 0.0 <= float(label_smoothing) < 1.0:
        raise bad_value("label_smoothing", label_smoothing, "a number in [0, 1)")
    log_every = int(log_every or 0)
    strategy = strategy or tf.distribute.get_strategy()
    genotype = genotypes_lib.load(genotype)
    auxiliary = auxiliary_weight > 0
    chief = is_chief(strategy)
    model_dir = os.fspath(model_dir)

    data = data_lib.train_test(spec.name, batch_size=batch_size, seed=seed, data_dir=data_dir, cutout=cutout)
    steps = data.train_steps if steps_per_epoch is None else min(steps_per_epoch, data.train_steps)
    total_steps = epochs * steps

    previous_policy = keras.config.dtype_policy()
    if mixed_precision:
        keras.config.set_dtype_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(seed)
        with strategy.scope():
            model = network.build_network(
                genotype,
                num_classes=spec.num_classes,
                init_channels=init_channels,
                layers=layers,
                auxiliary=auxiliary,
                imagenet=imagenet,
                binarization=binarization,
                binary_activations=binary_activations,
                full_precision_preprocess=full_precision_preprocess,
                drop_path=0.0,
                theta=theta,
                input_shape=(spec.image_size, spec.image_size, spec.channels),
                seed=seed,
            )
            loop = Loop(
                model,
                strategy=strategy,
                global_batch=batch_size,
                learning_rate=learning_rate,
                amplitude_lr=amplitude_lr,
                total_steps=total_steps,
                momentum=float(momentum),
                weight_decay=weight_decay,
                grad_clip=grad_clip,
                auxiliary_weight=auxiliary_weight,
                label_smoothing=float(label_smoothing),
                mixed_precision=bool(mixed_precision),
                optimizer=optimizer,
            )
    finally:
        keras.config.set_dtype_policy(previous_policy)

    params = network.count_params(model)
    logging.info(
        "Network %s on %s: %d cells, %d channels, binarization=%s, binary_activations=%s, %d parameters "
        "(%.6fMB, without the auxiliary head).",
        model.name, spec.name, layers, init_channels, binarization, binary_activations, params, params / 1e6,
    )

    settings = dict(
        genotype=genotype.to_json(), dataset=spec.name, batch_size=batch_size, learning_rate=learning_rate,
        optimizer=optimizer, momentum=momentum, weight_decay=weight_decay, grad_clip=grad_clip,
        auxiliary=auxiliary, auxiliary_weight=auxiliary_weight, drop_path=drop_path, cutout=cutout,
        label_smoothing=label_smoothing,
        mixed_precision=bool(mixed_precision), init_channels=init_channels, layers=layers,
        binarization=binarization, binary_activations=binary_activations,
        full_precision_preprocess=full_precision_preprocess, theta=theta, amplitude_lr=amplitude_lr,
        imagenet=imagenet, seed=seed, steps_per_epoch=steps_per_epoch,
    )
    fitted = fit(
        loop, model_dir=model_dir, settings=settings, network_settings=_NETWORK_SETTINGS, epochs=epochs,
        steps=steps, train_epoch=data.train_epoch, drop_path=drop_path, log_every=log_every, verbose=verbose,
    )
    history, epoch_history, initial_epoch, writers = (
        fitted["history"], fitted["epoch_history"], fitted["initial_epoch"], fitted["writers"])

    test = loop.evaluate(strategy.experimental_distribute_dataset(data.test))
    logging.info(
        "Test: accuracy %.4f, top-5 accuracy %.4f, loss %.4f (%d examples).",
        test["accuracy"], test["top5_accuracy"], test["loss"], test["count"],
    )
    with writers["test"].as_default(step=epochs):
        scalar("accuracy", test["accuracy"])
        scalar("top5_accuracy", test["top5_accuracy"])
        scalar("loss", test["loss"])
    writers["test"].flush()

    model_path = os.path.join(model_dir, MODEL_FILE)
    results = {
        "test_accuracy": test["accuracy"],
        "test_top5_accuracy": test["top5_accuracy"],
        "test_loss": test["loss"],
        "train_loss": history["loss"],
        "train_accuracy": history["accuracy"],
        "history": epoch_history,
        "params": params,
        "epochs": epochs,
        "epochs_run": epochs - initial_epoch,
        "initial_epoch": initial_epoch,
        "steps_per_epoch": steps,
        "wall_time": time.time() - start_time,
        "train_step_traces": loop.train_step_traces,
        "model_path": model_path,
    }
    if chief:
        model.save(model_path)
        samples = next(iter(data.test.unbatch().batch(NUM_SAMPLE_INPUTS).take(1)))[0]
        with tf.io.gfile.GFile(os.path.join(model_dir, SAMPLE_INPUTS_FILE), "wb") as f:
            np.save(f, np.asarray(samples, dtype=np.float32), allow_pickle=False)
        with tf.io.gfile.GFile(os.path.join(model_dir, RESULTS_FILE), "w") as f:
            json.dump(results, f, indent=2)
    return results


def fit(loop, *, model_dir, settings, network_settings, epochs, steps, train_epoch, drop_path=0.0, log_every=50,
        verbose=1):
    """Runs `loop` from its last checkpoint in ``model_dir`` to ``epochs``.

    The shared part of every training: the settings check of a resume (the
    ``network_settings`` keys may not change), the checkpoint restore, the
    epochs (``train_epoch(epoch)`` gives an epoch's undistributed batches,
    ``steps`` of them are run) with drop path ``drop_path * epoch / epochs``,
    a checkpoint and TensorBoard scalars after each epoch.

    Returns:
        A dict: ``history`` (the last epoch's mean loss and accuracy),
        ``epoch_history`` (one entry per epoch run), ``initial_epoch``,
        ``writers`` (the train and test summary writers).
    """
    model, strategy = loop.model, loop.strategy
    chief = is_chief(strategy)
    if chief:
        tf.io.gfile.makedirs(model_dir)
    checkpoint_dir = os.path.join(model_dir, CHECKPOINT_DIR)
    manager = checkpoints.manager(loop.checkpoint, checkpoint_dir, CHECKPOINTS_TO_KEEP)
    _check_settings(model_dir, settings, network_settings, resuming=manager.latest_checkpoint is not None,
                    chief=chief)
    # Every worker restores the chief's checkpoint; the others save to a scratch directory.
    initial_epoch = _restore(loop, manager, checkpoint_dir)
    if not chief:
        scratch_dir = _worker_dir(model_dir, strategy)
        manager = checkpoints.manager(loop.checkpoint, scratch_dir, 1)
    if initial_epoch > epochs:
        raise StateError(
            f"The checkpoint in {checkpoint_dir} has already run {initial_epoch} epochs, more than "
            f"epochs={epochs}. Pass epochs >= {initial_epoch}, train from scratch (--restart=train), or use a "
            "new model_dir."
        )
    if initial_epoch:
        logging.info("Resuming from %s: %d of %d epochs done.", manager.latest_checkpoint, initial_epoch, epochs)

    writers = _writers(model_dir, chief)
    history = {"loss": None, "accuracy": None}
    epoch_history = []
    for epoch in range(initial_epoch, epochs):
        rate = drop_path * epoch / epochs
        network.set_drop_path_rate(model, rate)
        lr = loop.learning_rate()
        logging.info("Epoch %d/%d: lr %.6g, drop path %.4f.", epoch + 1, epochs, lr, rate)
        dataset_ = strategy.experimental_distribute_dataset(train_epoch(epoch).take(steps))
        kept = _kept_text(manager.latest_checkpoint, epoch)
        history = _run_epoch(loop, dataset_, epoch, epochs, steps, log_every, verbose and chief, kept)
        _check_finite_variables(model, epoch, kept)
        loop.epoch.assign(epoch + 1)
        path = manager.save(checkpoint_number=epoch + 1)
        if not chief:
            tf.io.gfile.rmtree(scratch_dir)
        epoch_history.append({"epoch": epoch + 1, **history, "learning_rate": lr, "drop_path_rate": rate})
        if loop.mixed_precision:
            logging.info("Loss scale %g.", float(loop.loss_scale.numpy()))
        logging.info(
            "Epoch %d/%d: loss %.4f, accuracy %.4f; checkpoint %s.",
            epoch + 1, epochs, history["loss"], history["accuracy"], path,
        )
        with writers["train"].as_default(step=epoch + 1):
            scalar("loss", history["loss"])
            scalar("accuracy", history["accuracy"])
            scalar("learning_rate", lr)
            scalar("drop_path_rate", rate)
        writers["train"].flush()
    return {"history": history, "epoch_history": epoch_history, "initial_epoch": initial_epoch, "writers": writers}


# ---------------------------------------------------------------------------
# The loop.
# ---------------------------------------------------------------------------


class Loop:
    """Model, optimizers, checkpointable state and the compiled steps.

    Shared by the evaluation network's training and the face networks'
    (`bnas_tf.face.train`), with `fit`.

    Create it inside ``strategy.scope()``.
    """

    def __init__(
        self,
        model,
        *,
        strategy,
        global_batch,
        learning_rate,
        amplitude_lr,
        total_steps,
        momentum,
        weight_decay,
        grad_clip,
        auxiliary_weight,
        label_smoothing,
        mixed_precision,
        optimizer="sgd",
        labels_as_input=False,
    ):
        self.model = model
        # A margin head (face recognition) needs the labels in the forward pass: the model is then
        # called on [images, labels] and has no evaluation model.
        self.labels_as_input = bool(labels_as_input)
        self.strategy = strategy
        self.global_batch = int(global_batch)
        self.weight_decay = weight_decay
        self.grad_clip = grad_clip
        self.auxiliary = network.has_auxiliary_head(model)
        self.auxiliary_weight = auxiliary_weight
        self.label_smoothing = label_smoothing
        self.mixed_precision = mixed_precision
        self.num_classes = int(model.outputs[0].shape[-1])
        self.eval_model = None if self.labels_as_input else network.inference_model(model)

        self.weight_variables = amp.non_amplitude_variables(model)
        self.amplitude_variables = amp.amplitude_variables(model)
        self.decayed = [_is_decayed(v) for v in self.weight_variables]
        self.initial_learning_rate = float(learning_rate)
        self.initial_amplitude_lr = float(amplitude_lr)
        self.total_steps = max(1, int(total_steps))
        if optimizer == "adam":
            self.weight_optimizer = Adam(self.weight_variables, strategy=strategy, name="weight_adam")
        else:
            self.weight_optimizer = SGD(self.weight_variables, momentum=momentum, strategy=strategy, name="weight_sgd")
        self.amplitude_optimizer = SGD(self.amplitude_variables, momentum=0.0, strategy=strategy, name="amplitude_sgd")
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.loss_scale = tf.Variable(
            INITIAL_LOSS_SCALE if mixed_precision else 1.0, dtype=tf.float32, trainable=False, name="loss_scale"
        )
        self.good_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="good_steps")
        # Keras 3 layers are not fully tracked by tf.train.Checkpoint (list
        # attributes are skipped), so the state is checkpointed as ordered
        # variable lists; the model's include the drop path random state.
        self.checkpoint = tf.train.Checkpoint(
            model=[_tf_variable(v) for v in model.variables],
            weight_optimizer=self.weight_optimizer.slots,
            step=self.step,
            epoch=self.epoch,
            loss_scale=self.loss_scale,
            good_steps=self.good_steps,
        )
        self.train_step_traces = 0
        self._train_step = tf.function(self._distributed_train_step)
        self._eval_step = tf.function(self._distributed_eval_step, reduce_retracing=True)

    def learning_rate(self, initial=None, step=None):
        """Cosine decay to 0 over `total_steps` (per step), at `step` (default: now)."""
        initial = self.initial_learning_rate if initial is None else initial
        step = self.step if step is None else step
        progress = tf.minimum(tf.cast(step, tf.float32), float(self.total_steps)) / float(self.total_steps)
        value = 0.5 * initial * (1.0 + tf.cos(np.pi * progress))
        return float(value) if tf.executing_eagerly() else value

    # Losses --------------------------------------------------------------

    def _cross_entropy(self, labels, logits):
        one_hot = tf.one_hot(labels, self.num_classes, dtype=tf.float32)
        return keras.losses.categorical_crossentropy(
            one_hot, tf.cast(logits, tf.float32), from_logits=True, label_smoothing=self.label_smoothing
        )

    # Training step -------------------------------------------------------

    def _distributed_train_step(self, batch):
        # Runs once per trace: the trace count a test checks.
        self.train_step_traces += 1
        per_replica = self.strategy.run(self._replica_train_step, args=batch)
        loss, correct, finite = (self.strategy.reduce(tf.distribute.ReduceOp.SUM, x, axis=None) for x in per_replica)
        return {"loss": loss, "correct": correct, "finite": finite}

    def _replica_train_step(self, images, labels):
        model = self.model
        num_replicas = self.strategy.num_replicas_in_sync
        variables = self.weight_variables + self.amplitude_variables
        with tf.GradientTape() as tape:
            outputs = model([images, labels] if self.labels_as_input else images, training=True)
            logits, aux_logits = outputs if self.auxiliary else (outputs, None)
            objective = tf.reduce_sum(self._cross_entropy(labels, logits))
            if aux_logits is not None:
                objective += self.auxiliary_weight * tf.reduce_sum(self._cross_entropy(labels, aux_logits))
            objective /= self.global_batch
            regular = [tf.cast(x, tf.float32) for x in model.losses]
            total = objective + (tf.add_n(regular) / num_replicas if regular else 0.0)
            scaled = total * self.loss_scale if self.mixed_precision else total
        grads = tape.gradient(scaled, variables)
        grads = [tf.zeros_like(v) if g is None else tf.cast(g, tf.float32) for g, v in zip(grads, variables)]
        if self.mixed_precision:
            grads = [g / self.loss_scale for g in grads]
        context = tf.distribute.get_replica_context()
        grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])
        if self.grad_clip:
            norm = tf.linalg.global_norm(grads)
            grads, _ = tf.clip_by_global_norm(grads, self.grad_clip, use_norm=norm)
        n = len(self.weight_variables)
        weight_grads, amplitude_grads = grads[:n], grads[n:]
        if self.weight_decay:
            weight_grads = [
                g + self.weight_decay * tf.cast(v, tf.float32) if decay else g
                for g, v, decay in zip(weight_grads, self.weight_variables, self.decayed)
            ]
        context.merge_call(self._apply, args=(weight_grads, amplitude_grads, finite))
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32))
        ok = tf.math.is_finite(total)
        if not self.mixed_precision:
            # With loss scaling, overflowing gradients are normal: the step is skipped, the scale halves.
            ok = tf.logical_and(ok, finite)
        return objective, correct, tf.cast(ok, tf.int32)

    def _apply(self, strategy, weight_grads, amplitude_grads, finite):
        """Cross-replica: applies the (already all-reduced) gradients if finite."""
        finite = strategy.experimental_local_results(finite)[0]
        learning_rate = self.learning_rate(self.initial_learning_rate)
        amplitude_lr = self.learning_rate(self.initial_amplitude_lr)

        def apply():
            self.weight_optimizer.apply(weight_grads, learning_rate)
            self.amplitude_optimizer.apply(amplitude_grads, amplitude_lr)
            return tf.constant(True)

        tf.cond(finite, apply, lambda: tf.constant(False))
        self.step.assign_add(1)
        if self.mixed_precision:
            good = tf.where(finite, self.good_steps + 1, 0)
            grow = good >= LOSS_SCALE_GROWTH_STEPS
            scale = tf.where(finite, tf.where(grow, self.loss_scale * 2.0, self.loss_scale), self.loss_scale / 2.0)
            self.loss_scale.assign(tf.maximum(scale, 1.0))
            self.good_steps.assign(tf.where(grow, tf.zeros_like(good), good))

    def train_step(self, batch):
        """One step on a distributed batch; returns Python numbers."""
        out = self._train_step(batch)
        return {
            "loss": float(out["loss"]),
            "correct": float(out["correct"]),
            "finite": int(out["finite"]) == self.strategy.num_replicas_in_sync,
        }

    # Evaluation ----------------------------------------------------------

    def _distributed_eval_step(self, batch):
        per_replica = self.strategy.run(self._replica_eval_step, args=batch)
        return [self.strategy.reduce(tf.distribute.ReduceOp.SUM, x, axis=None) for x in per_replica]

    def _replica_eval_step(self, images, labels):
        logits = tf.cast(self.eval_model(images, training=False), tf.float32)
        loss = tf.reduce_sum(self._cross_entropy(labels, logits))
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32))
        k = min(5, self.num_classes)
        top5 = tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, logits, k), tf.float32))
        count = tf.cast(tf.shape(labels)[0], tf.float32)
        return loss, correct, top5, count

    def evaluate(self, dataset):
        """Accuracy, top-5 accuracy and mean loss over a distributed dataset."""
        totals = np.zeros(4)
        for batch in dataset:
            totals += [float(x) for x in self._eval_step(batch)]
        loss, correct, top5, count = totals
        count = max(count, 1.0)
        return {"loss": loss / count, "accuracy": correct / count, "top5_accuracy": top5 / count, "count": int(count)}


class Adam:
    """Adam (Kingma and Ba, 2015) as `keras.optimizers.Adam` computes it:

    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;
    w <- c(w - lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)),

    with c the variable's constraint and weight decay, if any, added to ``g``
    by the caller (coupled L2). Binary networks are trained with it (Bi-Real
    Net, ReActNet, Larq's zoo): a latent weight only matters when its sign
    flips, and Adam's step is about ``lr`` whatever the size of the gradient,
    where SGD's step on a latent weight, whose gradient is scaled by the small
    amplitude A_hat (Eq. 16), stays far below the weight itself (BUILD.md,
    "Binary networks that learn").
    """

    def __init__(self, variables, *, beta_1=optim.ADAM_BETA_1, beta_2=optim.ADAM_BETA_2,
                 epsilon=optim.ADAM_EPSILON, strategy, name):
        self.variables = [_tf_variable(v) for v in variables]
        self.constraints = [getattr(v, "constraint", None) for v in variables]
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)
        self.strategy = strategy
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name=f"{name}/iterations")
        self.moments = []
        for i, variable in enumerate(self.variables):
            with strategy.extended.colocate_vars_with(variable):
                self.moments.append(tuple(
                    tf.Variable(tf.zeros(variable.shape, variable.dtype), trainable=False, name=f"{name}/{kind}_{i}")
                    for kind in ("m", "v")
                ))
        self.slots = [self.iterations] + [slot for pair in self.moments for slot in pair]

    def apply(self, grads, learning_rate):
        """One step of every variable (cross-replica context)."""
        t = tf.cast(self.iterations + 1, tf.float32)
        scale = optim.adam_step_size(tf.cast(learning_rate, tf.float32), t, self.beta_1, self.beta_2)
        for i, (variable, grad) in enumerate(zip(self.variables, grads)):
            args = (grad, scale, self.moments[i], self.constraints[i])
            self.strategy.extended.update(variable, self._update, args=args, group=False)
        self.iterations.assign_add(1)

    def _update(self, variable, grad, scale, moments, constraint):
        grad = tf.cast(grad, variable.dtype)
        m, v = moments
        m.assign(self.beta_1 * m + (1.0 - self.beta_1) * grad)
        v.assign(self.beta_2 * v + (1.0 - self.beta_2) * tf.square(grad))
        value = variable - tf.cast(scale, variable.dtype) * m / (tf.sqrt(v) + self.epsilon)
        if constraint is not None:
            value = constraint(value)
        return variable.assign(value)


class SGD:
    """SGD with momentum as PyTorch (and so DARTS) defines it.

    v <- mu * v + g;  w <- c(w - lr * v)   (mu = 0: w <- c(w - lr * g)),

    with c the variable's Keras constraint (the amplitude matrices'
    `AbsConstraint` turns the step into Eq. 19, A <- |A - eta2 dA|). Keras's
    SGD folds the learning rate into the velocity instead (v <- mu v - lr g),
    which differs while the learning rate decays. Weight decay is added to
    ``g`` by the caller (PyTorch's ``weight_decay``).

    Create it inside ``strategy.scope()``; call `apply` in cross-replica
    context with gradients already summed over the replicas (identical on
    every replica), as `Loop` does from ``merge_call``.
    """

    def __init__(self, variables, *, momentum, strategy, name):
        self.variables = [_tf_variable(v) for v in variables]
        self.constraints = [getattr(v, "constraint", None) for v in variables]
        self.momentum = float(momentum)
        self.strategy = strategy
        self.slots = []
        if self.momentum:
            for i, variable in enumerate(self.variables):
                with strategy.extended.colocate_vars_with(variable):
                    self.slots.append(
                        tf.Variable(
                            tf.zeros(variable.shape, variable.dtype), trainable=False, name=f"{name}/momentum_{i}"
                        )
                    )

    def apply(self, grads, learning_rate):
        """One step of every variable (cross-replica context)."""
        for i, (variable, grad) in enumerate(zip(self.variables, grads)):
            args = (grad, learning_rate, self.slots[i] if self.slots else None, self.constraints[i])
            self.strategy.extended.update(variable, self._update, args=args, group=False)

    def _update(self, variable, grad, learning_rate, slot, constraint):
        grad = tf.cast(grad, variable.dtype)
        if slot is not None:
            velocity = self.momentum * slot + grad
            slot.assign(velocity)
            grad = velocity
        value = variable - tf.cast(learning_rate, variable.dtype) * grad
        if constraint is not None:
            value = constraint(value)
        return variable.assign(value)


def _kept_text(latest_checkpoint, epoch):
    """What a divergence error says about the saved state."""
    if latest_checkpoint is None:
        return (
            "No checkpoint had been written yet; start again (same model_dir) with a lower learning rate "
            "(or a smaller grad_clip / theta)."
        )
    return (
        f"No checkpoint was written; the last good checkpoint, {latest_checkpoint} (epoch {epoch}), is kept. "
        "Resume from it by running again with the same model_dir and a lower learning rate (or a smaller "
        "grad_clip / theta)."
    )


def _run_epoch(loop, dataset, epoch, epochs, steps, log_every, verbose, kept):
    """Runs one epoch; returns its mean loss and accuracy."""
    progbar = console.progress_bar(steps, ["loss", "accuracy"]) if verbose else None
    loss_sum = correct = 0.0
    seen = 0
    for step, batch in enumerate(dataset):
        out = loop.train_step(batch)
        interrupt.check()
        if not out["finite"] or not math.isfinite(out["loss"]):
            raise TrainingError(
                f"Training diverged: non-finite loss or gradients at epoch {epoch + 1}/{epochs}, step "
                f"{step + 1}/{steps} (loss {out['loss']}); this step's update was not applied. {kept}"
            )
        seen += 1
        loss_sum += out["loss"]
        correct += out["correct"]
        mean_loss, accuracy = loss_sum / seen, correct / (seen * loop.global_batch)
        if progbar is not None:
            progbar.update(seen, [("loss", mean_loss), ("accuracy", accuracy)])
        if log_every and seen % log_every == 0:
            logging.info(
                "Epoch %d/%d step %d/%d: loss %.4f, accuracy %.4f.", epoch + 1, epochs, seen, steps,
                mean_loss, accuracy,
            )
    if seen == 0:
        raise TrainingError(f"Epoch {epoch + 1} had no training batches; check the dataset and batch size.")
    return {"loss": loss_sum / seen, "accuracy": correct / (seen * loop.global_batch)}


# ---------------------------------------------------------------------------
# Helpers.
# ---------------------------------------------------------------------------


def _is_decayed(variable):
    name = variable.name.rsplit("/", 1)[-1]
    return name in _DECAYED_NAMES


def _tf_variable(variable):
    return variable.value if isinstance(variable, keras.Variable) else variable


def _check_settings(model_dir, settings, network_settings, resuming, chief):
    """A run resumes only with the settings it started with (the epochs may grow)."""
    path = os.path.join(model_dir, SETTINGS_FILE)
    if not resuming and chief and tf.io.gfile.exists(path):
        tf.io.gfile.remove(path)  # no checkpoint yet: this call starts the run
    try:
        diff = statefile.settings_changes(path, settings) if chief or tf.io.gfile.exists(path) else {}
    except statefile.Unreadable as err:
        raise StateError(
            f"Cannot read the training settings ({err}). Delete {path} if the flags are those the run started "
            "with, train from scratch (--restart=train), or use a new model_dir.") from None
    refused = {k: v for k, v in diff.items() if k in network_settings}
    if refused:
        raise StateError(f"The training in {model_dir} was started for another network or data: "
                         f"{statefile.describe(refused)}. Resume it with the same flags, train from scratch "
                         "(--restart=train), or use a new model_dir.")
    if diff:
        logging.warning("Resuming the training with %s.", statefile.describe(diff))


def _restore(loop, manager, checkpoint_dir):
    """Restores the latest checkpoint; returns the epochs it has finished."""
    latest = manager.latest_checkpoint
    if latest is None:
        return 0
    try:
        loop.checkpoint.restore(latest).assert_existing_objects_matched()
    except (tf.errors.OpError, ValueError, AssertionError, IndexError, KeyError, RuntimeError) as err:
        raise StateError(
            f"Cannot restore checkpoint {latest} (in {checkpoint_dir}): {err}. It is corrupt or was written "
            "for another network (genotype, layers, channels, binarization). Delete this checkpoint's files "
            f"({os.path.basename(latest)}.*) to resume from the one before, train from scratch "
            "(--restart=train), or use a new model_dir."
        ) from None
    return int(loop.epoch.numpy())


def _check_finite_variables(model, epoch, kept):
    for variable in model.variables:
        if variable.dtype.startswith("float") and not np.all(np.isfinite(keras.ops.convert_to_numpy(variable))):
            raise TrainingError(
                f"Training diverged: variable {variable.path} is not finite after epoch {epoch + 1}. {kept}"
            )


def is_chief(strategy):
    return bool(strategy.extended.should_checkpoint)


def _worker_dir(model_dir, strategy):
    task_id = getattr(strategy.cluster_resolver, "task_id", 0) if hasattr(strategy, "cluster_resolver") else 0
    return os.path.join(model_dir, f".worker_{task_id}", CHECKPOINT_DIR)


def scalar(name, value, step=None):
    """`tf.summary.scalar` without the tensorboard package (TF 2.21 does not install it).

    Writes the same event TensorBoard's scalar plugin reads.
    """
    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = "scalars"
    metadata.data_class = summary_pb2.DATA_CLASS_SCALAR
    return tf.summary.write(name, tf.constant(float(value), tf.float32), step=step, metadata=metadata)


def _writers(model_dir, chief):
    if not chief:
        return {"train": tf.summary.create_noop_writer(), "test": tf.summary.create_noop_writer()}
    return {
        name: tf.summary.create_file_writer(os.path.join(model_dir, TENSORBOARD_DIR, name))
        for name in ("train", "test")
    }


def positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise bad_value(name, value, "a positive integer")
    return int(value)


def non_negative(name, value):
    try:
        ok = float(value) >= 0 and math.isfinite(float(value))
    except (TypeError, ValueError):
        ok = False
    if not ok or isinstance(value, bool):
        raise bad_value(name, value, "a finite number >= 0")
    return float(value)
