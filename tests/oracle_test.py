"""Tests of BnasOracle, driven like a Keras-Tuner tuner with synthetic accuracies.

No model is trained: the accuracy of a sampled subnet is a fixed function of
its operations. Each search is checked round by round against `reference_round`,
an independent plain-Python transcription of Algorithm 1 and Eqs. 7-11 of the
paper (it does not call bnas_tf.search.abandon).
"""

import json
import math
import os

import keras_tuner
import numpy as np
import pytest
from keras_tuner.src.engine import trial as trial_module

from bnas_tf.errors import ConfigError
from bnas_tf.errors import StateError
from bnas_tf.genotypes import CELL_TYPES
from bnas_tf.genotypes import NUM_EDGES
from bnas_tf.genotypes import PRIMITIVES
from bnas_tf.search.history import History
from bnas_tf.search.oracle import BnasOracle

TrialStatus = trial_module.TrialStatus
E = 2 * NUM_EDGES  # normal edges 0..13, then reduce edges 14..27
KT = len(PRIMITIVES)

# ----------------------------------------------------------------------------
# Synthetic world.

# A fixed "quality" of every op on every edge; a subnet's accuracy is the mean
# quality of its ops, plus a small interaction so that accuracies are not additive.
_QUALITY = np.random.default_rng(123).uniform(0.0, 1.0, size=(E, KT))


def accuracy_of(values):
    ops = ops_of(values)
    base = float(np.mean(_QUALITY[np.arange(E), ops]))
    return 0.5 + 0.4 * base + 0.05 * math.sin(float(np.sum(ops)))


def ops_of(values):
    """Trial values -> op index per stacked edge."""
    return [
        PRIMITIVES.index(values[f"{cell}_{e:02d}"]) for cell in CELL_TYPES for e in range(NUM_EDGES)
    ]


def alpha_for(round_number):
    """The alpha a PC-DARTS phase would hand over before round `round_number`."""
    rng = np.random.default_rng([77, round_number])
    return {cell: rng.normal(size=(NUM_EDGES, KT)) for cell in CELL_TYPES}


def stacked(alpha):
    return np.concatenate([alpha[cell] for cell in CELL_TYPES], axis=0)


def make_oracle(tmp_path, project="project", history=True, **kwargs):
    oracle = BnasOracle(**kwargs)
    oracle._set_project_dir(str(tmp_path), project)  # what BaseTuner.__init__ does
    oracle.verbose = 0
    if history:
        oracle.history_path = os.path.join(str(tmp_path), project, "search_history.jsonl")
    return oracle


def run_one_trial(oracle, tuner_id="tuner0", acc_fn=accuracy_of, status=TrialStatus.COMPLETED):
    """One trial the way BaseTuner.search runs it. Returns (trial, accuracy)."""
    trial = oracle.create_trial(tuner_id)
    assert trial.status == TrialStatus.RUNNING
    acc = acc_fn(trial.hyperparameters.values)
    if status == TrialStatus.COMPLETED:
        oracle.update_trial(trial.trial_id, {"val_accuracy": acc})
    trial.status = status
    oracle.end_trial(trial)
    return trial, acc


def drive(oracle, log, stop=None):
    """Runs the search to the end (or until stop(oracle) is true).

    `log` collects, per round, the alpha that started it and the (ops, acc)
    of its scored trials, for the reference.
    """
    while True:
        if stop is not None and stop(oracle):
            return
        phase = oracle.next_phase()
        if phase["phase"] == "done":
            return
        if phase["phase"] in ("warmup", "pcdarts"):
            alpha = alpha_for(oracle.round + 1)
            oracle.finish_phase(alpha)
            if oracle.phase == "trials":
                log.append({"alpha": stacked(alpha), "trials": []})
        else:
            if not log:  # 1-bit: the first round starts in the constructor
                log.append({"alpha": None, "trials": []})
            trial, acc = run_one_trial(oracle)
            log[-1]["trials"].append((ops_of(trial.hyperparameters.values), acc))


