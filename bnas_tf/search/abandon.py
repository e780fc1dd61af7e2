"""Operation abandoning for the performance-based search (BNAS Sec. 3.3).

Pure NumPy arithmetic of Algorithm 1 and Eqs. 7-11 of the BNAS paper
(Chen et al., "Binarized Neural Architecture Search for Efficient Object
Recognition"). No TensorFlow or Keras is imported here: the Keras-Tuner
oracle (`bnas_tf.search.oracle`) only calls these functions.

Every array is shaped `[num_edges, K_total]`: one row per edge (the two cell
types can be stacked as one block of edges), one column per operation slot
(`K_total = len(PRIMITIVES)`, 8 in the paper). A boolean `alive` mask marks
the operations still in the search space `O^(i,j)` of each edge; during the
search every edge has the same number `K` of alive operations.

Conventions:
- Ties are always broken towards the lower operation index (the order of
  `PRIMITIVES`), so every function is deterministic.
- Entries of abandoned (not alive) operations are never read and are
  returned unchanged.
"""

import math

import numpy as np


def _as_bool_mask(mask, name, shape=None):
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(
            f"`{name}` must be 2-D [num_edges, K_total]. Received: {name}.shape={mask.shape}"
        )
    if shape is not None and mask.shape != shape:
        raise ValueError(f"`{name}` must have shape {shape}. Received: {name}.shape={mask.shape}")
    return mask.astype(bool)


def _as_float(array, name, shape):
    array = np.asarray(array, dtype=np.float64)
    if array.shape != shape:
        raise ValueError(f"`{name}` must have shape {shape}. Received: {name}.shape={array.shape}")
    return array


def smaller_set(alpha, alive, one_bit=False):
    """Selects `O_smaller` on every edge (Algorithm 1, line 3).

    `O_smaller^(i,j)` consists of the `ceil(K/2)` alive operations of edge
    (i, j) with the smallest architecture parameters `alpha_k^(i,j)`, i.e. the
    half of the space "with less potential" that the search then samples and
    scores. Ties in `alpha` go to the lower operation index.

    1-bit BNAS skips the PC-DARTS warm-up (Sec. 3.3: "we do not use PC-DARTS
    as warm-up ... Hence, O_smaller is O"), so with `one_bit=True` every alive
    operation is in `O_smaller` and `alpha` is not read (it may be None).

    Args:
        alpha: float array [num_edges, K_total] of architecture parameters
            (entries of abandoned operations are ignored); may be None when
            `one_bit` is True.
        alive: bool array [num_edges, K_total], the operations still in `O`.
        one_bit: bool, 1-bit search (`O_smaller = O`).

    Returns:
        bool array [num_edges, K_total], the mask `q^(i,j)_k` of Eq. 9
        (1 for the operations in `O_smaller`).
    """
    alive = _as_bool_mask(alive, "alive")
    if np.any(alive.sum(axis=1) < 1):
        raise ValueError("Every edge needs at least one alive operation.")
    if one_bit:
        return alive.copy()
    alpha = _as_float(alpha, "alpha", alive.shape)
    if not np.all(np.isfinite(alpha[alive])):
        raise ValueError("`alpha` must be finite on the alive operations.")
    smaller = np.zeros_like(alive)
    for e in range(alive.shape[0]):
        ops = np.flatnonzero(alive[e])
        size = math.ceil(len(ops) / 2)
        # A stable sort keeps equal alphas in index order: ties -> lower index.
        chosen = ops[np.argsort(alpha[e, ops], kind="stable")[:size]]
        smaller[e, chosen] = True
    return smaller


