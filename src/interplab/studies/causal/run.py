"""The causal study's run: data → harvest → probes and their windows → the task chosen on
validation and the model's behaviour on it → steering with its controls (random directions,
prompts with no statement, other datasets) → patching → attribution → statistics and findings.

Torch is imported inside the functions that need it: the package is read by the CLI.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress

from interplab.activations import Positions
from interplab.controls import bootstrap_mean, bootstrap_statistic, bootstrap_test
from interplab.datasets.corpus import load_corpus
from interplab.errors import InterplabError
from interplab.interventions import engine, steer_many
from interplab.interventions.prompts import encode, has_chat_template, held_out_rows
from interplab.models import load
from interplab.probes import make_probe
from interplab.progress import LineProgress, progress_display, reporting
from interplab.studies.causal import findings as words
from interplab.studies.causal.config import DATASETS, CausalConfig, CausalResult, label
from interplab.studies.causal.patching import attribution_stage, patching_stage
from interplab.studies.causal.tasks import (
    Task,
    behaviour,
    make_task,
    statement_positions,
    true_false_gap,
)
from interplab.study.data import load_statements
from interplab.study.harvest import harvest_statements
from interplab.study.layers import choose_layer
from interplab.study.result import versions
from interplab.threads import AdaptiveThreads


def run_causal(config: CausalConfig, *, progress: bool = True, console: Console | None = None,
               cache_dir: str | Path | None = None) -> CausalResult:
    """Run the causal study described by ``config``; returns the result. With ``cache_dir`` the
    harvested activations are kept there and reused by a later run."""

    config.validate()
    console = console or Console(stderr=True, quiet=not progress)
    seed = config.run.seed
    timings: dict[str, Any] = {}
    t0 = time.perf_counter()
    data = load_statements(DATASETS, config.data, seed)
    data.check_training(DATASETS)
    transfer = load_statements(config.transfer, config.data, seed) if config.transfer else None
    lm = load(config.run.model, device=config.run.device)
    config.check_layers(lm.n_layers)
    timings["load_s"] = time.perf_counter() - t0
    # Every model pass, fit and bootstrap below runs on the threads the policy gives it: under
    # "auto" the CPUs other processes leave free, re-decided between batches as the load changes.
    with AdaptiveThreads(config.run.threads) as pool, \
            progress_display(console, enabled=progress) as bar:
        result = _run(config, lm, data, transfer, console, bar, cache_dir, timings)
    timings["threads_first"] = pool.used[0]
    timings["threads_last"] = pool.used[-1]
    timings["thread_changes"] = len(pool.used) - 1
    timings["total_s"] = time.perf_counter() - t0
    return result


def _run(config: CausalConfig, lm: Any, data: Any, transfer: Any, console: Console,
         bar: Progress | LineProgress, cache_dir: str | Path | None,
         timings: dict[str, Any]) -> CausalResult:
    seed = config.run.seed
    cities, split = data.datasets["cities"], data.splits["cities"]
    tasks, task_notes = _candidate_tasks(lm, config)
    test_rows = held_out_rows(cities, split.test, config.n_prompts, seed)
    val_rows = held_out_rows(cities, split.val, config.n_prompts, seed)
    statements = [cities.statements[i] for i in test_rows]
    labels = cities.labels[test_rows]
    for task in tasks.values():  # refuse prompts that do not fit before anything runs
        prefix, tail = task.prefix_and_tail(cities, split.train)
        _check_fit(lm, task, cities, split.train, task.prompts(statements, tail))

    t = time.perf_counter()
    acts, logprob = _harvest(lm, config, data, cache_dir)
    directions, val_acc, gap_norm = _fit_probes(config, data, acts)
    windows = steering_windows(config, val_acc, lm.n_layers)
    timings["probes_s"] = time.perf_counter() - t
    console.print(f"probes fitted in {timings['probes_s']:.0f} s; windows "
                  + "; ".join(f"{label(p)} {w['layers']}" for p, w in windows.items()))

    t = time.perf_counter()
    with reporting(bar, "prompt formats on validation"):
        choice = _choose_task(lm, config, tasks, cities, split.train, val_rows)
    task = tasks[choice["chosen"]]
    prefix, tail = task.prefix_and_tail(cities, split.train)
    timings["task_s"] = time.perf_counter() - t
    console.print(f"format {task.name} chosen on validation in {timings['task_s']:.0f} s")

    t = time.perf_counter()
    neutral = _neutral_texts(lm, config)
    with reporting(bar, "steering cities (probe doses and random directions)"):
        steering, steered = _steer(lm, config, task, prefix, tail, statements, labels,
                                   directions, windows, neutral, timings, "steer_cities")
    base = np.asarray(next(iter(steering.values()))["baseline"])
    baseline = behaviour(base, labels, answer=task.answers is not None, n_boot=config.run.n_boot,
                         seed=seed)
    baseline["statement_logprob"] = _likelihood(logprob, cities, test_rows, config)
    timings["steer_s"] = time.perf_counter() - t
    console.print(f"steering done in {timings['steer_s']:.0f} s")

    t = time.perf_counter()
    with reporting(bar, "no-statement control"):
        control = _control(lm, config, task, prefix, tail, cities, test_rows, steering,
                           directions, windows, timings)
    with reporting(bar, "transfer datasets"):
        transfers = _transfer(lm, config, task, transfer, directions, windows, timings)
    timings["controls_s"] = time.perf_counter() - t
    console.print(f"controls and transfer done in {timings['controls_s']:.0f} s")

    t = time.perf_counter()
    with reporting(bar, "patching"):
        pairs = patching_stage(lm, config, task, prefix, tail, cities, split.test, timings)
    timings["patch_s"] = time.perf_counter() - t
    console.print(f"patching done in {timings['patch_s']:.0f} s")
    t = time.perf_counter()
    with reporting(bar, "attribution"):
        attribution = attribution_stage(lm, config, task, prefix, pairs, timings)
    timings["attribute_s"] = time.perf_counter() - t

    comparison = words.comparison(steering, "cities", baseline, labels, config)
    for name, tr in transfers.items():
        comparison += words.comparison(tr["steering"], name, tr["baseline"],
                                       np.asarray(tr["labels"]), config)
    statistics = words.statistics(comparison, control, pairs)
    verdict = words.verdict(baseline, comparison, control, pairs, transfers)
    findings = words.findings(task, choice, baseline, comparison, control, transfers, pairs,
                              attribution, verdict, windows, config)
    notes = task_notes + words.notes(task, config, statistics, pairs, attribution)
    data_info = {
        "answers": task.answers, "format": task.name, "prefix": prefix, "tail": tail,
        "prompt_example": prefix + task.prompts(statements[:1], tail)[0],
        "control_example": prefix + control["prompt_example"],
        "steered_rows": test_rows.tolist(), "steered_labels": labels.tolist(),
        "validation_rows": val_rows.tolist(),
        "n_train": {n: int(len(s.train)) for n, s in data.splits.items()},
        "n_test_cities": int(len(split.test)), "split_rule": split.rule,
        "patch_pairs": pairs["pairs"], "datasets": data.identity(),
        "transfer_datasets": transfer.identity() if transfer is not None else []}
    probes = {"windows": windows, "validation_accuracy": val_acc, "gap_norm": gap_norm.tolist(),
              "trained_on": "cities + neg_cities training split, "
                            f"{config.probe.centering} centring, last statement token, resid_post",
              "scaling": "each direction scaled to the class-mean gap ‖μ_true − μ_false‖ of its "
                         "layer; dose 1 = one gap at every steered layer",
              "steered": steered}
    return CausalResult(
        config=asdict(config), versions=versions(), model=lm.identity(), data=data_info,
        probes=probes, task={**choice, "baseline": baseline, "metric": task.metric_text,
                             "description": task.fmt.description},
        steering=steering, comparison=comparison, control=control, transfer=transfers,
        patching=pairs, attribution=attribution, statistics=statistics, verdict=verdict,
        findings=findings, notes=notes, timings=timings)


# ---------------------------------------------------------------------------------- tasks
def _candidate_tasks(lm: Any, config: CausalConfig) -> tuple[dict[str, Task], list[str]]:
    """The formats to choose from; chat is left out (with a note) for a model without a chat
    template when other formats remain."""
    notes = []
    names = list(config.formats)
    if "chat" in names and not has_chat_template(lm) and len(names) > 1:
        names.remove("chat")
        notes.append(f"The chat format was not scored: {lm.name}'s tokenizer has no chat "
                     "template.")
    return {n: make_task(lm, n, config.prompt, config.run.seed) for n in names}, notes


def _check_fit(lm: Any, task: Task, ds: Any, train_rows: np.ndarray, prompts: list[str]) -> None:
    """Refuse a prefix and prompts longer than the model's context, naming the --n-shots that
    fits."""
    longest = max(len(ids) for ids in lm.tokenizer(prompts, add_special_tokens=False,
                                                   verbose=False)["input_ids"]) + 1

    def need(n: int) -> int:
        t = Task(task.fmt, task.answers, task.lm, n, task.seed)
        prefix, _ = t.prefix_and_tail(ds, train_rows)
        return (len(lm.tokenizer(prefix, verbose=False)["input_ids"]) if prefix else 0) + longest

    total = need(task.n_shots)
    if total <= lm.n_ctx:
        return
    fits = next((n for n in range(task.n_shots - 1, -1, -1) if need(n) <= lm.n_ctx), None)
    advice = (f"lower --n-shots (at most {fits} fits)" if fits is not None else
              "even without shots the prompts do not fit; use a model with a longer context")
    raise InterplabError(f"the {task.name} prompts with {task.n_shots} shots need {total} tokens, "
                         f"more than the model's context of {lm.n_ctx}; {advice}")


def _score(lm: Any, config: CausalConfig, task: Task, prefix: str, prompts: list[str],
           statements: list[str]) -> np.ndarray:
    """The unsteered metric of ``prompts``."""

    p = encode(lm, prompts, prefix or None)
    m, _ = engine.clean_run(lm, p, task.metric(statements), read=Positions.parse("last"),
                            batch_size=config.run.batch_size)
    return m


def _choose_task(lm: Any, config: CausalConfig, tasks: dict[str, Task], ds: Any,
                 train_rows: np.ndarray, rows: np.ndarray) -> dict[str, Any]:
    """Each format scored unsteered on validation statements; the one with the largest
    standardised true − false gap (gap over the pooled within-class sd, so formats read on
    different scales compare) is chosen."""
    statements = [ds.statements[i] for i in rows]
    y = ds.labels[rows]
    scored = {}
    for name, task in tasks.items():
        prefix, tail = task.prefix_and_tail(ds, train_rows)
        m = _score(lm, config, task, prefix, task.prompts(statements, tail), statements)
        scored[name] = {**behaviour(m, y, answer=task.answers is not None,
                                    n_boot=config.run.n_boot, seed=config.run.seed),
                        "metric": task.metric_text, "description": task.fmt.description}
    chosen = max(scored, key=lambda n: (scored[n]["standardised_gap"]
                                        if scored[n]["standardised_gap"] is not None
                                        else -np.inf, -list(scored).index(n)))
    rule = ("the only format given" if len(scored) == 1 else
            "the largest standardised true − false gap on the validation statements")
    return {"chosen": chosen, "rule": rule, "validation": scored,
            "validation_rows": int(len(rows))}


# ---------------------------------------------------------------------------------- probes
def _harvest(lm: Any, config: CausalConfig, data: Any, cache_dir: str | Path | None
             ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray | None]]:
    acts, _ = harvest_statements(lm, data.datasets, list(range(lm.n_layers)),
                                 batch_size=config.run.batch_size,
                                 cache_dir=Path(cache_dir) if cache_dir is not None else None,
                                 with_logprobs=True, threads=0)  # threads: the pool around it
    return ({n: a.acts for n, a in acts.items()}, {n: a.logprob for n, a in acts.items()})


def _fit_probes(config: CausalConfig, data: Any, acts: dict[str, np.ndarray]
                ) -> tuple[dict[str, np.ndarray], dict[str, list[float]], np.ndarray]:
    """Per probe the direction at every layer ``[L, d]`` (scaled to the class-mean gap of the
    layer), its validation accuracy per layer, and the gap norm per layer."""
    def part(side: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        names = list(data.datasets)
        X = np.concatenate([acts[n][:, data.rows(n, side)] for n in names], axis=1)
        y = np.concatenate([data.datasets[n].labels[data.rows(n, side)] for n in names])
        g = np.concatenate([[n] * len(data.rows(n, side)) for n in names])
        return X, y, g

    (Xtr, ytr, gtr), (Xva, yva, gva) = part("train"), part("val")
    n_layers = Xtr.shape[0]
    gap = np.array([np.linalg.norm(Xtr[li, ytr == 1].mean(0) - Xtr[li, ytr == 0].mean(0))
                    for li in range(n_layers)])
    directions, val = {}, {}
    for name in config.probe.probes:
        dirs, accs = [], []
        for li in range(n_layers):
            probe = make_probe(name, centering=config.probe.centering).fit(Xtr[li], ytr,
                                                                           groups=gtr)
            d = probe.direction_
            dirs.append(d / np.linalg.norm(d) * gap[li])
            accs.append(float(np.mean(_predict(probe, Xva[li], gva) == yva)))
        directions[name], val[name] = np.stack(dirs), accs
    return directions, val, gap


def _predict(probe: Any, X: np.ndarray, groups: np.ndarray) -> np.ndarray:
    out = np.empty(len(X), dtype=np.int64)
    for g in np.unique(groups):  # each dataset centred on its own, as the probe was trained
        out[groups == g] = probe.predict(X[groups == g])
    return out


def steering_windows(config: CausalConfig, val: dict[str, list[float]], n_layers: int
                     ) -> dict[str, dict[str, Any]]:
    """Each probe's steered layers, the rule that chose them and the validation scores it read:
    ``own`` centres each probe's window on that probe's own best validation layer; ``shared``
    centres one window for all on the layer of best mean validation accuracy over the probes;
    ``--layers`` fixes the layers for all."""
    layers = list(range(n_layers))
    if config.steer_layers is not None:
        fixed = sorted(set(config.steer_layers))
        return {p: {"layers": fixed, "centre": None, "rule": "fixed by --layers for every probe",
                    "validation": None} for p in val}

    def window(centre: int) -> list[int]:
        w = config.n_steer_layers
        lo = min(max(centre - w // 2, 0), n_layers - w)
        return list(range(lo, lo + w))

    if config.window == "shared":
        mean = np.mean([val[p] for p in val], axis=0)
        choice = choose_layer(layers, mean)
        rule = (f"shared: {config.n_steer_layers} layers around the layer of best mean "
                "validation accuracy over the probes (no probe's own choice)")
        return {p: {"layers": window(choice.layer), "centre": choice.layer, "rule": rule,
                    "validation": choice.validation} for p in val}
    out = {}
    for p, scores in val.items():
        choice = choose_layer(layers, scores)
        out[p] = {"layers": window(choice.layer), "centre": choice.layer,
                  "rule": f"own: {config.n_steer_layers} layers around this probe's best "
                          "validation layer", "validation": choice.validation}
    return out


# ---------------------------------------------------------------------------------- steering
def _hook(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_post"


def _steer(lm: Any, config: CausalConfig, task: Task, prefix: str, tail: str,
           statements: list[str], labels: np.ndarray, directions: dict[str, np.ndarray],
           windows: dict[str, dict[str, Any]], neutral: list[str] | None,
           timings: dict[str, Any], key: str, *, doses: list[float] | None = None,
           n_null: int | None = None, subjects: list[str] | None = None
           ) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Every probe's direction added at its window over the dose series (one batched call; a
    null of random directions per distinct window): false statements pushed towards TRUE, true
    ones towards FALSE, effects signed so positive = moved as intended."""

    prompts = task.prompts(statements, tail, subjects)
    p = encode(lm, prompts, prefix or None)
    lead = subjects if subjects is not None else statements
    pos = Positions.explicit(statement_positions(p, lm, lead, config.steer_tokens))
    dirs = {name: {_hook(layer): d[layer] for layer in windows[name]["layers"]}
            for name, d in directions.items()}
    signs = np.where(labels == 1, -1.0, 1.0)  # false → towards TRUE, true → towards FALSE
    results = steer_many(lm, p, dirs, doses if doses is not None else config.doses,
                         task.metric(statements), positions=pos, signs=signs,
                         n_null=config.n_null if n_null is None else n_null,
                         null_dose=_null_dose(config), neutral_texts=neutral,
                         batch_size=config.run.batch_size, n_boot=config.run.n_boot,
                         seed=config.run.seed)
    out = {name: r.to_dict() for name, r in results.items()}
    seconds = 0.0
    for r in out.values():  # wall time is a record of the run, not a result
        seconds = r["info"].pop("seconds", seconds)
    timings[f"{key}_s"] = seconds
    steered = {"n_prompts": len(prompts), "positions": f"the statement's last "
               f"{config.steer_tokens} token(s)", "signs": "false → towards TRUE, true → towards "
               "FALSE; effects signed so positive = moved as intended",
               "rows_run": int(next(iter(out.values()))["info"]["rows_run"])}
    return out, steered


