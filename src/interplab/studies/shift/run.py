"""The SHIFT study: does ablating the SAE latents tied to a spurious cue make a probe generalise?

Data flow: an XOR dataset (``interplab.datasets.xor``: ``distractor_cities`` — "The city of Lima
is in Peru. banana" — or ``speaker_cities`` — "Alice: The city of …"; every (label, cue)
combination exactly balanced per entity group) → per seed an entity split (no city pair on two
sides) → the ambiguous training set (true statements carry one cue word, false ones the other:
no training label separates truth from the cue), balanced validation and test sets
(:func:`interplab.circuits.shift.spurious_split`) → SAEs at a few residual hooks (loaded or
trained and cached, as in the circuit study) → SHIFT and its controls
(:func:`interplab.circuits.shift.run_shift`) → accuracies overall and per group with intervals
over test examples and spread over seeds, one-sided bootstrap p-values of SHIFT's worst-group
gain, Benjamini–Hochberg corrected together → :class:`ShiftResult`.

This module imports no torch at module level (the command line reads the config cheaply).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from interplab.circuits.cards import latent_cards
from interplab.circuits.config import load_or_train
from interplab.circuits.shift import run_shift, spurious_split
from interplab.circuits.splice import SaeSet, sae_set
from interplab.controls.multiple import benjamini_hochberg
from interplab.datasets import entity_split
from interplab.datasets.xor import GENERATORS, subsample_groups
from interplab.errors import InterplabError
from interplab.models import LanguageModel, load
from interplab.studies.shift.config import (
    CONDITION_WORDS,
    CONDITIONS,
    CUE_WORDS,
    DATASETS,
    ShiftConfig,
    ShiftResult,
)
from interplab.study.result import versions
from interplab.threads import limit_threads, resolve_threads


def _table(seeds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per condition: overall and worst-group accuracy, mean and range over seeds (random: over
    seeds and draws), and the first seed's intervals over test examples."""
    rows = []
    for name in CONDITIONS:
        accs = []
        for s in seeds:
            got = s["conditions"][name]
            accs += got if isinstance(got, list) else [got]
        if not accs:
            continue
        first = seeds[0]["conditions"][name]
        first = first[0] if isinstance(first, list) else first
        overall = [a["overall"] for a in accs]
        worst = [a["worst"] for a in accs]
        cue = [a["cue_accuracy"] for a in accs if "cue_accuracy" in a]
        rows.append({"condition": name, "words": CONDITION_WORDS[name], "n_runs": len(accs),
                     "overall_mean": float(np.mean(overall)), "overall_min": float(min(overall)),
                     "overall_max": float(max(overall)), "worst_mean": float(np.mean(worst)),
                     "worst_min": float(min(worst)), "worst_max": float(max(worst)),
                     "cue_accuracy_mean": float(np.mean(cue)) if cue else None,
                     "first_seed_overall_ci": first["overall_ci"],
                     "first_seed_worst_ci": first["worst_ci"]})
    return rows


