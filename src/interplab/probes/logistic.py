"""Logistic-regression probe (L2-regularised, scikit-learn's lbfgs solver)."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from interplab.probes.base import LinearProbe


class LogisticProbe(LinearProbe):
    """Logistic regression on centred activations.

    Inputs are divided by their overall RMS before fitting so that ``C`` means the same at every
    layer (residual-stream norms grow with depth); the returned direction is in raw units.
    """

    name = "logistic"

    def __init__(self, centering: str = "train", C: float = 1.0, max_iter: int = 500) -> None:
        super().__init__(centering)
        self.C = C
        self.max_iter = max_iter

    def _fit_direction(self, Xc: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
        rms = float(np.sqrt((Xc**2).mean())) or 1.0
        clf = LogisticRegression(C=self.C, max_iter=self.max_iter)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(Xc / rms, y)
        self.n_iter_ = int(clf.n_iter_[0])
        return clf.coef_[0] / rms, float(-clf.intercept_[0])

    def get_params(self, deep: bool = True) -> dict:
        return {"centering": self.centering, "C": self.C, "max_iter": self.max_iter}
