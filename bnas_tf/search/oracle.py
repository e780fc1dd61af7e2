"""The Keras-Tuner Oracle of the performance-based search (BNAS Algorithm 1).

`BnasOracle` owns the whole search state of both cell types: the operations
still alive on each of the 2 x 14 edges, the selection likelihood `s`, the
trial plan of the current round, the accuracies gathered so far and the
round records. The tuner trains; the oracle decides which subnet is trained
next and which operation is abandoned. All arithmetic is in
`bnas_tf.search.abandon` (Eqs. 7-11).

The two cell types are stacked into one block of 28 edges: rows 0..13 are
the normal cell's edges, rows 14..27 the reduction cell's.

Phases, in order (`next_phase()` says which one the tuner runs now):

    warmup   PC-DARTS for L epochs (Algorithm 1, line 1); skipped in 1-bit
             mode, where O_smaller = O needs no alpha.
    trials   round r: T * ceil(K/2) subnets, each trained for an epoch and
             scored by its `val_accuracy` (lines 3-11). They run as
             Keras-Tuner trials: `create_trial` -> `populate_space` issues
             the next planned subnet, `end_trial` -> `score_trial` counts its
             accuracy. The last trial of the round applies Eq. 9 (then Eq. 10
             with UCB) and Eq. 11 and sets K <- K - 1 (lines 12-18).
    pcdarts  PC-DARTS for V epochs on the reduced space (line 17); then the
             next round starts, or, with one operation left per edge, done.
    done     `final_ops()` gives the surviving operation of every edge.

The tuner ends a warmup/pcdarts phase with `finish_phase(alpha)`.

Persistence is Keras-Tuner's own: `get_state()` is merged into the base
Oracle state and written to `<project>/oracle.json` at every `create_trial`,
`end_trial` and `finish_phase`, so `reload()` resumes the search exactly. A
trial that was RUNNING when the process died is put back by Keras-Tuner's
`reload()` into the retry queue; the next `create_trial` re-issues the same
`Trial` (same id, same values) and its accuracy is counted once, when it
ends.
"""

import math
import os

import keras_tuner
import numpy as np
from absl import logging
from keras_tuner.src.engine import trial as trial_module

from bnas_tf.errors import ConfigError
from bnas_tf.errors import StateError
from bnas_tf.errors import bad_value
from bnas_tf.genotypes import CELL_TYPES
from bnas_tf.genotypes import NUM_EDGES
from bnas_tf.genotypes import PRIMITIVES
from bnas_tf.search import abandon as abandon_lib
from bnas_tf.search import statefile
from bnas_tf.search.history import History

TrialStatus = trial_module.TrialStatus

OBJECTIVE = "val_accuracy"
PHASES = ("warmup", "trials", "pcdarts", "done")

# Version of the "bnas" block of oracle.json.
_STATE_VERSION = 2


def hp_name(cell_type, edge):
    """The hyperparameter holding the operation of `edge` in `cell_type`."""
    return f"{cell_type}_{edge:02d}"


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


