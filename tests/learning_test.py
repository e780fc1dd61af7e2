"""Binary networks learn, and PReLU acts in 1-bit blocks (Sec. 3.4).

- In every 1-bit block (binary weights and activations) the PReLU slopes change
  the block's output: sign(PReLU(x)) = sign(x), so a PReLU right before a sign
  would not (the test fails on DARTS's ReLU -> conv -> BN order with PReLU for ReLU).
- A small 1-bit network, trained for a fixed short budget on the embedded
  digits, reaches a test accuracy far above chance (0.1); so does one with
  binary weights and float activations (PCNN).
"""

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from bnas_tf import layers  # noqa: E402
from bnas_tf import train  # noqa: E402

BLOCKS = {
    "ReLUConvBN": lambda: layers.ReLUConvBN(8, 1, binarization="pcnn", binary_activations=True),
    "BinarizedSepConv": lambda: layers.BinarizedSepConv(8, 3, binarization="pcnn", binary_activations=True),
    "BinarizedDilConv": lambda: layers.BinarizedDilConv(8, 3, binarization="xnor", binary_activations=True),
    "FactorizedReduce": lambda: layers.FactorizedReduce(8, binarization="pcnn", binary_activations=True),
}


@pytest.mark.parametrize("name", sorted(BLOCKS))
@pytest.mark.parametrize("training", [False, True])
def test_prelu_changes_the_output_of_1bit_blocks(name, training):
    block = BLOCKS[name]()
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 8)).astype("float32")
    block(x)  # build
    prelus = [l for l in block._flatten_layers(include_self=False) if isinstance(l, keras.layers.PReLU)]
    assert prelus
    outputs = []
    for slope in (0.25, -0.5, 1.0):
        for prelu in prelus:
            prelu.alpha.assign(np.full(prelu.alpha.shape, slope, "float32"))
        outputs.append(np.asarray(block(x, training=training)))
    for a, b in zip(outputs, outputs[1:]):
        assert np.max(np.abs(a - b)) > 1e-2


def _train(tmp_path, **kwargs):
    options = dict(
        genotype="DARTS_V2", dataset="digits", model_dir=str(tmp_path), init_channels=16, layers=5,
        batch_size=64, auxiliary_weight=0.0, drop_path=0.0, binarization="pcnn", optimizer="adam",
        learning_rate=0.005, weight_decay=0.0, verbose=0, log_every=0,
    )
    options.update(kwargs)
    return train.train(**options)


@pytest.mark.slow
def test_a_1bit_network_learns_the_digits(tmp_path):
    results = _train(tmp_path, binary_activations=True, full_precision_preprocess=True, epochs=5)  # 0.836, 0.816 (seeds 0, 1)
    assert results["test_accuracy"] >= 0.7, results["history"]


@pytest.mark.slow
def test_a_binary_weight_network_learns_the_digits(tmp_path):
    results = _train(tmp_path, epochs=3)  # 0.914
    assert results["test_accuracy"] >= 0.85, results["history"]
