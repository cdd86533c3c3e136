"""Circuits of SAE latents: selection by threshold, faithfulness and completeness under mean
ablation, a same-size random-circuit control, and AtP-style edges between latents.

A circuit node is one latent of one hook (its attributions summed over the attributed token
positions and averaged over prompts, :meth:`LatentAttribution.node_scores`) or a hook's error
node. A circuit ``C`` keeps its nodes and *mean-ablates* every other one: at every hook, in
forward order, the input is split into latents and error (recomputed from the already edited
input, as the sparse feature circuits evaluation does), latents outside ``C`` are set to their
mean and the error, unless in ``C``, to its mean. Means are taken over the ordinary tokens of
reference texts (position 0 and massive-norm tokens left out); those tokens are also never
ablated. With ``m`` the metric averaged over held-out prompts:

* faithfulness ``F(C) = (m(C) − m(∅)) / (m(M) − m(∅))`` (1: the circuit alone does what the
  model does; ``M`` keeps every node, ``∅`` none);
* completeness, read as the faithfulness of the complement ``F(M \\ C)`` (0: nothing outside
  the circuit carries the behaviour).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from interplab.activations.harvest import _StopForward
from interplab.activations.positions import Positions
from interplab.circuits.attribute import (
    ERROR,
    LatentAttribution,
    NodeValues,
    ReferenceValues,
    _atp_batch,
    _delta,
    _gather,
    _positions,
    node_values,
    reference_values,
)
from interplab.circuits.splice import SaeSet
from interplab.defaults import DEFAULT_BATCH_SIZE, DEFAULT_N_BOOT
from interplab.errors import InterplabError
from interplab.interventions import engine
from interplab.interventions.patch import encode_pairs
from interplab.interventions.prompts import Prompts, as_prompts, chunks, make_batch
from interplab.models import LanguageModel, edit_hooks


@dataclass
class Circuit:
    """``nodes[hook]``: the latents in the circuit (``-1`` is the hook's error node)."""

    nodes: dict[str, list[int]]
    threshold: float | None = None

    @property
    def size(self) -> int:
        return sum(len(v) for v in self.nodes.values())

    @property
    def n_latents(self) -> int:
        return sum(sum(1 for i in v if i != ERROR) for v in self.nodes.values())

    def mask(self, saes: SaeSet) -> dict[str, np.ndarray]:
        """Per hook a ``[d_sae + 1]`` bool mask (last entry: the error node)."""
        out = {}
        for h in saes.hooks:
            m = np.zeros(saes.width(h) + 1, dtype=bool)
            for i in self.nodes.get(h, []):
                m[saes.width(h) if i == ERROR else i] = True
            out[h] = m
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"nodes": {h: [("error" if i == ERROR else int(i)) for i in v]
                          for h, v in self.nodes.items()},
                "threshold": self.threshold, "size": self.size, "n_latents": self.n_latents}


def select(scores: dict[str, np.ndarray], threshold: float) -> Circuit:
    """The nodes whose |score| is at least ``threshold`` (``scores[hook]`` is ``[d_sae + 1]``,
    the last entry the error node)."""
    nodes = {}
    for h, s in scores.items():
        width = len(s) - 1
        idx = np.flatnonzero(np.abs(s) >= threshold)
        nodes[h] = [ERROR if i == width else int(i) for i in idx]
    return Circuit(nodes, float(threshold))


def thresholds_for_sizes(scores: dict[str, np.ndarray], sizes: Sequence[int]) -> list[float]:
    """Thresholds that keep the ``N`` nodes with the largest |score| (ties may keep more), for
    each ``N`` in ``sizes`` that does not exceed the number of non-zero scores."""
    flat = np.sort(np.abs(np.concatenate(list(scores.values()))))[::-1]
    live = int((flat > 0).sum())
    return [float(flat[n - 1]) for n in sizes if 1 <= n <= live]


# ----------------------------------------------------------------------------- ablation
class _AblationEdits:
    """Row r of a batch runs variant ``job_variant[r]``: ``keep[variant][hook]`` ``[d_sae + 1]``
    says which nodes keep their value; the others are set to the reference ``means``."""

    def __init__(self, saes: SaeSet, keep: list[dict[str, np.ndarray]], job_variant: np.ndarray,
                 means: ReferenceValues, lengths: np.ndarray) -> None:
        self.saes, self.keep, self.job_variant, self.means = saes, keep, job_variant, means
        self.lengths = lengths

    def __call__(self, batch: Any, sl: slice) -> dict:
        variants = self.job_variant[sl]
        return {h: self._fn(h, variants, batch) for h in self.saes.hooks}

    def _fn(self, h: str, variants: np.ndarray, batch: Any):  # noqa: ANN202
        width = self.saes.width(h)
        mask = torch.as_tensor(np.stack([self.keep[v][h] for v in variants]))  # [b, width + 1]
        lengths = torch.as_tensor(batch.length)
        start = torch.as_tensor(batch.start)

        def fn(act: torch.Tensor) -> torch.Tensor:
            x = act.float()
            f, err = self.saes.split(h, x)
            m = mask.to(x.device)
            f = torch.where(m[:, None, :width], f, self.means.f[h].to(x.device))
            err = torch.where(m[:, None, width:], err, self.means.err[h].to(x.device))
            tok = self.saes.keep_mask(x, lengths, start)[..., None]
            return torch.where(tok, self.saes.decode(h, f) + err, x).to(act.dtype)
        return fn


