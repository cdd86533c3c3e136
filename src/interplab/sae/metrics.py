"""The one SAE metrics module: used by the training log and by evaluation alike.

Everything is accumulated in float64 over an explicit token mask, streaming over batches, and every
value is reported beside the number of tokens it was computed on. Definitions (``n`` evaluated
tokens, ``x`` an activation row of dimension ``d``, ``x̂`` its reconstruction, ``f`` the features):

- ``mse`` = (1/n) Σ_tokens Σ_d (x − x̂)²  (summed over the activation dimension, averaged over
  tokens; never divided by the batch size or by ``d``).
- ``fraction_of_variance_explained`` = 1 − Σ‖x − x̂‖² / Σ‖x − x̄‖², with x̄ the mean over *all*
  evaluated tokens (not per batch, not zero).
- ``l0`` = mean number of non-zero features per token; ``l1`` = mean Σ|f| per token.
- ``fraction_alive`` = fraction of features that fired at least once over the ``n`` tokens.
- ``relative_reconstruction_bias`` γ = E‖x̂‖² / E⟨x, x̂⟩, the argmin over γ of E‖x̂/γ − x‖².
- ``cosine_similarity`` = mean over tokens of ⟨x, x̂⟩ / (‖x‖‖x̂‖).
- ``feature_density`` = per-feature firing frequency; ``density_histogram`` its log10 histogram.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

from interplab.errors import InterplabError

__all__ = [
    "ReconstructionMetrics",
    "ReconstructionAccumulator",
    "reconstruction_metrics",
]

_DENSITY_BINS = [-math.inf, *[float(b) for b in range(-8, 1)]]  # log10 density bin edges


@dataclass
class ReconstructionMetrics:
    """Reconstruction and sparsity metrics over ``n_tokens`` evaluated tokens (JSON-serialisable)."""

    n_tokens: int
    mse: float
    fraction_of_variance_explained: float
    l0: float
    l1: float
    fraction_alive: float
    n_alive: int
    n_features: int
    relative_reconstruction_bias: float
    cosine_similarity: float
    density_histogram: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class ReconstructionAccumulator:
    """Streaming float64 accumulator of reconstruction metrics over an explicit token mask.

    ``update(x, x_hat, feats, mask)`` takes ``x``/``x_hat`` of shape ``[..., d]``, ``feats`` of
    shape ``[..., n_features]`` (or None when sparsity metrics are not wanted) and an optional
    boolean ``mask`` of shape ``[...]`` selecting the tokens that count. ``compute()`` returns a
    :class:`ReconstructionMetrics`. Batches may be of any size: the result depends only on the
    set of counted tokens.
    """

    def __init__(self, d_in: int, n_features: int | None = None):
        self.d_in = d_in
        self.n_features = n_features
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self._shift: torch.Tensor | None = None  # first batch mean; keeps Σ‖x−s‖² well-conditioned
        self.sum_x = torch.zeros(self.d_in, dtype=torch.float64)  # Σ (x − s)
        self.sum_sq_x = 0.0  # Σ ‖x − s‖²
        self.sum_sq_err = 0.0  # Σ ‖x − x̂‖²
        self.sum_sq_xhat = 0.0  # Σ ‖x̂‖²
        self.sum_dot = 0.0  # Σ ⟨x, x̂⟩
        self.sum_cos = 0.0
        self.sum_l0 = 0.0
        self.sum_l1 = 0.0
        self.fire_counts = (
            torch.zeros(self.n_features, dtype=torch.float64) if self.n_features else None
        )

    @torch.no_grad()
    def update(
        self,
        x: torch.Tensor,
        x_hat: torch.Tensor,
        feats: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> None:
        if x.shape != x_hat.shape or x.shape[-1] != self.d_in:
            raise InterplabError(
                f"metrics: x {tuple(x.shape)} and x_hat {tuple(x_hat.shape)} must both end in "
                f"d_in={self.d_in}; pass activations of the SAE's input dimension"
            )
        x = x.reshape(-1, self.d_in).double().cpu()
        x_hat = x_hat.reshape(-1, self.d_in).double().cpu()
        if feats is not None:
            feats = feats.reshape(x.shape[0], -1).cpu()
        if mask is not None:
            m = mask.reshape(-1).to(torch.bool).cpu()
            if m.shape[0] != x.shape[0]:
                raise InterplabError(
                    f"metrics: mask has {m.shape[0]} entries for {x.shape[0]} tokens; "
                    "give one boolean per token"
                )
            x, x_hat = x[m], x_hat[m]
            if feats is not None:
                feats = feats[m]
        if x.shape[0] == 0:
            return
        if self._shift is None:
            self._shift = x.mean(0)
        xs = x - self._shift
        self.n += x.shape[0]
        self.sum_x += xs.sum(0)
        self.sum_sq_x += float((xs * xs).sum())
        err = x - x_hat
        self.sum_sq_err += float((err * err).sum())
        self.sum_sq_xhat += float((x_hat * x_hat).sum())
        dots = (x * x_hat).sum(-1)
        self.sum_dot += float(dots.sum())
        norms = x.norm(dim=-1) * x_hat.norm(dim=-1)
        # A zero vector has no direction: count its cosine as 0 unless both are zero (then 1).
        both_zero = norms == 0
        cos = torch.where(both_zero, (x.abs().sum(-1) == x_hat.abs().sum(-1)).double(),
                          dots / norms.clamp_min(1e-300))
        self.sum_cos += float(cos.sum())
        if feats is not None:
            if self.fire_counts is None or feats.shape[-1] != self.fire_counts.shape[0]:
                raise InterplabError(
                    f"metrics: feats have {feats.shape[-1]} features, expected {self.n_features}"
                )
            active = feats != 0
            self.sum_l0 += float(active.sum(dtype=torch.float64))
            self.sum_l1 += float(feats.double().abs().sum())
            self.fire_counts += active.sum(0, dtype=torch.float64)

    def feature_density(self) -> torch.Tensor:
        """Per-feature firing frequency over the counted tokens, ``[n_features]`` float64."""
        if self.fire_counts is None:
            raise InterplabError("metrics: no features were accumulated (n_features=None)")
        return self.fire_counts / max(self.n, 1)

    def compute(self) -> ReconstructionMetrics:
        n = self.n
        if n == 0:
            raise InterplabError("metrics: no tokens were counted; check the token mask")
        mean_s = self.sum_x / n
        total_var = self.sum_sq_x - n * float((mean_s * mean_s).sum())  # Σ‖x − x̄‖²
        fve = 1.0 - self.sum_sq_err / total_var if total_var > 0 else float("nan")
        gamma = self.sum_sq_xhat / self.sum_dot if self.sum_dot != 0 else float("nan")
        hist: dict = {}
        n_alive, frac_alive, l0, l1 = 0, float("nan"), float("nan"), float("nan")
        n_features = self.n_features or 0
        if self.fire_counts is not None:
            density = self.feature_density()
            n_alive = int((self.fire_counts > 0).sum())
            frac_alive = n_alive / n_features
            l0, l1 = self.sum_l0 / n, self.sum_l1 / n
            log_d = torch.where(density > 0, density.clamp_min(1e-300).log10(),
                                torch.full_like(density, -math.inf))
            edges = _DENSITY_BINS
            counts = []
            for lo, hi in zip(edges[:-1], edges[1:], strict=True):
                counts.append(int(((log_d > lo) & (log_d <= hi)).sum()))
            hist = {
                "log10_density_bin_edges": ["-inf" if math.isinf(e) else e for e in edges],
                "counts": counts,
                "n_dead": int((density == 0).sum()),
                "n_tokens": n,
            }
        return ReconstructionMetrics(
            n_tokens=n,
            mse=self.sum_sq_err / n,
            fraction_of_variance_explained=fve,
            l0=l0,
            l1=l1,
            fraction_alive=frac_alive,
            n_alive=n_alive,
            n_features=n_features,
            relative_reconstruction_bias=gamma,
            cosine_similarity=self.sum_cos / n,
            density_histogram=hist,
        )


def reconstruction_metrics(
    x: torch.Tensor,
    x_hat: torch.Tensor,
    feats: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> ReconstructionMetrics:
    """One-call convenience over :class:`ReconstructionAccumulator` for in-memory tensors.

    ``x``, ``x_hat``: ``[..., d]``; ``feats``: ``[..., n_features]`` or None; ``mask``: ``[...]``.
    """
    acc = ReconstructionAccumulator(x.shape[-1], None if feats is None else feats.shape[-1])
    acc.update(x, x_hat, feats, mask)
    return acc.compute()
