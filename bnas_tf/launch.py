r"""The bnas_tf command line: search, train, export, or all three.

    python -m bnas_tf.launch --flagfile=configs/demo.flags
    python -m bnas_tf.launch --flagfile=configs/cifar.flags --model_dir=runs/cifar

Every flag is defined here, and only here; the library takes plain
arguments. A mistake the user can fix (a bad flag, missing data, a corrupt
checkpoint, a diverged loss) ends with one clear message and exit status 2;
everything already computed stays in --model_dir, and running the same
command again resumes.
"""

import json
import os
import sys

from absl import app, flags, logging

from bnas_tf.amplitude import SCHEMES
from bnas_tf.face.heads import HEADS
from bnas_tf.face.models import BACKBONES
from bnas_tf.optim import OPTIMIZERS
from bnas_tf.rundir import RESTARTS

MODES = ("search", "train", "export", "all", "convert")
# Face recognition: casia_webface (Sec. 4.4), digits_faces the offline demo (digits 0-6 train, 7-9 verify).
FACE_DATASETS = ("casia_webface", "digits_faces")

SEARCHES = ("bnas", "pcdarts")

FLAGS = flags.FLAGS


def define_flags():
    """Defines every flag of bnas_tf (called once, at import of this module)."""
    # What to do and where.
    flags.DEFINE_enum("mode", "all", MODES, "search: find a genotype; train: train the network of --genotype; "
                      "export: write SavedModel/.keras/TFLite/LCE; all: the three in turn; convert: turn the "
                      "CASIA-WebFace images in --data_dir (identity folders or train.rec) into TFRecords in "
                      "--model_dir.")
    flags.DEFINE_string("model_dir", None, "Directory of every output, checkpoint and log. Required.")
    flags.DEFINE_enum("restart", "none", RESTARTS,
                      "Start over instead of resuming: search removes the search from --model_dir (and the "
                      "training and export of its genotype), train the training and the export, all everything "
                      "bnas_tf wrote there; other files stay. A kill during the removal is finished by the next run.")
    flags.DEFINE_enum("dataset", "cifar10", ("cifar10", "cifar100", "imagenet2012", "digits") + FACE_DATASETS,
                      "digits is embedded (scikit-learn's handwritten digits at 32x32): no download. "
                      "casia_webface and digits_faces are face recognition (Sec. 4.4): the network gives "
                      "embeddings, trained with --head and verified on --verification_sets.")
    flags.DEFINE_string("data_dir", None, "tfds data directory holding prepared datasets (tfds's default if unset).")
    flags.DEFINE_integer("seed", 0, "Seed of the data split, the initialisation and the sampling.", lower_bound=0)
    flags.DEFINE_bool("deterministic", True, "Deterministic TensorFlow ops (same seed, same result; a resumed "
                      "run ends where an uninterrupted one does).")
    # Search space and binarization.
    flags.DEFINE_enum("search", "bnas", SEARCHES, "bnas: Algorithm 1 (operation abandoning); pcdarts: the baseline.")
    flags.DEFINE_enum("binarize", "pcnn", SCHEMES, "Kernel binarization: none (full precision), xnor, pcnn.")
    flags.DEFINE_bool("binary_activations", False, "1-bit: binarize activations too (sign + STE), PReLU for ReLU; "
                      "with --search=bnas this is 1-bit BNAS (no warm-up, UCB, Eq. 10).")
    flags.DEFINE_bool("full_precision_preprocess", False,
                      "Keep each cell's two input preprocessing convolutions full precision (the paper's "
                      "ImageNet setting, always on there); 1-bit networks need it to learn (BUILD.md).")
    flags.DEFINE_float("theta", 1e-4, "Weight of the PCNN amplitude loss (Eq. 2).", lower_bound=0.0)
    flags.DEFINE_float("amplitude_learning_rate", None, "eta2 of Eq. 19 (default: the weight learning rate).",
                       lower_bound=0.0)
    # Search settings (paper Sec. 4.1.2).
    flags.DEFINE_integer("search_init_channels", 16, "Initial channels of the supernet.", lower_bound=2)
    flags.DEFINE_integer("search_layers", 6, "Cells of the supernet.", lower_bound=1)
    flags.DEFINE_list("reduction_cells", ["1", "3"], "0-based positions of the supernet's reduction cells "
                      "(the paper: second and fourth of 6). Empty: DARTS's rule, layers//3 and 2*layers//3.")
    flags.DEFINE_integer("partial_channels", 2, "C of PC-DARTS: 1/C of the channels enter the operations "
                         "(2 in the paper for CIFAR-10, 4 in the PC-DARTS code).", lower_bound=1)
    flags.DEFINE_integer("search_batch_size", 128,
                         "Batch per replica of the warm-up and PC-DARTS epochs (global batch: this "
                         "times the replicas).", lower_bound=1)
    flags.DEFINE_integer("trial_batch_size", 400,
                         "Batch per replica of the sampled architectures (global batch: this times "
                         "the replicas).", lower_bound=1)
    flags.DEFINE_integer("search_epochs", 50, "Epochs of a plain PC-DARTS search.", lower_bound=1)
    flags.DEFINE_integer("arch_freeze_epochs", 15, "Plain PC-DARTS: epochs with alpha/beta frozen.", lower_bound=0)
    flags.DEFINE_float("search_learning_rate", 0.025, "Weight learning rate of the search (cosine to 0).",
                       lower_bound=0.0)
    flags.DEFINE_enum("search_optimizer", "sgd", OPTIMIZERS,
                      "Optimizer of the search's weights: sgd (the paper's, with momentum 0.9) or adam "
                      "(binary networks; BUILD.md, 'Binary networks that learn').")
    flags.DEFINE_float("search_weight_decay", 5e-4, "Weight decay of the search.", lower_bound=0.0)
    flags.DEFINE_float("arch_learning_rate", 0.01, "Adam learning rate of alpha and beta.", lower_bound=0.0)
    flags.DEFINE_float("arch_weight_decay", 1e-3, "L2 weight decay of alpha and beta.", lower_bound=0.0)
    flags.DEFINE_integer("heldout_size", 5000, "Held-out images that score the sampled architectures.",
                         lower_bound=1)
    flags.DEFINE_integer("k", 8, "Operations per edge at the start (K).", lower_bound=2, upper_bound=8)
    flags.DEFINE_integer("t", 3, "Samples per operation and round (T).", lower_bound=1)
    flags.DEFINE_integer("v_epochs", 1, "PC-DARTS epochs after each round (V).", lower_bound=0)
    flags.DEFINE_integer("warmup_epochs", 5, "PC-DARTS warm-up epochs (L).", lower_bound=0)
    flags.DEFINE_integer("warmup_freeze_epochs", 3, "Warm-up epochs with alpha/beta frozen.", lower_bound=0)
    flags.DEFINE_bool("ucb", None, "Add the UCB term of Eq. 10 to the selection likelihood (default: on with "
                      "--binary_activations, as the paper; on without them is BNAS-dagger of Table 2).")
    flags.DEFINE_float("delta", 2.0, "UCB exploration weight (Eq. 10).", lower_bound=0.0)
    flags.DEFINE_enum("accuracy_unit", "percent", ("percent", "fraction"),
                      "Unit of the trial accuracies in the softmax of Eq. 7 (BUILD.md, 'Readings of the paper').")
    flags.DEFINE_integer("steps_per_epoch", None, "Cap on steps per epoch (smoke runs).", lower_bound=1)
    # Evaluation network and its training.
    flags.DEFINE_string("genotype", None, "--mode=train/export: a genotype.json path or a published name "
                        "(DARTS_V2, PC_DARTS, ...). Default: --model_dir/genotype.json.")
    flags.DEFINE_integer("init_channels", 36, "Initial channels of the evaluation network.", lower_bound=2)
    flags.DEFINE_integer("layers", 20, "Cells of the evaluation network.", lower_bound=3)
    flags.DEFINE_integer("batch_size", 96,
                         "Training batch per replica of the evaluation network (global batch: this "
                         "times the replicas).", lower_bound=1)
    flags.DEFINE_integer("epochs", 600, "Training epochs of the evaluation network.", lower_bound=1)
    flags.DEFINE_float("learning_rate", 0.025, "Initial learning rate (cosine to 0).", lower_bound=0.0)
    flags.DEFINE_enum("optimizer", "sgd", OPTIMIZERS,
                      "Optimizer of the network's weights: sgd (the paper's, with momentum 0.9) or adam "
                      "(binary networks; BUILD.md, 'Binary networks that learn').")
    flags.DEFINE_float("weight_decay", 3e-4, "L2 weight decay.", lower_bound=0.0)
    flags.DEFINE_float("grad_clip", 5.0, "Global-norm gradient clipping.", lower_bound=0.0)
    flags.DEFINE_bool("auxiliary", True, "Auxiliary tower after the second reduction cell.")
    flags.DEFINE_float("auxiliary_weight", 0.4, "Weight of the auxiliary loss.", lower_bound=0.0)
    flags.DEFINE_float("drop_path", 0.2, "Drop-path probability at the last epoch (linear schedule).",
                       lower_bound=0.0, upper_bound=1.0)
    flags.DEFINE_integer("cutout", None, "Cutout length in pixels (default: 16 for CIFAR, 8 for digits, "
                         "0 for ImageNet).", lower_bound=0)
    flags.DEFINE_float("label_smoothing", None, "Label smoothing (default: 0.1 on ImageNet, else 0).",
                       lower_bound=0.0, upper_bound=1.0)
    flags.DEFINE_bool("mixed_precision", False, "mixed_float16 training (GPUs).")
    # Face recognition (Sec. 4.4, Table 5).
    flags.DEFINE_enum("backbone", "genotype", BACKBONES, "Face network: the cells of the genotype (BNAS rows of "
                      "Table 5) or an IR ResNet baseline (64-128-256-512 stages).")
    flags.DEFINE_enum("head", "arcface", HEADS, "Face classification head (margin on the true class).")
    flags.DEFINE_float("head_scale", None, "s of CosFace / ArcFace (default: the head's).", lower_bound=0.0)
    flags.DEFINE_float("head_margin", None, "m of CosFace / ArcFace (default: the head's).", lower_bound=0.0)
    flags.DEFINE_integer("embedding_size", 512, "Dimension of the face embedding.", lower_bound=1)
    flags.DEFINE_float("embedding_dropout", 0.0, "Dropout before the embedding layer.", lower_bound=0.0,
                       upper_bound=0.99)
    flags.DEFINE_list("verification_sets", None, "Face verification sets, name=path: an insightface .bin file "
                      "or an image folder with pairs.txt. Default: lfw, cfp_fp and agedb_30 .bin files in "
                      "--data_dir.")
    # Distribution.
    flags.DEFINE_enum("strategy", "auto", ("auto", "one_device", "mirrored", "multi_worker", "tpu"),
                      "tf.distribute strategy.")
    flags.DEFINE_string("tpu", None, "TPU name or address ('local' on a TPU VM).")
    flags.DEFINE_integer("cpu_devices", None, "Split the CPU into N logical devices (multi-replica on CPU).",
                         lower_bound=1)
    flags.DEFINE_bool("scale_learning_rate", False, "Multiply learning rates by the number of replicas.")
    flags.mark_flag_as_required("model_dir")


