"""Attribution of a metric to every SAE latent × token position and every error node.

With SAEs spliced in at some hooks (:mod:`interplab.circuits.splice`), a *node* is one latent
of one hook at one token position, or the hook's error node at that position. For pairs of
prompts of equal token length, each method estimates the effect on the metric of setting a node
of the *receiver* run to its value in the *donor* run (``direction="noise"``, the sparse feature
circuits convention: the corrupted prompt's values patched into the clean run;
``"denoise"``: clean values into the corrupted run, as :func:`interplab.interventions.attribute`),
or, without pairs, to a reference value (``ablation="mean"`` over ordinary tokens of reference
texts, or ``"zero"``):

* attribution patching (AtP): ``Δ · ∂metric/∂node`` at the receiver run, every node of every
  hook from one forward and one backward pass (plus one pass of the donor prompts up to the last
  spliced hook);
* integrated gradients (IG, ``k`` steps): the gradient averaged over ``k`` midpoints of the
  straight line from the receiver's to the donor's values, every latent and the error node of one
  hook at every attributed position moved together (as sparse feature circuits does); the
  blocks below the hook run once per example, those above it ``k`` times;
* exact patching of a seeded sample of nodes (the ground truth): per node and example one
  forward pass with that node alone set to its donor value.

What an edit does to the hooks after it follows the splice's ``errors`` convention
(``recompute``: the spliced model is the model; ``frozen``: downstream error nodes keep their
receiver values, so downstream SAE encoders — and their jumps — lie on the path). All three
methods use the same convention. Backward passes compute activation gradients only.

Agreement with exact patching (Spearman rank correlation, top-k overlap, and the relative error
on the top-k nodes by exact effect) is computed on the mean effects over prompts, with percentile
bootstrap intervals over prompts.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from interplab.activations.positions import Positions
from interplab.circuits.splice import ERRORS, SaeSet
from interplab.defaults import DEFAULT_BATCH_SIZE, DEFAULT_N_BOOT
from interplab.errors import InterplabError
from interplab.interventions import engine
from interplab.interventions.attribute import widened_gradients
from interplab.interventions.metrics import metric_name
from interplab.interventions.patch import all_positions_length, encode_pairs
from interplab.interventions.prompts import (
    Prompts,
    as_prompts,
    chunks,
    make_batch,
    read_logits,
)
from interplab.models import LanguageModel, edit_hooks
from interplab.models.hooks import ActFn

METHODS = ("atp", "ig")
DIRECTIONS = ("noise", "denoise")
ABLATIONS = ("mean", "zero")
IG_SCOPES = ("hook", "node")
ERROR = -1  # the latent index that stands for a hook's error node


@dataclass
class NodeValues:
    """Latents ``f [n, W, d_sae]`` and error nodes ``err [n, W, d]`` of every prompt at every
    spliced hook (``W`` the longest prompt; zero past a prompt's end), and the ordinary-token
    mask ``keep [n, W]``."""

    f: dict[str, torch.Tensor]
    err: dict[str, torch.Tensor]
    keep: dict[str, torch.Tensor]


@torch.no_grad()
def node_values(lm: LanguageModel, saes: SaeSet, prompts: Prompts, batch_size: int
                ) -> NodeValues:
    """One forward pass of ``prompts`` up to the last spliced hook, split into latents and errors."""
    acts = engine.capture(lm, prompts, saes.hooks, batch_size=batch_size)
    lengths = torch.as_tensor(prompts.lengths)
    f, err, keep = {}, {}, {}
    for h in saes.hooks:
        x = acts[h]
        f[h], err[h] = saes.split(h, x)
        keep[h] = saes.keep_mask(x, lengths)
    return NodeValues(f, err, keep)


@dataclass
class ReferenceValues:
    """Per hook the latents' and the error's reference vectors (``[d_sae]``, ``[d]``) that an
    ablation sets a node to, and what they were computed on."""

    f: dict[str, torch.Tensor]
    err: dict[str, torch.Tensor]
    info: dict[str, Any] = field(default_factory=dict)


@torch.no_grad()
def reference_values(lm: LanguageModel, saes: SaeSet, texts: Sequence[str] | None, kind: str,
                     batch_size: int = DEFAULT_BATCH_SIZE) -> ReferenceValues:
    """Mean latents and mean error over the ordinary tokens of ``texts`` (the splice's exclusion
    rule leaves out position 0 and massive-norm tokens), or zeros (``kind="zero"``)."""
    if kind not in ABLATIONS:
        raise InterplabError(f"ablation must be one of {ABLATIONS}, not {kind!r}")
    if kind == "zero":
        return ReferenceValues({h: torch.zeros(saes.width(h)) for h in saes.hooks},
                               {h: torch.zeros(lm.d_model) for h in saes.hooks},
                               {"kind": "zero"})
    if not texts:
        raise InterplabError("mean ablation needs reference texts to take the mean over")
    prompts = as_prompts(lm, list(texts))
    vals = node_values(lm, saes, prompts, batch_size)
    out_f, out_e, rows, left = {}, {}, {}, {}
    for h in saes.hooks:
        k = vals.keep[h]
        if not bool(k.any()):
            raise InterplabError(f"every reference token at {h} was left out "
                                 f"({saes.exclusion.describe()}); give longer reference texts")
        out_f[h] = vals.f[h][k].mean(0)
        out_e[h] = vals.err[h][k].mean(0)
        real = int(prompts.lengths.sum())
        rows[h], left[h] = int(k.sum()), real - int(k.sum())
    return ReferenceValues(out_f, out_e, {"kind": "mean", "texts": len(prompts), "rows": rows,
                                          "left_out": left,
                                          "exclusion": saes.exclusion.describe()})


@dataclass
class LatentAttribution:
    """Estimates of every method for every node, exact patching on a sample, and agreement.

    ``estimates[method][hook]`` is ``[n, P, d_sae + 1]`` (per prompt, attributed position and
    latent; the last column is the error node); positions are ``offsets`` from each prompt's end.
    ``exact_nodes`` lists the sampled nodes as ``(hook, latent or -1 for the error, offset
    index)``, ``exact`` is ``[n, len(exact_nodes)]`` and ``sampled[method]`` the method's
    estimates of the same nodes (with ``ig_scope="node"``, IG exists only there). ``agreement[method]`` holds Spearman,
    top-k overlap and the relative error on the top-k nodes, each with a bootstrap interval over
    prompts; ``cost`` is in forward-pass equivalents (wall time over one plain forward pass of the
    receiver prompts).
    """

    hooks: list[str]
    widths: dict[str, int]
    offsets: list[int]
    metric: str
    direction: str
    errors: str
    estimates: dict[str, dict[str, np.ndarray]]
    exact_nodes: list[tuple[str, int, int]]
    exact: np.ndarray
    sampled: dict[str, np.ndarray]
    agreement: dict[str, dict[str, Any]]
    cost: dict[str, float]
    receiver_metric: np.ndarray
    donor_metric: np.ndarray | None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(len(self.receiver_metric))

    def node_scores(self, method: str = "atp") -> dict[str, np.ndarray]:
        """Per hook ``[d_sae + 1]``: each latent's (and the error node's) effect summed over the
        attributed positions and averaged over prompts — the node of a circuit."""
        return {h: e.sum(axis=1).mean(axis=0) for h, e in self.estimates[method].items()}

    def sampled_estimates(self, method: str) -> np.ndarray:
        """``[n, len(exact_nodes)]``: the method's estimate of each exactly patched node."""
        return self.sampled[method]

    def summary(self, top: int = 20) -> dict[str, Any]:
        """A JSON-serialisable digest: agreement, cost, the exactly patched nodes with every
        method's mean estimate (and, under ``per_prompt``, every prompt's ``[n][nodes]``), and
        the ``top`` nodes of each hook by |AtP| (or the first method)."""
        tops: dict[str, list[dict[str, Any]]] = {}
        if self.estimates:
            method = "atp" if "atp" in self.estimates else next(iter(self.estimates))
            all_scores = {m: self.node_scores(m) for m in self.estimates}
            for h, s in all_scores[method].items():
                order = np.argsort(-np.abs(s), kind="stable")[:top]
                tops[h] = [{"latent": _node_name(int(i), self.widths[h]),
                            **{m: float(v[h][i]) for m, v in all_scores.items()}}
                           for i in order]
        exact_mean = self.exact.mean(axis=0) if self.exact.size else np.zeros(0)
        sampled = [{"hook": h, "latent": _node_name(i, self.widths[h]),
                    "offset": self.offsets[p], "exact": float(exact_mean[j]),
                    **{m: float(v[:, j].mean()) for m, v in self.sampled.items()}}
                   for j, (h, i, p) in enumerate(self.exact_nodes)]
        return {"hooks": self.hooks, "widths": self.widths, "offsets": self.offsets,
                "metric": self.metric, "direction": self.direction, "errors": self.errors,
                "n_prompts": self.n, "agreement": self.agreement, "cost": self.cost,
                "top_nodes": tops, "sampled": sampled, "info": self.info,
                "per_prompt": {"exact": self.exact.tolist(),
                               **{m: v.tolist() for m, v in self.sampled.items()}},
                "receiver_metric": self.receiver_metric.tolist(),
                "donor_metric": (self.donor_metric.tolist() if self.donor_metric is not None
                                 else None)}


