"""Ablation: zero, mean, median, resample and directional ablation at one or many hooks.

Mean, median and resample draw on a *named* reference set of texts (harvested once with
:func:`interplab.activations.harvest`); the evaluated prompts are used only when asked for with
``reference="evaluated"``. The null replaces each token's change by a random direction of the
same norm (for directional ablation: ablates random directions instead).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from interplab.activations import harvest
from interplab.activations.exclusion import ExclusionRule
from interplab.activations.positions import Positions
from interplab.controls import random_direction_like
from interplab.defaults import DEFAULT_BATCH_SIZE, DEFAULT_N_BOOT
from interplab.errors import InterplabError
from interplab.interventions import engine
from interplab.interventions.metrics import metric_name
from interplab.interventions.prompts import Batch, Prompts, as_prompts, encode
from interplab.interventions.result import (
    InterventionResult,
    null_comparison,
    side_effects,
    summarise,
)
from interplab.models import LanguageModel

METHODS = ("zero", "mean", "median", "resample", "directional")


@dataclass
class Reference:
    """What mean, median and resample ablation replace activations with, per hook: the
    replacement vector (mean, median) or the rows to draw from (resample), and what was left
    out of the reference set."""

    values: dict[str, torch.Tensor]
    name: str
    info: dict[str, Any] = field(default_factory=dict)


# A reference mean is "dominated" when this share of its rows carries over half its sum of norms.
DOMINANT_SHARE = 0.05


def _reference(lm: LanguageModel, method: str, hooks: Sequence[str], prompts: Sequence[str] | None,
               reference: Sequence[str] | str | None, reference_positions: str,
               batch_size: int, exclusion: ExclusionRule) -> Reference:
    """The reference values per hook, from the reference texts' ordinary tokens."""
    if method in ("zero", "directional"):
        return Reference({}, "none")
    if reference is None:
        raise InterplabError(f"{method} ablation needs a reference set of texts "
                             "(reference=[...]), or reference='evaluated' to use the evaluated "
                             "prompts themselves")
    if isinstance(reference, str):
        if reference != "evaluated":
            raise InterplabError("reference must be a list of texts or the word 'evaluated'")
        if prompts is None:
            raise InterplabError("reference='evaluated' needs the prompts as texts")
        texts, name = list(prompts), "the evaluated prompts (asked for)"
    else:
        texts, name = list(reference), f"{len(reference)} reference texts"
    acts = harvest(lm, texts, list(hooks), reference_positions, batch_size=batch_size,
                   progress=False)
    values, info = {}, {"exclusion": exclusion.describe(), "rows": {}, "left_out": {},
                        "warnings": []}
    for h in hooks:
        x = acts[h].float()
        keep = exclusion.keep_mask(x, acts.position)
        if not bool(keep.any()):
            raise InterplabError(f"every reference row at {h} was left out ({exclusion.describe()}"
                                 "); give longer reference texts")
        rows = x[keep]
        info["rows"][h], info["left_out"][h] = int(keep.sum()), int((~keep).sum())
        norms = rows.norm(dim=-1).sort(descending=True).values
        top = max(1, int(np.ceil(DOMINANT_SHARE * len(norms))))
        share = float(norms[:top].sum() / norms.sum()) if float(norms.sum()) > 0 else 0.0
        if method == "mean" and share > 0.5:
            info["warnings"].append(
                f"{h}: {top} of {len(norms)} reference rows carry {share:.0%} of the norm; the "
                "mean is dominated by them (median ablation, or a stricter exclusion, is safer)")
        values[h] = _reference_value(method, rows)
    return Reference(values, name, info)


def _reference_value(method: str, rows: torch.Tensor) -> torch.Tensor:
    """The mean, the median (midpoint of the two middle values for an even count, as numpy's
    median and the erasure package's median matching use) or the rows themselves."""
    if method == "mean":
        return rows.mean(0)
    if method == "median":
        return torch.from_numpy(np.median(rows.double().numpy(), axis=0)).float()
    return rows


def _replacement(method: str, ref: torch.Tensor | None, old: torch.Tensor, r_hat: torch.Tensor | None,
                 rng: torch.Generator) -> torch.Tensor:
    if method == "zero":
        return torch.zeros_like(old)
    if method in ("mean", "median"):  # ref: the reference's mean or median vector
        return ref.to(old).expand_as(old)
    if method == "resample":
        return ref[torch.randint(len(ref), (len(old),), generator=rng)].to(old)
    return old - (old @ r_hat.to(old))[:, None] * r_hat.to(old)[None]


