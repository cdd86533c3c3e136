"""What the adapters cost the model: cross-entropy and KL on neutral text against the unmodified
model, and the shift of its next-token distribution on a request (RR's output signal).

Each batch runs the unmodified model once and every adapter once, all through the full model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from interplab.defaults import DEFAULT_BATCH_SIZE, DEFAULT_LOGITS_BATCH_SIZE
from interplab.defences.inputs import chunks, final_logits, pack


def _per_text(values: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    w = mask.to(values.dtype)
    return ((values * w).sum(1) / w.sum(1).clamp(min=1.0)).double().cpu().numpy()


@torch.no_grad()
def retain_effects(host, adapters: Sequence[str], token_lists: Sequence[Sequence[int]],
                   batch_size: int = DEFAULT_LOGITS_BATCH_SIZE) -> dict[str, dict[str, np.ndarray]]:
    """Per text: ``{"base": {"ce"}, adapter: {"ce", "delta_ce", "kl"}}``. CE is the mean
    next-token cross-entropy (nats) over the text's predicted tokens; KL is
    ``KL(unmodified ‖ adapted)`` averaged over the same positions."""
    lm = host.lm
    out: dict[str, dict[str, list[np.ndarray]]] = {"base": {"ce": []}}
    for a in adapters:
        out[a] = {"ce": [], "delta_ce": [], "kl": []}
    for sl in chunks(len(token_lists), batch_size):
        inputs = pack(lm, token_lists[sl])
        target = inputs.ids[:, 1:]
        predicted = inputs.mask[:, 1:].bool()

        def ce_and_logp(logits: torch.Tensor, target=target) -> tuple[torch.Tensor, torch.Tensor]:
            logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            return -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1), logp

        with host.disabled():
            ce0, logp0 = ce_and_logp(final_logits(lm, inputs))
        out["base"]["ce"].append(_per_text(ce0, predicted))
        for a in adapters:
            with host.active(a):
                ce1, logp1 = ce_and_logp(final_logits(lm, inputs))
            kl = (logp0.exp() * (logp0 - logp1)).sum(-1)
            out[a]["ce"].append(_per_text(ce1, predicted))
            out[a]["delta_ce"].append(_per_text(ce1 - ce0, predicted))
            out[a]["kl"].append(_per_text(kl, predicted))
    return {k: {m: np.concatenate(v) for m, v in d.items()} for k, d in out.items()}


@torch.no_grad()
def output_shift(host, adapters: Sequence[str], token_lists: Sequence[Sequence[int]],
                 batch_size: int = DEFAULT_BATCH_SIZE) -> dict[str, np.ndarray]:
    """``KL(unmodified ‖ adapted)`` of the next-token distribution after each text's last
    token, per adapter."""
    lm = host.lm
    out: dict[str, list[np.ndarray]] = {a: [] for a in adapters}
    for sl in chunks(len(token_lists), batch_size):
        inputs = pack(lm, token_lists[sl])
        with host.disabled():
            logp0 = torch.log_softmax(final_logits(lm, inputs, inputs.last).float(), dim=-1)
        for a in adapters:
            with host.active(a):
                logp1 = torch.log_softmax(final_logits(lm, inputs, inputs.last).float(), dim=-1)
            out[a].append((logp0.exp() * (logp0 - logp1)).sum(-1).double().cpu().numpy())
    return {a: np.concatenate(v) for a, v in out.items()}
