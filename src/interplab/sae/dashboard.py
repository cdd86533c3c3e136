"""Data for feature dashboards: density, top-activating contexts, activation histogram, and the
output tokens each feature's decoder direction most promotes and suppresses.

Tokens are counted as training counted them: BOS and the tokens the SAE's exclusion rule leaves
out (position 0 and massive-norm tokens, :class:`~interplab.activations.exclusion.ExclusionRule`)
never enter a density, a histogram or a top context; otherwise a handful of attention-sink tokens
with ~100 × the ordinary norm top the densest cards. :func:`dashboard_from_config` is the whole
``sae dashboard`` job: the SAE checked against the model and hook it is applied at, text from a
held-out part of a packaged corpus by default, and the page says which text and which rule.

The logit effect of feature ``i`` is ``(W_dec[i] ⊙ g) W_Uᵀ`` with ``W_U [vocab, d_model]`` the
unembedding and ``g`` the final norm's scale (when the norm has one): the direct effect of adding
the decoder direction to the residual stream, ignoring the norm's data-dependent denominator.
Only the data is computed here; :mod:`interplab.report.sae_dashboard` renders it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from interplab.activations.exclusion import ExclusionRule
from interplab.defaults import DEFAULT_LOGITS_BATCH_SIZE
from interplab.errors import InterplabError
from interplab.models.hooks import HookLike
from interplab.sae.base import SparseAutoencoder

__all__ = ["FeatureDashboard", "DashboardData", "dashboard_from_config", "feature_dashboards",
           "sae_features_on_tokens"]


@dataclass
class FeatureDashboard:
    index: int
    density: float  # fraction of tokens on which the feature fires
    n_fired: int
    max_activation: float
    histogram_counts: list[int]
    histogram_edges: list[float]
    # activation, tokens, acts, centre, sequence, position, excluded (per token: left out)
    top_contexts: list[dict] = field(default_factory=list)
    promoted: list[tuple[str, float]] = field(default_factory=list)
    suppressed: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class DashboardData:
    model: str
    hook: str
    sae: dict
    n_tokens: int  # tokens counted: not BOS, kept by the exclusion rule
    features: list[FeatureDashboard]
    text: str = "the given tokens"  # which text the features ran on
    exclusion: dict | None = None  # the ExclusionRule applied (to_dict)
    exclusion_description: str = "nothing"
    n_excluded: int = 0  # non-BOS tokens the rule left out
    selection: str = ""  # how the features were chosen
    identity: dict | None = None  # IdentityCheck.to_dict() of the SAE against the model

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def sae_features_on_tokens(lm, sae: SparseAutoencoder, hook: HookLike, tokens: torch.Tensor,
                           batch_size: int = DEFAULT_LOGITS_BATCH_SIZE) -> torch.Tensor:
    """SAE features at every position: ``tokens [n, T] → [n, T, d_sae]`` (float32, CPU)."""
    return _features_and_keep(lm, sae, hook, tokens, ExclusionRule.none(), None, batch_size)[0]


@torch.no_grad()
def _features_and_keep(lm, sae: SparseAutoencoder, hook: HookLike, tokens: torch.Tensor,
                       rule: ExclusionRule, bos: int | None, batch_size: int,
                       progress: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features [n, T, d_sae], keep [n, T])``: keep is False at BOS and wherever ``rule``
    leaves a token out (its norm test against the median of the batch's non-BOS tokens, as the
    mixing buffer and CE evaluation apply it). ``progress`` (``add_task``/``advance``) advances
    by each batch's sequences."""
    from interplab.activations import harvest_tokens

    feats, keeps = [], []
    device = next(sae.parameters()).device
    task = (progress.add_task(f"SAE features at {lm.parse_hook(hook).name}",
                              total=tokens.shape[0], unit="sequences")
            if progress is not None else None)
    for i in range(0, tokens.shape[0], batch_size):
        chunk = tokens[i: i + batch_size]
        acts = harvest_tokens(lm, chunk.tolist(), hook, "all", batch_size=batch_size,
                              progress=False)[hook].to(device, torch.float32)
        x = acts.reshape(*chunk.shape, -1)
        candidates = torch.ones_like(chunk, dtype=torch.bool) if bos is None else chunk != bos
        position = torch.arange(chunk.shape[1]).expand_as(chunk)
        keeps.append(rule.keep_mask(x, position, candidates=candidates).cpu())
        feats.append(sae.encode(acts).reshape(*chunk.shape, -1).cpu())
        if progress is not None:
            progress.advance(task, chunk.shape[0])
    return torch.cat(feats), torch.cat(keeps)


def _token_str(tokenizer, tid: int) -> str:
    return tokenizer.decode([int(tid)])


