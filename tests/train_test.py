"""Tests of bnas_tf.train: learning, resume after a real kill, divergence, bad state.

A tiny network (3 cells, 8 channels, a light genotype) trains on the
embedded digits data with capped epochs. The runs whose results must match
bit for bit happen in subprocesses with op determinism on, so that this
process's TensorFlow settings stay untouched.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf

from bnas_tf import genotypes
from bnas_tf import train
from bnas_tf.errors import StateError, TrainingError

# Few parametric operations: quick to trace, still every kind of edge
# (separable, dilated, pooling, identity, FactorizedReduce in the reduction cell).
LIGHT = genotypes.Genotype(
    normal=[
        ("sep_conv_3x3", 0), ("skip_connect", 1),
        ("skip_connect", 0), ("max_pool_3x3", 2),
        ("avg_pool_3x3", 1), ("skip_connect", 3),
        ("skip_connect", 4), ("max_pool_3x3", 0),
    ],
    reduce=[
        ("max_pool_3x3", 0), ("dil_conv_3x3", 1),
        ("skip_connect", 2), ("max_pool_3x3", 1),
        ("max_pool_3x3", 0), ("skip_connect", 2),
        ("skip_connect", 2), ("avg_pool_3x3", 1),
    ],
)
EPOCHS = 3
STEPS = 20
OPTIONS = dict(
    dataset="digits",
    epochs=EPOCHS,
    batch_size=16,
    learning_rate=0.05,
    init_channels=8,
    layers=3,
    steps_per_epoch=STEPS,
    drop_path=0.2,
    auxiliary_weight=0.4,
    seed=0,
    verbose=0,
    log_every=0,
)

# Runs train() in a fresh process. With "wait_for" it imports everything,
# then waits for that file to exist before training. With "stall_at_step"
# it stops (sleeps) after that many training steps and writes "stalled" so
# the test can kill it mid-epoch.
_CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    import tensorflow as tf
    tf.config.experimental.enable_op_determinism()
    from bnas_tf import genotypes, train

    args = json.loads(sys.argv[1])
    go = args.pop("wait_for", None)
    while go is not None and not os.path.exists(go):
        time.sleep(0.05)
    stall_at = args.pop("stall_at_step", None)
    if stall_at is not None:
        original = train.Loop.train_step
        count = [0]

        def train_step(self, batch):
            count[0] += 1
            if count[0] > stall_at:
                with open(os.path.join(args["model_dir"], "stalled"), "w") as f:
                    f.write(str(count[0]))
                time.sleep(600)
            return original(self, batch)

        train.Loop.train_step = train_step
    genotype = genotypes.Genotype.from_dict(args.pop("genotype"))
    results = train.train(genotype, **args)
    with open(os.path.join(args["model_dir"], "child_results.json"), "w") as f:
        json.dump(results, f)
    """
)


