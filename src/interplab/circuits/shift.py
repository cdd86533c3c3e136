"""SHIFT (Marks et al. 2024): remove a classifier's reliance on a spurious cue by ablating the
SAE latents tied to the cue, then retraining the classifier's head.

The task: a binary label and a spurious cue that agree on every *ambiguous* training example
(no training label separates them), and a *balanced* test set where the four (label, cue)
groups are equally common. A linear probe on the residual stream at ``probe_hook`` (pooled over
each text's ordinary tokens, or read at the last token) trained on the ambiguous set relies on
the cue as much as on the label; its worst-group accuracy on the balanced set shows how much.

SHIFT: (1) attribute the probe's output to every latent of the SAEs at and below the probe hook
(attribution patching of zero-ablating the latent at every ordinary token, mean |effect| over
the ambiguous training texts); (2) of the ``n_candidates`` most attributed latents, mark those
tied to the cue — here *automatically*, by the correlation of the latent's activation (its
maximum over the text's ordinary tokens) with the cue on held-out balanced texts (``|r_cue| ≥
min_r`` and ``|r_cue| > |r_label|``), which replaces the paper's human judgement; the cards of
every candidate are kept so a person can check; (3) zero-ablate the marked latents at every
ordinary token, re-harvest and retrain the probe on the ambiguous set; (4) score the balanced
test set overall and per group (also with the original head kept, ``shift_no_retrain``), and
how readable the cue still is (``cue_accuracy``: a cue probe fitted on balanced training rows of
the same inputs, scored on the test rows).

Controls: the unablated probe; the same number of random latents (per hook, drawn from the
latents that fire on the training texts, the marked ones excluded) ablated the same way; LEACE
erasure of the cue from the probe's inputs (an oracle: fitted with cue labels on the balanced
validation texts); a probe trained on balanced data of the same size (an oracle: it sees
examples where label and cue disagree).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from interplab.activations.harvest import _StopForward
from interplab.circuits.splice import SaeSet
from interplab.defaults import DEFAULT_BATCH_SIZE, DEFAULT_N_BOOT
from interplab.errors import InterplabError
from interplab.interventions import engine
from interplab.interventions.prompts import Prompts, as_prompts, chunks, hidden, make_batch
from interplab.models import LanguageModel, edit_hooks

POOLINGS = ("mean", "last")
GROUPS = ((1, 1), (0, 0), (1, 0), (0, 1))  # (label, cue): the first two are the ambiguous ones


# ----------------------------------------------------------------------------- data
@dataclass
class SpuriousSplit:
    """Row indices: ``train`` (ambiguous: label = cue), ``balanced_train`` (same size, every
    group equally common; for the balanced-data oracle), ``val`` and ``test`` (balanced)."""

    train: np.ndarray
    balanced_train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def sizes(self) -> dict[str, int]:
        return {k: int(len(v)) for k, v in asdict(self).items()}


def _balanced(rows: np.ndarray, y: np.ndarray, c: np.ndarray, per_group: int,
              rng: np.random.Generator) -> np.ndarray:
    out = []
    for lab, cue in GROUPS:
        g = rows[(y[rows] == lab) & (c[rows] == cue)]
        out.append(rng.permutation(g)[:per_group])
    return np.sort(np.concatenate(out))


def spurious_split(y: np.ndarray, c: np.ndarray, parts: Any, seed: int) -> SpuriousSplit:
    """From an entity split ``parts`` (``train``/``val``/``test`` row indices): the ambiguous
    training rows (label = cue, both values equally common), a balanced training set of the same
    size, and balanced validation and test rows (each group cut to the smallest group)."""
    rng = np.random.default_rng((seed, 21))
    y, c = np.asarray(y), np.asarray(c)

    def groups(rows: np.ndarray) -> list[int]:
        return [int(((y[rows] == a) & (c[rows] == b)).sum()) for a, b in GROUPS]

    tr = np.asarray(parts.train)
    g = groups(tr)
    amb = min(g[0], g[1])
    if amb < 4 or min(g) < 2:
        raise InterplabError(f"the training split has too few rows per (label, cue) group "
                             f"({dict(zip(map(str, GROUPS), g, strict=True))}); use more data")
    train = _balanced(tr, y, c, amb, rng)
    train = train[y[train] == c[train]]
    balanced_train = _balanced(tr, y, c, min(min(g), len(train) // 4), rng)
    val = _balanced(np.asarray(parts.val), y, c, min(groups(np.asarray(parts.val))), rng)
    test = _balanced(np.asarray(parts.test), y, c, min(groups(np.asarray(parts.test))), rng)
    if min(len(val), len(test)) < 8:
        raise InterplabError("the validation or test split has fewer than 2 rows in some "
                             "(label, cue) group; use more data")
    return SpuriousSplit(train, balanced_train, val, test)


# ----------------------------------------------------------------------------- activations
def _ablation_edit(saes: SaeSet, h: str, latents: Sequence[int], lengths: torch.Tensor,
                   start: torch.Tensor):  # noqa: ANN202
    idx = torch.as_tensor(list(latents), dtype=torch.long)

    def fn(act: torch.Tensor) -> torch.Tensor:
        x = act.float()
        f = saes.encode(h, x)[..., idx]  # [b, w, k]
        W = saes[h].W_dec[idx].detach().float().to(x.device)  # [k, d]
        tok = saes.keep_mask(x, lengths, start)[..., None]
        return torch.where(tok, x - f @ W, x).to(act.dtype)
    return fn


@torch.no_grad()
def probe_inputs(lm: LanguageModel, saes: SaeSet, texts: Sequence[str] | Prompts, hook: str,
                 pooling: str = "mean", ablate: dict[str, Sequence[int]] | None = None, *,
                 batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
    """``[n, d]`` float64: the activation at ``hook`` pooled over each text's ordinary tokens
    (``mean``) or at its last token, with the ``ablate`` latents (hook → indices) zero-ablated at
    every ordinary token of their hooks (each hook re-encodes its already edited input)."""
    if pooling not in POOLINGS:
        raise InterplabError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
    prompts = as_prompts(lm, texts)
    ablate = {lm.parse_hook(h).name: list(v) for h, v in (ablate or {}).items() if len(v)}
    unknown = set(ablate) - set(saes.hooks)
    if unknown:
        raise InterplabError(f"cannot ablate latents at {sorted(unknown)}: no SAE there")
    hook = lm.parse_hook(hook).name
    out = np.zeros((len(prompts), lm.d_model))
    for sl in chunks(len(prompts), batch_size):
        rows = np.arange(sl.start, sl.stop)
        out[rows] = _inputs_batch(lm, saes, prompts, rows, hook, pooling, ablate)
    return out


def _inputs_batch(lm: LanguageModel, saes: SaeSet, prompts: Prompts, rows: np.ndarray,
                  hook: str, pooling: str, ablate: dict[str, list[int]]) -> np.ndarray:
    batch = make_batch(lm, prompts, rows)
    lengths, start = torch.as_tensor(batch.length), torch.as_tensor(batch.start)
    edits = {h: _ablation_edit(saes, h, v, lengths, start) for h, v in ablate.items()}
    got: dict[str, torch.Tensor] = {}
    inner = edits.get(hook)

    def read(act: torch.Tensor) -> torch.Tensor:
        new = inner(act) if inner is not None else act
        got["x"] = new.float()
        raise _StopForward

    edits[hook] = read
    with edit_hooks(lm, edits), contextlib.suppress(_StopForward):
        hidden(lm, prompts, batch)
    return _pool(saes, got["x"], lengths, start, pooling).double().cpu().numpy()


def _pool(saes: SaeSet, x: torch.Tensor, lengths: torch.Tensor, start: torch.Tensor,
          pooling: str) -> torch.Tensor:
    if pooling == "last":
        return x[torch.arange(len(x)), (start + lengths - 1).to(x.device)]
    tok = saes.keep_mask(x, lengths, start).to(x.dtype)
    return (x * tok[..., None]).sum(1) / tok.sum(1, keepdim=True).clamp_min(1)


def probe_attribution(lm: LanguageModel, saes: SaeSet, texts: Sequence[str] | Prompts, hook: str,
                      w: np.ndarray, b: float, pooling: str = "mean", *, batch_size: int = DEFAULT_BATCH_SIZE
                      ) -> dict[str, np.ndarray]:
    """Per SAE hook at or below ``hook``, ``[d_sae]``: the mean over texts of |AtP effect| of
    zero-ablating each latent at every ordinary token on the probe score ``w · pooled + b``."""
    prompts = as_prompts(lm, texts)
    hook = lm.parse_hook(hook).name
    order = [hp.name for hp in lm.resolve_hooks([*saes.hooks, hook])]
    below = [h for h in saes.hooks if order.index(h) <= order.index(hook)]
    if not below:
        raise InterplabError(f"no SAE at or below the probe hook {hook}")
    wt = torch.as_tensor(w, dtype=torch.float32)
    out = {h: np.zeros(saes.width(h)) for h in below}
    for sl in chunks(len(prompts), batch_size):
        got = _attr_batch(lm, saes, prompts, np.arange(sl.start, sl.stop), hook, below, wt, b,
                          pooling)
        for h, v in got.items():
            out[h] += v
    return {h: v / len(prompts) for h, v in out.items()}


def _attr_batch(lm: LanguageModel, saes: SaeSet, prompts: Prompts, rows: np.ndarray, hook: str,
                below: list[str], wt: torch.Tensor, b: float, pooling: str
                ) -> dict[str, np.ndarray]:
    """Σ over the batch's texts of |AtP effect| per latent (see :func:`probe_attribution`)."""
    batch = make_batch(lm, prompts, rows)
    lengths, start = torch.as_tensor(batch.length), torch.as_tensor(batch.start)
    leaves: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    score: dict[str, torch.Tensor] = {}

    def read(x: torch.Tensor) -> None:
        score["s"] = _pool(saes, x, lengths, start, pooling) @ wt.to(x.device) + b
        raise _StopForward

    def leaf(h: str):  # noqa: ANN202
        def fn(act: torch.Tensor) -> torch.Tensor:
            x = act.float()
            f = saes.encode(h, x).detach().requires_grad_(True)
            y = saes.decode(h, f)
            leaves[h] = (f, saes.keep_mask(x, lengths, start))
            new = x + (y - y.detach())  # the value x; d/df through the decoder
            if h == hook:
                read(new)
            return new.to(act.dtype)
        return fn

    edits = {h: leaf(h) for h in below}
    if hook not in edits:
        edits[hook] = lambda act: read(act.float())
    with torch.enable_grad(), engine.activation_grads_only(lm), edit_hooks(lm, edits), \
            contextlib.suppress(_StopForward):
        hidden(lm, prompts, batch)
    with torch.enable_grad():
        grads = torch.autograd.grad(score["s"].sum(), [leaves[h][0] for h in below],
                                    allow_unused=True)
    out = {}
    for h, g in zip(below, grads, strict=True):
        f, tok = leaves[h]
        effect = torch.zeros_like(f[:, 0]) if g is None else \
            ((-f.detach()) * g * tok[..., None]).sum(1)  # [b, d_sae]: zero-ablating, per text
        out[h] = effect.abs().sum(0).double().cpu().numpy()
    return out