# ----------------------------------------------------------------------------
# Independent reference: Algorithm 1 / Eqs. 7-11, one edge at a time.


def reference_round(ref, alpha, trials, T, one_bit, delta, ucb=None, scale=100.0):
    """Applies one round of Algorithm 1 to `ref` and returns what it abandons.

    ref: {"alive": [set of op indices] per edge, "s": [dict op -> s] per edge,
          "n": [dict op -> count] per edge, "N": int}
    alpha: [E][KT] or None (1-bit); trials: [(ops per edge, accuracy)].
    ucb: Eq. 10 on or off (None: one_bit); scale: the unit of Eq. 7 (100: percent).
    """
    ucb = one_bit if ucb is None else ucb
    result = {"abandoned": [], "s": [], "smaller": []}
    ref["N"] += len(trials)  # N: every trial samples one op on every edge
    for e in range(E):
        ops = sorted(ref["alive"][e])
        K = len(ops)
        half = math.ceil(K / 2)
        # Line 3: the ceil(K/2) ops with the smallest alpha (1-bit: O_smaller = O).
        if one_bit:
            smaller = list(ops)
        else:
            smaller = sorted(ops, key=lambda k: (alpha[e][k], k))[:half]
        # Lines 4-10: T repetitions of ceil(K/2) samples without replacement.
        accs = {k: [] for k in smaller}
        for t in range(T):
            repetition = [sampled[e] for sampled, _ in trials[t * half:(t + 1) * half]]
            assert len(set(repetition)) == half, f"edge {e}: repetition {t} repeats an op"
        for sampled, acc in trials:
            assert sampled[e] in accs, f"edge {e}: op {sampled[e]} is not in O_smaller"
            accs[sampled[e]].append(acc)
            ref["n"][e][sampled[e]] = ref["n"][e].get(sampled[e], 0) + 1
        if not one_bit:
            assert all(len(a) == T for a in accs.values()), f"edge {e}: {accs}"
        scored = [k for k in smaller if accs[k]]
        # Eq. 7 over the sampled ops, in the unit `scale`.
        ybar = {k: scale * sum(accs[k]) / len(accs[k]) for k in scored}
        top = max(ybar.values())
        z = sum(math.exp(y - top) for y in ybar.values())
        s_smaller = {k: math.exp(ybar[k] - top) / z for k in scored}
        # Eq. 8: the mean over the scored ops (1/ceil(K/2) in the normal search).
        s_larger = 0.5 * (max(s_smaller.values()) + sum(s_smaller.values()) / len(scored))
        # Eq. 9.
        s = {}
        for k in ops:
            q = 1.0 if k in s_smaller else 0.0
            s[k] = 0.5 * ref["s"][e][k] + q * s_smaller.get(k, 0.0) + (1 - q) * s_larger
        # Eq. 10, n_k and N cumulative; a never-sampled op is never abandoned.
        if ucb:
            for k in ops:
                n = ref["n"][e].get(k, 0)
                s[k] += delta * math.sqrt(2 * math.log(ref["N"]) / n) if n else math.inf
        # Eq. 11, ties to the lower index.
        worst = min(ops, key=lambda k: (s[k], k))
        ref["s"][e].update(s)
        ref["alive"][e].discard(worst)
        result["abandoned"].append(worst)
        result["s"].append(s)
        result["smaller"].append(smaller)
    return result


def new_reference(k):
    return {
        "alive": [set(range(k)) for _ in range(E)],
        "s": [{j: 0.0 for j in range(KT)} for _ in range(E)],
        "n": [{} for _ in range(E)],
        "N": 0,
    }


