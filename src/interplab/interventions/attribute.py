"""Attribution patching, integrated gradients and exact patching on a node sample, compared.

For pairs (clean, corrupted) and nodes (hook × token position), each method estimates the
effect on the metric of patching the clean activation into the corrupted run:

* attribution patching (AtP): ``(a_clean − a_corr) · ∂metric/∂a`` at the corrupted run; one
  clean forward (ending at the last hook) and one forward + backward on the corrupted prompts,
  for every node at once;
* integrated gradients (IG, ``k`` steps): the gradient averaged over ``k`` midpoints of the
  straight line from ``a_corr`` to ``a_clean``, all selected positions of one hook moved
  together; per pair and hook, the blocks below the hook run once and those above it ``k``
  times (forward + backward). With one position per hook the estimate converges to exact
  patching of that node as ``k`` grows;
* exact patching, on a seeded random sample of nodes per hook kind (the ground truth), and on
  the nodes attribution patching ranks highest per hook kind (``n_top``; as AtP* does: the
  method's known failures are large nodes it misses or misjudges).

Backward passes compute activation gradients only: no parameter requires grad during them.

Agreement with exact patching (Spearman rank correlation, with a bootstrap interval over pairs,
and top-k overlap of the mean effects) is reported per hook kind on the random sample, with a
warning where attribution patching disagrees; the top-ranked nodes are checked apart
(``top_check``: their estimates beside their exact effects, and any sampled node outside them
whose exact effect is among the largest found, a false negative).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from interplab.activations.positions import Positions
from interplab.defaults import DEFAULT_BATCH_SIZE, DEFAULT_N_BOOT
from interplab.errors import InterplabError
from interplab.interventions import engine
from interplab.interventions.metrics import metric_name
from interplab.interventions.patch import (
    Node,
    PairSet,
    _PatchEdits,
    encode_pairs,
    head_split,
    sweep_nodes,
)
from interplab.interventions.prompts import (
    Prompts,
    chunks,
    hidden,
    make_batch,
    read_columns,
    read_logits,
)
from interplab.models import LanguageModel, edit_hooks
from interplab.models.hooks import ActFn
from interplab.progress import counted
from interplab.threads import pace

METHODS = ("atp", "ig")


@dataclass
class AttributionResult:
    """Per-node estimates of every method, exact patching on a sample, and their agreement.

    ``estimates[method]`` is ``[n][nodes]`` per pair; ``exact`` ``[n][sampled]`` for the nodes
    ``exact_nodes`` (indices into ``nodes``); ``agreement[kind][method]`` holds ``spearman``
    (with ``spearman_lo``/``spearman_hi``, a percentile-bootstrap interval over pairs),
    ``top_k_overlap``, ``k`` and ``n_nodes``, on the random sample of each hook kind;
    ``top_check[kind]`` the nodes attribution patching ranks highest, exactly patched;
    ``cost`` is in forward-pass equivalents (wall time over the time of one plain forward pass
    of the corrupted prompts).
    """

    hooks: list[str]
    nodes: list[dict[str, Any]]
    metric: str
    read: str
    estimates: dict[str, list[list[float]]]
    exact_nodes: list[int]
    exact: list[list[float]]
    agreement: dict[str, dict[str, dict[str, Any]]]
    cost: dict[str, float]
    info: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    top_check: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def mean(self, method: str) -> np.ndarray:
        return np.asarray(self.estimates[method], dtype=np.float64).mean(axis=0)


def _grad_pass(lm: LanguageModel, prompts: Prompts, rows: np.ndarray, metric: engine.Metric,
               read: Positions, edits: dict, watch: Sequence[str]
               ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Activations and d(sum of metric)/d(activation) at ``watch`` hooks for one batch."""
    seen: dict[str, torch.Tensor] = {}

    def watcher(h: str, inner: Any):  # noqa: ANN202
        def fn(act: torch.Tensor) -> torch.Tensor:
            new = inner(act) if inner is not None else None
            out = act if new is None else new
            if not out.requires_grad:
                out = out.detach().requires_grad_(True)
            seen[h] = out
            return out

        return fn

    batch = make_batch(lm, prompts, rows)
    fns = {h: watcher(h, edits.get(h)) for h in watch}
    with torch.enable_grad(), engine.activation_grads_only(lm), edit_hooks(lm, fns):
        logits = read_logits(lm, prompts, batch, read)
        value = metric(logits, torch.as_tensor(batch.example, device=logits.device)).sum()
        grads = torch.autograd.grad(value, [seen[h] for h in watch], allow_unused=True)
    acts = {h: seen[h].detach() for h in watch}
    return acts, {h: (g if g is not None else torch.zeros_like(acts[h])).detach()
                  for h, g in zip(watch, grads, strict=True)}


