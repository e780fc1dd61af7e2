"""tf.distribute: the search steps under MirroredStrategy match one device, and
the launchers run, stop and resume a MultiWorkerMirroredStrategy job.

**One device vs two replicas** (`test_mirrored_search_matches_one_device`).
The same tiny `Searcher` (digits, 2 cells, PCNN, batch 16, 3 steps per epoch)
runs once under OneDeviceStrategy("/cpu:0") and once under MirroredStrategy
over two logical CPUs, from the same seed: a supernet search epoch (weights
and alpha/beta), a trial epoch of a sampled single-path architecture, and
its held-out accuracy. Exact agreement is impossible for two principled
reasons, and the test removes each:

- BatchNorm. Each replica normalises with the statistics of its own half of
  the batch (as PyTorch's DataParallel in DARTS/PC-DARTS; SyncBatchNorm is
  not what the method does, and a per-replica batch of 64 or more is what
  the paper's settings give). The outputs of a mixed batch then genuinely
  differ from one device. The test feeds global batches made of two copies
  of a half batch (held-out batches too: a sampled path is scored on the
  held-out batch's statistics): every replica sees the same examples, its batch
  statistics equal those of the whole batch, and the two runs compute the
  same function exactly (in real arithmetic).
- Rounding. Sums run in another order across replicas, and in float32 the
  differences (1e-7) grow to ~1e-3 in a few steps: Adam divides the small
  gradients of beta (softmax gradients, sums that cancel to ~0) by their
  own magnitude, and sign() makes the binarized forward pass discontinuous.
  The comparison runs in float64 (`keras.config.set_floatx`), where the same
  growth leaves differences below 1e-5 (3e-6 measured); the tolerance is
  1e-4 of each variable's scale. The bugs this guards against give
  differences more than 100 times larger (measured: 2.4e-2 for gradients
  clipped per replica instead of globally, 1.7e-2 for weight decay added
  once per replica, 0.4 with edges computing with another edge's weights);
  gradients summed twice (see `pcdarts._SummedGradients`) double every step.

The configuration clips hard (grad_clip 0.5) and decays strongly (weight
decay 0.05, arch weight decay 0.5) so that each of those bugs shows, and
keeps 2 operations per edge alive so the graphs trace in reasonable time.
A second Mirrored epoch on ordinary (not duplicated) batches then checks
that every variable, BatchNorm moving statistics included, holds the same
value on both replicas (`Searcher.sync_batch_norm`).

Everything TensorFlow runs in a subprocess: the logical CPUs must be set
before TensorFlow starts, and other test files in this process may have
started it.

**Multi-worker** (slow: minutes each). `launch/local_cluster.sh 2` runs the
demo search, shortened (--k=3 --t=1 --v_epochs=0 --warmup_epochs=1
--steps_per_epoch=2 --heldout_size=64: 4 epoch units and one supernet graph
instead of the demo's 20 units; the V phase runs the warm-up's code), with
MultiWorkerMirroredStrategy over two processes on localhost; only the chief
writes the model directory. Killing a worker mid-search stops the
cluster with a message that says how to resume; running the same command
again resumes from the chief's last checkpoint and finishes with the same
genotype as the uninterrupted run.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from bnas_tf import genotypes as gt

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(REPO, "launch")
ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHON": sys.executable}
TIMEOUT = 900

# ---------------------------------------------------------------------------------------------
# One device vs MirroredStrategy (subprocess: python tests/distribute_test.py compare OUT_DIR).
# ---------------------------------------------------------------------------------------------

CONFIG = dict(
    dataset="digits",
    init_channels=4,
    layers=2,
    reduction_cells=(1,),
    partial_channels=2,
    batch_size=16,
    trial_batch_size=16,
    steps_per_epoch=3,
    binarization="pcnn",
    heldout_size=64,
    grad_clip=0.5,
    weight_decay=0.05,
    arch_weight_decay=0.5,
)
OPS = ("max_pool_3x3", "sep_conv_3x3")  # alive on every edge: a BatchNorm'd pool and binarized convolutions
STAGES = ("init", "search", "trial")
TOLERANCE = 1e-4  # of max(1, max |value|) per variable; see the module docstring


def _compare_worker(out_dir):
    """Runs the two strategies in turn and writes result.npz / result.json."""
    import keras
    import tensorflow as tf
    from absl import logging

    from bnas_tf import data as data_lib
    from bnas_tf import distribute
    from bnas_tf.search.pcdarts import SearchConfig, Searcher, search_graph_options

    logging.set_verbosity(logging.INFO)
    keras.config.set_floatx("float64")
    strategies = {
        "one": distribute.get_strategy("one_device", cpu_devices=2),
        "mirrored": distribute.get_strategy("mirrored", cpu_devices=2),
    }
    tf.config.experimental.enable_op_determinism()

    duplicate = [True]

    def duplicated(epoch_fn):
        # Global batch = two copies of its first half: every replica sees the same examples.
        def wrapped(splits, epoch):
            ds = epoch_fn(splits, epoch)
            if not duplicate[0]:
                return ds
            half = splits.batch_size // 2
            return ds.map(lambda x, y: (tf.concat([x[:half]] * 2, 0), tf.concat([y[:half]] * 2, 0)))

        return wrapped

    data_lib.SearchSplits.weights_epoch = duplicated(data_lib.SearchSplits.weights_epoch)
    data_lib.SearchSplits.arch_epoch = duplicated(data_lib.SearchSplits.arch_epoch)
    heldout = data_lib.SearchSplits.heldout

    def duplicated_heldout(splits):
        # A sampled path is scored on the held-out batch's statistics: the same two copies.
        ds = heldout.fget(splits)
        if not duplicate[0]:
            return ds
        return ds.map(lambda x, y: tuple(tf.concat([t[:(tf.shape(t)[0] + 1) // 2]] * 2, 0) for t in (x, y)))

    data_lib.SearchSplits.heldout = property(duplicated_heldout)

    alive = {t: [list(OPS)] * gt.NUM_EDGES for t in gt.CELL_TYPES}
    trial = {t: [OPS[e % len(OPS)] for e in range(gt.NUM_EDGES)] for t in gt.CELL_TYPES}
    config = SearchConfig(**CONFIG)
    arrays, results = {}, {}
    for name, strategy in strategies.items():
        duplicate[0] = True
        with search_graph_options():
            searcher = Searcher(config, os.path.join(out_dir, name), strategy, total_units=4)
            searcher.model.set_alive(alive)
            template_error = _template_error(searcher, strategy)
            variables = searcher.model.weights
            results["paths"] = [v.path.split("/", 1)[1] for v in variables]

            def snapshot(stage):
                for i, v in enumerate(variables):
                    arrays[f"{name}/{stage}/{i}"] = v.numpy()

            snapshot("init")
            search = searcher.search_epoch(True, "search epoch")
            snapshot("search")
            trial_result = searcher.trial_epoch(trial, "trial epoch")
            snapshot("trial")
            results[name] = {"search_loss": search["loss"], "trial_loss": trial_result["loss"],
                             "val_accuracy": trial_result["val_accuracy"], "template_error": template_error}
            if name == "mirrored":
                results["tf_frames_in_mirrored_step"] = _tf_frames_in_steps(searcher)
                duplicate[0] = False
                searcher.search_epoch(True, "search epoch, ordinary batches")
                results["replica_spread"] = {
                    f"{i}:{path}": max(float(np.max(np.abs(c.numpy() - v.value.values[0].numpy())))
                                       for c in v.value.values)
                    for i, (path, v) in enumerate(zip(results["paths"], variables))
                }
    np.savez(os.path.join(out_dir, "result.npz"), **arrays)
    with open(os.path.join(out_dir, "result.json"), "w") as f:
        json.dump(results, f)


def _tf_frames_in_steps(searcher):
    """Ops of the traced step graphs whose recorded stack still holds TensorFlow's or Keras's
    frames (but for TensorFlow's op-creation module, which `tracing` keeps on purpose)."""
    import keras
    import tensorflow as tf

    dirs = tuple(os.path.dirname(os.path.abspath(m.__file__)) + os.sep for m in (tf, keras))
    count = 0
    for wrapper in searcher._fns.values():
        for concrete in wrapper._fn._list_all_concrete_functions():
            for op in concrete.graph.get_operations():
                files = [os.path.abspath(frame.filename) for frame in op.traceback]
                count += any(f.startswith(dirs) and not f.endswith(os.path.join("framework", "ops.py"))
                             for f in files)
    return count


def _template_error(searcher, strategy):
    """Largest |difference| between two edges' sep_conv_3x3 run through the shared traced
    function (`supernet.OpTemplates`) in `strategy.run` and run directly."""
    import keras
    import tensorflow as tf

    edges = searcher.model.cells[0].edges[:2]
    index = searcher.model.primitives.index("sep_conv_3x3")
    x = tf.random.stateless_normal((2, 32, 32, edges[0].sub_channels), (1, 2), dtype=keras.config.floatx())
    shared = tf.function(lambda: strategy.run(lambda: [e._apply(index, x, False)[0] for e in edges]), autograph=False)
    errors = []
    for edge, out in zip(edges, shared()):
        direct = edge.candidates[index](x, training=False).numpy()
        errors += [float(np.max(np.abs(r.numpy() - direct))) for r in strategy.experimental_local_results(out)]
    return max(errors)


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("compare")
    result = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "compare", str(out_dir)],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-6000:]
    with open(out_dir / "result.json") as f:
        results = json.load(f)
    return np.load(out_dir / "result.npz"), results, result.stderr


