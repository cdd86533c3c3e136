"""TopK (Gao et al., 2024) and BatchTopK (Bussmann et al., 2024) SAEs with the aux-k loss.

- ``topk``: ``f = TopK_k(ReLU((x − b_dec) W_enc + b_enc))`` per token.
- ``batchtopk``: during training keeps the ``k × batch`` largest activations over the whole batch;
  a global threshold θ (exponential moving average of the smallest kept activation) is learned and
  used at inference: ``f = z ⊙ 1[z > θ]`` — so inference does not depend on the batch.

Dead latents (no activation over the trainer's dead-feature window) get an auxiliary loss: the
residual ``e = x − x̂`` is reconstructed from the top ``aux_k`` dead pre-activations,
``aux = α ‖e − ê‖²`` with α = ``aux_k_coefficient`` (1/32 in the paper). Decoder rows are kept at
unit norm. ``decode_sparse`` uses only the k active rows.

Training runs :func:`~interplab.sae.topk_loss.sparse_topk_loss` (one dense product, the rest
sums over the kept pairs, a hand-written backward; the aux-k loss only when some latent is dead).
``fused_loss = False`` selects autograd of the textbook expressions instead: the reference the
tests hold the fast path to.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from interplab.errors import InterplabError
from interplab.sae.base import SparseAutoencoder, TrainingLoss, register
from interplab.sae.topk_loss import (
    ActivePairs,
    batch_topk_pairs,
    sparse_threads,
    sparse_topk_loss,
    topk_pairs,
)

__all__ = ["TopKSAE", "BatchTopKSAE"]


class _TopKFamily(SparseAutoencoder):
    fused_loss = True  # False: autograd of the textbook expressions (the reference path)
    sparse_decode = False  # reference path only: decode from the k active rows

    def __init__(self, config):
        super().__init__(config)
        if config.k is None or config.k <= 0:
            raise InterplabError(f"{self.architecture} needs k ≥ 1 active features (got k={config.k})")
        if config.k > config.d_sae:
            raise InterplabError(
                f"k={config.k} is larger than the SAE width d_sae={config.d_sae}; use k ≤ width"
            )

    @property
    def aux_k(self) -> int:
        """Dead latents per token in the aux-k loss (``config.aux_k``, else d_in / 2)."""
        return self.config.aux_k or max(1, self.config.d_in // 2)

    def update_threads(self):
        """The update after a fused step is small operations too: on the sparse part's threads."""
        return sparse_threads(self.W_enc.device)

    def _select(self, pre: torch.Tensor) -> ActivePairs:  # pragma: no cover - abstract
        raise NotImplementedError

    def _fused_loss(self, x, dead_mask) -> TrainingLoss:
        mse, aux, x_hat, pairs, fired = sparse_topk_loss(
            x, self.W_enc, self.b_enc, self.W_dec, self.b_dec, self._select, dead_mask=dead_mask,
            aux_k=self.aux_k, aux_coefficient=self.config.aux_k_coefficient,
            matmul_dtype=self.matmul_dtype, workspace=self.workspace)
        return TrainingLoss(mse + aux, x_hat, None, {"mse": mse, "aux": aux},
                            fired=fired, active=pairs)

    def _aux_loss(self, x, x_hat, pre, dead_mask):
        if dead_mask is None or not bool(dead_mask.any()):
            return x.new_zeros(())
        aux_k = min(self.aux_k, int(dead_mask.sum()))
        dead_pre = torch.where(dead_mask, torch.relu(pre), torch.zeros_like(pre))
        vals, idx = dead_pre.topk(aux_k, dim=-1, sorted=False)
        e_hat = self._decode_topk(vals, idx, bias=False)
        e = (x - x_hat).detach()
        return self.config.aux_k_coefficient * (e_hat - e).pow(2).sum(-1).mean()

    def _decode_topk(self, vals: torch.Tensor, idx: torch.Tensor, bias: bool = True):
        """Σ_j vals[:, j] W_dec[idx[:, j]] (+ b_dec): only the active rows are read, and only
        they receive gradient (``embedding_bag`` with per-sample weights; O(batch·k·d_in))."""
        out = F.embedding_bag(idx, self.W_dec, per_sample_weights=vals.to(self.W_dec.dtype),
                              mode="sum")
        return out + self.b_dec if bias else out

    def decode_sparse(self, vals: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Decode from ``k`` (value, index) pairs per row: ``[batch, k] → [batch, d_in]``."""
        return self._decode_topk(vals, idx)


@register("topk")
class TopKSAE(_TopKFamily):
    """Per-token TopK activation."""

    def _topk(self, pre: torch.Tensor):
        vals, idx = torch.relu(pre).topk(self.config.k, dim=-1, sorted=False)
        return vals, idx

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pre_activations(x)
        vals, idx = self._topk(pre)
        return torch.zeros_like(pre).scatter_(-1, idx, vals)

    def _select(self, pre: torch.Tensor) -> ActivePairs:
        return topk_pairs(pre, self.config.k)

    def training_loss(self, x, sparsity_scale, dead_mask):
        if self.fused_loss:
            return self._fused_loss(x, dead_mask)
        pre = self.pre_activations(x)
        vals, idx = self._topk(pre)
        feats = torch.zeros_like(pre).scatter(-1, idx, vals)
        x_hat = self._decode_topk(vals, idx) if self.sparse_decode else self.decode(feats)
        mse = self.reconstruction_error(x, x_hat)
        aux = self._aux_loss(x, x_hat, pre, dead_mask)
        return TrainingLoss(mse + aux, x_hat, feats, {"mse": mse, "aux": aux})


@register("batchtopk")
class BatchTopKSAE(_TopKFamily):
    """BatchTopK in training; a learned global threshold θ at inference."""

    def __init__(self, config):
        super().__init__(config)
        self.register_buffer("threshold", torch.tensor(-1.0))  # < 0: not yet estimated

    def _batch_topk(self, pre: torch.Tensor) -> torch.Tensor:
        acts = torch.relu(pre)
        n_keep = min(self.config.k * acts.shape[0], acts.numel())
        flat = acts.flatten()
        vals, idx = flat.topk(n_keep, sorted=False)
        return torch.zeros_like(flat).scatter(0, idx, vals).reshape(acts.shape)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pre_activations(x)
        if self.training or float(self.threshold) < 0:
            return self._batch_topk(pre)
        return torch.where(pre > self.threshold, pre, torch.zeros_like(pre))

    @torch.no_grad()
    def _update_threshold(self, acts: torch.Tensor) -> None:
        """θ ← the smallest positive kept activation in ``acts`` (the dense features or the
        kept pairs' values) on the first batch, then its moving average."""
        positive = acts[acts > 0]
        if positive.numel() == 0:
            return
        smallest = positive.min().to(self.threshold.dtype)
        if float(self.threshold) < 0:
            self.threshold.copy_(smallest)
        else:
            m = self.config.batchtopk_threshold_momentum
            self.threshold.mul_(1 - m).add_(m * smallest)

    def _select(self, pre: torch.Tensor) -> ActivePairs:
        return batch_topk_pairs(pre, self.config.k)

    def training_loss(self, x, sparsity_scale, dead_mask):
        if self.fused_loss:
            out = self._fused_loss(x, dead_mask)
            self._update_threshold(out.active.vals)
            return out
        pre = self.pre_activations(x)
        feats = self._batch_topk(pre)
        self._update_threshold(feats)
        x_hat = self.decode(feats)
        mse = self.reconstruction_error(x, x_hat)
        aux = self._aux_loss(x, x_hat, pre, dead_mask)
        return TrainingLoss(mse + aux, x_hat, feats, {"mse": mse, "aux": aux})

    def extra_state_tensors(self) -> dict[str, torch.Tensor]:
        return {"threshold": self.threshold}