@torch.no_grad()
def latent_maxima(lm: LanguageModel, saes: SaeSet, texts: Sequence[str] | Prompts,
                  latents: dict[str, Sequence[int]], *, batch_size: int = DEFAULT_BATCH_SIZE
                  ) -> dict[str, np.ndarray]:
    """Per hook ``[n, len(latents[hook])]``: each latent's largest activation over each text's
    ordinary tokens (unedited model)."""
    from interplab.circuits.attribute import node_values

    prompts = as_prompts(lm, texts)
    vals = node_values(lm, saes, prompts, batch_size)
    out = {}
    for h, idx in latents.items():
        f = vals.f[h][..., list(idx)] * vals.keep[h][..., None]
        out[h] = f.amax(dim=1).double().numpy()
    return out


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


# ----------------------------------------------------------------------------- probes
def _fit(X: np.ndarray, y: np.ndarray, C: float = 1.0) -> Any:
    from interplab.probes import make_probe

    return make_probe("logistic", centering="train", C=C).fit(X, y)


def linear_form(probe: Any, d: int) -> tuple[np.ndarray, float]:
    """``(w, b)`` with ``probe.decision_function(x) = w · x + b`` (read off the probe itself)."""
    b = float(probe.decision_function(np.zeros((1, d)))[0])
    return probe.decision_function(np.eye(d)) - b, b