def _atp(lm: LanguageModel, pairs: PairSet, nodes: list[Node], donor: dict[str, torch.Tensor],
         metric: engine.Metric, read: Positions, batch_size: int) -> np.ndarray:
    hooks = sorted({nd.hook for nd in nodes})
    cols = {h: [j for j, nd in enumerate(nodes) if nd.hook == h] for h in hooks}
    n = len(pairs.receiver)
    out = np.zeros((n, len(nodes)))
    for sl in counted(chunks(n, batch_size)):
        pace()
        rows = np.arange(sl.start, sl.stop)
        acts, grads = _grad_pass(lm, pairs.receiver, rows, metric, read, {}, hooks)
        for h in hooks:
            # [b, nodes of h] token index of each node in each pair; one gather per hook
            pos = torch.as_tensor([[nodes[j].offsets[0] % int(pairs.length[i]) for j in cols[h]]
                                   for i in rows])
            r = torch.arange(len(rows))[:, None].expand_as(pos)
            delta = donor[h][torch.as_tensor(rows)[:, None], pos] - acts[h][r, pos].float().cpu()
            prod = delta * grads[h][r, pos].float().cpu()  # [b, nodes of h, d]
            out[np.ix_(rows, cols[h])] = (prod * _feature_mask(nodes, cols[h], prod.shape[-1])
                                          ).sum(-1).numpy()
    return out


def _feature_mask(nodes: list[Node], cols: list[int], width: int) -> torch.Tensor:
    """``[len(cols), width]``: 1 on the features each node stands for (one head, or all)."""
    mask = torch.zeros(len(cols), width)
    for c, j in enumerate(cols):
        mask[c, nodes[j].features] = 1.0
    return mask


def _ig(lm: LanguageModel, pairs: PairSet, nodes: list[Node], donor: dict[str, torch.Tensor],
        metric: engine.Metric, read: Positions, steps: int, batch_size: int) -> np.ndarray:
    """IG per hook: all of the hook's node positions move together along the path.

    One pass per example and group of up to ``batch_size`` steps: the blocks below the hook run
    once, on the example's own row, and the hook widens that row into one row per step, so only
    the blocks above the hook run (and are differentiated) once per step.
    """
    n = len(pairs.receiver)
    out = np.zeros((n, len(nodes)))
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps
    for hook in sorted({nd.hook for nd in nodes}):
        hp = lm.parse_hook(hook)
        wide_from = hp.layer if hp.kind == "resid_pre" else hp.layer + 1
        cols = [j for j, nd in enumerate(nodes) if nd.hook == hook]
        for i in range(n):
            pos = [nodes[j].offsets[0] % int(pairs.length[i]) for j in cols]
            moved = sorted(set(pos))
            grad_sum: torch.Tensor | float = 0.0
            for sl in counted(chunks(steps, batch_size)):
                pace()
                g, delta = _ig_pass(lm, pairs.receiver, i, metric, read, hook, moved,
                                    donor[hook][i, moved], alphas[sl], wide_from)
                grad_sum += g
            per_feature = (delta * grad_sum)[[moved.index(p) for p in pos]] / steps  # [cols, d]
            out[i, cols] = (per_feature * _feature_mask(nodes, cols, delta.shape[-1])
                            ).sum(-1).numpy()
    return out