def check_against_reference(oracle, log, T, one_bit, delta, k=8, ucb=None, scale=100.0):
    records = oracle.round_records()
    assert len(records) == len(log)
    ref = new_reference(k)
    for record, round_log in zip(records, log):
        K = len(ref["alive"][0])
        assert record["k"] == K
        num_trials = T * math.ceil(K / 2)
        assert record["num_trials"] == len(round_log["trials"]) == num_trials
        expected = reference_round(
            ref, round_log["alpha"], round_log["trials"], T, one_bit, delta, ucb, scale
        )
        for c, cell in enumerate(CELL_TYPES):
            for e in range(NUM_EDGES):
                row = c * NUM_EDGES + e
                assert record["abandoned"][cell][e] == PRIMITIVES[expected["abandoned"][row]]
                assert record["o_smaller"][cell][e] == [
                    PRIMITIVES[j] for j in sorted(expected["smaller"][row])
                ]
                got = record["likelihood"][cell][e]
                want = {PRIMITIVES[j]: v for j, v in expected["s"][row].items()}
                assert got.keys() == want.keys()
                for name in want:
                    assert got[name] == pytest.approx(want[name], rel=1e-12, abs=1e-12)
                assert record["ops_left"][cell][e] == [
                    PRIMITIVES[j] for j in sorted(ref["alive"][row])
                ]
    return ref


# ----------------------------------------------------------------------------
# Full searches.


def test_normal_search_matches_reference(tmp_path):
    oracle = make_oracle(tmp_path, k=8, t=3, v=1, warmup_epochs=5, seed=3)
    assert oracle.next_phase() == {"phase": "warmup", "epochs": 5}
    phases, ks = [], [oracle.k]
    log = []

    def stop(o):
        phases.append(o.next_phase()["phase"])
        if o.k != ks[-1]:
            ks.append(o.k)
        return False

    drive(oracle, log, stop)
    # K goes 8 -> 1 in 7 rounds; trials per round T * ceil(K/2) = 3 * (4,4,3,3,2,2,1).
    assert ks == [8, 7, 6, 5, 4, 3, 2, 1]
    assert oracle.round == 7
    assert [len(r["trials"]) for r in log] == [12, 12, 9, 9, 6, 6, 3]
    assert oracle.next_phase() == {"phase": "done"}
    # Phase order: warmup, then (trials..., pcdarts) x 7, then done.
    collapsed = [p for i, p in enumerate(phases) if i == 0 or phases[i - 1] != p]
    assert collapsed == ["warmup"] + ["trials", "pcdarts"] * 7 + ["done"]
    ref = check_against_reference(oracle, log, T=3, one_bit=False, delta=2.0)
    final = oracle.final_ops()
    for c, cell in enumerate(CELL_TYPES):
        assert len(final[cell]) == NUM_EDGES
        for e, (op, runner_up) in enumerate(final[cell]):
            (survivor,) = ref["alive"][c * NUM_EDGES + e]
            assert op == PRIMITIVES[survivor]
            assert (runner_up is None) == (op != "none")
    assert oracle.active_ops()["normal"][0] == [final["normal"][0][0]]


def test_one_bit_search_matches_reference(tmp_path):
    oracle = make_oracle(tmp_path, k=8, t=2, v=1, one_bit=True, delta=2.0, seed=11)
    # No warm-up: straight to round 1, O_smaller = O, T * ceil(K/2) = 8 trials.
    assert oracle.next_phase() == {"phase": "trials", "round": 1, "trial": 0, "num_trials": 8}
    log = []
    drive(oracle, log)
    assert [len(r["trials"]) for r in log] == [8, 8, 6, 6, 4, 4, 2]
    assert oracle.k == 1 and oracle.phase == "done"
    ref = check_against_reference(oracle, log, T=2, one_bit=True, delta=2.0)
    records = oracle.round_records()
    # O_smaller = O, but each repetition samples ceil(K/2) of it: counts differ.
    counts = [ref["n"][e].get(k, 0) for e in range(E) for k in range(8)]
    assert min(counts) < max(counts)
    # Eq. 10 by hand for round 1: N = 8, normal edge 0 sampled n_k times (0 gives +inf).
    n0 = np.zeros(KT, dtype=int)
    for ops, _ in log[0]["trials"]:
        n0[ops[0]] += 1
    for name, value in records[0]["ucb_bonus"]["normal"][0].items():
        n = n0[PRIMITIVES.index(name)]
        assert value == (pytest.approx(2 * math.sqrt(2 * math.log(8) / n), rel=1e-12) if n else math.inf)
    assert sum(math.isinf(v) for r in records[:1] for v in r["ucb_bonus"]["normal"][0].values()) == (
        np.sum(n0[:8] == 0)
    )


