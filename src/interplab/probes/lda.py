"""LDA probes: the mass-mean direction whitened by the pooled within-class covariance.

Two estimators of the inverse covariance are offered, and they give different probes when the
number of statements is not much larger than ``d_model`` (the usual case):

* ``covariance="shrunk"`` (``LDAProbe()``, registered as ``lda``): ``Σ`` (divided by ``n − 2``)
  shrunk towards a scaled identity (Ledoit–Wolf, or a fixed ``shrinkage``), inverted exactly;
  the threshold is the midpoint of the projected class means. Stable for any ``n``.
* ``covariance="pinv"`` (``MassMeanIIDProbe``, registered as ``massmean-iid``): the
  "mass-mean probe, iid" of Marks & Tegmark's *Geometry of Truth* reference code: ``Σ`` divided
  by ``n``, its pseudo-inverse with eigenvalues ``≤ pinv_atol`` dropped (absolute, in squared
  activation units, ``1e-3`` as in the reference), direction ``Σ⁺ (μ_true − μ_false)`` and
  decision ``(x − centre) · direction > 0`` (no fitted threshold). Use it to compare with the paper;
  with ``n < d`` it ignores every direction the training set does not span.
"""

from __future__ import annotations

import numpy as np
from sklearn.covariance import ledoit_wolf_shrinkage

from interplab.errors import InterplabError
from interplab.probes.base import LinearProbe

COVARIANCES = ("shrunk", "pinv")


class LDAProbe(LinearProbe):
    """Direction = Σ⁻¹ (μ₁ − μ₀), Σ the pooled within-class covariance: shrunk towards a scaled
    identity (``covariance="shrunk"``: Ledoit–Wolf by default, or a fixed ``shrinkage`` in
    [0, 1]; midpoint threshold) or pseudo-inverted as in the reference mass-mean iid probe
    (``covariance="pinv"``; threshold 0). See the module docstring for the difference."""

    name = "lda"

    def __init__(self, centering: str = "train", shrinkage: float | str = "ledoit-wolf",
                 covariance: str = "shrunk", pinv_atol: float = 1e-3) -> None:
        self.centering = centering
        self.shrinkage, self.covariance, self.pinv_atol = shrinkage, covariance, pinv_atol

    def _check_params(self) -> None:
        super()._check_params()
        shrinkage = self.shrinkage
        if shrinkage != "ledoit-wolf" and not (isinstance(shrinkage, int | float) and 0 <= shrinkage <= 1):
            raise InterplabError(f"shrinkage must be 'ledoit-wolf' or in [0, 1], not {shrinkage!r}")
        if self.covariance not in COVARIANCES:
            raise InterplabError(f"covariance must be one of {COVARIANCES}, not {self.covariance!r}")
        if not (isinstance(self.pinv_atol, int | float) and self.pinv_atol >= 0):
            raise InterplabError(f"pinv_atol must be a number >= 0, not {self.pinv_atol!r}")

    def _fit_direction(self, Xc: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float | None]:
        mu1, mu0 = Xc[y == 1].mean(axis=0), Xc[y == 0].mean(axis=0)
        within = np.concatenate([Xc[y == 1] - mu1, Xc[y == 0] - mu0])  # [n, d]
        if self.covariance == "pinv":
            return self._pinv(within.T @ within / len(within)) @ (mu1 - mu0), 0.0
        if self.shrinkage == "ledoit-wolf":
            alpha = float(ledoit_wolf_shrinkage(within, assume_centered=True))
        else:
            alpha = float(self.shrinkage)
        cov = within.T @ within / max(len(within) - 2, 1)
        target = np.trace(cov) / cov.shape[0]
        shrunk = (1 - alpha) * cov + alpha * target * np.eye(cov.shape[0])
        self.shrinkage_ = alpha
        return np.linalg.solve(shrunk, mu1 - mu0), None

    def _pinv(self, cov: np.ndarray) -> np.ndarray:
        """Pseudo-inverse of a symmetric matrix, eigenvalues ``≤ pinv_atol`` treated as zero."""
        evals, evecs = np.linalg.eigh(cov)
        keep = np.abs(evals) > self.pinv_atol
        self.rank_ = int(keep.sum())
        return (evecs[:, keep] / evals[keep]) @ evecs[:, keep].T


class MassMeanIIDProbe(LDAProbe):
    """The reference "mass-mean iid" probe: ``LDAProbe(covariance="pinv")`` under its own name."""

    name = "massmean-iid"

    # fixed, not parameters: this class *is* the pseudo-inverse variant
    covariance = "pinv"
    shrinkage = "ledoit-wolf"

    def __init__(self, centering: str = "train", pinv_atol: float = 1e-3) -> None:
        self.centering, self.pinv_atol = centering, pinv_atol