def _node_name(i: int, width: int) -> int | str:
    return "error" if i in (ERROR, width) else int(i)


# ----------------------------------------------------------------------------- positions
def _positions(offsets: Sequence[int], lengths: np.ndarray, saes: SaeSet) -> np.ndarray:
    """``[n, P]`` token index of each offset in each prompt, checked against the exclusion."""
    pos = np.array([[o % int(L) for o in offsets] for L in lengths], dtype=np.int64)
    bad = [o for o in offsets if not -int(lengths.min()) <= o < int(lengths.min())]
    if bad:
        raise InterplabError(f"token offsets {bad} fall outside the shortest prompt "
                             f"({int(lengths.min())} tokens)")
    if saes.exclusion.first_position and bool((pos == 0).any()):
        o = offsets[int(np.flatnonzero((pos == 0).any(axis=0))[0])]
        raise InterplabError(f"offset {o} lands on token 0 of some prompt, which the SAEs leave "
                             "out (position 0); attribute later tokens (e.g. the last few)")
    return pos


def resolve_offsets(positions: str | Sequence[int], lengths: np.ndarray, saes: SaeSet
                    ) -> list[int]:
    """Offsets from the end: ``"all"`` (prompts of one length; every token but position 0 when
    the exclusion leaves it out) or an explicit list."""
    if isinstance(positions, str):
        L = all_positions_length(positions, lengths)
        first = 1 if saes.exclusion.first_position else 0
        return list(range(-L + first, 0))
    offsets = [int(o) for o in positions]
    if not offsets or len(set(offsets)) != len(offsets):
        raise InterplabError(f"give distinct token offsets, not {list(positions)}")
    return offsets