def test_every_smaller_op_gets_exactly_t_accuracies(tmp_path):
    oracle = make_oracle(tmp_path, k=6, t=2, seed=5, history=False)
    oracle.finish_phase(alpha_for(1))
    counts = np.zeros((E, KT), dtype=int)
    for _ in range(oracle.next_phase()["num_trials"]):
        trial, _ = run_one_trial(oracle)
        counts[np.arange(E), ops_of(trial.hyperparameters.values)] += 1
    alpha = stacked(alpha_for(1))
    for e in range(E):
        # K = 6 -> O_smaller = the 3 smallest alphas among ops 0..5.
        smaller = sorted(range(6), key=lambda j: (alpha[e, j], j))[:3]
        assert counts[e, smaller].tolist() == [2, 2, 2]
        assert counts[e].sum() == 6
    assert oracle.phase == "pcdarts" and oracle.k == 5


def _abandon_orders(runs):
    return [
        [PRIMITIVES.index(r["abandoned"][cell][e]) for cell in CELL_TYPES for e in range(NUM_EDGES)]
        for r in runs
    ]


@pytest.mark.parametrize("one_bit", [True, False])
def test_ucb_changes_what_whole_searches_abandon(tmp_path, one_bit):
    # Whole searches (K 8 -> 1, T = 3) on the synthetic accuracies, with and
    # without Eq. 10; each is checked against the reference. UCB keeps the
    # rarely sampled ops and abandons others: the orders differ on many edges.
    # Without binary activations this is BNAS-dagger of Table 2 (`ucb=True`).
    orders = {}
    for ucb in (False, True):
        oracle = make_oracle(
            tmp_path, project=f"ucb{ucb}{one_bit}", k=8, t=3, one_bit=one_bit, ucb=ucb, seed=2
        )
        log = []
        drive(oracle, log)
        check_against_reference(oracle, log, T=3, one_bit=one_bit, delta=2.0, ucb=ucb)
        assert ("ucb_bonus" in oracle.round_records()[0]) == ucb
        orders[ucb] = _abandon_orders(oracle.round_records())
    differing = sum(
        a != b for r0, r1 in zip(orders[False], orders[True]) for a, b in zip(r0, r1)
    )
    assert differing >= (E if one_bit else 1), differing


def test_accuracy_unit_changes_what_a_search_abandons(tmp_path):
    # The same whole search in percent (the default) and in fractions: the
    # softmax of Eq. 7 differs, and so do abandoned ops; both match the reference.
    orders = {}
    for unit, scale in (("percent", 100.0), ("fraction", 1.0)):
        oracle = make_oracle(tmp_path, project=unit, k=8, t=3, seed=6, accuracy_unit=unit)
        log = []
        drive(oracle, log)
        check_against_reference(oracle, log, T=3, one_bit=False, delta=2.0, scale=scale)
        orders[unit] = _abandon_orders(oracle.round_records())
    assert orders["percent"] != orders["fraction"]
    assert BnasOracle().accuracy_unit == "percent"