def ablated_metrics(lm: LanguageModel, saes: SaeSet, prompts: Prompts, metric: engine.Metric,
                    variants: list[dict[str, np.ndarray]], means: ReferenceValues, *,
                    read: str = "last", batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
    """``[len(variants), n]``: the metric of every prompt with every node outside each variant's
    keep mask mean-ablated (see the module docstring)."""
    n = len(prompts)
    job_variant = np.repeat(np.arange(len(variants)), n)
    job_ex = np.tile(np.arange(n), len(variants))
    edits = _AblationEdits(saes, variants, job_variant, means, prompts.lengths)
    out = engine.run_jobs(lm, prompts, job_ex, edits, metric, read=Positions.parse(read),
                          batch_size=batch_size)
    return out.metric.reshape(len(variants), n)


def alive_latents(values: NodeValues, saes: SaeSet) -> dict[str, np.ndarray]:
    """Latents that fire on at least one ordinary token of the prompts behind ``values``."""
    return {h: np.flatnonzero(((values.f[h] > 0) & values.keep[h][..., None]).any(dim=(0, 1))
                              .numpy()) for h in saes.hooks}


def random_circuit(circuit: Circuit, alive: dict[str, np.ndarray], rng: np.random.Generator
                   ) -> Circuit:
    """As many latents per hook as ``circuit`` has there, drawn from the ``alive`` ones (uniform,
    without replacement), and the same error nodes."""
    nodes = {}
    for h, v in circuit.nodes.items():
        k = sum(1 for i in v if i != ERROR)
        pool = alive.get(h, np.zeros(0, dtype=np.int64))
        drawn = rng.choice(pool, size=min(k, len(pool)), replace=False).tolist() if k else []
        nodes[h] = sorted(int(i) for i in drawn) + [i for i in v if i == ERROR]
    return Circuit(nodes, None)


@dataclass
class FaithfulnessCurve:
    """Per circuit size: its threshold, faithfulness and completeness with 95 % bootstrap
    intervals over held-out prompts, and the random circuits of the same size."""

    sizes: list[int]
    n_latents: list[int]
    thresholds: list[float]
    faithfulness: dict[str, list[float]]  # value, lo, hi
    completeness: dict[str, list[float]]
    random: dict[str, list[Any]]  # mean, lo, hi (of the mean over draws), draws
    m_full: float
    m_empty: float
    gap: dict[str, float]
    n_prompts: int
    circuits: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def _ratio(num: np.ndarray, den: np.ndarray, idx: np.ndarray) -> tuple[float, float, float]:
    """mean(num)/mean(den) and its percentile interval over the resamples ``idx [B, n]``."""
    value = float(num.mean() / den.mean()) if den.mean() != 0 else float("nan")
    dmean = den[idx].mean(axis=1)
    boots = np.where(dmean != 0, num[idx].mean(axis=1) / np.where(dmean == 0, 1, dmean), np.nan)
    lo, hi = np.nanquantile(boots, [0.025, 0.975]) if np.isfinite(boots).any() else (np.nan,) * 2
    return value, float(lo), float(hi)


def faithfulness_curve(lm: LanguageModel, saes: SaeSet, scores: dict[str, np.ndarray],
                       prompts: Sequence[str] | Prompts, metric: engine.Metric,
                       means: ReferenceValues, alive: dict[str, np.ndarray], *,
                       sizes: Sequence[int] = (1, 2, 4, 8, 16, 32, 64, 128, 256),
                       n_random: int = 5, read: str = "last", n_boot: int = DEFAULT_N_BOOT, seed: int = 0,
                       batch_size: int = DEFAULT_BATCH_SIZE) -> FaithfulnessCurve:
    """Faithfulness and completeness of the circuits of the largest-|score| nodes, one per size
    in ``sizes`` (thresholds from :func:`thresholds_for_sizes`), on held-out ``prompts``, with
    ``n_random`` random circuits of the same size per point (:func:`random_circuit`)."""
    prompts = as_prompts(lm, prompts)
    thresholds = thresholds_for_sizes(scores, sizes)
    if not thresholds:
        raise InterplabError("every node's attribution is zero; no circuit can be selected")
    rng = np.random.default_rng(seed)
    circuits = [select(scores, t) for t in thresholds]
    full = {h: np.ones(saes.width(h) + 1, dtype=bool) for h in saes.hooks}
    empty = {h: np.zeros(saes.width(h) + 1, dtype=bool) for h in saes.hooks}
    variants = [full, empty]
    for c in circuits:
        m = c.mask(saes)
        variants += [m, {h: ~v for h, v in m.items()}]
        variants += [random_circuit(c, alive, rng).mask(saes) for _ in range(n_random)]
    ms = ablated_metrics(lm, saes, prompts, metric, variants, means, read=read,
                         batch_size=batch_size)
    m_full, m_empty = ms[0], ms[1]
    n = len(prompts)
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    den = m_full - m_empty
    faith: dict[str, list[float]] = {"value": [], "lo": [], "hi": []}
    comp: dict[str, list[float]] = {"value": [], "lo": [], "hi": []}
    rand: dict[str, list[Any]] = {"mean": [], "lo": [], "hi": [], "draws": []}
    step = 2 + n_random
    for j in range(len(circuits)):
        base = 2 + j * step
        for out, row in ((faith, ms[base]), (comp, ms[base + 1])):
            v, lo, hi = _ratio(row - m_empty, den, idx)
            out["value"].append(v)
            out["lo"].append(lo)
            out["hi"].append(hi)
        draws = [_ratio(ms[base + 2 + r] - m_empty, den, idx)[0] for r in range(n_random)]
        pooled = ms[base + 2: base + 2 + n_random].mean(axis=0)
        v, lo, hi = _ratio(pooled - m_empty, den, idx)
        rand["mean"].append(v)
        rand["lo"].append(lo)
        rand["hi"].append(hi)
        rand["draws"].append(draws)
    gap = _ratio(den, np.ones(n), idx)
    return FaithfulnessCurve(
        sizes=[c.size for c in circuits], n_latents=[c.n_latents for c in circuits],
        thresholds=thresholds, faithfulness=faith, completeness=comp, random=rand,
        m_full=float(m_full.mean()), m_empty=float(m_empty.mean()),
        gap={"mean": gap[0], "lo": gap[1], "hi": gap[2]}, n_prompts=n,
        circuits=[c.to_dict() for c in circuits])


# ----------------------------------------------------------------------------- edges
@dataclass
class Edges:
    """AtP-style edge weights between the circuit's nodes of consecutive hooks:
    ``weights[(up_hook, down_hook)]`` is ``[len(up nodes), len(down nodes)]`` (mean over
    prompts), rows and columns in ``nodes[hook]`` order; ``to_metric`` are the last hook's node
    effects."""

    nodes: dict[str, list[int]]
    weights: dict[tuple[str, str], np.ndarray]
    to_metric: np.ndarray

    def to_dict(self, threshold: float = 0.0) -> dict[str, Any]:
        def name(i: int) -> Any:
            return "error" if i == ERROR else int(i)

        out = []
        for (u, d), w in self.weights.items():
            for a, i in enumerate(self.nodes[u]):
                for b, j in enumerate(self.nodes[d]):
                    if abs(w[a, b]) >= threshold and w[a, b] != 0:
                        out.append({"from": [u, name(i)], "to": [d, name(j)],
                                    "weight": float(w[a, b])})
        last = list(self.nodes)[-1]
        for a, i in enumerate(self.nodes[last]):
            if abs(self.to_metric[a]) >= threshold:
                out.append({"from": [last, name(i)], "to": ["metric", None],
                            "weight": float(self.to_metric[a])})
        return {"nodes": {h: [name(i) for i in v] for h, v in self.nodes.items()},
                "edges": out, "threshold": threshold}


def edges(lm: LanguageModel, saes: SaeSet, circuit: Circuit, clean: Sequence[str] | Prompts,
          corrupted: Sequence[str] | Prompts | None, metric: engine.Metric,
          offsets: Sequence[int], scores: dict[str, np.ndarray], *, direction: str = "noise",
          ablation: str = "mean", reference: Sequence[str] | None = None, read: str = "last",
          batch_size: int = DEFAULT_BATCH_SIZE) -> Edges:
    """Edge ``u → d`` between nodes of consecutive hooks: ``Σ ∇_d m · ∂d/∂u · Δu`` over the
    attributed positions, averaged over prompts (sparse feature circuits' linear edge weight):
    the metric's gradient at the downstream node (the error nodes held fixed), times the
    downstream node's derivative through the blocks in between and the downstream encoder, times
    the upstream node's change. One backward pass per downstream node and batch."""
    rd = Positions.parse(read)
    if corrupted is not None:
        pairs = encode_pairs(lm, clean, corrupted, direction=direction)
        receiver: Prompts = pairs.receiver
        donor: Any = node_values(lm, saes, pairs.donor, batch_size)
    else:
        receiver = as_prompts(lm, clean)
        donor = reference_values(lm, saes, reference, ablation, batch_size)
    pos = _positions(list(offsets), receiver.lengths, saes)
    hooks = [h for h in saes.hooks if circuit.nodes.get(h)]
    nodes = {h: list(circuit.nodes[h]) for h in hooks}
    weights = {(u, d): np.zeros((len(nodes[u]), len(nodes[d])))
               for u, d in zip(hooks[:-1], hooks[1:], strict=True)}
    n = len(receiver)
    for sl in chunks(n, batch_size):
        rows = np.arange(sl.start, sl.stop)
        local = np.arange(len(rows))
        grads = _atp_batch(lm, saes, receiver, rows, metric, rd, "recompute")
        for u, d in weights:
            weights[(u, d)] += _edge_batch(lm, saes, receiver, rows, local, pos, donor, grads,
                                           u, d, nodes[u], nodes[d])
    last = hooks[-1]
    width = saes.width(last)
    to_metric = np.array([scores[last][width if i == ERROR else i] for i in nodes[last]])
    return Edges(nodes, {k: v / n for k, v in weights.items()}, to_metric)


def _edge_batch(lm: LanguageModel, saes: SaeSet, prompts: Prompts, rows: np.ndarray,
                local: np.ndarray, pos: np.ndarray, donor: Any, grads: dict, u: str, d: str,
                up_nodes: list[int], down_nodes: list[int]) -> np.ndarray:
    f_u, e_u = grads[u][0], grads[u][1]
    batch = make_batch(lm, prompts, rows)
    seen: dict[str, torch.Tensor] = {}

    def upstream(act: torch.Tensor) -> torch.Tensor:
        x = act.float()
        F = f_u.to(x.device).clone().requires_grad_(True)
        E = e_u.to(x.device).clone().requires_grad_(True)
        seen["F"], seen["E"] = F, E
        y = saes.decode(u, F)
        return (x + (y - y.detach()) + (E - E.detach())).to(act.dtype)

    def downstream(act: torch.Tensor) -> None:
        x = act.float()
        f = saes.encode(d, x)
        seen["f"], seen["e"] = f, x - saes.decode(d, f)
        raise _StopForward

    from interplab.interventions.prompts import hidden

    with torch.enable_grad(), engine.activation_grads_only(lm), \
            edit_hooks(lm, {u: upstream, d: downstream}), contextlib.suppress(_StopForward):
        hidden(lm, prompts, batch)
    p = pos[rows]
    up_f = [i for i in up_nodes if i != ERROR]
    df, de = _delta(donor, u, rows, p, _gather(f_u, local, p), _gather(e_u, local, p))
    g_f, g_e = grads[d][2], grads[d][3]
    out = np.zeros((len(up_nodes), len(down_nodes)))
    with torch.enable_grad():
        for b, j in enumerate(down_nodes):
            if j == ERROR:
                target = (_gather(seen["e"], local, p) * _gather(g_e, local, p)).sum()
            else:
                target = (_gather(seen["f"][..., j], local, p)
                          * _gather(g_f[..., j], local, p)).sum()
            if not target.requires_grad:
                continue
            gF, gE = torch.autograd.grad(target, [seen["F"], seen["E"]], retain_graph=True,
                                         allow_unused=True)
            gF = torch.zeros_like(seen["F"]) if gF is None else gF
            gE = torch.zeros_like(seen["E"]) if gE is None else gE
            via_f = (df[..., up_f] * _gather(gF.detach().cpu(), local, p)[..., up_f]).sum((0, 1))
            via_e = float((de * _gather(gE.detach().cpu(), local, p)).sum())
            col = dict(zip(up_f, via_f.tolist(), strict=True))
            out[:, b] = [via_e if i == ERROR else col[i] for i in up_nodes]
    return out


def top_nodes(attribution: LatentAttribution, circuit: Circuit, method: str = "atp",
              k: int = 10) -> list[dict[str, Any]]:
    """The circuit's latents (error nodes aside) with the largest |score|, largest first."""
    scores = attribution.node_scores(method)
    rows = [(h, i, float(scores[h][i])) for h, v in circuit.nodes.items() for i in v
            if i != ERROR]
    rows.sort(key=lambda r: -abs(r[2]))
    return [{"hook": h, "latent": i, "score": s} for h, i, s in rows[:k]]
