"""Erasure study: erase a concept (truth of statements) at one layer with every method, check
each erasure on held-out statements, measure what it costs the model on neutral text, and count
how many linear directions must go before the concept is no longer linearly decodable.

dataset → entity split (train / test) → last-token ``resid_post`` at ``layer`` → per method: fit
on train, :func:`~interplab.erasure.verify_erasure` on test, and for label-free methods the
in-model ΔCE / KL next to a random subspace of the same rank → directions curve (real vs
shuffled labels) → :class:`ErasureResult`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from interplab.errors import InterplabError
from interplab.studies.causal import CausalConfig
from interplab.studies.config import JsonResult

DEFAULT_METHODS = ("leace", "orth", "mean-diff", "inlp", "oracle", "quadratic", "mean-match",
                   "median-match")
TOKENS = "last token of each statement, blocks.{layer}.hook_resid_post"


@dataclass
class ErasureConfig:
    """Everything that defines an erasure run (saved with the result)."""

    model: str = field(default="smollm2-135m",
        metadata={"help": "Model: registry name, HF folder or .gguf file."})
    dataset: str = field(default="cities",
        metadata={"help": "Statement dataset (a registry name or a .csv file)."})
    layer: int | None = field(default=None,
        metadata={"help": "Block whose resid_post is erased (none: the middle block)."})
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS),
        metadata={"help": "Erasure methods to fit and check."})
    max_statements: int | None = field(default=1200,
        metadata={"help": "Balanced subsample of at most this many statements (none: all)."})
    test_fraction: float = field(default=0.3,
        metadata={"help": "Share of statements (by entity) held out for every check."})
    inlp_rounds: int = field(default=8,
        metadata={"help": "Rounds (directions) of the inlp method."})
    directions_max_rounds: int = field(default=40,
        metadata={"help": "Cap on erase-and-retrain rounds of the directions curve (0 skips it)."})
    neutral_sequences: int = field(default=32,
        metadata={"help": "Sequences of neutral text for the in-model ΔCE/KL (0 skips it)."})
    context_length: int = field(default=64, metadata={"help": "Tokens per neutral-text sequence."})
    behaviour_prompts: int = field(default=64, metadata={
        "help": "Held-out statements (half true) whose few-shot true/false answer is scored "
        "with and without each label-free erasure (0 skips it)."})
    behaviour_random: int = field(default=20, metadata={
        "help": "Random subspaces of the same rank scored beside each erasure (at least 20)."})
    n_shots: int = field(default=4, metadata={
        "help": "Labelled training statements in the few-shot prefix of those prompts."})
    answer_true: list[str] = field(default_factory=lambda: CausalConfig().answer_true, metadata={
        "help": "Spellings of the true answer (read after a space); the first that is one token "
        "is used (as in the causal study)."})
    answer_false: list[str] = field(default_factory=lambda: CausalConfig().answer_false,
        metadata={"help": "Spellings of the false answer, likewise."})
    corpus: str = field(default="kjv", metadata={"help": "Neutral corpus (kjv or python-docs)."})
    seed: int = field(default=0,
        metadata={"help": "Seed for the dataset, split, controls and classifiers."})
    n_boot: int = field(default=1000, metadata={"help": "Bootstrap resamples per interval."})
    batch_size: int = field(default=32, metadata={"help": "Texts per forward pass."})
    device: str | None = field(default=None, metadata={"help": "Device (none: auto)."})

    def validate(self) -> None:
        from interplab.erasure import METHODS

        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise InterplabError(f"unknown or no erasure method(s) {bad}; choose from "
                                 f"{', '.join(METHODS)}")
        if not 0 < self.test_fraction < 1:
            raise InterplabError(f"test_fraction must lie strictly between 0 and 1, got "
                                 f"{self.test_fraction}")
        if self.inlp_rounds < 1 or self.directions_max_rounds < 0 or self.neutral_sequences < 0:
            raise InterplabError("inlp_rounds must be ≥ 1; directions_max_rounds and "
                                 "neutral_sequences ≥ 0 (0 skips that part)")
        if self.behaviour_prompts < 0 or self.n_shots < 1:
            raise InterplabError("behaviour_prompts must be ≥ 0 (0 skips it) and n_shots ≥ 1")
        if self.behaviour_prompts and self.behaviour_random < 20:
            raise InterplabError(f"behaviour_random must be at least 20 (one random subspace is "
                                 f"one draw, and the control is a distribution), not "
                                 f"{self.behaviour_random}")
        if self.context_length < 2:
            raise InterplabError(f"context_length must be ≥ 2, got {self.context_length}")


@dataclass
class ErasureResult(JsonResult):
    """Per method: ``checks[method]`` (:class:`~interplab.erasure.ErasureCheck` as a dict) and,
    for label-free methods, ``in_model[method] = {"erased": {...}, "random": {...}}`` (ΔCE, KL);
    ``directions`` holds the curves for real and shuffled labels; ``behaviour`` the change in
    the model's own true/false answers."""

    config: dict[str, Any]
    model: dict[str, Any]
    dataset: dict[str, Any]
    layer: int
    hook: str
    n_train: int
    n_test: int
    split_rule: str
    checks: dict[str, dict[str, Any]]
    in_model: dict[str, dict[str, Any]]
    directions: dict[str, Any] | None
    notes: list[str]
    timings: dict[str, float]
    # the model's own true/false answers with and without each label-free erasure
    # (:func:`interplab.erasure.truth_behaviour`); None when skipped and in older result files
    behaviour: dict[str, Any] | None = None
    # every p-value of the study (each eraser's separation change against its random
    # subspaces) corrected as one family (controls.multiple.Family.to_dict()); None when the
    # behaviour part is skipped and in older result files
    statistics: dict[str, Any] | None = None