define_flags()


def _reduction_cells():
    if not FLAGS.reduction_cells:
        return None
    try:
        return tuple(int(v) for v in FLAGS.reduction_cells)
    except ValueError:
        from bnas_tf.errors import bad_value

        raise bad_value("reduction_cells", ",".join(FLAGS.reduction_cells), "comma-separated integers") from None


def search_config(replicas=1):
    """The SearchConfig that the flags describe."""
    from bnas_tf.search.pcdarts import SearchConfig

    scale = replicas if FLAGS.scale_learning_rate else 1
    return SearchConfig(
        dataset=FLAGS.dataset,
        data_dir=FLAGS.data_dir,
        seed=FLAGS.seed,
        init_channels=FLAGS.search_init_channels,
        layers=FLAGS.search_layers,
        reduction_cells=_reduction_cells(),
        partial_channels=FLAGS.partial_channels,
        binarization=FLAGS.binarize,
        binary_activations=FLAGS.binary_activations,
        full_precision_preprocess=FLAGS.full_precision_preprocess,
        theta=FLAGS.theta,
        batch_size=FLAGS.search_batch_size * replicas,
        trial_batch_size=FLAGS.trial_batch_size * replicas,
        learning_rate=FLAGS.search_learning_rate * scale,
        optimizer=FLAGS.search_optimizer,
        weight_decay=FLAGS.search_weight_decay,
        arch_learning_rate=FLAGS.arch_learning_rate * scale,
        arch_weight_decay=FLAGS.arch_weight_decay,
        amplitude_learning_rate=FLAGS.amplitude_learning_rate,
        epochs=FLAGS.search_epochs,
        arch_freeze_epochs=FLAGS.arch_freeze_epochs,
        heldout_size=FLAGS.heldout_size,
        steps_per_epoch=FLAGS.steps_per_epoch,
        k=FLAGS.k,
        t=FLAGS.t,
        v=FLAGS.v_epochs,
        warmup_epochs=FLAGS.warmup_epochs,
        warmup_freeze_epochs=FLAGS.warmup_freeze_epochs,
        delta=FLAGS.delta,
        one_bit=FLAGS.binary_activations,
        ucb=FLAGS.ucb,
        accuracy_unit=FLAGS.accuracy_unit,
    )


