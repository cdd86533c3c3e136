"""The one bootstrap: intervals of means, of any statistic of paired rows, and their p-values."""

import numpy as np
import pytest

from interplab.controls import (
    bootstrap_mean,
    bootstrap_p_value,
    bootstrap_statistic,
    bootstrap_test,
)


def _pearson(a, b):
    return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")


def test_statistic_interval_of_a_correlation_has_the_fisher_width_and_keeps_pairs():
    rng = np.random.default_rng(0)
    n, r_true = 400, 0.5
    x = rng.standard_normal(n)
    y = r_true * x + np.sqrt(1 - r_true**2) * rng.standard_normal(n)
    value, lo, hi = bootstrap_statistic(_pearson, x, y, n_boot=2000, seed=0)
    assert lo < r_true < hi and lo < value < hi
    # Fisher z: half-width ≈ 1.96 (1 − r²) / √n = 0.074
    assert abs((hi - lo) / 2 - 1.96 * (1 - r_true**2) / np.sqrt(n)) < 0.015
    # control: with the pairs broken the interval covers 0 and not the true correlation
    _, lo0, hi0 = bootstrap_statistic(_pearson, x, rng.permutation(y), n_boot=2000, seed=0)
    assert lo0 < 0 < hi0 and hi0 < r_true


def test_statistic_interval_ignores_undefined_draws_and_refuses_bad_columns():
    y = np.array([0] * 29 + [1])  # many resamples hold one class only: r is undefined there
    x = y + 0.1 * np.random.default_rng(1).standard_normal(30)
    value, lo, hi = bootstrap_statistic(_pearson, x, y, n_boot=500, seed=0)
    assert np.isfinite([value, lo, hi]).all() and lo <= hi
    with pytest.raises(ValueError, match="equal length"):
        bootstrap_statistic(_pearson, x, y[:10])


def test_accuracy_and_statistic_bootstraps_agree_on_a_mean():
    correct = (np.random.default_rng(2).random(300) < 0.7).astype(float)
    acc = bootstrap_mean(correct[None], n_boot=4000, seed=0)
    value, lo, hi = bootstrap_statistic(np.mean, correct, n_boot=4000, seed=1)
    assert value == pytest.approx(acc["value"][0])
    assert lo == pytest.approx(acc["lo"][0], abs=0.01) and hi == pytest.approx(acc["hi"][0], abs=0.01)


def test_reused_draws_give_the_intervals_a_fresh_draw_gives(monkeypatch):
    from interplab.controls import bootstrap as boot
    from interplab.controls import shuffled_accuracy_interval

    rng = np.random.default_rng(1)
    correct = rng.random((3, 150)) < 0.7
    hits = rng.random((3, 4, 150)) < 0.5
    first = bootstrap_mean(correct, n_boot=300, seed=5)
    first_shuffled = shuffled_accuracy_interval(hits, n_boot=300, seed=5)
    # the same seed again is served from memory, and gives exactly the same interval
    assert bootstrap_mean(correct, n_boot=300, seed=5) == first
    assert shuffled_accuracy_interval(hits, n_boot=300, seed=5) == first_shuffled
    # with nothing kept (a zero budget), each call draws anew: still the same numbers
    monkeypatch.setattr(boot, "SEEDED_DRAWS_CACHE_BYTES", 0)
    boot._seeded.clear()
    assert bootstrap_mean(correct, n_boot=300, seed=5) == first
    assert shuffled_accuracy_interval(hits, n_boot=300, seed=5) == first_shuffled
    assert len(boot._seeded) == 1  # only the latest is kept when the budget is exceeded
    # another seed is another draw; reused arrays cannot be changed by a caller
    assert bootstrap_mean(correct, n_boot=300, seed=6) != first
    counts = boot.seeded_resample_counts(5, 150, 300)
    with pytest.raises(ValueError):
        counts[0, 0] = 1.0
    # a seed of None is fresh entropy, never reused
    assert boot.seeded_resample_counts(None, 150, 300).flags.writeable


def test_mean_and_statistic_share_one_resampling_path():
    """The same seed and size give the same resamples, whichever function asks (and the old
    accuracy-only name is only a temporary alias of bootstrap_mean)."""
    from interplab import controls

    x = np.random.default_rng(3).standard_normal(211)
    m = bootstrap_mean(x[None], n_boot=700, seed=4)
    value, lo, hi = bootstrap_statistic(np.mean, x, n_boot=700, seed=4)
    assert value == pytest.approx(m["value"][0], abs=1e-12)
    assert lo == pytest.approx(m["lo"][0], abs=1e-12) and hi == pytest.approx(m["hi"][0], abs=1e-12)
    assert bootstrap_test(np.mean, x, n_boot=700, seed=4)["lo"] == lo
    assert not hasattr(controls, "bootstrap_accuracy")  # one name for one thing


def test_bootstrap_p_value_inverts_the_percentile_interval():
    # every draw above the null: the floor 2/(B+1); 10 of 999 draws at or below it: 2·11/1000
    assert bootstrap_p_value(np.linspace(0.1, 1, 999)) == 2 / 1000
    draws = np.concatenate([np.linspace(-1, -0.1, 10), np.linspace(0.1, 1, 989)])
    assert bootstrap_p_value(draws) == pytest.approx(2 * 11 / 1000)
    assert bootstrap_p_value(-draws) == pytest.approx(2 * 11 / 1000)  # two-sided
    assert bootstrap_p_value(np.zeros(50)) == 1.0  # every draw on the null: no evidence
    assert bootstrap_p_value(draws, null=2.0) == 2 / 1000  # all draws below 2
    assert bootstrap_p_value([np.nan, 1.0, np.nan]) == 1.0  # undefined draws left out
    assert np.isnan(bootstrap_p_value([np.nan]))


def test_a_planted_shift_is_at_the_floor_and_a_null_sample_is_not():
    rng = np.random.default_rng(5)
    shifted, centred = rng.normal(0.5, 1, 300), rng.normal(0, 1, 300)
    t = bootstrap_test(np.mean, shifted, n_boot=999, seed=0)
    assert t["at_floor"] and t["p"] == t["p_floor"] == 2 / 1000 and t["lo"] > 0
    n = bootstrap_test(np.mean, centred, n_boot=999, seed=0)
    assert n["p"] > 0.05 and n["lo"] < 0 < n["hi"] and not n["at_floor"]
    # the p-value and the interval agree: p < 0.05 exactly when the 95% interval excludes 0
    for seed in range(30):
        x = rng.normal(0.12, 1, 200)
        t = bootstrap_test(np.mean, x, n_boot=999, seed=seed)
        assert (t["p"] < 0.05) == (t["lo"] > 0 or t["hi"] < 0) or abs(t["p"] - 0.05) < 0.005
    b = bootstrap_mean(np.stack([shifted, centred]), n_boot=999, seed=0, null=0.0)
    assert b["p"][0] == b["p_floor"] == 2 / 1000 and b["p"][1] == n["p"]
