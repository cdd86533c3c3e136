"""Steering: add ``dose × direction`` at chosen hooks and tokens, over a dose series.

All doses, all directions and the random-direction null of a call run as rows of the same
batched forward passes (one job per prompt × direction × dose).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from interplab.activations.positions import Positions
from interplab.controls import random_direction_like
from interplab.defaults import DEFAULT_BATCH_SIZE, DEFAULT_N_BOOT
from interplab.errors import InterplabError
from interplab.interventions import engine
from interplab.interventions.metrics import metric_name
from interplab.interventions.prompts import Batch, Prompts, as_prompts, encode, split_head
from interplab.interventions.result import (
    InterventionResult,
    null_comparison,
    side_effects,
    summarise,
)
from interplab.models import LanguageModel

Direction = Mapping[str, Any]  # hook name -> [d_model] vector


def _as_direction(lm: LanguageModel, name: str, direction: Direction) -> dict[str, np.ndarray]:
    if not isinstance(direction, Mapping) or not direction:
        raise InterplabError(f"direction {name!r} must map hook names to [d_model] vectors, e.g. "
                             "{'blocks.6.hook_resid_post': v}")
    out = {}
    for hook, v in direction.items():
        lm.parse_hook(hook)
        arr = np.asarray(v.detach().cpu() if hasattr(v, "detach") else v, dtype=np.float64)
        if arr.shape != (lm.d_model,) or not np.isfinite(arr).all():
            raise InterplabError(f"direction {name!r} at {hook}: need a finite vector of shape "
                                 f"({lm.d_model},), got shape {arr.shape}")
        if not np.any(arr):
            raise InterplabError(f"direction {name!r} at {hook} is all zeros; steering with it "
                                 "would change nothing")
        out[hook] = arr
    return out


def _check_doses(doses: Sequence[float]) -> list[float]:
    doses = [float(d) for d in doses]
    if len(doses) < 1 or not all(np.isfinite(doses)):
        raise InterplabError("doses must be a non-empty list of finite numbers, e.g. -2,-1,0,1,2")
    return doses


class _Table:
    """Vectors per hook (one row per direction or null draw) and the (vector, dose) of each spec."""

    def __init__(self, hooks: list[str]) -> None:
        self.hooks = hooks
        self.vectors: dict[str, list[np.ndarray]] = {h: [] for h in hooks}
        self.spec_vec: list[int] = []
        self.spec_dose: list[float] = []

    def add_vector(self, direction: dict[str, np.ndarray]) -> int:
        for h in self.hooks:
            self.vectors[h].append(direction.get(h, np.zeros_like(next(iter(direction.values())))))
        return len(self.vectors[self.hooks[0]]) - 1

    def add_spec(self, vec: int, dose: float) -> int:
        self.spec_vec.append(vec)
        self.spec_dose.append(dose)
        return len(self.spec_vec) - 1

    def tensors(self, lm: LanguageModel) -> dict[str, torch.Tensor]:
        return {h: torch.tensor(np.stack(v), dtype=lm.dtype, device=lm.device)
                for h, v in self.vectors.items()}


def _steer_edits(table: _Table, vecs: dict[str, torch.Tensor], job_spec: np.ndarray,
                 row_sign: np.ndarray, prompts: Prompts, positions: Positions,
                 proof: engine.Proof | None) -> engine.EditFactory:
    spec_vec = torch.as_tensor(table.spec_vec)
    spec_dose = torch.as_tensor(table.spec_dose, dtype=torch.float64)

    def factory(batch: Batch, sl: slice) -> dict:
        spec = torch.as_tensor(job_spec[sl])
        scale = (spec_dose[spec] * torch.as_tensor(row_sign[sl], dtype=torch.float64))
        rows, cols, _ = batch.columns(prompts, positions)
        fns = {}
        for h in table.hooks:
            add = vecs[h][spec_vec[spec].to(vecs[h].device)[rows]] \
                * scale.to(vecs[h].device, vecs[h].dtype)[rows, None]

            def fn(act: torch.Tensor, add: torch.Tensor = add, h: str = h) -> torch.Tensor:
                act = act.clone()
                act[rows, cols] += add.to(act.dtype)
                if proof is not None:
                    proof.record(h, add)
                return act

            fns[h] = fn
        return fns

    return factory


def steer_many(lm: LanguageModel, prompts: Sequence[str] | Prompts,
               directions: Mapping[str, Direction], doses: Sequence[float], metric: engine.Metric,
               *, positions: str | Positions = "last", read: str | Positions = "last",
               prefix: str | None = None, signs: Sequence[float] | None = None, n_null: int = 20,
               null_dose: float | None = None, neutral_texts: Sequence[str] | None = None,
               neutral_positions: str | Positions = "all", batch_size: int = DEFAULT_BATCH_SIZE,
               padding_side: str = "right", n_boot: int = DEFAULT_N_BOOT, seed: int = 0
               ) -> dict[str, InterventionResult]:
    """Steer ``prompts`` along each named direction over ``doses``; one result per direction.

    ``directions[name]`` maps hook names to ``[d_model]`` vectors; the added vector at hook ``h``
    and dose ``s`` is ``s × sign_i × directions[name][h]`` at the ``positions`` of prompt ``i``.
    ``signs`` (``[n]``, default all +1) flips the push per example, and effects are multiplied by
    it, so a positive effect always means "moved the intended way". The null: ``n_null`` random
    directions, norm-matched per hook (:func:`interplab.controls.random_direction_like`), at
    ``null_dose`` (default: the dose of largest magnitude, the positive one on a tie); directions with the same per-hook norms
    share one null. Side effects: KL at the read token per dose, and ΔCE (nats/token) on
    ``neutral_texts`` steered at ``neutral_positions``.
    """
    t0 = time.perf_counter()
    doses = _check_doses(doses)
    if n_null < 0:
        raise InterplabError(f"n_null must be >= 0, not {n_null}")
    dirs = {name: _as_direction(lm, name, d) for name, d in directions.items()}
    if not dirs:
        raise InterplabError("give at least one direction to steer along")
    p = as_prompts(lm, prompts, prefix)
    pos, rd = Positions.parse(positions), Positions.parse(read)
    pos.validate_count(len(p))
    n = len(p)
    sign = np.ones(n) if signs is None else np.asarray(signs, dtype=np.float64)
    if sign.shape != (n,):
        raise InterplabError(f"signs must have one entry per prompt ({n}), got shape {sign.shape}")
    null_dose = float(null_dose if null_dose is not None else max(doses, key=lambda d: (abs(d), d)))
    if n_null and null_dose not in doses:
        raise InterplabError(f"null_dose {null_dose:g} must be one of the doses {doses}")
    hooks = sorted({h for d in dirs.values() for h in d}, key=lambda h: (lm.parse_hook(h).layer, h))
    table = _Table(hooks)
    specs: dict[str, list[int | None]] = {}
    null_specs: dict[tuple, list[int]] = {}
    null_of: dict[str, tuple] = {}
    for name, d in dirs.items():
        v = table.add_vector(d)
        specs[name] = [None if dose == 0 else table.add_spec(v, dose) for dose in doses]
        key = tuple(sorted((h, round(float(np.linalg.norm(x)), 6)) for h, x in d.items()))
        null_of[name] = key
        if key not in null_specs and n_null > 0:
            null_specs[key] = [table.add_spec(table.add_vector(
                {h: random_direction_like(x, seed=(seed, k, hooks.index(h))) for h, x in d.items()}),
                null_dose) for k in range(n_null)]
    proof = engine.Proof(hooks)
    base, base_logp = engine.clean_run(lm, p, metric, read=rd, batch_size=batch_size,
                                       padding_side=padding_side)
    n_spec = len(table.spec_vec)
    order = np.argsort(p.lengths, kind="stable")  # rows of one prompt share a batch: less padding
    job_ex = np.repeat(order, n_spec)
    job_spec = np.tile(np.arange(n_spec), n)
    vecs = table.tensors(lm)
    cuts = [min(p.select(pos, i)) for i in range(n)]
    if rd.kind == "last" and min(cuts) > 0:  # the unedited tokens before the first edit run once
        out = _run_per_prompt(lm, p, pos, rd, job_ex, job_spec, sign, cuts, table, vecs, proof,
                              metric, batch_size, padding_side, base_logp)
    else:
        out = engine.run_jobs(lm, p, job_ex, _steer_edits(table, vecs, job_spec, sign[job_ex], p,
                                                         pos, proof),
                              metric, read=rd, batch_size=batch_size, padding_side=padding_side,
                              reference_logp=base_logp)
    proof.check("steering")
    moved = np.zeros((n, n_spec))
    kl = np.zeros((n, n_spec))
    moved[job_ex, job_spec] = (out.metric - base[job_ex]) * sign[job_ex]
    kl[job_ex, job_spec] = out.kl
    ce = _neutral_ce(lm, neutral_texts, table, vecs, specs, neutral_positions, batch_size)
    elapsed = time.perf_counter() - t0
    info = {"n_prompts": n, "prefix_tokens": len(p.prefix_ids), "seed": seed,
            "rows_run": int(len(job_ex) + n), "seconds": elapsed, "signs": sign.tolist(),
            "directions_in_call": list(dirs)}
    return {name: _result(name, specs[name], null_specs.get(null_of[name], []), moved, kl, ce,
                          doses, null_dose, hooks=list(dirs[name]), pos=pos, rd=rd, metric=metric,
                          proof=proof, base=base, info=info, n_boot=n_boot, seed=seed)
            for name in dirs}


def _run_per_prompt(lm: LanguageModel, p: Prompts, pos: Positions, rd: Positions,
                    job_ex: np.ndarray, job_spec: np.ndarray, sign: np.ndarray, cuts: list[int],
                    table: _Table, vecs: dict[str, torch.Tensor], proof: engine.Proof,
                    metric: engine.Metric, batch_size: int, padding_side: str,
                    base_logp: torch.Tensor) -> engine.Outputs:
    """The jobs prompt by prompt: each prompt's tokens before its first edited one run once
    (:func:`~interplab.interventions.prompts.split_head`), and each job only the rest. Every
    row of a prompt shares those tokens' keys and values, so this equals running whole prompts
    up to floating-point rounding."""
    metric_out, kl_out = np.zeros(len(job_ex)), np.zeros(len(job_ex))
    for i in range(len(p)):
        rows = np.flatnonzero(job_ex == i)
        sub = split_head(lm, p, i, cuts[i])
        sub_pos = Positions.explicit([[q - cuts[i] for q in p.select(pos, i)]])

        def one(logits: torch.Tensor, example: torch.Tensor, i: int = i) -> torch.Tensor:
            return metric(logits, torch.full_like(example, i))  # the prompt's own target

        out = engine.run_jobs(lm, sub, np.zeros(len(rows), dtype=np.int64),
                              _steer_edits(table, vecs, job_spec[rows], sign[job_ex[rows]], sub,
                                           sub_pos, proof),
                              one, read=rd, batch_size=batch_size, padding_side=padding_side,
                              reference_logp=base_logp[i : i + 1])
        metric_out[rows], kl_out[rows] = out.metric, out.kl
    return engine.Outputs(metric_out, kl_out)


def _columns(cols: list[int | None], values: np.ndarray) -> np.ndarray:
    return np.stack([np.zeros(len(values)) if c is None else values[:, c] for c in cols], axis=1)


def _result(name: str, cols: list[int | None], null_cols: list[int], moved: np.ndarray,
            kl: np.ndarray, ce: dict[str, Any] | None, doses: list[float], null_dose: float, *,
            hooks: list[str], pos: Positions, rd: Positions, metric: engine.Metric,
            proof: engine.Proof, base: np.ndarray, info: dict, n_boot: int, seed: int
            ) -> InterventionResult:
    effects = _columns(cols, moved)
    summary = summarise(effects, doses, n_boot=n_boot, seed=seed)
    null = None
    if null_cols:
        ref = _columns([cols[doses.index(null_dose)]], moved)
        null = null_comparison(float(ref.mean()), moved[:, null_cols].mean(axis=0), null_dose)
    return InterventionResult(
        kind="steer", hooks=hooks, positions=pos.spec, read=rd.spec, metric=metric_name(metric),
        doses=doses, effects=effects.tolist(), summary=summary, null=null,
        side_effects=side_effects(_columns(cols, kl), ce["delta_ce"][name] if ce else None,
                                  n_boot=n_boot, seed=seed, neutral=ce["info"] if ce else None),
        proof=proof.to_dict(), baseline=base.tolist(), info={**info, "direction": name})


def _neutral_ce(lm: LanguageModel, texts: Sequence[str] | None, table: _Table,
                vecs: dict[str, torch.Tensor], specs: dict[str, list[int | None]],
                positions: str | Positions, batch_size: int) -> dict[str, Any] | None:
    """ΔCE (nats/token) on neutral text per direction and dose, steered at ``positions``."""
    if not texts:
        return None
    neutral = encode(lm, texts)
    pos = Positions.parse(positions)
    used = sorted({s for cols in specs.values() for s in cols if s is not None})
    ce0, count = engine.run_ce(lm, neutral, np.arange(len(neutral)), engine.no_edits,
                               batch_size=batch_size)
    job_ex = np.repeat(np.arange(len(neutral)), len(used))
    job_spec = np.tile(np.asarray(used), len(neutral))
    ce, _ = engine.run_ce(lm, neutral, job_ex, _steer_edits(table, vecs, job_spec,
                                                             np.ones(len(job_ex)), neutral, pos,
                                                             None), batch_size=batch_size)
    total = float(count.sum())
    per_spec = {s: (float(ce[job_spec == s].sum()) - float(ce0.sum())) / total for s in used}
    delta = {name: [0.0 if c is None else per_spec[c] for c in cols]
             for name, cols in specs.items()}
    return {"delta_ce": delta, "info": {"n_texts": len(neutral), "n_tokens": int(total),
                                        "positions": pos.spec,
                                        "clean_ce": float(ce0.sum()) / total}}


def steer(lm: LanguageModel, prompts: Sequence[str] | Prompts, direction: Direction | Any,
          doses: Sequence[float], metric: engine.Metric, *, hooks: Sequence[str] | None = None,
          **kwargs: Any) -> InterventionResult:
    """Steer along one direction (a ``{hook: vector}`` map, or one vector added at each of
    ``hooks``); see :func:`steer_many` for the options and what the result holds."""
    if not isinstance(direction, Mapping):
        if not hooks:
            raise InterplabError("a bare direction vector needs hooks=[...] naming where to add it")
        direction = dict.fromkeys(hooks, direction)
    return steer_many(lm, prompts, {"direction": direction}, doses, metric, **kwargs)["direction"]
