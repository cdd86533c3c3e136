"""Untrained-network controls: the same architecture without the learned structure.

``reset_copy`` keeps every tensor's values and permutes them (norms and value distributions match
the trained model); ``random_init_copy`` draws fresh weights from the model's own initialiser (the
network as it was before training, up to the seed).
"""

from __future__ import annotations

import copy

import torch

from interplab.errors import InterplabError
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
    return _variant(lm, hf, f"reset-seed{seed}")


def random_init_copy(lm: LanguageModel, seed: int = 0) -> LanguageModel:
    """A model of ``lm``'s architecture, config and tokenizer with freshly initialised weights.

    The weights come from the Hugging Face model class's own initialiser for ``lm``'s config
    (e.g. for LLaMA-family models: linear and embedding weights ~ N(0, ``initializer_range``²),
    norm weights 1), drawn on the CPU with ``torch.manual_seed(seed)``; the same seed gives the
    same weights, and the global random state is restored afterwards. The copy has ``lm``'s device
    and dtype and the identity variant ``random-init-seed{seed}``. The original is not modified.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InterplabError(f"seed must be an integer, not {seed!r}")
    config = copy.deepcopy(lm.hf.config)
    # Hugging Face initialisers draw from the global CPU generator (they take no generator), so
    # it is seeded for the build and restored after it; CUDA generators are not touched.
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        hf = type(lm.hf)(config)
    return _variant(lm, hf.to(device=lm.device, dtype=lm.dtype), f"random-init-seed{seed}")


def _variant(lm: LanguageModel, hf: torch.nn.Module, variant: str) -> LanguageModel:
    return LanguageModel(
        hf=hf,
        tokenizer=lm.tokenizer,
        name=lm.name,
        source=lm.source,
        variant=variant,
        extra_identity=dict(lm.extra_identity),
    )