@pytest.mark.slow
def test_mirrored_replicas_record_only_package_frames(comparison):
    """Each replica is traced in a thread of its own; its ops still record only bnas_tf's frames."""
    assert comparison[1]["tf_frames_in_mirrored_step"] == 0


@pytest.mark.slow
def test_strategy_and_replicas_are_logged(comparison):
    stderr = comparison[2]
    assert "Distribution strategy: OneDeviceStrategy with 1 replica(s) in sync." in stderr
    assert "Distribution strategy: MirroredStrategy with 2 replica(s) in sync." in stderr


@pytest.mark.slow
def test_each_edge_computes_with_its_own_weights(comparison):
    """Every edge of a kind runs one shared tf.function (`OpTemplates`); it must get that edge's
    weights. A tf.distribute variable (MirroredVariable) passed to a tf.function as an argument
    does not work: the graph traced for the first edge, with its variables captured, is reused
    for the others, so values must be passed instead."""
    results = comparison[1]
    assert results["one"]["template_error"] < 1e-12
    assert results["mirrored"]["template_error"] < 1e-12


@pytest.mark.slow
def test_mirrored_search_matches_one_device(comparison):
    arrays, results, _ = comparison
    paths = results["paths"]
    one, mirrored = results["one"], results["mirrored"]
    worst = {}
    for stage in STAGES:
        for i, path in enumerate(paths):
            a, b = arrays[f"one/{stage}/{i}"], arrays[f"mirrored/{stage}/{i}"]
            scale = max(1.0, float(np.max(np.abs(a)))) if a.size else 1.0
            worst[stage, i, path] = float(np.max(np.abs(a - b))) / scale if a.size else 0.0
    assert max(v for (stage, _, _), v in worst.items() if stage == "init") == 0.0  # same seed, same start
    bad = {k: v for k, v in worst.items() if v > TOLERANCE}
    assert not bad, sorted(bad.items(), key=lambda kv: -kv[1])[:10]
    for key in ("search_loss", "trial_loss"):
        assert mirrored[key] == pytest.approx(one[key], rel=1e-6), key
    assert mirrored["val_accuracy"] == one["val_accuracy"]  # held-out accuracy of the sampled architecture
    # The steps did move every kind of state: weights, alpha, beta, amplitudes, BatchNorm statistics.
    for name in ("alpha_normal", "beta_reduce", "stem_conv/kernel", "amplitude", "moving_variance"):
        moved = [i for i, p in enumerate(paths) if name in p
                 and np.any(arrays[f"one/init/{i}"] != arrays[f"one/search/{i}"])]
        assert moved, name


