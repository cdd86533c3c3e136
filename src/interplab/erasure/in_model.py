"""Erasure inside the model: the eraser runs at one hook through ``models.edit_hooks``; the cost
is measured as the change in next-token cross-entropy and the KL divergence from the plain
model's predictions, on neutral text (a corpus unrelated to the concept)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from interplab.defaults import DEFAULT_LOGITS_BATCH_SIZE
from interplab.erasure.erasers import LinearEraser
from interplab.errors import InterplabError
from interplab.threads import pace


def neutral_tokens(lm: Any, *, corpus: str = "kjv", context_length: int = 64,
                   n_sequences: int = 32) -> torch.Tensor:
    """``[n_sequences, context_length]`` token ids of packed neutral text (BOS first if the
    tokenizer has one)."""
    from interplab.datasets.corpus import load_corpus, pack_tokens

    bos = "each" if lm.tokenizer.bos_token_id is not None else "none"
    return pack_tokens(load_corpus(corpus), lm.tokenizer, context_length, bos=bos,
                       max_sequences=n_sequences)


def _edit(eraser: LinearEraser, skip_first: bool, size: list[float]):
    """The hook function; adds Σ ‖Δx‖/‖x‖ over the edited positions to ``size[0]``."""
    def fn(act: torch.Tensor) -> torch.Tensor:
        new = eraser(act)
        if skip_first:
            new[:, 0] = act[:, 0]
        edited = slice(1, None) if skip_first else slice(None)
        delta = (new[:, edited] - act[:, edited]).float().norm(dim=-1)
        size[0] += float((delta / act[:, edited].float().norm(dim=-1).clamp_min(1e-12)).sum())
        return new

    return fn


def _check(lm: Any, hook: str, eraser: LinearEraser) -> None:
    if eraser.needs_labels:
        raise InterplabError(f"the {eraser.method} eraser needs labels at apply time, so it cannot "
                             "run inside the model on unlabelled text; use leace, orth, mean-diff "
                             "or inlp")
    if eraser.d_model != lm.d_model:
        raise InterplabError(f"the eraser was fitted on d_model={eraser.d_model}; {lm.name} has "
                             f"d_model={lm.d_model}")


@torch.no_grad()
def erasure_costs(lm: Any, hook: str, erasers: Mapping[str, LinearEraser], tokens: torch.Tensor,
                  *, batch_size: int = DEFAULT_LOGITS_BATCH_SIZE, skip_first: bool = True) -> dict[str, dict[str, float]]:
    """:func:`erasure_cost` of several erasers at one hook, sharing the plain forward passes."""
    lm.parse_hook(hook)
    for e in erasers.values():
        _check(lm, hook, e)
    sizes = {k: [0.0] for k in erasers}
    edits = {k: _edit(e.to(lm.dtype, lm.device), skip_first, sizes[k])
             for k, e in erasers.items()}
    from interplab.models import edit_hooks

    sums = {k: {"ce_plain": 0.0, "ce_erased": 0.0, "kl": 0.0} for k in edits}
    n_tok = 0
    for start in range(0, tokens.shape[0], batch_size):
        pace()  # under threads="auto", follow the load other processes put on the CPUs
        ids = tokens[start:start + batch_size].to(lm.device)
        target = ids[:, 1:].unsqueeze(-1)
        plain = F.log_softmax(lm.hf(input_ids=ids).logits[:, :-1].float(), -1)
        ce_plain = -float(plain.gather(-1, target).sum())
        for k, edit in edits.items():
            with edit_hooks(lm, {hook: edit}):
                erased = F.log_softmax(lm.hf(input_ids=ids).logits[:, :-1].float(), -1)
            sums[k]["ce_plain"] += ce_plain
            sums[k]["ce_erased"] -= float(erased.gather(-1, target).sum())
            sums[k]["kl"] += float((plain.exp() * (plain - erased)).sum())
        n_tok += target.numel()
    n_edited = tokens.shape[0] * (tokens.shape[1] - int(skip_first))
    return {k: {"ce_plain": v["ce_plain"] / n_tok, "ce_erased": v["ce_erased"] / n_tok,
                "delta_ce": (v["ce_erased"] - v["ce_plain"]) / n_tok, "kl": v["kl"] / n_tok,
                "edit_size": sizes[k][0] / max(n_edited, 1), "n_tokens": n_tok}
            for k, v in sums.items()}


def erasure_cost(lm: Any, hook: str, eraser: LinearEraser, tokens: torch.Tensor, *,
                 batch_size: int = DEFAULT_LOGITS_BATCH_SIZE, skip_first: bool = True) -> dict[str, float]:
    """Mean next-token CE of the plain and the erased model on ``tokens`` ``[n, L]``, their
    difference ``delta_ce`` (nats per token), the mean ``kl`` (plain ‖ erased, nats per token) and
    ``edit_size``, the mean ‖Δx‖/‖x‖ of the edit over the positions it was applied to.

    The edit is applied at every position of every sequence, except position 0 when
    ``skip_first`` (the first token's residual norm is far outside what erasers are fitted on).
    """
    return erasure_costs(lm, hook, {"e": eraser}, tokens, batch_size=batch_size,
                         skip_first=skip_first)["e"]
