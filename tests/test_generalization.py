"""The generalization engine: centring, mixed training sets, CCS sides, shuffled-label spread."""

import numpy as np
import pytest

from interplab.controls import shuffled_accuracy_interval
from interplab.probes.generalization import (
    LabelledActs,
    PairedActs,
    bootstrap_mean,
    fit_and_test,
)

D = 64


def _acts(n, seed, *, shift=0.0, scale=1.0, sep=3.0, flip=False):
    """One layer ``[1, n, D]`` with the label along axis 0; the whole set moved and stretched."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    X = rng.standard_normal((n, D))
    X[:, 0] += sep / 2 * (2 * y - 1) * (-1 if flip else 1)
    return (scale * X + shift)[None], y


def _pairs(n, seed):
    """Statements and their negations: shared topic, truth along axis 0 flipped; the negations
    moved and shrunk as a whole."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    topic = rng.standard_normal((n, D))
    truth = np.outer(1.5 * (2 * y - 1), np.eye(D)[0])
    Xp = topic + truth + 0.3 * rng.standard_normal((n, D))
    Xn = topic - truth + 0.3 * rng.standard_normal((n, D))
    return Xp[None], (0.3 * Xn + 5.0)[None], y


def test_ccs_scores_a_negated_test_set_with_the_negated_sides_statistics():
    Xp, Xn, y = _pairs(400, 0)
    Tp, Tn, yt = _pairs(400, 1)
    tests = {"pos": LabelledActs(Tp, yt), "neg": LabelledActs(Tn, 1 - yt, negated=True)}
    for centering in ("train", "per-dataset"):
        out = fit_and_test("ccs", LabelledActs(Xp, y), tests, pairs=PairedActs(Xp, Xn, y),
                           centering=centering, variants=["probe"])
        assert out.correct["probe"]["pos"].mean() > 0.85
        assert out.correct["probe"]["neg"].mean() > 0.85, centering


def test_per_dataset_centring_is_the_default_and_recovers_a_shifted_test_set():
    train = LabelledActs(*_acts(600, 0))
    shift = np.zeros(D)
    shift[0] = 4.0  # the whole test set moved along the truth axis: one side of any fixed cut
    tests = {"shifted": LabelledActs(*_acts(600, 1, shift=shift))}
    out = fit_and_test("diffmean", train, tests, variants=["probe"])
    assert out.centering == "per-dataset"
    assert out.correct["probe"]["shifted"].mean() > 0.85  # Bayes accuracy Φ(1.5) ≈ 0.93
    fixed = fit_and_test("diffmean", train, tests, variants=["probe"], centering="train")
    assert fixed.centering == "train"
    assert fixed.correct["probe"]["shifted"].mean() < 0.6


def _component(n, seed, share_true, offset):
    """A dataset whose share of true statements is ``share_true``, moved by ``offset`` along
    axis 1 (a nuisance axis); the truth is along axis 0."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < share_true).astype(np.int64)
    X = rng.standard_normal((n, D))
    X[:, 0] += 1.5 * (2 * y - 1)
    X[:, 1] += offset
    return LabelledActs(X[None], y)


@pytest.mark.parametrize("probe", ["diffmean", "lda", "logistic"])
def test_mixed_training_set_centres_each_component_by_its_own_mean(probe):
    # Mostly-true statements sit at +6 on a nuisance axis, mostly-false ones at −6 (as two
    # datasets with different label balance and different means): jointly centred, the nuisance
    # axis looks like truth.
    parts = {"a": _component(500, 0, 0.8, 6.0), "b": _component(500, 1, 0.2, -6.0)}
    mixed = LabelledActs.concatenate(parts)
    assert list(np.unique(mixed.groups)) == ["a", "b"] and mixed.X.shape == (1, 1000, D)
    tests = {"a": _component(600, 2, 0.5, 6.0), "b": _component(600, 3, 0.5, -6.0)}
    out = fit_and_test(probe, mixed, tests, variants=["probe"])
    joint = fit_and_test(probe, LabelledActs(mixed.X, mixed.y), tests, variants=["probe"])
    for t in tests:
        assert out.correct["probe"][t].mean() > 0.85, t  # Bayes accuracy Φ(1.5) ≈ 0.93
        if probe == "diffmean":  # LDA and logistic whiten the nuisance axis away either way
            assert joint.correct["probe"][t].mean() < 0.8, t


def _planted_shuffles(accs, n, seed=0):
    """``[1, K, n]`` correctness of K shuffled fits whose accuracies are ``accs``."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.random(n) < a for a in accs])[None]


def test_shuffled_interval_covers_the_spread_between_shuffles():
    hits = _planted_shuffles([0.3, 0.4, 0.5, 0.6, 0.7], 2000)
    est = shuffled_accuracy_interval(hits, seed=0)
    assert abs(est["value"][0] - 0.5) < 0.02 and est["n"] == 2000
    assert abs(est["sd_over_shuffles"][0] - 0.141) < 0.02  # population sd of 0.3 … 0.7
    assert est["lo"][0] < 0.33 and est["hi"][0] > 0.67  # a single shuffle can land anywhere there
    # what the bootstrap of the averaged correctness reports: ±0.01 around 0.5
    mean_only = bootstrap_mean(hits.mean(axis=1), seed=0)
    assert mean_only["hi"][0] - mean_only["lo"][0] < 0.05


def test_shuffled_interval_without_spread_is_the_binomial_interval():
    hits = np.repeat(_planted_shuffles([0.5], 500, seed=1), 5, axis=1)  # five identical shuffles
    est = shuffled_accuracy_interval(hits, n_boot=2000, seed=0)
    half = 1.96 * np.sqrt(0.25 / 500)
    assert abs((est["hi"][0] - est["lo"][0]) / 2 - half) < 0.25 * half
    with pytest.raises(ValueError, match="shuffles"):
        shuffled_accuracy_interval(hits[0])


def test_engine_keeps_every_shuffles_correctness():
    train = LabelledActs(*_acts(300, 0))
    tests = {"t": LabelledActs(*_acts(200, 1))}
    out = fit_and_test("diffmean", train, tests, variants=["probe", "shuffled"], n_shuffles=4)
    sc = out.shuffle_correct["t"]
    assert sc.shape == (1, 4, 200)
    assert np.allclose(sc.mean(axis=2), out.shuffle_acc["t"])
    assert np.allclose(sc.mean(axis=1), out.correct["shuffled"]["t"])
    est = shuffled_accuracy_interval(sc, seed=0)
    assert est["lo"][0] <= est["value"][0] <= est["hi"][0]


def test_random_direction_control_is_a_distribution_of_twenty():
    train = LabelledActs(*_acts(300, 0))
    tests = {"t": LabelledActs(*_acts(200, 1))}
    out = fit_and_test("diffmean", train, tests, variants=["probe", "random"])
    accs = out.random_acc["t"]
    assert accs.shape == (1, 20) and len(np.unique(accs)) > 5  # twenty different directions
    assert np.isclose(out.correct["random"]["t"].mean(), accs.mean())
    assert accs.max() < out.correct["probe"]["t"].mean()  # truth lies along one axis of 64
