"""The null p-value (1 + #at least as extreme)/(k + 1), its z-score and floor, and how p-values are
printed."""

import numpy as np
import pytest

from interplab.controls import NullTest, format_p, null_p_value
from interplab.errors import InterplabError


def test_an_observed_value_beyond_every_draw_is_at_the_floor():
    draws = np.linspace(-1, 1, 20)
    t = null_p_value(5.0, draws)
    assert t == NullTest(p=1 / 21, k=20, z=t.z, at_floor=True) and t.floor == 1 / 21
    assert null_p_value(-5.0, draws).p == 1 / 21  # two-sided: the far negative side too
    assert t.text() == "p ≤ 0.048 (floor, k = 20)"
    assert t.to_dict() == {"p": 1 / 21, "k": 20, "z": t.z, "at_floor": True}


def test_ties_count_as_at_least_as_extreme_and_the_sides_are_counted_as_asked():
    draws = [1.0, 2.0, 3.0, 3.0, 4.0]
    assert null_p_value(3.0, draws, alternative="greater").p == (1 + 3) / 6  # 3, 3, 4
    assert null_p_value(3.0, draws, alternative="less").p == (1 + 4) / 6  # 1, 2, 3, 3
    assert null_p_value(3.0, draws).p == (1 + 3) / 6  # |draw| >= 3 around 0
    assert null_p_value(-3.0, draws).p == (1 + 3) / 6
    # around another centre: |draw − 2.5| >= |3 − 2.5| for every draw
    assert null_p_value(3.0, draws, center=2.5).p == 1.0
    assert not null_p_value(3.0, draws).at_floor


def test_z_is_the_standardised_distance_from_the_draws():
    draws = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    t = null_p_value(7.0, draws)
    assert t.z == pytest.approx((7.0 - 2.0) / np.std(draws, ddof=1))
    assert null_p_value(1.0, [2.0, 2.0, 2.0]).z is None  # no spread: no z
    assert null_p_value(1.0, [2.0]).z is None


def test_under_the_null_the_p_value_is_uniform_on_its_grid():
    # observed and k = 19 draws from one distribution: P(p <= j/20) = j/20 exactly
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4000, 20))
    p = np.array([null_p_value(row[0], row[1:], alternative="greater").p for row in x])
    assert set(np.round(p * 20).astype(int)) <= set(range(1, 21))
    assert np.mean(p <= 0.05) == pytest.approx(0.05, abs=0.012)
    assert np.mean(p <= 0.5) == pytest.approx(0.5, abs=0.03)


def test_bad_input_is_one_clear_error():
    with pytest.raises(InterplabError, match="at least one finite null draw"):
        null_p_value(1.0, [])
    with pytest.raises(InterplabError, match="finite"):
        null_p_value(1.0, [0.0, np.nan])
    with pytest.raises(InterplabError, match="alternative"):
        null_p_value(1.0, [0.0], alternative="bigger")


def test_format_p_prints_a_floor_as_an_upper_bound():
    assert format_p(0.1429) == "p = 0.143"
    assert format_p(1 / 21, at_floor=True, k=20) == "p ≤ 0.048 (floor, k = 20)"
    assert format_p(2 / 1001, at_floor=True, k=1000, draws="B") == "p ≤ 0.002 (floor, B = 1000)"
    assert format_p(0.048, at_floor=True, name="q") == "q ≤ 0.048"
    assert format_p(0.00015) == "p = 1.5e-04"
    assert format_p(float("nan")) == "p n/a" and format_p(None, name="q") == "q n/a"
