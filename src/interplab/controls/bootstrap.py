"""Percentile bootstrap confidence intervals."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its 95 % (or ``level``) interval and the sample count it rests on."""

    value: float
    lo: float
    hi: float
    n: int

    def to_dict(self) -> dict:
        return {"value": self.value, "lo": self.lo, "hi": self.hi, "n": self.n}


def bootstrap_ci(values: np.ndarray, *, n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampling rows)."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, size=(n_boot, values.size))
    means = values[idx].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def accuracy_with_ci(pred: np.ndarray, y: np.ndarray, *, n_boot: int = 1000, level: float = 0.95,
                     seed: int = 0) -> Estimate:
    """Accuracy of ``pred`` against ``y`` with a percentile bootstrap interval."""
    correct = (np.asarray(pred).reshape(-1) == np.asarray(y).reshape(-1)).astype(np.float64)
    lo, hi = bootstrap_ci(correct, n_boot=n_boot, level=level, seed=seed)
    return Estimate(float(correct.mean()) if correct.size else float("nan"), lo, hi, int(correct.size))