def test_final_ops_runner_up_when_none_survives(tmp_path):
    # Only normal edge 0 matters to the accuracy: 1 with `none` there, else 0.
    # alpha = (0, 1, ..., 7) on every edge keeps `none` in O_smaller. Edge 0:
    #   round 1 (K = 3): O_smaller = {none, max_pool}; ybar = (1, 0) ->
    #     Eq. 7: s_smaller = (e/(1+e), 1/(1+e)) = (0.7311, 0.2689),
    #     Eq. 8: s_larger(avg_pool) = 1/2 (0.7311 + 1/2) = 0.6155 -> max_pool abandoned;
    #   round 2 (K = 2): O_smaller = {none}; Eq. 7/8 give 1 to both ops, so
    #     s = (0.7311/2 + 1, 0.6155/2 + 1) = (1.3655, 1.3078) -> avg_pool abandoned.
    # `none` survives; the runner-up is avg_pool_3x3, abandoned last.
    def acc_fn(values):
        return 1.0 if values["normal_00"] == "none" else 0.0

    alpha = {cell: np.tile(np.arange(KT, dtype=float), (NUM_EDGES, 1)) for cell in CELL_TYPES}
    oracle = make_oracle(tmp_path, k=3, t=1, history=False, accuracy_unit="fraction")
    while oracle.phase != "done":
        if oracle.phase == "trials":
            run_one_trial(oracle, acc_fn=acc_fn)
        else:
            oracle.finish_phase(alpha)
    final = oracle.final_ops()
    assert final["normal"][0] == ("none", "avg_pool_3x3")
    last = oracle.round_records()[-1]["abandoned"]
    for cell in CELL_TYPES:
        for e in range(NUM_EDGES):
            op, runner_up = final[cell][e]
            assert runner_up == (last[cell][e] if op == "none" else None)


# ----------------------------------------------------------------------------
# Keras-Tuner flow details.


def test_failed_and_nan_trials_are_not_counted_and_reissued(tmp_path):
    oracle = make_oracle(tmp_path, k=4, t=1, history=True)
    oracle.finish_phase(alpha_for(1))
    first = oracle.create_trial("tuner0")
    values = dict(first.hyperparameters.values)
    first.status = TrialStatus.FAILED
    oracle.end_trial(first)
    assert oracle.next_phase()["trial"] == 0
    # The same planned slot is issued again, under a new trial id.
    second = oracle.create_trial("tuner0")
    assert second.trial_id != first.trial_id
    assert second.hyperparameters.values == values
    # NaN accuracy: Keras-Tuner marks it INVALID (then FAILED, no retries left).
    oracle.update_trial(second.trial_id, {"val_accuracy": float("nan")})
    second.status = TrialStatus.COMPLETED
    oracle.end_trial(second)
    assert oracle.get_trial(second.trial_id).status == TrialStatus.FAILED
    assert oracle.next_phase()["trial"] == 0
    third, acc = run_one_trial(oracle)
    assert third.hyperparameters.values == values
    assert oracle.next_phase()["trial"] == 1
    state = oracle.get_state()["bnas"]
    assert state["num_samples"] == 1
    assert sum(map(sum, state["acc_count"])) == E
    trials = History(oracle.history_path).records("trial")
    assert [r["trial_id"] for r in trials] == [third.trial_id]
    assert trials[0]["val_accuracy"] == acc


def test_invalid_trial_is_retried_with_the_same_id(tmp_path):
    oracle = make_oracle(tmp_path, k=4, t=1, history=False, max_retries_per_trial=1)
    oracle.finish_phase(alpha_for(1))
    first = oracle.create_trial("tuner0")
    first.status = TrialStatus.INVALID
    oracle.end_trial(first)
    retry = oracle.create_trial("tuner0")
    assert retry.trial_id == first.trial_id
    oracle.update_trial(retry.trial_id, {"val_accuracy": 0.7})
    retry.status = TrialStatus.COMPLETED
    oracle.end_trial(retry)
    assert oracle.get_state()["bnas"]["num_samples"] == 1
    # The next trial is the next slot.
    assert oracle.next_phase()["trial"] == 1


def test_populate_space_stops_outside_the_trials_phase(tmp_path):
    oracle = make_oracle(tmp_path, k=3, t=1, history=False)
    assert oracle.create_trial("tuner0").status == TrialStatus.STOPPED
    oracle.finish_phase(alpha_for(1))  # K = 3, T = 1: 2 trials
    trial = oracle.create_trial("tuner0")
    assert trial.status == TrialStatus.RUNNING
    other = oracle.create_trial("tuner1")
    assert other.status == TrialStatus.RUNNING
    assert other.hyperparameters.values != trial.hyperparameters.values
    # A third tuner finds every remaining slot held: IDLE.
    assert oracle.create_trial("tuner2").status == TrialStatus.IDLE
    # The first tuner asking again gets its ongoing trial (multi-worker rule).
    assert oracle.create_trial("tuner0") is trial


