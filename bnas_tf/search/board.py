"""What TensorBoard shows of a search, beside the per-unit scalars (``tensorboard/search``).

- ``arch/<cell>``: the architecture weights after every warm-up or PC-DARTS
  phase (BNAS) or epoch (PC-DARTS): per edge, softmax(alpha) over the
  operations still alive times the edge weight softmax(beta) (PC-DARTS's
  edge normalisation), as a heat map; ``arch/<cell>/edge_weight_<i>`` as
  scalars.
- ``round/...`` after every abandoning round of BNAS: K, the number of
  trials, the mean held-out accuracy of the round's trials (scalars); the
  selection likelihood s of every operation on every edge (Eqs. 7-10) as a
  heat map per cell type, and the abandoned operations (Eq. 11) as text.
- ``cells/<cell>``: the cell diagrams of the current genotype after every
  round and of the final one.

The search steps are counted in epoch units (`Searcher.unit`), so the images
line up with the scalars.
"""

import numpy as np
import tensorflow as tf

from bnas_tf import genotypes as gt
from bnas_tf import viz


def _image(name, png, step):
    tf.summary.image(name, tf.expand_dims(tf.io.decode_png(png, channels=3), 0), step=step)


def _edge_labels():
    return [f"{src}->{node}" for node in range(2, 2 + gt.STEPS) for src in range(node)]


def write_architecture(writer, model, step):
    """softmax(alpha) (alive operations) times the edge weights, per cell type."""
    alphas = model.alphas()
    with writer.as_default():
        for cell_type in gt.CELL_TYPES:
            alpha = alphas[cell_type]
            exp = np.exp(alpha - np.nanmax(alpha, axis=1, keepdims=True))
            weights = np.asarray(model.edge_weights(cell_type), dtype=np.float64)
            mixed = exp / np.nansum(exp, axis=1, keepdims=True) * weights[:, None]
            png = viz.heatmap_png(mixed, _edge_labels(), list(model.primitives),
                                  f"{cell_type}: softmax(alpha) x edge weight, unit {step}")
            _image(f"arch/{cell_type}", png, step)
            for edge, value in enumerate(weights):
                tf.summary.scalar(f"arch/{cell_type}/edge_weight_{edge}", float(value), step=step)
    writer.flush()


def write_round(writer, record, primitives, step):
    """A BNAS round record (`bnas_tf.search.history`): K, trials, likelihoods, abandoned operations."""
    with writer.as_default():
        tf.summary.scalar("round/k", int(record["k"]), step=step)
        tf.summary.scalar("round/num_trials", int(record["num_trials"]), step=step)
        means = [v for t in gt.CELL_TYPES for edge in record["mean_accuracy"][t] for v in edge.values()]
        if means:
            tf.summary.scalar("round/mean_trial_accuracy", float(np.mean(means)), step=step)
        lines = []
        for cell_type in gt.CELL_TYPES:
            likelihood = np.full((gt.NUM_EDGES, len(primitives)), np.nan)
            for edge, values in enumerate(record["likelihood"][cell_type]):
                for op, value in values.items():
                    likelihood[edge, primitives.index(op)] = value
            png = viz.heatmap_png(likelihood, _edge_labels(), list(primitives),
                                  f"{cell_type}: selection likelihood s, round {record['round']} (K={record['k']})")
            _image(f"round/likelihood_{cell_type}", png, step)
            lines += [f"| {cell_type} | {label} | {op} |"
                      for label, op in zip(_edge_labels(), record["abandoned"][cell_type])]
        table = "| cell | edge | abandoned |\n|---|---|---|\n" + "\n".join(lines)
        tf.summary.text("round/abandoned", table, step=step)
    writer.flush()


def write_cells(writer, genotype, step, title=""):
    """The diagrams of both cells of ``genotype``."""
    with writer.as_default():
        for cell_type in gt.CELL_TYPES:
            _image(f"cells/{cell_type}", viz.cell_png(genotype, cell_type, f"{cell_type} {title}".strip()), step)
    writer.flush()