def _child(model_dir, **extra):
    args = dict(OPTIONS, genotype=LIGHT.to_dict(), model_dir=str(model_dir), **extra)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, json.dumps(args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait(process, timeout=240):
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, out[-4000:]


def _checkpoint_values(model_dir):
    reader = tf.train.load_checkpoint(os.path.join(model_dir, train.CHECKPOINT_DIR))
    names = sorted(n for n in reader.get_variable_to_shape_map() if n != "_CHECKPOINTABLE_OBJECT_GRAPH")
    return {n: reader.get_tensor(n) for n in names}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted run and a run killed mid-epoch 2 and resumed, in subprocesses."""
    root = tmp_path_factory.mktemp("train")
    straight, killed, go = root / "straight", root / "killed", root / "go"
    killed.mkdir()
    reference = _child(straight)
    # Killed (SIGKILL) once it has checkpointed epoch 1 and run 3 steps of epoch 2.
    victim = _child(killed, stall_at_step=STEPS + 3)
    # Started now to overlap its imports; it trains once the victim is dead.
    resumed = _child(killed, wait_for=str(go))
    deadline = time.time() + 240
    while not (killed / "stalled").exists():
        assert victim.poll() is None, victim.communicate()[0][-4000:]
        assert time.time() < deadline, "the child never reached epoch 2"
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate()
    assert victim.returncode == -signal.SIGKILL
    checkpoints = sorted(os.listdir(killed / train.CHECKPOINT_DIR))
    assert "ckpt-1.index" in checkpoints and "ckpt-2.index" not in checkpoints
    go.touch()
    _wait(reference)
    _wait(resumed)
    with open(straight / "child_results.json") as f:
        straight_results = json.load(f)
    with open(killed / "child_results.json") as f:
        resumed_results = json.load(f)
    return {"straight": straight, "killed": killed, "straight_results": straight_results,
            "resumed_results": resumed_results}


def test_training_learns_and_traces_once(runs):
    results = runs["straight_results"]
    history = results["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["loss"] < history[0]["loss"] - 0.3
    # Chance is 0.1; 320 examples an epoch put 0.15 three standard deviations above it.
    # (After 60 steps the test accuracy still swings with the BatchNorm statistics.)
    assert history[-1]["accuracy"] > 0.15
    assert 0.0 <= results["test_accuracy"] <= 1.0
    assert results["train_step_traces"] == 1
    assert results["epochs_run"] == EPOCHS and results["steps_per_epoch"] == STEPS
    # DARTS schedules: drop path drop_path * epoch / epochs; lr cosine per step.
    assert [h["drop_path_rate"] for h in history] == pytest.approx([0.0, 0.2 / 3, 0.4 / 3])
    assert history[1]["learning_rate"] == pytest.approx(0.05 * 0.5 * (1 + np.cos(np.pi / 3)), rel=1e-5)
    model_dir = runs["straight"]
    assert os.path.exists(os.path.join(model_dir, train.MODEL_FILE))
    assert os.listdir(os.path.join(model_dir, train.TENSORBOARD_DIR, "train"))


def test_run_killed_and_resumed_ends_where_an_uninterrupted_run_ends(runs):
    resumed = runs["resumed_results"]
    assert resumed["initial_epoch"] == 1 and resumed["epochs_run"] == EPOCHS - 1
    expected = _checkpoint_values(runs["straight"])
    actual = _checkpoint_values(runs["killed"])
    assert expected.keys() == actual.keys()
    # Model variables (drop path random state included), both optimizers, epoch.
    assert any(n.startswith("model/") for n in expected) and "epoch/.ATTRIBUTES/VARIABLE_VALUE" in expected
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], rtol=1e-6, atol=1e-7, err_msg=name)
    assert resumed["test_accuracy"] == pytest.approx(runs["straight_results"]["test_accuracy"], abs=1e-6)


def test_divergence_raises_and_keeps_the_last_good_checkpoint(runs, tmp_path):
    model_dir = tmp_path / "diverged"
    shutil.copytree(runs["straight"], model_dir)
    checkpoint_dir = model_dir / train.CHECKPOINT_DIR
    before = {name: (checkpoint_dir / name).read_bytes() for name in os.listdir(checkpoint_dir)}
    options = dict(OPTIONS, epochs=EPOCHS + 1, learning_rate=1e30, grad_clip=0.0)
    expected = rf"epoch 4/4, step \d+/{STEPS}.*last good checkpoint, .*ckpt-3 \(epoch 3\), is kept.*lower learning rate"
    with pytest.raises(TrainingError, match=expected):
        train.train(LIGHT, model_dir=str(model_dir), **options)
    after = {name: (checkpoint_dir / name).read_bytes() for name in os.listdir(checkpoint_dir)}
    assert after == before
    assert tf.train.latest_checkpoint(str(checkpoint_dir)).endswith("ckpt-3")
    values = _checkpoint_values(model_dir)
    assert all(np.all(np.isfinite(v)) for v in values.values() if np.issubdtype(np.asarray(v).dtype, np.floating))


def test_corrupt_checkpoint_raises_state_error(runs, tmp_path):
    model_dir = tmp_path / "corrupt"
    shutil.copytree(runs["straight"], model_dir)
    data_file = model_dir / train.CHECKPOINT_DIR / "ckpt-3.data-00000-of-00001"
    data_file.write_bytes(b"not a checkpoint")
    with pytest.raises(StateError, match=r"ckpt-3.*corrupt.*Delete"):
        train.train(LIGHT, model_dir=str(model_dir), **OPTIONS)
    # The advice works: without ckpt-3's files (the list still names it) the run resumes
    # from ckpt-2 and trains the third epoch again.
    for path in (model_dir / train.CHECKPOINT_DIR).glob("ckpt-3.*"):
        path.unlink()
    results = train.train(LIGHT, model_dir=str(model_dir), **OPTIONS)
    assert results["initial_epoch"] == 2 and results["epochs_run"] == 1


def test_a_resume_for_another_network_is_refused(runs, tmp_path):
    model_dir = tmp_path / "other"
    shutil.copytree(runs["straight"], model_dir)
    # Same variables, another cell: a pooling swapped (TensorFlow would restore it without a word).
    other = genotypes.Genotype(
        normal=[("avg_pool_3x3" if op == "max_pool_3x3" else op, i) for op, i in LIGHT.normal],
        normal_concat=LIGHT.normal_concat, reduce=LIGHT.reduce, reduce_concat=LIGHT.reduce_concat)
    assert other != LIGHT
    with pytest.raises(StateError, match=r"another network or data: genotype="):
        train.train(other, model_dir=str(model_dir), **OPTIONS)


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_a_lost_checkpoint_list_loses_no_checkpoint(runs, tmp_path, damage):
    """Without a readable `checkpoint` list TensorFlow would start again at epoch 1 and
    overwrite, then delete, the good checkpoints: the list is rebuilt from the files."""
    model_dir = tmp_path / damage
    shutil.copytree(runs["straight"], model_dir)
    checkpoint_dir = model_dir / train.CHECKPOINT_DIR
    listed = checkpoint_dir / "checkpoint"
    if damage == "missing":
        listed.unlink()
    else:
        listed.write_text('model_checkpoint_path: "ckpt-3\nall_model_')  # torn write
    before = {p.name: p.read_bytes() for p in checkpoint_dir.glob("ckpt-3.*")}
    results = train.train(LIGHT, model_dir=str(model_dir), **dict(OPTIONS, epochs=EPOCHS + 1))
    assert results["initial_epoch"] == EPOCHS and results["epochs_run"] == 1
    assert {p.name: p.read_bytes() for p in checkpoint_dir.glob("ckpt-3.*")} == before
    assert tf.train.latest_checkpoint(str(checkpoint_dir)).endswith(f"ckpt-{EPOCHS + 1}")


def test_finished_run_is_not_trained_again_and_bad_epochs_raise(runs, tmp_path):
    model_dir = tmp_path / "done"
    shutil.copytree(runs["straight"], model_dir)
    with pytest.raises(StateError, match="already run 3 epochs"):
        train.train(LIGHT, model_dir=str(model_dir), **dict(OPTIONS, epochs=2))


def test_pcnn_amplitudes_take_their_own_plain_sgd_step(tmp_path):
    """PCNN: A takes A <- |A - eta2 dA| with its own learning rate; the kernels the momentum step."""
    from bnas_tf import amplitude, network  # pylint: disable=import-outside-toplevel

    model = network.build_network(LIGHT, num_classes=10, init_channels=8, layers=3, auxiliary=False,
                                  binarization="pcnn")
    amplitudes = amplitude.amplitude_variables(model)
    images = tf.random.uniform((4, 32, 32, 3), -1, 1, seed=0)
    labels = tf.constant([0, 1, 2, 3])

    def one_step(learning_rate, amplitude_lr):
        loop = train.Loop(  # pylint: disable=protected-access
            model, strategy=tf.distribute.get_strategy(), global_batch=4, learning_rate=learning_rate,
            amplitude_lr=amplitude_lr, total_steps=10, momentum=0.9, weight_decay=3e-4, grad_clip=5.0,
            auxiliary_weight=0.0, label_smoothing=0.0, mixed_precision=False,
        )
        weights = [v.numpy() for v in loop.weight_variables]
        amps = [a.numpy() for a in amplitudes]
        out = loop.train_step((images, labels))
        assert out["finite"] and out["loss"] > 0 and int(loop.step.numpy()) == 1
        weights_moved = any(not np.array_equal(b, v.numpy()) for b, v in zip(weights, loop.weight_variables)
                            if "kernel" in v.path)
        amps_moved = any(not np.array_equal(b, a.numpy()) for b, a in zip(amps, amplitudes))
        return loop, weights_moved, amps_moved

    # A weight learning rate of 0 leaves the kernels, the amplitude one moves A.
    loop, weights_moved, amps_moved = one_step(0.0, 0.1)
    assert amps_moved and not weights_moved
    assert all(np.all(a.numpy() >= 0) for a in amplitudes)  # Eq. 19.
    # Amplitudes, BatchNorm and PReLU are not decayed; kernels and biases are.
    assert amplitudes and not {id(a) for a in amplitudes} & {id(v) for v in loop.weight_variables}
    decayed = [v.path for v, d in zip(loop.weight_variables, loop.decayed) if d]
    assert decayed and all(p.endswith(("kernel", "bias")) for p in decayed)
    assert not any(p.endswith(("gamma", "beta")) for p in decayed)
    # The checkpoint holds the model (amplitudes included), the momenta and the step.
    path = loop.checkpoint.write(str(tmp_path / "ckpt"))
    names = [n for n, _ in tf.train.list_variables(path)]
    assert sum(n.startswith("model/") for n in names) == len(model.variables)
    assert sum(n.startswith("weight_optimizer/") for n in names) == len(loop.weight_variables)
    assert "step/.ATTRIBUTES/VARIABLE_VALUE" in names


def test_bad_arguments(tmp_path):
    from bnas_tf.errors import ConfigError  # pylint: disable=import-outside-toplevel

    with pytest.raises(ConfigError, match="epochs"):
        train.train(LIGHT, model_dir=str(tmp_path), **dict(OPTIONS, epochs=0))
    with pytest.raises(ConfigError, match="dataset"):
        train.train(LIGHT, model_dir=str(tmp_path), **dict(OPTIONS, dataset="mnist"))


# Distribution and mixed precision (slow: a fresh process with two logical CPUs) ----

_MIRRORED_CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import keras
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from bnas_tf import genotypes, network, train

    genotype = genotypes.Genotype.from_dict(json.loads(sys.argv[1]))
    images = tf.random.uniform((16, 32, 32, 3), -1, 1, seed=0)
    labels = tf.constant(np.arange(16) % 10, tf.int32)

    def make(strategy):
        keras.utils.set_random_seed(1)
        with strategy.scope():
            model = network.build_network(genotype, num_classes=10, init_channels=8, layers=3, auxiliary=True,
                                          binarization="pcnn", seed=0)
            loop = train.Loop(model, strategy=strategy, global_batch=16, learning_rate=0.1, amplitude_lr=0.05,
                               total_steps=10, momentum=0.9, weight_decay=3e-4, grad_clip=0.5,
                               auxiliary_weight=0.4, label_smoothing=0.1, mixed_precision=False)
        return model, loop

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    model, loop = make(mirrored)
    batches = mirrored.experimental_distribute_dataset(tf.data.Dataset.from_tensors((images, labels)))
    for _ in range(2):
        for batch in batches:
            loop.train_step(batch)
    unsynced = [v.path for v in loop.weight_variables + loop.amplitude_variables
                if not all(np.array_equal(v.value.values[0].numpy(), c.numpy()) for c in v.value.values)]

    # The same two steps on one device, each half batch a "replica" with its own BatchNorm statistics.
    ref_model, ref = make(tf.distribute.get_strategy())
    variables = ref.weight_variables + ref.amplitude_variables
    n = len(ref.weight_variables)
    for _ in range(2):
        with tf.GradientTape() as tape:
            total = 0.0
            for half in (slice(0, 8), slice(8, 16)):
                logits, aux = ref_model(images[half], training=True)
                objective = tf.reduce_sum(ref._cross_entropy(labels[half], logits))
                objective += 0.4 * tf.reduce_sum(ref._cross_entropy(labels[half], aux))
                total += objective / 16 + tf.add_n(ref_model.losses) / 2
        grads, _ = tf.clip_by_global_norm(tape.gradient(total, variables), 0.5)
        weight_grads = [g + 3e-4 * v if d else g for g, v, d in zip(grads[:n], ref.weight_variables, ref.decayed)]
        ref.weight_optimizer.apply(weight_grads, ref.learning_rate(0.1))
        ref.amplitude_optimizer.apply(grads[n:], ref.learning_rate(0.05))
        ref.step.assign_add(1)
    diff = max(float(np.max(np.abs(a.numpy() - b.numpy())))
               for a, b in zip(loop.weight_variables + loop.amplitude_variables, variables))
    print(json.dumps({"unsynced": unsynced, "max_diff": diff}))
    """
)


@pytest.mark.slow
def test_mirrored_strategy_step_sums_the_replicas():
    """Two replicas: gradients summed before clipping, amplitude loss counted once, variables in sync."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(
        [sys.executable, "-c", _MIRRORED_CHILD, json.dumps(LIGHT.to_dict())],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["unsynced"] == []
    assert result["max_diff"] < 1e-6


@pytest.mark.slow
def test_mixed_precision_trains(tmp_path):
    import keras  # pylint: disable=import-outside-toplevel

    policy = keras.config.dtype_policy().name
    results = train.train(LIGHT, model_dir=str(tmp_path), mixed_precision=True,
                          **dict(OPTIONS, epochs=1, steps_per_epoch=5))
    assert keras.config.dtype_policy().name == policy  # Restored.
    assert np.isfinite(results["history"][0]["loss"])
    loaded = keras.saving.load_model(results["model_path"])
    assert loaded.get_layer("stem_conv").dtype_policy.name == "mixed_float16"
