"""Tests of bnas_tf.search.abandon against hand computations (Eqs. 7-11).

Every expected number below is worked out in the comments from the paper's
formulas; none is produced by the code under test.
"""

import math

import numpy as np
import pytest

from bnas_tf.search import abandon

T_, F_ = True, False


def test_smaller_set_takes_the_smallest_alphas_of_the_alive_ops():
    # K_total = 4 slots, K = 3 alive ops per edge -> ceil(3/2) = 2 ops each.
    alive = np.array(
        [
            [T_, T_, T_, F_],
            [T_, F_, T_, T_],
            [F_, T_, T_, T_],
        ]
    )
    alpha = np.array(
        [
            # alive alphas 0.5, 0.1, 0.3 -> the two smallest are ops 1 (0.1) and 2 (0.3);
            # the dead op 3 has the smallest alpha of all and must be ignored.
            [0.5, 0.1, 0.3, -9.0],
            # alive alphas 0.2, 0.2, 0.1 -> op 3 (0.1), then the tie 0.2/0.2 goes to op 0.
            [0.2, -5.0, 0.2, 0.1],
            # all alive alphas equal -> the two lowest indices, ops 1 and 2.
            [0.0, 1.0, 1.0, 1.0],
        ]
    )
    expected = np.array(
        [
            [F_, T_, T_, F_],
            [T_, F_, F_, T_],
            [F_, T_, T_, F_],
        ]
    )
    np.testing.assert_array_equal(abandon.smaller_set(alpha, alive), expected)


def test_smaller_set_even_and_two_op_spaces():
    # K = 4 -> ceil(4/2) = 2: alphas 0.3, -0.1, 0.2, 0.0 -> ops 1 and 3.
    # K = 2 -> ceil(2/2) = 1: alphas 0.7 (op 0), 0.4 (op 2) -> op 2.
    alive = np.array([[T_, T_, T_, T_], [T_, F_, T_, F_]])
    alpha = np.array([[0.3, -0.1, 0.2, 0.0], [0.7, 0.0, 0.4, 0.0]])
    expected = np.array([[F_, T_, F_, T_], [F_, F_, T_, F_]])
    np.testing.assert_array_equal(abandon.smaller_set(alpha, alive), expected)


def test_smaller_set_one_bit_is_every_alive_op():
    # Sec. 3.3: 1-bit search skips the warm-up, so O_smaller = O; alpha is not needed.
    alive = np.array([[T_, F_, T_, T_], [F_, T_, T_, T_]])
    np.testing.assert_array_equal(abandon.smaller_set(None, alive, one_bit=True), alive)


def test_plan_round_samples_each_smaller_op_once_per_repetition():
    # Two edges, O_smaller = {1, 3} on edge 0 and {0, 2} on edge 1 (|O_smaller| = 2), T = 3:
    # 3 x 2 = 6 trials; in every block of 2 rows each edge uses each of its ops exactly once.
    smaller = np.array([[F_, T_, F_, T_], [T_, F_, T_, F_]])
    plan = abandon.plan_round(smaller, 3, np.random.default_rng(0))
    assert plan.shape == (6, 2)
    for t in range(3):
        block = plan[2 * t : 2 * t + 2]
        assert sorted(block[:, 0].tolist()) == [1, 3]
        assert sorted(block[:, 1].tolist()) == [0, 2]


def test_plan_round_draw_order_and_determinism():
    # The documented draw order: repetition-major, then edge, one permutation each.
    smaller = np.array([[T_, T_, T_, F_], [F_, T_, T_, T_]])
    plan = abandon.plan_round(smaller, 2, np.random.default_rng([5, 1]))
    rng = np.random.default_rng([5, 1])
    # |O_smaller| = 3: rows 0-2 are repetition 1, rows 3-5 repetition 2.
    expected = np.zeros((6, 2), dtype=int)
    for t in range(2):
        expected[3 * t : 3 * t + 3, 0] = rng.permutation([0, 1, 2])
        expected[3 * t : 3 * t + 3, 1] = rng.permutation([1, 2, 3])
    np.testing.assert_array_equal(plan, expected)
    again = abandon.plan_round(smaller, 2, np.random.default_rng([5, 1]))
    np.testing.assert_array_equal(plan, again)


