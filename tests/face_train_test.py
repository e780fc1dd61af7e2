"""bnas_tf.face.train and the face runs of the command line.

- `train_face` on the embedded digits identities: what it writes, that the
  saved embedding network loads in a fresh process with `import bnas_tf` alone
  and gives the same embeddings, resume (more epochs) and a resume with
  another head refused;
- the command line on a CASIA-WebFace-shaped identity folder and an
  insightface-shaped `.bin` made here: --mode=convert, then a ResNet-18
  baseline trained, verified and exported;
- the face demo (`configs/demo_face.flags`) end to end: verification of
  the digits the network never saw, well above chance (0.5);
- bad input: one clear message.
"""

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from bnas_tf.errors import ConfigError, StateError
from bnas_tf.face import sources
from bnas_tf.face import train as face_train

from cli_util import ENV, LAUNCH, run  # noqa: E402

SMALL = dict(backbone="genotype", genotype="PC_DARTS", init_channels=4, layers=3, embedding_size=16)


def _train(model_dir, epochs, **config):
    data, heldout = sources.digits_identities(batch_size=32, seed=0, num_pairs=100)
    config = face_train.FaceConfig(**{**SMALL, **config})
    return face_train.train_face(config, data, model_dir=model_dir, verification=[heldout], epochs=epochs,
                                 optimizer="adam", learning_rate=0.005, weight_decay=0.0, steps_per_epoch=2,
                                 verbose=0)


def test_train_face_writes_a_loadable_embedding_network_and_resumes(tmp_path):
    first = _train(tmp_path, epochs=1)
    assert first["epochs_run"] == 1 and first["params"] > 0
    result = first["verification"]["digits_7-9"]
    assert 0.0 <= result["accuracy"] <= 1.0 and set(result["tar_at_far"]) == {"0.001", "0.01"}
    assert "| digits_7-9 |" in first["table"]
    with open(tmp_path / "results.json") as f:
        assert json.load(f)["verification"] == first["verification"]

    # The embedding network alone, loaded with `import bnas_tf` in a fresh process.
    samples = np.load(tmp_path / "sample_inputs.npy")
    assert samples.shape == (8, 32, 32, 3)
    script = (
        "import sys, numpy as np, keras, bnas_tf\n"
        "m = keras.models.load_model(sys.argv[1])\n"
        "np.save(sys.argv[3], np.asarray(m(np.load(sys.argv[2]), training=False)))\n"
    )
    out = tmp_path / "embeddings.npy"
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "model.keras"),
                           str(tmp_path / "sample_inputs.npy"), str(out)], env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    import keras

    model = keras.models.load_model(tmp_path / "model.keras")
    expected = np.asarray(model(samples, training=False))
    assert expected.shape == (8, 16)
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-5, atol=1e-6)

    second = _train(tmp_path, epochs=2)
    assert second["epochs_run"] == 1 and [h["epoch"] for h in second["history"]] == [2]
    with pytest.raises(StateError, match="head"):
        _train(tmp_path, epochs=3, head="cosface")


def test_face_config_checks_its_arguments():
    with pytest.raises(ConfigError, match="backbone"):
        face_train.FaceConfig(backbone="resnet19")
    with pytest.raises(ConfigError, match="genotype"):
        face_train.FaceConfig(backbone="genotype", genotype=None)
    with pytest.raises(ConfigError, match="head"):
        face_train.FaceConfig(genotype="PC_DARTS", head="sphereface")
    with pytest.raises(ConfigError, match="binarization"):
        face_train.FaceConfig(genotype="PC_DARTS", binarization="ternary")


def test_digits_identities_hold_out_whole_identities():
    data, heldout = sources.digits_identities(batch_size=32, seed=0)
    labels = np.concatenate([y.numpy() for _, y in data.epoch(0)])
    assert set(labels) <= set(range(7)) and data.num_classes == 7
    assert heldout.images.shape == (2000, 32, 32, 3) and heldout.issame.shape == (1000,)
    # Every fold of 100 pairs is half same, half different.
    assert np.all(heldout.issame.reshape(10, 100).sum(axis=1) == 50)
    # Epochs differ (shuffle, shifts) and are a function of (seed, epoch).
    a, b = (next(iter(data.epoch(e)))[0].numpy() for e in (0, 1))
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(next(iter(data.epoch(0)))[0].numpy(), a)


# The command line ----------------------------------------------------------------------------


def _jpeg(seed, size=24):
    rng = np.random.RandomState(seed)
    image = rng.randint(0, 256, size=(size, size, 3)).astype(np.uint8)
    return tf.io.encode_jpeg(image).numpy()


def _casia_and_lfw(root):
    """An identity folder (4 identities x 5 images) and a 20-pair .bin in insightface's layout."""
    casia = root / "casia"
    for identity in range(4):
        folder = casia / f"{identity:07d}"
        folder.mkdir(parents=True)
        for k in range(5):
            (folder / f"{k:03d}.jpg").write_bytes(_jpeg(identity * 10 + k))
    bins = [_jpeg(1000 + k) for k in range(40)]
    issame = [bool(k % 2) for k in range(20)]
    with open(root / "lfw.bin", "wb") as f:
        pickle.dump((bins, issame), f, protocol=2)
    return casia


