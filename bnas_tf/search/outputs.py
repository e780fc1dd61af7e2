"""What a finished search leaves in its model directory.

genotype.json, normal.png / reduce.png (cell diagrams), search_cost.json, and
the log lines with the genotype and the search cost in device-hours.
"""

import json
import os

import tensorflow as tf
from absl import logging

from bnas_tf import viz


def format_seconds(seconds):
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def search_cost(seconds, strategy=None):
    """Wall time times the devices used, in hours (GPU-hours on GPUs, else CPU-hours)."""
    strategy = strategy or tf.distribute.get_strategy()
    gpus = len(tf.config.list_logical_devices("GPU"))
    kind = "GPU" if gpus else "CPU"
    devices = strategy.num_replicas_in_sync if gpus else 1
    hours = seconds / 3600.0 * devices
    return {"seconds": seconds, "device": kind, "devices": devices, f"{kind.lower()}_hours": hours,
            f"{kind.lower()}_days": hours / 24.0}


def write_search_outputs(model_dir, genotype, seconds, strategy=None, extra=None):
    """Writes genotype.json, the cell diagrams and search_cost.json; logs a summary."""
    cost = search_cost(seconds, strategy)
    path = os.path.join(model_dir, "genotype.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(genotype.to_json(indent=1))
    os.replace(tmp, path)
    diagrams = viz.plot_genotype(genotype, model_dir)
    with open(os.path.join(model_dir, "search_cost.json"), "w") as f:
        json.dump({**cost, **(extra or {})}, f, indent=1)
    unit = cost["device"].lower()
    logging.info("Genotype: %s", genotype)
    logging.info(
        "Search finished in %s: %.4f %s-hours (%.5f %s-days). Wrote %s, %s, %s.",
        format_seconds(seconds), cost[f"{unit}_hours"], cost["device"], cost[f"{unit}_days"], cost["device"],
        path, diagrams["normal"], diagrams["reduce"],
    )
    return {"genotype": path, **diagrams, "cost": cost}