def test_parallel_tuners_share_a_round(tmp_path):
    oracle = make_oracle(tmp_path, k=4, t=1, history=False)
    oracle.finish_phase(alpha_for(1))
    a = oracle.create_trial("a")
    b = oracle.create_trial("b")
    assert a.hyperparameters.values != b.hyperparameters.values
    for trial in (b, a):
        oracle.update_trial(trial.trial_id, {"val_accuracy": 0.5})
        trial.status = TrialStatus.COMPLETED
        oracle.end_trial(trial)
    assert oracle.phase == "pcdarts"


def test_phase_errors(tmp_path):
    oracle = make_oracle(tmp_path, k=3, t=1, history=False)
    with pytest.raises(ConfigError, match="alpha"):
        oracle.finish_phase()
    with pytest.raises(ConfigError, match="shape"):
        oracle.finish_phase({"normal": np.zeros((14, 7)), "reduce": np.zeros((14, 8))})
    with pytest.raises(ConfigError, match="alpha"):
        oracle.finish_phase({"normal": np.zeros((14, 8))})
    with pytest.raises(RuntimeError, match="not done"):
        oracle.final_ops()
    oracle.finish_phase(alpha_for(1))
    with pytest.raises(RuntimeError, match="trials"):
        oracle.finish_phase(alpha_for(2))


# ----------------------------------------------------------------------------
# State, reload, history.


def _bnas_state(oracle):
    return json.loads(json.dumps(oracle.get_state()["bnas"]))


def test_get_state_set_state_round_trip(tmp_path):
    oracle = make_oracle(tmp_path, k=5, t=2, seed=9, history=False)
    drive(oracle, [], stop=lambda o: o.round == 2 and o.next_phase().get("trial") == 2)
    running = oracle.create_trial("tuner0")
    state = json.loads(json.dumps(oracle.get_state()))  # plain JSON only

    copy = BnasOracle(k=5, t=2, seed=9)
    copy._set_project_dir(str(tmp_path), "copy")
    copy.verbose = 0
    copy.trials = {
        tid: trial_module.Trial.from_state(t.get_state()) for tid, t in oracle.trials.items()
    }
    copy.set_state(state)
    restored = json.loads(json.dumps(copy.get_state()))
    # Keras-Tuner keeps `tried_so_far` as a set: compare it as one.
    assert set(restored.pop("tried_so_far")) == set(state.pop("tried_so_far"))
    assert restored == state
    assert copy.next_phase() == oracle.next_phase()
    assert copy.active_ops() == oracle.active_ops()
    assert copy.k == oracle.k == 4 and copy.round == 2
    for cell in CELL_TYPES:
        np.testing.assert_array_equal(
            copy.selection_likelihoods()[cell], oracle.selection_likelihoods()[cell]
        )
    assert copy.create_trial("tuner0").trial_id == running.trial_id