@pytest.mark.slow
def test_cli_converts_casia_trains_a_resnet_baseline_and_verifies(tmp_path):
    casia = _casia_and_lfw(tmp_path)
    records = tmp_path / "records"
    done = run(LAUNCH + ["--mode=convert", f"--data_dir={casia}", f"--model_dir={records}"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert (records / "meta.json").exists()

    model_dir = tmp_path / "run"
    done = run(LAUNCH + ["--flagfile=configs/face_resnet.flags", f"--data_dir={records}",
                         f"--verification_sets=lfw={tmp_path / 'lfw.bin'}", f"--model_dir={model_dir}",
                         "--mode=all", "--batch_size=4", "--epochs=1", "--steps_per_epoch=1"])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    with open(model_dir / "train" / "results.json") as f:
        results = json.load(f)
    assert set(results["verification"]) == {"lfw"}
    assert results["params"] == 24_025_600  # Table 5: ResNet-18, 24.02 M
    assert "no search" in done.stderr
    assert (model_dir / "export" / "model.tflite").exists()


def test_search_splits_of_face_data_score_on_the_training_identities(tmp_path):
    from bnas_tf import data

    casia = _casia_and_lfw(tmp_path)
    splits = data.search_splits("casia_webface", batch_size=4, seed=0, data_dir=str(casia), heldout_size=3)
    assert splits.spec.num_classes == 4 and splits.spec.image_shape == (112, 112, 3)
    assert (splits.weights_size, splits.arch_size, splits.heldout_size) == (10, 10, 2)  # n // 10 = 2
    assert set(splits.heldout_indices) <= set(splits.arch_indices)
    images, labels = next(iter(splits.weights_epoch(0)))
    assert images.shape == (4, 112, 112, 3) and -1.0 <= float(tf.reduce_min(images)) < float(tf.reduce_max(images)) <= 1.0
    assert set(labels.numpy()) <= set(range(4))
    held = [y.numpy() for _, y in splits.heldout]
    assert sum(len(y) for y in held) == 2
    with pytest.raises(ConfigError, match="no classification test split"):
        data.train_test("casia_webface", batch_size=4, seed=0, data_dir=str(casia))


@pytest.mark.slow
def test_cli_searches_cells_on_face_data_then_trains_and_verifies(tmp_path):
    casia = _casia_and_lfw(tmp_path)
    done = run(LAUNCH + ["--flagfile=configs/face_bnas.flags", "--mode=all", f"--data_dir={casia}",
                         f"--verification_sets=lfw={tmp_path / 'lfw.bin'}", f"--model_dir={tmp_path / 'run'}",
                         "--search_init_channels=4", "--search_layers=2", "--reduction_cells=1",
                         "--search_batch_size=4", "--trial_batch_size=4", "--heldout_size=2", "--k=2", "--t=1",
                         "--v_epochs=0", "--warmup_epochs=1", "--warmup_freeze_epochs=0", "--steps_per_epoch=1",
                         "--init_channels=4", "--layers=3", "--batch_size=4", "--epochs=1", "--embedding_size=16"])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert (tmp_path / "run" / "genotype.json").exists()
    with open(tmp_path / "run" / "train" / "results.json") as f:
        assert set(json.load(f)["verification"]) == {"lfw"}


@pytest.mark.slow
def test_face_demo_verifies_unseen_digits_well_above_chance(tmp_path):
    """configs/demo_face.flags, with a shorter search (K from 4): the embeddings of the
    identities the network never saw verify well above chance."""
    done = run(LAUNCH + ["--flagfile=configs/demo_face.flags", f"--model_dir={tmp_path}", "--k=4",
                         "--search_init_channels=4"])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    with open(tmp_path / "train" / "results.json") as f:
        accuracy = json.load(f)["verification"]["digits_7-9"]["accuracy"]
    assert accuracy > 0.62, accuracy
    assert "digits_7-9" in done.stderr and (tmp_path / "export" / "model_lce.tflite").exists()


@pytest.mark.parametrize("args, message", [
    (["--dataset=casia_webface", "--mode=train", "--backbone=resnet18"], "needs --data_dir"),
    (["--dataset=casia_webface", "--mode=search"], "reads the training images from data_dir"),
    (["--dataset=digits_faces", "--mode=search", "--backbone=resnet18"], "nothing to search"),
    (["--mode=convert"], "needs --data_dir"),
])
def test_cli_face_mistakes_get_one_clear_message(tmp_path, args, message):
    done = run(LAUNCH + [f"--model_dir={tmp_path}", *args])
    assert done.returncode == 2, done.stderr[-3000:]
    assert message in done.stderr and "Traceback" not in done.stderr


def test_cli_missing_verification_file_names_it(tmp_path):
    casia = _casia_and_lfw(tmp_path)
    done = run(LAUNCH + ["--dataset=casia_webface", "--mode=train", "--backbone=resnet18", f"--data_dir={casia}",
                         f"--verification_sets=agedb_30={tmp_path / 'missing.bin'}", f"--model_dir={tmp_path / 'r'}"])
    assert done.returncode == 2 and "missing.bin" in done.stderr and "Traceback" not in done.stderr

