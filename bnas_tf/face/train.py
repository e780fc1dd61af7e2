"""Training of a face network and its verification (IJCV Sec. 4.4, Table 5).

`train_face(config, data, model_dir=..., verification=...)` builds the
embedding network that ``config`` describes (cells of a genotype, or an IR
ResNet baseline), puts a margin head on it (softmax, CosFace or ArcFace:
`bnas_tf.face.heads`), trains the pair on the identities of ``data`` with the
loop of the evaluation network (`bnas_tf.train.Loop` and `bnas_tf.train.fit`:
the same optimizers, cosine schedule, amplitude update (Eq. 19), weight
decay, mixed precision, checkpoints and resume), and verifies the embeddings
on each verification set with the 10-fold protocol (`bnas_tf.face.verify`).

The head needs the labels in the forward pass (the margin acts on the true
class only), so the trained model is ``[images, labels] -> logits``; what is
saved for deployment is the embedding network alone (``model.keras``): images
-> 512-d embeddings, the input of cosine-similarity verification.

Outputs in ``model_dir``, as `bnas_tf.train`: ``checkpoints/``,
``tensorboard/train`` and ``tensorboard/test`` (per set: verification
accuracy and TAR@FAR), ``model.keras`` (the embedding network),
``sample_inputs.npy``, ``results.json`` with a Table-5-like table.
"""

import dataclasses
import json
import os
import time

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from bnas_tf import amplitude as amp
from bnas_tf import genotypes as genotypes_lib
from bnas_tf import layers as layers_lib
from bnas_tf import network
from bnas_tf import optim
from bnas_tf import train as train_lib
from bnas_tf.errors import ConfigError
from bnas_tf.errors import bad_value
from bnas_tf.face import heads as heads_lib
from bnas_tf.face import models
from bnas_tf.face import verify as verify_lib

# What defines the trained network and its data: a resume must keep them.
_NETWORK_SETTINGS = ("backbone", "genotype", "init_channels", "layers", "embedding_size", "binarization",
                     "binary_activations", "full_precision_preprocess", "theta", "head", "scale", "margin",
                     "num_classes", "image_size", "seed")


@dataclasses.dataclass(frozen=True)
class FaceConfig:
    """The face network and its head.

    Attributes:
        backbone: "genotype" (the cells of ``genotype``, as the paper's BNAS
            rows) or "resnet18" / "resnet34" / "resnet50" / "resnet100"
            (Table 5's baselines).
        genotype: a `Genotype`, a published name or a genotype file
            (``backbone="genotype"`` only).
        init_channels, layers: width and cells of the genotype network.
        embedding_size: dimension of the face embedding (512).
        binarization: "none", "xnor" or "pcnn" kernels.
        binary_activations: 1-bit activations (W1A1 rows of Table 5).
        full_precision_preprocess: see `bnas_tf.network.build_network`.
        theta: weight of the PCNN amplitude loss (Eq. 2).
        dropout: dropout before the embedding layer.
        head: "softmax", "cosface" or "arcface".
        scale, margin: the head's s and m (``None``: the head's default).
    """

    backbone: str = "genotype"
    genotype: object = None
    init_channels: int = 16
    layers: int = 8
    embedding_size: int = 512
    binarization: str = "none"
    binary_activations: bool = False
    full_precision_preprocess: bool = False
    theta: float = layers_lib.DEFAULT_THETA
    dropout: float = 0.0
    head: str = "arcface"
    scale: float | None = None
    margin: float | None = None

    def __post_init__(self):
        if self.backbone not in models.BACKBONES:
            raise bad_value("backbone", self.backbone, f"one of {', '.join(models.BACKBONES)}")
        if self.head not in heads_lib.HEADS:
            raise bad_value("head", self.head, f"one of {', '.join(heads_lib.HEADS)}")
        if self.backbone == "genotype" and self.genotype is None:
            raise ConfigError("backbone='genotype' needs a genotype (a genotype.json path or a published name).")
        amp.check_scheme(self.binarization)

    def settings(self):
        """The JSON-able settings a resumed run must match."""
        genotype = genotypes_lib.load(self.genotype).to_json() if self.backbone == "genotype" else None
        return {**dataclasses.asdict(self), "genotype": genotype}

    def build_embedding(self, input_shape, seed=None):
        """The embedding network: images -> [batch, embedding_size]."""
        common = dict(embedding_size=self.embedding_size, binarization=self.binarization,
                      binary_activations=self.binary_activations, dropout=self.dropout, theta=self.theta,
                      input_shape=tuple(input_shape))
        if self.backbone == "genotype":
            return models.build_face_network(
                genotypes_lib.load(self.genotype), init_channels=self.init_channels, layers=self.layers,
                full_precision_preprocess=self.full_precision_preprocess, seed=seed, **common)
        return models.build_face_resnet(int(self.backbone[len("resnet"):]), **common)

    def build_training_model(self, embedding, num_classes):
        """``[images, labels] -> logits`` of the head on top of ``embedding``."""
        head = heads_lib.make_head(self.head, num_classes, scale=self.scale, margin=self.margin)
        images = keras.Input(shape=embedding.inputs[0].shape[1:], name="images")
        labels = keras.Input(shape=(), dtype="int32", name="labels")
        logits = head([embedding(images), labels])
        return keras.Model([images, labels], logits, name=f"{embedding.name}_{self.head}")


