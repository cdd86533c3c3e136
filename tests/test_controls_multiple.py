import numpy as np
import pytest
from scipy.stats import false_discovery_control

from interplab.controls import null_p_value
from interplab.controls.multiple import (
    FDR_LEVEL,
    MIN_VERDICT_N,
    FamilyTest,
    benjamini_hochberg,
    chance_p_value,
    correct_cells,
    correct_family,
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


def _null_family(seed, m=50, k=200, planted=None):
    """m cells, each an observed mean effect and k null draws of it from the same distribution
    (a planted cell's observed value is shifted far beyond its null)."""
    rng = np.random.default_rng(seed)
    tests = []
    for i in range(m):
        null, observed = rng.standard_normal(k), rng.standard_normal()
        if i == planted:
            observed += 6.0
        t = null_p_value(observed, null)
        tests.append(FamilyTest(f"cell {i}", t.p, observed, t.floor))
    return tests


def test_a_family_of_pure_nulls_flags_nothing_after_correction():
    # a seeded family where uncorrected p < 0.05 flags several cells
    tests = _null_family(seed=0)
    raw = sum(t.p < 0.05 for t in tests)
    assert raw >= 2
    family = correct_family(tests)
    assert family.m == 50 and family.alpha == FDR_LEVEL
    assert not any(t.significant for t in family.tests)
    assert {t.verdict for t in family.tests} == {"not significant"}
    # over many seeded families of nulls, BH keeps the share with any flag near α (under the
    # global null the false discovery rate is the chance of any rejection)
    rng = np.random.default_rng(1)
    flagged = [correct_family([FamilyTest(str(i), float(p)) for i, p in
                               enumerate(rng.random(50))]).tests for _ in range(400)]
    any_flag = np.mean([any(t.significant for t in f) for f in flagged])
    raw_flag = np.mean([any(t.p < 0.05 for t in f) for f in flagged])
    assert any_flag <= FDR_LEVEL + 0.025 and raw_flag > 0.9


def test_a_planted_effect_survives_correction_with_its_direction():
    # 200 draws per cell: the planted cell is at its floor, but alone among 50 tests that floor
    # corrects to q = 50/201, too coarse to call it (and the family says so)
    family = correct_family(_null_family(seed=0, planted=7))
    hit = family["cell 7"]
    assert hit.at_floor and hit.p == 1 / 201 and hit.q > FDR_LEVEL and hit.q_bound
    assert family.floor_q_alone == pytest.approx(50 / 201)
    assert hit.verdict == "not significant" and family.notes
    # with enough draws for 50 tests the lone planted cell is significant after correction
    family = correct_family(_null_family(seed=0, k=2000, planted=7))
    assert [t.label for t in family.tests if t.significant] == ["cell 7"]
    assert family["cell 7"].q == pytest.approx(50 / 2001) and family["cell 7"].q_bound
    assert family["cell 7"].q_text() == "q ≤ 0.025"
    assert family["cell 7"].text() == "above the null (q ≤ 0.025)"
    # the same effect in the other direction is called so
    down = correct_family([FamilyTest("a", 1e-4, -0.3), FamilyTest("b", 0.8, 0.1)])
    assert down["a"].verdict == "below the null" and down["b"].verdict == "not significant"


def test_floors_nan_and_the_note_for_too_few_draws():
    family = correct_family([FamilyTest(f"t{i}", 1 / 21, 1.0, 1 / 21) for i in range(6)]
                            + [FamilyTest("none", float("nan"))])
    assert family.m == 6 and family["none"].verdict == "no test" and np.isnan(family["none"].q)
    # every test at the floor: q is the floor, an upper bound
    assert all(t.q == pytest.approx(1 / 21) and t.q_bound for t in family.tests[:6])
    assert family.floor_q_alone == pytest.approx(6 / 21)
    assert family.notes and "cannot reach q ≤ 0.05" in family.notes[0]
    assert not correct_family([FamilyTest("one", 1 / 21, 1.0, 1 / 21)]).notes  # 0.048 ≤ 0.05
    # a q resting on no floor p is exact
    exact = correct_family([FamilyTest("a", 0.01, 1.0, 1 / 1001), FamilyTest("b", 0.02)])
    assert not exact["a"].q_bound and not exact["b"].q_bound
    with pytest.raises(ValueError, match="unique"):
        correct_family([FamilyTest("a", 0.1), FamilyTest("a", 0.2)])


def test_correct_cells_writes_q_and_verdict_into_every_view_of_a_test():
    row, null = {"p": 1 / 101, "k": 100}, {"p": 1 / 101, "k": 100}
    boot = {"p": 0.5, "p_floor": 2 / 1001, "value": 0.1}
    family = correct_cells([("steer", [row, null], 0.4), ("fve", boot, 0.1)])
    assert row == null and row["verdict"] == "above the null" and row["q_bound"]
    assert row["q"] == pytest.approx(2 / 101) and row["test"] == "steer"
    assert boot["verdict"] == "not significant" and boot["q"] == 0.5
    assert family.to_dict()["tests"]["steer"]["q"] == row["q"]


def test_grade_family_reads_the_same_q_values_as_correct_family():
    values, ns = [0.42, 0.5, 0.9, 0.3], [200, 200, 100, 400]
    graded = grade_family(values, ns, [None] * 4)
    p = [chance_p_value(round(v * n), n) for v, n in zip(values, ns, strict=True)]
    family = correct_family([FamilyTest(str(i), pi) for i, pi in enumerate(p)])
    assert [g.q for g in graded] == [t.q for t in family.tests]
