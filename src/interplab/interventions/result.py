"""`InterventionResult`: what every intervention returns, and the statistics that fill it.

Effects are per example ``[n, doses]``; means carry percentile-bootstrap intervals from
:mod:`interplab.controls`; a dose series gets a slope with an interval and the fraction of examples
moved the wrong way; the effect is placed in the distribution of the same intervention with
norm-matched random directions (the null).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from interplab.controls import bootstrap_mean, bootstrap_statistic, null_p_value


@dataclass
class InterventionResult:
    """One intervention's outcome; JSON-serialisable with :meth:`to_dict` / :meth:`to_json`.

    ``effects`` is ``[n][doses]``: metric(intervened) − metric(reference run) per example (for
    steering with ``signs``, multiplied by each example's sign so positive means "moved the
    intended way"). ``summary`` holds ``mean``/``lo``/``hi`` per dose and, for dose series, the
    ``slope`` (per unit dose) with ``slope_lo``/``slope_hi`` and ``wrong_way``. ``null`` compares
    the effect at ``null["dose"]`` with the same intervention along norm-matched random
    directions (:func:`null_comparison`). ``side_effects`` holds KL(reference ‖ intervened) at the read token and ΔCE on
    neutral text per dose. ``proof`` is per hook: fires, token activations changed, ‖Δ‖.
    """

    kind: str
    hooks: list[str]
    positions: str
    read: str
    metric: str
    doses: list[float]
    effects: list[list[float]]
    summary: dict[str, Any]
    null: dict[str, Any] | None
    side_effects: dict[str, Any]
    proof: dict[str, dict[str, float]]
    baseline: list[float]  # the metric on the reference run, per example
    info: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, path: str | Path) -> Path:
        from interplab.fileio import atomic_write_json

        return atomic_write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InterventionResult:
        return cls(**d)

    @classmethod
    def from_json(cls, path: str | Path) -> InterventionResult:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    @property
    def effect_array(self) -> np.ndarray:
        return np.asarray(self.effects, dtype=np.float64)


def _per_example_slopes(effects: np.ndarray, doses: np.ndarray) -> np.ndarray:
    d = doses - doses.mean()
    return (effects - effects.mean(axis=1, keepdims=True)) @ d / (d @ d)


def summarise(effects: np.ndarray, doses: list[float] | None, *, n_boot: int, seed: int,
              expected_sign: float = 1.0) -> dict[str, Any]:
    """Mean and CI per column; for a dose series (≥ 2 distinct doses) the slope, its CI and the
    share of examples moved the wrong way (slope of the opposite sign to ``expected_sign``)."""
    effects = np.asarray(effects, dtype=np.float64)
    b = bootstrap_mean(effects.T, n_boot=n_boot, seed=seed)
    out: dict[str, Any] = {"mean": b["value"], "lo": b["lo"], "hi": b["hi"], "n": b["n"],
                           "sd": effects.std(axis=0, ddof=1).tolist() if len(effects) > 1
                           else [0.0] * effects.shape[1]}
    dose_arr = np.asarray(doses if doses is not None else [], dtype=np.float64)
    if len(np.unique(dose_arr)) >= 2:
        slopes = _per_example_slopes(effects, dose_arr)
        value, lo, hi = bootstrap_statistic(np.mean, slopes, n_boot=n_boot, seed=seed)
        out.update(slope=value, slope_lo=lo, slope_hi=hi, expected_sign=expected_sign,
                   wrong_way=float(np.mean(np.sign(slopes) == -np.sign(expected_sign))),
                   per_example_slope=slopes.tolist())
    return out


def null_comparison(effect: float, null_effects: np.ndarray, dose: float) -> dict[str, Any]:
    """Where the mean ``effect`` falls among the null draws' mean effects: the two-sided
    :func:`interplab.controls.null_p_value` (keys ``p``, ``k``, ``z``, ``at_floor``; ``p`` is
    uncorrected: a study corrects every p-value it emits together), the draws and their
    mean, sd and the effect's percentile among them."""
    null = np.asarray(null_effects, dtype=np.float64)
    k = len(null)
    return {"dose": dose, "effect": float(effect), "values": null.tolist(),
            "mean": float(null.mean()), "sd": float(null.std(ddof=1)) if k > 1 else 0.0,
            "percentile": float(100.0 * np.mean(null < effect)),
            **null_p_value(effect, null).to_dict()}


def side_effects(kl: np.ndarray | None, delta_ce: list[float] | None, *, n_boot: int, seed: int,
                 neutral: dict[str, Any] | None) -> dict[str, Any]:
    """KL ``[n, doses]`` mean and CI per dose, and ΔCE (nats/token) on neutral text per dose."""
    out: dict[str, Any] = {"kl_note": "KL(reference ‖ intervened) of the next-token distribution "
                                      "at the read token, nats"}
    if kl is not None:
        b = bootstrap_mean(np.asarray(kl, dtype=np.float64).T, n_boot=n_boot, seed=seed)
        out.update(kl_mean=b["value"], kl_lo=b["lo"], kl_hi=b["hi"])
    out["delta_ce"] = delta_ce
    out["neutral"] = neutral
    return out