def _tests(seeds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = [{"seed": s["seed"], **c} for s in seeds for c in s["comparisons"]]
    q = benjamini_hochberg([r["p"] for r in rows]) if rows else []
    for r, qi in zip(rows, q, strict=True):
        r["q"] = float(qi)
        r["at_floor"] = bool(r["p"] <= r["p_floor"] * (1 + 1e-9))
    return rows


def _summary(table: list[dict[str, Any]], tests: list[dict[str, Any]], seeds: list[dict],
             n_seeds: int) -> list[str]:
    by = {r["condition"]: r for r in table}
    out = []
    u, s = by["unablated"], by["shift"]
    n_abl = [sum(len(v) for v in x["ablated"].values()) for x in seeds]
    readable = (f" The cue stays readable by a linear probe at {s['cue_accuracy_mean']:.2f} after "
                f"the ablation ({u['cue_accuracy_mean']:.2f} before)."
                if s.get("cue_accuracy_mean") is not None else "")
    out.append(f"SHIFT ablated {min(n_abl)}–{max(n_abl)} cue latents per seed; worst-group "
               f"accuracy on the balanced test set went from {u['worst_mean']:.2f} (range "
               f"{u['worst_min']:.2f}–{u['worst_max']:.2f} over {n_seeds} seeds) to "
               f"{s['worst_mean']:.2f} ({s['worst_min']:.2f}–{s['worst_max']:.2f}); overall "
               f"{u['overall_mean']:.2f} → {s['overall_mean']:.2f}." + readable)
    vs_u = [t for t in tests if t["versus"] == "unablated"]
    vs_r = [t for t in tests if t["versus"].startswith("random")]
    if vs_u:
        sig = sum(t["q"] <= 0.05 for t in vs_u)
        sig_r = sum(t["q"] <= 0.05 for t in vs_r)
        line = (f"SHIFT's worst-group gain over the unablated probe is significant (BH q ≤ "
                f"0.05, one-sided bootstrap within groups, {len(tests)} p-values corrected "
                f"together) in {sig} of {len(vs_u)} seeds")
        if vs_r:
            line += (f"; over ablating as many random latents in {sig_r} of {len(vs_r)} "
                     "comparisons" + ("" if sig_r else ", so a gain is explained by the "
                                      "random-latent control"))
        out.append(line + ".")
    if "random" in by:
        r = by["random"]
        out.append(f"Control: ablating as many random latents gives worst-group "
                   f"{r['worst_mean']:.2f} ({r['worst_min']:.2f}–{r['worst_max']:.2f} over "
                   f"{r['n_runs']} draws).")
    lo, bo = by["leace_oracle"], by["balanced_oracle"]
    out.append(f"Oracles: LEACE erasure of the cue {lo['worst_mean']:.2f}, balanced training "
               f"data {bo['worst_mean']:.2f} (worst-group).")
    return out


def _cards(lm: LanguageModel, saes: SaeSet, cfg: ShiftConfig, seed: dict[str, Any]
           ) -> list[dict[str, Any]]:
    """Cards of one seed's candidate latents, with their attribution and correlations."""
    by_hook: dict[str, list[int]] = {}
    for c in seed["candidates"]:
        by_hook.setdefault(c["hook"], []).append(int(c["latent"]))
    out = latent_cards(lm, saes, cfg.sae.corpus_data(), by_hook, n_texts=48, n_contexts=3,
                       window=5, n_logits=5, batch_size=cfg.run.batch_size)
    for card in out:
        row = next(c for c in seed["candidates"]
                   if c["hook"] == card["hook"] and c["latent"] == card["index"])
        card.update({k: row[k] for k in ("attribution", "r_cue", "r_label", "cue_tied")})
    out.sort(key=lambda c: -c["attribution"])
    return out


def run_shift_study(config: ShiftConfig, out_dir: str | Path | None = None,
                    progress: bool = True) -> ShiftResult:
    """Run the SHIFT study described by ``config``."""

    config.validate()
    cfg, run = config, config.run
    out_dir = Path(out_dir) if out_dir is not None else Path("runs/shift")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    cue = DATASETS[cfg.dataset]
    ds = GENERATORS[cfg.dataset](seed=run.seed)
    if cfg.data.max_per_dataset and cfg.data.max_per_dataset < len(ds):
        ds = subsample_groups(ds, cfg.data.max_per_dataset, seed=run.seed)
    y = np.asarray(ds.labels, dtype=np.int64)
    c = np.asarray(ds.metadata[cue], dtype=np.int64)
    lm = load(run.model, device=run.device)
    bad = [layer for layer in cfg.layers if layer >= lm.n_layers]
    probe_layer = cfg.probe_layer if cfg.probe_layer is not None else max(cfg.layers)
    if bad or probe_layer >= lm.n_layers:
        raise InterplabError(f"--layers {cfg.layers} / --probe-layer {probe_layer} reach beyond "
                             f"{lm.name}'s {lm.n_layers} blocks")
    hooks = [hp.name for hp in lm.resolve_hooks(
        [f"blocks.{layer}.hook_resid_post" for layer in cfg.layers if layer <= probe_layer])]
    probe_hook = f"blocks.{probe_layer}.hook_resid_post"
    timings["load_s"] = time.perf_counter() - t0
    seeds = []
    with limit_threads(resolve_threads(run.threads)):
        t = time.perf_counter()
        saes_by, record = load_or_train(lm, hooks, cfg.sae, [cfg.sae.sae_architecture],
                                        run.seed, out_dir, progress)
        saes = sae_set(lm, {h: saes_by[(h, cfg.sae.sae_architecture)] for h in hooks})
        timings["saes_s"] = time.perf_counter() - t
        t = time.perf_counter()
        for k in range(cfg.n_seeds):
            seed = run.seed + k
            parts = entity_split(ds, tuple(cfg.data.split), seed=seed)
            split = spurious_split(y, c, parts, seed)
            outcome = run_shift(lm, saes, ds.statements, y, c, split, probe_hook,
                                pooling=cfg.pooling, n_candidates=cfg.n_candidates,
                                min_r=cfg.min_r, n_random=cfg.n_random, n_boot=run.n_boot,
                                seed=seed, batch_size=run.batch_size)
            seeds.append(outcome.to_dict())
            if progress:
                Console(stderr=True).print(
                    f"seed {seed}: worst-group {outcome.conditions['unablated']['worst']:.2f} → "
                    f"{outcome.conditions['shift']['worst']:.2f} after ablating "
                    f"{sum(len(v) for v in outcome.ablated.values())} latents", highlight=False)
        timings["shift_s"] = time.perf_counter() - t
        t = time.perf_counter()
        cards = _cards(lm, saes, cfg, seeds[0])
        timings["cards_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    table, tests = _table(seeds), _tests(seeds)
    words = CUE_WORDS[cue]
    data = {"dataset": cfg.dataset, "cue": cue, "cue_words": {"1": words[0], "0": words[1]},
            "rows": len(ds), "probe_hook": probe_hook, "hooks": hooks, "pooling": cfg.pooling,
            "example": {"ambiguous": [ds.statements[i] for i in
                                      [int(j) for j in np.flatnonzero(y == c)[:2]]],
                        "conflicting": [ds.statements[i] for i in
                                        [int(j) for j in np.flatnonzero(y != c)[:2]]]}}
    notes = ["The cue latents are marked automatically, by correlation with the cue on held-out "
             "balanced texts; this replaces the paper's human judgement. The cards below show "
             "every candidate so a person can check the marking.",
             "Random ablations draw, per hook, as many latents as SHIFT ablated there from the "
             "latents that fire on the training texts (the marked ones excluded).",
             "p-values: one-sided, paired bootstrap of the worst-group accuracy difference "
             f"({run.n_boot} resamples within groups); the smallest possible is 1/"
             f"{run.n_boot + 1}, printed as ≤ that."]
    notes += record["warnings"]
    result = ShiftResult(config=asdict(config), versions=versions(), model=lm.identity(),
                         data=data, saes=record, seeds=seeds, table=table, tests=tests,
                         cards=cards, summary=_summary(table, tests, seeds, cfg.n_seeds),
                         notes=notes, timings=timings)
    return result


def run_shift_into(config: ShiftConfig, out: Path, progress: bool) -> ShiftResult:
    """The registry's entry point: run into the output folder."""
    return run_shift_study(config, out_dir=out, progress=progress)