def train_face(
    config,
    data,
    *,
    model_dir,
    verification=(),
    epochs,
    learning_rate=0.05,
    optimizer="sgd",
    momentum=0.9,
    weight_decay=5e-4,
    grad_clip=5.0,
    amplitude_lr=None,
    mixed_precision=False,
    seed=0,
    strategy=None,
    steps_per_epoch=None,
    eval_batch_size=64,
    log_every=50,
    verbose=1,
):
    """Trains the face network of ``config`` on ``data``; verifies it on ``verification``.

    Args:
        config: a `FaceConfig`.
        data: the training identities: an object with ``num_classes``,
            ``image_size``, ``batch_size`` (global), ``steps`` (batches per
            epoch) and ``epoch(epoch)`` (that epoch's dataset of (float32
            images, int32 labels) batches, a function of the seed and the
            epoch); `bnas_tf.face.data.TrainingData` is one.
        model_dir: checkpoints, logs and the final model; an existing one
            resumes from its last checkpoint.
        verification: `VerificationSet`s (``name``, ``images``, ``issame``).
        epochs: total epochs of the run.
        learning_rate, optimizer, momentum, weight_decay, grad_clip,
            amplitude_lr, mixed_precision: as `bnas_tf.train.train`.
        seed: seed of the initialisation.
        strategy: a `tf.distribute.Strategy`; ``None`` = the current one.
        steps_per_epoch: cap on the steps of an epoch.
        eval_batch_size: batch of the embedding passes of verification.
        log_every, verbose: as `bnas_tf.train.train`.

    Returns:
        A dict: ``verification`` (per set: ``accuracy``, ``accuracy_std``,
        ``tar_at_far``), ``table`` (markdown, Table 5's layout), ``history``,
        ``params`` (the embedding network's), ``epochs``, ``epochs_run``,
        ``wall_time``, ``model_path``.
    """
    start_time = time.time()
    if not isinstance(config, FaceConfig):
        raise bad_value("config", type(config).__name__, "a FaceConfig")
    epochs = train_lib.positive_int("epochs", epochs)
    if optimizer not in optim.OPTIMIZERS:
        raise bad_value("optimizer", optimizer, f"one of {', '.join(optim.OPTIMIZERS)}")
    learning_rate = train_lib.non_negative("learning_rate", learning_rate)
    amplitude_lr = learning_rate if amplitude_lr is None else float(amplitude_lr)
    strategy = strategy or tf.distribute.get_strategy()
    steps = data.steps if steps_per_epoch is None else min(int(steps_per_epoch), data.steps)
    input_shape = (data.image_size, data.image_size, 3)
    model_dir = os.fspath(model_dir)

    previous_policy = keras.config.dtype_policy()
    if mixed_precision:
        keras.config.set_dtype_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(seed)
        with strategy.scope():
            embedding = config.build_embedding(input_shape, seed=seed)
            model = config.build_training_model(embedding, data.num_classes)
            loop = train_lib.Loop(
                model, strategy=strategy, global_batch=data.batch_size, learning_rate=learning_rate,
                amplitude_lr=amplitude_lr, total_steps=epochs * steps, momentum=float(momentum),
                weight_decay=float(weight_decay), grad_clip=float(grad_clip or 0.0), auxiliary_weight=0.0,
                label_smoothing=0.0, mixed_precision=bool(mixed_precision), optimizer=optimizer,
                labels_as_input=True,
            )
    finally:
        keras.config.set_dtype_policy(previous_policy)
    params = network.count_params(embedding)
    logging.info("Face network %s (%s head, %d identities): %d parameters (%.3f M) without the head.",
                 embedding.name, config.head, data.num_classes, params, params / 1e6)

    settings = dict(config.settings(), num_classes=data.num_classes, image_size=data.image_size, seed=seed,
                    batch_size=data.batch_size, learning_rate=learning_rate, optimizer=optimizer,
                    momentum=momentum, weight_decay=weight_decay, grad_clip=grad_clip, amplitude_lr=amplitude_lr,
                    mixed_precision=bool(mixed_precision), steps_per_epoch=steps_per_epoch)
    fitted = train_lib.fit(loop, model_dir=model_dir, settings=settings, network_settings=_NETWORK_SETTINGS,
                           epochs=epochs, steps=steps, train_epoch=data.epoch, log_every=log_every,
                           verbose=verbose)
    results = {name: verify_lib.evaluate(embedding, vset, batch_size=eval_batch_size)
               for name, vset in ((v.name, v) for v in verification)}
    _log_verification(results, fitted["writers"]["test"], epochs)
    model_path = os.path.join(model_dir, train_lib.MODEL_FILE)
    summary = {
        "verification": {name: _result_json(r) for name, r in results.items()},
        "table": verify_lib.results_table(results) if results else "",
        "history": fitted["epoch_history"],
        "params": params,
        "epochs": epochs,
        "epochs_run": epochs - fitted["initial_epoch"],
        "steps_per_epoch": steps,
        "wall_time": time.time() - start_time,
        "model_path": model_path,
    }
    if train_lib.is_chief(strategy):
        embedding.save(model_path)
        samples = verification[0].images[:train_lib.NUM_SAMPLE_INPUTS] if verification else next(
            iter(data.epoch(0)))[0].numpy()[:train_lib.NUM_SAMPLE_INPUTS]
        with tf.io.gfile.GFile(os.path.join(model_dir, train_lib.SAMPLE_INPUTS_FILE), "wb") as f:
            np.save(f, np.asarray(samples, dtype=np.float32), allow_pickle=False)
        with tf.io.gfile.GFile(os.path.join(model_dir, train_lib.RESULTS_FILE), "w") as f:
            json.dump(summary, f, indent=2)
    return summary


def _result_json(result):
    return {"accuracy": float(result.accuracy_mean), "accuracy_std": float(result.accuracy_std),
            "tar_at_far": {str(k): (None if v is None else float(v)) for k, v in result.tar_at_far.items()}}


def _log_verification(results, writer, step):
    for name, result in results.items():
        logging.info("Verification %s: accuracy %.4f +- %.4f (10-fold).", name, result.accuracy_mean,
                     result.accuracy_std)
        with writer.as_default(step=step):
            train_lib.scalar(f"verification/{name}/accuracy", result.accuracy_mean)
            for far, tar in result.tar_at_far.items():
                if tar is not None:
                    train_lib.scalar(f"verification/{name}/tar_at_far_{far}", tar)
    writer.flush()
    if results:
        logging.info("Verification:\n%s", verify_lib.results_table(results))