@pytest.mark.parametrize("one_bit", [False, True])
@pytest.mark.parametrize("metrics_reported", [False, True])
def test_reload_mid_round_continues_identically(tmp_path, one_bit, metrics_reported):
    kwargs = dict(k=5, t=2, seed=4, one_bit=one_bit)
    # Uninterrupted run.
    full = make_oracle(tmp_path / "full", **kwargs)
    drive(full, [])

    # Interrupted run: stop in round 2 with a RUNNING trial and drop the object.
    first = make_oracle(tmp_path / "cut", **kwargs)
    drive(first, [], stop=lambda o: o.round == 2 and o.next_phase().get("trial") == 1)
    running = first.create_trial("tuner0")
    values = dict(running.hyperparameters.values)
    if metrics_reported:  # died between update_trial and end_trial
        first.update_trial(running.trial_id, {"val_accuracy": accuracy_of(values)})
    del first

    resumed = make_oracle(tmp_path / "cut", **kwargs)
    resumed.reload()
    assert resumed.next_phase()["trial"] == 1
    again = resumed.create_trial("tuner0")
    assert again.trial_id == running.trial_id
    assert again.hyperparameters.values == values
    resumed.update_trial(again.trial_id, {"val_accuracy": accuracy_of(values)})
    again.status = TrialStatus.COMPLETED
    resumed.end_trial(again)
    drive(resumed, [])

    assert _bnas_state(resumed) == _bnas_state(full)
    assert resumed.final_ops() == full.final_ops()
    with open(resumed.history_path) as f:
        resumed_lines = f.read().splitlines()
    with open(full.history_path) as f:
        full_lines = f.read().splitlines()
    assert resumed_lines == full_lines
    ids = [json.loads(line).get("trial_id") for line in resumed_lines]
    trial_ids = [i for i in ids if i is not None]
    assert len(trial_ids) == len(set(trial_ids))  # none counted twice


def test_reload_between_phases(tmp_path):
    # Saved right after a round's abandoning (phase pcdarts) -> resumes there.
    oracle = make_oracle(tmp_path, k=3, t=1, seed=1)
    drive(oracle, [], stop=lambda o: o.phase == "pcdarts")
    resumed = make_oracle(tmp_path, k=3, t=1, seed=1)
    resumed.reload()
    assert resumed.next_phase() == {"phase": "pcdarts", "epochs": 1}
    assert resumed.k == 2 and resumed.round == 1
    assert resumed.active_ops() == oracle.active_ops()


def test_search_through_a_keras_tuner_tuner_with_a_crash(tmp_path):
    """The real BaseTuner loop: search() per round, a crash mid-trial, reload."""

    class Crash(BaseException):
        pass

    class SyntheticTuner(keras_tuner.engine.base_tuner.BaseTuner):
        crash_at = None

        def run_trial(self, trial, *args, **kwargs):
            if trial.trial_id == self.crash_at:
                type(self).crash_at = None
                raise Crash()
            return {"val_accuracy": accuracy_of(trial.hyperparameters.values)}

    def run(directory, crash_at=None):
        SyntheticTuner.crash_at = crash_at
        while True:
            oracle = BnasOracle(k=4, t=2, seed=2, history_path=os.path.join(directory, "h"))
            tuner = SyntheticTuner(oracle, directory=directory, project_name="p")
            try:
                while oracle.next_phase()["phase"] != "done":
                    if oracle.phase == "trials":
                        tuner.search(verbose=0)
                    else:
                        oracle.finish_phase(alpha_for(oracle.round + 1))
                return oracle
            except Crash:
                continue  # a new process: new objects, same directory

    full = run(str(tmp_path / "full"))
    cut = run(str(tmp_path / "cut"), crash_at="0005")
    assert _bnas_state(cut) == _bnas_state(full)
    assert History(os.path.join(str(tmp_path / "cut"), "h")).records() == History(
        os.path.join(str(tmp_path / "full"), "h")
    ).records()


def test_corrupt_oracle_file_raises_state_error(tmp_path):
    oracle = make_oracle(tmp_path, k=3, t=1, history=False)
    oracle.finish_phase(alpha_for(1))
    fname = os.path.join(str(tmp_path), "project", "oracle.json")
    with open(fname, "w") as f:
        f.write('{"ongoing_trials": {}, "bnas": {"k": ')  # torn write
    resumed = make_oracle(tmp_path, k=3, t=1, history=False)
    with pytest.raises(StateError, match="oracle.json") as info:
        resumed.reload()
    assert "--restart=search" in str(info.value)  # not "delete ...", which mixed a fresh start with the old search

    with open(fname, "w") as f:
        json.dump({"ongoing_trials": {}}, f)  # valid JSON, not a BNAS state
    with pytest.raises(StateError, match="BnasOracle"):
        make_oracle(tmp_path, k=3, t=1, history=False).reload()

    os.remove(fname)
    with pytest.raises(StateError, match="missing"):
        make_oracle(tmp_path, k=3, t=1, history=False).reload()