def group_accuracy(correct: np.ndarray, y: np.ndarray, c: np.ndarray, *, n_boot: int, seed: int
                   ) -> dict[str, Any]:
    """Overall and per-group accuracy and the worst group's, with percentile bootstrap intervals
    (resampling within each group, so every draw keeps the groups' sizes)."""
    rng = np.random.default_rng((seed, 22))
    idx = [np.flatnonzero((y == a) & (c == b)) for a, b in GROUPS]
    accs = np.array([correct[g].mean() for g in idx])
    boots = np.stack([np.array([correct[rng.choice(g, len(g))].mean() for g in idx])
                      for _ in range(n_boot)])  # [B, 4]
    worst = boots.min(axis=1)
    overall = (boots * np.array([len(g) for g in idx])).sum(1) / sum(len(g) for g in idx)

    def ci(v: np.ndarray) -> list[float]:
        return np.quantile(v, [0.025, 0.975]).tolist()

    return {"overall": float(correct.mean()), "overall_ci": ci(overall),
            "worst": float(accs.min()), "worst_ci": ci(worst),
            "worst_group": [int(v) for v in GROUPS[int(np.argmin(accs))]],
            "groups": {f"label={a},cue={b}": {"accuracy": float(v), "ci": ci(boots[:, j]),
                                              "n": int(len(idx[j]))}
                       for j, ((a, b), v) in enumerate(zip(GROUPS, accs, strict=True))},
            "worst_draws": worst}


