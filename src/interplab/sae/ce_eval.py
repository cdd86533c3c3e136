"""Downstream loss with the SAE spliced into the model: CE loss recovered and KL to the clean model.

For each context length ``L`` the first ``L`` tokens of every sequence are run through the model
five ways: clean (twice: once for the mean activation, once beside the patched runs), with the
hook's activation replaced by the SAE reconstruction, by zero, and by its mean over the evaluated
tokens. Definitions (``t`` ranges over counted positions):

- CE loss ``L_• = (1/n) Σ_t −log p_•(token_{t+1} | ≤ t)``, in nats, float64 accumulation.
- fraction of loss recovered vs zero-ablation: ``(L_zero − L_sae) / (L_zero − L_clean)``;
  the same vs mean-ablation with ``L_mean``.
- KL to the clean model: ``(1/n) Σ_t KL(p_clean(·|≤t) ‖ p_sae(·|≤t))``.

*Patched* positions: attended (``attention_mask == 1``) and not BOS. *Counted* positions: patched
positions whose next token is attended — so a prediction made at a BOS or padding position, or of
a padding token, never enters any number. Position ids are derived from the attention mask, so
left and right padding give the same results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from interplab.errors import InterplabError
from interplab.sae.base import SparseAutoencoder

__all__ = ["CEAtLength", "CEEvaluation", "ce_loss_recovered", "pad_sequences"]


@dataclass
class CEAtLength:
    """CE metrics at one context length over ``n_tokens`` counted predictions."""

    context_length: int
    n_tokens: int
    n_sequences: int
    clean_loss: float
    sae_loss: float
    zero_ablation_loss: float
    mean_ablation_loss: float
    loss_recovered_vs_zero: float
    loss_recovered_vs_mean: float
    kl_sae: float
    kl_zero_ablation: float
    kl_mean_ablation: float


@dataclass
class CEEvaluation:
    hook: str
    results: list[CEAtLength]

    def to_dict(self) -> dict:
        return {"hook": self.hook, "results": [asdict(r) for r in self.results]}

    def at(self, context_length: int) -> CEAtLength:
        for r in self.results:
            if r.context_length == context_length:
                return r
        raise KeyError(context_length)


def pad_sequences(seqs: Sequence[Sequence[int]], pad_id: int = 0, side: str = "right"
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Ragged token lists → ``(tokens [n, T], attention_mask [n, T])`` padded on ``side``."""
    if side not in ("left", "right"):
        raise InterplabError(f"padding side must be 'left' or 'right', not {side!r}")
    T = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        sl = slice(0, len(s)) if side == "right" else slice(T - len(s), T)
        tokens[i, sl] = torch.as_tensor(list(s), dtype=torch.long)
        mask[i, sl] = 1
    return tokens, mask


def _take_first(tokens: torch.Tensor, mask: torch.Tensor, L: int):
    """The first ``L`` *real* tokens of each row (works for left and right padding)."""
    n, T = tokens.shape
    pos = mask.cumsum(-1) - 1  # index among real tokens
    keep = mask.bool() & (pos < L)
    # Re-pack keeping the original padding side: left-pad if any row starts with padding.
    left = bool((mask[:, 0] == 0).any() and (mask[:, -1] == 1).all())
    new_T = min(L, T)
    out_t = torch.zeros((n, new_T), dtype=tokens.dtype)
    out_m = torch.zeros((n, new_T), dtype=mask.dtype)
    for i in range(n):
        row = tokens[i][keep[i]]
        if left:
            out_t[i, new_T - len(row):] = row
            out_m[i, new_T - len(row):] = 1
        else:
            out_t[i, : len(row)] = row
            out_m[i, : len(row)] = 1
    return out_t, out_m