def test_plan_round_single_op():
    # K = 2 -> |O_smaller| = 1: all T trials use that op.
    smaller = np.array([[F_, F_, T_], [T_, F_, F_]])
    plan = abandon.plan_round(smaller, 3, np.random.default_rng(1))
    np.testing.assert_array_equal(plan, [[2, 0], [2, 0], [2, 0]])


def test_plan_round_per_repetition_samples_without_replacement():
    # 1-bit line 6: O_smaller = O holds K = 5 ops, each repetition samples ceil(5/2) = 3
    # of them without replacement: the first 3 of each permutation, drawn in the same order.
    smaller = np.array([[T_, T_, T_, T_, T_, F_], [F_, T_, T_, T_, T_, T_]])
    plan = abandon.plan_round(smaller, 4, np.random.default_rng(7), per_repetition=3)
    rng = np.random.default_rng(7)
    assert plan.shape == (12, 2)
    for t in range(4):
        np.testing.assert_array_equal(plan[3 * t : 3 * t + 3, 0], rng.permutation(5)[:3])
        np.testing.assert_array_equal(plan[3 * t : 3 * t + 3, 1], rng.permutation([1, 2, 3, 4, 5])[:3])
    with pytest.raises(ValueError, match="per_repetition"):
        abandon.plan_round(smaller, 1, np.random.default_rng(0), per_repetition=6)


def test_plan_round_rejects_unequal_sizes():
    with pytest.raises(ValueError, match="same"):
        abandon.plan_round(np.array([[T_, T_], [T_, F_]]), 1, np.random.default_rng(0))


def test_likelihood_update_by_hand():
    alive = np.array([[T_, T_, T_, T_], [T_, T_, F_, T_], [T_, T_, F_, F_]])
    smaller = np.array([[T_, F_, T_, F_], [F_, T_, F_, T_], [F_, T_, F_, F_]])
    # T = 2 accuracies per op of O_smaller.
    acc_sum = np.array(
        [
            [0.5 + 0.7, 0.0, 0.2 + 0.4, 0.0],  # ybar_0 = 0.6, ybar_2 = 0.3
            [0.0, 0.8 + 0.8, 0.0, 0.8 + 0.8],  # ybar_1 = ybar_3 = 0.8
            [0.0, 0.3 + 0.1, 0.0, 0.0],  # ybar_1 = 0.2 (the only op)
        ]
    )
    acc_count = np.array([[2, 0, 2, 0], [0, 2, 0, 2], [0, 2, 0, 0]])
    s = np.array([[0.4, 0.2, 0.0, 0.6], [0.0, 1.0, 7.0, 0.2], [0.6, 0.2, 0.0, 0.0]])
    # Edge 0.
    #   Eq. 7: s_smaller(0) = e^0.6 / (e^0.6 + e^0.3) = 1 / (1 + e^-0.3) = 0.574442516811659,
    #          s_smaller(2) = 1 - 0.574442516811659 = 0.425557483188341.
    #   Eq. 8: s_larger = 1/2 (0.574442516811659 + (1/2) * 1) = 0.5372212584058296.
    #   Eq. 9: s(0) = 0.4/2 + 0.574442516811659 = 0.774442516811659
    #          s(1) = 0.2/2 + 0.5372212584058296 = 0.6372212584058296
    #          s(2) = 0.0/2 + 0.425557483188341 = 0.425557483188341
    #          s(3) = 0.6/2 + 0.5372212584058296 = 0.8372212584058296
    # Edge 1 (K = 3, op 2 abandoned).
    #   Eq. 7: equal means -> s_smaller(1) = s_smaller(3) = 1/2.
    #   Eq. 8: s_larger = 1/2 (1/2 + (1/2)(1/2 + 1/2)) = 0.5.
    #   Eq. 9: s(0) = 0 + 0.5 = 0.5, s(1) = 0.5 + 0.5 = 1.0, s(3) = 0.1 + 0.5 = 0.6;
    #          the abandoned op 2 keeps 7.0.
    # Edge 2 (K = 2, |O_smaller| = 1).
    #   Eq. 7: s_smaller(1) = 1.  Eq. 8: s_larger = 1/2 (1 + 1/1) = 1.
    #   Eq. 9: s(0) = 0.3 + 1 = 1.3, s(1) = 0.1 + 1 = 1.1.
    expected = np.array(
        [
            [0.774442516811659, 0.6372212584058296, 0.425557483188341, 0.8372212584058296],
            [0.5, 1.0, 7.0, 0.6],
            [1.3, 1.1, 0.0, 0.0],
        ]
    )
    updated = abandon.likelihood_update(s, alive, smaller, acc_sum, acc_count)
    np.testing.assert_allclose(updated, expected, rtol=1e-12, atol=0)


