"""Erasure's effect on the model's own true/false answers.

Each held-out statement is put in a few-shot prompt ending "… This statement is:" and scored by
the model's ``P(true word) − P(false word)`` at the answer token (the causal study's prompts and
metric, run through :mod:`interplab.interventions`). An eraser runs at one hook on every token of
the prompt's own tokens (the few-shot prefix is run once and never edited). Reported per eraser,
with bootstrap intervals: the per-example change of the score on true and on false statements,
the separation (mean score on true − mean score on false) and the model's own accuracy (the sign
of the score) before and after, and the KL at the answer token; beside it, the same for
``n_random`` random subspaces of the same rank (the control: an edit of that size that does not
target the concept).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from interplab.defaults import DEFAULT_BATCH_SIZE, DEFAULT_N_BOOT
from interplab.erasure.erasers import LinearEraser
from interplab.erasure.in_model import _check


def _separation(score: np.ndarray, y: np.ndarray) -> float:
    if y.min() == y.max():  # a resample with one class: undefined, left out of the interval
        return float("nan")
    return float(score[y == 1].mean() - score[y == 0].mean())


def _interval(values: np.ndarray, n_boot: int, seed: int) -> dict[str, float]:
    from interplab.controls import bootstrap_mean

    b = bootstrap_mean(np.asarray(values, dtype=np.float64)[None], n_boot=n_boot, seed=seed)
    return {"value": b["value"][0], "lo": b["lo"][0], "hi": b["hi"][0], "n": b["n"]}


def _triple(value: float, lo: float, hi: float) -> dict[str, float]:
    return {"value": value, "lo": lo, "hi": hi}


def behaviour_summary(score: np.ndarray, base: np.ndarray, y: np.ndarray, *, n_boot: int,
                      seed: int, kl: np.ndarray | None = None) -> dict[str, Any]:
    """Scores ``[n]`` after an edit and before it (``base``), labels ``y`` (1 = true): per-class
    mean score and change, separation and its change, the model's accuracy and its change, each
    with a percentile-bootstrap interval (the change intervals are paired: the same resampled
    statements before and after)."""
    from interplab.controls import bootstrap_statistic

    score, base, y = (np.asarray(a, dtype=np.float64) for a in (score, base, y))
    delta = score - base
    out: dict[str, Any] = {}
    for cls, name in ((1, "true"), (0, "false")):
        out[f"score_{name}"] = _interval(score[y == cls], n_boot, seed)
        out[f"delta_{name}"] = _interval(delta[y == cls], n_boot, seed)
    out["separation"] = _triple(*bootstrap_statistic(_separation, score, y, n_boot=n_boot,
                                                     seed=seed))
    out["separation_change"] = _triple(*bootstrap_statistic(
        lambda s, b, t: _separation(s, t) - _separation(b, t), score, base, y, n_boot=n_boot,
        seed=seed))
    right, right0 = ((a > 0) == (y == 1) for a in (score, base))
    out["accuracy"] = _interval(right, n_boot, seed)
    out["accuracy_change"] = _interval(right.astype(float) - right0, n_boot, seed)
    if kl is not None:
        out["kl"] = _interval(kl, n_boot, seed)
    out["per_example_delta"] = delta.tolist()
    return out


def truth_behaviour(lm: Any, hook: str, erasers: Mapping[str, LinearEraser],
                    statements: Sequence[str], labels: Sequence[int], prefix: str, metric: Any,
                    *, tail: str = " This statement is:", n_random: int = 20,
                    bias: torch.Tensor | None = None, batch_size: int = DEFAULT_BATCH_SIZE, n_boot: int = DEFAULT_N_BOOT,
                    seed: int = 0) -> dict[str, Any]:
    """The model's true/false score on ``statements`` (each followed by ``tail``, after the
    few-shot ``prefix``) plainly and with each label-free eraser at ``hook``; see the module
    docstring. ``random[rank]`` pools ``n_random`` random subspaces of each rank used (centred at
    ``bias``): the summary of the per-example mean over them, and the distribution of their
    separation changes, against which each eraser's is placed (``vs_random``: the two-sided
    :func:`interplab.controls.null_p_value`, uncorrected; the erasure study corrects it)."""
    from interplab.activations import Positions
    from interplab.controls import distribution_summary, null_p_value
    from interplab.erasure.random_subspace import random_subspace_eraser
    from interplab.interventions import engine
    from interplab.interventions.prompts import encode

    lm.parse_hook(hook)
    for e in erasers.values():
        _check(lm, hook, e)
    y = np.asarray(labels, dtype=np.int64)
    p = encode(lm, [s + tail for s in statements], prefix)
    read = Positions.parse("last")
    base, base_logp = engine.clean_run(lm, p, metric, read=read, batch_size=batch_size)
    jobs = np.argsort(p.lengths, kind="stable")

    def scored(eraser: LinearEraser) -> tuple[np.ndarray, np.ndarray]:
        e = eraser.to(lm.dtype, lm.device)
        out = engine.run_jobs(lm, p, jobs, lambda batch, sl: {hook: e}, metric, read=read,
                              batch_size=batch_size, reference_logp=base_logp)
        score, kl = np.empty(len(jobs)), np.empty(len(jobs))
        score[jobs], kl[jobs] = out.metric, out.kl
        return score, kl

    result: dict[str, Any] = {"erasers": {}, "random": {}}
    for rank in sorted({e.rank for e in erasers.values()}):
        runs = [scored(random_subspace_eraser(lm.d_model, rank, seed=seed + 1 + k, bias=bias))
                for k in range(n_random)]
        scores = np.stack([s for s, _ in runs])
        mean_kl = np.stack([k for _, k in runs]).mean(0)
        summary = behaviour_summary(scores.mean(0), base, y, n_boot=n_boot, seed=seed,
                                    kl=mean_kl)
        changes = [_separation(s, y) - _separation(base, y) for s in scores]
        result["random"][str(rank)] = {**summary, "n_random": n_random,
                                       "separation_changes": distribution_summary(changes)}
    for name, eraser in erasers.items():
        score, kl = scored(eraser)
        summary = behaviour_summary(score, base, y, n_boot=n_boot, seed=seed, kl=kl)
        null = result["random"][str(eraser.rank)]["separation_changes"]["values"]
        change = summary["separation_change"]["value"]
        result["erasers"][name] = {**summary, "rank": eraser.rank,
                                   "vs_random": null_p_value(change, null).to_dict()}
    plain = behaviour_summary(base, base, y, n_boot=n_boot, seed=seed)
    result["plain"] = {k: plain[k] for k in ("score_true", "score_false", "separation",
                                              "accuracy")}
    result["info"] = {"hook": hook, "n_prompts": len(p), "n_true": int(y.sum()),
                      "prefix_tokens": len(p.prefix_ids), "tail": tail,
                      "metric": getattr(metric, "name", type(metric).__name__),
                      "positions": "every token of each prompt's own tokens (statement and "
                                   "tail); the few-shot prefix is not edited",
                      "read": "last token (the answer is predicted there)"}
    return result
