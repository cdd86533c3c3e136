"""The erasure study's run: one dataset at the layer chosen on validation → per method: fit on
the train split, check on the test split, and for label-free methods the in-model ΔCE / KL and
the model's own true/false answers next to random subspaces of the same rank → the directions
curve → :class:`ErasureResult`."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from interplab.controls.multiple import correct_cells
from interplab.datasets import Split, StatementDataset
from interplab.erasure import (
    directions_curve,
    erasure_costs,
    fit_eraser,
    neutral_tokens,
    random_subspace_eraser,
    truth_behaviour,
    verify_erasure,
)
from interplab.interventions import ProbDiff
from interplab.interventions.prompts import TAIL, answer_tokens, check_prompts_fit, held_out_rows
from interplab.models import LanguageModel
from interplab.studies.erasure.config import ErasureConfig, ErasureResult
from interplab.study.harvest import statements_at_layer
from interplab.study.result import versions
from interplab.threads import AdaptiveThreads


def _in_model(lm: LanguageModel, hook: str, erasers: dict[str, Any], tokens: torch.Tensor,
              config: ErasureConfig, bias: torch.Tensor) -> dict[str, Any]:
    """ΔCE/KL and edit size of each label-free eraser on neutral text, beside
    ``config.in_model_random`` random subspaces of each rank used (shared by the erasers of
    that rank; their mean, range and draws are kept)."""
    run = dict(erasers)
    ranks = sorted({e.rank for e in erasers.values()})
    for rank in ranks:
        for k in range(config.in_model_random):
            run[f"random/{rank}/{k}"] = random_subspace_eraser(
                lm.d_model, rank, seed=config.run.seed + 1 + k, bias=bias)
    costs = erasure_costs(lm, hook, run, tokens, batch_size=config.run.batch_size)
    random = {}
    for rank in ranks:
        draws = [costs[f"random/{rank}/{k}"] for k in range(config.in_model_random)]
        summary: dict[str, Any] = {"n_draws": len(draws), "n_tokens": draws[0]["n_tokens"]}
        for key in ("delta_ce", "kl", "edit_size"):
            v = np.array([d[key] for d in draws])
            summary.update({key: float(v.mean()), key + "_min": float(v.min()),
                            key + "_max": float(v.max())})
        summary["draws"] = [{k: d[k] for k in ("delta_ce", "kl", "edit_size")} for d in draws]
        random[rank] = summary
    return {m: {"erased": costs[m], "random": random[e.rank]} for m, e in erasers.items()}


def _fit_and_check(config: ErasureConfig, xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray,
                   yte: np.ndarray) -> tuple[dict[str, Any], dict[str, Any]]:
    erasers, checks = {}, {}
    for method in config.methods:
        opts = {"n_rounds": config.inlp_rounds} if method == "inlp" else {}
        erasers[method] = fit_eraser(method, xtr, ytr, seed=config.run.seed, **opts)
        checks[method] = verify_erasure(erasers[method], xtr, ytr, xte, yte, seed=config.run.seed,
                                        n_boot=config.run.n_boot).to_dict()
    return erasers, checks


def run_erasure(config: ErasureConfig) -> ErasureResult:
    """Run the study described by ``config`` (see the package docstring)."""
    config.validate()
    with AdaptiveThreads(config.run.threads):
        return _run(config)


def _run(config: ErasureConfig) -> ErasureResult:
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    at = statements_at_layer(config.run, config.data, config.dataset, config.layer)
    ds, split, lm, hook = at.dataset, at.split, at.lm, at.hook
    prompts = _behaviour_prompts(lm, ds, split, config) if config.behaviour_prompts else None
    acts = at.acts.astype(np.float64)
    timings["harvest_s"] = time.perf_counter() - t0
    xtr, ytr = acts[split.train], ds.labels[split.train]
    xte, yte = acts[split.test], ds.labels[split.test]
    t = time.perf_counter()
    erasers, checks = _fit_and_check(config, xtr, ytr, xte, yte)
    timings["fit_and_check_s"] = time.perf_counter() - t
    in_model: dict[str, Any] = {}
    notes: list[str] = [f"layer {at.choice.layer}: {at.choice.rule}; fitted on the train split "
                        f"({len(split.train)}), checked on the test split ({len(split.test)})"]
    bias = torch.from_numpy(xtr.mean(0))
    label_free = {m: e for m, e in erasers.items() if not e.needs_labels}
    if config.neutral_sequences:
        t = time.perf_counter()
        tokens = neutral_tokens(lm, corpus=config.corpus, context_length=config.context_length,
                                n_sequences=config.neutral_sequences)
        in_model = _in_model(lm, hook, label_free, tokens, config, bias)
        timings["in_model_s"] = time.perf_counter() - t
        skipped = [m for m, e in erasers.items() if e.needs_labels]
        if skipped:
            notes.append(f"{', '.join(skipped)} need each row's label to apply, so they were not "
                         "run inside the model")
        notes.append(f"in-model ΔCE and KL over {config.neutral_sequences} neutral sequences of "
                     f"{config.context_length} tokens ({config.corpus}), beside "
                     f"{config.in_model_random} random subspaces of each rank; an eraser's "
                     "guarantee holds on the distribution it was fitted on (these statements' "
                     "last tokens), not on other text: compare its edit size on neutral tokens "
                     "(‖Δx‖/‖x‖ in the in-model columns) with its size on the statements")
    behaviour = statistics = None
    if prompts is not None and label_free:
        t = time.perf_counter()
        behaviour = _behaviour(lm, hook, label_free, ds, config, bias, prompts)
        statistics = _statistics(behaviour)
        timings["behaviour_s"] = time.perf_counter() - t
    directions = None
    if config.directions_max_rounds:
        t = time.perf_counter()
        directions = directions_curve(xtr, ytr, xte, yte, max_rounds=config.directions_max_rounds,
                                      seed=config.run.seed, n_boot=config.run.n_boot)
        timings["directions_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    return ErasureResult(
        config=asdict(config), versions=versions(), model=lm.identity(), dataset=ds.identity,
        layer=at.choice.layer, layer_choice=at.choice.to_dict(), hook=hook,
        n_train=len(split.train), n_test=len(split.test), split_rule=split.rule, checks=checks,
        in_model=in_model, directions=directions, notes=notes, timings=timings,
        behaviour=behaviour, statistics=statistics)


def _behaviour_prompts(lm: LanguageModel, ds: StatementDataset, split: Split,
                       config: ErasureConfig) -> tuple[dict[str, Any], str, np.ndarray]:
    """The few-shot true/false prompt's answer words, prefix (examples from the training split)
    and held-out rows, checked to fit the model's context before anything runs."""
    p, seed = config.prompt, config.run.seed
    answers = answer_tokens(lm, p.answer_true, p.answer_false)
    rows = held_out_rows(ds, split.test, config.behaviour_prompts, seed)
    prefix = check_prompts_fit(lm, ds, split.train, answers, p.n_shots, seed,
                               [ds.statements[i] + TAIL for i in rows])
    return answers, prefix, rows


