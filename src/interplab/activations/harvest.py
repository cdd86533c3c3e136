"""Harvesting: run texts through a model and keep activations at chosen hooks and positions.

One forward pass serves every requested hook; the pass is cut short right after the last block
needed (no later blocks, no final norm, no vocabulary projection). Texts are batched by length to
reduce padding and every row comes back in input order with its (text, position, token) address.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from interplab.activations.positions import Positions
from interplab.activations.prefixes import PrefixTree, plan_prefix_tree
from interplab.defaults import DEFAULT_BATCH_SIZE
from interplab.errors import InterplabError
from interplab.models import HookPoint, attach
from interplab.models.hooks import HookLike
from interplab.threads import AdaptiveThreads, pace

if TYPE_CHECKING:  # transformers loads only when a model is run, not to import this module
    from interplab.models import LanguageModel

# Keys and values of shared prefixes kept at once (see interplab.activations.prefixes).
PREFIX_KV_BUDGET_BYTES = 512 * 2**20
# What one more forward pass costs, in padded token slots (per-pass overheads and the lower
# efficiency of smaller matrix products): batching trades it against padding.
PASS_COST_SLOTS = 64
# Prefixes are shared only when that saves at least this fraction of the tokens.
MIN_PREFIX_SAVING = 0.02


class _StopForward(Exception):
    """Raised inside a hook to end the forward pass once every needed activation is captured."""


@dataclass
class Activations:
    """Activations for several hooks plus the address of every row.

    ``acts[hook]`` is ``[n_rows, d_model]``; ``text_index``, ``position`` (index within the text's
    own tokens) and ``token_id`` are ``[n_rows]`` int64 tensors. Rows are sorted by text, then
    position.
    """

    acts: dict[str, torch.Tensor]
    text_index: torch.Tensor
    position: torch.Tensor
    token_id: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)
    # With ``with_logprobs=True``: per text, the summed log-probability (nats) the model assigns to
    # its tokens after the first, ``[n_texts]`` float64, and how many tokens were scored.
    text_logprob: torch.Tensor | None = None
    text_n_scored: torch.Tensor | None = None

    def __getitem__(self, hook: HookLike) -> torch.Tensor:
        hook = hook.name if isinstance(hook, HookPoint) else hook
        if hook not in self.acts:
            raise InterplabError(f"no activations for hook {hook!r}; harvested: {list(self.acts)}")
        return self.acts[hook]

    @property
    def hooks(self) -> list[str]:
        return list(self.acts)

    @property
    def n_rows(self) -> int:
        return int(self.text_index.numel())

    def rows_for_text(self, i: int) -> torch.Tensor:
        return torch.nonzero(self.text_index == i).flatten()


@dataclass
class _Batch:
    text_index: np.ndarray  # [rows]
    position: np.ndarray  # [rows]
    token_id: np.ndarray  # [rows]
    acts: dict[str, torch.Tensor]  # hook -> [rows, d] on CPU
    texts: np.ndarray | None = None  # [texts in batch] global indices (with_logprobs only)
    logprob: np.ndarray | None = None  # [texts in batch]
    n_scored: np.ndarray | None = None


def validate_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise InterplabError("texts must be a list of strings, not a single string")
    texts = list(texts)
    if not texts:
        raise InterplabError("the text list is empty; give at least one text to harvest")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise InterplabError(f"text {bad[0]} is a {type(texts[bad[0]]).__name__}, not a string")
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        raise InterplabError(
            f"text {empty[0]} is empty ({len(empty)} empty texts in all); remove empty texts"
        )
    return texts


def _stop_hook(hooks: Sequence[HookPoint]) -> HookPoint:
    """The hook point right after which the pass can stop.

    ``resid_pre`` of block L fires when block L is entered; every other kind of block L has fired
    by the time block L has run, i.e. at ``resid_post`` of block L.
    """
    last = max(hooks)
    return last if last.kind == "resid_pre" else HookPoint.resid_post(last.layer)


def batches_by_length(lengths: Sequence[int], batch_size: int,
                      order: np.ndarray | None = None) -> list[np.ndarray]:
    """Batches of at most ``batch_size`` texts, in ascending length (or in ``order``, which must
    sort ``lengths`` ascending), cut where the padded slots plus :data:`PASS_COST_SLOTS` per batch
    are least (exact dynamic programming over the sorted order)."""
    order = np.argsort(np.asarray(lengths), kind="stable") if order is None else np.asarray(order)
    width = np.asarray(lengths, dtype=np.int64)[order]
    n = len(width)
    best = np.zeros(n + 1)
    start = np.zeros(n + 1, dtype=np.int64)
    for j in range(1, n + 1):  # the last batch is width[i:j], padded to width[j - 1]
        i = np.arange(max(0, j - batch_size), j)
        cost = best[i] + (j - i) * width[j - 1] + PASS_COST_SLOTS
        k = int(np.argmin(cost))
        best[j], start[j] = cost[k], i[k]
    cuts = [n]
    while cuts[-1] > 0:
        cuts.append(int(start[cuts[-1]]))
    cuts.reverse()
    return [order[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]


def _kv_slot_bytes(lm: LanguageModel) -> int:
    """Bytes of keys and values one token holds across all blocks (an estimate for budgeting)."""
    cfg = lm.hf.config
    heads = lm.n_heads
    kv_heads = int(getattr(cfg, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(cfg, "head_dim", None) or lm.d_model // heads)
    return 2 * lm.n_layers * kv_heads * head_dim * lm.dtype.itemsize


def _can_share_prefixes(lm: LanguageModel) -> bool:
    """Prefix sharing needs a plain causal key/value cache: no sliding-window layers."""
    cfg = lm.hf.config
    sliding = getattr(cfg, "sliding_window", None)
    if sliding and getattr(cfg, "use_sliding_window", True):
        return False
    return not any("sliding" in str(t) for t in (getattr(cfg, "layer_types", None) or ()))


@dataclass
class _PrefixStore:
    """Keys and values of every prefix node's own tokens, in one flat table per block (the last
    slot all zeros), and each text's log-probability terms from its prefix."""

    keys: list[torch.Tensor]  # per block: [slots + 1, kv heads, head_dim]
    values: list[torch.Tensor]
    chain: list[np.ndarray]  # per node: the slots of its whole prefix, root first
    logprob: np.ndarray  # per text: log-probability of its prefix tokens and of its first own token
    n_scored: np.ndarray

    def rows(self, nodes: np.ndarray, width: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per block, keys and values ``[rows, heads, width, head_dim]`` of the prefix each row
        runs on, right-aligned (node -1: no prefix, all zeros, masked by the caller)."""
        zero = len(self.keys[0]) - 1
        idx = np.full((len(nodes), width), zero, dtype=np.int64)
        for r, v in enumerate(nodes):
            if v >= 0:
                idx[r, width - len(self.chain[v]) :] = self.chain[v]
        at = torch.as_tensor(idx, device=self.keys[0].device)
        return [(k[at].transpose(1, 2), v[at].transpose(1, 2))
                for k, v in zip(self.keys, self.values, strict=True)]


def _batch_inputs(lm: LanguageModel, seqs: Sequence[Sequence[int]], local: np.ndarray,
                  depth: np.ndarray, node: np.ndarray, store: _PrefixStore | None, pad_id: int,
                  padding_side: str = "right") -> tuple[Any, ...]:
    """Inputs of one pass over ``seqs[local]``, each without its first ``depth`` tokens, which
    its prefix node (``node``, in ``store``) supplies as keys and values.

    Returns ``ids``, ``mask`` (own tokens), the attention mask over prefix slots and own tokens,
    ``position_ids``, the cache (or None) and the number of prefix slots.
    """
    own = [len(seqs[i]) - int(depth[i]) for i in local]
    width = max(own)
    ids = torch.full((len(local), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(local), width), dtype=torch.long)
    for b, i in enumerate(local):
        start = 0 if padding_side == "right" else width - own[b]
        ids[b, start : start + own[b]] = torch.as_tensor(seqs[i][int(depth[i]):], dtype=torch.long)
        mask[b, start : start + own[b]] = 1
    d = torch.as_tensor(depth[local])
    position_ids = (mask.cumsum(-1) - 1).clamp_min(0) + d[:, None]
    prefix_width = int(d.max())
    if not prefix_width:
        return ids, mask, mask, position_ids, None, 0
    assert store is not None
    slots = torch.arange(prefix_width)[None, :] >= (prefix_width - d)[:, None]
    from transformers import DynamicCache

    cache = DynamicCache(store.rows(node[local], prefix_width), config=lm.hf.config)
    return ids, mask, torch.cat([slots.long(), mask], dim=1), position_ids, cache, prefix_width


def _run_prefix_tree(lm: LanguageModel, tree: PrefixTree, token_ids: Sequence[Sequence[int]],
                     batch_size: int, run: Callable[..., torch.Tensor | None],
                     with_logprobs: bool, progress: Any = None) -> _PrefixStore:
    """Run every prefix node once, wave by wave (a node's own tokens on its parent's keys and
    values), and keep the keys and values of its own tokens.

    With log-probabilities, a node's own positions are projected onto the vocabulary once: the
    tokens they predict inside the prefix are shared by everything below the node, and its last
    position scores the first own token of each child node and of each text on it.

    ``progress`` (the harvest's sink) gets ``update(0)`` after each pass: no text is finished
    yet, but a line-based display can print its heartbeat during a long first group of passes.
    """
    own = tree.own
    offset = np.concatenate([[0], np.cumsum(own)])
    chain: list[np.ndarray] = []
    for v in range(tree.n_nodes):  # parents come first
        mine = np.arange(offset[v], offset[v + 1])
        chain.append(np.concatenate([chain[tree.parent[v]], mine]) if tree.parent[v] >= 0
                     else mine)
    store = _PrefixStore([], [], chain, np.zeros(len(token_ids)),
                         np.zeros(len(token_ids), dtype=np.int64))
    children: list[list[int]] = [[] for _ in range(tree.n_nodes)]
    for v, p in enumerate(tree.parent):
        if p >= 0:
            children[p].append(v)
    on_node: list[list[int]] = [[] for _ in range(tree.n_nodes)]
    for i, v in enumerate(tree.text_node):
        if v >= 0:
            on_node[v].append(i)
    above = np.zeros(tree.n_nodes)  # log-probability of a node's tokens before its own tokens
    parent_depth = tree.parent_depth
    pad_id = lm.tokenizer.pad_token_id
    for wave in tree.waves:
        order = wave[np.lexsort((parent_depth[wave], own[wave]))]
        for batch in batches_by_length(own, batch_size, order):
            pace()
            ids, _, full_mask, position_ids, cache, width = _batch_inputs(
                lm, tree.tokens, batch, parent_depth, tree.parent, store, pad_id)
            with torch.inference_mode():
                if cache is None:
                    from transformers import DynamicCache

                    cache = DynamicCache(config=lm.hf.config)
                hidden = run(ids.to(lm.device), full_mask.to(lm.device), position_ids, cache)
                done = [(layer.keys, layer.values) for layer in cache.layers
                        if getattr(layer, "keys", None) is not None and layer.keys.numel()]
                if not store.keys:
                    for kv, out in ((store.keys, [k for k, _ in done]),
                                    (store.values, [v for _, v in done])):
                        kv.extend(t.new_zeros((offset[-1] + 1, t.shape[1], t.shape[3]))
                                  for t in out)
                if len(done) != len(store.keys):  # pragma: no cover - every pass stops alike
                    raise RuntimeError("the prefix passes filled different numbers of blocks")
                # each row's slots: its parent's prefix (right-aligned in `width`), then its own
                # tokens (row r, position p), which go to the node's slots of the store
                r = np.repeat(np.arange(len(batch)), own[batch])
                p = np.concatenate([np.arange(own[v]) for v in batch])
                at_r, at_p, slots = (torch.as_tensor(a, device=lm.device)
                                     for a in (r, p, offset[batch][r] + p))
                for k_all, v_all, (k, vv) in zip(store.keys, store.values, done, strict=True):
                    k_all[slots] = k[at_r, :, at_p + width]
                    v_all[slots] = vv[at_r, :, at_p + width]
                if with_logprobs:
                    _node_logprobs(lm, tree, token_ids, batch, hidden[at_r, at_p], own, above,
                                   children, on_node, store)
            if progress is not None:
                progress.update(0)
    return store


def _node_logprobs(lm: LanguageModel, tree: PrefixTree, token_ids: Sequence[Sequence[int]],
                   batch: np.ndarray, hidden: torch.Tensor, own: np.ndarray, above: np.ndarray,
                   children: list[list[int]], on_node: list[list[int]],
                   store: _PrefixStore) -> None:
    """Log-probability terms of the nodes of one pass (one vocabulary projection for all);
    ``hidden`` holds the final-norm states of their own tokens, node after node.

    Per node v: what its own positions predict inside the prefix (added to ``above[v]``, the
    tokens before them), then, from its last position, the first own token of each child node
    (into ``above``) and of each text on it (into ``store``)."""
    logits = _vocab_logits(lm, hidden).float()  # [own tokens of the pass, vocab]
    lse = torch.logsumexp(logits, dim=-1)
    # what each position predicts: the next own token of its node, or (last position) nothing yet
    nxt = np.concatenate([tree.tokens[v][tree.depth[v] - own[v] + 1 :] + [0] for v in batch])
    token_lp = logits.gather(-1, torch.as_tensor(nxt, device=logits.device)[:, None])[:, 0] - lse
    token_lp = token_lp.double().cpu().numpy()
    end = np.cumsum(own[batch])
    for r, v in enumerate(batch):
        d = int(tree.depth[v])
        inner = above[v] + float(token_lp[end[r] - own[v] : end[r] - 1].sum())
        last = logits[end[r] - 1] - lse[end[r] - 1]
        if children[v]:
            nxt_c = torch.as_tensor([tree.tokens[c][d] for c in children[v]], device=last.device)
            above[children[v]] = inner + last[nxt_c].double().cpu().numpy()
        if on_node[v]:
            nxt_t = torch.as_tensor([token_ids[i][d] for i in on_node[v]], device=last.device)
            store.logprob[on_node[v]] = inner + last[nxt_t].double().cpu().numpy()
            store.n_scored[on_node[v]] = d


def iter_harvest_ids(
    lm: LanguageModel,
    token_ids: Sequence[Sequence[int]],
    text_offset: int,
    hooks: Sequence[HookPoint],
    positions: Positions,
    *,
    batch_size: int,
    dtype: torch.dtype,
    padding_side: str = "right",
    compute_dtype: torch.dtype | None = None,
    progress: tqdm | None = None,
    with_logprobs: bool = False,
    share_prefixes: bool = True,
    info: dict[str, Any] | None = None,
) -> Iterator[_Batch]:
    """Yield batches of harvested rows for already tokenised texts (batched by length).

    ``hooks`` come from :meth:`LanguageModel.resolve_hooks` (checked, without duplicates); rows
    carry activations keyed by hook name. ``text_offset`` is added to local indices so rows carry
    global text indices. Rows within a batch are in (text, position) order; batches are in length
    order, not input order. With ``with_logprobs`` the full model runs (no early stop) and each
    text's log-probability is returned too.

    With ``share_prefixes`` (and right padding), token prefixes that several texts share before
    their first harvested position run once, at every depth (:mod:`interplab.activations.prefixes`);
    each text's own tokens then run on its prefix's keys and values. ``info``, if given, receives
    ``shared_prefix_nodes``, ``shared_prefix_waves`` and ``shared_prefix_tokens_saved``.
    """
    if padding_side not in ("left", "right"):
        raise InterplabError(f"padding_side must be 'left' or 'right', not {padding_side!r}")
    if batch_size < 1:
        raise InterplabError(f"batch_size must be at least 1, not {batch_size}")
    names = [hp.name for hp in hooks]
    device = lm.device
    pad_id = lm.tokenizer.pad_token_id
    has_bos = lm.bos_token_id is not None
    captured: dict[str, torch.Tensor] = {}
    gather: dict[str, torch.Tensor | None] = {"b": None, "s": None}
    lengths = [len(t) for t in token_ids]
    selected = [positions.select(i + text_offset, n, has_bos) for i, n in enumerate(lengths)]

    def capture(name: str):
        def fn(act: torch.Tensor) -> None:
            if gather["b"] is not None:  # None while shared prefixes run
                captured[name] = act[gather["b"], gather["s"]].to(dtype)

        return fn

    def stop(_act: torch.Tensor) -> None:
        raise _StopForward

    autocast = (
        torch.autocast(device_type=device.type, dtype=compute_dtype)
        if compute_dtype is not None and compute_dtype != lm.dtype
        else contextlib.nullcontext()
    )

    def run(ids: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor,
            cache: Any = None) -> torch.Tensor | None:
        inputs = {"input_ids": ids, "attention_mask": mask, "position_ids": position_ids.to(device),
                  "use_cache": cache is not None}
        if cache is not None:
            inputs["cache"] = cache
        with torch.inference_mode(), autocast:
            if with_logprobs:
                return lm.base(**inputs).last_hidden_state
            with contextlib.suppress(_StopForward):
                lm.base(**inputs)
        return None

    handles = [attach(lm, hp, capture(hp.name)) for hp in hooks]
    if not with_logprobs:
        handles.append(attach(lm, _stop_hook(hooks), stop))  # registered last: fires after the captures
    try:
        tree = None
        runs_a_block = with_logprobs or _stop_hook(hooks) != HookPoint.resid_pre(0)
        if share_prefixes and padding_side == "right" and runs_a_block and _can_share_prefixes(lm):
            caps = [min(min(sel, default=n - 1), n - 1) for sel, n in zip(selected, lengths,
                                                                           strict=True)]
            tree = plan_prefix_tree(token_ids, caps,
                                    max_slots=PREFIX_KV_BUDGET_BYTES // _kv_slot_bytes(lm))
            if not tree.n_nodes or tree.saved_tokens < MIN_PREFIX_SAVING * sum(lengths):
                tree = None  # e.g. only a BOS in common: not worth a second kind of pass
        depth = tree.text_depth if tree is not None else np.zeros(len(lengths), dtype=np.int64)
        node = tree.text_node if tree is not None else np.full(len(lengths), -1, dtype=np.int64)
        if info is not None:
            info["shared_prefix_nodes"] = tree.n_nodes if tree is not None else 0
            info["shared_prefix_waves"] = len(tree.waves) if tree is not None else 0
            info["shared_prefix_tokens_saved"] = tree.saved_tokens if tree is not None else 0
        store = None
        if tree is not None:
            store = _run_prefix_tree(lm, tree, token_ids, batch_size, run, with_logprobs,
                                     progress)
        own = np.asarray(lengths, dtype=np.int64) - depth  # tokens each text runs itself
        order = np.lexsort((depth, own))  # by own length, then prefix length
        for local in batches_by_length(own, batch_size, order):
            pace()  # under threads="auto", follow the load other processes put on the CPUs
            ids, mask, full_mask, position_ids, cache, _ = _batch_inputs(
                lm, token_ids, local, depth, node, store, pad_id, padding_side)
            rows_b, rows_s, t_idx, t_pos, t_tok = [], [], [], [], []
            for b, i in enumerate(local):
                seq, d = token_ids[i], int(depth[i])
                start = 0 if padding_side == "right" else ids.shape[1] - len(seq)
                sel = selected[i]
                rows_b.extend([b] * len(sel))
                rows_s.extend(start + p - d for p in sel)
                t_idx.extend([int(i) + text_offset] * len(sel))
                t_pos.extend(sel)
                t_tok.extend(seq[p] for p in sel)
            gather["b"] = torch.as_tensor(rows_b, dtype=torch.long, device=device)
            gather["s"] = torch.as_tensor(rows_s, dtype=torch.long, device=device)
            captured.clear()
            hidden = run(ids.to(device), full_mask.to(device), position_ids, cache)
            gather["b"] = gather["s"] = None
            lp = ns = None
            if with_logprobs:
                with torch.inference_mode():
                    lp, ns = _text_logprobs(lm, hidden, ids.to(device), mask.to(device))
                if store is not None:
                    lp = lp + store.logprob[local]
                    ns = ns + store.n_scored[local]
            missing = [h for h in names if h not in captured]
            if missing:  # pragma: no cover - would mean a hook never fired
                raise RuntimeError(f"hooks {missing} did not fire during the forward pass")
            yield _Batch(
                text_index=np.asarray(t_idx, dtype=np.int64),
                position=np.asarray(t_pos, dtype=np.int64),
                token_id=np.asarray(t_tok, dtype=np.int64),
                acts={h: captured[h].cpu() for h in names},
                texts=np.asarray(local, dtype=np.int64) + text_offset if with_logprobs else None,
                logprob=lp,
                n_scored=ns,
            )
            if progress is not None:
                progress.update(int(sum(lengths[i] for i in local)))
    finally:
        for h in handles:
            h.remove()


def _text_logprobs(lm: LanguageModel, hidden: torch.Tensor, ids: torch.Tensor,
                   mask: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Summed log-probability of each row's tokens after its first (padding ignored).

    ``hidden`` is the base model's output (after the final norm). The vocabulary projection runs
    only at the positions that predict a scored token (a real token followed by a real token),
    never on padding or on each row's last token, and no ``[batch, seq, vocab]`` tensor is made.
    """
    scored = (mask[:, 1:] * mask[:, :-1]).bool()  # [b, s-1]: position t predicts token t+1
    rows, cols = torch.nonzero(scored, as_tuple=True)
    logits = _vocab_logits(lm, hidden[rows, cols]).float()  # [n_scored, vocab]
    token_lp = logits.gather(-1, ids[rows, cols + 1].unsqueeze(-1)).squeeze(-1)
    token_lp = token_lp - torch.logsumexp(logits, dim=-1)
    total = torch.zeros(ids.shape[0], dtype=torch.float64, device=ids.device)
    total.index_add_(0, rows, token_lp.double())
    return total.cpu().numpy(), scored.sum(-1).long().cpu().numpy()


def _vocab_logits(lm: LanguageModel, h: torch.Tensor) -> torch.Tensor:
    """The model's output head on final-norm states ``h`` (``[n, d]``), with the logit scaling
    and soft-capping some families apply after it (Cohere, Gemma 2/3)."""
    logits = lm.hf.get_output_embeddings()(h)
    cfg = lm.hf.config
    scale = getattr(cfg, "logit_scale", None)
    if isinstance(scale, (int, float)) and scale != 1:
        logits = logits * scale
    cap = getattr(cfg, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def assemble(batches: Sequence[_Batch], hooks: Sequence[str], d_model: int,
             dtype: torch.dtype) -> Activations:
    """Concatenate batches and sort rows by (text, position); ``hooks`` are hook names."""
    if not batches:
        empty = torch.empty(0, dtype=torch.long)
        return Activations({h: torch.empty(0, d_model, dtype=dtype) for h in hooks},
                           empty, empty.clone(), empty.clone())
    t_idx = np.concatenate([b.text_index for b in batches])
    pos = np.concatenate([b.position for b in batches])
    tok = np.concatenate([b.token_id for b in batches])
    order = np.lexsort((pos, t_idx))
    order_t = torch.from_numpy(order)
    acts = {h: torch.cat([b.acts[h] for b in batches])[order_t] for h in hooks}
    out = Activations(
        acts=acts,
        text_index=torch.from_numpy(t_idx[order]),
        position=torch.from_numpy(pos[order]),
        token_id=torch.from_numpy(tok[order]),
    )
    if batches[0].logprob is not None:
        texts = np.concatenate([b.texts for b in batches])
        t_order = np.argsort(texts, kind="stable")
        out.text_logprob = torch.from_numpy(np.concatenate([b.logprob for b in batches])[t_order])
        out.text_n_scored = torch.from_numpy(np.concatenate([b.n_scored for b in batches])[t_order])
    return out


def harvest(
    lm: LanguageModel,
    texts: Sequence[str],
    hooks: Sequence[HookLike] | HookLike,
    positions: str | Positions = "last",
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    dtype: torch.dtype = torch.float32,
    padding_side: str = "right",
    max_length: int | None = None,
    truncation: str = "warn",
    compute_dtype: torch.dtype | None = None,
    with_logprobs: bool = False,
    progress: bool | Any = True,
    threads: int | str | None = None,
    share_prefixes: bool = True,
) -> Activations:
    """Harvest activations of ``texts`` at ``hooks`` and ``positions`` into memory.

    ``dtype`` is the dtype activations are returned in; ``compute_dtype`` (e.g. ``torch.bfloat16``)
    runs the model's matrix products under autocast in that dtype. Texts longer than the model's
    context (or ``max_length``) are truncated with a warning, or raise with
    ``truncation="error"``. Returns rows in input order (text, then position). With
    ``with_logprobs`` the whole model runs and ``text_logprob`` holds each text's log-probability.
    ``hooks`` are names or :class:`HookPoint` objects; activations come back keyed by name, hooks
    in forward order (by layer, then resid_pre, attn_out, mlp_out, resid_post), duplicates once.
    With ``share_prefixes`` a token prefix that several texts share before their first harvested
    position runs once (:mod:`interplab.activations.prefixes`); the results are the same up to
    floating-point rounding, and ``info`` says how many tokens that saved. ``progress``: a tqdm
    bar (True), none (False), or any object with ``update(n)``, which then gets each batch's
    token count as the batch finishes (e.g. :class:`interplab.progress.TaskAdvance`).
    """
    texts = validate_texts(texts)
    if max_length is not None and max_length < 1:
        raise InterplabError(f"max_length must be at least 1 (or None), not {max_length}")
    ids = lm.tokenize(texts, max_length=max_length, truncation=truncation)
    return harvest_tokens(lm, ids, hooks, positions, batch_size=batch_size, dtype=dtype,
                          padding_side=padding_side, compute_dtype=compute_dtype,
                          with_logprobs=with_logprobs, progress=progress, threads=threads,
                          share_prefixes=share_prefixes)


def validate_token_ids(lm: LanguageModel, token_ids: Sequence[Sequence[int]]) -> list[list[int]]:
    ids = [list(map(int, t)) for t in token_ids]
    if not ids:
        raise InterplabError("the token sequence list is empty; give at least one sequence")
    vocab = lm.embed.num_embeddings
    for i, t in enumerate(ids):
        if not t:
            raise InterplabError(f"token sequence {i} is empty")
        if len(t) > lm.n_ctx:
            raise InterplabError(f"token sequence {i} has {len(t)} tokens, more than the model's "
                                 f"context of {lm.n_ctx}; split it")
        if min(t) < 0 or max(t) >= vocab:
            raise InterplabError(f"token sequence {i} holds ids outside 0..{vocab - 1}")
    return ids


def harvest_tokens(
    lm: LanguageModel,
    token_ids: Sequence[Sequence[int]],
    hooks: Sequence[HookLike] | HookLike,
    positions: str | Positions = "last",
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    dtype: torch.dtype = torch.float32,
    padding_side: str = "right",
    compute_dtype: torch.dtype | None = None,
    with_logprobs: bool = False,
    progress: bool | Any = True,
    threads: int | str | None = None,
    share_prefixes: bool = True,
) -> Activations:
    """:func:`harvest` for sequences that are already token ids (e.g. packed corpus windows).

    ``threads`` (torch and BLAS threads for the pass; default ``$INTERPLAB_THREADS`` or
    ``"auto"``: the CPUs other processes leave free, re-decided every few seconds as the pass
    runs, see :class:`interplab.threads.AdaptiveThreads`) is restored when the call returns;
    ``info["threads"]`` lists the counts used."""
    ids = validate_token_ids(lm, token_ids)
    points = lm.resolve_hooks(hooks)
    pos = Positions.parse(positions)
    pos.validate_count(len(ids))
    total = sum(len(t) for t in ids)
    info: dict[str, Any] = {}
    bar_context = (tqdm(total=total, unit="tok", desc="harvest", disable=not progress,
                        leave=False) if isinstance(progress, bool)
                   else contextlib.nullcontext(progress))
    with AdaptiveThreads(threads) as pool, bar_context as bar:
        batches = list(
            iter_harvest_ids(lm, ids, 0, points, pos, batch_size=batch_size, dtype=dtype,
                             padding_side=padding_side, compute_dtype=compute_dtype, progress=bar,
                             with_logprobs=with_logprobs, share_prefixes=share_prefixes,
                             info=info)
        )
    out = assemble(batches, [hp.name for hp in points], lm.d_model, dtype)
    out.info = {"model": lm.identity(), "positions": pos.spec, "n_texts": len(ids),
                "n_tokens": total, "threads": pool.used, **info}
    return out