def paired_worst_p(a: dict[str, Any], b: dict[str, Any]) -> tuple[float, float]:
    """Difference of worst-group accuracies ``a − b`` and a one-sided bootstrap p-value that it is
    not above 0 (the same within-group resamples are used for both: common random numbers);
    the smallest possible p is ``1/(B+1)``."""
    diff = a["worst_draws"] - b["worst_draws"]
    return float(a["worst"] - b["worst"]), float((1 + np.sum(diff <= 0)) / (len(diff) + 1))


@dataclass
class ShiftOutcome:
    """One seed's SHIFT run: the candidates (with correlations), what was ablated, and every
    condition's accuracies; ``cards`` hold the candidates' data for a person to check."""

    seed: int
    candidates: list[dict[str, Any]]
    ablated: dict[str, list[int]]
    random_ablated: list[dict[str, list[int]]]
    conditions: dict[str, dict[str, Any]]
    comparisons: list[dict[str, Any]]
    sizes: dict[str, int]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for cond in d["conditions"].values():
            for acc in (cond if isinstance(cond, list) else [cond]):
                acc.pop("worst_draws", None)
        return d


def _score(lm: LanguageModel, saes: SaeSet, texts: list[str], hook: str, pooling: str,
           split: SpuriousSplit, y: np.ndarray, c: np.ndarray, ablate: dict | None,
           n_boot: int, seed: int, batch_size: int, X: np.ndarray | None = None,
           head: Any = None) -> dict[str, Any]:
    """Probe retrained on the ambiguous rows of (ablated) inputs — or the given ``head``, kept
    as it was — scored on the test rows."""
    if X is None:
        rows = np.unique(np.concatenate([split.train, split.balanced_train, split.test]))
        Xr = probe_inputs(lm, saes, [texts[i] for i in rows], hook, pooling, ablate,
                          batch_size=batch_size)
        X = np.zeros((len(texts), lm.d_model))
        X[rows] = Xr
    probe = head if head is not None else _fit(X[split.train], y[split.train])
    correct = (probe.predict(X[split.test]) == y[split.test]).astype(np.float64)
    out = group_accuracy(correct, y[split.test], c[split.test], n_boot=n_boot, seed=seed)
    # how readable the cue still is: a cue probe fitted on balanced rows, tested on the test rows
    cue = _fit(X[split.balanced_train], c[split.balanced_train])
    out["cue_accuracy"] = float((cue.predict(X[split.test]) == c[split.test]).mean())
    out["inputs"] = X
    return out


