"""PCA views of activations: a dataset in its own basis or in another dataset's."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from interplab.probes.base import as_array


@dataclass(frozen=True)
class PCABasis:
    mean: np.ndarray  # [d]
    components: np.ndarray  # [k, d], orthonormal rows
    explained_variance_ratio: np.ndarray  # [k]

    def project(self, X: object) -> np.ndarray:
        """Coordinates of ``X`` (``[n, d]``) in this basis, ``[n, k]``."""
        return (as_array(X) - self.mean) @ self.components.T


def pca_basis(X: object, k: int = 2) -> PCABasis:
    """Top-``k`` principal directions of ``X`` (centred by its mean)."""
    X = as_array(X)
    mean = X.mean(axis=0)
    _, s, vt = np.linalg.svd(X - mean, full_matrices=False)
    var = s**2
    return PCABasis(mean, vt[:k], var[:k] / var.sum())