class _AblateEdits:
    def __init__(self, method: str, hooks: Sequence[str], refs: dict[str, torch.Tensor],
                 directions: dict[str, torch.Tensor], prompts: Prompts, positions: Positions,
                 job_null: np.ndarray, null_dirs: torch.Tensor | None,
                 proof: engine.Proof | None, seed: int) -> None:
        self.method, self.refs, self.directions = method, refs, directions
        self.prompts, self.positions, self.job_null = prompts, positions, job_null
        self.null_dirs, self.proof = null_dirs, proof
        self.rng = torch.Generator().manual_seed(seed)
        self.hooks = list(hooks)

    def __call__(self, batch: Batch, sl: slice) -> dict:
        rows, cols, _ = batch.columns(self.prompts, self.positions)
        null = torch.as_tensor(self.job_null[sl])[rows]
        return {h: self._fn(h, rows, cols, null) for h in self.hooks}

    def _fn(self, h: str, rows: torch.Tensor, cols: torch.Tensor, null: torch.Tensor):  # noqa: ANN202
        def fn(act: torch.Tensor) -> torch.Tensor:
            act = act.clone()
            old = act[rows, cols]
            is_null = (null >= 0).to(act.device)
            if self.method == "directional":
                r_hat = self.directions[h]
                if self.null_dirs is not None:
                    r_hat = torch.where(is_null[:, None], self.null_dirs[null.clamp_min(0)],
                                        r_hat[None].expand(len(old), -1))
                    new = old - (old * r_hat.to(old)).sum(-1, keepdim=True) * r_hat.to(old)
                else:
                    new = _replacement("directional", None, old, r_hat, self.rng)
            else:
                new = _replacement(self.method, self.refs.get(h), old, None, self.rng)
                if self.null_dirs is not None:
                    norm = (new - old).norm(dim=-1, keepdim=True)
                    rand = old + self.null_dirs[null.clamp_min(0)].to(old) * norm
                    new = torch.where(is_null[:, None], rand, new)
            act[rows, cols] = new
            if self.proof is not None:
                self.proof.record(h, new - old)
            return act

        return fn


