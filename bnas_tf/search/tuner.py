"""`BnasTuner`: Algorithm 1 of the BNAS paper on Keras-Tuner machinery.

The `BnasOracle` decides (which operations are sampled, which one dies); the
tuner trains. One supernet is shared by every trial:

1. warm-up: L epochs of PC-DARTS, alpha/beta frozen for the first 3
   (skipped in 1-bit mode);
2. per round, the Oracle's trials: each trains the sampled single-path
   architecture for one epoch on the weights half (batch `trial_batch_size`)
   and reports its accuracy on the held-out subset;
3. V epochs of PC-DARTS on the reduced space; then the next round, until one
   operation is left per edge.

Resume: every epoch unit (warm-up or PC-DARTS epoch, trial) ends with a
checkpoint whose unit counter indexes the learning-rate schedule and the data
order. A trial's result is written next to the checkpoint before the Oracle is
told, so a search killed at any point resumes from the last finished unit,
with no trial lost and none counted twice.
"""

import math
import os
import time

import keras_tuner
import numpy as np
import tensorflow as tf
from absl import logging

from bnas_tf import genotypes as gt
from bnas_tf.errors import ConfigError
from bnas_tf.search import board
from bnas_tf.search import outputs
from bnas_tf.search import statefile
from bnas_tf.search.history import FILENAME as HISTORY_FILE
from bnas_tf.search.history import History
from bnas_tf.search.oracle import BnasOracle
from bnas_tf.search.pcdarts import (Searcher, check_resume_settings, check_trial_batch_size, search_data,
                                    search_graph_options)


def total_units(config):
    """Epoch units of the whole search: L + sum_K T*ceil(K/2) + V*(K0 - 1) (L = 0 in 1-bit mode)."""
    units = 0 if config.one_bit else config.warmup_epochs
    for k in range(config.k, 1, -1):
        units += config.t * math.ceil(k / 2) + config.v
    return units


class BnasTuner(keras_tuner.Tuner):
    """Runs the BNAS search; `oracle` is a `BnasOracle`, `searcher` a `Searcher`."""

    def __init__(self, oracle, searcher, **kwargs):
        self.searcher = searcher
        super().__init__(oracle=oracle, hypermodel=None, overwrite=False, **kwargs)
        self._unit_seconds = []

    def save(self):
        """The Oracle's files, then the tuner's own, each through a temporary file and a rename
        (`statefile.write`, which also serves gs:// project directories).

        Keras-Tuner writes the tuner's file in place: a search killed during
        that write left it empty, and the resume failed on it.
        """
        if not self._is_worker():
            self.oracle.save()
        statefile.write(self._get_tuner_fname(), self.get_state())

    def reload(self):
        """The Oracle's state (its errors name the file and what to do).

        The tuner's own file holds no search state (a `keras_tuner.Tuner`
        keeps none), so an unreadable one, as a search killed mid-write by an
        earlier bnas_tf left, is rewritten and nothing is lost.
        """
        if not self._is_worker():
            self.oracle.reload()
        fname = self._get_tuner_fname()
        try:
            state = statefile.read(fname)
        except statefile.Unreadable:
            logging.warning("%s is unreadable; it holds no search state and is written again.", fname)
            statefile.write(fname, self.get_state())
            return
        if state is not None:
            self.set_state(state)

    # A failed trial is a bug or a diverged loss: let it surface, never skip it.
    def _try_run_and_update_trial(self, trial, *fit_args, **fit_kwargs):
        self._run_and_update_trial(trial, *fit_args, **fit_kwargs)
        trial.status = keras_tuner.engine.trial.TrialStatus.COMPLETED

    def run_trial(self, trial, *args, **kwargs):
        searcher = self.searcher
        pending = searcher.pending()
        if pending and pending.get("kind") == "trial" and pending.get("trial_id") == trial.trial_id:
            logging.info("Trial %s finished before the interruption; its result is reused.", trial.trial_id)
            return {"val_accuracy": pending["val_accuracy"]}
        values = trial.hyperparameters.values
        ops_by_type = {t: [values[f"{t}_{e:02d}"] for e in range(gt.NUM_EDGES)] for t in gt.CELL_TYPES}
        phase = self.oracle.next_phase()
        label = f"round {phase['round']} trial {phase['trial'] + 1}/{phase['num_trials']}"
        self._log_progress(label)
        start = time.time()
        result = searcher.trial_epoch(ops_by_type, label)
        self._unit_seconds.append(time.time() - start)
        searcher.save(
            pending={
                "unit": int(searcher.unit.numpy()),
                "kind": "trial",
                "trial_id": trial.trial_id,
                "val_accuracy": result["val_accuracy"],
            }
        )
        logging.info("%s: held-out accuracy %.4f", label, result["val_accuracy"])
        return {"val_accuracy": result["val_accuracy"]}

    def _log_progress(self, label):
        unit = int(self.searcher.unit.numpy())
        total = self.searcher.total_units
        eta = ""
        if self._unit_seconds:
            eta = f", ETA {outputs.format_seconds(np.mean(self._unit_seconds[-10:]) * (total - unit))}"
        logging.info("BNAS %s (unit %d/%d%s)", label, unit + 1, total, eta)

    def _phase_start(self, key):
        path = os.path.join(self.searcher.model_dir, "phase.json")
        try:
            state = statefile.read(path) or {}
        except statefile.Unreadable:
            logging.warning("%s is unreadable; the current phase counts its epochs from here.", path)
            state = {}
        if state.get("key") != key:
            state = {"key": key, "start_unit": int(self.searcher.unit.numpy())}
            statefile.write(path, state, indent=1)
        return state["start_unit"]

    def _run_phase(self, phase):
        """L warm-up epochs or V PC-DARTS epochs, resumable per epoch."""
        oracle, searcher, cfg = self.oracle, self.searcher, self.searcher.config
        key = f"{phase['phase']}-{oracle.round}"
        start = self._phase_start(key)
        for epoch in range(int(searcher.unit.numpy()) - start, phase["epochs"]):
            update_arch = phase["phase"] != "warmup" or epoch >= cfg.warmup_freeze_epochs
            label = f"{phase['phase']} epoch {epoch + 1}/{phase['epochs']} (K={oracle.k})"
            self._log_progress(label)
            t0 = time.time()
            result = searcher.search_epoch(update_arch, label)
            self._unit_seconds.append(time.time() - t0)
            searcher.save()
            logging.info("%s: loss %.4f, train accuracy %.4f", label, result["loss"], result["train_accuracy"])
        if searcher.is_chief:
            board.write_architecture(searcher.writer, searcher.model, int(searcher.unit.numpy()))
        oracle.finish_phase(searcher.model.alphas() if not cfg.one_bit else None)
        self.save()
        searcher.model.set_alive(oracle.active_ops())

    def run(self):
        """Runs (or resumes) the whole search; returns the genotype."""
        self.searcher.restore()
        self.searcher.model.set_alive(self.oracle.active_ops())
        while True:
            phase = self.oracle.next_phase()
            if phase["phase"] == "done":
                break
            if phase["phase"] == "trials":
                self.search(verbose=0)  # the Oracle stops it at the end of the round
                self.searcher.model.set_alive(self.oracle.active_ops())
                self._board_round()
            else:
                self._run_phase(phase)
        genotype = self.genotype()
        if self.searcher.is_chief:
            board.write_cells(self.searcher.writer, genotype, int(self.searcher.unit.numpy()), "(found)")
        return genotype

    def _board_round(self):
        """The round just finished, in TensorBoard (`board.write_round`)."""
        if not self.searcher.is_chief:
            return
        rounds = History(os.path.join(self.searcher.model_dir, HISTORY_FILE)).records("round")
        if rounds:
            board.write_round(self.searcher.writer, rounds[-1], list(self.searcher.model.primitives),
                              int(self.searcher.unit.numpy()))

    def genotype(self):
        """The found genotype (`final_genotype`) from the Oracle's survivors and the edge weights."""
        model = self.searcher.model
        edge_weights = {t: np.asarray(model.edge_weights(t)) for t in gt.CELL_TYPES}
        return final_genotype(self.oracle.final_ops(), edge_weights, model.primitives)