def _null_dose(config: CausalConfig) -> float:
    return float(max(config.doses, key=lambda d: (abs(d), d)))


def _likelihood(logprob: dict[str, np.ndarray | None], ds: Any, rows: np.ndarray,
                config: CausalConfig) -> dict[str, Any] | None:
    """The statements' own log-probability on the steered rows: true − false, with an interval
    (the truth study's likelihood control, for comparison with the task's gap)."""

    lp = logprob.get("cities")
    if lp is None:
        return None
    v, lo, hi = bootstrap_statistic(true_false_gap, lp[rows], ds.labels[rows],
                                    n_boot=config.run.n_boot, seed=config.run.seed)
    return {"gap": v, "lo": lo, "hi": hi, "unit": "nats (summed log-probability of the "
            "statement's tokens)"}


def _subjects(ds: Any, rows: np.ndarray) -> list[str]:
    """A noun phrase per row naming its subject with no claim about it ("The city of Paris.")."""
    meta = ds.metadata or {}
    if "city" not in meta:
        raise InterplabError(f"{ds.name} has no 'city' column to build prompts with no "
                             "statement from")
    return [f"The city of {meta['city'][i]}." for i in rows]


def _control(lm: Any, config: CausalConfig, task: Task, prefix: str, tail: str, ds: Any,
             rows: np.ndarray, steering: dict[str, dict[str, Any]],
             directions: dict[str, np.ndarray], windows: dict[str, dict[str, Any]],
             timings: dict[str, Any]) -> dict[str, Any]:
    """The same directions, windows, dose and signs on prompts whose statement is replaced by a
    noun phrase naming its subject (no claim: nothing to be true or false), and per probe the
    paired difference statement − control with a bootstrap interval and p-value."""
    statements = [ds.statements[i] for i in rows]
    subjects = _subjects(ds, rows)
    dose = _null_dose(config)
    out, _ = _steer(lm, config, task, prefix, tail, statements, ds.labels[rows], directions,
                    windows, None, timings, "steer_control", doses=[0.0, dose], n_null=0,
                    subjects=subjects)
    probes = {}
    for name, r in out.items():
        ctrl = np.asarray(r["effects"])[:, 1]
        k = steering[name]["doses"].index(dose)
        stmt = np.asarray(steering[name]["effects"])[:, k]
        c = bootstrap_mean(ctrl[None], n_boot=config.run.n_boot, seed=config.run.seed)
        diff = bootstrap_test(np.mean, stmt - ctrl, n_boot=config.run.n_boot,
                              seed=config.run.seed)
        probes[name] = {"dose": dose, "effect": c["value"][0], "lo": c["lo"][0],
                        "hi": c["hi"][0], "statement_effect": float(stmt.mean()),
                        "difference": diff["value"], "difference_lo": diff["lo"],
                        "difference_hi": diff["hi"], "p": diff["p"], "p_floor": diff["p_floor"],
                        "at_floor": diff["at_floor"], "n": int(len(ctrl))}
    return {"what": "the statement replaced by a noun phrase naming its subject (\"The city of "
                    "X.\"), the rest of the prompt, the directions, windows, dose and signs "
                    "unchanged; steered at the phrase's last tokens",
            "prompt_example": task.prompts(statements[:1], tail, subjects[:1])[0],
            "probes": probes, "baseline": np.asarray(
                next(iter(out.values()))["baseline"]).tolist()}


