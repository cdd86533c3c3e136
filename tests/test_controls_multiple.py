import numpy as np
import pytest
from scipy.stats import false_discovery_control

from interplab.controls.multiple import (
    MIN_VERDICT_N,
    benjamini_hochberg,
    chance_p_value,
    grade_accuracy,
    grade_family,
)


def test_bh_matches_hand_computation_and_scipy():
    p = [0.01, 0.04, 0.03, 0.20]
    # sorted 0.01, 0.03, 0.04, 0.20 -> p*m/rank = 0.04, 0.06, 0.0533, 0.20 -> step-up minimum
    np.testing.assert_allclose(benjamini_hochberg(p), [0.04, 0.05333333, 0.05333333, 0.20])
    rng = np.random.default_rng(0)
    for _ in range(20):
        p = rng.random(37) ** 3
        np.testing.assert_allclose(benjamini_hochberg(p), false_discovery_control(p), rtol=1e-12)


def test_bh_leaves_nan_out_of_the_family():
    q = benjamini_hochberg([0.01, np.nan, 0.02])
    assert np.isnan(q[1])
    np.testing.assert_allclose(q[[0, 2]], [0.02, 0.02])  # a family of two, not three
    with pytest.raises(ValueError):
        benjamini_hochberg([1.5])


def test_chance_p_value_is_exact_binomial():
    assert chance_p_value(5, 5) == pytest.approx(2 * 0.5 ** 5)
    assert chance_p_value(50, 100) == pytest.approx(1.0)


def test_grading_separates_strong_weak_and_chance():
    assert grade_accuracy(0.02, 100, 1e-20) == "inverted"
    assert grade_accuracy(0.42, 400, 0.003) == "weakly below chance"
    assert grade_accuracy(0.42, 100, 0.2) == "chance"
    assert grade_accuracy(0.90, 100, 1e-9) == "above chance"
    assert grade_accuracy(0.58, 400, 0.01) == "weakly above chance"
    assert grade_accuracy(0.50, 100, 1.0, positive_rate=0.99) == "one class"
    # a 1-row test set at 0.00 must not be called "below chance"
    assert grade_accuracy(0.0, 1, 0.0) == "too few statements"


def test_family_correction_removes_a_lone_marginal_flag():
    # 0.42 on 200 rows: p ≈ 0.028 alone (significant), but not among 40 null cells after BH
    alone = grade_family([0.42], [200], [None])[0]
    assert alone.p < 0.05 and alone.label == "weakly below chance"
    family = grade_family([0.42] + [0.5] * 39, [200] * 40, [None] * 40)
    assert family[0].q > 0.05 and family[0].label == "chance"
    strong = grade_family([0.02] + [0.5] * 39, [200] * 40, [None] * 40)
    assert strong[0].label == "inverted"
    small = grade_family([0.0, 0.1], [MIN_VERDICT_N - 1, 100], [None, None])
    assert small[0].label == "too few statements" and np.isnan(small[0].q)
    assert small[1].q == pytest.approx(small[1].p)  # the small cell is not in the family
