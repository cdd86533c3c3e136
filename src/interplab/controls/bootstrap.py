"""Percentile bootstrap intervals: the one implementation every study and control uses."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def resample_counts(rng: np.random.Generator, n: int, n_boot: int) -> np.ndarray:
    """``[n_boot, n]`` multiplicities of ``n`` rows in ``n_boot`` resamples with replacement."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


def percentile_interval(boots: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper ``level`` percentile bounds of bootstrap draws ``[n_boot, k]``, per column."""
    alpha = (1 - level) / 2
    lo, hi = np.quantile(boots, [alpha, 1 - alpha], axis=0)
    return lo, hi


def bootstrap_accuracy(correct: np.ndarray, *, n_boot: int = 1000, seed: int = 0,
                       level: float = 0.95) -> dict[str, list]:
    """Accuracy and percentile-bootstrap interval for each row of ``correct`` ``[k, n]``.

    Entries may be fractions (the share of several shuffled fits that got a row right); the
    interval is then that of the mean of the shuffles, without the spread between them (use
    :func:`interplab.controls.shuffled_accuracy_interval` for the shuffled-label control).

    The same resampled row sets are used for every row of ``correct`` (common random numbers),
    so differences between probes at one test set are not blurred by resampling noise.
    Returns ``value``, ``lo``, ``hi`` (lists of length ``k``) and ``n``.
    """
    correct = np.asarray(correct, dtype=np.float64)
    if correct.ndim != 2 or correct.shape[1] == 0:
        raise ValueError(f"correct must be a non-empty [rows, statements] array, got {correct.shape}")
    n = correct.shape[1]
    boots = resample_counts(np.random.default_rng(seed), n, n_boot) @ correct.T / n  # [B, k]
    lo, hi = percentile_interval(boots, level)
    return {"value": correct.mean(axis=1).tolist(), "lo": lo.tolist(), "hi": hi.tolist(), "n": n}


def bootstrap_statistic(statistic: Callable[..., float], *columns: np.ndarray, n_boot: int = 1000,
                        seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """``statistic(*columns)`` and its percentile-bootstrap interval ``(value, lo, hi)``.

    The rows of all ``columns`` (each ``[n]``) are resampled together, so a statistic of paired
    values (e.g. the correlation of a log-probability with a label) keeps its pairs. Draws on
    which the statistic is undefined (NaN, e.g. a resample with one label only) are left out.
    """
    cols = [np.asarray(c) for c in columns]
    n = len(cols[0]) if cols else 0
    if n == 0 or any(len(c) != n for c in cols):
        raise ValueError("bootstrap_statistic needs one or more non-empty columns of equal length")
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))  # [B, n]
    boots = np.array([statistic(*(c[i] for c in cols)) for i in idx], dtype=np.float64)
    alpha = (1 - level) / 2
    lo, hi = np.nanquantile(boots, [alpha, 1 - alpha])
    return float(statistic(*cols)), float(lo), float(hi)
