"""Percentile bootstrap intervals: the one implementation every study and control uses."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

# Seeded bootstrap draws kept for reuse (a study asks for the same seed and size once per probe
# and control); drawing them is most of an interval's cost. Bounded in bytes, least recent out.
SEEDED_DRAWS_CACHE_BYTES = 256 * 2**20
_seeded: OrderedDict[tuple, tuple[np.ndarray, ...]] = OrderedDict()
_seeded_lock = threading.Lock()


def resample_counts(rng: np.random.Generator, n: int, n_boot: int) -> np.ndarray:
    """``[n_boot, n]`` multiplicities of ``n`` rows in ``n_boot`` resamples with replacement."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


def seeded_draws(seed: object, key: tuple,
                 draw: Callable[[], tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
    """``draw()``, arrays drawn from a generator seeded by the integer ``seed``, computed once per
    ``(seed, *key)`` and then reused, read-only. Any other seed (None: fresh entropy) draws anew."""
    if not isinstance(seed, (int, np.integer)):
        return draw()
    key = (int(seed), *key)
    with _seeded_lock:
        if key in _seeded:
            _seeded.move_to_end(key)
            return _seeded[key]
    arrays = draw()
    for a in arrays:
        a.flags.writeable = False
    with _seeded_lock:
        _seeded[key] = arrays
        while (sum(a.nbytes for v in _seeded.values() for a in v) > SEEDED_DRAWS_CACHE_BYTES
               and len(_seeded) > 1):
            _seeded.popitem(last=False)
    return arrays


def seeded_resample_counts(seed: int, n: int, n_boot: int) -> np.ndarray:
    """``resample_counts(np.random.default_rng(seed), n, n_boot)``, drawn once per
    ``(seed, n, n_boot)`` (see :func:`seeded_draws`)."""
    return seeded_draws(seed, ("counts", int(n), int(n_boot)), lambda: (
        resample_counts(np.random.default_rng(seed), n, n_boot),))[0]


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
    boots = seeded_resample_counts(seed, n, n_boot) @ correct.T / n  # [B, k]
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
