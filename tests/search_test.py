"""Searcher: checkpoints hold the whole search state; config validation."""

import collections
import time

import numpy as np
import pytest
import tensorflow as tf

from bnas_tf import genotypes as gt
from bnas_tf.errors import ConfigError
from bnas_tf.search import pcdarts


def _config(**kwargs):
    options = dict(dataset="digits", init_channels=4, layers=2, reduction_cells=(1,), partial_channels=2,
                   batch_size=32, trial_batch_size=32, steps_per_epoch=2, heldout_size=64, binarization="pcnn")
    options.update(kwargs)
    return pcdarts.SearchConfig(**options)


def test_checkpoint_restores_every_variable(tmp_path):
    with pcdarts.search_graph_options():
        first = pcdarts.Searcher(_config(), str(tmp_path), total_units=4)
        # Two operations per edge while stepping (a smaller graph to trace), then another
        # alive set, which the checkpoint must bring back through the mask.
        first.model.set_alive({t: [["max_pool_3x3", "sep_conv_3x3"]] * 14 for t in gt.CELL_TYPES})
        first.search_epoch(True, "epoch")
        assert first.seconds["trace"] > 0 and first.seconds["checkpoint"] == 0
        alive = {t: [list(gt.PRIMITIVES[:3])] * 14 for t in gt.CELL_TYPES}
        first.model.set_alive(alive)
        first.save()
        assert first.seconds["checkpoint"] > 0
        second = pcdarts.Searcher(_config(), str(tmp_path), total_units=4)
        assert second.restore() == 1
    assert len(first.model.variables) == len(second.model.variables) > 100
    for a, b in zip(first.model.variables, second.model.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
    for a, b in zip(first.w_opt.variables, second.w_opt.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert second.model.alive == first.model.alive  # the alive sets come back with the mask


def test_only_the_first_call_of_a_traced_step_counts_as_tracing():
    seconds = collections.Counter()
    calls = []

    def step(x):
        calls.append(x)
        time.sleep(0.05 if len(calls) == 1 else 0.2)
        return x + 1

    fn = pcdarts._TimedFirstCall(step, "search", seconds)
    assert [fn(1), fn(2), fn(3)] == [2, 3, 4] and calls == [1, 2, 3]
    assert 0.05 <= seconds["trace"] < 0.2  # the first call only


def test_cosine_schedule():
    assert pcdarts.cosine_learning_rate(0, 10, 0.025, 0.0) == pytest.approx(0.025)
    assert pcdarts.cosine_learning_rate(5, 10, 0.025, 0.0) == pytest.approx(0.0125)
    assert pcdarts.cosine_learning_rate(10, 10, 0.025, 0.001) == pytest.approx(0.001)


@pytest.mark.parametrize("field, value", [("batch_size", 0), ("learning_rate", -1.0), ("partial_channels", 3),
                                          ("weight_decay", -0.1)])
def test_bad_config(field, value):
    with pytest.raises(ConfigError, match=field):
        _config(**{field: value}).validate()


def test_held_out_evaluation_counts_every_example_and_traces_once(tmp_path, monkeypatch):
    # A partial last batch (72 = 2 x 32 + 8) must not trace the graph a second time.
    searcher = pcdarts.Searcher(_config(heldout_size=72), str(tmp_path), total_units=4)
    splits, model = searcher.splits, searcher.model
    assert splits.heldout_size % splits.batch_size and splits.heldout_steps == 3
    rng = np.random.RandomState(0)
    choice = model.choice({t: [gt.PRIMITIVES[i] for i in rng.randint(1, 8, size=14)] for t in gt.CELL_TYPES})

    def reference(choice=None):  # the model called eagerly on each batch, counted here
        correct = total = 0
        for x, y in splits.heldout:
            # A sampled path normalises with the held-out batch's statistics, the supernet with its moving ones.
            pred = np.argmax(model(x, training=choice is not None, choice=choice).numpy(), -1)
            correct += int(np.sum(pred == y.numpy()))
            total += len(y)
        assert total == splits.heldout_size
        return correct / total

    with pcdarts.search_graph_options():
        monkeypatch.setattr(pcdarts, "EAGER_EVAL_MAX_BATCHES", 3)
        eager = searcher.evaluate(choice)
        assert ("eval_path", choice) not in searcher._fns
        monkeypatch.setattr(pcdarts, "EAGER_EVAL_MAX_BATCHES", 2)
        traced = searcher.evaluate(choice)
        supernet = searcher.evaluate()
    assert eager == pytest.approx(reference(choice)) and traced == pytest.approx(eager)
    assert supernet == pytest.approx(reference())
    for key in (("eval_path", choice), ("eval", searcher._alive_key())):
        assert searcher._fns[key].function.experimental_get_tracing_count() == 1
    # The moving statistics do not enter a path's score.
    for variable in searcher._bn_stats:
        variable.assign(np.full(variable.shape, 7.0 if "variance" in variable.name else -3.0, "float32"))
    with pcdarts.search_graph_options():
        assert searcher.evaluate(choice) == pytest.approx(traced)


def test_search_iterators_run_without_tf_data_autotuning(tmp_path, monkeypatch):
    # Deleting an autotuned iterator waits for its autotuning thread, seconds per epoch
    # unit on a busy 2-core machine (BUILD.md): every pipeline the loop iterates has it off.
    searcher = pcdarts.Searcher(_config(), str(tmp_path), total_units=4)
    seen = []
    distribute = searcher.strategy.experimental_distribute_dataset

    def spy(dataset, *args, **kwargs):
        seen.append(dataset.options().autotune.enabled)
        return distribute(dataset, *args, **kwargs)

    monkeypatch.setattr(searcher.strategy, "experimental_distribute_dataset", spy)
    choice = searcher.model.choice({t: ["skip_connect"] * 14 for t in gt.CELL_TYPES})
    with pcdarts.search_graph_options():
        searcher.search_epoch(False, "epoch")
        searcher.trial_epoch({t: ["skip_connect"] * 14 for t in gt.CELL_TYPES}, "trial")
        searcher.evaluate(choice)
    assert seen == [False] * 4  # the epoch, the trial's epoch and its held-out pass, the held-out pass


def test_dropped_trial_graphs_are_freed(tmp_path, monkeypatch):
    # tf.custom_gradient (the STE quantizers of the PCNN preprocessing convolutions) keeps
    # each traced graph alive from TensorFlow's global gradient registry unless the
    # searcher unregisters it; each step runs by name once traced, its graph freed
    # (`tracing.GraphFreeFunction`), so no trial's graph outlives its trace.
    import gc
    import weakref

    from bnas_tf import tracing

    searcher = pcdarts.Searcher(_config(), str(tmp_path), total_units=4)
    rng = np.random.RandomState(0)
    graphs = []
    release = tracing.release_gradients
    monkeypatch.setattr(tracing, "release_gradients", lambda g: (graphs.append(weakref.ref(g)), release(g))[1])
    with pcdarts.search_graph_options():
        for _ in range(3):
            names = {t: [gt.PRIMITIVES[i] for i in rng.randint(1, 8, size=14)] for t in gt.CELL_TYPES}
            searcher.trial_epoch(names, "trial")
    gc.collect()
    assert len(graphs) == 3 and [g() is None for g in graphs] == [True, True, True]


def _reach(start, nexts):
    """The graph operations reachable from `start` by `nexts` (an op's neighbours), start included."""
    seen, todo = set(), list(start)
    while todo:
        op = todo.pop()
        if op not in seen:
            seen.add(op)
            todo += nexts(op)
    return seen


def test_every_call_of_a_search_step_is_connected_to_the_scan_marker(tmp_path):
    # `tracing.without_reference_scan` spares the first call only for the call nodes that
    # TensorFlow's reference-variable pass reaches from the marker: downstream of it, or
    # upstream of a node downstream of it. Every call of the step (the fused operations,
    # forward and backward, of both the architecture and the weight step) must be one.
    import tensorflow as tf

    searcher = pcdarts.Searcher(_config(), str(tmp_path), total_units=4)
    splits = searcher.splits
    batch = next(iter(tf.data.Dataset.zip((splits.weights_epoch(0), splits.arch_epoch(0)))))
    with pcdarts.search_graph_options():
        step = searcher.search_step_fn(True)
        graph = step.function.get_concrete_function(*batch[0], *batch[1]).graph
    ops = graph.get_operations()
    (marker,) = [op for op in ops if op.type == "VariableV2"]

    down = _reach([marker], lambda op: [c for t in op.outputs for c in t.consumers()] + list(op._control_outputs))  # noqa: SLF001
    up = _reach(down, lambda op: [t.op for t in op.inputs] + list(op.control_inputs))
    calls = [op for op in ops if op.type in ("StatefulPartitionedCall", "PartitionedCall")]
    assert len(calls) > 50
    assert [op.name for op in calls if op not in up] == []


def test_the_weight_step_starts_after_the_architecture_update(tmp_path):
    # Run side by side, the weight step's forward pass and the architecture step's backward
    # pass held their activations at once (BUILD.md, "Peak memory against PyTorch"). Every
    # convolution and fused call on the weight batch must come after alpha and beta are written.
    import tensorflow as tf

    from bnas_tf.optim import _tf_variable

    searcher = pcdarts.Searcher(_config(), str(tmp_path), total_units=4)
    splits = searcher.splits
    batch = next(iter(tf.data.Dataset.zip((splits.weights_epoch(0), splits.arch_epoch(0)))))
    with pcdarts.search_graph_options():
        graph = searcher.search_step_fn(True).function.get_concrete_function(*batch[0], *batch[1]).graph
    handles = {id(_tf_variable(v).handle) for v in searcher.arch_vars}
    arch_inputs = [internal for external, internal in graph.captures if id(external) in handles]
    assert len(arch_inputs) == len(searcher.arch_vars)
    writes = {c for t in arch_inputs for c in t.consumers() if c.type.startswith(("Assign", "ResourceApply"))}
    assert writes

    weight_batch = graph.inputs[0].op
    downstream = _reach([weight_batch], lambda op: [c for t in op.outputs for c in t.consumers()])
    compute = [op for op in downstream if op.type in ("Conv2D", "StatefulPartitionedCall", "PartitionedCall")]
    assert len(compute) > 10
    early = [op.name for op in compute
             if not writes & _reach([op], lambda o: [t.op for t in o.inputs] + list(o.control_inputs))]
    assert early == []


def test_search_graphs_raise_no_retracing_warning(tmp_path):
    # The search makes a tf.function per step graph and the fused supernet one per
    # operation kind, each traced per structure by design. TensorFlow counts the traces of
    # every tf.function made from one nested function's code together, and warned of
    # "excessive retracing" at each trial (eager scoring calls the fused functions) and in
    # searches with few steps an epoch.
    from tf_log_util import tensorflow_log

    searcher = pcdarts.Searcher(_config(steps_per_epoch=1), str(tmp_path), total_units=4)
    rng = np.random.RandomState(1)

    def three_trials():
        with pcdarts.search_graph_options():
            for _ in range(3):
                names = {t: [gt.PRIMITIVES[i] for i in rng.randint(1, 8, size=14)] for t in gt.CELL_TYPES}
                searcher.trial_epoch(names, "trial")

    messages = tensorflow_log(three_trials)
    assert searcher.seconds["trace"] > 0
    assert [m for m in messages if "retracing" in m] == []


@pytest.mark.slow
def test_bnas_search_with_warmup_freeze_and_v_epochs(tmp_path, monkeypatch):
    """Algorithm 1 end to end in process (K 3 -> 1, T = 1): L = 2 warm-up epochs of which
    the first keeps alpha/beta frozen (line 1), and V = 1 PC-DARTS epoch after each round
    (line 17), which trains alpha on the reduced space."""
    from bnas_tf.search import tuner as tuner_lib

    epochs = []
    search_epoch = pcdarts.Searcher.search_epoch

    def recorded(self, update_arch, label):
        before = {t: a.copy() for t, a in self.model.alphas().items()}
        result = search_epoch(self, update_arch, label)
        after = self.model.alphas()
        changed = any(not np.allclose(before[t], after[t], equal_nan=True) for t in gt.CELL_TYPES)
        epochs.append((label.split(" ")[0], update_arch, changed))
        return result

    monkeypatch.setattr(pcdarts.Searcher, "search_epoch", recorded)
    config = _config(k=3, t=1, v=1, warmup_epochs=2, warmup_freeze_epochs=1, steps_per_epoch=1)
    searcher, genotype, _ = tuner_lib.run_bnas(config, str(tmp_path))
    assert epochs == [("warmup", False, False), ("warmup", True, True), ("pcdarts", True, True),
                      ("pcdarts", True, True)]
    # Units: L + T * (ceil(3/2) + ceil(2/2)) + V * 2 = 2 + 3 + 2.
    assert int(searcher.unit.numpy()) == tuner_lib.total_units(config) == 7
    assert gt.load(genotype.to_json()) == genotype  # a valid genotype

    # What TensorBoard shows a NAS user: the architecture weights after each phase, each
    # round's K, trials, likelihoods (an image per cell) and abandoned operations, the cells.
    tags = collections.Counter()
    for path in (tmp_path / "tensorboard" / "search").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags.update(value.tag for value in event.summary.value)
    for cell in gt.CELL_TYPES:
        assert tags[f"arch/{cell}"] == 3  # after the warm-up and after the V phase of each of the 2 rounds
        assert tags[f"round/likelihood_{cell}"] == 2 and tags[f"cells/{cell}"] == 1
        assert tags[f"arch/{cell}/edge_weight_0"] == 3
    assert tags["round/k"] == tags["round/num_trials"] == tags["round/abandoned"] == 2


def test_final_genotype_rule():
    """Per node the two edges with the largest edge weight, the stronger first; a `none`
    survivor takes its runner-up and ranks below the node's other edges. Checked against a
    transcription of that rule on random survivors and weights."""
    from bnas_tf.search.tuner import final_genotype

    rng = np.random.default_rng(4)
    for _ in range(20):
        final, weights = {}, {}
        for t in gt.CELL_TYPES:
            ops = rng.choice(gt.PRIMITIVES, size=gt.NUM_EDGES)
            final[t] = [(op, rng.choice(gt.PRIMITIVES[1:]) if op == "none" else None) for op in ops]
            weights[t] = rng.uniform(0.05, 1.0, size=gt.NUM_EDGES)
        genotype = final_genotype(final, weights, gt.PRIMITIVES)
        for t in gt.CELL_TYPES:
            expected, first = [], 0
            for node in range(4):
                edges = range(first, first + node + 2)  # from the states 0 .. node + 1
                ranked = sorted(edges, key=lambda e: (final[t][e][0] == "none", -weights[t][e], e))
                for e in ranked[:2]:
                    op, runner_up = final[t][e]
                    expected.append((runner_up if op == "none" else op, e - first))
                first += node + 2
            assert list(genotype.cell(t)[0]) == expected


def test_a_resume_with_other_settings_is_refused(tmp_path):
    from bnas_tf.errors import StateError

    config = _config()
    pcdarts.check_resume_settings(config, str(tmp_path), "bnas")
    pcdarts.check_resume_settings(config, str(tmp_path), "bnas")  # the same settings: resumes
    pcdarts.check_resume_settings(_config(data_dir="/elsewhere"), str(tmp_path), "bnas")  # data moved: fine
    with pytest.raises(StateError, match=r"heldout_size=64 \(now 128\), trial_batch_size=32 \(now 64\)\."):
        pcdarts.check_resume_settings(_config(learning_rate=0.05, trial_batch_size=64, heldout_size=128),
                                      str(tmp_path), "bnas")
    pcdarts.check_resume_settings(_config(learning_rate=0.01), str(tmp_path), "bnas")  # lower lr: allowed
    with pytest.raises(StateError, match=r"method='bnas' \(now 'pcdarts'\)"):
        pcdarts.check_resume_settings(config, str(tmp_path), "pcdarts")
    (tmp_path / pcdarts.SETTINGS_FILE).write_text("{not json")
    with pytest.raises(StateError, match="Cannot read the search settings"):
        pcdarts.check_resume_settings(config, str(tmp_path), "bnas")


def test_a_diverged_search_names_the_search_flags(tmp_path, monkeypatch):
    """The advice after a non-finite loss names the search's learning rates: the training's
    --learning_rate does nothing to a search (the review's #91)."""
    from bnas_tf.errors import TrainingError

    searcher = pcdarts.Searcher(_config(), str(tmp_path), total_units=4)
    # A step whose loss is NaN, as after updates with far too large a learning rate.
    monkeypatch.setattr(searcher, "search_step_fn", lambda update_arch: lambda *batch: (float("nan"), 0.0, 0.0))
    with pytest.raises(TrainingError, match=r"warmup epoch 1/1, step 1\. No checkpoint had been written yet; "
                                            r"run the same command again with a lower --search_learning_rate "
                                            r"\(or --arch_learning_rate\)") as info:
        searcher.search_epoch(False, "warmup epoch 1/1")
    assert "--learning_rate" not in str(info.value)
    searcher.save()
    with pytest.raises(TrainingError, match=r"The last good checkpoint, .*ckpt-0, is kept; .*--search_learning_rate"):
        searcher.search_epoch(True, "pcdarts epoch 1/1")


def test_a_trial_batch_larger_than_the_split_is_refused_before_the_warm_up(tmp_path, monkeypatch):
    """It was found at the first trial, after the whole warm-up, and reported as the data's
    `batch_size` (the training's flag's name); the search now says `trial_batch_size` at its start."""
    from bnas_tf.search import tuner

    def warm_up(*args, **kwargs):
        raise AssertionError("the warm-up ran before the trial batch was checked")

    monkeypatch.setattr(pcdarts.Searcher, "search_epoch", warm_up)
    with pytest.raises(ConfigError, match=r"^Invalid `trial_batch_size`: expected at most the 719 examples of the "
                                          r"digits search's weights part .*lower --trial_batch_size\. Received: "
                                          r"trial_batch_size=5000$"):
        tuner.run_bnas(_config(trial_batch_size=5000), str(tmp_path))
    # Nothing recorded: the same command with a smaller --trial_batch_size is not refused as a
    # resume with other settings.
    assert not (tmp_path / pcdarts.SETTINGS_FILE).exists()
