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
from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError
from sklearn.utils import Tags
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import column_or_1d, validate_data

from interplab.errors import InterplabError

CENTERINGS = ("train", "per-dataset", "none")


class ProbeNotFittedError(InterplabError, NotFittedError):
    """A probe was used before ``fit`` (also a scikit-learn ``NotFittedError``)."""


def as_array(X: object) -> np.ndarray:
    """``X`` as a finite float64 ``[n, d]`` array (torch tensors are moved to the CPU)."""
    if hasattr(X, "detach"):
        X = X.detach().cpu().float().numpy()  # type: ignore[union-attr]
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim != 2:
        raise InterplabError(f"probe inputs must be 2-D [n_samples, d_model], got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise InterplabError("probe inputs contain NaN or infinite values")
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


class LinearProbe(ClassifierMixin, BaseEstimator):
    """Base class: subclasses implement ``_fit_direction(Xc, y) -> (direction, threshold|None)``.

    A scikit-learn binary classifier: ``__init__`` only stores hyper-parameters (checked by
    ``fit``, so ``set_params`` and ``clone`` see the same rules), ``get_params``/``set_params``
    come from :class:`sklearn.base.BaseEstimator`, ``fit`` returns ``self`` and learned state ends
    in ``_`` (``classes_``, ``direction_``, ``threshold_``, ``mean_``, ``scale_``). Any two label
    values work; ``classes_[1]`` is the "true" class, the one that projects higher.
    """

    name = "linear"

    def __init__(self, centering: str = "train") -> None:
        self.centering = centering

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags

    def _check_params(self) -> None:
        """Refuse bad hyper-parameters (called by ``fit``; subclasses extend it)."""
        if self.centering not in CENTERINGS:
            raise InterplabError(f"centering must be one of {CENTERINGS}, not {self.centering!r}")

    # ------------------------------------------------------------------ sklearn API
    def fit(self, X: object, y: object, groups: object = None) -> LinearProbe:
        """Fit on ``X`` ``[n, d]`` and binary labels ``y`` ``[n]``; ``groups`` ``[n]`` names each
        row's dataset (used by ``"per-dataset"`` centring only)."""
        self._check_params()
        X = self._validate_X(X, reset=True)
        y = self._encode_labels(y, X.shape[0])
        self.mean_ = X.mean(axis=0) if self.centering == "train" else np.zeros(X.shape[1])
        Xc = self._center_groups(X, as_groups(groups, X.shape[0]))
        direction, threshold = self._fit_direction(Xc, y)
        self.direction_ = np.asarray(direction, dtype=np.float64)
        self._set_threshold(Xc, y, threshold)
        return self

    def _validate_X(self, X: object, *, reset: bool) -> np.ndarray:
        """``X`` as a finite float64 ``[n, d]`` array; sets (``reset``) or checks ``n_features_in_``."""
        if hasattr(X, "detach"):
            X = X.detach().cpu().float().numpy()  # type: ignore[union-attr]
        try:
            return validate_data(self, X, reset=reset, dtype=np.float64)
        except ValueError as e:
            raise InterplabError(f"probe inputs must be a finite 2-D [n_samples, d_model] array: {e}") from None

    def _encode_labels(self, y: object, n: int) -> np.ndarray:
        """Set ``classes_`` from binary labels ``y`` and return them as 0/1 (``classes_[1]`` → 1)."""
        if y is None:
            raise InterplabError(f"{type(self).__name__} requires y to be passed, but the target y "
                                 "is None; pass one label per row")
        y = column_or_1d(y, warn=True)  # a column vector is accepted, with sklearn's warning
        if y.size != n:
            raise InterplabError(f"got {y.size} labels for {n} samples")
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        if len(self.classes_) == 1:
            raise InterplabError("training labels hold a single class (only one class present); a probe needs both")
        if len(self.classes_) > 2:
            raise InterplabError(f"Only binary classification is supported; got {len(self.classes_)} "
                                 "classes (a probe separates true from false)")
        return (y == self.classes_[1]).astype(np.int64)

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
        """``(x − centre) · direction_ − threshold_`` per row of ``X`` ``[n, d]``; > 0 → ``classes_[1]``."""
        self._check_fitted()
        X = self._validate_X(X, reset=False)
        return self._scoring_input(X) @ self.direction_ - self.threshold_

    def _scoring_input(self, X: np.ndarray, negated: bool = False) -> np.ndarray:
        """``X`` transformed as ``decision_function`` does before the projection (centred)."""
        return self._center(X)

    def _scoring_frame(self) -> tuple:
        """What ``_scoring_input`` depends on besides ``X``: probes with equal frames transform
        ``X`` identically (see :func:`decision_functions`)."""
        return (type(self), self.centering, None if self.centering == "per-dataset" else self.mean_)

    def predict_proba(self, X: object) -> np.ndarray:
        p1 = _sigmoid(self.decision_function(X) / self.scale_)
        return np.stack([1 - p1, p1], axis=1)

    def predict(self, X: object) -> np.ndarray:
        positive = self.decision_function(X) > 0  # checks fitting before classes_ is read
        return self.classes_[positive.astype(np.int64)]

    @property
    def direction(self) -> np.ndarray:
        self._check_fitted()
        return self.direction_

    def _check_fitted(self) -> None:
        if not hasattr(self, "direction_"):
            raise ProbeNotFittedError(f"this {type(self).__name__} is not fitted; call fit(X, y) first")

    # ------------------------------------------------------------------ controls
    def with_direction(self, direction: np.ndarray, X: object, y: object,
                       groups: object = None) -> LinearProbe:
        """A copy that uses ``direction`` with a threshold (and orientation) refit on (X, y).

        Used for the norm-matched random-direction control: the best a random direction can do
        when it is allowed the same threshold fitting as the probe.
        """
        return self.with_directions([direction], X, y, groups)[0]

    def with_directions(self, directions: Sequence[np.ndarray], X: object, y: object,
                        groups: object = None) -> list[LinearProbe]:
        """:meth:`with_direction` for each of ``directions``, centring ``X`` once for all."""
        self._check_fitted()
        base = copy.copy(self)
        X = as_array(X)
        y01 = base._encode_labels(y, X.shape[0])  # sets the copies' classes_, not this probe's
        Xc = base._center_groups(X, as_groups(groups, X.shape[0]))
        out = []
        for direction in directions:
            probe = copy.copy(base)
            probe.direction_ = np.asarray(direction, dtype=np.float64)
            probe._set_threshold(Xc, y01, None)
            out.append(probe)
        return out


class PairProbe(LinearProbe):
    """A probe trained on statement/negation pairs rather than on labelled rows (CCS).

    The seam: ``fit_pairs(X, X_neg, y=None, groups=None)`` (row i of ``X`` and of ``X_neg`` make
    opposite claims; ``y``, when given, only fixes the sign) and ``decision_function(X,
    negated=False)`` (a negated test set is normalised as the negated side was in training).
    Code that fits or scores probes asks ``isinstance(probe, PairProbe)``, never a name.
    """

    def fit(self, X: object, y: object = None, X_neg: object = None,  # type: ignore[override]
            groups: object = None) -> PairProbe:
        """``fit_pairs`` under scikit-learn's name: ``X_neg`` is required."""
        if X_neg is None:
            raise InterplabError(f"{type(self).__name__} trains on pairs: pass X_neg, the activations "
                                 "of the negations (or call fit_pairs(X, X_neg, y))")
        return self.fit_pairs(X, X_neg, y, groups=groups)

    def fit_pairs(self, X: object, X_neg: object, y: object = None,
                  groups: object = None) -> PairProbe:
        raise NotImplementedError(f"{type(self).__name__} must define fit_pairs(X, X_neg, y)")

    def decision_function(self, X: object, negated: bool = False) -> np.ndarray:  # type: ignore[override]
        raise NotImplementedError(f"{type(self).__name__} must define decision_function(X, negated)")

    def predict_proba(self, X: object, negated: bool = False) -> np.ndarray:  # type: ignore[override]
        p1 = _sigmoid(self.decision_function(X, negated) / self.scale_)
        return np.stack([1 - p1, p1], axis=1)

    def predict(self, X: object, negated: bool = False) -> np.ndarray:  # type: ignore[override]
        positive = self.decision_function(X, negated) > 0
        return self.classes_[positive.astype(np.int64)]

    def score(self, X: object, y: object, negated: bool = False,  # type: ignore[override]
              sample_weight: object = None) -> float:
        from sklearn.metrics import accuracy_score

        return float(accuracy_score(y, self.predict(X, negated), sample_weight=sample_weight))

    def predict_pairs(self, X: object, X_neg: object) -> np.ndarray:
        """Predict from (statement, negation) pairs: ``(p⁺ + 1 − p⁻) / 2 > 0.5``, each side
        normalised as in training."""
        pp = self.predict_proba(X)[:, 1]
        pn = self.predict_proba(X_neg, negated=True)[:, 1]
        return self.classes_[(0.5 * (pp + 1 - pn) > 0.5).astype(np.int64)]


def _same_frame(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(
        np.array_equal(x, y) if isinstance(x, np.ndarray) or isinstance(y, np.ndarray) else x == y
        for x, y in zip(a, b, strict=True))


def decision_functions(probes: list[LinearProbe], X: object, negated: bool = False) -> np.ndarray:
    """``[k, n]``: each fitted probe's ``decision_function(X)`` (``negated`` for pair probes).

    Probes that transform ``X`` alike (same class, centring and stored statistics, e.g. the
    shuffled-label refits and random directions of one layer) share one centring of ``X`` and one
    matrix product, instead of one copy of ``X`` per probe.
    """
    groups: list[list[int]] = []
    for i, probe in enumerate(probes):
        probe._check_fitted()
        frame = probe._scoring_frame()
        match = next((g for g in groups if _same_frame(probes[g[0]]._scoring_frame(), frame)), None)
        if match is None:
            groups.append([i])
        else:
            match.append(i)
    out: np.ndarray | None = None
    for g in groups:
        first = probes[g[0]]
        Z = first._scoring_input(first._validate_X(X, reset=False), negated)
        D = np.stack([probes[i].direction_ for i in g], axis=1)
        thresholds = np.array([probes[i].threshold_ for i in g])
        if out is None:
            out = np.empty((len(probes), Z.shape[0]))
        out[g] = (Z @ D).T - thresholds[:, None]
    assert out is not None, "decision_functions needs at least one probe"
    return out