def test_tuner_file_is_written_atomically_and_a_torn_one_does_not_stop_a_resume(tmp_path):
    """A search killed while Keras-Tuner wrote tuner0.json in place left it empty, and the
    resume died in json.loads. BnasTuner writes it through a rename, and reads a torn one
    as the empty state it holds; the Oracle's state comes back whole."""
    from bnas_tf.search.tuner import BnasTuner

    oracle = make_oracle(tmp_path, k=3, t=1, history=False)
    tuner = BnasTuner(oracle, None, directory=str(tmp_path), project_name="project")
    oracle.finish_phase(alpha_for(1))
    tuner.save()
    fname = os.path.join(str(tmp_path), "project", "tuner0.json")
    with open(fname) as f:
        assert json.load(f) == {}
    assert not os.path.exists(fname + ".tmp")
    expected = _bnas_state(oracle)
    open(fname, "w").close()  # killed mid-write, as Keras-Tuner's own save could be
    resumed = BnasTuner(make_oracle(tmp_path, k=3, t=1, history=False), None, directory=str(tmp_path),
                        project_name="project")
    assert _bnas_state(resumed.oracle) == expected
    with open(fname) as f:
        assert json.load(f) == {}


def test_incompatible_oracle_file_raises_state_error(tmp_path):
    oracle = make_oracle(tmp_path, k=3, t=1, history=False)
    oracle.finish_phase(alpha_for(1))
    other = make_oracle(tmp_path, k=3, t=2, history=False)
    with pytest.raises(StateError, match=r"t=1 \(now 2\)"):
        other.reload()


def test_history_is_idempotent(tmp_path):
    path = tmp_path / "search_history.jsonl"
    history = History(path)
    assert history.append("round", {"round": 1, "k": 8})
    assert history.append("trial", {"trial_id": "0000", "round": 1})
    assert not history.append("round", {"round": 1, "k": 8})
    # Reopened (a restart): the keys are known, nothing is written twice.
    again = History(tmp_path)  # a directory -> search_history.jsonl inside
    assert not again.append("trial", {"trial_id": "0000", "round": 1})
    assert again.append("trial", {"trial_id": "0001", "round": 1})
    assert len(path.read_text().splitlines()) == 3
    # A torn last line is dropped; a corrupt line elsewhere is an error.
    with open(path, "a") as f:
        f.write('{"record": "trial", "tri')
    torn = History(path)
    assert len(torn.records()) == 3
    assert torn.append("trial", {"trial_id": "0002", "round": 1})
    path.write_text("not json\n" + path.read_text())
    with pytest.raises(StateError, match="search_history"):
        History(path)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"k": 1}, "k"),
        ({"k": 9}, "k"),
        ({"k": 3.0}, "k"),
        ({"t": 0}, "t"),
        ({"v": -1}, "v"),
        ({"warmup_epochs": -1}, "warmup_epochs"),
        ({"delta": -1.0}, "delta"),
        ({"delta": float("nan")}, "delta"),
        ({"seed": -1}, "seed"),
        ({"one_bit": "yes"}, "one_bit"),
        ({"primitives": ("none",)}, "primitives"),
        ({"primitives": ("a", "a")}, "primitives"),
        ({"max_trials": 10}, "max_trials"),
        ({"objective": "loss"}, "objective"),
    ],
)
def test_bad_constructor_arguments(kwargs, name):
    with pytest.raises(ConfigError, match=f"Received: {name}="):
        BnasOracle(**kwargs)


def test_hyperparameters_are_declared():
    oracle = BnasOracle()
    names = [hp.name for hp in oracle.get_space().space]
    assert names == [f"normal_{e:02d}" for e in range(14)] + [f"reduce_{e:02d}" for e in range(14)]
    assert list(oracle.get_space().space[0].values) == list(PRIMITIVES)
    assert oracle.objective.name == "val_accuracy" and oracle.objective.direction == "max"
    assert oracle.max_trials is None