def plan_round(smaller, T, rng, per_repetition=None):
    """Plans the trials of one round (Algorithm 1, lines 4-10).

    For each repetition t = 1..T, independently on every edge, the operations
    of `O_smaller^(i,j)` are put in a uniformly random order (sampling without
    replacement from `O'_smaller <- O_smaller`), and the first
    `per_repetition` of them are used: trial e of repetition t takes the e-th
    operation of each edge's order (line 6: `for e = 1, ..., ceil(K/2)`).

    - Normal search: `|O_smaller| = ceil(K/2) = per_repetition`, so every
      operation of `O_smaller` is sampled exactly once per repetition and gets
      exactly T accuracies per round.
    - 1-bit search: `O_smaller = O` holds K operations but a repetition still
      samples `ceil(K/2)` of them, so an operation gets between 0 and T
      accuracies per round. The counts differ, which is what gives the UCB
      term of Eq. 10 something to decide.

    Either way a round has `T * ceil(K/2)` trials. The random draws happen in
    a fixed order (repetition-major, then edge), so a plan is a pure function
    of its arguments and the generator state.

    Args:
        smaller: bool array [num_edges, K_total], `O_smaller` on every edge;
            every edge must hold the same number of operations.
        T: int >= 1, repetitions per round.
        rng: `numpy.random.Generator`.
        per_repetition: int, the trials per repetition, between 1 and
            `|O_smaller|`; None: `|O_smaller|`.

    Returns:
        int array [T * per_repetition, num_edges]: row i is trial i, column e
        the operation index it uses on edge e.
    """
    smaller = _as_bool_mask(smaller, "smaller")
    if int(T) != T or T < 1:
        raise ValueError(f"`T` must be an integer >= 1. Received: T={T!r}")
    sizes = smaller.sum(axis=1)
    if sizes.min() < 1 or sizes.min() != sizes.max():
        raise ValueError(
            "Every edge must hold the same, non-zero number of operations in "
            f"O_smaller. Received: sizes={sizes.tolist()}"
        )
    size = int(sizes[0])
    per = size if per_repetition is None else per_repetition
    if int(per) != per or not 1 <= per <= size:
        raise ValueError(
            f"`per_repetition` must be an integer between 1 and |O_smaller|={size}. "
            f"Received: per_repetition={per_repetition!r}"
        )
    per = int(per)
    num_edges = smaller.shape[0]
    plan = np.zeros((int(T) * per, num_edges), dtype=np.int64)
    for t in range(int(T)):
        for e in range(num_edges):
            ops = np.flatnonzero(smaller[e])
            plan[t * per:(t + 1) * per, e] = rng.permutation(ops)[:per]
    return plan