def test_likelihood_update_from_zero_one_bit():
    # Algorithm 1 starts at s = 0. 1-bit: O_smaller = O = {0, 1, 2}, T = 1.
    # ybar = (0, ln 2, ln 3) -> e^ybar = (1, 2, 3), sum 6 -> Eq. 7: (1/6, 2/6, 3/6);
    # no op outside O_smaller, so Eq. 9 gives s = 0/2 + s_smaller = (1/6, 1/3, 1/2).
    alive = np.array([[T_, T_, T_]])
    acc_sum = np.array([[0.0, math.log(2.0), math.log(3.0)]])
    updated = abandon.likelihood_update(np.zeros((1, 3)), alive, alive, acc_sum, np.ones((1, 3)))
    np.testing.assert_allclose(updated, [[1 / 6, 1 / 3, 1 / 2]], rtol=1e-12)


def test_likelihood_update_needs_one_scored_op_per_edge():
    alive = np.array([[T_, T_], [T_, T_]])
    with pytest.raises(ValueError, match="accuracy"):
        abandon.likelihood_update(
            np.zeros((2, 2)), alive, alive, np.zeros((2, 2)), np.array([[1, 0], [0, 0]])
        )


def test_likelihood_update_unsampled_op_of_o_smaller_gets_eq8():
    # 1-bit: O_smaller = O = {0, 1, 2}, but only ops 0 and 1 were sampled.
    # ybar = (ln 1, ln 3) -> Eq. 7 over S = {0, 1}: (1/4, 3/4);
    # Eq. 8 for op 2: 1/2 (3/4 + (1/2)(1/4 + 3/4)) = 0.625; Eq. 9 from s = (0.2, 0.2, 0.2).
    alive = np.array([[T_, T_, T_]])
    acc_sum = np.array([[0.0, 2 * math.log(3.0), 0.0]])  # op 1 sampled twice
    acc_count = np.array([[1, 2, 0]])
    updated = abandon.likelihood_update(np.full((1, 3), 0.2), alive, alive, acc_sum, acc_count)
    np.testing.assert_allclose(updated, [[0.1 + 0.25, 0.1 + 0.75, 0.1 + 0.625]], rtol=1e-12)


def test_likelihood_update_scale_is_the_unit_of_eq7():
    # Percent: ybar = (60, 30) -> Eq. 7: (1/(1 + e^-30), e^-30/(1 + e^-30)).
    alive = np.array([[T_, T_]])
    acc_sum, acc_count = np.array([[0.6, 0.3]]), np.ones((1, 2))
    updated = abandon.likelihood_update(
        np.zeros((1, 2)), alive, alive, acc_sum, acc_count, scale=abandon.ACCURACY_SCALES["percent"]
    )
    np.testing.assert_allclose(
        updated, [[1 / (1 + math.exp(-30)), math.exp(-30) / (1 + math.exp(-30))]], rtol=1e-12
    )
    with pytest.raises(ValueError, match="scale"):
        abandon.likelihood_update(np.zeros((1, 2)), alive, alive, acc_sum, acc_count, scale=0)


