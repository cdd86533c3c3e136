"""Tests against chance and the one correction for multiple comparisons every study applies.

A study emits many p-values (a generalization matrix of accuracies, probes × layers of a causal
study, null sources × metrics); some fall below 0.05 by chance alone. Every p-value a study emits
belongs to one family, corrected with Benjamini–Hochberg (false discovery rate) at
:data:`FDR_LEVEL` by :func:`correct_family`; verdicts are read from the corrected q-values, never
from an uncorrected p. Accuracies get an exact two-sided binomial p-value against chance and
graded words (:func:`grade_family`, so 0.02 and 0.42 are not described alike); any other effect
tested against a null gets "above the null" / "below the null" / "not significant"
(:func:`effect_verdict`).

Thresholds live here and nowhere else: reports render the verdicts, they do not recompute them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from interplab.controls.pvalues import format_p

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
    # q >= p exactly (p·m/m can round below p)
    out.reshape(-1)[order] = np.minimum(np.maximum(q, flat[order]), 1.0)
    return out


def chance_p_value(n_correct: int, n: int) -> float:
    """Exact two-sided binomial p-value of ``n_correct`` of ``n`` against accuracy 0.5."""
    from scipy.stats import binomtest

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
    """Verdicts for a family of accuracies, corrected together with Benjamini–Hochberg
    (:func:`correct_family`).

    Cells with fewer than :data:`MIN_VERDICT_N` statements are not tested (they get no q-value
    and do not enlarge the family).
    """
    p = np.array([chance_p_value(round(v * n), n) if n >= MIN_VERDICT_N else np.nan
                  for v, n in zip(values, ns, strict=True)])
    family = correct_family([FamilyTest(str(i), float(pi), v - 0.5) for i, (pi, v)
                             in enumerate(zip(p, values, strict=True))], alpha=alpha)
    q = np.array([t.q for t in family.tests])
    return [Verdict(grade_accuracy(v, n, qi, rate, alpha=alpha), float(pi), float(qi))
            for v, n, rate, pi, qi in zip(values, ns, positive_rates, p, q, strict=True)]


# ------------------------------------------------------------------ the one correction policy
EFFECT_VERDICT_WORDS = {
    "above the null": "significantly above the null after correction",
    "below the null": "significantly below the null after correction",
    "not significant": "not distinguishable from the null after correction",
    "no test": "no p-value (undefined or not computed); not tested",
}


@dataclass(frozen=True)
class FamilyTest:
    """One p-value of a family: ``label`` names the cell (unique within the family), ``effect``
    its signed departure from the null (observed − null value; its sign is the verdict's
    direction) and ``floor`` the smallest p-value its procedure can give (``1/(k+1)`` for ``k``
    null draws, ``2/(B+1)`` for ``B`` bootstrap resamples; None: exact). NaN ``p``: not tested."""

    label: str
    p: float
    effect: float | None = None
    floor: float | None = None


@dataclass(frozen=True)
class Corrected:
    """One test after correction: raw ``p``, Benjamini–Hochberg ``q`` across its family, the
    ``verdict`` (a key of :data:`EFFECT_VERDICT_WORDS`), whether ``p`` is at its floor (an upper
    bound) and whether ``q`` is therefore an upper bound too (``q_bound``)."""

    label: str
    p: float
    q: float
    verdict: str
    effect: float | None
    at_floor: bool
    q_bound: bool

    @property
    def significant(self) -> bool:
        return self.verdict in ("above the null", "below the null")

    def q_text(self) -> str:
        """"q = 0.012", or "q ≤ 0.048" when it rests on a p-value at its floor."""
        return format_p(self.q, at_floor=self.q_bound, name="q")

    def text(self) -> str:
        """The verdict with its q-value, e.g. "above the null (q ≤ 0.048)"."""
        if self.verdict == "no test":
            return "not tested (no p-value)"
        return f"{self.verdict} ({self.q_text()})"

    def to_dict(self) -> dict[str, Any]:
        return {"p": self.p, "q": self.q, "verdict": self.verdict, "at_floor": self.at_floor,
                "q_bound": self.q_bound}


@dataclass
class Family:
    """A family of tests corrected together: ``tests`` in the order given, ``alpha`` the false
    discovery rate, ``floor_q_alone`` the q-value a test at its floor gets when every other test
    of the family is null (``m × floor``, the worst case: with fewer null draws than that needs,
    a lone real effect cannot reach ``q ≤ alpha``)."""

    tests: list[Corrected]
    alpha: float
    floor_q_alone: float | None
    method: str = "Benjamini–Hochberg"
    notes: list[str] = field(default_factory=list)

    @property
    def m(self) -> int:
        return sum(1 for t in self.tests if t.verdict != "no test")

    def __getitem__(self, label: str) -> Corrected:
        for t in self.tests:
            if t.label == label:
                return t
        raise KeyError(label)

    def to_dict(self) -> dict[str, Any]:
        """``method``, ``alpha``, ``m`` (tests in the family), ``floor_q_alone``, ``notes`` and
        ``tests`` (label → :meth:`Corrected.to_dict`)."""
        return {"method": self.method, "alpha": self.alpha, "m": self.m,
                "floor_q_alone": self.floor_q_alone, "notes": list(self.notes),
                "tests": {t.label: t.to_dict() for t in self.tests}}


def effect_verdict(effect: float | None, q: float, *, alpha: float = FDR_LEVEL) -> str:
    """"above the null" / "below the null" (by the sign of ``effect``) when ``q <= alpha``,
    "not significant" otherwise, "no test" for a NaN ``q``."""
    if q != q:
        return "no test"
    if q > alpha:
        return "not significant"
    return "below the null" if effect is not None and effect < 0 else "above the null"


def correct_family(tests: Sequence[FamilyTest], *, alpha: float = FDR_LEVEL) -> Family:
    """Benjamini–Hochberg q-values and verdicts for a family of p-values (every p-value a study
    emits is one family; NaN p-values are left out of it and get the verdict "no test").

    A p-value at its ``floor`` is an upper bound, and so is every q-value that rests on it (a
    test's q is the minimum of ``p_j m / rank_j`` over the tests at least as large, so it is
    bounded when one of those is at its floor).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie strictly between 0 and 1, not {alpha}")
    labels = [t.label for t in tests]
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels of a family must be unique: {labels}")
    p = np.array([t.p for t in tests], dtype=np.float64)
    q = benjamini_hochberg(p)
    at_floor = np.array([t.floor is not None and t.p == t.p and t.p <= t.floor * (1 + 1e-9)
                         for t in tests], dtype=bool)
    out = []
    for i, t in enumerate(tests):
        bound = bool(t.p == t.p and np.any(at_floor & (p >= p[i])))
        out.append(Corrected(label=t.label, p=float(t.p), q=float(q[i]),
                             verdict=effect_verdict(t.effect, float(q[i]), alpha=alpha),
                             effect=None if t.effect is None else float(t.effect),
                             at_floor=bool(at_floor[i]), q_bound=bound))
    tested = [t for t in tests if t.p == t.p]
    m = len(tested)
    floors = [t.floor for t in tested if t.floor is not None]
    alone = min(1.0, m * max(floors)) if floors else None
    family = Family(tests=out, alpha=alpha, floor_q_alone=alone)
    coarse = [t for t in tested if t.floor is not None and m * t.floor > alpha]
    if coarse:
        worst = max(t.floor for t in coarse)
        family.notes.append(
            f"{len(coarse)} of the {m} tests corrected together (e.g. {coarse[0].label!r}) "
            f"cannot reach q ≤ {alpha:g} on their own: at a floor p-value of up to {worst:.3g} "
            f"(too few null draws) such a test gets q = {min(1.0, m * worst):.3g} when no other "
            "test is significant")
    return family