def load_split(dataset: str, max_statements: int | None, test_fraction: float,
               seed: int) -> tuple[Any, Any]:
    """A statement dataset and its train/test split by entity (no validation part)."""
    from interplab.datasets import entity_split, load_dataset

    ds = load_dataset(dataset, seed=seed, max_size=max_statements)
    return ds, entity_split(ds, (1 - test_fraction, 0.0, test_fraction), seed=seed)


def harvest_split(config: Any) -> tuple[Any, Any, Any, int, str, Any]:
    """``(dataset, split, lm, layer, hook name, last-token resid_post [n, d])`` for a study
    config with ``dataset``, ``max_statements``, ``test_fraction``, ``seed``, ``model``,
    ``device``, ``layer`` (None: the middle block) and ``batch_size``."""
    from interplab.activations import harvest
    from interplab.models import HookPoint, load

    ds, split = load_split(config.dataset, config.max_statements, config.test_fraction,
                           config.seed)
    lm = load(config.model, device=config.device)
    layer = lm.n_layers // 2 if config.layer is None else config.layer
    hook = lm.parse_hook(HookPoint.resid_post(layer))
    acts = harvest(lm, ds.statements, [hook], "last", batch_size=config.batch_size,
                   progress=False)[hook]
    return ds, split, lm, layer, hook.name, acts


def _in_model(lm: Any, hook: str, erasers: dict[str, Any], tokens: Any, config: ErasureConfig,
              bias: Any) -> dict[str, Any]:
    """ΔCE/KL of each label-free eraser and of a random subspace of the same rank."""
    from interplab.erasure import erasure_costs, random_subspace_eraser

    run = {}
    for m, e in erasers.items():
        run[m] = e
        run[m + "/random"] = random_subspace_eraser(lm.d_model, e.rank, seed=config.seed, bias=bias)
    costs = erasure_costs(lm, hook, run, tokens, batch_size=config.batch_size)
    return {m: {"erased": costs[m], "random": costs[m + "/random"]} for m in erasers}


def _fit_and_check(config: ErasureConfig, xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray,
                   yte: np.ndarray) -> tuple[dict[str, Any], dict[str, Any]]:
    from interplab.erasure import fit_eraser, verify_erasure

    erasers, checks = {}, {}
    for method in config.methods:
        opts = {"n_rounds": config.inlp_rounds} if method == "inlp" else {}
        erasers[method] = fit_eraser(method, xtr, ytr, seed=config.seed, **opts)
        checks[method] = verify_erasure(erasers[method], xtr, ytr, xte, yte, seed=config.seed,
                                        n_boot=config.n_boot).to_dict()
    return erasers, checks


