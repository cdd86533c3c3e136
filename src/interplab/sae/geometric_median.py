"""Geometric median by Weiszfeld's algorithm (used to initialise the decoder bias)."""

from __future__ import annotations

import torch

__all__ = ["geometric_median"]


@torch.no_grad()
def geometric_median(
    points: torch.Tensor, max_iter: int = 200, tol: float = 1e-7, eps: float = 1e-12
) -> torch.Tensor:
    """The point minimising Σ_i ‖p_i − m‖ for ``points [n, d]``; returns ``[d]`` (float64 inside).

    Weiszfeld iterations ``m ← Σ w_i p_i / Σ w_i`` with ``w_i = 1/‖p_i − m‖``, started at the mean,
    stopped when the step is below ``tol`` × (1 + ‖m‖). Points that coincide with the iterate get
    weight ``1/eps`` instead of infinity.
    """
    if points.ndim != 2 or points.shape[0] == 0:
        raise ValueError(f"geometric_median needs a non-empty [n, d] tensor, got {tuple(points.shape)}")
    p = points.double()
    m = p.mean(0)
    for _ in range(max_iter):
        w = 1.0 / (p - m).norm(dim=-1).clamp_min(eps)
        new = (w[:, None] * p).sum(0) / w.sum()
        done = (new - m).norm() <= tol * (1 + m.norm())
        m = new
        if done:
            break
    return m.to(points.dtype)