# ----------------------------------------------------------------------------- AtP
def _atp_batch(lm: LanguageModel, saes: SaeSet, prompts: Prompts, rows: np.ndarray,
               metric: engine.Metric, read: Positions, errors: str
               ) -> dict[str, tuple[torch.Tensor, ...]]:
    """For one batch: per hook ``(f, err, ∂m/∂f, ∂m/∂err)``, each ``[b, w, ·]`` on the CPU."""
    leaves: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    batch = make_batch(lm, prompts, rows)
    lengths = torch.as_tensor(batch.length)

    def edit(h: str):  # noqa: ANN202
        def fn(act: torch.Tensor) -> torch.Tensor:
            x = act.float()
            f = saes.encode(h, x)
            if errors == "recompute" or not f.requires_grad:
                f = f.detach().requires_grad_(True)
            y = saes.decode(h, f)
            e = (x - y).detach().requires_grad_(True)
            leaves[h] = (f, e)
            if errors == "recompute":
                # value x; d/dx = identity; d/df and d/de are the partial derivatives
                out = x + (y - y.detach()) + (e - e.detach())
            else:
                keep = saes.keep_mask(x, lengths)[..., None]
                out = torch.where(keep, y + e, x)
            return out.to(act.dtype)
        return fn

    with torch.enable_grad(), engine.activation_grads_only(lm), \
            edit_hooks(lm, {h: edit(h) for h in saes.hooks}):
        logits = read_logits(lm, prompts, batch, read)
        value = metric(logits, torch.as_tensor(batch.example, device=logits.device)).sum()
        inputs = [t for h in saes.hooks for t in leaves[h]]
        grads = torch.autograd.grad(value, inputs, allow_unused=True)
    out = {}
    for j, h in enumerate(saes.hooks):
        f, e = leaves[h]
        gf, ge = grads[2 * j], grads[2 * j + 1]
        out[h] = (f.detach().cpu(), e.detach().cpu(),
                  (gf if gf is not None else torch.zeros_like(f)).detach().float().cpu(),
                  (ge if ge is not None else torch.zeros_like(e)).detach().float().cpu())
    return out


def _gather(t: torch.Tensor, rows: np.ndarray, pos: np.ndarray) -> torch.Tensor:
    """``t[rows[i], pos[i, j]]`` → ``[len(rows), P, ·]``."""
    r = torch.as_tensor(rows)[:, None].expand(pos.shape)
    return t[r, torch.as_tensor(pos)]


