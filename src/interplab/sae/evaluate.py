"""Reconstruction evaluation of an SAE over a stream of activations (uses the metrics module)."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from interplab.errors import InterplabError
from interplab.sae.base import SparseAutoencoder
from interplab.sae.metrics import ReconstructionAccumulator, ReconstructionMetrics

__all__ = ["evaluate_reconstruction"]


@torch.no_grad()
def evaluate_reconstruction(
    sae: SparseAutoencoder,
    batches: Iterable[torch.Tensor],
    max_tokens: int | None = None,
) -> ReconstructionMetrics:
    """Reconstruction/sparsity metrics of ``sae`` over ``batches`` of ``[batch, d_in]`` raw activations.

    Stops after ``max_tokens`` tokens if given. The SAE is put in eval mode (BatchTopK then uses
    its learned threshold).
    """
    was_training = sae.training
    sae.eval()
    device = next(sae.parameters()).device
    acc = ReconstructionAccumulator(sae.d_in, sae.d_sae)
    try:
        for x in batches:
            if x.shape[-1] != sae.d_in:
                raise InterplabError(
                    f"activations have d={x.shape[-1]} but the SAE expects d_in={sae.d_in}; "
                    "evaluate on the hook the SAE was trained on"
                )
            x = x.reshape(-1, sae.d_in)
            if max_tokens is not None:
                x = x[: max(0, max_tokens - acc.n)]
                if x.shape[0] == 0:
                    break
            x = x.to(device, torch.float32)
            feats = sae.encode(x)
            acc.update(x, sae.decode(feats), feats)
    finally:
        sae.train(was_training)
    return acc.compute()