def run_erasure(config: ErasureConfig) -> ErasureResult:
    """Run the study described by ``config`` (see the module docstring)."""
    import torch

    from interplab.erasure import directions_curve, neutral_tokens

    config.validate()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    ds, split, lm, layer, hook, acts = harvest_split(config)
    prompts = _behaviour_prompts(lm, ds, split, config) if config.behaviour_prompts else None
    acts = acts.to(torch.float64).numpy()
    timings["harvest_s"] = time.perf_counter() - t0
    xtr, ytr = acts[split.train], ds.labels[split.train]
    xte, yte = acts[split.test], ds.labels[split.test]
    t = time.perf_counter()
    erasers, checks = _fit_and_check(config, xtr, ytr, xte, yte)
    timings["fit_and_check_s"] = time.perf_counter() - t
    in_model: dict[str, Any] = {}
    notes: list[str] = []
    bias = torch.from_numpy(xtr.mean(0))
    if config.neutral_sequences:
        t = time.perf_counter()
        tokens = neutral_tokens(lm, corpus=config.corpus, context_length=config.context_length,
                                n_sequences=config.neutral_sequences)
        in_model = _in_model(lm, hook, {m: e for m, e in erasers.items() if not e.needs_labels},
                             tokens, config, bias)
        timings["in_model_s"] = time.perf_counter() - t
        skipped = [m for m, e in erasers.items() if e.needs_labels]
        if skipped:
            notes.append(f"{', '.join(skipped)} need each row's label to apply, so they were not "
                         "run inside the model")
    behaviour = statistics = None
    label_free = {m: e for m, e in erasers.items() if not e.needs_labels}
    if prompts is not None and label_free:
        t = time.perf_counter()
        behaviour = _behaviour(lm, hook, label_free, ds, config, bias, prompts)
        statistics = _statistics(behaviour)
        timings["behaviour_s"] = time.perf_counter() - t
    directions = None
    if config.directions_max_rounds:
        t = time.perf_counter()
        directions = directions_curve(xtr, ytr, xte, yte, max_rounds=config.directions_max_rounds,
                                      seed=config.seed, n_boot=config.n_boot)
        timings["directions_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    return ErasureResult(
        config=asdict(config), model=lm.identity(), dataset=ds.identity, layer=layer, hook=hook,
        n_train=len(split.train), n_test=len(split.test), split_rule=split.rule, checks=checks,
        in_model=in_model, directions=directions, notes=notes, timings=timings,
        behaviour=behaviour, statistics=statistics)


def _behaviour_prompts(lm: Any, ds: Any, split: Any, config: ErasureConfig
                       ) -> tuple[dict[str, Any], str, np.ndarray]:
    """The causal study's answer words, few-shot prefix (examples from the training split) and
    held-out rows, checked to fit the model's context before anything runs."""
    from interplab.interventions.prompts import (
        TAIL,
        answer_tokens,
        check_prompts_fit,
        held_out_rows,
    )

    answers = answer_tokens(lm, config.answer_true, config.answer_false)
    rows = held_out_rows(ds, split.test, config.behaviour_prompts, config.seed)
    prefix = check_prompts_fit(lm, ds, split.train, answers, config.n_shots, config.seed,
                               [ds.statements[i] + TAIL for i in rows])
    return answers, prefix, rows


def _behaviour(lm: Any, hook: str, erasers: dict[str, Any], ds: Any, config: ErasureConfig,
               bias: Any, prompts: tuple[dict[str, Any], str, np.ndarray]) -> dict[str, Any]:
    """The causal study's few-shot true/false prompts (its answer words; examples from the
    training split) on held-out statements, scored with and without each eraser."""
    from interplab.erasure import truth_behaviour
    from interplab.interventions import ProbDiff
    from interplab.interventions.prompts import TAIL

    answers, prefix, rows = prompts
    out = truth_behaviour(
        lm, hook, erasers, [ds.statements[i] for i in rows], ds.labels[rows], prefix,
        ProbDiff(answers["true_id"], answers["false_id"]), tail=TAIL,
        n_random=config.behaviour_random, bias=bias, batch_size=config.batch_size,
        n_boot=config.n_boot, seed=config.seed)
    out["info"].update(answers={k: answers[k] for k in ("true", "false")}, prefix=prefix,
                       rows=rows.tolist())
    return out


def _statistics(behaviour: dict[str, Any]) -> dict[str, Any]:
    """Each eraser's separation change against the random subspaces of its rank (two-sided),
    the study's p-values, corrected as one family; ``q``, ``q_bound`` and ``verdict`` are
    written into each eraser's ``vs_random`` as well."""
    from interplab.controls.multiple import correct_cells

    family = correct_cells([(name, e["vs_random"], e["separation_change"]["value"])
                            for name, e in behaviour["erasers"].items()])
    out = family.to_dict()
    out["family"] = ("every p-value of this study: each label-free eraser's change of the "
                     "model's true/false separation against random subspaces of the same rank "
                     "(two-sided)")
    return out
