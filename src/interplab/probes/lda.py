"""LDA probe: the mass-mean direction whitened by a shrunk within-class covariance."""

from __future__ import annotations

import numpy as np
from sklearn.covariance import ledoit_wolf_shrinkage

from interplab.errors import InterplabError
from interplab.probes.base import LinearProbe


class LDAProbe(LinearProbe):
    """Direction = Σ⁻¹ (μ₁ − μ₀), Σ the pooled within-class covariance shrunk towards a scaled
    identity (Ledoit–Wolf by default, or a fixed ``shrinkage`` in [0, 1])."""

    name = "lda"

    def __init__(self, centering: str = "train", shrinkage: float | str = "ledoit-wolf") -> None:
        super().__init__(centering)
        if shrinkage != "ledoit-wolf" and not (isinstance(shrinkage, int | float) and 0 <= shrinkage <= 1):
            raise InterplabError(f"shrinkage must be 'ledoit-wolf' or in [0, 1], not {shrinkage!r}")
        self.shrinkage = shrinkage

    def _fit_direction(self, Xc: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, None]:
        mu1, mu0 = Xc[y == 1].mean(axis=0), Xc[y == 0].mean(axis=0)
        within = np.concatenate([Xc[y == 1] - mu1, Xc[y == 0] - mu0])
        if self.shrinkage == "ledoit-wolf":
            alpha = float(ledoit_wolf_shrinkage(within, assume_centered=True))
        else:
            alpha = float(self.shrinkage)
        cov = within.T @ within / max(len(within) - 2, 1)
        target = np.trace(cov) / cov.shape[0]
        shrunk = (1 - alpha) * cov + alpha * target * np.eye(cov.shape[0])
        self.shrinkage_ = alpha
        return np.linalg.solve(shrunk, mu1 - mu0), None

    def get_params(self, deep: bool = True) -> dict:
        return {"centering": self.centering, "shrinkage": self.shrinkage}
