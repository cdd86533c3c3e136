"""Activation patching: clean → corrupted (denoising) and corrupted → clean (noising).

The donor run is computed once and cached (every activation at every hook); each patch is one row
of a forward pass, where a node is a hook and a token position (per-position sweep) or a hook and a
set of positions patched together (whole-layer sweep), and for a per-head hook one head. The
patches of one pair at one hook share the blocks below that hook: those run once per pair and hook,
and the hook widens the row into one row per patch (:func:`_run_widened`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from interplab.activations.positions import Positions
from interplab.controls import random_direction_like
from interplab.defaults import DEFAULT_BATCH_SIZE, DEFAULT_N_BOOT
from interplab.errors import InterplabError
from interplab.interventions import engine
from interplab.interventions.metrics import metric_name
from interplab.interventions.prompts import (
    Batch,
    Prompts,
    as_prompts,
    chunks,
    hidden,
    make_batch,
    read_columns,
)
from interplab.interventions.result import (
    InterventionResult,
    null_comparison,
    side_effects,
    summarise,
)
from interplab.models import LanguageModel, edit_hooks
from interplab.progress import counted
from interplab.threads import pace

DIRECTIONS = ("denoise", "noise")
MODES = ("per-position", "whole")


@dataclass(frozen=True)
class Node:
    """A hook and the token offsets patched together (negative offsets count from the end); for
    a per-head hook (``attn.hook_z``) optionally one ``head``, features
    ``head * head_width : (head + 1) * head_width``."""

    hook: str
    offsets: tuple[int, ...]
    head: int | None = None
    head_width: int = 0

    @property
    def label(self) -> dict[str, Any]:
        out: dict[str, Any] = {"hook": self.hook, "positions": list(self.offsets)}
        if self.head is not None:
            out["head"] = self.head
        return out

    @property
    def features(self) -> slice:
        """The features of the activation this node patches."""
        if self.head is None:
            return slice(None)
        return slice(self.head * self.head_width, (self.head + 1) * self.head_width)


@dataclass
class PairSet:
    """Encoded pairs: ``receiver`` is run and edited, ``donor`` supplies activations."""

    receiver: Prompts
    donor: Prompts
    length: np.ndarray  # [n] tokens per pair (equal within a pair)


def encode_pairs(lm: LanguageModel, clean: Sequence[str] | Prompts,
                 corrupted: Sequence[str] | Prompts, *, direction: str = "denoise",
                 prefix: str | None = None) -> PairSet:
    if direction not in DIRECTIONS:
        raise InterplabError(f"direction must be one of {DIRECTIONS} (denoise: clean activations "
                             f"into the corrupted run), not {direction!r}")
    c, x = as_prompts(lm, clean, prefix), as_prompts(lm, corrupted, prefix)
    if len(c) != len(x):
        raise InterplabError(f"{len(c)} clean prompts but {len(x)} corrupted ones; give pairs")
    bad = np.flatnonzero(c.lengths != x.lengths)
    if len(bad):
        raise InterplabError(
            f"pair {bad[0]} has {c.lengths[bad[0]]} clean and {x.lengths[bad[0]]} corrupted "
            f"tokens ({len(bad)} such pairs); patching aligns tokens, so use pairs of equal "
            "token length (e.g. swap a word for one of the same token count)")
    return PairSet(x, c, c.lengths) if direction == "denoise" else PairSet(c, x, c.lengths)


def all_positions_length(positions: str, lengths: np.ndarray) -> int:
    """The one token length of prompts whose ``positions`` are ``"all"`` (``lengths``: each
    prompt's), or a clear error for another word or for prompts of several lengths."""
    if positions != "all":
        raise InterplabError("positions must be 'all' or a list of token offsets such as "
                             "[-3, -2, -1] (negative: from the end of each prompt)")
    if len(set(lengths.tolist())) != 1:
        raise InterplabError("positions='all' needs prompts of one token length; give "
                             "offsets from the end instead, e.g. positions=[-4,-3,-2,-1]")
    return int(lengths[0])


def sweep_nodes(hooks: Sequence[str], positions: str | Sequence[int], mode: str,
                lengths: np.ndarray, heads: dict[str, tuple[int, int]] | None = None
                ) -> list[Node]:
    """Nodes of a sweep: each hook × each offset, or each hook with all offsets together; a hook
    in ``heads`` (hook → (n_heads, head width)) is split into one node per head as well."""
    if mode not in MODES:
        raise InterplabError(f"mode must be one of {MODES}, not {mode!r}")
    if isinstance(positions, str):
        offsets: tuple[int, ...] = tuple(range(all_positions_length(positions, lengths)))
    else:
        offsets = tuple(int(o) for o in positions)
        short = [o for o in offsets if not -int(lengths.min()) <= o < int(lengths.min())]
        if not offsets or short:
            raise InterplabError(f"token offsets {short or '[]'} fall outside the shortest "
                                 f"prompt ({int(lengths.min())} tokens)")
    groups = [offsets] if mode == "whole" else [(o,) for o in offsets]
    heads = heads or {}
    return [Node(h, g, head, heads[h][1]) if h in heads else Node(h, g)
            for h in hooks for g in groups
            for head in (range(heads[h][0]) if h in heads else [None])]


def head_split(lm: LanguageModel, hooks: Sequence[str], per_head: bool
               ) -> dict[str, tuple[int, int]]:
    """(n_heads, head width) of each per-head hook in ``hooks`` when ``per_head`` is set."""
    if not per_head:
        return {}
    width = lm.d_model // lm.n_heads  # o_proj's input is n_heads * d_head wide
    cfg = lm.hf.config
    width = int(getattr(cfg, "head_dim", None) or width)
    return {h: (lm.n_heads, width) for h in hooks if lm.parse_hook(h).per_head}


class _PatchEdits:
    """Edit factory: row r of a batch patches node ``job_node[r]`` of its pair (or, for a null
    draw ``job_null[r] >= 0``, adds a random direction with the norm of that patch's change)."""

    def __init__(self, nodes: list[Node], donor: dict[str, torch.Tensor], job_node: np.ndarray,
                 job_null: np.ndarray, null_dirs: torch.Tensor | None, proof: engine.Proof,
                 length: np.ndarray) -> None:
        self.nodes, self.donor, self.job_node, self.job_null = nodes, donor, job_node, job_null
        self.null_dirs, self.proof, self.length = null_dirs, proof, length

    def __call__(self, batch: Batch, sl: slice) -> dict:
        per_hook: dict[str, tuple[list, ...]] = {}
        for r, (ex, j, k) in enumerate(zip(batch.example, self.job_node[sl], self.job_null[sl],
                                           strict=True)):
            node = self.nodes[j]
            rows, cols, exs, pos, null, feats = per_hook.setdefault(node.hook, tuple(
                [] for _ in range(6)))
            n_tok = int(self.length[ex])
            for o in node.offsets:
                p = o if o >= 0 else n_tok + o
                rows.append(r)
                cols.append(int(batch.start[r]) + p)
                exs.append(int(ex))
                pos.append(p)
                null.append(int(k))
                feats.append(node.features)
        return {h: self._fn(h, *map(torch.as_tensor, v[:5]), v[5]) for h, v in per_hook.items()}

    def _fn(self, hook: str, rows: torch.Tensor, cols: torch.Tensor, exs: torch.Tensor,
            pos: torch.Tensor, null: torch.Tensor, feats: list[slice]):  # noqa: ANN202
        def fn(act: torch.Tensor) -> torch.Tensor:
            act = act.clone()
            old = act[rows, cols]
            keep = torch.ones_like(old, dtype=torch.bool)  # [k, d]: the features patched
            for e, f in enumerate(feats):
                if f != slice(None):
                    keep[e] = False
                    keep[e, f] = True
            new = torch.where(keep, self.donor[hook][exs, pos].to(act.device, act.dtype), old)
            if self.null_dirs is not None and bool((null >= 0).any()):
                is_null = null >= 0
                norm = (new - old).norm(dim=-1, keepdim=True)
                rand = self.null_dirs[null.clamp_min(0), :old.shape[-1]].to(act.device, act.dtype)
                rand = rand * keep
                rand = rand / rand.norm(dim=-1, keepdim=True) * norm + old
                new = torch.where(is_null[:, None].to(act.device), rand, new)
            act[rows, cols] = new
            self.proof.record(hook, new - old)
            return act

        return fn


def patch(lm: LanguageModel, clean: Sequence[str] | Prompts, corrupted: Sequence[str] | Prompts,
          hooks: Sequence[str], metric: engine.Metric, *, positions: str | Sequence[int] = "all",
          mode: str = "per-position", direction: str = "denoise", read: str = "last",
          prefix: str | None = None, per_head: bool = True, n_null: int = 20,
          null_nodes: int = 3, null_select: Sequence[int] | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
          n_boot: int = DEFAULT_N_BOOT, seed: int = 0) -> InterventionResult:
    """Patch every node (hook × position, or hook × all positions) of every pair.

    ``direction="denoise"`` runs the corrupted prompt with clean activations patched in;
    ``"noise"`` runs the clean prompt with corrupted ones. Effects ``[n, nodes]`` are
    metric(patched) − metric(receiver run); ``info["fraction_restored"]`` divides each node's mean
    effect by the mean (donor − receiver) metric gap. The null, for the ``null_nodes`` nodes of
    largest mean |effect|: ``n_null`` random directions, each scaled per token to the norm of
    that node's patch. Chosen and tested on the same pairs, the largest effects are biased
    upwards; ``null_select`` (pair indices) chooses the nodes on those pairs and tests each
    chosen node's mean effect, and its null, on the other pairs only (``null["selected_on"]``,
    ``null["tested_on"]``). Side effects: KL(receiver ‖ patched) at the read token per node.
    A per-head hook (``blocks.{i}.attn.hook_z``) gives one node per head (``per_head=False``:
    all heads together).
    """
    t0 = time.perf_counter()
    for h in hooks:
        lm.parse_hook(h)
    if not hooks:
        raise InterplabError("name at least one hook to patch, e.g. blocks.3.hook_resid_post")
    pairs = encode_pairs(lm, clean, corrupted, direction=direction, prefix=prefix)
    nodes = sweep_nodes(hooks, positions, mode, pairs.length, head_split(lm, hooks, per_head))
    rd = Positions.parse(read)
    donor = engine.capture(lm, pairs.donor, hooks, batch_size=batch_size)
    base, base_logp = engine.clean_run(lm, pairs.receiver, metric, read=rd, batch_size=batch_size)
    donor_m, _ = engine.clean_run(lm, pairs.donor, metric, read=rd, batch_size=batch_size)
    n = len(pairs.receiver)
    proof = engine.Proof(list(hooks))
    job_ex = np.repeat(np.arange(n), len(nodes))
    job_node = np.tile(np.arange(len(nodes)), n)
    out = _run_widened(lm, pairs, nodes, donor, job_ex, job_node, np.full(len(job_ex), -1),
                       None, proof, metric, rd, batch_size, reference_logp=base_logp)
    proof.check(f"patching ({direction})")
    effects = (out.metric - base[job_ex]).reshape(n, len(nodes))
    kl = out.kl.reshape(n, len(nodes))
    select, test = _null_halves(n, null_select)
    null = _patch_null(lm, pairs, nodes, donor, effects, base, metric, rd, n_null, null_nodes,
                       batch_size, seed, select, test) if n_null > 0 else None
    gap = float(np.mean(donor_m - base))
    info = {"direction": direction, "mode": mode, "nodes": [nd.label for nd in nodes],
            "n_pairs": n, "receiver_metric": base.tolist(), "donor_metric": donor_m.tolist(),
            "mean_gap": gap, "fraction_restored": (effects.mean(axis=0) / gap).tolist()
            if gap != 0 else None, "rows_run": int(len(job_ex)), "seconds":
            time.perf_counter() - t0, "seed": seed, "prefix_tokens": len(pairs.receiver.prefix_ids)}
    return InterventionResult(
        kind="patch", hooks=list(hooks), positions=str(list(positions) if not isinstance(
            positions, str) else positions), read=rd.spec, metric=metric_name(metric), doses=[],
        effects=effects.tolist(), summary=summarise(effects, None, n_boot=n_boot, seed=seed),
        null=null, side_effects=side_effects(kl, None, n_boot=n_boot, seed=seed, neutral={
            "note": "patching needs a donor run, which neutral text does not have; no ΔCE"}),
        proof=proof.to_dict(), baseline=base.tolist(), info=info)


def _run_widened(lm: LanguageModel, pairs: PairSet, nodes: list[Node],
                 donor: dict[str, torch.Tensor], job_ex: np.ndarray, job_node: np.ndarray,
                 job_null: np.ndarray, null_dirs: torch.Tensor | None, proof: engine.Proof,
                 metric: engine.Metric, rd: Positions, batch_size: int,
                 reference_logp: torch.Tensor | None = None) -> engine.Outputs:
    """Metric (and KL) of every job (a pair and a node patched in it, or a null draw).

    The jobs of one pair at one hook share everything below that hook, so the blocks below it
    run once, on the pair's own row; the hook then widens the row into one row per job (up to
    ``batch_size``), each patched at its node, and only the blocks above the hook run per job.
    """
    metric_out, kl_out = np.zeros(len(job_ex)), np.zeros(len(job_ex))
    groups: dict[tuple[int, str], list[int]] = {}
    for r, (i, j) in enumerate(zip(job_ex, job_node, strict=True)):
        groups.setdefault((int(i), nodes[j].hook), []).append(r)
    for (i, hook), rows in groups.items():
        hp = lm.parse_hook(hook)
        wide_from = hp.layer if hp.kind == "resid_pre" else hp.layer + 1
        one = make_batch(lm, pairs.receiver, np.array([i]))
        col = int(read_columns(pairs.receiver, one, rd)[0])
        for sl in counted(chunks(len(rows), batch_size)):
            pace()
            idx = np.asarray(rows[sl])
            k = len(idx)
            wide = dataclasses.replace(one, example=np.full(k, i), start=np.zeros(k, np.int64),
                                       length=np.full(k, one.length[0]))
            edit = _PatchEdits(nodes, donor, job_node[idx], job_null[idx], null_dirs, proof,
                               pairs.length)(wide, slice(None))[hook]
            with torch.inference_mode(), edit_hooks(
                    lm, {hook: lambda act, edit=edit, k=k: edit(act.expand(k, -1, -1))}):
                h = hidden(lm, pairs.receiver, one, widen=(wide_from, k))
                if h.shape[0] != k:  # the hook never ran (or the layout dropped the rows)
                    proof.check("patching")
                    raise InterplabError(f"{type(lm.hf).__name__} did not carry the {k} patched "
                                         f"rows from {hook} to its output; use batch_size=1")
                logits = lm.hf.get_output_embeddings()(h[:, col]).float()
            ex = torch.full((k,), i, device=logits.device)
            metric_out[idx] = metric(logits, ex).double().cpu().numpy()
            if reference_logp is not None:
                ref, logp = reference_logp[i], torch.log_softmax(logits, dim=-1)
                kl_out[idx] = (ref.exp() * (ref - logp)).sum(-1).double().cpu().numpy()
    return engine.Outputs(metric_out, kl_out if reference_logp is not None else None)


def _null_halves(n: int, select: Sequence[int] | None) -> tuple[np.ndarray, np.ndarray]:
    """(pairs the null's nodes are chosen on, pairs they are tested on): all pairs for both, or
    ``select`` and the rest."""
    if select is None:
        return np.arange(n), np.arange(n)
    chosen = np.unique(np.asarray(select, dtype=np.int64))
    if chosen.size == 0 or chosen.min() < 0 or chosen.max() >= n or chosen.size == n:
        raise InterplabError(f"null_select must name some but not all of the {n} pairs "
                             f"(indices 0–{n - 1}); got {list(select)}")
    return chosen, np.setdiff1d(np.arange(n), chosen)


def _patch_null(lm: LanguageModel, pairs: PairSet, nodes: list[Node],
                donor: dict[str, torch.Tensor], effects: np.ndarray, base: np.ndarray,
                metric: engine.Metric, rd: Positions, n_null: int, null_nodes: int,
                batch_size: int, seed: int, select: np.ndarray, test: np.ndarray
                ) -> dict[str, Any]:
    """Null for the nodes of largest mean |effect| on the ``select`` pairs, run on the ``test``
    pairs: random directions with each patch's norm."""
    top = np.argsort(-np.abs(effects[select].mean(axis=0)), kind="stable")[:max(null_nodes, 1)]
    # Drawn at the widest hook; a narrower hook takes the first features, renormalised.
    width = max(donor[nodes[j].hook].shape[-1] for j in top)
    unit = np.ones(width) / np.sqrt(width)
    dirs = torch.tensor(np.stack([random_direction_like(unit, seed=(seed, k))
                                  for k in range(n_null)]), dtype=torch.float32)
    n = len(test)
    job_ex = np.repeat(test, len(top) * n_null)
    job_node = np.tile(np.repeat(top, n_null), n)
    job_null = np.tile(np.arange(n_null), n * len(top))
    proof = engine.Proof(sorted({nodes[j].hook for j in top}))
    out = _run_widened(lm, pairs, nodes, donor, job_ex, job_node, job_null, dirs, proof, metric,
                       rd, batch_size)
    moved = (out.metric - base[job_ex]).reshape(n, len(top), n_null).mean(axis=0)  # [top, K]
    return {"method": "norm-matched random direction in place of each patch's change",
            "selected_on": select.tolist(), "tested_on": test.tolist(),
            "nodes": {str(int(j)): {**nodes[j].label, **null_comparison(
                float(effects[test, j].mean()), moved[t], 1.0)} for t, j in enumerate(top)}}