def _atp(lm: LanguageModel, saes: SaeSet, receiver: Prompts, donor: Any, pos: np.ndarray,
         metric: engine.Metric, read: Positions, errors: str, batch_size: int
         ) -> dict[str, np.ndarray]:
    n = len(receiver)
    est = {h: np.zeros((n, pos.shape[1], saes.width(h) + 1)) for h in saes.hooks}
    for sl in chunks(n, batch_size):
        rows = np.arange(sl.start, sl.stop)
        local = np.arange(len(rows))
        for h, (f, e, gf, ge) in _atp_batch(lm, saes, receiver, rows, metric, read,
                                            errors).items():
            f_r, e_r = _gather(f, local, pos[rows]), _gather(e, local, pos[rows])
            df, de = _delta(donor, h, rows, pos[rows], f_r, e_r)
            est[h][rows, :, :-1] = (df * _gather(gf, local, pos[rows])).numpy()
            est[h][rows, :, -1] = (de * _gather(ge, local, pos[rows])).sum(-1).numpy()
    return est


def _delta(donor: Any, h: str, rows: np.ndarray, pos: np.ndarray, f_r: torch.Tensor,
           e_r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Donor minus receiver latents ``[b, P, d_sae]`` and errors ``[b, P, d]``."""
    if isinstance(donor, ReferenceValues):
        return donor.f[h] - f_r, donor.err[h] - e_r
    return _gather(donor.f[h], rows, pos) - f_r, _gather(donor.err[h], rows, pos) - e_r


# ----------------------------------------------------------------------------- IG
def _ig(lm: LanguageModel, saes: SaeSet, receiver: Prompts, donor: Any, rec: NodeValues,
        pos: np.ndarray, metric: engine.Metric, read: Positions, errors: str, steps: int,
        batch_size: int, targets: list[str]) -> dict[str, np.ndarray]:
    n = len(receiver)
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps
    est = {h: np.zeros((n, pos.shape[1], saes.width(h) + 1)) for h in saes.hooks}
    for hi, hook in enumerate(saes.hooks):
        if hook not in targets:
            continue
        hp = lm.parse_hook(hook)
        wide_from = hp.layer if hp.kind == "resid_pre" else hp.layer + 1
        for i in range(n):
            p = pos[i]
            moved = sorted(set(p.tolist()))
            back = [moved.index(q) for q in p.tolist()]
            f_r, e_r = rec.f[hook][i, moved], rec.err[hook][i, moved]
            df, de = _delta(donor, hook, np.array([i]), np.array([moved]), f_r[None], e_r[None])
            df, de = df[0], de[0]
            gf_sum: torch.Tensor | float = 0.0
            ge_sum: torch.Tensor | float = 0.0
            for sl in chunks(steps, batch_size):
                gf, ge = _ig_pass(lm, saes, receiver, i, metric, read, hook, moved, f_r, e_r,
                                  df, de, alphas[sl], wide_from, errors,
                                  saes.hooks[hi + 1:], rec)
                gf_sum, ge_sum = gf_sum + gf, ge_sum + ge
            est[hook][i, :, :-1] = (df * gf_sum / steps)[back].numpy()
            est[hook][i, :, -1] = (de * ge_sum / steps).sum(-1)[back].numpy()
    return est


def _ig_pass(lm: LanguageModel, saes: SaeSet, prompts: Prompts, i: int, metric: engine.Metric,
             read: Positions, hook: str, pos: list[int], f_r: torch.Tensor, e_r: torch.Tensor,
             df: torch.Tensor, de: torch.Tensor, alphas: torch.Tensor, wide_from: int,
             errors: str, after: list[str], rec: NodeValues
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients ``[moved, d_sae]``, ``[moved, d]`` summed over the steps ``alphas`` of example
    ``i``, with every latent and the error of ``hook`` at ``pos`` moved to ``α`` of the way."""
    k = len(alphas)
    seen: dict[str, torch.Tensor] = {}
    a = alphas[:, None, None]

    def widen(act: torch.Tensor) -> torch.Tensor:  # [1, w, d] -> [k, w, d]
        F = (f_r[None] + a * df[None]).requires_grad_(True)  # [k, moved, d_sae]
        E = (e_r[None] + a * de[None]).requires_grad_(True)  # [k, moved, d]
        seen["F"], seen["E"] = F, E
        new = act.detach().float().expand(k, -1, -1).clone()
        new[:, pos] = saes.decode(hook, F) + E
        return new.to(act.dtype)

    gf, ge = widened_gradients(lm, prompts, i, metric, read,
                               _with_frozen(widen, saes, rec, hook, i, errors, after, lm.device),
                               hook, wide_from, k, lambda: [seen["F"], seen["E"]])
    return gf.sum(0).float().cpu(), ge.sum(0).float().cpu()


def _node_ig(lm: LanguageModel, saes: SaeSet, receiver: Prompts, donor: Any, rec: NodeValues,
             nodes: list[tuple[str, int, int]], pos: np.ndarray, metric: engine.Metric,
             read: Positions, errors: str, steps: int, batch_size: int) -> np.ndarray:
    """IG of each sampled node alone ``[n, len(nodes)]``: only that node moves along its line
    (``Δ`` times the mean of ``dm/dα`` over ``steps`` midpoints), the rest stays at the receiver's
    values. One pass per example, hook and group of up to ``batch_size`` (node, step) rows."""
    n = len(receiver)
    out = np.zeros((n, len(nodes)))
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps
    for hi, hook in enumerate(saes.hooks):
        cols = [j for j, nd in enumerate(nodes) if nd[0] == hook]
        if not cols:
            continue
        hp = lm.parse_hook(hook)
        wide_from = hp.layer if hp.kind == "resid_pre" else hp.layer + 1
        for i in range(n):
            jobs = [(j, s) for j in cols for s in range(steps)]
            at = {j: int(pos[i, nodes[j][2]]) for j in cols}
            delta = {j: _node_delta(saes, donor, rec, hook, nodes[j][1], i, at[j]) for j in cols}
            where = [at[j] for j, _ in jobs]
            deltas = [delta[j] for j, _ in jobs]
            total = torch.zeros(len(jobs))
            for sl in chunks(len(jobs), batch_size):
                a = alphas[[s for _, s in jobs[sl]]]
                total[sl] = _node_ig_pass(lm, saes, receiver, i, metric, read, hook,
                                          where[sl], torch.stack(deltas[sl]), a, wide_from,
                                          errors, saes.hooks[hi + 1:], rec)
            for c, j in enumerate(cols):
                out[i, j] = float(total[c * steps:(c + 1) * steps].mean())
    return out


def _node_delta(saes: SaeSet, donor: Any, rec: NodeValues, h: str, lat: int, i: int, p: int
                ) -> torch.Tensor:
    """The change ``[d]`` that setting node ``(h, lat)`` at token ``p`` of prompt ``i`` to its
    donor value makes to the hook's output."""
    df, de = _delta(donor, h, np.array([i]), np.array([[p]]), rec.f[h][i, p][None, None],
                    rec.err[h][i, p][None, None])
    if lat == ERROR:
        return de[0, 0]
    return df[0, 0, lat] * saes[h].W_dec[lat].detach().float().cpu()


def _node_ig_pass(lm: LanguageModel, saes: SaeSet, prompts: Prompts, i: int,
                  metric: engine.Metric, read: Positions, hook: str, where: list[int],
                  deltas: torch.Tensor, alphas: torch.Tensor, wide_from: int, errors: str,
                  after: list[str], rec: NodeValues) -> torch.Tensor:
    """``dm/dα`` ``[rows]``: row r adds ``α_r · deltas[r]`` at token ``where[r]`` of prompt ``i``."""
    k = len(alphas)
    seen: dict[str, torch.Tensor] = {}
    rows = torch.arange(k)

    def widen(act: torch.Tensor) -> torch.Tensor:  # [1, w, d] -> [k, w, d]
        a = alphas.clone().requires_grad_(True)
        seen["a"] = a
        new = act.detach().float().expand(k, -1, -1).clone()
        cols = torch.as_tensor(where)
        new[rows, cols] = new[rows, cols] + a[:, None] * deltas.to(new.device)
        return new.to(act.dtype)

    (grad,) = widened_gradients(lm, prompts, i, metric, read,
                                _with_frozen(widen, saes, rec, hook, i, errors, after, lm.device),
                                hook, wide_from, k, lambda: [seen["a"]])
    return grad.float().cpu()


def _with_frozen(widen: ActFn, saes: SaeSet, rec: NodeValues, hook: str, i: int, errors: str,
                 after: list[str], device: torch.device | str) -> dict[str, ActFn]:
    """The edits of an integrated-gradients pass: ``widen`` at ``hook`` and, with
    ``errors="frozen"``, each later hook's error node held at its recorded value."""
    edits = {hook: widen}
    if errors == "frozen":
        edits.update({h: _frozen_edit(saes, rec, h, i, device) for h in after})
    return edits


def _frozen_edit(saes: SaeSet, rec: NodeValues, h: str, i: int, device: torch.device):  # noqa: ANN202
    """Hook ``h`` spliced with prompt ``i``'s own error nodes held fixed (``frozen``)."""
    e_h = rec.err[h][i].to(device)
    keep = rec.keep[h][i].to(device)

    def fn(act: torch.Tensor) -> torch.Tensor:
        w = act.shape[1]
        x = act.float()
        out = torch.where(keep[None, :w, None], saes.decode(h, saes.encode(h, x)) + e_h[None, :w],
                          x)
        return out.to(act.dtype)
    return fn


# ----------------------------------------------------------------------------- exact
class _ExactEdits:
    """Row r patches node ``job_node[r]``: adds its donor − receiver change at its hook and
    position; with ``frozen`` errors, hooks after the patched one are spliced with the receiver's
    error nodes."""

    def __init__(self, saes: SaeSet, job_hook: np.ndarray, job_pos: np.ndarray,
                 job_delta: torch.Tensor, errors: str, rec: NodeValues,
                 proof: engine.Proof) -> None:
        self.saes, self.job_hook, self.job_pos, self.job_delta = saes, job_hook, job_pos, job_delta
        self.errors, self.rec, self.proof = errors, rec, proof

    def __call__(self, batch: Any, sl: slice) -> dict:
        edits = {}
        hooks_of_rows = self.job_hook[sl]
        for hi, h in enumerate(self.saes.hooks):
            here = np.flatnonzero(hooks_of_rows == hi)
            after = (np.flatnonzero(hooks_of_rows < hi) if self.errors == "frozen"
                     else np.zeros(0, dtype=np.int64))
            if len(here) or len(after):
                edits[h] = self._fn(h, batch, sl, here, after)
        return edits

    def _fn(self, h: str, batch: Any, sl: slice, here: np.ndarray, after: np.ndarray):  # noqa: ANN202
        cols = torch.as_tensor(self.job_pos[sl][here] + batch.start[here])
        delta = self.job_delta[sl][here]
        ex_after = torch.as_tensor(batch.example[after])

        def fn(act: torch.Tensor) -> torch.Tensor:
            new = act.clone()
            if len(after):
                r = torch.as_tensor(after)
                x = act[r].float()
                w = x.shape[1]
                spliced = (self.saes.decode(h, self.saes.encode(h, x))
                           + self.rec.err[h][ex_after, :w].to(x.device))
                keep = self.rec.keep[h][ex_after, :w].to(x.device)[..., None]
                new[r] = torch.where(keep, spliced, x).to(act.dtype)
            if len(here):
                r = torch.as_tensor(here)
                d = delta.to(act.device, act.dtype)
                new[r, cols] = new[r, cols] + d
                self.proof.record(h, d)
            return new
        return fn


def _exact(lm: LanguageModel, saes: SaeSet, receiver: Prompts, donor: Any, rec: NodeValues,
           nodes: list[tuple[str, int, int]], offsets_pos: np.ndarray, base: np.ndarray,
           metric: engine.Metric, read: Positions, errors: str, batch_size: int) -> np.ndarray:
    n, m = len(receiver), len(nodes)
    if m == 0:
        return np.zeros((n, 0))
    job_ex = np.repeat(np.arange(n), m)
    job_node = np.tile(np.arange(m), n)
    hook_index = {h: j for j, h in enumerate(saes.hooks)}
    job_hook = np.array([hook_index[nodes[j][0]] for j in job_node])
    job_pos = offsets_pos[job_ex, [nodes[j][2] for j in job_node]]
    deltas = [_node_delta(saes, donor, rec, nodes[j][0], nodes[j][1], int(ex),
                          int(offsets_pos[ex, nodes[j][2]]))
              for ex, j in zip(job_ex, job_node, strict=True)]
    proof = engine.Proof(sorted({h for h, _, _ in nodes}))
    edits = _ExactEdits(saes, job_hook, job_pos, torch.stack(deltas), errors, rec, proof)
    out = engine.run_jobs(lm, receiver, job_ex, edits, metric, read=read, batch_size=batch_size)
    proof.check("exact patching of sampled SAE nodes")
    return (out.metric - base[job_ex]).reshape(n, m)


def _sampled(est: dict[str, np.ndarray], nodes: list[tuple[str, int, int]], n: int
             ) -> np.ndarray:
    cols = [est[h][:, p, i] for h, i, p in nodes]
    return np.stack(cols, axis=1) if cols else np.zeros((n, 0))


def sample_nodes(estimates: dict[str, dict[str, np.ndarray]], hooks: list[str], n_exact: int,
                 seed: int) -> list[tuple[str, int, int]]:
    """Per hook up to ``n_exact`` nodes with a non-zero estimate: a third the largest by each
    method's mean |estimate|, the rest drawn at random (seeded) from the others."""
    rng = np.random.default_rng(seed)
    out = []
    for h in hooks:
        ests = [np.abs(e[h].mean(axis=0)) for e in estimates.values()]  # [P, d_sae + 1]
        width = ests[0].shape[1] - 1
        live = np.flatnonzero(np.max(ests, axis=0).reshape(-1) > 0)
        chosen: list[int] = []
        per = max(1, n_exact // (len(ests) + 1))
        for e in ests:
            flat = e.reshape(-1)
            order = [int(j) for j in np.argsort(-flat, kind="stable") if flat[j] > 0]
            chosen += [j for j in order if j not in chosen][:per]
        rest = np.setdiff1d(live, chosen)
        take = min(len(rest), max(0, n_exact - len(chosen)))
        chosen += rng.choice(rest, size=take, replace=False).tolist() if take else []
        for j in sorted(chosen)[:n_exact] if len(chosen) > n_exact else sorted(chosen):
            p, i = divmod(int(j), width + 1)
            out.append((h, ERROR if i == width else int(i), int(p)))
    return out


# ----------------------------------------------------------------------------- agreement
def agreement(estimate: np.ndarray, exact: np.ndarray, top_k: int) -> dict[str, Any]:
    """Spearman correlation, top-k overlap (by |mean effect|) and the relative error on the
    top-k nodes by |exact effect| (Σ|estimate − exact| / Σ|exact| over them) of two ``[nodes]``
    vectors."""
    from scipy.stats import spearmanr

    k = min(top_k, len(exact))
    rho = (float(spearmanr(estimate, exact).statistic)
           if len(exact) >= 3 and np.ptp(exact) > 0 and np.ptp(estimate) > 0 else None)
    top_e = np.argsort(-np.abs(exact), kind="stable")[:k]
    top_a = np.argsort(-np.abs(estimate), kind="stable")[:k]
    denom = float(np.abs(exact[top_e]).sum())
    return {"spearman": rho,
            "top_k_overlap": len(set(top_e.tolist()) & set(top_a.tolist())) / k if k else None,
            "top_k_error": float(np.abs(estimate[top_e] - exact[top_e]).sum()) / denom
            if k and denom > 0 else None,
            "k": k, "n_nodes": int(len(exact))}


def agreement_intervals(estimate: np.ndarray, exact: np.ndarray, top_k: int, *, n_boot: int,
                        seed: int) -> dict[str, Any]:
    """:func:`agreement` of the mean effects over prompts (``[n, nodes]`` each), with percentile
    bootstrap intervals over prompts (``<stat>_lo``/``<stat>_hi``)."""
    out = agreement(estimate.mean(axis=0), exact.mean(axis=0), top_k)
    n = len(exact)
    if n < 2 or exact.shape[1] == 0:
        return out
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {"spearman": [], "top_k_overlap": [], "top_k_error": []}
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        a = agreement(estimate[idx].mean(axis=0), exact[idx].mean(axis=0), top_k)
        for key in draws:
            if a[key] is not None:
                draws[key].append(a[key])
    for key, vals in draws.items():
        lo, hi = (np.quantile(vals, [0.025, 0.975]).tolist() if len(vals) >= 10
                  else (None, None))
        out[f"{key}_lo"], out[f"{key}_hi"] = lo, hi
    return out


# ----------------------------------------------------------------------------- the call
def attribute_latents(lm: LanguageModel, saes: SaeSet, clean: Sequence[str] | Prompts,
                      corrupted: Sequence[str] | Prompts | None, metric: engine.Metric, *,
                      direction: str = "noise", ablation: str = "mean",
                      reference: Sequence[str] | None = None, errors: str = "recompute",
                      positions: str | Sequence[int] = "all", read: str = "last",
                      methods: Sequence[str] = METHODS, ig_steps: int = 8,
                      ig_scope: str = "hook", n_exact: int = 24,
                      nodes: Sequence[tuple[str, int, int]] | None = None,
                      attributed: Sequence[str] | None = None, with_exact: bool = True,
                      top_k: int = 5, n_boot: int = DEFAULT_N_BOOT, batch_size: int = DEFAULT_BATCH_SIZE, seed: int = 0
                      ) -> LatentAttribution:
    """Attribute ``metric`` to every latent × position and error node of ``saes`` with each of
    ``methods``, patch ``n_exact`` seeded nodes per hook exactly, and compare (module docstring).

    With ``corrupted=None`` the donor values are an ablation of the clean prompts (``ablation``:
    ``"mean"`` over the ordinary tokens of ``reference`` texts, or ``"zero"``).

    ``ig_scope="node"`` runs IG for the sampled nodes only, each moved alone (its limit is then
    exact patching wherever the metric is continuous in the node); ``nodes`` (``(hook, latent or
    -1, offset index)``) replaces the seeded sample. ``attributed`` limits IG and the sample to
    those hooks (AtP covers every hook at no extra cost); ``with_exact=False`` skips exact
    patching (and the agreement, which needs it)."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise InterplabError(f"methods must be among {METHODS}, got {list(methods)}")
    if errors not in ERRORS:
        raise InterplabError(f"errors must be one of {ERRORS}, not {errors!r}")
    if direction not in DIRECTIONS:
        raise InterplabError(f"direction must be one of {DIRECTIONS}, not {direction!r}")
    if ig_scope not in IG_SCOPES:
        raise InterplabError(f"ig_scope must be one of {IG_SCOPES}, not {ig_scope!r}")
    if ig_steps < 1 or n_exact < 0 or batch_size < 1:
        raise InterplabError("ig_steps and batch_size must be at least 1, n_exact at least 0")
    rd = Positions.parse(read)
    targets = saes.hooks if attributed is None else [lm.parse_hook(h).name for h in attributed]
    if set(targets) - set(saes.hooks) or not targets:
        raise InterplabError(f"attributed hooks {list(attributed or [])} must be spliced hooks "
                             f"({saes.hooks})")
    if corrupted is not None:
        pairs = encode_pairs(lm, clean, corrupted, direction=direction)
        receiver, donor_prompts = pairs.receiver, pairs.donor
    else:
        receiver, donor_prompts = as_prompts(lm, clean), None
    offsets = resolve_offsets(positions, receiver.lengths, saes)
    pos = _positions(offsets, receiver.lengths, saes)

    t = time.perf_counter()
    base, _ = engine.clean_run(lm, receiver, metric, read=rd, batch_size=batch_size)
    forward_s = time.perf_counter() - t
    t = time.perf_counter()
    donor_metric = None
    if donor_prompts is not None:
        donor: Any = node_values(lm, saes, donor_prompts, batch_size)
    else:
        donor = reference_values(lm, saes, reference, ablation, batch_size)
    donor_s = time.perf_counter() - t
    if donor_prompts is not None:
        donor_metric, _ = engine.clean_run(lm, donor_prompts, metric, read=rd,
                                           batch_size=batch_size)

    estimates: dict[str, dict[str, np.ndarray]] = {}
    cost = {"forward_s": forward_s, "donor_values_s": donor_s}
    if "atp" in methods:
        t = time.perf_counter()
        estimates["atp"] = _atp(lm, saes, receiver, donor, pos, metric, rd, errors, batch_size)
        cost["atp"] = (time.perf_counter() - t + donor_s) / forward_s
    t = time.perf_counter()
    rec = node_values(lm, saes, receiver, batch_size)
    receiver_s = time.perf_counter() - t
    if "ig" in methods and ig_scope == "hook":
        t = time.perf_counter()
        estimates["ig"] = _ig(lm, saes, receiver, donor, rec, pos, metric, rd, errors,
                              ig_steps, batch_size, targets)
        cost["ig"] = (time.perf_counter() - t + donor_s + receiver_s) / forward_s
    if nodes is None:
        nodes = sample_nodes(estimates, targets, n_exact, seed) if with_exact else []
    nodes = [(lm.parse_hook(h).name, int(i), int(p)) for h, i, p in nodes]
    node_ig = None
    if "ig" in methods and ig_scope == "node":
        t = time.perf_counter()
        node_ig = _node_ig(lm, saes, receiver, donor, rec, nodes, pos, metric, rd, errors,
                           ig_steps, batch_size)
        cost["ig_per_node"] = ((time.perf_counter() - t + donor_s + receiver_s) / forward_s
                               / max(len(nodes), 1))
    t = time.perf_counter()
    exact = (_exact(lm, saes, receiver, donor, rec, nodes, pos, base, metric, rd, errors,
                    batch_size) if with_exact else np.zeros((len(base), 0)))
    cost["exact_per_node"] = ((time.perf_counter() - t + donor_s + receiver_s) / forward_s
                              / max(len(nodes), 1))
    n_nodes = sum(pos.shape[1] * (saes.width(h) + 1) for h in saes.hooks)
    cost["exact_all_nodes_estimate"] = cost["exact_per_node"] * n_nodes
    sampled = {m: _sampled(est, nodes, len(base)) for m, est in estimates.items()}
    if node_ig is not None:
        sampled["ig"] = node_ig
    agree = ({m: agreement_intervals(v, exact, top_k, n_boot=n_boot, seed=seed)
              for m, v in sampled.items()} if with_exact else {})
    return LatentAttribution(
        hooks=saes.hooks, widths={h: saes.width(h) for h in saes.hooks}, offsets=offsets,
        metric=metric_name(metric), direction=direction if corrupted is not None else ablation,
        errors=errors, estimates=estimates, exact_nodes=nodes, exact=exact, sampled=sampled,
        agreement=agree,
        cost=cost, receiver_metric=base, donor_metric=donor_metric,
        info={"ig_steps": ig_steps, "ig_scope": ig_scope, "n_exact": n_exact, "seed": seed, "n_nodes": n_nodes,
              "exclusion": saes.exclusion.describe(),
              "donor": "prompts" if corrupted is not None else getattr(donor, "info", {})})