def ablate(lm: LanguageModel, prompts: Sequence[str] | Prompts, hooks: Sequence[str],
           metric: engine.Metric, *, method: str = "mean", positions: str | Positions = "last",
           read: str | Positions = "last", reference: Sequence[str] | str | None = None,
           reference_positions: str = "all-but-bos",
           reference_exclusion: ExclusionRule | None = None,
           direction: Mapping[str, Any] | None = None, prefix: str | None = None,
           n_null: int = 20, neutral_texts: Sequence[str] | None = None,
           neutral_positions: str | Positions = "all", batch_size: int = DEFAULT_BATCH_SIZE, n_boot: int = DEFAULT_N_BOOT,
           seed: int = 0) -> InterventionResult:
    """Ablate ``hooks`` at ``positions`` of every prompt; effects are metric(ablated) − metric.

    ``method``: ``zero``; ``mean`` / ``median`` / ``resample`` (a random reference token's
    activation) over ``reference`` (texts, harvested at ``reference_positions``, less the rows
    ``reference_exclusion`` leaves out: by default position 0 and massive-norm tokens, which
    on a model without a BOS token would otherwise dominate the mean); ``directional``
    removes ``(x·r̂)r̂`` for ``direction[hook]``. The null (``n_null`` draws): directional
    ablation of random directions, or for the other methods a random direction with the norm of
    each token's change. Side effects: KL at the read token; ΔCE on ``neutral_texts`` ablated at
    ``neutral_positions``.
    """
    t0 = time.perf_counter()
    if method not in METHODS:
        raise InterplabError(f"method must be one of {METHODS}, not {method!r}")
    if not hooks:
        raise InterplabError("name at least one hook to ablate")
    for h in hooks:
        lm.parse_hook(h)
    texts = None if isinstance(prompts, Prompts) else list(prompts)
    p = as_prompts(lm, prompts, prefix)
    pos, rd = Positions.parse(positions), Positions.parse(read)
    rule = ExclusionRule() if reference_exclusion is None else reference_exclusion
    ref = _reference(lm, method, hooks, texts, reference, reference_positions, batch_size, rule)
    refs, ref_name = ref.values, ref.name
    dirs = _unit_directions(lm, method, hooks, direction)
    proof = engine.Proof(list(hooks))
    base, base_logp = engine.clean_run(lm, p, metric, read=rd, batch_size=batch_size)
    n = len(p)
    null_dirs = _null_dirs(lm, n_null, seed)
    job_ex = np.repeat(np.arange(n), 1 + n_null)
    job_null = np.tile(np.arange(-1, n_null), n)
    edits = _AblateEdits(method, hooks, refs, dirs, p, pos, job_null, null_dirs if n_null else None,
                         proof, seed)
    out = engine.run_jobs(lm, p, job_ex, edits, metric, read=rd, batch_size=batch_size,
                          reference_logp=base_logp)
    proof.check(f"{method} ablation")
    moved = (out.metric - base[job_ex]).reshape(n, 1 + n_null)
    kl = out.kl.reshape(n, 1 + n_null)[:, :1]
    null = (null_comparison(float(moved[:, 0].mean()), moved[:, 1:].mean(axis=0), 1.0)
            if n_null else None)
    ce = _neutral_ce(lm, neutral_texts, method, hooks, refs, dirs, neutral_positions, batch_size, seed)
    return InterventionResult(
        kind=f"ablate:{method}", hooks=list(hooks), positions=pos.spec, read=rd.spec,
        metric=metric_name(metric), doses=[1.0], effects=moved[:, :1].tolist(),
        summary=summarise(moved[:, :1], None, n_boot=n_boot, seed=seed), null=null,
        side_effects=side_effects(kl, ce[0] if ce else None, n_boot=n_boot, seed=seed,
                                  neutral=ce[1] if ce else None),
        proof=proof.to_dict(), baseline=base.tolist(),
        info={"method": method, "reference": ref_name, "reference_positions":
              reference_positions if refs else None, "reference_rows": ref.info,
              "n_prompts": n, "seed": seed,
              "seconds": time.perf_counter() - t0})


def _unit_directions(lm: LanguageModel, method: str, hooks: Sequence[str],
                     direction: Mapping[str, Any] | None) -> dict[str, torch.Tensor]:
    if method != "directional":
        return {}
    if not direction or set(direction) != set(hooks):
        raise InterplabError("directional ablation needs direction={hook: vector} for every hook")
    out = {}
    for h in hooks:
        v = torch.as_tensor(np.asarray(direction[h], dtype=np.float64), dtype=torch.float32)
        if v.shape != (lm.d_model,) or float(v.norm()) == 0:
            raise InterplabError(f"direction at {h} must be a non-zero vector of shape "
                                 f"({lm.d_model},)")
        out[h] = v / v.norm()
    return out


def _null_dirs(lm: LanguageModel, n_null: int, seed: int) -> torch.Tensor:
    if n_null < 0:
        raise InterplabError(f"n_null must be >= 0, not {n_null}")
    unit = np.ones(lm.d_model) / np.sqrt(lm.d_model)
    return torch.tensor(np.stack([random_direction_like(unit, seed=(seed, k))
                                  for k in range(max(n_null, 1))]), dtype=torch.float32)


def _neutral_ce(lm: LanguageModel, texts: Sequence[str] | None, method: str,
                hooks: Sequence[str], refs: dict[str, torch.Tensor], dirs: dict[str, torch.Tensor],
                positions: str | Positions, batch_size: int, seed: int
                ) -> tuple[list[float], dict[str, Any]] | None:
    if not texts:
        return None
    neutral = encode(lm, texts)
    idx = np.arange(len(neutral))
    ce0, count = engine.run_ce(lm, neutral, idx, engine.no_edits, batch_size=batch_size)
    edits = _AblateEdits(method, hooks, refs, dirs, neutral, Positions.parse(positions),
                         np.full(len(idx), -1), None, None, seed)
    ce, _ = engine.run_ce(lm, neutral, idx, edits, batch_size=batch_size)
    total = float(count.sum())
    return [float(ce.sum() - ce0.sum()) / total], {"n_texts": len(neutral), "n_tokens": int(total),
                                                    "clean_ce": float(ce0.sum()) / total}