def test_mean_accuracy():
    # (0.5 + 0.7) / 2 = 0.6; no accuracy -> NaN.
    ybar = abandon.mean_accuracy([[1.2, 0.0]], [[2, 0]])
    assert ybar[0, 0] == pytest.approx(0.6)
    assert math.isnan(ybar[0, 1])


def test_ucb_bonus_by_hand():
    # Eq. 10: delta * sqrt(2 ln N / n_k), N = 9, delta = 2:
    #   n = 3: 2 * sqrt(2 * 2.1972245773 / 3) = 2 * sqrt(1.4648163849) = 2.420591981223447
    #   n = 6: 2 * sqrt(2 * 2.1972245773 / 6) = 2 * sqrt(0.7324081924) = 1.7116170044088794
    #   n = 0: never sampled -> +inf
    bonus = abandon.ucb_bonus(np.array([[3, 6, 0]]), 9, 2.0)
    assert bonus[0, 0] == pytest.approx(2.420591981223447, rel=1e-12)
    assert bonus[0, 1] == pytest.approx(1.7116170044088794, rel=1e-12)
    assert bonus[0, 2] == math.inf
    # delta = 0 switches exploration off, also for n = 0; N = 1 gives ln 1 = 0.
    np.testing.assert_array_equal(abandon.ucb_bonus(np.array([[3, 0]]), 9, 0.0), [[0.0, 0.0]])
    np.testing.assert_array_equal(abandon.ucb_bonus(np.array([[1]]), 1, 2.0), [[0.0]])


def test_abandon_by_hand():
    alive = np.array([[T_, T_, T_, T_], [F_, T_, T_, F_], [F_, T_, T_, F_]])
    s = np.array(
        [
            [0.5, 0.2, 0.2, 0.9],  # tie 0.2/0.2 -> the lower index, op 1
            [0.1, 0.4, 0.3, 0.0],  # dead ops 0 and 3 are ignored -> op 2
            [0.0, math.inf, math.inf, 0.0],  # all alive at +inf -> op 1, not a dead op
        ]
    )
    new_alive, abandoned = abandon.abandon(s, alive)
    np.testing.assert_array_equal(abandoned, [1, 2, 1])
    np.testing.assert_array_equal(
        new_alive, [[T_, F_, T_, T_], [F_, T_, F_, F_], [F_, F_, T_, F_]]
    )


def test_abandon_needs_two_alive_ops():
    with pytest.raises(ValueError, match="two"):
        abandon.abandon(np.zeros((1, 2)), np.array([[T_, F_]]))


def test_ucb_bonus_changes_the_abandoned_op():
    # One edge, two alive ops, s after Eq. 9 = (0.60, 0.55); op 0 was sampled
    # n = 9 times, op 1 once, N = 10 samples.
    #   delta = 0: argmin (0.60, 0.55) -> op 1.
    #   delta = 2: bonus(0) = 2 sqrt(2 ln 10 / 9) = 1.4306440175262316,
    #              bonus(1) = 2 sqrt(2 ln 10 / 1) = 4.291932052578694,
    #              s = (2.0306..., 4.8419...) -> op 0.
    alive = np.array([[T_, T_]])
    s = np.array([[0.60, 0.55]])
    n = np.array([[9, 1]])
    _, without = abandon.abandon(s + abandon.ucb_bonus(n, 10, 0.0), alive)
    bonus = abandon.ucb_bonus(n, 10, 2.0)
    np.testing.assert_allclose(bonus, [[1.4306440175262316, 4.291932052578694]], rtol=1e-12)
    _, with_ucb = abandon.abandon(s + bonus, alive)
    assert without.tolist() == [1]
    assert with_ucb.tolist() == [0]
