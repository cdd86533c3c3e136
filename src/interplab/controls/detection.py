"""Detection metrics and their uncertainty when a method is trained under several seeds.

- :func:`auroc` (Mann–Whitney, ties counted half; rows of a 2-D array at once),
  :func:`threshold_at_fpr` and :func:`tpr_at_fpr`.
- :func:`seed_example_bootstrap`: a percentile interval for a statistic of per-seed,
  per-example values that resamples the test examples and the training seeds together (each
  draw: seeds with replacement, examples with replacement, the same examples for every seed and
  every method), so the interval covers both the finite test set and the spread between
  training runs.
- :func:`paired_permutation_p`: a paired randomisation test of "method A and method B do equally
  well" on the same examples: each example's two values are swapped between the methods with
  probability ½ (the same swap in every seed). Scores of different methods live on different
  scales, so detection scores are first turned into ranks within each method and seed
  (:func:`rank_normalise`; the test of Bandos et al. 2005 for paired ROC curves). The p-value is
  ``(1 + #{|T*| ≥ |T|}) / (k + 1)``: its floor with ``k`` permutations is ``1 / (k + 1)``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.stats import rankdata

from interplab.defaults import DEFAULT_N_BOOT


def auroc(scores: np.ndarray, labels: np.ndarray) -> np.ndarray | float:
    """Area under the ROC curve of ``scores`` (``[n]`` or ``[k, n]``) for binary ``labels``
    ``[n]`` (1 = positive); NaN when a class is missing."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    flat = s.ndim == 1
    s2 = s[None] if flat else s
    if n1 == 0 or n0 == 0:
        out = np.full(s2.shape[0], np.nan)
    else:
        ranks = rankdata(s2, axis=1)
        out = (ranks[:, y].sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * n0)
    return float(out[0]) if flat else out


def threshold_at_fpr(negatives: np.ndarray, fpr: float) -> float:
    """The threshold ``t`` such that flagging ``score > t`` flags at most ``fpr`` of
    ``negatives`` (ties aside): the ``(⌊fpr·n⌋ + 1)``-th largest negative score."""
    neg = np.sort(np.asarray(negatives, dtype=np.float64))[::-1]
    if not len(neg):
        return float("nan")
    k = min(int(np.floor(fpr * len(neg) + 1e-9)), len(neg) - 1)
    return float(neg[k])


def tpr_at_fpr(scores: np.ndarray, labels: np.ndarray, fpr: float) -> float:
    """Share of positives flagged at the threshold that flags at most ``fpr`` of the negatives
    of the same set."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    if not y.any() or y.all():
        return float("nan")
    return float((s[y] > threshold_at_fpr(s[~y], fpr)).mean())


def rank_normalise(scores: np.ndarray) -> np.ndarray:
    """Ranks of ``scores`` ``[..., n]`` along the last axis, divided by ``n`` (ties averaged)."""
    s = np.asarray(scores, dtype=np.float64)
    return rankdata(s, axis=-1) / s.shape[-1]


def seed_example_bootstrap(statistic: Callable[[np.ndarray, np.ndarray], float], n_seeds: int,
                           n_examples: int, *, n_boot: int = DEFAULT_N_BOOT, seed: int = 0,
                           level: float = 0.95, strata: np.ndarray | None = None
                           ) -> tuple[float, float, float]:
    """``statistic(seed_idx, example_idx)`` on all seeds and examples, and its percentile
    interval over draws that resample seeds and examples together (``strata``: resample
    examples within each stratum, e.g. each class, so every draw keeps the class sizes).
    Draws where the statistic is NaN are left out."""
    rng = np.random.default_rng([seed, 53])
    value = float(statistic(np.arange(n_seeds), np.arange(n_examples)))
    groups = ([np.arange(n_examples)] if strata is None
              else [np.flatnonzero(strata == v) for v in np.unique(strata)])
    boots = np.empty(n_boot)
    for b in range(n_boot):
        seeds = rng.integers(0, n_seeds, size=n_seeds)
        ex = np.concatenate([g[rng.integers(0, len(g), size=len(g))] for g in groups])
        boots[b] = statistic(seeds, ex)
    ok = boots[np.isfinite(boots)]
    if not len(ok):
        return value, float("nan"), float("nan")
    alpha = (1 - level) / 2
    lo, hi = np.quantile(ok, [alpha, 1 - alpha])
    return value, float(lo), float(hi)


def paired_permutation_p(statistic: Callable[[np.ndarray], float], n_examples: int, *,
                         n_perm: int = 999, seed: int = 0) -> float:
    """Two-sided p-value of ``statistic(swap)`` (``swap``: ``[n]`` bool, True where the two
    methods' values of that example are exchanged; all False is the observed statistic)."""
    rng = np.random.default_rng([seed, 59])
    observed = abs(float(statistic(np.zeros(n_examples, dtype=bool))))
    if not np.isfinite(observed):
        return float("nan")
    hits = 0
    for _ in range(n_perm):
        t = statistic(rng.random(n_examples) < 0.5)
        hits += bool(abs(float(t)) >= observed - 1e-12)
    return (1 + hits) / (n_perm + 1)
