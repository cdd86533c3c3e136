"""Downstream loss with the SAE spliced into the model: CE loss recovered and KL to the clean model.

For each context length ``L`` the first ``L`` tokens of every sequence are run through the model
five ways: clean (twice: once for the mean activation, once beside the patched runs), with the
hook's activation replaced by the SAE reconstruction, by zero, and by its mean over the evaluated
tokens. Definitions (``t`` ranges over counted positions):

- CE loss ``L_• = (1/n) Σ_t −log p_•(token_{t+1} | ≤ t)``, in nats, float64 accumulation.
- headline: fraction of loss recovered vs *mean* ablation ``(L_mean − L_sae) / (L_mean − L_clean)``,
  the CE increase ``L_sae − L_clean`` in nats, and the KL below. The same fraction vs zero-ablation
  stays in the results but is not a headline: zero-ablating a mid-layer residual stream usually
  makes the model far worse than a uniform guess, so almost any SAE "recovers" most of that gap.
- KL to the clean model: ``(1/n) Σ_t KL(p_clean(·|≤t) ‖ p_sae(·|≤t))``.

*Patched* positions: attended (``attention_mask == 1``), not BOS, and kept by the
:class:`ExclusionRule` (default: not position 0, norm ≤ 10 × the median norm of the model batch's
attended tokens at the hook); excluded positions keep their clean activation. *Counted*
positions: patched positions whose next token is attended — so a prediction made at a BOS,
excluded or padding position, or of a padding token, never enters any number. Reconstruction
metrics of the SAE at the hook are reported on the patched (ordinary) positions and on all
attended positions. Position ids are derived from the attention mask, so left and right padding
give the same results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from interplab.activations.exclusion import ExclusionRule
from interplab.defaults import DEFAULT_LOGITS_BATCH_SIZE
from interplab.errors import InterplabError
from interplab.models.hooks import HookLike
from interplab.sae.base import SparseAutoencoder
from interplab.sae.metrics import ReconstructionAccumulator

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
    ce_increase: float = 0.0  # L_sae − L_clean, nats
    n_excluded_positions: int = 0  # attended, non-BOS positions the exclusion rule left clean
    reconstruction_ordinary_tokens: dict | None = None  # FVE, MSE, … on the patched positions
    reconstruction_all_tokens: dict | None = None  # the same on every attended position


@dataclass
class CEEvaluation:
    hook: str
    results: list[CEAtLength]

    exclusion: dict | None = None

    def to_dict(self) -> dict:
        return {"hook": self.hook, "exclusion": self.exclusion,
                "headline": ["loss_recovered_vs_mean", "ce_increase", "kl_sae"],
                "results": [asdict(r) for r in self.results]}

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
    hook: HookLike,
    tokens: torch.Tensor | Sequence[Sequence[int]],
    attention_mask: torch.Tensor | None = None,
    context_lengths: Sequence[int] | None = None,
    batch_size: int = DEFAULT_LOGITS_BATCH_SIZE,
    progress: bool = False,
    bos_token_id: int | None = None,
    exclusion: ExclusionRule | None = None,
) -> CEEvaluation:
    """CE loss recovered and KL with ``sae`` spliced in at ``hook`` of ``lm``.

    ``tokens``: ``[n, T]`` ids (with ``attention_mask [n, T]``, 1 = real token) or ragged lists.
    ``context_lengths``: lengths to report; default the SAE's training context length, else T.
    ``bos_token_id``: the token treated as BOS (never patched, no prediction counted from it);
    default ``lm.bos_token_id`` (None: the tokenizer adds none and no token is excluded as BOS).
    ``exclusion``: the positions left clean and uncounted (default :class:`ExclusionRule`:
    position 0 and massive-norm tokens; ``ExclusionRule.none()`` patches every non-BOS token).
    """
    from interplab.models import edit_hooks

    hook = lm.parse_hook(hook)
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
    rule = exclusion if exclusion is not None else ExclusionRule()
    device = lm.device
    results = []
    try:
        for L in context_lengths:
            tok_L, mask_L = _take_first(tokens, attention_mask, L)
            results.append(_evaluate_length(lm, sae, hook, tok_L, mask_L, bos, rule, batch_size,
                                            device, edit_hooks, L, progress))
    finally:
        sae.train(was_training)
    return CEEvaluation(hook=hook.name, results=results, exclusion=rule.to_dict())


def _evaluate_length(lm, sae, hook, tokens, mask, bos, rule, batch_size, device, edit_hooks, L,
                     progress):
    patch = mask.bool()
    if bos is not None:
        patch &= tokens != bos
    batches = [slice(i, i + batch_size) for i in range(0, tokens.shape[0], batch_size)]

    def forward(sl, edit=None):
        t, m = tokens[sl].to(device), mask[sl].to(device)
        pos = (m.cumsum(-1) - 1).clamp_min(0)
        if edit is None:
            return lm.hf(input_ids=t, attention_mask=m, position_ids=pos).logits.double()
        with edit_hooks(lm, {hook: edit}):
            return lm.hf(input_ids=t, attention_mask=m, position_ids=pos).logits.double()

    n_before = int(patch.sum())
    patch, mean_act = _ordinary_positions_and_mean(lm, rule, mask, patch, batches, forward)
    n_excluded = n_before - int(patch.sum())
    counted = torch.zeros_like(patch)
    counted[:, :-1] = patch[:, :-1] & mask[:, 1:].bool()
    if not bool(counted.any()):
        raise InterplabError(f"no countable predictions at context length {L}: every position is "
                             "padding, BOS or excluded")

    sums = {k: 0.0 for k in ("clean", "sae", "zero", "mean", "kl_sae", "kl_zero", "kl_mean")}
    rec_ord = ReconstructionAccumulator(sae.d_in, sae.d_sae)
    rec_all = ReconstructionAccumulator(sae.d_in, sae.d_sae)
    n = 0
    it = batches
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(batches, desc=f"CE eval L={L}", unit="batch")
    for sl in it:
        t = tokens[sl].to(device)
        p = patch[sl].to(device)
        attended = mask[sl].bool().to(device)
        c = counted[sl].to(device)
        target = t[:, 1:][c[:, :-1]]

        def splice(act, p=p, attended=attended):
            x = act.float()
            feats = sae.encode(x)
            x_hat = sae.decode(feats)
            rec_ord.update(x, x_hat, feats, p)
            rec_all.update(x, x_hat, feats, attended)
            return torch.where(p[..., None], x_hat.to(act.dtype), act)

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
        ce_increase=avg["sae"] - avg["clean"], n_excluded_positions=n_excluded,
        reconstruction_ordinary_tokens=_brief(rec_ord),
        reconstruction_all_tokens=_brief(rec_all),
    )


def _brief(acc: ReconstructionAccumulator) -> dict | None:
    if acc.n == 0:
        return None
    m = acc.compute().to_dict()
    m.pop("density_histogram")
    return m


def _ordinary_positions_and_mean(lm, rule, mask, patch, batches, forward):
    """Pass 1 (clean): drop the positions ``rule`` excludes from ``patch``; mean activation at
    the hook over the remaining (ordinary, patched) positions, for mean ablation."""
    patch = patch.clone()
    act_sum = torch.zeros(lm.d_model, dtype=torch.float64)
    act_n = 0
    for sl in batches:
        m = mask[sl]
        position = m.cumsum(-1) - 1  # index among the row's real tokens (padding-independent)

        def record(act, sl=sl, m=m, position=position):
            nonlocal act_sum, act_n
            keep = rule.keep_mask(act, position.to(act.device), candidates=m.bool().to(act.device))
            patch[sl] &= keep.cpu()
            p = patch[sl].to(act.device)
            act_sum += act[p].double().sum(0).cpu()
            act_n += int(p.sum())
            return None

        forward(sl, record)
    return patch, (act_sum / max(act_n, 1)).float()
