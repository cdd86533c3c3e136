"""The generalization engine: centring, mixed training sets, CCS sides, shuffled-label spread."""

import numpy as np

from interplab.probes.generalization import LabelledActs, PairedActs, fit_and_test

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
