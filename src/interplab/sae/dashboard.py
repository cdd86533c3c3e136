"""Data for feature dashboards: density, top-activating contexts, activation histogram, and the
output tokens each feature's decoder direction most promotes and suppresses.

The logit effect of feature ``i`` is ``(W_dec[i] ⊙ g) W_Uᵀ`` with ``W_U [vocab, d_model]`` the
unembedding and ``g`` the final norm's scale (when the norm has one): the direct effect of adding
the decoder direction to the residual stream, ignoring the norm's data-dependent denominator.
Only the data is computed here; :mod:`interplab.report.sae_dashboard` renders it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from interplab.errors import InterplabError
from interplab.models.hooks import HookLike
from interplab.sae.base import SparseAutoencoder

__all__ = ["FeatureDashboard", "DashboardData", "feature_dashboards", "sae_features_on_tokens"]


@dataclass
class FeatureDashboard:
    index: int
    density: float  # fraction of tokens on which the feature fires
    n_fired: int
    max_activation: float
    histogram_counts: list[int]
    histogram_edges: list[float]
    top_contexts: list[dict] = field(default_factory=list)  # activation, tokens, acts, centre
    promoted: list[tuple[str, float]] = field(default_factory=list)
    suppressed: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class DashboardData:
    model: str
    hook: str
    sae: dict
    n_tokens: int
    features: list[FeatureDashboard]

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def sae_features_on_tokens(lm, sae: SparseAutoencoder, hook: HookLike, tokens: torch.Tensor,
                           batch_size: int = 8) -> torch.Tensor:
    """SAE features at every position: ``tokens [n, T] → [n, T, d_sae]`` (float32, CPU)."""
    from interplab.activations import harvest_tokens

    out = []
    device = next(sae.parameters()).device
    for i in range(0, tokens.shape[0], batch_size):
        chunk = tokens[i: i + batch_size]
        acts = harvest_tokens(lm, chunk.tolist(), hook, "all", batch_size=batch_size,
                              progress=False)[hook].to(device, torch.float32)
        out.append(sae.encode(acts).reshape(*chunk.shape, -1).cpu())
    return torch.cat(out)


def _token_str(tokenizer, tid: int) -> str:
    return tokenizer.decode([int(tid)])


@torch.no_grad()
def feature_dashboards(
    lm, sae: SparseAutoencoder, hook: HookLike, tokens: torch.Tensor,
    features: list[int] | None = None, n_features: int = 12, n_contexts: int = 8,
    window: int = 6, n_logits: int = 8, bos_token_id: int | None = None, batch_size: int = 8,
    n_bins: int = 30,
) -> DashboardData:
    """Dashboard data for ``features`` (default: ``n_features`` alive features spread over the
    density range) of ``sae`` at ``hook``, computed on ``tokens [n, T]``; BOS positions are
    ignored. Contexts show ``window`` tokens either side of the maximum."""
    hook = lm.parse_hook(hook)
    if sae.d_in != lm.d_model:
        raise InterplabError(f"dimension mismatch: SAE d_in={sae.d_in}, model d={lm.d_model}")
    sae.eval()
    feats = sae_features_on_tokens(lm, sae, hook, tokens, batch_size)  # [n, T, d_sae]
    bos = bos_token_id if bos_token_id is not None else lm.bos_token_id
    valid = torch.ones_like(tokens, dtype=torch.bool) if bos is None else tokens != bos
    feats = feats * valid[..., None]
    n_tok = int(valid.sum())
    fired = (feats > 0).sum((0, 1))
    density = fired.double() / max(n_tok, 1)
    if features is None:
        alive = (fired > 0).nonzero().flatten()
        if alive.numel() == 0:
            raise InterplabError("no feature fired on these tokens; use more text")
        order = alive[density[alive].argsort(descending=True)]
        pick = torch.linspace(0, order.numel() - 1, min(n_features, order.numel())).round().long()
        features = [int(order[j]) for j in pick]
    bad = [f for f in features if not 0 <= f < sae.d_sae]
    if bad:
        raise InterplabError(f"feature ids {bad} are out of range for an SAE of width {sae.d_sae}")
    W_U = lm.unembed.detach().float().cpu()
    g = getattr(lm.final_norm, "weight", None)
    scale = g.detach().float().cpu() if g is not None else torch.ones(lm.d_model)
    dirs = sae.W_dec.detach().float().cpu()[features] * scale  # [F, d]
    logits = dirs @ W_U.t()  # [F, vocab]
    tok = lm.tokenizer
    out = []
    for j, f in enumerate(features):
        a = feats[..., f]  # [n, T]
        nz = a[a > 0]
        if nz.numel():
            counts, edges = torch.histogram(nz.double(), bins=n_bins)
            counts, edges = counts.long().tolist(), edges.tolist()
        else:
            counts, edges = [], []
        flat = a.flatten()
        top = flat.topk(min(n_contexts, int((flat > 0).sum()))).indices
        contexts = []
        for idx in top.tolist():
            s, p = divmod(idx, a.shape[1])
            lo, hi = max(0, p - window), min(a.shape[1], p + window + 1)
            contexts.append({
                "activation": float(a[s, p]),
                "tokens": [_token_str(tok, t) for t in tokens[s, lo:hi].tolist()],
                "acts": [float(v) for v in a[s, lo:hi]],
                "centre": p - lo, "sequence": s, "position": p,
            })
        up = logits[j].topk(n_logits)
        down = (-logits[j]).topk(n_logits)
        out.append(FeatureDashboard(
            index=f, density=float(density[f]), n_fired=int(fired[f]),
            max_activation=float(a.max()), histogram_counts=counts, histogram_edges=edges,
            top_contexts=contexts,
            promoted=[(_token_str(tok, i), float(v)) for v, i in zip(up.values, up.indices,
                                                                    strict=True)],
            suppressed=[(_token_str(tok, i), -float(v)) for v, i in zip(down.values, down.indices,
                                                                       strict=True)],
        ))
    return DashboardData(model=lm.name, hook=hook.name, sae=sae.config.to_dict(), n_tokens=n_tok,
                         features=out)
