"""Larq reference values for tests/quantizers_test.py (run as a subprocess).

Larq 0.14 only imports under Keras 2, so this script runs in its own process
with ``TF_USE_LEGACY_KERAS=1`` (``tf.keras`` is then ``tf_keras``)::

    TF_USE_LEGACY_KERAS=1 python tests/larq_reference.py CASES.json INPUTS.npz OUT.npz

CASES.json is a list of ``{"id", "class_name", "config"}``; INPUTS.npz holds
``<id>/x`` (the input) and ``<id>/dy`` (the upstream gradient) for each case.
For each case the script builds ``larq.quantizers.<class_name>(**config)``,
runs it on ``x`` under a ``tf.GradientTape`` and writes ``<id>/y`` (forward),
``<id>/dx`` (the gradient of ``sum(y * dy)``, i.e. the vector-Jacobian product
with ``dy``), ``<id>/precision`` (the layer's ``precision``, -1 for None) and
``<id>/config`` (the layer's ``get_config()`` as JSON) to OUT.npz.
When ``larq.quantizers`` has a functional form of the same name (``ste_sign``,
...) it is evaluated too and written as ``<id>/y_fn`` and ``<id>/dx_fn``.
"""

import json
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import larq as lq  # noqa: E402

_FUNCTIONS = {
    "SteSign": "ste_sign",
    "ApproxSign": "approx_sign",
    "SwishSign": "swish_sign",
    "SteTern": "ste_tern",
    "SteHeaviside": "ste_heaviside",
}


def _value_and_grad(fn, x, dy):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
    # A layer casts a float64 input to its float32 compute dtype.
    dx = tape.gradient(y, x, output_gradients=tf.constant(dy.astype(y.dtype.as_numpy_dtype)))
    return y.numpy(), dx.numpy()


def main(cases_path, inputs_path, out_path):
    with open(cases_path) as f:
        cases = json.load(f)
    inputs = np.load(inputs_path)
    out = {}
    for case in cases:
        key, config = case["id"], case["config"]
        x, dy = inputs[f"{key}/x"], inputs[f"{key}/dy"]
        layer = getattr(lq.quantizers, case["class_name"])(**config)
        out[f"{key}/y"], out[f"{key}/dx"] = _value_and_grad(layer, x, dy)
        out[f"{key}/precision"] = np.array(
            -1 if layer.precision is None else layer.precision
        )
        out[f"{key}/config"] = np.array(json.dumps(layer.get_config()))
        fn_name = _FUNCTIONS.get(case["class_name"])
        if fn_name is not None:
            fn = getattr(lq.quantizers, fn_name)
            out[f"{key}/y_fn"], out[f"{key}/dx_fn"] = _value_and_grad(
                lambda t: fn(t, **config), x, dy
            )
    np.savez(out_path, **out)


if __name__ == "__main__":
    main(*sys.argv[1:4])
