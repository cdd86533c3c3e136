"""Tests against chance and their correction for multiple comparisons.

A generalization matrix holds dozens of accuracies; some fall below 0.5 by chance alone. Each cell
gets an exact two-sided binomial p-value against chance, the family of cells is corrected with
Benjamini–Hochberg (false discovery rate), and :func:`grade_accuracy` turns value, q-value and
test-set size into graded words, so 0.02 and 0.42 are not described alike.

Thresholds live here and nowhere else: reports render the verdicts, they do not recompute them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

# Below this many test statements no verdict is given: a 1-row test set "reliably below chance"
# is noise. 20 rows put a single wrong answer at 5 points of accuracy.
MIN_VERDICT_N = 20
FDR_LEVEL = 0.05
STRONG_MARGIN = 0.15  # |accuracy − 0.5| at or beyond this is a strong effect (≤ 0.35 or ≥ 0.65)
ONE_CLASS_RATE = 0.97  # share of one predicted class beyond which accuracy says nothing

VERDICT_WORDS = {
    "inverted": "strongly and significantly below chance",
    "weakly below chance": "significantly below chance, by less than 0.15",
    "above chance": "strongly and significantly above chance",
    "weakly above chance": "significantly above chance, by less than 0.15",
    "chance": "not distinguishable from chance after correction",
    "one class": "(nearly) every statement gets the same prediction; accuracy is uninformative",
    "too few statements": f"fewer than {MIN_VERDICT_N} test statements; no verdict",
}


def benjamini_hochberg(p_values: np.ndarray | list[float]) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values), same shape as ``p_values``.

    Rejecting every hypothesis with ``q <= alpha`` controls the false discovery rate at ``alpha``
    for independent or positively dependent tests. NaN entries are left out of the family and
    stay NaN.
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    flat = p.reshape(-1)
    ok = np.flatnonzero(~np.isnan(flat))
    if ok.size == 0:
        return out
    if ((flat[ok] < 0) | (flat[ok] > 1)).any():
        raise ValueError("p-values must lie in [0, 1]")
    order = ok[np.argsort(flat[ok], kind="stable")]
    m = ok.size
    scaled = flat[order] * m / np.arange(1, m + 1)
    q = np.minimum.accumulate(scaled[::-1])[::-1]  # step-up: monotone from the largest p down
    out.reshape(-1)[order] = np.minimum(q, 1.0)
    return out


def chance_p_value(n_correct: int, n: int) -> float:
    """Exact two-sided binomial p-value of ``n_correct`` of ``n`` against accuracy 0.5."""
    if n <= 0:
        return float("nan")
    return float(binomtest(int(n_correct), int(n), 0.5, alternative="two-sided").pvalue)


@dataclass(frozen=True)
class Verdict:
    """A graded reading of one accuracy: ``label`` is a key of :data:`VERDICT_WORDS`."""

    label: str
    p: float
    q: float

    def to_dict(self) -> dict[str, float | str]:
        return {"verdict": self.label, "p": self.p, "q": self.q}


def grade_accuracy(value: float, n: int, q: float, positive_rate: float | None = None,
                   *, alpha: float = FDR_LEVEL) -> str:
    """The verdict for accuracy ``value`` on ``n`` statements with BH q-value ``q``."""
    if n < MIN_VERDICT_N or np.isnan(q):
        return "too few statements"
    if positive_rate is not None and max(positive_rate, 1 - positive_rate) >= ONE_CLASS_RATE:
        return "one class"
    if q > alpha:
        return "chance"
    strong = abs(value - 0.5) >= STRONG_MARGIN
    if value < 0.5:
        return "inverted" if strong else "weakly below chance"
    return "above chance" if strong else "weakly above chance"


def grade_family(values: list[float], ns: list[int], positive_rates: list[float | None],
                 *, alpha: float = FDR_LEVEL) -> list[Verdict]:
    """Verdicts for a family of accuracies, corrected together with Benjamini–Hochberg.

    Cells with fewer than :data:`MIN_VERDICT_N` statements are not tested (they get no q-value
    and do not enlarge the family).
    """
    p = np.array([chance_p_value(round(v * n), n) if n >= MIN_VERDICT_N else np.nan
                  for v, n in zip(values, ns, strict=True)])
    q = benjamini_hochberg(p)
    return [Verdict(grade_accuracy(v, n, qi, rate, alpha=alpha), float(pi), float(qi))
            for v, n, rate, pi, qi in zip(values, ns, positive_rates, p, q, strict=True)]


# Verdicts that say the probe reads something, and on which side of chance.
SIDE_OF_VERDICT = {"above chance": 1, "weakly above chance": 1, "weakly below chance": -1,
                   "inverted": -1}


def controls_explaining(cell: dict[str, float], verdict: str,
                        controls: dict[str, dict[str, float] | None]) -> dict[str, list[str]]:
    """Which controls account for a graded reading, and which only for part of it.

    ``cell`` and each control are ``{"value", "lo", "hi"}`` (95 % intervals) on the same
    statements. A reading with a side (above chance, weakly above, weakly below, inverted) is
    ``explained_by`` a control whose value lies on the same side of chance and whose interval
    overlaps the reading's, or which goes at least as far from chance: the control does what
    the probe does. It is ``partly_explained_by`` a control whose whole interval lies on that
    side of chance but short of the reading's (part of the reading needs no probe, learned
    weights or labels). A chance, one-class or too-small reading has nothing to explain.
    """
    side = SIDE_OF_VERDICT.get(verdict)
    out: dict[str, list[str]] = {"explained_by": [], "partly_explained_by": []}
    if side is None:
        return out
    for name, c in controls.items():
        if c is None or not side * (c["value"] - 0.5) > 0:
            continue
        overlaps = c["hi"] >= cell["lo"] and c["lo"] <= cell["hi"]
        if overlaps or side * (c["value"] - cell["value"]) >= 0:
            out["explained_by"].append(name)
        elif (c["lo"] > 0.5) if side > 0 else (c["hi"] < 0.5):
            out["partly_explained_by"].append(name)
    return out