def run_shift(lm: LanguageModel, saes: SaeSet, texts: Sequence[str], y: np.ndarray,
              c: np.ndarray, split: SpuriousSplit, hook: str, *, pooling: str = "mean",
              n_candidates: int = 30, min_r: float = 0.3, n_random: int = 3, n_boot: int = DEFAULT_N_BOOT,
              seed: int = 0, batch_size: int = DEFAULT_BATCH_SIZE) -> ShiftOutcome:
    """One SHIFT run (module docstring) on ``texts`` with labels ``y`` and cue ``c`` (0/1)."""
    from interplab.erasure import fit_eraser

    texts, y, c = list(texts), np.asarray(y, dtype=np.int64), np.asarray(c, dtype=np.int64)
    hook = lm.parse_hook(hook).name
    rows = np.unique(np.concatenate([split.train, split.balanced_train, split.val, split.test]))
    X = np.zeros((len(texts), lm.d_model))
    X[rows] = probe_inputs(lm, saes, [texts[i] for i in rows], hook, pooling,
                           batch_size=batch_size)
    base = _fit(X[split.train], y[split.train])
    w, b = linear_form(base, lm.d_model)
    attr = probe_attribution(lm, saes, [texts[i] for i in split.train], hook, w, b, pooling,
                             batch_size=batch_size)
    flat = [(h, i, float(v[i])) for h, v in attr.items() for i in np.flatnonzero(v > 0)]
    flat.sort(key=lambda r: -r[2])
    cand = flat[:n_candidates]
    by_hook: dict[str, list[int]] = {}
    for h, i, _ in cand:
        by_hook.setdefault(h, []).append(int(i))
    maxima = latent_maxima(lm, saes, [texts[i] for i in split.val], by_hook,
                           batch_size=batch_size)
    candidates, ablated = [], {}
    for h, i, score in cand:
        a = maxima[h][:, by_hook[h].index(i)]
        r_cue, r_label = _corr(a, c[split.val]), _corr(a, y[split.val])
        tied = abs(r_cue) >= min_r and abs(r_cue) > abs(r_label)
        candidates.append({"hook": h, "latent": int(i), "attribution": score, "r_cue": r_cue,
                           "r_label": r_label, "cue_tied": bool(tied)})
        if tied:
            ablated.setdefault(h, []).append(int(i))
    notes = []
    if not ablated:
        notes.append(f"none of the {len(cand)} most attributed latents correlates with the cue "
                     f"at |r| ≥ {min_r} more than with the label: nothing was ablated")
    conditions: dict[str, Any] = {}
    conditions["unablated"] = _score(lm, saes, texts, hook, pooling, split, y, c, None, n_boot,
                                     seed, batch_size, X=X)
    conditions["shift"] = (_score(lm, saes, texts, hook, pooling, split, y, c, ablated, n_boot,
                                  seed, batch_size) if ablated else conditions["unablated"])
    conditions["shift_no_retrain"] = _score(lm, saes, texts, hook, pooling, split, y, c, None,
                                            n_boot, seed, batch_size,
                                            X=conditions["shift"]["inputs"], head=base)
    alive = _alive(lm, saes, [texts[i] for i in split.train], batch_size)
    rng = np.random.default_rng((seed, 23))
    random_sets = []
    for _ in range(n_random):
        draw = {}
        for h, v in ablated.items():
            pool = np.setdiff1d(alive[h], v)
            draw[h] = sorted(rng.choice(pool, size=min(len(v), len(pool)), replace=False)
                             .tolist())
        random_sets.append(draw)
    conditions["random"] = [_score(lm, saes, texts, hook, pooling, split, y, c, d, n_boot, seed,
                                   batch_size) for d in random_sets] if ablated else []
    eraser = fit_eraser("leace", X[split.val], c[split.val])
    Xe = eraser(torch.as_tensor(X, dtype=torch.float64)).numpy()
    conditions["leace_oracle"] = _score(lm, saes, texts, hook, pooling, split, y, c, None, n_boot,
                                        seed, batch_size, X=Xe)
    bal = SpuriousSplit(split.balanced_train, split.balanced_train, split.val, split.test)
    conditions["balanced_oracle"] = _score(lm, saes, texts, hook, pooling, bal, y, c, None,
                                           n_boot, seed, batch_size, X=X)
    for cond in conditions.values():
        for acc in (cond if isinstance(cond, list) else [cond]):
            acc.pop("inputs", None)
    comparisons = []
    versus = [("unablated", conditions["unablated"])]
    versus += [(f"random {j + 1}", r) for j, r in enumerate(conditions["random"])]
    for name, other in versus:
        diff, p = paired_worst_p(conditions["shift"], other)
        comparisons.append({"versus": name, "worst_difference": diff, "p": p,
                            "p_floor": 1 / (n_boot + 1)})
    return ShiftOutcome(seed, candidates, ablated, random_sets, conditions, comparisons,
                        split.sizes(), notes)


def _alive(lm: LanguageModel, saes: SaeSet, texts: list[str], batch_size: int
           ) -> dict[str, np.ndarray]:
    from interplab.circuits.attribute import node_values
    from interplab.circuits.circuit import alive_latents

    return alive_latents(node_values(lm, saes, as_prompts(lm, texts), batch_size), saes)