class BnasOracle(keras_tuner.Oracle):
    """Performance-based operation abandoning (BNAS Sec. 3.3, Algorithm 1).

    Args:
        k: int, the number K of operations per edge at the start:
            `primitives[:k]` (2 <= k <= len(primitives); 8 in the paper).
        t: int >= 1, the repetitions T per round (3 in the paper).
        v: int >= 0, PC-DARTS epochs V after each round (1 in the paper).
        warmup_epochs: int >= 0, PC-DARTS warm-up epochs L (5 in the paper).
        one_bit: bool, 1-bit BNAS: no warm-up and `O_smaller = O`, of which
            each repetition samples `ceil(K/2)` operations.
        ucb: bool, adds the UCB term of Eq. 10 after Eq. 9; None: `one_bit`
            (the paper's BNAS with 1-bit activations; BNAS-dagger of Table 2
            is `ucb=True` without them).
        delta: float >= 0, the UCB weight of Eq. 10 (2 in the paper).
        accuracy_unit: "percent" or "fraction", the unit of the accuracies in
            the softmax of Eq. 7 (`abandon.ACCURACY_SCALES`; BUILD.md).
        seed: int >= 0; the plan of round r is drawn with
            `numpy.random.default_rng([seed, r])`.
        primitives: the operation names, in the order of the alpha columns.
        history_path: where to append `search_history.jsonl` records (a file
            or a directory), or None for no history. Can be set later through
            the `history_path` attribute.
        **oracle_kwargs: passed to `keras_tuner.Oracle` (for example
            `max_retries_per_trial`, `max_consecutive_failed_trials`). The
            objective is always `val_accuracy` (max) and there is no
            `max_trials` limit.
    """

    def __init__(
        self,
        *,
        k=8,
        t=3,
        v=1,
        warmup_epochs=5,
        one_bit=False,
        ucb=None,
        delta=2.0,
        accuracy_unit="percent",
        seed=0,
        primitives=PRIMITIVES,
        history_path=None,
        **oracle_kwargs,
    ):
        primitives = tuple(primitives) if not isinstance(primitives, str) else primitives
        if (
            isinstance(primitives, str)
            or len(primitives) < 2
            or not all(isinstance(p, str) and p for p in primitives)
            or len(set(primitives)) != len(primitives)
        ):
            raise bad_value("primitives", primitives, "at least two distinct operation names")
        if not _is_int(k) or not 2 <= k <= len(primitives):
            raise bad_value("k", k, f"an integer between 2 and len(primitives)={len(primitives)}")
        if not _is_int(t) or t < 1:
            raise bad_value("t", t, "an integer >= 1")
        if not _is_int(v) or v < 0:
            raise bad_value("v", v, "an integer >= 0")
        if not _is_int(warmup_epochs) or warmup_epochs < 0:
            raise bad_value("warmup_epochs", warmup_epochs, "an integer >= 0")
        if not isinstance(one_bit, (bool, np.bool_)):
            raise bad_value("one_bit", one_bit, "a bool")
        if ucb is None:
            ucb = one_bit
        if not isinstance(ucb, (bool, np.bool_)):
            raise bad_value("ucb", ucb, "a bool or None")
        if accuracy_unit not in abandon_lib.ACCURACY_SCALES:
            raise bad_value(
                "accuracy_unit", accuracy_unit, f"one of {', '.join(abandon_lib.ACCURACY_SCALES)}"
            )
        if (
            isinstance(delta, bool)
            or not isinstance(delta, (int, float, np.number))
            or not math.isfinite(delta)
            or delta < 0
        ):
            raise bad_value("delta", delta, "a finite number >= 0")
        if not _is_int(seed) or seed < 0:
            raise bad_value("seed", seed, "an integer >= 0")
        for name in ("objective", "max_trials", "hyperparameters"):
            if name in oracle_kwargs:
                raise ConfigError(
                    f"`{name}` is fixed by BnasOracle and cannot be passed. "
                    f"Received: {name}={oracle_kwargs[name]!r}"
                )

        hyperparameters = keras_tuner.HyperParameters()
        for cell_type in CELL_TYPES:
            for edge in range(NUM_EDGES):
                hyperparameters.Choice(hp_name(cell_type, edge), list(primitives))
        super().__init__(
            objective=keras_tuner.Objective(OBJECTIVE, "max"),
            max_trials=None,
            hyperparameters=hyperparameters,
            seed=seed,
            **oracle_kwargs,
        )
        # Keras-Tuner draws a random seed for seed=0; its seed is unused here
        # (values come from the plan) but is part of the saved state.
        self.seed = self._seed_state = int(seed)

        self.primitives = primitives
        self.initial_k = int(k)
        self.t = int(t)
        self.v = int(v)
        self.warmup_epochs = int(warmup_epochs)
        self.one_bit = bool(one_bit)
        self.ucb = bool(ucb)
        self.delta = float(delta)
        self.accuracy_unit = accuracy_unit
        self.search_seed = int(seed)
        self.num_edges = len(CELL_TYPES) * NUM_EDGES
        self._history_path = None
        self._history = None
        self.history_path = history_path
        self._reset_search()

    # ------------------------------------------------------------------
    # Search state.

    def _reset_search(self):
        shape = (self.num_edges, len(self.primitives))
        self._phase = "warmup"
        self._k = self.initial_k
        self._round = 0
        self._alive = np.zeros(shape, dtype=bool)
        self._alive[:, : self.initial_k] = True
        self._s = np.zeros(shape)  # Algorithm 1: s = 0 for all edges.
        self._smaller = np.zeros(shape, dtype=bool)
        self._plan = np.zeros((0, self.num_edges), dtype=np.int64)
        self._slot_done = []
        self._trial_slots = {}  # trial_id -> [round, slot]
        self._acc_sum = np.zeros(shape)  # this round's accuracies (Eq. 7)
        self._acc_count = np.zeros(shape, dtype=np.int64)
        self._n = np.zeros(shape, dtype=np.int64)  # n_k, cumulative (Eq. 10)
        self._num_samples = 0  # N, cumulative (Eq. 10)
        self._abandoned = [[] for _ in range(self.num_edges)]
        self._alpha = None
        self._records = []  # [kind, record] in the order they happened
        if self.one_bit:
            # 1-bit BNAS has no warm-up: O_smaller = O needs no alpha.
            self._start_round(None)

    def _config(self):
        return {
            "k": self.initial_k,
            "t": self.t,
            "v": self.v,
            "warmup_epochs": self.warmup_epochs,
            "one_bit": self.one_bit,
            "ucb": self.ucb,
            "delta": self.delta,
            "accuracy_unit": self.accuracy_unit,
            "seed": self.search_seed,
            "primitives": list(self.primitives),
            "cell_types": list(CELL_TYPES),
            "num_edges": NUM_EDGES,
        }

    def _start_round(self, alpha):
        """Algorithm 1, lines 3-11: O_smaller from alpha and the trial plan."""
        self._round += 1
        self._smaller = abandon_lib.smaller_set(alpha, self._alive, self.one_bit)
        rng = np.random.default_rng([self.search_seed, self._round])
        # Line 6: ceil(K/2) samples per repetition, also from the K of a 1-bit O_smaller.
        self._plan = abandon_lib.plan_round(
            self._smaller, self.t, rng, per_repetition=math.ceil(self._k / 2)
        )
        self._slot_done = [False] * len(self._plan)
        self._acc_sum = np.zeros_like(self._acc_sum)
        self._acc_count = np.zeros_like(self._acc_count)
        self._phase = "trials"
        logging.info(
            "BNAS round %d: K=%d, %d trials (T=%d x ceil(K/2)=%d) from |O_smaller|=%d.",
            self._round,
            self._k,
            len(self._plan),
            self.t,
            len(self._plan) // self.t,
            int(self._smaller[0].sum()),
        )

    def _finish_round(self):
        """Algorithm 1, lines 12-18: Eqs. 9 (10) and 11, then K <- K - 1."""
        k_before = self._k
        alive_before = self._alive
        s = abandon_lib.likelihood_update(
            self._s,
            self._alive,
            self._smaller,
            self._acc_sum,
            self._acc_count,
            scale=abandon_lib.ACCURACY_SCALES[self.accuracy_unit],
        )
        bonus = None
        if self.ucb:
            bonus = abandon_lib.ucb_bonus(self._n, self._num_samples, self.delta)
            s = np.where(self._alive, s + bonus, s)
        new_alive, abandoned = abandon_lib.abandon(s, self._alive)
        self._s = s
        self._alive = new_alive
        for edge, op in enumerate(abandoned):
            self._abandoned[edge].append(int(op))
        self._k -= 1
        self._phase = "pcdarts"

        ybar = abandon_lib.mean_accuracy(self._acc_sum, self._acc_count)
        scored = self._smaller & (self._acc_count > 0)
        record = {
            "round": self._round,
            "k": k_before,
            "num_trials": len(self._plan),
            "o_smaller": self._per_cell(lambda e: self._names(self._smaller[e])),
            "mean_accuracy": self._per_cell(lambda e: self._op_values(ybar[e], scored[e])),
            "likelihood": self._per_cell(lambda e: self._op_values(s[e], alive_before[e])),
            "abandoned": self._per_cell(lambda e: self.primitives[abandoned[e]]),
            "ops_left": self._per_cell(lambda e: self._names(new_alive[e])),
        }
        if bonus is not None:
            record["ucb_bonus"] = self._per_cell(
                lambda e: self._op_values(bonus[e], alive_before[e])
            )
        self._records.append(["round", record])
        logging.info(
            "BNAS round %d done: K %d -> %d; abandoned normal=%s reduce=%s.",
            self._round,
            k_before,
            self._k,
            record["abandoned"]["normal"],
            record["abandoned"]["reduce"],
        )

    def _names(self, mask):
        return [self.primitives[i] for i in np.flatnonzero(mask)]

    def _op_values(self, values, mask):
        return {self.primitives[i]: float(values[i]) for i in np.flatnonzero(mask)}

    def _per_cell(self, fn):
        return {
            cell_type: [fn(c * NUM_EDGES + e) for e in range(NUM_EDGES)]
            for c, cell_type in enumerate(CELL_TYPES)
        }

    def _expand_record(self, kind, data):
        """The history record of an entry of `self._records`."""
        if kind == "round":
            return data
        trial_id, round_number, slot, accuracy, ops = data
        return {
            "trial_id": trial_id,
            "round": round_number,
            "slot": slot,
            "ops": self._per_cell(lambda e: self.primitives[ops[e]]),
            "val_accuracy": accuracy,
        }

    def _held_slots(self):
        """Slots of this round issued to a trial that is running or queued."""
        trial_ids = [t.trial_id for t in self.ongoing_trials.values()]
        trial_ids += list(self._retry_queue)
        held = set()
        for trial_id in trial_ids:
            info = self._trial_slots.get(trial_id)
            if info is not None and info[0] == self._round:
                held.add(info[1])
        return held

    def _persist(self):
        if getattr(self, "_directory", None) is not None:
            self.save()
        else:
            self._sync_history()

    # ------------------------------------------------------------------
    # The phase API used by the tuner.

    @property
    def phase(self):
        """One of "warmup", "trials", "pcdarts", "done"."""
        return self._phase

    @property
    def k(self):
        """K, the number of operations still alive on every edge."""
        return self._k

    @property
    def round(self):
        """The current (or last finished) round, 1-based; 0 before the first."""
        return self._round

    @property
    def history_path(self):
        return self._history_path

    @history_path.setter
    def history_path(self, path):
        self._history_path = None if path is None else os.fspath(path)
        self._history = None

    def next_phase(self):
        """What the tuner runs next.

        Returns one of:
            {"phase": "warmup", "epochs": L}
            {"phase": "trials", "round": r, "trial": i, "num_trials": n}
                (i = trials of round r already scored, 0 <= i < n)
            {"phase": "pcdarts", "epochs": V}
            {"phase": "done"}
        """
        if self._phase == "warmup":
            return {"phase": "warmup", "epochs": self.warmup_epochs}
        if self._phase == "trials":
            return {
                "phase": "trials",
                "round": self._round,
                "trial": int(sum(self._slot_done)),
                "num_trials": len(self._plan),
            }
        if self._phase == "pcdarts":
            return {"phase": "pcdarts", "epochs": self.v}
        return {"phase": "done"}

    @keras_tuner.synchronized
    def finish_phase(self, alpha=None):
        """Ends the warm-up or V-epoch PC-DARTS phase.

        If K > 1 this starts the next round: `O_smaller` from `alpha`
        (Algorithm 1, line 3) and its trial plan; with K == 1 the search is
        done.

        Args:
            alpha: {"normal": array [14, len(primitives)], "reduce": ...}, the
                architecture parameters after the phase (entries of abandoned
                operations are ignored). Needed to start a round, except in
                1-bit mode (O_smaller = O).
        """
        if self._phase not in ("warmup", "pcdarts"):
            raise RuntimeError(
                "finish_phase() ends a 'warmup' or 'pcdarts' phase; the search is in "
                f"phase {self._phase!r}."
            )
        if alpha is not None:
            self._alpha = self._stack_alpha(alpha)
        if self._k == 1:
            self._phase = "done"
            logging.info("BNAS search done: one operation left on every edge.")
        else:
            if alpha is None and not self.one_bit:
                raise ConfigError(
                    "finish_phase() needs `alpha` to select O_smaller for the next round. "
                    "Received: alpha=None"
                )
            self._start_round(self._alpha if not self.one_bit else None)
        self._persist()

    def _stack_alpha(self, alpha):
        shape = (NUM_EDGES, len(self.primitives))
        if not isinstance(alpha, dict) or set(alpha) != set(CELL_TYPES):
            raise bad_value("alpha", alpha, f"a dict with keys {CELL_TYPES}")
        blocks = []
        for cell_type in CELL_TYPES:
            block = np.asarray(alpha[cell_type], dtype=np.float64)
            if block.shape != shape:
                raise ConfigError(
                    f"Invalid `alpha[{cell_type!r}]`: expected shape {shape}. "
                    f"Received: shape={block.shape}"
                )
            blocks.append(block)
        stacked = np.concatenate(blocks, axis=0)
        if not np.all(np.isfinite(stacked[self._alive])):
            raise ConfigError("Invalid `alpha`: expected finite values on the alive operations.")
        return stacked

    def active_ops(self):
        """The operations still alive: {cell_type: [[names] for each edge]}."""
        return self._per_cell(lambda e: self._names(self._alive[e]))

    def selection_likelihoods(self):
        """The selection likelihood s: {cell_type: float array [14, K_total]}.

        Abandoned operations keep the value they had when abandoned.
        """
        return {
            cell_type: self._s[c * NUM_EDGES : (c + 1) * NUM_EDGES].copy()
            for c, cell_type in enumerate(CELL_TYPES)
        }

    def final_ops(self):
        """The result: {cell_type: [(op, runner_up) for each edge]}.

        `op` is the surviving operation. `runner_up` is None unless `op` is
        "none"; then it is the operation abandoned last on that edge, so that
        a derived genotype can avoid `none`.
        """
        if self._phase != "done":
            raise RuntimeError(f"The search is not done (phase {self._phase!r}).")

        def edge_result(e):
            op = self.primitives[int(np.flatnonzero(self._alive[e])[0])]
            runner_up = None
            if op == "none":
                runner_up = self.primitives[self._abandoned[e][-1]]
            return (op, runner_up)

        return self._per_cell(edge_result)

    def round_records(self):
        """The round records so far (see `bnas_tf.search.history`)."""
        return [dict(r) for kind, r in self._records if kind == "round"]

    # ------------------------------------------------------------------
    # The Keras-Tuner Oracle contract.

    def populate_space(self, trial_id):
        """Issues the next planned subnet of the round as a trial.

        The values hold one operation per edge ("normal_00".."reduce_13").
        Returns STOPPED outside the trials phase, so that `Tuner.search()`
        returns at the end of each round, and IDLE when every remaining slot
        is held by a trial that is running (parallel tuners).
        """
        if self._phase != "trials":
            return {"status": TrialStatus.STOPPED, "values": None}
        held = self._held_slots()
        for slot, done in enumerate(self._slot_done):
            if not done and slot not in held:
                break
        else:
            return {"status": TrialStatus.IDLE, "values": None}
        self._trial_slots[trial_id] = [self._round, slot]
        ops = self._plan[slot]
        values = {}
        for c, cell_type in enumerate(CELL_TYPES):
            for e in range(NUM_EDGES):
                values[hp_name(cell_type, e)] = self.primitives[ops[c * NUM_EDGES + e]]
        return {"status": TrialStatus.RUNNING, "values": values}

    def score_trial(self, trial):
        """Scores a COMPLETED trial and counts its accuracy (Algorithm 1, line 9).

        Called by `Oracle.end_trial` for COMPLETED trials only, before the
        state is saved, so counting and saving happen together. The
        `val_accuracy` is given to every sampled operation (sum and count per
        operation per edge, n_k, N); the round's last trial finishes the
        round. A NaN score is not counted (Keras-Tuner then marks the trial
        INVALID); FAILED and INVALID trials never reach here, and their slot
        is issued again by `populate_space`.
        """
        super().score_trial(trial)
        score = trial.score
        if score is None or not math.isfinite(score):
            logging.warning(
                "Trial %s has no finite %s (%r); not counted.", trial.trial_id, OBJECTIVE, score
            )
            return
        info = self._trial_slots.get(trial.trial_id)
        if self._phase != "trials" or info is None or info[0] != self._round:
            logging.warning(
                "Trial %s does not belong to the current round; not counted.", trial.trial_id
            )
            return
        slot = info[1]
        if self._slot_done[slot]:
            logging.warning("Trial %s: slot %d already counted.", trial.trial_id, slot)
            return
        ops = self._plan[slot]
        edges = np.arange(self.num_edges)
        accuracy = float(score)
        self._acc_sum[edges, ops] += accuracy
        self._acc_count[edges, ops] += 1
        self._n[edges, ops] += 1
        self._num_samples += 1
        self._slot_done[slot] = True
        # Stored compactly (oracle.json is rewritten at every trial); expanded
        # into the history record by `_expand_record`.
        self._records.append(
            ["trial", [trial.trial_id, self._round, slot, accuracy, ops.tolist()]]
        )
        if all(self._slot_done):
            self._finish_round()

    def get_state(self):
        state = super().get_state()
        state["bnas"] = {
            "version": _STATE_VERSION,
            "config": self._config(),
            "phase": self._phase,
            "k": self._k,
            "round": self._round,
            "alive": self._alive.tolist(),
            "s": self._s.tolist(),
            "smaller": self._smaller.tolist(),
            "plan": self._plan.tolist(),
            "slot_done": list(self._slot_done),
            "trial_slots": {tid: list(info) for tid, info in self._trial_slots.items()},
            "acc_sum": self._acc_sum.tolist(),
            "acc_count": self._acc_count.tolist(),
            "n": self._n.tolist(),
            "num_samples": self._num_samples,
            "abandoned": [list(ops) for ops in self._abandoned],
            "alpha": None if self._alpha is None else self._alpha.tolist(),
            "records": [[kind, record] for kind, record in self._records],
        }
        return state

    def set_state(self, state):
        if not isinstance(state, dict) or "bnas" not in state:
            raise StateError(
                "The oracle state was not written by BnasOracle (no 'bnas' entry)."
            )
        bnas = state["bnas"]
        if bnas.get("version") != _STATE_VERSION:
            raise StateError(
                f"The oracle state has version {bnas.get('version')!r}; this code reads "
                f"version {_STATE_VERSION}."
            )
        saved, current = bnas["config"], self._config()
        diff = [
            f"{key}={saved.get(key)!r} (now {current[key]!r})"
            for key in current
            if saved.get(key) != current[key]
        ]
        if diff:
            raise StateError(
                "The saved search used other settings: " + ", ".join(diff) + ". Resume "
                "with the same settings"
            )
        super().set_state(state)
        shape = (self.num_edges, len(self.primitives))
        self._phase = bnas["phase"]
        if self._phase not in PHASES:
            raise StateError(f"Unknown phase {self._phase!r}.")
        self._k = int(bnas["k"])
        self._round = int(bnas["round"])
        self._alive = np.asarray(bnas["alive"], dtype=bool).reshape(shape)
        self._s = np.asarray(bnas["s"], dtype=np.float64).reshape(shape)
        self._smaller = np.asarray(bnas["smaller"], dtype=bool).reshape(shape)
        self._plan = np.asarray(bnas["plan"], dtype=np.int64).reshape(-1, self.num_edges)
        self._slot_done = [bool(x) for x in bnas["slot_done"]]
        if len(self._slot_done) != len(self._plan):
            raise StateError("The trial plan and its progress do not match.")
        self._trial_slots = {tid: [int(r), int(s)] for tid, (r, s) in bnas["trial_slots"].items()}
        self._acc_sum = np.asarray(bnas["acc_sum"], dtype=np.float64).reshape(shape)
        self._acc_count = np.asarray(bnas["acc_count"], dtype=np.int64).reshape(shape)
        self._n = np.asarray(bnas["n"], dtype=np.int64).reshape(shape)
        self._num_samples = int(bnas["num_samples"])
        self._abandoned = [[int(op) for op in ops] for ops in bnas["abandoned"]]
        if len(self._abandoned) != self.num_edges:
            raise StateError("The abandoned operations do not cover every edge.")
        alpha = bnas["alpha"]
        self._alpha = None if alpha is None else np.asarray(alpha, dtype=np.float64).reshape(shape)
        self._records = [[kind, record] for kind, record in bnas["records"]]
        if not np.all(self._alive.sum(axis=1) == self._k):
            raise StateError(f"The alive operations do not match K={self._k}.")

    def save(self):
        """Writes oracle.json (atomically), then the missing history records."""
        statefile.write(self._get_oracle_fname(), self.get_state())
        self._sync_history()

    def _save_trial(self, trial):
        # Keras-Tuner writes trial.json in place; a crash could tear it.
        fname = os.path.join(self._get_trial_dir(trial.trial_id), "trial.json")
        statefile.write(fname, trial.get_state())

    def reload(self):
        """Reloads the trials and oracle.json; a bad file raises StateError.

        Keras-Tuner's `Oracle.reload` moves the trials that were RUNNING
        (`ongoing_trials`) to the retry queue; `create_trial` then hands the
        same trial (same id and values) out again.
        """
        fname = self._get_oracle_fname()
        advice = (
            "Start the search over with --restart=search (or in a new --model_dir); do not delete the "
            "Oracle's directory alone: it and the checkpoints belong together, and deleting one of them "
            "mixes a fresh start with a search in progress."
        )
        if not os.path.exists(fname) and "://" not in fname:
            raise StateError(f"Cannot resume the search: {fname} is missing. {advice}")
        try:
            super().reload()
        except StateError as e:
            raise StateError(f"Cannot resume the search from {fname}: {e}. {advice}") from e
        except (ValueError, KeyError, TypeError, AttributeError, RuntimeError, OSError) as e:
            raise StateError(
                f"Cannot resume the search from {fname} (or the trial_*/trial.json files "
                f"beside it): they are corrupt or were not written by this version "
                f"({type(e).__name__}: {e}). {advice}"
            ) from e
        self._sync_history()

    # ------------------------------------------------------------------
    # History.

    def _sync_history(self):
        """Appends the records that the history file does not hold yet."""
        if self._history_path is None:
            return
        if self._history is None:
            self._history = History(self._history_path)
        for kind, data in self._records:
            key = data["round"] if kind == "round" else data[0]
            if not self._history.has(kind, key):
                self._history.append(kind, self._expand_record(kind, data))