def cell_floor(cell: dict[str, Any]) -> float | None:
    """The floor of a result cell's p-value: ``p_floor`` when given (a bootstrap p-value), else
    ``1/(k+1)`` for ``k`` null draws, else None (an exact p-value)."""
    if cell.get("p_floor") is not None:
        return float(cell["p_floor"])
    if cell.get("k") is not None:
        return 1.0 / (int(cell["k"]) + 1)
    return None


def correct_cells(cells: Sequence[tuple[str, dict[str, Any] | list[dict[str, Any]], float | None]],
                  *, alpha: float = FDR_LEVEL) -> Family:
    """:func:`correct_family` over a study's result cells, each ``(label, cell, effect)``: a cell
    is a dict holding a raw ``p`` (and ``k`` or ``p_floor``, see :func:`cell_floor`), or a list
    of dicts that show the same test (the first is read); ``q``, ``q_bound``, ``verdict`` and
    ``test`` (the label) are written into every one of them."""
    groups = [(label, cell if isinstance(cell, list) else [cell], effect)
              for label, cell, effect in cells]
    family = correct_family([FamilyTest(label, float(ds[0]["p"]), effect, cell_floor(ds[0]))
                             for label, ds, effect in groups], alpha=alpha)
    for (label, ds, _), t in zip(groups, family.tests, strict=True):
        for d in ds:
            d.update(test=label, q=t.q, q_bound=t.q_bound, verdict=t.verdict)
    return family


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
