"""Shuffled labels and norm-matched random directions."""

from __future__ import annotations

from typing import Any

import numpy as np

from interplab.controls.bootstrap import percentile_interval, resample_counts, seeded_draws
from interplab.defaults import DEFAULT_N_BOOT


def shuffled_labels(y: np.ndarray, seed: int = 0) -> np.ndarray:
    """A seeded permutation of ``y``: same class balance, no relation to the inputs."""
    return np.random.default_rng(seed).permutation(np.asarray(y))


def random_direction_like(direction: np.ndarray, seed: int | tuple[int, ...] = 0) -> np.ndarray:
    """A direction drawn uniformly on the sphere, scaled to ``direction``'s norm. ``seed`` may be
    a tuple (e.g. ``(seed, layer)``): one independent stream per entry of a family."""
    direction = np.asarray(direction, dtype=np.float64)
    r = np.random.default_rng(seed).standard_normal(direction.shape)
    return r / np.linalg.norm(r) * np.linalg.norm(direction)


def shuffled_accuracy_interval(hits: np.ndarray, *, n_boot: int = DEFAULT_N_BOOT, seed: int = 0,
                               level: float = 0.95) -> dict[str, list]:
    """Accuracy of a shuffled-label control with an interval that includes the spread between
    shuffles.

    ``hits`` is ``[k, K, n]``: for each of ``k`` rows (e.g. layers), whether each of ``K``
    independently shuffled fits got each of ``n`` test statements right. The value is the mean
    over shuffles and statements. The interval is that of *one* shuffled-label probe's accuracy
    on a test set of ``n`` statements: every bootstrap draw picks one of the ``K`` shuffles at
    random and resamples the statements, so it covers both the variation between shuffles (how
    far a probe trained on meaningless labels can land by chance) and test-set sampling. This is
    the distribution a single real probe should be compared with; a bootstrap of the mean of the
    shuffles covers neither and can look like a significant departure from 0.5.

    Returns ``value``, ``lo``, ``hi`` (lists of length ``k``), ``n``, ``sd_over_shuffles`` (the
    standard deviation of the ``K`` shuffles' accuracies, per row) and ``per_shuffle``
    (``[k][K]`` accuracies). The same draws serve every row (common random numbers).
    """
    hits = np.asarray(hits, dtype=np.float64)
    if hits.ndim != 3 or 0 in hits.shape:
        raise ValueError(f"hits must be a non-empty [rows, shuffles, statements] array, got {hits.shape}")
    k, n_shuffles, n = hits.shape

    def draw() -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        picks = rng.integers(0, n_shuffles, size=n_boot)  # [B]
        return picks, resample_counts(rng, n, n_boot)  # [B, n]

    picks, counts = seeded_draws(seed, ("shuffled", n, n_shuffles, int(n_boot)), draw)
    boots = np.empty((n_boot, k))
    for j in range(n_shuffles):
        boots[picks == j] = counts[picks == j] @ hits[:, j, :].T / n
    lo, hi = percentile_interval(boots, level)
    per_shuffle = hits.mean(axis=2)  # [k, K]
    return {"value": hits.mean(axis=(1, 2)).tolist(), "lo": lo.tolist(), "hi": hi.tolist(),
            "n": n, "sd_over_shuffles": per_shuffle.std(axis=1).tolist(),
            "per_shuffle": per_shuffle.tolist()}


def random_direction_accuracies(probe: Any, X_train: Any, y_train: Any, X_test: Any, y_test: Any,
                                *, n: int = 20, seed: int = 0) -> np.ndarray:
    """Held-out accuracies ``[n]`` of ``n`` norm-matched random directions, each given the same
    threshold fitting as the fitted linear ``probe`` (``probe.with_direction``). One random
    direction is one draw from this distribution; report the distribution."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    out = np.empty(n)
    for i in range(n):
        d = random_direction_like(probe.direction_, seed=(seed, i))
        out[i] = probe.with_direction(d, X_train, y_train).score(X_test, y_test)
    return out


def distribution_summary(values: np.ndarray) -> dict[str, float]:
    """``n``, ``mean``, ``sd``, 5/50/95th percentiles, ``min`` and ``max`` of ``values``."""
    v = np.asarray(values, dtype=np.float64)
    p05, p50, p95 = np.quantile(v, [0.05, 0.5, 0.95])
    return {"n": int(v.size), "mean": float(v.mean()), "sd": float(v.std()), "p05": float(p05),
            "p50": float(p50), "p95": float(p95), "min": float(v.min()), "max": float(v.max()),
            "values": v.tolist()}