@torch.no_grad()
def feature_dashboards(
    lm, sae: SparseAutoencoder, hook: HookLike, tokens: torch.Tensor,
    features: list[int] | None = None, n_features: int = 12, n_contexts: int = 8,
    window: int = 6, n_logits: int = 8, bos_token_id: int | None = None, batch_size: int = DEFAULT_LOGITS_BATCH_SIZE,
    n_bins: int = 30, exclusion: ExclusionRule | None = None, text: str = "the given tokens",
    identity: dict | None = None, progress: Any = None,
) -> DashboardData:
    """Dashboard data for ``features`` (default: ``n_features`` features that fired, spread
    evenly over the density range from the densest to the rarest) of ``sae`` at ``hook``,
    computed on ``tokens [n, T]`` (described by ``text``). BOS positions and the tokens
    ``exclusion`` leaves out (default: the rule the SAE was trained with) are not counted.
    Contexts show ``window`` tokens either side of the maximum. ``progress`` (a rich
    ``Progress`` or :class:`~interplab.progress.LineProgress`) shows the model pass batch by
    batch and the features' contexts one by one."""
    hook = lm.parse_hook(hook)
    if sae.d_in != lm.d_model:
        raise InterplabError(f"dimension mismatch: SAE d_in={sae.d_in}, model d={lm.d_model}")
    rule = exclusion if exclusion is not None else ExclusionRule.from_dict(sae.config.exclusion)
    sae.eval()
    bos = bos_token_id if bos_token_id is not None else lm.bos_token_id
    feats, valid = _features_and_keep(lm, sae, hook, tokens, rule, bos, batch_size, progress)
    feats = feats * valid[..., None]
    n_tok = int(valid.sum())
    n_candidates = int(tokens.numel() if bos is None else (tokens != bos).sum())
    fired = (feats > 0).sum((0, 1))
    density = fired.double() / max(n_tok, 1)
    if features is None:
        alive = (fired > 0).nonzero().flatten()
        if alive.numel() == 0:
            raise InterplabError("no feature fired on these tokens; use more text")
        order = alive[density[alive].argsort(descending=True)]
        pick = torch.linspace(0, order.numel() - 1, min(n_features, order.numel())).round().long()
        features = [int(order[j]) for j in pick]
        selection = (f"{len(features)} of the {order.numel()} features that fired, spread evenly "
                     "over the density range from the densest to the rarest")
    else:
        selection = "the features asked for"
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
    task = (progress.add_task("feature contexts and logits", total=len(features),
                              unit="features")
            if progress is not None else None)
    for j, f in enumerate(features):
        if progress is not None and j:
            progress.advance(task)
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
                "excluded": [not bool(v) for v in valid[s, lo:hi]],
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
    if progress is not None and features:
        progress.advance(task)
    return DashboardData(model=lm.name, hook=hook.name, sae=sae.config.to_dict(), n_tokens=n_tok,
                         features=out, text=text, exclusion=rule.to_dict(),
                         exclusion_description=rule.describe(),
                         n_excluded=n_candidates - n_tok, selection=selection, identity=identity)


def dashboard_from_config(cfg: Any, progress: Any = None) -> DashboardData:
    """The ``sae dashboard`` job (:class:`~interplab.sae.config.DashboardConfig`): load the SAE
    and the model, check that the SAE belongs to that model and hook (a mismatch raises unless
    ``cfg.allow_mismatch``), pack ``cfg.n_sequences`` sequences from ``cfg.corpus_part`` of the
    corpus (held out by default) and compute the dashboards under the SAE's exclusion rule.
    ``progress`` (a rich ``Progress`` or :class:`~interplab.progress.LineProgress`) shows the
    work after the model loads, batch by batch."""
    from interplab.datasets.corpus import corpus_split, corpus_tokens
    from interplab.models import load
    from interplab.sae.formats import load_sae
    from interplab.sae.identity import check_identity, model_identity_of

    cfg.validate()
    sae = load_sae(cfg.sae, device=cfg.device)
    lm = load(cfg.model, device=cfg.device)
    hook = cfg.hook or sae.config.hook
    if not hook:
        raise InterplabError("the SAE names no hook; pass --hook")
    lm.parse_hook(hook)
    check = check_identity(sae.config, sae=str(cfg.sae), target=f"model {cfg.model}",
                           model=model_identity_of(lm, sae.config), hook=hook,
                           allow_mismatch=cfg.allow_mismatch)
    toks, bos_id = corpus_tokens(lm, cfg.corpus, cfg.context_length, cfg.n_sequences,
                                 part=cfg.corpus_part)
    docs = corpus_split(cfg.corpus, cfg.corpus_part)[1]
    text = (f"{toks.shape[0]} sequences of {cfg.context_length} tokens, each starting with BOS, "
            f"packed from {docs}")
    return feature_dashboards(lm, sae, hook, toks, features=cfg.features or None,
                              n_features=cfg.n_features, bos_token_id=bos_id,
                              exclusion=cfg.exclusion_rule(sae.config.exclusion), text=text,
                              identity=check.to_dict(), progress=progress)