def _transfer(lm: Any, config: CausalConfig, task: Task, transfer: Any,
              directions: dict[str, np.ndarray], windows: dict[str, dict[str, Any]],
              timings: dict[str, Any]) -> dict[str, Any]:
    """The cities-trained directions, windows and doses on held-out statements of other datasets
    (their own few-shot prefix), each with its own null and its own behavioural baseline."""
    if transfer is None:
        return {}
    out = {}
    seed = config.run.seed
    for name, ds in transfer.datasets.items():
        split = transfer.splits[name]
        rows = held_out_rows(ds, split.test, config.n_transfer, seed)
        if len(set(ds.labels[rows].tolist())) < 2:
            raise InterplabError(f"--transfer {name}: its test split has statements of one "
                                 "label only; raise --max-per-dataset or leave it out")
        statements = [ds.statements[i] for i in rows]
        prefix, tail = task.prefix_and_tail(ds, split.train)
        _check_fit(lm, task, ds, split.train, task.prompts(statements, tail))
        steering, _ = _steer(lm, config, task, prefix, tail, statements, ds.labels[rows],
                             directions, windows, None, timings, f"steer_{name}")
        base = np.asarray(next(iter(steering.values()))["baseline"])
        out[name] = {"rows": rows.tolist(), "labels": ds.labels[rows].tolist(),
                     "prompt_example": prefix + task.prompts(statements[:1], tail)[0],
                     "baseline": behaviour(base, ds.labels[rows], answer=task.answers is not None,
                                           n_boot=config.run.n_boot, seed=seed),
                     "steering": steering}
    return out


def _neutral_texts(lm: Any, config: CausalConfig) -> list[str] | None:
    if config.n_neutral < 1:
        return None
    docs = load_corpus("kjv").documents
    pick = np.random.default_rng((config.run.seed, 4)).choice(len(docs), config.n_neutral,
                                                              replace=False)
    out = []
    for i in pick:
        ids = lm.tokenizer(docs[int(i)][: 8 * config.neutral_tokens],
                           add_special_tokens=False)["input_ids"]
        out.append(lm.tokenizer.decode(ids[: config.neutral_tokens]))
    return out