def run_search(strategy):
    from bnas_tf.search import outputs
    from bnas_tf.search.pcdarts import run_pcdarts
    from bnas_tf.search.tuner import run_bnas

    config = search_config(strategy.num_replicas_in_sync)
    logging.info("Global batch: %d (search) and %d (trials), per-replica batch times %d replica(s).",
                 config.batch_size, config.trial_batch_size, strategy.num_replicas_in_sync)
    search_dir = FLAGS.model_dir
    if os.path.exists(os.path.join(search_dir, "genotype.json")) and FLAGS.mode == "all":
        from bnas_tf import genotypes
        from bnas_tf.search.pcdarts import check_resume_settings

        check_resume_settings(config, search_dir, FLAGS.search)  # the genotype is that search's

        logging.info("Search already finished: reusing %s/genotype.json.", search_dir)
        return genotypes.load(os.path.join(search_dir, "genotype.json"))
    logging.info("Search: %s, %s binarization%s, on %s.", FLAGS.search.upper(), FLAGS.binarize,
                 " with 1-bit activations" if FLAGS.binary_activations else "", FLAGS.dataset)
    run = run_bnas if FLAGS.search == "bnas" else run_pcdarts
    searcher, genotype, seconds = run(config, search_dir, strategy)
    if searcher.is_chief:
        outputs.write_search_outputs(search_dir, genotype, seconds, strategy,
                                     extra={"search": FLAGS.search, "dataset": FLAGS.dataset,
                                            # Of this run's seconds: first calls of new graphs, checkpoints.
                                            "trace_seconds": searcher.seconds["trace"],
                                            "checkpoint_seconds": searcher.seconds["checkpoint"]})
    return genotype


