"""The "reset network" control: same weight values, learned arrangement destroyed."""

from __future__ import annotations

import copy

import torch

from interplab.models.language_model import LanguageModel


def reset_copy(lm: LanguageModel, seed: int = 0) -> LanguageModel:
    """A copy of ``lm`` whose every parameter tensor has its last axis randomly permuted.

    Each tensor keeps its multiset of values (so norms, scales and value distributions match the
    trained model) while the learned structure is destroyed. Tied tensors are permuted once. The
    original model is not modified.
    """
    hf = copy.deepcopy(lm.hf)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in hf.named_parameters():  # named_parameters de-duplicates tied weights
            perm = torch.randperm(param.shape[-1], generator=gen).to(param.device)
            param.copy_(param.index_select(-1, perm))
    return LanguageModel(
        hf=hf,
        tokenizer=lm.tokenizer,
        name=lm.name,
        source=lm.source,
        variant=f"reset-seed{seed}",
        extra_identity=dict(lm.extra_identity),
    )