def mean_accuracy(acc_sum, acc_count):
    """Mean accuracy of every operation: `ybar_k = (1/T) sum_t y_{k,t}` (Eq. 7).

    Returns NaN where an operation has no accuracy (`acc_count == 0`).
    """
    acc_sum = np.asarray(acc_sum, dtype=np.float64)
    acc_count = np.asarray(acc_count, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(acc_count > 0, acc_sum / np.maximum(acc_count, 1), np.nan)


# The unit of the accuracies in Eq. 7: the factor applied to a fraction in [0, 1].
ACCURACY_SCALES = {"percent": 100.0, "fraction": 1.0}


def likelihood_update(s, alive, smaller, acc_sum, acc_count, scale=1.0):
    """Updates the selection likelihood with Eqs. 7-9.

    The scored set `S` of an edge holds the operations of `O_smaller` with at
    least one accuracy this round: all of `O_smaller` in the normal search,
    the `ceil(K/2)` or more operations that the T repetitions happened to
    sample in the 1-bit search. With `ybar_k = scale * acc_sum_k / acc_count_k`
    the mean accuracy of operation k this round, on every edge (i, j):

    - Eq. 7, for k in `S`:
      `s_smaller(o_k) = exp(ybar_k) / sum_{m in S} exp(ybar_m)`;
    - Eq. 8, for the other alive operations (the larger half, and in the
      1-bit search the operations of `O_smaller` that no trial sampled):
      `s_larger = 1/2 (max_k s_smaller(o_k) + 1/|S| sum_k s_smaller(o_k))`,
      the mean over `S` (the paper's `1/ceil(K/2)`, as `|S| = ceil(K/2)` in
      the normal search);
    - Eq. 9: `s(o_k) <- 1/2 s(o_k) + q_k s_smaller(o_k) + (1 - q_k) s_larger`,
      q the mask of `S`.

    The paper does not say in which unit the accuracies enter Eq. 7, and the
    softmax depends on it: `scale=100` (percent, as the PC-DARTS code that
    BNAS builds on reports accuracies) against `scale=1` (fractions) makes
    `s_smaller` nearly one-hot against nearly uniform (BUILD.md).

    Algorithm 1 starts from `s = 0`.

    Args:
        s: float array [num_edges, K_total], the current likelihood.
        alive: bool array, the operations still in `O`.
        smaller: bool array, `O_smaller` (a subset of `alive`).
        acc_sum: float array, the sum of this round's accuracies per
            operation, as fractions in [0, 1].
        acc_count: int array, the number of accuracies per operation; every
            edge needs at least one operation of `O_smaller` with a positive
            count.
        scale: float > 0, the factor from a fraction to the unit of Eq. 7
            (`ACCURACY_SCALES`).

    Returns:
        float array [num_edges, K_total], the updated `s` (abandoned
        operations keep their old value).
    """
    s = np.asarray(s, dtype=np.float64)
    shape = s.shape
    alive = _as_bool_mask(alive, "alive", shape)
    smaller = _as_bool_mask(smaller, "smaller", shape)
    acc_sum = _as_float(acc_sum, "acc_sum", shape)
    acc_count = _as_float(acc_count, "acc_count", shape)
    if not (isinstance(scale, (int, float, np.number)) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"`scale` must be a finite number > 0. Received: scale={scale!r}")
    if np.any(smaller & ~alive):
        raise ValueError("`smaller` must be a subset of `alive`.")
    scored = smaller & (acc_count > 0)
    if np.any(scored.sum(axis=1) < 1):
        raise ValueError("Every edge needs at least one operation of O_smaller with an accuracy.")
    ybar = float(scale) * mean_accuracy(acc_sum, acc_count)
    if not np.all(np.isfinite(ybar[scored])):
        raise ValueError("The accuracies of O_smaller must be finite.")
    # Eq. 7, softmax over S (shifted by the row maximum for stability).
    logits = np.where(scored, ybar, -np.inf)
    logits = logits - logits.max(axis=1, keepdims=True)
    exp = np.where(scored, np.exp(logits), 0.0)
    s_smaller = exp / exp.sum(axis=1, keepdims=True)
    # Eq. 8, one value per edge.
    size = scored.sum(axis=1, keepdims=True)
    s_larger = 0.5 * (
        s_smaller.max(axis=1, keepdims=True) + s_smaller.sum(axis=1, keepdims=True) / size
    )
    # Eq. 9.
    q = scored.astype(np.float64)
    updated = 0.5 * s + q * s_smaller + (1.0 - q) * s_larger
    return np.where(alive, updated, s)


def ucb_bonus(n, N, delta):
    """The exploration term of Eq. 10: `delta * sqrt(2 ln N / n_k)`.

    1-bit BNAS adds it to the selection likelihood after Eq. 9:
    `s(o_k) <- s(o_k) + delta * sqrt(2 log N / n_k)`.

    Args:
        n: int array [num_edges, K_total], `n_k^(i,j)`: how many times
            operation k of edge (i, j) has been sampled so far (cumulative
            over all rounds).
        N: int, the total number of samples so far: the number of scored
            trials, each of which samples one operation per edge (so
            `N = sum_k n_k` on every edge, abandoned operations included).
        delta: float >= 0, the exploration weight (2 in the paper).

    Returns:
        float array like `n`. An operation never sampled (`n_k = 0`) gets
        `+inf` (it is never abandoned; 0 when `delta == 0`).
    """
    n = np.asarray(n, dtype=np.float64)
    if N < 0 or np.any(n < 0):
        raise ValueError(f"Sample counts must be >= 0. Received: N={N!r}")
    if delta < 0:
        raise ValueError(f"`delta` must be >= 0. Received: delta={delta!r}")
    log_n = math.log(N) if N > 0 else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        bonus = delta * np.sqrt(2.0 * log_n / n)
    # n_k = 0: an infinite bonus, unless delta = 0 switches exploration off.
    return np.where(n > 0, bonus, np.inf if delta > 0 else 0.0)


def abandon(s, alive):
    """Abandons the least likely operation on every edge (Eq. 11).

    `O^(i,j) <- O^(i,j) - {argmin_{o_k in O^(i,j)} s(o_k)}`, the argmin taken
    over the alive operations only, ties to the lower index.

    Args:
        s: float array [num_edges, K_total], the selection likelihood.
        alive: bool array, the operations still in `O`; every edge needs at
            least two.

    Returns:
        `(new_alive, abandoned)`: the new bool mask and an int array
        [num_edges] with the abandoned operation index of every edge.
    """
    s = np.asarray(s, dtype=np.float64)
    alive = _as_bool_mask(alive, "alive", s.shape)
    if np.any(alive.sum(axis=1) < 2):
        raise ValueError("Every edge needs at least two alive operations to abandon one.")
    if np.any(np.isnan(s[alive])):
        raise ValueError("The selection likelihood of alive operations must not be NaN.")
    abandoned = np.zeros(s.shape[0], dtype=np.int64)
    for e in range(s.shape[0]):
        ops = np.flatnonzero(alive[e])
        # np.argmin returns the first minimum: ties -> lower index.
        abandoned[e] = ops[np.argmin(s[e, ops])]
    new_alive = alive.copy()
    new_alive[np.arange(s.shape[0]), abandoned] = False
    return new_alive, abandoned
