"""Training metrics of quantized networks (Larq's `larq.metrics` on Keras 3).

A quantizer created with ``metrics=["flip_ratio"]`` owns a `FlipRatio` and
updates it with its quantized output on every call; Keras 3 collects the
metrics of sublayers, so the value appears in `fit`'s logs (named
``flip_ratio/<quantizer name>``) and is reset with the model's other metrics.
It watches the binarized kernel: how many weights change sign per step, the
quantity a BNN's learning rate (or Bop's threshold) is tuned by.
"""

import keras
import numpy as np
from keras import ops

from bnas_tf.errors import ConfigError

_PACKAGE = "bnas_tf"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FlipRatio(keras.metrics.Metric):
    r"""Mean fraction of the values of a tensor that changed since the previous update.

    Each `update_state(v)` after the first adds

        r_t = 1 - #{i : v_t[i] == v_{t-1}[i]} / size(v)

    and `result()` is the mean of the r_t, sum(r_t) / (count - 1): the first
    update (after construction or `reset_state`) only records the values to
    compare with. Values are compared after a cast to `values_dtype` (int8 by
    default: exact for the ±1 of a sign quantizer). `reset_state` keeps the
    recorded values, as Larq's does, and the next update again only records.

    ```python
    m = FlipRatio()
    m.update_state([1, 1])  # records
    m.update_state([2, 2])  # r = 1
    m.update_state([1, 2])  # r = 0.5; result() = 0.75
    ```
    """

    def __init__(self, values_dtype="int8", name="flip_ratio", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.values_dtype = keras.backend.standardize_dtype(values_dtype)
        self._previous = None

    def build(self, shape):
        """Creates the state for values of `shape` (every dimension known)."""
        shape = tuple(shape)
        if any(d is None for d in shape):
            raise ConfigError(
                "Invalid shape for `flip_ratio`: every dimension must be known (a kernel's shape, "
                f"not a batch of activations). Received: shape={shape!r}"
            )
        self._previous = self.add_variable(
            shape=shape, initializer="zeros", dtype=self.values_dtype, name="previous_values",
            aggregation="only_first_replica",
        )
        # Every replica sees the same kernel: keep one replica's count, not their sum.
        self.total, self.count = (
            self.add_variable(
                shape=(), initializer="zeros", dtype=self.dtype, name=name, aggregation="only_first_replica"
            )
            for name in ("total", "count")
        )
        self._size = float(np.prod(shape, dtype=np.int64))

    @property
    def built(self):
        return self._previous is not None

    def update_state(self, values, sample_weight=None):
        """Adds the flip ratio of `values` against the previous call's (none on the first)."""
        values = ops.cast(values, self.values_dtype)
        if not self.built:
            self.build(values.shape)
        unchanged = ops.cast(ops.count_nonzero(ops.equal(self._previous, values)), self.dtype)
        ratio = 1.0 - unchanged / self._size
        # sign(count) is 0 on the first update: it only records the reference values.
        self.total.assign_add(ratio * ops.sign(self.count))
        self.count.assign_add(ops.ones((), self.dtype))
        self._previous.assign(values)

    def result(self):
        return ops.divide_no_nan(self.total, ops.maximum(self.count - 1.0, 0.0))

    def reset_state(self):
        if not self.built:
            return
        self.total.assign(ops.zeros((), self.dtype))
        self.count.assign(ops.zeros((), self.dtype))

    def get_config(self):
        return {**super().get_config(), "values_dtype": self.values_dtype}


_METRICS = {"flip_ratio": FlipRatio}


def names():
    """The metric names a quantizer's `metrics` argument accepts."""
    return sorted(_METRICS)


def check(metrics):
    """`metrics` as a list of known names (None and () give []); a ConfigError otherwise."""
    if metrics is None:
        return []
    if isinstance(metrics, str) or not all(isinstance(m, str) for m in metrics):
        raise ConfigError(
            f"Invalid `metrics`: expected a list of names from {names()}. Received: metrics={metrics!r}"
        )
    unknown = [m for m in metrics if m not in _METRICS]
    if unknown:
        raise ConfigError(
            f"Invalid `metrics`: unknown {unknown}, expected names from {names()}. Received: metrics={metrics!r}"
        )
    return list(metrics)