def _genotype_arg():
    from bnas_tf import genotypes

    source = FLAGS.genotype or os.path.join(FLAGS.model_dir, "genotype.json")
    return genotypes.load(source)


def _search_cost():
    path = os.path.join(FLAGS.model_dir, "search_cost.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return None


def face_config(genotype):
    """The FaceConfig that the flags describe."""
    from bnas_tf.face.train import FaceConfig

    return FaceConfig(
        backbone=FLAGS.backbone, genotype=genotype if FLAGS.backbone == "genotype" else None,
        init_channels=FLAGS.init_channels, layers=FLAGS.layers, embedding_size=FLAGS.embedding_size,
        binarization=FLAGS.binarize, binary_activations=FLAGS.binary_activations,
        full_precision_preprocess=FLAGS.full_precision_preprocess, theta=FLAGS.theta,
        dropout=FLAGS.embedding_dropout, head=FLAGS.head, scale=FLAGS.head_scale, margin=FLAGS.head_margin,
    )


def _face_data(batch_size):
    """(TrainingData, [VerificationSet]) of the face --dataset."""
    from bnas_tf.errors import ConfigError
    from bnas_tf.face import pairs as face_pairs
    from bnas_tf.face import sources

    if FLAGS.dataset == "digits_faces":
        train_data, heldout = sources.digits_identities(batch_size=batch_size, seed=FLAGS.seed)
        return train_data, [heldout]
    if not FLAGS.data_dir:
        raise ConfigError("--dataset=casia_webface needs --data_dir: the CASIA-WebFace training images (TFRecords "
                          "made by `python -m bnas_tf.launch --mode=convert`, an identity folder, or train.rec).")
    specs = FLAGS.verification_sets or [
        os.path.join(FLAGS.data_dir, f"{name}.bin") for name in ("lfw", "cfp_fp", "agedb_30")]
    verification = [face_pairs.load_verification(spec) for spec in specs]
    return sources.from_source(FLAGS.data_dir, batch_size=batch_size, seed=FLAGS.seed), verification


def run_convert():
    """--mode=convert: CASIA-WebFace (identity folders or MXNet train.rec) -> TFRecords."""
    from bnas_tf.errors import ConfigError
    from bnas_tf.face import data as face_data

    if not FLAGS.data_dir:
        raise ConfigError("--mode=convert needs --data_dir: the CASIA-WebFace identity folders (or train.rec); "
                          "the TFRecords go to --model_dir.")
    info = face_data.convert(FLAGS.data_dir, FLAGS.model_dir)
    logging.info("Converted %s into %s: %s.", FLAGS.data_dir, FLAGS.model_dir, info)


def _no_search_for_baseline():
    from bnas_tf.errors import ConfigError

    if FLAGS.mode == "search":
        raise ConfigError(f"--backbone={FLAGS.backbone} is a fixed baseline: there is nothing to search. Use "
                          "--mode=train, or --backbone=genotype to search cells.")
    logging.info("--backbone=%s is a fixed baseline: no search.", FLAGS.backbone)


def run_face_train(strategy, genotype):
    from bnas_tf.face.train import train_face

    replicas = strategy.num_replicas_in_sync
    train_data, verification = _face_data(FLAGS.batch_size * replicas)
    return train_face(
        face_config(genotype), train_data, model_dir=os.path.join(FLAGS.model_dir, "train"),
        verification=verification, epochs=FLAGS.epochs,
        learning_rate=FLAGS.learning_rate * (replicas if FLAGS.scale_learning_rate else 1),
        optimizer=FLAGS.optimizer, weight_decay=FLAGS.weight_decay, grad_clip=FLAGS.grad_clip,
        amplitude_lr=FLAGS.amplitude_learning_rate, mixed_precision=FLAGS.mixed_precision, seed=FLAGS.seed,
        strategy=strategy, steps_per_epoch=FLAGS.steps_per_epoch,
    )


def run_train(strategy, genotype):
    from bnas_tf import train

    if FLAGS.dataset in FACE_DATASETS:
        return run_face_train(strategy, genotype)

    return train.train(
        genotype,
        dataset=FLAGS.dataset,
        model_dir=os.path.join(FLAGS.model_dir, "train"),
        data_dir=FLAGS.data_dir,
        epochs=FLAGS.epochs,
        batch_size=FLAGS.batch_size * strategy.num_replicas_in_sync,
        learning_rate=FLAGS.learning_rate * (strategy.num_replicas_in_sync if FLAGS.scale_learning_rate else 1),
        optimizer=FLAGS.optimizer,
        weight_decay=FLAGS.weight_decay,
        grad_clip=FLAGS.grad_clip,
        auxiliary_weight=FLAGS.auxiliary_weight if FLAGS.auxiliary else 0.0,
        drop_path=FLAGS.drop_path,
        cutout=FLAGS.cutout,
        label_smoothing=FLAGS.label_smoothing,
        mixed_precision=FLAGS.mixed_precision,
        init_channels=FLAGS.init_channels,
        layers=FLAGS.layers,
        binarization=FLAGS.binarize,
        binary_activations=FLAGS.binary_activations,
        full_precision_preprocess=FLAGS.full_precision_preprocess,
        theta=FLAGS.theta,
        amplitude_lr=FLAGS.amplitude_learning_rate,
        seed=FLAGS.seed,
        strategy=strategy,
        steps_per_epoch=FLAGS.steps_per_epoch,
    )


def _sample_inputs(train_dir):
    """The test images that training saved beside the model; without them (a run of an
    older version), the first test images of --dataset."""
    import numpy as np

    from bnas_tf import data, train
    from bnas_tf.errors import ConfigError

    path = os.path.join(train_dir, train.SAMPLE_INPUTS_FILE)
    if os.path.exists(path):
        try:
            with open(path, "rb") as f:
                samples = np.load(f, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise ConfigError(f"Cannot read {path} ({err}): delete it to use the test images of --dataset.") \
                from None
        if samples.ndim == 4 and samples.shape[0] >= 1 and samples.dtype == np.float32:
            return samples
        raise ConfigError(f"{path} holds no batch of float32 images (shape {samples.shape}, {samples.dtype}): "
                          "delete it to use the test images of --dataset.")
    samples = data.train_test(FLAGS.dataset, batch_size=train.NUM_SAMPLE_INPUTS, seed=FLAGS.seed,
                              data_dir=FLAGS.data_dir).test
    return next(iter(samples))[0].numpy()


def run_export(train_results=None):
    """Exports the trained network of --model_dir/train and checks every artifact."""
    import keras

    from bnas_tf import export
    from bnas_tf.errors import ConfigError

    train_dir = os.path.join(FLAGS.model_dir, "train")
    model_path = os.path.join(train_dir, "model.keras")
    if not os.path.exists(model_path):
        raise ConfigError(
            f"No trained model at {model_path}: run --mode=train (or --mode=all) with this --model_dir first."
        )
    model = keras.models.load_model(model_path)
    sample_inputs = _sample_inputs(train_dir)
    extra = {"search_cost": _search_cost()}
    results_path = os.path.join(train_dir, "results.json")
    if train_results is None and os.path.exists(results_path):
        with open(results_path) as f:
            train_results = json.load(f)
    if train_results:
        extra["test_accuracy"] = train_results.get("test_accuracy")
        if train_results.get("verification"):  # a face network: its verification accuracies
            extra["verification"] = train_results["verification"]
    export_dir = os.path.join(FLAGS.model_dir, "export")
    result = export.export(model, export_dir, sample_inputs=sample_inputs, summary_extra=extra)
    check = export.verify(export_dir, sample_inputs, model)
    for name, figures in check.items():
        if isinstance(figures, dict):
            logging.info("Export check %-12s max |diff| %.3g, argmax agreement %.3f", name,
                         figures["max_abs_diff"], figures["argmax_agreement"])
    return result


# Flags that only one kind of search reads (BNAS: Algorithm 1; PC-DARTS: the baseline).
_BNAS_ONLY = ("k", "t", "v_epochs", "warmup_epochs", "warmup_freeze_epochs", "ucb", "delta", "accuracy_unit",
              "trial_batch_size")
_PCDARTS_ONLY = ("search_epochs", "arch_freeze_epochs")


_FACE_ONLY = ("backbone", "head", "head_scale", "head_margin", "embedding_size", "embedding_dropout",
              "verification_sets")
_CLASSIFICATION_ONLY = ("auxiliary", "auxiliary_weight", "drop_path", "cutout", "label_smoothing")


def ignored_flags(flag_values=FLAGS):
    """[(flag, why)] for every flag set (on the command line or in a flagfile) that this run
    does not read, so that a config never holds a setting that silently does nothing."""
    set_here = [name for name in flag_values if flag_values[name].present]
    face = flag_values.dataset in FACE_DATASETS
    ignored = []
    for name in set_here:
        if not face and name in _FACE_ONLY:
            ignored.append((name, "only the face datasets read it"))
        elif face and name in _CLASSIFICATION_ONLY:
            ignored.append((name, "the face network's training does not read it"))
        elif flag_values.mode in ("search", "all"):
            why = _search_ignores(flag_values, name)
            if why:
                ignored.append((name, why))
    return ignored


def _search_ignores(flag_values, name):
    """Why this run's search does not read flag `name`, or None."""
    if flag_values.search == "pcdarts" and name in _BNAS_ONLY:
        return "only --search=bnas reads it"
    if flag_values.search == "bnas" and name in _PCDARTS_ONLY:
        return "only --search=pcdarts reads it"
    if (flag_values.search == "bnas" and flag_values.binary_activations
            and name in ("warmup_epochs", "warmup_freeze_epochs")):
        return "1-bit BNAS has no PC-DARTS warm-up (Sec. 3.3)"
    if (flag_values.search == "bnas" and name == "delta"
            and not (flag_values.binary_activations if flag_values.ucb is None else flag_values.ucb)):
        return "it weighs the UCB term, which is off (--ucb)"
    return None


# The modes that make again what each --restart removes.
_RESTART_MODES = {"search": ("search", "all"), "train": ("train", "all"), "all": ("search", "all")}
_RESTART_REMOVES = {"search": "the search (and the training and export of its genotype)",
                    "train": "the training (and its export)", "all": "the search, the training and the export"}


def _check_restart():
    """A --restart that removes what this --mode does not make again only loses work: refused."""
    from bnas_tf.errors import ConfigError

    modes = _RESTART_MODES.get(FLAGS.restart)
    if modes and FLAGS.mode not in modes:
        raise ConfigError(
            f"--restart={FLAGS.restart} removes {_RESTART_REMOVES[FLAGS.restart]}, which --mode={FLAGS.mode} "
            f"does not make again: use it with {' or '.join('--mode=' + m for m in modes)}.")


def prepare_model_dir():
    """Before anything reads --model_dir: finishes a restart that a kill interrupted, starts over
    what --restart names, and removes the temporaries of killed writes (`bnas_tf.rundir`)."""
    from bnas_tf import rundir

    rundir.finish_interrupted_restarts(FLAGS.model_dir)
    rundir.restart(FLAGS.model_dir, FLAGS.restart)
    rundir.remove_stray_temporaries(FLAGS.model_dir)


def main(argv):
    del argv
    from bnas_tf.errors import BnasError

    from bnas_tf import interrupt

    interrupt.install()
    restarted = False  # a --restart done: the command with it would start over again, not resume
    try:
        import tensorflow as tf

        from bnas_tf import console

        console.quiet_tensorflow_logs()

        from bnas_tf import distribute

        for name, why in ignored_flags():
            logging.warning("--%s is set but not used: %s.", name, why)
        _check_restart()
        os.makedirs(FLAGS.model_dir, exist_ok=True)
        strategy = distribute.get_strategy(FLAGS.strategy, tpu=FLAGS.tpu, cpu_devices=FLAGS.cpu_devices)
        if distribute.is_chief(strategy):  # one task clears the shared directory
            prepare_model_dir()
        restarted = FLAGS.restart != "none"
        if FLAGS.deterministic:
            tf.config.experimental.enable_op_determinism()
        if FLAGS.mode == "convert":
            run_convert()
            return
        genotype = None
        train_results = None
        baseline = FLAGS.dataset in FACE_DATASETS and FLAGS.backbone != "genotype"
        if FLAGS.mode in ("search", "all"):
            if baseline:
                _no_search_for_baseline()
            else:
                genotype = run_search(strategy)
        if FLAGS.mode in ("train", "all"):
            if not baseline:
                genotype = _genotype_arg() if genotype is None or FLAGS.genotype else genotype
            train_results = run_train(strategy, genotype)
        if FLAGS.mode in ("export", "all"):
            run_export(train_results)
    except BnasError as err:
        done = f" (--restart={FLAGS.restart} is done: leave it out when you run again.)" if restarted else ""
        logging.error("%s%s", err, done)
        sys.stderr.write(f"bnas_tf: error: {err}{done}\n")
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM (`bnas_tf.interrupt`)
        again = f"run the same command without --restart={FLAGS.restart}" if restarted else "run the same command again"
        message = f"{interrupt.reason()}. What was checkpointed in {FLAGS.model_dir} is kept: {again} to resume."
        logging.warning("%s", message)
        sys.stderr.write(f"bnas_tf: {message}\n")
        sys.exit(130)


def run():
    app.run(main)


if __name__ == "__main__":
    run()
