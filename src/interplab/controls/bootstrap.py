"""Percentile bootstrap intervals and p-values: the one implementation every study and control
uses.

One resampling path: the seeded multiplicities of :func:`seeded_resample_counts` serve the mean
of per-example values (:func:`bootstrap_mean`, a matrix product) and any other statistic
(:func:`bootstrap_statistic`, :func:`bootstrap_test`, the same resamples as row indices); the
shuffled-label interval (:func:`interplab.controls.shuffled_accuracy_interval`) draws its
resamples with the same :func:`resample_counts`. A p-value from bootstrap draws inverts the
percentile interval (:func:`bootstrap_p_value`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from interplab.defaults import DEFAULT_N_BOOT

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


def mean_draws(values: np.ndarray, *, n_boot: int, seed: int) -> np.ndarray:
    """``[n_boot, k]`` bootstrap draws of the mean of each row of ``values`` ``[k, n]``: the
    seeded resamples of :func:`seeded_resample_counts`, the same for every row (common random
    numbers)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] == 0:
        raise ValueError(f"values must be a non-empty [rows, examples] array, got {values.shape}")
    n = values.shape[1]
    return seeded_resample_counts(seed, n, n_boot) @ values.T / n


def bootstrap_p_value(draws: np.ndarray, null: float = 0.0) -> float:
    """Two-sided percentile-bootstrap p-value of "the statistic equals ``null``".

    The smallest ``α`` at which the equal-tailed ``1 − α`` percentile interval of ``draws``
    excludes ``null``: twice the share of draws on the far side of ``null`` (ties count on both
    sides), each count raised by one as in a permutation test, so the p-value is never 0 and its
    floor is ``2 / (B + 1)`` for ``B`` finite draws. NaN draws (statistic undefined on that
    resample) are left out; NaN when none is left.
    """
    d = np.asarray(draws, dtype=np.float64).reshape(-1)
    d = d[~np.isnan(d)]
    if d.size == 0:
        return float("nan")
    below, above = int(np.sum(d <= null)), int(np.sum(d >= null))
    return float(min(1.0, 2 * (1 + min(below, above)) / (d.size + 1)))


def bootstrap_p_floor(n_boot: int) -> float:
    """The smallest p-value :func:`bootstrap_p_value` can give from ``n_boot`` draws."""
    return min(1.0, 2 / (n_boot + 1))


def bootstrap_mean(values: np.ndarray, *, n_boot: int = DEFAULT_N_BOOT, seed: int = 0, level: float = 0.95,
                   null: float | None = None) -> dict[str, list]:
    """Mean and percentile-bootstrap interval for each row of ``values`` ``[k, n]`` of per-example
    values (0/1 correctness, KL, an effect, a paired difference).

    Entries may be fractions (the share of several shuffled fits that got a row right); the
    interval is then that of the mean of the shuffles, without the spread between them (use
    :func:`interplab.controls.shuffled_accuracy_interval` for the shuffled-label control).

    The same resampled examples are used for every row of ``values`` (common random numbers),
    so differences between probes at one test set are not blurred by resampling noise.
    Returns ``value``, ``lo``, ``hi`` (lists of length ``k``) and ``n``; with ``null`` also ``p``
    (per row, :func:`bootstrap_p_value` of "the mean equals ``null``") and ``p_floor``.
    """
    values = np.asarray(values, dtype=np.float64)
    boots = mean_draws(values, n_boot=n_boot, seed=seed)  # [B, k]
    lo, hi = percentile_interval(boots, level)
    out = {"value": values.mean(axis=1).tolist(), "lo": lo.tolist(), "hi": hi.tolist(),
           "n": values.shape[1]}
    if null is not None:
        out["p"] = [bootstrap_p_value(boots[:, i], null) for i in range(boots.shape[1])]
        out["p_floor"] = bootstrap_p_floor(n_boot)
    return out


def _statistic_draws(statistic: Callable[..., float], columns: tuple[np.ndarray, ...],
                     n_boot: int, seed: int) -> tuple[float, np.ndarray]:
    cols = [np.asarray(c) for c in columns]
    n = len(cols[0]) if cols else 0
    if n == 0 or any(len(c) != n for c in cols):
        raise ValueError("bootstrap_statistic needs one or more non-empty columns of equal length")
    rows = np.arange(n)
    counts = seeded_resample_counts(seed, n, n_boot).astype(np.int64)  # [B, n]
    boots = np.empty(n_boot)
    for b in range(n_boot):
        idx = np.repeat(rows, counts[b])  # resample b as row indices (a multiset: order-free)
        boots[b] = statistic(*(c[idx] for c in cols))
    return float(statistic(*cols)), boots


def bootstrap_statistic(statistic: Callable[..., float], *columns: np.ndarray, n_boot: int = DEFAULT_N_BOOT,
                        seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """``statistic(*columns)`` and its percentile-bootstrap interval ``(value, lo, hi)``.

    The rows of all ``columns`` (each ``[n]``) are resampled together, so a statistic of paired
    values (e.g. the correlation of a log-probability with a label) keeps its pairs. The
    resamples are :func:`bootstrap_mean`'s (same seed and size, same draws), so
    ``bootstrap_statistic(np.mean, x)`` gives ``bootstrap_mean(x[None])``'s interval. Draws on
    which the statistic is undefined (NaN, e.g. a resample with one label only) are left out;
    ``statistic`` must not depend on the order of the rows.
    """
    value, boots = _statistic_draws(statistic, columns, n_boot, seed)
    alpha = (1 - level) / 2
    lo, hi = np.nanquantile(boots, [alpha, 1 - alpha])
    return value, float(lo), float(hi)


def bootstrap_test(statistic: Callable[..., float], *columns: np.ndarray, null: float = 0.0,
                   n_boot: int = DEFAULT_N_BOOT, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """:func:`bootstrap_statistic` with the bootstrap p-value of "the statistic equals ``null``"
    (:func:`bootstrap_p_value`, from the same draws): ``value``, ``lo``, ``hi``, ``p``,
    ``p_floor`` and ``at_floor``."""
    value, boots = _statistic_draws(statistic, columns, n_boot, seed)
    alpha = (1 - level) / 2
    lo, hi = np.nanquantile(boots, [alpha, 1 - alpha])
    p = bootstrap_p_value(boots, null)
    floor = bootstrap_p_floor(int(np.sum(~np.isnan(boots))))
    return {"value": value, "lo": float(lo), "hi": float(hi), "p": p, "p_floor": floor,
            "at_floor": bool(p <= floor)}
