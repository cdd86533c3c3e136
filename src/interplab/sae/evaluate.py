"""Reconstruction evaluation of an SAE over a stream of activations (uses the metrics module).

:func:`evaluate_reconstruction` counts every row it is given; :func:`evaluate_reconstruction_split`
takes rows with their positions and reports ordinary tokens (an :class:`ExclusionRule` leaves out
position 0 and massive-norm tokens) as the headline, with all tokens beside them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from interplab.activations.exclusion import ExclusionCount, ExclusionRule
from interplab.errors import InterplabError
from interplab.sae.base import SparseAutoencoder
from interplab.sae.metrics import ReconstructionAccumulator, ReconstructionMetrics

__all__ = ["SplitReconstruction", "evaluate_reconstruction", "evaluate_reconstruction_split"]


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
            _check_width(sae, x)
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


def _check_width(sae: SparseAutoencoder, x: torch.Tensor) -> None:
    if x.shape[-1] != sae.d_in:
        raise InterplabError(
            f"activations have d={x.shape[-1]} but the SAE expects d_in={sae.d_in}; "
            "evaluate on the hook the SAE was trained on"
        )


@dataclass
class SplitReconstruction:
    """Reconstruction metrics on ordinary tokens (the headline) and on all tokens beside them."""

    ordinary: ReconstructionMetrics
    all_tokens: ReconstructionMetrics
    exclusion: dict  # the rule (ExclusionRule.to_dict()) plus n_seen / n_excluded counts

    def to_dict(self) -> dict:
        return {"ordinary_tokens": self.ordinary.to_dict(),
                "all_tokens": self.all_tokens.to_dict(), "exclusion": self.exclusion}


@torch.no_grad()
def evaluate_reconstruction_split(
    sae: SparseAutoencoder,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    rule: ExclusionRule | None = None,
    max_tokens: int | None = None,
) -> SplitReconstruction:
    """Metrics of ``sae`` over ``(x [batch, d_in], position [batch])`` pairs, split by ``rule``.

    ``ordinary`` counts the tokens ``rule`` keeps (default :class:`ExclusionRule`: not position 0,
    norm ≤ 10 × the batch median); ``all_tokens`` counts every token. ``max_tokens`` limits the
    tokens seen (before exclusion).
    """
    rule = rule if rule is not None else ExclusionRule()
    was_training = sae.training
    sae.eval()
    device = next(sae.parameters()).device
    ordinary = ReconstructionAccumulator(sae.d_in, sae.d_sae)
    every = ReconstructionAccumulator(sae.d_in, sae.d_sae)
    count = ExclusionCount()
    try:
        for x, position in batches:
            _check_width(sae, x)
            if max_tokens is not None:
                room = max(0, max_tokens - every.n)
                x, position = x[:room], position[:room]
                if x.shape[0] == 0:
                    break
            x = x.to(device, torch.float32)
            keep = rule.keep_mask(x, position)
            count.add(keep)
            feats = sae.encode(x)
            x_hat = sae.decode(feats)
            every.update(x, x_hat, feats)
            ordinary.update(x, x_hat, feats, keep)
    finally:
        sae.train(was_training)
    return SplitReconstruction(ordinary.compute(), every.compute(),
                               {**rule.to_dict(), **count.to_dict()})
