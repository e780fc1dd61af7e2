"""A `tf.distribute.Strategy` from a name, as tensorflow/models' distribute_utils.

    auto          TPU if an address is given, MirroredStrategy over every GPU if
                  there are several (or over the logical CPUs of --cpu_devices),
                  else the default strategy on one device
    one_device    OneDeviceStrategy on the first GPU, else the CPU
    mirrored      MirroredStrategy over the local GPUs, or the logical CPUs
    multi_worker  MultiWorkerMirroredStrategy; the cluster comes from TF_CONFIG
    tpu           TPUStrategy on the TPU at `tpu` ("local" on a TPU VM)
"""

import os

import tensorflow as tf
from absl import logging

from bnas_tf.errors import ConfigError

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")


def split_cpu(num_devices):
    """Splits the CPU into `num_devices` logical devices (before TF starts using it)."""
    if not num_devices or num_devices <= 1:
        return
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(num_devices)]
        )
    except RuntimeError:
        configured = len(tf.config.list_logical_devices("CPU"))
        if configured != num_devices:
            raise ConfigError(
                f"Cannot split the CPU into {num_devices} devices: TensorFlow already started with "
                f"{configured}. Set --cpu_devices before anything else runs. Received: cpu_devices={num_devices}"
            ) from None


def _local_devices():
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return [d.name for d in gpus]
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def get_strategy(name="auto", *, tpu=None, cpu_devices=None):
    """Returns the strategy `name` (see the module docstring) and logs its replicas."""
    if name not in STRATEGIES:
        raise ConfigError(f"Unknown strategy: expected one of {', '.join(STRATEGIES)}. Received: strategy={name!r}")
    split_cpu(cpu_devices)
    if name == "auto":
        if tpu:
            name = "tpu"
        elif "TF_CONFIG" in os.environ:
            name = "multi_worker"
        elif len(_local_devices()) > 1:
            name = "mirrored"
        else:
            name = "one_device"
    if name == "tpu":
        if not tpu:
            raise ConfigError("--strategy=tpu needs --tpu: the TPU name or address ('local' on a TPU VM).")
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        strategy = tf.distribute.TPUStrategy(resolver)
    elif name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ConfigError(
                "--strategy=multi_worker needs the TF_CONFIG environment variable describing the cluster "
                "(launch/multi_worker.sh writes it)."
            )
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif name == "mirrored":
        strategy = tf.distribute.MirroredStrategy(devices=_local_devices())
    else:
        strategy = tf.distribute.OneDeviceStrategy(_local_devices()[0])
    logging.info(
        "Distribution strategy: %s with %d replica(s) in sync%s.",
        _PUBLIC_NAMES[name], strategy.num_replicas_in_sync, _task_text(strategy) if name == "multi_worker" else "",
    )
    return strategy


# The tf.distribute names (the classes are CollectiveAllReduceStrategy, TPUStrategyV2, ...).
_PUBLIC_NAMES = {
    "one_device": "OneDeviceStrategy",
    "mirrored": "MirroredStrategy",
    "multi_worker": "MultiWorkerMirroredStrategy",
    "tpu": "TPUStrategy",
}


def _task_text(strategy):
    """', this task worker 1 of 2' for a multi-worker strategy (from TF_CONFIG)."""
    resolver = strategy.cluster_resolver
    workers = sum(len(tasks) for tasks in resolver.cluster_spec().as_dict().values())
    chief = " (chief)" if is_chief(strategy) else ""
    return f", this task {resolver.task_type} {resolver.task_id} of {workers}{chief}"


def is_chief(strategy):
    """Whether this task writes checkpoints and outputs (the chief, or worker 0)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None) if resolver is not None else None
    if not task_type:
        return True
    return task_type == "chief" or (task_type == "worker" and resolver.task_id == 0)


def is_tpu(strategy):
    """Whether `strategy` runs on TPUs (its replicas are compiled by XLA)."""
    return isinstance(strategy, (tf.distribute.TPUStrategy, tf.distribute.experimental.TPUStrategy))
