"""Singular values against a random-matrix null.

For an ``m × n`` matrix with independent entries of mean 0 and variance ``σ²``, the singular
values fill (as ``m, n → ∞``) the Marchenko–Pastur bulk ``[σ|√n − √m|, σ(√n + √m)]``: the squared
singular values divided by ``max(m, n)`` follow the Marchenko–Pastur law with ratio
``min(m, n) / max(m, n)``. A singular value above the upper edge is more than noise of that
variance could produce. ``σ²`` is the variance of the matrix's own entries (so a few large
singular values inflate it, which makes the test conservative). At finite size the largest
singular value of a pure-noise matrix fluctuates around the edge on the Tracy–Widom scale,
``σ (1/√m + 1/√n)^{1/3} / 2`` (Johnstone's scale for the largest eigenvalue, carried to its
square root); :func:`above_edge` asks for a margin of a few of those.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from interplab.errors import InterplabError

TW_MARGIN = 4.0  # Tracy–Widom scale units above the edge before a value counts as signal


def entry_std(w: torch.Tensor) -> float:
    """Standard deviation of the entries of ``w`` (around their mean)."""
    return float(w.to(torch.float64).std(unbiased=False))


def mp_edges(m: int, n: int, sigma: float) -> tuple[float, float]:
    """``(lower, upper)`` edges of the singular values of an ``m × n`` noise matrix with entry
    standard deviation ``sigma``."""
    if m < 1 or n < 1 or sigma < 0:
        raise InterplabError(f"need a non-empty shape and sigma ≥ 0, got {m}×{n}, sigma={sigma}")
    return sigma * abs(math.sqrt(n) - math.sqrt(m)), sigma * (math.sqrt(n) + math.sqrt(m))


def tracy_widom_scale(m: int, n: int, sigma: float) -> float:
    """Scale of the fluctuations of the largest singular value of an ``m × n`` noise matrix."""
    return sigma * (1 / math.sqrt(m) + 1 / math.sqrt(n)) ** (1 / 3) / 2


def mp_threshold(m: int, n: int, sigma: float, margin: float = TW_MARGIN) -> float:
    """The upper edge plus ``margin`` Tracy–Widom scale units."""
    return mp_edges(m, n, sigma)[1] + margin * tracy_widom_scale(m, n, sigma)


def above_edge(s: np.ndarray, m: int, n: int, sigma: float, margin: float = TW_MARGIN) -> np.ndarray:
    """Which singular values ``s`` stand above the noise threshold (boolean, same shape)."""
    return np.asarray(s) > mp_threshold(m, n, sigma, margin)


def mp_quantiles(m: int, n: int, sigma: float, q: np.ndarray, grid: int = 20001) -> np.ndarray:
    """Quantiles ``q`` of the Marchenko–Pastur distribution of singular values (numerical
    inversion of the CDF of the squared values; for comparing whole spectra)."""
    lo, hi = mp_edges(m, n, sigma)
    big, ratio = max(m, n), min(m, n) / max(m, n)
    lam_lo, lam_hi = (lo**2) / big, (hi**2) / big
    lam = np.linspace(lam_lo, lam_hi, grid)
    s2 = sigma**2
    dens = np.sqrt(np.clip((lam_hi - lam) * (lam - lam_lo), 0, None)) / (2 * np.pi * s2 * ratio * np.maximum(lam, 1e-300))
    cdf = np.concatenate([[0], np.cumsum((dens[1:] + dens[:-1]) / 2 * np.diff(lam))])
    cdf /= cdf[-1]
    return np.sqrt(np.interp(np.asarray(q), cdf, lam) * big)


def shuffled_top(w: torch.Tensor, seed: int = 0) -> float:
    """Largest singular value of ``w`` with its entries permuted across the whole matrix: an
    empirical null that keeps the exact value distribution (heavy tails included)."""
    g = torch.Generator().manual_seed(seed)
    flat = w.reshape(-1)
    shuffled = flat[torch.randperm(flat.numel(), generator=g)].reshape(w.shape)
    return float(torch.linalg.matrix_norm(shuffled.to(torch.float64), ord=2))
