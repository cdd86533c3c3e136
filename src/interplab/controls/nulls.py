"""Null data sources: what does a method find when there is nothing to find?

Every source returns activation-like rows ``[n, d_model]`` (float32 numpy) that go wherever real
activations go (probes, SAEs, studies). Two families:

* from activations alone (:data:`DATA_NULLS`), matched to a reference set ``X``:
  ``gaussian`` (X's mean and full covariance), ``gaussian-mixture`` (12 diagonal Gaussians fitted
  to X: clusters, but no concept), ``hypercube`` (uniform per coordinate with X's mean and
  variance: most of the mass "in the corners");
* from the model (:data:`MODEL_NULLS`), harvested at the same hook and positions:
  ``shuffled-tokens``, ``layer0``, ``reset`` and ``random-init``. They run the model, so they
  are made in :mod:`interplab.study.nulls`; only their names are listed here (statistics stay
  pure: nothing in ``interplab.controls`` runs a model).

Rows of a model null correspond one to one with the input texts (and so with their labels); rows
of a data null do not correspond to anything (labels given to them are arbitrary by construction).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from interplab.errors import InterplabError

DATA_NULLS = ("gaussian", "gaussian-mixture", "hypercube")
MODEL_NULLS = ("shuffled-tokens", "layer0", "reset", "random-init")
NULLS = (*DATA_NULLS, *MODEL_NULLS)
MIXTURE_COMPONENTS = 12


def _reference(X: Any) -> np.ndarray:
    x = np.asarray(X.detach().cpu().numpy() if hasattr(X, "detach") else X, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or not np.isfinite(x).all():
        raise InterplabError(f"a data null needs finite reference activations [n ≥ 2, d], got "
                             f"shape {x.shape}")
    return x


def gaussian_like(X: Any, n: int, seed: int = 0) -> np.ndarray:
    """``n`` rows from the Gaussian with ``X``'s mean and (full, maximum-likelihood) covariance."""
    x = _reference(X)
    rng = np.random.default_rng(seed)
    centred = x - x.mean(0)
    # X = mean + z · (centred / √N) has covariance centred.T @ centred / N exactly, without
    # factorising a possibly singular d × d matrix.
    _, s, vt = np.linalg.svd(centred / np.sqrt(x.shape[0]), full_matrices=False)
    z = rng.standard_normal((n, s.size))
    return (x.mean(0) + (z * s) @ vt).astype(np.float32)


def mixture_like(X: Any, n: int, seed: int = 0, n_components: int = MIXTURE_COMPONENTS) -> np.ndarray:
    """``n`` rows from a mixture of ``n_components`` diagonal Gaussians fitted to ``X``."""
    from sklearn.mixture import GaussianMixture

    x = _reference(X)
    k = min(n_components, x.shape[0])
    gm = GaussianMixture(k, covariance_type="diag", random_state=seed, reg_covar=1e-6).fit(x)
    rows, _ = gm.sample(n)
    return np.random.default_rng(seed).permutation(rows).astype(np.float32)  # sample() sorts by component


def hypercube_like(X: Any, n: int, seed: int = 0) -> np.ndarray:
    """``n`` rows uniform in the axis-aligned box with ``X``'s per-coordinate mean and variance
    (half-width √3·std)."""
    x = _reference(X)
    half = np.sqrt(3.0) * x.std(0)
    u = np.random.default_rng(seed).uniform(-1.0, 1.0, size=(n, x.shape[1]))
    return (x.mean(0) + u * half).astype(np.float32)


def data_null(name: str, X: Any, n: int | None = None, seed: int = 0) -> np.ndarray:
    """Rows of the data null ``name`` matched to reference activations ``X`` (``n`` rows,
    default ``len(X)``)."""
    makers = {"gaussian": gaussian_like, "gaussian-mixture": mixture_like, "hypercube": hypercube_like}
    if name not in makers:
        raise InterplabError(f"unknown data null {name!r}; choose one of {', '.join(DATA_NULLS)}")
    return makers[name](X, len(X) if n is None else n, seed)