def _behaviour(lm: LanguageModel, hook: str, erasers: dict[str, Any], ds: StatementDataset,
               config: ErasureConfig, bias: torch.Tensor,
               prompts: tuple[dict[str, Any], str, np.ndarray]) -> dict[str, Any]:
    """The few-shot true/false prompts on held-out statements, scored with and without each
    eraser."""
    answers, prefix, rows = prompts
    out = truth_behaviour(
        lm, hook, erasers, [ds.statements[i] for i in rows], ds.labels[rows], prefix,
        ProbDiff(answers["true_id"], answers["false_id"]), tail=TAIL,
        n_random=config.behaviour_random, bias=bias, batch_size=config.run.batch_size,
        n_boot=config.run.n_boot, seed=config.run.seed)
    out["info"].update(answers={k: answers[k] for k in ("true", "false")}, prefix=prefix,
                       rows=rows.tolist())
    return out


def _statistics(behaviour: dict[str, Any]) -> dict[str, Any]:
    """Each eraser's separation change against the random subspaces of its rank (two-sided),
    the study's p-values, corrected as one family; ``q``, ``q_bound`` and ``verdict`` are
    written into each eraser's ``vs_random`` as well."""
    family = correct_cells([(name, e["vs_random"], e["separation_change"]["value"])
                            for name, e in behaviour["erasers"].items()])
    out = family.to_dict()
    out["family"] = ("every p-value of this study: each label-free eraser's change of the "
                     "model's true/false separation against random subspaces of the same rank "
                     "(two-sided)")
    return out