@pytest.mark.slow
def test_replicas_hold_the_same_values(comparison):
    spread = comparison[1]["replica_spread"]
    assert any("moving_mean" in p for p in spread)
    assert max(spread.values()) == 0.0, {p: s for p, s in spread.items() if s}


# ---------------------------------------------------------------------------------------------
# Launchers without TensorFlow: usage, TF_CONFIG, the cluster's failure handling (seconds).
# ---------------------------------------------------------------------------------------------

SCRIPTS = {
    "local.sh": [],
    "multi_gpu.sh": [],
    "multi_worker.sh": ["--index=0"],
    "tpu_vm.sh": [],
    "local_cluster.sh": [],
}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_launcher_usage(script):
    path = os.path.join(LAUNCH, script)
    with open(path) as f:
        assert "set -euo pipefail" in f.read()
    shown = subprocess.run([path, "-h"], env=ENV, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and shown.stdout.startswith(f"usage: launch/{script}"), shown
    missing = subprocess.run([path] + SCRIPTS[script], env=ENV, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "usage: " in missing.stderr, missing


FAKE_PYTHON = """#!/usr/bin/env bash
# Stands in for python: runs real Python for `python -` (free ports), else is a worker
# whose behaviour depends on its TF_CONFIG index.
if [[ "$1" == "-" ]]; then exec {python} "$@"; fi
index="$(sed 's/.*"index": \\([0-9]*\\).*/\\1/' <<<"$TF_CONFIG")"
echo "worker $index args: $*"
echo "worker $index TF_CONFIG: $TF_CONFIG"
case "$index" in
  0) exec sleep "${{FAKE_CHIEF_SECONDS:-0}}" ;;
  *) sleep "${{FAKE_WORKER_SECONDS:-0}}"; exit "${{FAKE_WORKER_STATUS:-0}}" ;;
esac
"""


@pytest.fixture
def fake_python(tmp_path):
    path = tmp_path / "python"
    path.write_text(FAKE_PYTHON.format(python=sys.executable))
    path.chmod(0o755)
    return {**ENV, "PYTHON": str(path)}


def test_multi_worker_writes_tf_config_and_gives_workers_a_copy_of_the_chief_state(fake_python, tmp_path):
    model_dir = tmp_path / "model"
    (model_dir / "checkpoints").mkdir(parents=True)
    (model_dir / "checkpoints" / "checkpoint").write_text("chief")
    (model_dir / "worker_0.log").write_text("log")
    flagfile = tmp_path / "x.flags"
    flagfile.write_text(f"# a comment\n--model_dir={tmp_path / 'ignored'}\n--mode=search\n")
    workers = "localhost:1111,localhost:2222"
    chief = subprocess.run([os.path.join(LAUNCH, "multi_worker.sh"), f"--workers={workers}", "--index=0",
                            f"--flagfile={flagfile}", f"--model_dir={model_dir}"],
                           env=fake_python, capture_output=True, text=True, timeout=60)
    assert chief.returncode == 0, chief.stderr
    config = json.loads(chief.stdout.split("TF_CONFIG: ", 1)[1].splitlines()[0])
    assert config == {"cluster": {"worker": workers.split(",")}, "task": {"type": "worker", "index": 0}}
    assert "--strategy=multi_worker" in chief.stdout and ".workers" not in chief.stdout
    # Worker 1: --model_dir from the flag file unless the command line sets it later (absl order).
    worker = subprocess.run([os.path.join(LAUNCH, "multi_worker.sh"), "--workers", workers, "--index", "1",
                             f"--model_dir={tmp_path / 'ignored'}", f"--flagfile={flagfile}",
                             f"--model_dir={model_dir}"],
                            env=fake_python, capture_output=True, text=True, timeout=60)
    assert worker.returncode == 0, worker.stderr
    scratch = model_dir / ".workers" / "worker_1"
    assert worker.stdout.split("args: ", 1)[1].splitlines()[0].endswith(f"--model_dir={scratch}")
    assert (scratch / "checkpoints" / "checkpoint").read_text() == "chief"
    assert not (scratch / "worker_0.log").exists()
    bad = subprocess.run([os.path.join(LAUNCH, "multi_worker.sh"), f"--workers={workers}", "--index=2"],
                         env=fake_python, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--index must be an integer in [0, 2)" in bad.stderr


def _read_pid(path, seconds=60):
    """The process id in `path`, once the launcher has written it."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if path.exists() and path.read_text().strip():
            return int(path.read_text())
        time.sleep(0.1)
    raise AssertionError(f"no process id in {path}")


def _pid_gone(pid, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def test_local_cluster_waits_for_every_worker(fake_python, tmp_path):
    model_dir = tmp_path / "model"
    env = {**fake_python, "FAKE_CHIEF_SECONDS": "2"}
    result = subprocess.run([os.path.join(LAUNCH, "local_cluster.sh"), "3", f"--model_dir={model_dir}"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    ports = set()
    for i in range(3):
        log = (model_dir / f"worker_{i}.log").read_text()
        config = json.loads(log.split("TF_CONFIG: ", 1)[1].splitlines()[0])
        assert config["task"] == {"type": "worker", "index": i}
        ports.add(tuple(config["cluster"]["worker"]))
    assert len(ports) == 1 and len(set(next(iter(ports)))) == 3  # one cluster, three distinct ports
    assert not list(model_dir.glob("worker_*.pid"))


def test_local_cluster_stops_everyone_when_a_worker_fails(fake_python, tmp_path):
    model_dir = tmp_path / "model"
    env = {**fake_python, "FAKE_CHIEF_SECONDS": "300", "FAKE_WORKER_SECONDS": "1", "FAKE_WORKER_STATUS": "3"}
    process = subprocess.Popen([os.path.join(LAUNCH, "local_cluster.sh"), "2", f"--model_dir={model_dir}"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    chief_pid = _read_pid(model_dir / "worker_0.pid")
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 3, stderr  # the failed worker's status
    assert "worker 1 exited with status 3" in stderr
    assert "run the same command again to resume" in stderr
    assert _pid_gone(chief_pid), "the chief was left running"


# ---------------------------------------------------------------------------------------------
# A real MultiWorkerMirroredStrategy search on localhost (slow).
# ---------------------------------------------------------------------------------------------

SHORT = ["--k=3", "--t=1", "--v_epochs=0", "--warmup_epochs=1", "--warmup_freeze_epochs=0",
         "--steps_per_epoch=2", "--heldout_size=64"]


def _cluster_command(model_dir):
    return [os.path.join(LAUNCH, "local_cluster.sh"), "2", "--flagfile=configs/demo.flags", "--mode=search",
            f"--model_dir={model_dir}"] + SHORT


def _history(model_dir):
    with open(os.path.join(model_dir, "search_history.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def _trial_ids(model_dir):
    return [r["trial_id"] for r in _history(model_dir) if r["record"] == "trial"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("cluster")
    result = subprocess.run(_cluster_command(model_dir), cwd=REPO, env=ENV, capture_output=True, text=True,
                            timeout=TIMEOUT)
    logs = "".join((model_dir / f"worker_{i}.log").read_text()[-3000:] for i in range(2) if
                   (model_dir / f"worker_{i}.log").exists())
    assert result.returncode == 0, result.stderr + logs
    return model_dir


@pytest.mark.slow
def test_local_cluster_search_writes_one_genotype(cluster):
    model_dir = cluster
    assert sorted(model_dir.rglob("genotype.json")) == [model_dir / "genotype.json"]
    gt.load(str(model_dir / "genotype.json"))
    chief_log = (model_dir / "worker_0.log").read_text()
    worker_log = (model_dir / "worker_1.log").read_text()
    assert ("Distribution strategy: MultiWorkerMirroredStrategy with 2 replica(s) in sync, "
            "this task worker 0 of 2 (chief).") in chief_log
    assert "with 2 replica(s) in sync, this task worker 1 of 2." in worker_log
    assert "Search finished" in chief_log
    # The chief's files are the chief's alone: one checkpoint series, one event file, no duplicate records.
    assert list((model_dir / "checkpoints").glob("ckpt-*.index"))
    assert not list((model_dir / ".workers").rglob("ckpt-*"))
    assert len(list((model_dir / "tensorboard").rglob("events.out.tfevents.*"))) == 1
    trials = _trial_ids(model_dir)
    assert trials and len(trials) == len(set(trials))
    rounds = [r["k"] for r in _history(model_dir) if r["record"] == "round"]
    assert rounds == [3, 2]
    with open(model_dir / "tuner" / "oracle.json") as f:
        json.load(f)


@pytest.mark.slow
def test_killed_worker_stops_the_cluster_and_the_same_command_resumes(cluster, tmp_path):
    model_dir = tmp_path / "killed"
    command = _cluster_command(model_dir)
    process = subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + TIMEOUT
        while not list((model_dir / "checkpoints").glob("ckpt-*.index")):  # the chief finished a unit
            assert process.poll() is None, "the search ended before a worker could be killed"
            assert time.time() < deadline
            time.sleep(0.2)
        chief_pid = _read_pid(model_dir / "worker_0.pid")
        os.kill(_read_pid(model_dir / "worker_1.pid"), signal.SIGKILL)
        _, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode != 0
    assert "worker 1 exited with status" in stderr and "run the same command again to resume" in stderr, stderr
    assert _pid_gone(chief_pid), "the chief was left running"
    assert not (model_dir / "genotype.json").exists()
    kept = sorted((model_dir / "checkpoints").glob("ckpt-*.index"))
    assert kept, "the chief's checkpoints were lost"

    result = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=TIMEOUT)
    chief_log = (model_dir / "worker_0.log").read_text()
    assert result.returncode == 0, result.stderr + chief_log[-4000:]
    assert "Restored the search checkpoint" in chief_log
    assert "Restored the search checkpoint" in (model_dir / "worker_1.log").read_text()
    trials = _trial_ids(model_dir)
    assert len(trials) == len(set(trials)) == len(_trial_ids(cluster))  # none lost, none counted twice
    assert gt.load(str(model_dir / "genotype.json")) == gt.load(str(cluster / "genotype.json"))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "compare":
        _compare_worker(sys.argv[2])
    else:
        sys.exit("usage: python tests/distribute_test.py compare OUT_DIR")
