"""Shared machinery of linear truth probes (scikit-learn conventions).

A fitted probe has ``direction_`` (``[d_model]``, in the units of the raw activations),
``threshold_`` (a decision is ``(x - centre) · direction_ > threshold_``), ``mean_`` (the training
mean used for centring) and ``scale_`` (the spread of training projections, for probabilities).

Centring is explicit:

* ``"train"`` (the default of a probe used on its own): every input is centred by the *training*
  mean. Nothing about a test set leaks into its predictions.
* ``"per-dataset"`` (the default of generalization matrices): every input batch is centred by its
  *own* mean, as in the original truth-probe work. This uses test-set statistics (it assumes each
  test set is roughly balanced) and reports flag it. A training set mixed from several datasets
  (e.g. cities + neg_cities) is centred component by component when ``fit`` gets ``groups``
  (one label per row naming its dataset), as geometry-of-truth does; without ``groups`` it is
  centred jointly.
* ``"none"``: raw activations.
"""

from __future__ import annotations

import copy

import numpy as np

from interplab.errors import InterplabError

CENTERINGS = ("train", "per-dataset", "none")


def as_array(X: object) -> np.ndarray:
    if hasattr(X, "detach"):
        X = X.detach().cpu().float().numpy()  # type: ignore[union-attr]
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim != 2:
        raise InterplabError(f"probe inputs must be 2-D [n_samples, d_model], got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise InterplabError("probe inputs contain NaN or infinite values")
    return arr


def as_labels(y: object, n: int) -> np.ndarray:
    arr = np.asarray(y).reshape(-1).astype(np.int64)
    if arr.size != n:
        raise InterplabError(f"got {arr.size} labels for {n} samples")
    if not np.isin(arr, (0, 1)).all():
        raise InterplabError("labels must be 0/1")
    if len(np.unique(arr)) < 2:
        raise InterplabError("training labels hold a single class; a probe needs both 0 and 1")
    return arr


def as_groups(groups: object, n: int) -> np.ndarray | None:
    """Component labels ``[n]`` of a mixed training set (any hashable values), or ``None``."""
    if groups is None:
        return None
    arr = np.asarray(groups).reshape(-1)
    if arr.size != n:
        raise InterplabError(f"got {arr.size} group labels for {n} samples; pass one per row")
    return arr


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


class LinearProbe:
    """Base class: subclasses implement ``_fit_direction(Xc, y) -> (direction, threshold|None)``."""

    name = "linear"

    def __init__(self, centering: str = "train") -> None:
        if centering not in CENTERINGS:
            raise InterplabError(f"centering must be one of {CENTERINGS}, not {centering!r}")
        self.centering = centering

    # ------------------------------------------------------------------ sklearn API
    def fit(self, X: object, y: object, groups: object = None) -> LinearProbe:
        """Fit on ``X`` ``[n, d]`` and 0/1 labels ``y`` ``[n]``; ``groups`` ``[n]`` names each
        row's dataset (used by ``"per-dataset"`` centring only)."""
        X = as_array(X)
        y = as_labels(y, X.shape[0])
        self.mean_ = X.mean(axis=0) if self.centering == "train" else np.zeros(X.shape[1])
        Xc = self._center_groups(X, as_groups(groups, X.shape[0]))
        direction, threshold = self._fit_direction(Xc, y)
        self.direction_ = np.asarray(direction, dtype=np.float64)
        self._set_threshold(Xc, y, threshold)
        self.n_features_in_ = X.shape[1]
        return self

    def _fit_direction(self, Xc: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float | None]:
        raise NotImplementedError

    def _set_threshold(self, Xc: np.ndarray, y: np.ndarray, threshold: float | None) -> None:
        proj = Xc @ self.direction_
        m1, m0 = proj[y == 1].mean(), proj[y == 0].mean()
        if threshold is None:
            if m1 < m0:  # orient the direction so that "true" projects higher
                self.direction_ = -self.direction_
                proj, m1, m0 = -proj, -m1, -m0
            threshold = 0.5 * (m1 + m0)
        self.threshold_ = float(threshold)
        spread = float(np.sqrt(0.5 * (proj[y == 1].var() + proj[y == 0].var())))
        self.scale_ = spread if spread > 0 else 1.0

    def _center(self, X: np.ndarray) -> np.ndarray:
        if self.centering == "per-dataset":
            return X - X.mean(axis=0)
        return X - self.mean_

    def _center_groups(self, X: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
        """Training-time centring: per-dataset centres each component by its own mean."""
        if self.centering != "per-dataset" or groups is None:
            return self._center(X)
        out = np.empty_like(X)
        for g in np.unique(groups):
            rows = groups == g
            out[rows] = X[rows] - X[rows].mean(axis=0)
        return out

    def decision_function(self, X: object) -> np.ndarray:
        self._check_fitted()
        X = as_array(X)
        if X.shape[1] != self.n_features_in_:
            raise InterplabError(f"probe was fitted on {self.n_features_in_} features, got {X.shape[1]}")
        return self._center(X) @ self.direction_ - self.threshold_

    def predict_proba(self, X: object) -> np.ndarray:
        p1 = _sigmoid(self.decision_function(X) / self.scale_)
        return np.stack([1 - p1, p1], axis=1)

    def predict(self, X: object) -> np.ndarray:
        return (self.decision_function(X) > 0).astype(np.int64)

    def score(self, X: object, y: object) -> float:
        return float((self.predict(X) == np.asarray(y).reshape(-1)).mean())

    @property
    def direction(self) -> np.ndarray:
        self._check_fitted()
        return self.direction_

    def _check_fitted(self) -> None:
        if not hasattr(self, "direction_"):
            raise InterplabError(f"this {type(self).__name__} is not fitted; call fit(X, y) first")

    # ------------------------------------------------------------------ controls
    def with_direction(self, direction: np.ndarray, X: object, y: object,
                       groups: object = None) -> LinearProbe:
        """A copy that uses ``direction`` with a threshold (and orientation) refit on (X, y).

        Used for the norm-matched random-direction control: the best a random direction can do
        when it is allowed the same threshold fitting as the probe.
        """
        self._check_fitted()
        out = copy.copy(self)
        out.direction_ = np.asarray(direction, dtype=np.float64)
        X = as_array(X)
        Xc = out._center_groups(X, as_groups(groups, X.shape[0]))
        out._set_threshold(Xc, as_labels(y, X.shape[0]), None)
        return out

    def get_params(self, deep: bool = True) -> dict:
        return {"centering": self.centering}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"