@torch.no_grad()
def ce_loss_recovered(
    lm,
    sae: SparseAutoencoder,
    hook: str,
    tokens: torch.Tensor | Sequence[Sequence[int]],
    attention_mask: torch.Tensor | None = None,
    context_lengths: Sequence[int] | None = None,
    batch_size: int = 8,
    progress: bool = False,
    bos_token_id: int | None = None,
) -> CEEvaluation:
    """CE loss recovered and KL with ``sae`` spliced in at ``hook`` of ``lm``.

    ``tokens``: ``[n, T]`` ids (with ``attention_mask [n, T]``, 1 = real token) or ragged lists.
    ``context_lengths``: lengths to report; default the SAE's training context length, else T.
    ``bos_token_id``: the token treated as BOS (never patched, no prediction counted from it);
    default ``lm.bos_token_id`` (None: the tokenizer adds none and no token is excluded as BOS).
    """
    from interplab.models import edit_hooks

    lm.parse_hook(hook)
    if sae.d_in != lm.d_model:
        raise InterplabError(
            f"dimension mismatch: the SAE takes d_in={sae.d_in} but {lm.name} has "
            f"d_model={lm.d_model}; use an SAE trained on this model"
        )
    if not isinstance(tokens, torch.Tensor):
        tokens, attention_mask = pad_sequences(tokens, pad_id=0)
    if attention_mask is None:
        attention_mask = torch.ones_like(tokens)
    if tokens.shape != attention_mask.shape or tokens.ndim != 2:
        raise InterplabError("tokens and attention_mask must both be [n_sequences, seq_len]")
    max_real = int(attention_mask.sum(-1).max())
    if not context_lengths:
        context_lengths = [sae.config.context_length or max_real]
    context_lengths = sorted({int(L) for L in context_lengths})
    if context_lengths[0] < 2:
        raise InterplabError("context lengths must be ≥ 2 (one prediction needs two tokens)")
    if context_lengths[-1] > max_real:
        raise InterplabError(
            f"context length {context_lengths[-1]} exceeds the longest sequence ({max_real} "
            "tokens); pack longer sequences or drop that length"
        )
    was_training = sae.training
    sae.eval()
    bos = bos_token_id if bos_token_id is not None else lm.bos_token_id
    device = lm.device
    results = []
    try:
        for L in context_lengths:
            tok_L, mask_L = _take_first(tokens, attention_mask, L)
            results.append(_evaluate_length(lm, sae, hook, tok_L, mask_L, bos, batch_size,
                                            device, edit_hooks, L, progress))
    finally:
        sae.train(was_training)
    return CEEvaluation(hook=hook, results=results)


def _evaluate_length(lm, sae, hook, tokens, mask, bos, batch_size, device, edit_hooks, L,
                     progress):
    patch = mask.bool()
    if bos is not None:
        patch &= tokens != bos
    counted = torch.zeros_like(patch)
    counted[:, :-1] = patch[:, :-1] & mask[:, 1:].bool()
    if not bool(counted.any()):
        raise InterplabError(f"no countable predictions at context length {L}: every position is "
                             "padding or BOS")
    batches = [slice(i, i + batch_size) for i in range(0, tokens.shape[0], batch_size)]

    def forward(sl, edit=None):
        t, m = tokens[sl].to(device), mask[sl].to(device)
        pos = (m.cumsum(-1) - 1).clamp_min(0)
        if edit is None:
            return lm.hf(input_ids=t, attention_mask=m, position_ids=pos).logits.double()
        with edit_hooks(lm, {hook: edit}):
            return lm.hf(input_ids=t, attention_mask=m, position_ids=pos).logits.double()

    # Pass 1: mean activation at the hook over the patched positions (for mean ablation).
    act_sum = torch.zeros(lm.d_model, dtype=torch.float64)
    act_n = 0
    for sl in batches:
        p = patch[sl].to(device)

        def record(act, p=p):
            nonlocal act_sum, act_n
            act_sum += act[p].double().sum(0).cpu()
            act_n += int(p.sum())
            return None

        forward(sl, record)
    mean_act = (act_sum / max(act_n, 1)).float()

    sums = {k: 0.0 for k in ("clean", "sae", "zero", "mean", "kl_sae", "kl_zero", "kl_mean")}
    n = 0
    it = batches
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(batches, desc=f"CE eval L={L}", unit="batch")
    for sl in it:
        t = tokens[sl].to(device)
        p = patch[sl].to(device)
        c = counted[sl].to(device)
        target = t[:, 1:][c[:, :-1]]

        def splice(act, p=p):
            x_hat = sae(act.float()).to(act.dtype)
            return torch.where(p[..., None], x_hat, act)

        def zero(act, p=p):
            return torch.where(p[..., None], torch.zeros_like(act), act)

        def mean(act, p=p):
            return torch.where(p[..., None], mean_act.to(act.device, act.dtype).expand_as(act), act)

        clean_lp = F.log_softmax(forward(sl)[:, :-1][c[:, :-1]], -1)
        sums["clean"] += float(-clean_lp.gather(-1, target[:, None]).sum())
        for name, edit in (("sae", splice), ("zero", zero), ("mean", mean)):
            lp = F.log_softmax(forward(sl, edit)[:, :-1][c[:, :-1]], -1)
            sums[name] += float(-lp.gather(-1, target[:, None]).sum())
            sums[f"kl_{name}"] += float((clean_lp.exp() * (clean_lp - lp)).sum())
        n += int(target.numel())
    avg = {k: v / n for k, v in sums.items()}

    def recovered(base: float) -> float:
        denom = base - avg["clean"]
        return (base - avg["sae"]) / denom if denom != 0 else float("nan")

    return CEAtLength(
        context_length=L, n_tokens=n, n_sequences=int(tokens.shape[0]),
        clean_loss=avg["clean"], sae_loss=avg["sae"], zero_ablation_loss=avg["zero"],
        mean_ablation_loss=avg["mean"], loss_recovered_vs_zero=recovered(avg["zero"]),
        loss_recovered_vs_mean=recovered(avg["mean"]), kl_sae=avg["kl_sae"],
        kl_zero_ablation=avg["kl_zero"], kl_mean_ablation=avg["kl_mean"],
    )
