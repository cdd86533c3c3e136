"""Batches of token lists, the residual stream up to a layer (with gradients when asked), pooling.

Every defence reads ``blocks.{layer}.hook_resid_post`` (before the final norm) and pools it over
the *scored* tokens of a text: every real token except position 0. Position 0 carries a massive
activation in models without a BOS token (SmolLM2) and is the BOS itself in others, so it would
dominate a mean (:class:`interplab.activations.exclusion.ExclusionRule` with ``first_position``).

A forward pass stops after the deepest block a caller needs (blocks above it never run), and
:data:`COST` counts the block-token passes run, forward and backward, so a study can state its
cost in forward-pass equivalents.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from interplab.activations.exclusion import ExclusionRule
from interplab.errors import InterplabError
from interplab.models import HookPoint, attach

SCORED = ExclusionRule(first_position=True, norm_ratio=None)


class _Stop(Exception):
    pass


@dataclass
class Cost:
    """Block-token passes run: ``forward`` (every block a token went through) and ``backward``
    (the same, for passes that were differentiated; a backward pass costs about two forwards)."""

    forward: int = 0
    backward: int = 0

    def reset(self) -> None:
        self.forward = self.backward = 0

    def snapshot(self) -> tuple[int, int]:
        return self.forward, self.backward


COST = Cost()


@dataclass
class Inputs:
    """A right-padded batch: ``ids`` / ``mask`` / ``position_ids`` ``[b, T]``, ``scored`` (real
    tokens but position 0) and ``last`` (index of each row's last real token)."""

    ids: torch.Tensor
    mask: torch.Tensor
    position_ids: torch.Tensor
    scored: torch.Tensor
    last: torch.Tensor

    @property
    def n_tokens(self) -> int:
        return int(self.mask.sum())


def pack(lm, token_lists: Sequence[Sequence[int]]) -> Inputs:
    """Right-pad ``token_lists`` (each at least two tokens) into one batch on ``lm``'s device."""
    if not token_lists:
        raise InterplabError("no texts to run")
    short = [i for i, t in enumerate(token_lists) if len(t) < 2]
    if short:
        raise InterplabError(f"text {short[0]} has fewer than two tokens; every text needs a "
                             "token besides position 0 to be scored")
    width = max(len(t) for t in token_lists)
    pad = lm.tokenizer.pad_token_id
    ids = torch.full((len(token_lists), width), pad, dtype=torch.long)
    mask = torch.zeros((len(token_lists), width), dtype=torch.long)
    for i, t in enumerate(token_lists):
        ids[i, :len(t)] = torch.as_tensor(list(t), dtype=torch.long)
        mask[i, :len(t)] = 1
    position = torch.arange(width).expand(len(token_lists), width)
    scored = SCORED.keep_mask(torch.zeros(len(token_lists), width, 1), position, mask)
    device = lm.device
    return Inputs(ids.to(device), mask.to(device), position.contiguous().to(device),
                  scored.to(device), (mask.sum(1) - 1).to(device))


def residuals(lm, inputs: Inputs, layers: Sequence[int], embeds: torch.Tensor | None = None,
              *, differentiated: bool = False) -> dict[int, torch.Tensor]:
    """``resid_post`` ``[b, T, d]`` at each of ``layers``; the pass stops after the deepest.

    Runs under the caller's grad mode (wrap in ``torch.no_grad()`` when no gradient is needed).
    ``embeds`` replaces the input embeddings (``[b, T, d]``); ``differentiated`` only counts the
    pass as one that will be back-propagated (for :data:`COST`)."""
    wanted = sorted(set(int(x) for x in layers))
    out: dict[int, torch.Tensor] = {}
    deepest = wanted[-1]

    def keep(layer: int):
        def fn(act: torch.Tensor) -> None:
            out[layer] = act
            if layer == deepest:
                raise _Stop
        return fn

    handles = [attach(lm, HookPoint.resid_post(layer), keep(layer)) for layer in wanted]
    kwargs = {"attention_mask": inputs.mask, "position_ids": inputs.position_ids,
              "use_cache": False}
    if embeds is None:
        kwargs["input_ids"] = inputs.ids
    else:
        kwargs["inputs_embeds"] = embeds
    try:
        with contextlib.suppress(_Stop):
            lm.base(**kwargs)
    finally:
        for h in handles:
            h.remove()
    blocks = (deepest + 1) * inputs.n_tokens
    COST.forward += blocks
    if differentiated:
        COST.backward += blocks
    return out


def final_logits(lm, inputs: Inputs, positions: torch.Tensor | None = None) -> torch.Tensor:
    """Logits of the full model: ``[b, T, vocab]``, or ``[b, vocab]`` at ``positions`` ``[b]``."""
    hidden = lm.base(input_ids=inputs.ids, attention_mask=inputs.mask,
                     position_ids=inputs.position_ids, use_cache=False).last_hidden_state
    COST.forward += lm.n_layers * inputs.n_tokens
    if positions is not None:
        hidden = hidden[torch.arange(len(positions), device=hidden.device), positions]
    return lm.hf.get_output_embeddings()(hidden)


def pool(h: torch.Tensor, inputs: Inputs, how: str) -> torch.Tensor:
    """``[b, d]``: the mean over the scored tokens (``how="mean"``) or the last token."""
    if how == "mean":
        w = inputs.scored.to(h.dtype).unsqueeze(-1)
        return (h * w).sum(1) / w.sum(1).clamp(min=1.0)
    if how == "last":
        return h[torch.arange(h.shape[0], device=h.device), inputs.last]
    raise InterplabError(f"pooling must be 'mean' or 'last', not {how!r}")


def chunks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, max(1, size))]
