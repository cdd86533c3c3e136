"""Iterative nullspace projection (INLP) and the "how many directions?" curve.

Each round trains a linear classifier on the current (projected) training rows, then projects
its weight directions out of the data; the held-out accuracy before each projection traces how
much linearly decodable signal is left after ``r`` directions are gone. Run next to the same
curve for shuffled labels, it answers whether a concept lives in one direction or in many.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from interplab.controls import bootstrap_mean, shuffled_labels
from interplab.defaults import DEFAULT_N_BOOT
from interplab.erasure.classifiers import correct, linear_classifier, majority_rate, raw_directions
from interplab.erasure.erasers import LinearEraser, as_labels, as_tensor64
from interplab.errors import InterplabError


@dataclass
class INLPResult:
    """``eraser`` projects out every direction found; ``rounds[r]`` is the held-out accuracy of the
    classifier trained after ``r`` directions were erased (``value``, ``lo``, ``hi``), when a
    held-out set was given; ``rounds_to_chance`` the first ``r`` whose interval reaches the
    majority rate (None if never within the rounds run)."""

    eraser: LinearEraser
    rounds: list[dict[str, float]] = field(default_factory=list)
    majority: float | None = None
    rounds_to_chance: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.eraser.rank, "rounds": self.rounds, "majority": self.majority,
                "rounds_to_chance": self.rounds_to_chance}


def _project(x: np.ndarray, q: np.ndarray, mean: np.ndarray) -> np.ndarray:
    return x - ((x - mean) @ q) @ q.T


def _add_directions(q: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``q`` ``[d, r]`` orthonormal, extended by the parts of the rows of ``w`` orthogonal to it."""
    for v in w:
        v = v - q @ (q.T @ v)
        norm = np.linalg.norm(v)
        if norm > 1e-10:
            q = np.concatenate([q, (v / norm)[:, None]], axis=1)
    return q


def inlp(X: Any, y: Any, *, n_rounds: int = 10, X_test: Any = None, y_test: Any = None,
         stop_at_chance: bool = False, C: float = 1.0, seed: int = 0,
         n_boot: int = DEFAULT_N_BOOT) -> INLPResult:
    """Run ``n_rounds`` of INLP on ``X`` ``[n, d]`` and integer labels ``y``.

    With ``X_test``/``y_test``, each round's classifier is scored on the held-out rows (projected
    by the directions found so far) with a bootstrap interval; ``stop_at_chance`` ends the run at
    the first round whose interval reaches the majority rate.
    """
    if not (isinstance(n_rounds, int) and n_rounds >= 1):
        raise InterplabError(f"n_rounds must be a positive integer, got {n_rounds!r}")
    x = as_tensor64(X).numpy()
    labels = as_labels(y, x.shape[0]).numpy()
    held_out = X_test is not None
    if held_out:
        xt = as_tensor64(X_test).numpy()
        yt = as_labels(y_test, xt.shape[0]).numpy()
    mean = x.mean(0)
    q = np.zeros((x.shape[1], 0))
    result = INLPResult(LinearEraser("inlp", torch.zeros(x.shape[1], 0), torch.zeros(0, x.shape[1]), None))
    if held_out:
        result.majority = majority_rate(yt)
    for r in range(n_rounds):
        xr = _project(x, q, mean)
        clf = linear_classifier(C)
        if held_out:
            hits = correct(clf, xr, labels, _project(xt, q, mean), yt)
            acc = bootstrap_mean(hits[None], n_boot=n_boot, seed=seed + r)
            result.rounds.append({"erased": r, "value": acc["value"][0], "lo": acc["lo"][0],
                                  "hi": acc["hi"][0]})
            if result.rounds_to_chance is None and acc["lo"][0] <= result.majority:
                result.rounds_to_chance = r
                if stop_at_chance:
                    break
        else:
            clf.fit(xr, labels)
        q_new = _add_directions(q, raw_directions(clf))
        if q_new.shape[1] == q.shape[1]:
            break  # the classifier found no new direction: nothing linear is left to remove
        q = q_new
    qt = torch.from_numpy(q)
    result.eraser = LinearEraser("inlp", qt, qt.T.contiguous(), torch.from_numpy(mean))
    return result


def directions_curve(X_train: Any, y_train: Any, X_test: Any, y_test: Any, *, max_rounds: int = 50,
                     C: float = 1.0, seed: int = 0, n_boot: int = DEFAULT_N_BOOT) -> dict[str, Any]:
    """Erase the best linear direction and retrain until held-out accuracy reaches chance, for
    the real labels and for shuffled ones (train and test labels permuted independently).

    Returns ``{"labels": INLPResult.to_dict(), "shuffled": ...}``; ``rounds_to_chance`` counts the
    directions erased before the held-out interval first reaches the majority rate (None: not
    within ``max_rounds``).
    """
    ytr, yte = np.asarray(y_train), np.asarray(y_test)
    out = {}
    for name, (a, b) in {"labels": (ytr, yte),
                         "shuffled": (shuffled_labels(ytr, seed), shuffled_labels(yte, seed + 1))}.items():
        res = inlp(X_train, a, n_rounds=max_rounds, X_test=X_test, y_test=b, stop_at_chance=True,
                   C=C, seed=seed, n_boot=n_boot)
        out[name] = res.to_dict()
    return out