def final_genotype(final_ops, edge_weights, primitives):
    """The genotype of a finished BNAS search.

    Each edge ends with one operation (Algorithm 1 abandons all others); as in
    DARTS, each intermediate node keeps its two incoming edges with the largest
    edge weight (softmax beta, PC-DARTS's edge normalisation), the stronger
    first. An edge whose survivor is `none` would add nothing to the cell: it
    takes the operation abandoned last on it (its runner-up) and ranks below
    every other edge of its node, so it is kept only when its node has no two
    other edges.

    Args:
        final_ops: {cell_type: [(op, runner_up) per edge]}, `BnasOracle.final_ops()`.
        edge_weights: {cell_type: array [14]}, the edge weights.
        primitives: the operation names, in the order of the alpha columns.
    """
    weights = {}
    for t in gt.CELL_TYPES:
        w = np.full((gt.NUM_EDGES, len(primitives)), np.nan)
        for e, (op, runner_up) in enumerate(final_ops[t]):
            name = runner_up if op == "none" else op
            w[e, primitives.index(name)] = edge_weights[t][e] * (1e-6 if op == "none" else 1.0)
        weights[t] = w
    return gt.derive(weights["normal"], weights["reduce"], primitives=primitives)


def run_bnas(config, model_dir, strategy=None):
    """Runs or resumes the BNAS search in `model_dir`; returns (searcher, genotype, seconds)."""
    with search_graph_options():
        return _run_bnas(config, model_dir, strategy)


def _run_bnas(config, model_dir, strategy):
    if not config.one_bit and config.warmup_freeze_epochs > config.warmup_epochs:
        raise ConfigError(
            f"Invalid `warmup_freeze_epochs`: the warm-up has only warmup_epochs={config.warmup_epochs}. "
            f"Received: warmup_freeze_epochs={config.warmup_freeze_epochs}")
    # The data and the trial batch first: a failure there records no settings, which the
    # corrected command would otherwise be refused for.
    splits = search_data(config.validate())
    check_trial_batch_size(config, splits, (strategy or tf.distribute.get_strategy()).num_replicas_in_sync)
    check_resume_settings(config, model_dir, "bnas")
    searcher = Searcher(config, model_dir, strategy, total_units=total_units(config), splits=splits)
    oracle = BnasOracle(
        k=config.k,
        t=config.t,
        v=config.v,
        warmup_epochs=config.warmup_epochs,
        one_bit=config.one_bit,
        ucb=config.ucb,
        delta=config.delta,
        accuracy_unit=config.accuracy_unit,
        seed=config.seed,
        history_path=os.path.join(model_dir, "search_history.jsonl"),
    )
    tuner = BnasTuner(oracle, searcher, directory=model_dir, project_name="tuner")
    genotype = tuner.run()
    return searcher, genotype, searcher.elapsed_seconds
