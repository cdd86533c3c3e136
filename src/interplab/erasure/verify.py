"""What is checked after every erasure, on held-out rows, and what is not.

For an eraser fitted on training rows, :func:`verify_erasure` reports

* a linear probe's and an MLP probe's held-out accuracy before and after erasure, each with a
  percentile-bootstrap interval, next to the majority rate (chance);
* the same after erasing a *random* subspace of the same rank (the control: it must leave the
  concept recoverable, else the probe numbers say nothing about the method);
* the relative size of the edit, mean ``‖Δx‖ / ‖x‖`` over held-out rows;
* in words, what was tested and what was not. A chance-level linear probe is not proof that the
  concept is gone: labels have been recovered after linear erasure by clustering and by
  non-linear classifiers, and none of these checks looks at what else the edit destroyed.

Why an MLP next to the linear probe: once the class means are equal, the gradient of any
convex-loss linear classifier (logistic, hinge) vanishes at zero weights, so the linear probe
reports chance even when a threshold on one feature still separates the classes (mean matching
with outliers does exactly this; see the tests). Chance is the best constant answer on the
held-out rows (the majority rate).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from interplab.controls import bootstrap_mean
from interplab.controls.multiple import ONE_CLASS_RATE
from interplab.defaults import DEFAULT_N_BOOT
from interplab.erasure.classifiers import (
    linear_classifier,
    majority_rate,
    mlp_classifier,
    predictions,
)
from interplab.erasure.erasers import Eraser, as_labels, as_tensor64
from interplab.erasure.random_subspace import random_subspace_eraser

PROBES = ("linear", "mlp")
CONDITIONS = ("before", "erased", "random")


@dataclass
class ErasureCheck:
    """Held-out accuracies ``accuracy[probe][condition] = {value, lo, hi, n, one_class}`` for probes
    ``linear``/``mlp`` and conditions ``before``/``erased``/``random`` (random-subspace control),
    the majority rate, edit sizes and the statements of scope. ``one_class`` marks a probe that
    answered (nearly) every held-out row with the same class: its accuracy says nothing, which is
    what a convex-loss linear probe does once the erasure has made the class means equal."""

    method: str
    rank: int | None
    control_rank: int
    needs_labels: bool
    majority: float
    accuracy: dict[str, dict[str, dict[str, float]]]
    relative_change: float  # mean ‖Δx‖/‖x‖ over held-out rows, the erasure
    relative_change_random: float  # the same for the random-subspace control
    n_train: int
    n_test: int
    tested: list[str] = field(default_factory=list)
    not_tested: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def erased_to_chance(self, probe: str = "linear") -> bool:
        """Whether the held-out interval after erasure reaches the majority rate (check
        ``accuracy[probe]["erased"]["one_class"]`` too: a constant answer is chance for free)."""
        return self.accuracy[probe]["erased"]["lo"] <= self.majority

    def control_recoverable(self, probe: str = "linear") -> bool:
        """Whether the concept stays decodable (interval above the majority rate) after the
        random-subspace control."""
        return self.accuracy[probe]["random"]["lo"] > self.majority


def _relative_change(x: torch.Tensor, x_new: torch.Tensor) -> float:
    norm = x.norm(dim=1).clamp_min(1e-300)
    return float(((x_new - x).norm(dim=1) / norm).mean())


def _scope(eraser: Eraser, mlp_hidden: int) -> tuple[list[str], list[str]]:
    tested = [
        "held-out accuracy of an L2 logistic regression on standardised activations, trained on "
        "erased training rows and scored on erased held-out rows",
        f"held-out accuracy of a one-hidden-layer MLP ({mlp_hidden} ReLU units) trained the same way",
        "the same two probes after erasing a random subspace of the same rank (control)",
        "mean ‖Δx‖/‖x‖ of the edit on held-out rows",
    ]
    not_tested = [
        "non-linear recovery beyond one small MLP (deeper networks, kernels, nearest neighbours)",
        "unsupervised recovery (clustering the erased rows)",
        "other concepts the edit may have damaged",
        "whether the model itself can still use the concept (see the in-model ΔCE/KL section)",
    ]
    if eraser.needs_labels:
        tested.append("the edit was applied with each row's true label (an oracle edit)")
        not_tested.append("erasure without labels: this edit cannot run on unlabelled text")
    return tested, not_tested


def verify_erasure(eraser: Eraser, X_train: Any, y_train: Any, X_test: Any, y_test: Any, *,
                   seed: int = 0, n_boot: int = DEFAULT_N_BOOT, C: float = 1.0,
                   mlp_hidden: int = 64) -> ErasureCheck:
    """Check ``eraser`` (fitted on ``X_train``/``y_train``, never on the test rows) on held-out
    ``X_test``/``y_test``; see the module docstring. Labelled erasers get each row's label."""
    xtr, xte = as_tensor64(X_train), as_tensor64(X_test)
    ytr, yte = as_labels(y_train, xtr.shape[0]), as_labels(y_test, xte.shape[0])
    control = random_subspace_eraser(xtr.shape[1], eraser.control_rank, seed=seed,
                                     bias=xtr.mean(0))
    views = {"before": (xtr, xte), "erased": (eraser(xtr, ytr), eraser(xte, yte)),
             "random": (control(xtr), control(xte))}
    ytr_np, yte_np = ytr.numpy(), yte.numpy()
    preds = {p: {c: predictions(linear_classifier(C) if p == "linear" else
                                mlp_classifier(seed, mlp_hidden), a.numpy(), ytr_np, b.numpy())
                 for c, (a, b) in views.items()} for p in PROBES}
    hits = {p: {c: (v == yte_np).astype(np.float64) for c, v in pc.items()} for p, pc in preds.items()}
    rows = np.stack([hits[p][c] for p in PROBES for c in CONDITIONS])
    boot = bootstrap_mean(rows, n_boot=n_boot, seed=seed)
    acc: dict[str, dict[str, dict[str, float]]] = {p: {} for p in PROBES}
    for i, (p, c) in enumerate((p, c) for p in PROBES for c in CONDITIONS):
        share = float(np.bincount(preds[p][c]).max() / len(preds[p][c]))
        acc[p][c] = {"value": boot["value"][i], "lo": boot["lo"][i], "hi": boot["hi"][i],
                     "n": boot["n"], "one_class": share >= ONE_CLASS_RATE}
    tested, not_tested = _scope(eraser, mlp_hidden)
    return ErasureCheck(
        method=eraser.method, rank=getattr(eraser, "rank", None), control_rank=eraser.control_rank,
        needs_labels=eraser.needs_labels, majority=majority_rate(yte_np), accuracy=acc,
        relative_change=_relative_change(xte, views["erased"][1]),
        relative_change_random=_relative_change(xte, views["random"][1]),
        n_train=int(xtr.shape[0]), n_test=int(xte.shape[0]), tested=tested, not_tested=not_tested)