def _ig_pass(lm: LanguageModel, prompts: Prompts, i: int, metric: engine.Metric,
             read: Positions, hook: str, pos: list[int], target: torch.Tensor,
             alphas: torch.Tensor, wide_from: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient summed over the steps ``alphas`` ``[moved, d]`` at positions ``pos`` of example
    ``i``, with ``hook`` moved to ``act + alpha (target - act)`` there, and ``target - act``."""
    k = len(alphas)
    seen: dict[str, torch.Tensor] = {}

    def widen(act: torch.Tensor) -> torch.Tensor:  # [1, w, d] -> [k, w, d]
        old = act[0, pos]
        seen["delta"] = target.to(act) - old
        new = act.detach().expand(k, -1, -1).clone()
        new[:, pos] = old + alphas[:, None, None].to(act) * seen["delta"]
        seen["x"] = new.requires_grad_(True)
        return new

    (grad,) = widened_gradients(lm, prompts, i, metric, read, {hook: widen}, hook, wide_from, k,
                                lambda: [seen["x"]])
    return grad[:, pos].sum(0).float().cpu(), seen["delta"].detach().float().cpu()


def widened_gradients(lm: LanguageModel, prompts: Prompts, i: int, metric: engine.Metric,
                      read: Positions, edits: dict[str, ActFn], hook: str, wide_from: int,
                      k: int, targets: Callable[[], Sequence[torch.Tensor]]
                      ) -> tuple[torch.Tensor, ...]:
    """One pass of prompt ``i`` whose ``edits`` widen it to ``k`` rows at ``hook`` (every token
    before ``wide_from`` runs once): the gradients of ``metric``, summed over the rows, with
    respect to the tensors ``targets()`` names (made by the edits during the pass). Integrated
    gradients run their steps as these rows."""
    batch = make_batch(lm, prompts, np.array([i]))
    with torch.enable_grad(), engine.activation_grads_only(lm), edit_hooks(lm, edits):
        h = hidden(lm, prompts, batch, widen=(wide_from, k))
        if h.shape[0] != k:  # pragma: no cover - a layout that does not broadcast rows
            raise InterplabError(f"{type(lm.hf).__name__} did not carry the {k} rows of integrated "
                                 f"gradients from {hook} to its output; run with ig_steps=1")
        col = int(read_columns(prompts, batch, read)[0])
        logits = lm.hf.get_output_embeddings()(h[:, col]).float()
        value = metric(logits, torch.full((k,), i, device=logits.device)).sum()
        return torch.autograd.grad(value, list(targets()))


def _sample_nodes(nodes: list[Node], n_exact: int, seed: int, lm: LanguageModel
                  ) -> dict[str, list[int]]:
    by_kind: dict[str, list[int]] = {}
    for j, nd in enumerate(nodes):
        by_kind.setdefault(lm.parse_hook(nd.hook).kind, []).append(j)
    rng = np.random.default_rng(seed)
    return {k: sorted(rng.choice(v, size=min(n_exact, len(v)), replace=False).tolist())
            for k, v in by_kind.items()}


def _exact(lm: LanguageModel, pairs: PairSet, nodes: list[Node], idx: list[int],
           donor: dict[str, torch.Tensor], base: np.ndarray, metric: engine.Metric,
           read: Positions, batch_size: int) -> np.ndarray:
    n = len(pairs.receiver)
    sub = [nodes[j] for j in idx]
    job_ex = np.repeat(np.arange(n), len(sub))
    job_node = np.tile(np.arange(len(sub)), n)
    proof = engine.Proof(sorted({nd.hook for nd in sub}))
    out = engine.run_jobs(lm, pairs.receiver, job_ex,
                          _PatchEdits(sub, donor, job_node, np.full(len(job_ex), -1), None, proof,
                                      pairs.length), metric, read=read, batch_size=batch_size)
    return (out.metric - base[job_ex]).reshape(n, len(sub))


def _spearman(estimate: np.ndarray, exact: np.ndarray) -> float | None:
    from scipy.stats import spearmanr

    if len(exact) < 3 or np.ptp(exact) == 0 or np.ptp(estimate) == 0:
        return None
    return float(spearmanr(estimate, exact).statistic)


def agreement(estimate: np.ndarray, exact: np.ndarray, top_k: int,
              per_pair: tuple[np.ndarray, np.ndarray] | None = None, *, n_boot: int = DEFAULT_N_BOOT,
              seed: int = 0) -> dict[str, Any]:
    """Spearman correlation and top-k overlap (by |mean effect|) of two ``[nodes]`` vectors.

    With ``per_pair`` (the ``[pairs, nodes]`` estimates and exact effects the two means come
    from), the Spearman correlation gets a percentile-bootstrap interval over pairs
    (``spearman_lo``, ``spearman_hi``; None when fewer than 3 pairs or no spread)."""
    k = min(top_k, len(exact))
    rho = _spearman(estimate, exact)
    top_e = set(np.argsort(-np.abs(exact), kind="stable")[:k].tolist())
    top_a = set(np.argsort(-np.abs(estimate), kind="stable")[:k].tolist())
    lo = hi = None
    if per_pair is not None and rho is not None and len(per_pair[0]) >= 3:
        from interplab.controls import bootstrap_statistic

        est, ex = (np.asarray(a, dtype=np.float64) for a in per_pair)

        def stat(rows: np.ndarray) -> float:
            r = _spearman(est[rows].mean(axis=0), ex[rows].mean(axis=0))
            return float("nan") if r is None else r

        _, lo, hi = bootstrap_statistic(stat, np.arange(len(est)), n_boot=n_boot, seed=seed)
        lo, hi = (None, None) if lo != lo else (lo, hi)
    return {"spearman": rho, "spearman_lo": lo, "spearman_hi": hi,
            "top_k_overlap": len(top_e & top_a) / k if k else None, "k": k,
            "n_nodes": int(len(exact)),
            "max_abs_error": float(np.max(np.abs(estimate - exact))) if len(exact) else None}


def attribute(lm: LanguageModel, clean: Sequence[str] | Prompts,
              corrupted: Sequence[str] | Prompts, hooks: Sequence[str], metric: engine.Metric, *,
              positions: str | Sequence[int] = "all", read: str = "last",
              prefix: str | None = None, methods: Sequence[str] = METHODS, ig_steps: int = 8,
              n_exact: int = 24, n_top: int = 0, top_k: int = 5, warn_below: float = 0.5,
              batch_size: int = DEFAULT_BATCH_SIZE, per_head: bool = True, n_boot: int = DEFAULT_N_BOOT, seed: int = 0
              ) -> AttributionResult:
    """Estimate the patching effect of every node (hook × position, and × head for a per-head
    hook such as ``blocks.3.attn.hook_z`` unless ``per_head=False``) with each of ``methods``,
    compute exact patching on ``n_exact`` seeded random nodes per hook kind and on the ``n_top``
    nodes per hook kind the first method (AtP unless left out) ranks highest by |mean estimate|,
    and compare."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise InterplabError(f"methods must be among {METHODS}, got {list(methods)}")
    if ig_steps < 1:
        raise InterplabError(f"ig_steps must be at least 1, not {ig_steps}")
    for h in hooks:
        lm.parse_hook(h)
    pairs = encode_pairs(lm, clean, corrupted, direction="denoise", prefix=prefix)
    nodes = sweep_nodes(hooks, positions, "per-position", pairs.length,
                        head_split(lm, hooks, per_head))
    rd = Positions.parse(read)
    t = time.perf_counter()
    base, _ = engine.clean_run(lm, pairs.receiver, metric, read=rd, batch_size=batch_size)
    forward_s = time.perf_counter() - t
    t = time.perf_counter()
    donor = engine.capture(lm, pairs.donor, list(hooks), batch_size=batch_size)
    capture_s = time.perf_counter() - t
    estimates, cost = {}, {"forward_s": forward_s}
    for m in methods:
        t = time.perf_counter()
        est = (_atp(lm, pairs, nodes, donor, metric, rd, batch_size) if m == "atp"
               else _ig(lm, pairs, nodes, donor, metric, rd, ig_steps, batch_size))
        estimates[m] = est
        cost[m] = (time.perf_counter() - t + capture_s) / forward_s
    if n_top < 0:
        raise InterplabError(f"n_top must be >= 0, not {n_top}")
    sample = _sample_nodes(nodes, n_exact, seed, lm)
    ranked_by = "atp" if "atp" in estimates else next(iter(estimates))
    top = _top_nodes(nodes, estimates[ranked_by], n_top, lm)
    idx = sorted({j for v in (*sample.values(), *top.values()) for j in v})
    t = time.perf_counter()
    exact = _exact(lm, pairs, nodes, idx, donor, base, metric, rd, batch_size)
    cost["exact_per_node"] = (time.perf_counter() - t + capture_s) / forward_s / max(len(idx), 1)
    cost["exact_all_nodes_estimate"] = cost["exact_per_node"] * len(nodes)
    agree, notes = _agreement_table(lm, nodes, idx, sample, estimates, exact, top_k, warn_below,
                                    n_boot, seed)
    checks = _top_check(top, sample, idx, estimates, exact, ranked_by)
    return AttributionResult(
        hooks=list(hooks), nodes=[nd.label for nd in nodes], metric=metric_name(metric),
        read=rd.spec, estimates={m: e.tolist() for m, e in estimates.items()}, exact_nodes=idx,
        exact=exact.tolist(), agreement=agree, cost=cost,
        info={"n_pairs": len(pairs.receiver), "ig_steps": ig_steps, "seed": seed,
              "n_nodes": len(nodes), "receiver_metric": base.tolist(), "n_top": n_top,
              "top_ranked_by": ranked_by}, warnings=notes, top_check=checks)


def _top_nodes(nodes: list[Node], estimate: np.ndarray, n_top: int, lm: LanguageModel
               ) -> dict[str, list[int]]:
    """Per hook kind the ``n_top`` nodes of largest |mean estimate| (most first)."""
    if n_top == 0:
        return {}
    size = np.abs(estimate.mean(axis=0))
    by_kind: dict[str, list[int]] = {}
    for j, nd in enumerate(nodes):
        by_kind.setdefault(lm.parse_hook(nd.hook).kind, []).append(j)
    return {k: sorted(v, key=lambda j: (-size[j], j))[:n_top] for k, v in by_kind.items()}


def _top_check(top: dict[str, list[int]], sample: dict[str, list[int]], idx: list[int],
               estimates: dict[str, np.ndarray], exact: np.ndarray, ranked_by: str
               ) -> dict[str, dict[str, Any]]:
    """Per hook kind: the top-ranked nodes' estimates beside their exact effects, and the
    false negatives found: exactly patched nodes outside the top whose |exact effect| is among
    the ``n_top`` largest of every node of that kind patched exactly."""
    exact_mean = exact.mean(axis=0)
    est = estimates[ranked_by].mean(axis=0)
    out = {}
    for kind, js in top.items():
        known = sorted(set(js) | set(sample.get(kind, [])))
        size = {j: abs(float(exact_mean[idx.index(j)])) for j in known}
        largest = sorted(known, key=lambda j: (-size[j], j))[:len(js)]
        missed = [j for j in largest if j not in js]
        rows = [{"node": j, "estimate": float(est[j]), "exact": float(exact_mean[idx.index(j)])}
                for j in js]
        signs = [np.sign(r["estimate"]) == np.sign(r["exact"]) for r in rows]
        out[kind] = {"ranked_by": ranked_by, "nodes": rows,
                     "sign_agreement": float(np.mean(signs)) if rows else None,
                     "recall": (len(js) - len(missed)) / len(js) if js else None,
                     "false_negatives": [{"node": j, "estimate": float(est[j]),
                                          "exact": float(exact_mean[idx.index(j)])}
                                         for j in missed]}
    return out


def _agreement_table(lm: LanguageModel, nodes: list[Node], idx: list[int],
                     sample: dict[str, list[int]], estimates: dict[str, np.ndarray],
                     exact: np.ndarray, top_k: int, warn_below: float, n_boot: int, seed: int
                     ) -> tuple[dict[str, dict[str, dict[str, Any]]], list[str]]:
    table: dict[str, dict[str, dict[str, Any]]] = {}
    notes = []
    exact_mean = exact.mean(axis=0)
    everything = sorted(j for v in sample.values() for j in v)  # the random sample, unbiased
    for kind, js in {**sample, "all": everything}.items():
        cols = [idx.index(j) for j in js]
        table[kind] = {m: agreement(e.mean(axis=0)[js], exact_mean[cols], top_k,
                                    (e[:, js], exact[:, cols]), n_boot=n_boot, seed=seed)
                       for m, e in estimates.items()}
        rho = table[kind].get("atp", {}).get("spearman")
        if kind != "all" and rho is not None and rho < warn_below:
            notes.append(f"attribution patching disagrees with exact patching on {kind} "
                         f"(Spearman {rho:.2f} < {warn_below} over {len(js)} sampled nodes); "
                         "trust exact patching or integrated gradients there")
            warnings.warn(notes[-1], stacklevel=3)
    return table, notes
