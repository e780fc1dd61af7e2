"""Larq reference runs of whole models for tests/quant_test.py (run as a subprocess).

Larq 0.14 only imports under Keras 2, so this script runs in its own process
with ``TF_USE_LEGACY_KERAS=1`` (``tf.keras`` is then ``tf_keras``), as
tests/larq_reference.py does::

    TF_USE_LEGACY_KERAS=1 python tests/larq_quant_reference.py INPUTS.npz OUT.npz

INPUTS.npz holds ``<model>/x``, ``<model>/dy`` and ``<model>/seed`` for each
model of tests/larq_models.py. For each, the script builds the model with
Larq's layers, gives every weight a new value (`larq_models.randomize`,
seeded), and writes to OUT.npz: ``<model>/w/i/j`` (those weights: the test
loads them into the bnas_tf model), everything `larq_models.experiment`
returns as ``<model>/<key>``, and what ``larq.models.summary`` prints:
``<model>/summary/text``, and parsed from its "Total" row
``<model>/summary/bits`` (the precisions of its columns),
``<model>/summary/params`` (the counts), ``<model>/summary/memory_kb``,
``<model>/summary/mac_bits`` and ``<model>/summary/macs`` (MACs by precision).
"""

import os
import re
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import larq as lq  # noqa: E402
import larq_models  # noqa: E402  (this script's directory is on sys.path)


def _parse_summary(text):
    """(bits, params, memory_kb, mac_bits, macs) from the "Total" row of Larq's layer table.

    The row reads: Total, a count per parameter precision (the "# b-bit"
    columns), the memory in kB, a count per MAC precision ("b-bit MACs").
    """
    bits = [int(b) for b in re.findall(r"# (\d+)-bit", text)]
    mac_bits = [int(b) for b in re.findall(r"(\d+)-bit MACs", text)]
    for line in text.splitlines():
        tokens = line.strip().strip("|").split()
        if len(tokens) == len(bits) + len(mac_bits) + 2 and tokens[0] == "Total" and tokens[1].isdigit():
            params = [int(t) for t in tokens[1 : 1 + len(bits)]]
            macs = [int(t) for t in tokens[2 + len(bits) :]]
            return bits, params, float(tokens[1 + len(bits)]), mac_bits, macs
    raise ValueError(f"No Total row in Larq's summary:\n{text}")


def main(inputs_path, out_path):
    tf.keras.utils.set_random_seed(0)
    inputs = np.load(inputs_path)
    out = {}
    for name in larq_models.MODELS:
        model = larq_models.build(name, larq_models.LARQ_IMPORTS)
        rng = np.random.default_rng(int(inputs[f"{name}/seed"]))
        larq_models.randomize(model, rng)
        for key, w in larq_models.weights(model).items():
            out[f"{name}/w/{key}"] = np.asarray(w)
        lines = []
        lq.models.summary(model, print_fn=lines.append)
        text = "\n".join(lines)
        bits, params, memory_kb, mac_bits, macs = _parse_summary(text)
        out[f"{name}/summary/text"] = np.array(text)
        out[f"{name}/summary/bits"] = np.array(bits)
        out[f"{name}/summary/params"] = np.array(params)
        out[f"{name}/summary/memory_kb"] = np.array(memory_kb)
        out[f"{name}/summary/mac_bits"] = np.array(mac_bits)
        out[f"{name}/summary/macs"] = np.array(macs)
        results = larq_models.experiment(model, inputs[f"{name}/x"], inputs[f"{name}/dy"])
        out.update({f"{name}/{key}": value for key, value in results.items()})
    np.savez(out_path, **out)


if __name__ == "__main__":
    main(*sys.argv[1:3])
