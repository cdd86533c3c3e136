"""Fits of the truth study: every probe on every training set and source (the model and its
reset copy) with its controls, then bootstrap intervals and the layer chosen on validation."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from interplab.controls import bootstrap_mean, shuffled_accuracy_interval
from interplab.parallel import map_jobs
from interplab.probes.generalization import LabelledActs, PairedActs, ProbeOutcome, fit_and_test
from interplab.studies.truth.config import TruthConfig, is_pair_probe, label
from interplab.study.data import StatementData, short_name, train_key, twin_couples
from interplab.study.harvest import StatementActs
from interplab.study.layers import choose_layer

# source ("model" / "reset") -> dataset name -> its harvest
Acts = dict[str, dict[str, StatementActs]]


@dataclass
class Fits:
    """Per-row outcomes of every fit: keys are (train key, probe, variant)."""

    correct: dict[tuple, dict[str, np.ndarray]]  # per test set (and "val:<name>") [L, n]
    decisions: dict[tuple, dict[str, np.ndarray]]
    shuffle_correct: dict[tuple, dict[str, np.ndarray]]  # per test [L, n_shuffles, n]
    rows: dict[str, dict[str, tuple[np.ndarray, dict[str, Any]]]]  # train key -> scored rows
    own: dict[str, list[str]]  # train key -> its datasets


# Order of the fit jobs: the slow probes first, so the last job to finish is a short one.
_FIT_ORDER = {"ccs": 0, "logistic": 1, "lda": 2}


@dataclass(frozen=True)
class FitJob:
    key: str  # the training set
    names: tuple[str, ...]  # its datasets
    source: str  # "model" or "reset"
    probe: str


def fit_everything(config: TruthConfig, data: StatementData, acts: Acts, layers: list[int],
                   bar: Any, notes: list[str], timings: dict[str, float],
                   workers: int = 1) -> Fits:
    """Every probe on every training set and source (model, reset copy), with its controls.

    The fits are independent jobs (training set × source × probe); ``workers`` processes run
    them side by side, one thread each (:func:`interplab.parallel.map_jobs`), and the results do
    not depend on ``workers``. ``timings["fit_<probe>_<source>_s"]`` add up the jobs' own times.
    ``bar`` is a rich ``Progress`` or a :class:`LineProgress`.
    """
    probes = config.probe.probes
    n_fits = len(config.train_sets) * len(probes) * (1 + ("reset" in acts))
    fit_task = bar.add_task("fit probes", total=n_fits * len(layers))
    fits = Fits({}, {}, {}, {}, {})
    jobs: list[FitJob] = []
    for source in acts:
        for ts in config.train_sets:
            key, names = train_key(ts), [short_name(n) for n in ts]
            fits.own[key] = names
            fits.rows[key] = data.scored_rows(names)
            for probe in sorted(probes, key=lambda p: _FIT_ORDER.get(p, len(_FIT_ORDER))):
                if is_pair_probe(probe) and not data.pair_rows(names):
                    if source == "model":
                        notes.append(
                            f"{label(probe)} was not trained on {key}: it needs "
                            "statement/negation pairs, and none of its datasets has its "
                            "negated twin among the datasets of this run.")
                    bar.advance(fit_task, len(layers))
                    continue
                jobs.append(FitJob(key, tuple(names), source, probe))
    run = fit_job_runner(config, data, acts, fits.rows)
    outcomes = map_jobs(lambda i: run(jobs[i]), len(jobs), workers,
                        on_done=lambda _: bar.advance(fit_task, len(layers)))
    timings["fit_workers"] = workers
    # filled in the order of the configuration (training set, source, probe), as the report reads it
    sources, keys = list(acts), [train_key(ts) for ts in config.train_sets]
    done = sorted(zip(jobs, outcomes, strict=True), key=lambda jo: (
        keys.index(jo[0].key), sources.index(jo[0].source), probes.index(jo[0].probe)))
    for job, (outcome, seconds) in done:
        fit_key = f"fit_{job.probe}_{job.source}_s"
        timings[fit_key] = timings.get(fit_key, 0.0) + seconds
        if job.source == "model" and "shuffled" in outcome.correct:
            fits.shuffle_correct[(job.key, job.probe)] = outcome.shuffle_correct
        for v in outcome.correct:
            name_v = v if job.source == "model" else "reset"
            fits.correct[(job.key, job.probe, name_v)] = outcome.correct[v]
            fits.decisions[(job.key, job.probe, name_v)] = outcome.decision[v]
    return fits


def fit_job_runner(config: TruthConfig, data: StatementData, acts: Acts,
                   rows: dict[str, dict]) -> Callable[[FitJob], tuple[ProbeOutcome, float]]:
    """A function running one :class:`FitJob`: ``(ProbeOutcome, seconds)``. It keeps the
    training and test arrays of the last (training set, source) it saw, which the next job in
    the same process usually shares (the jobs come grouped so)."""
    variants = ["probe", *[c for c in ("shuffled", "random") if c in config.controls]]
    negated = {b for _, b in twin_couples(data.names)}
    last: dict[tuple[str, str], tuple] = {}

    def arrays(job: FitJob) -> tuple:
        if (job.key, job.source) not in last:
            last.clear()  # one group at a time: each holds a copy of every scored activation
            source = acts[job.source]

            def part(name: str, r: np.ndarray) -> LabelledActs:
                return LabelledActs(source[name].acts[:, r], data.datasets[name].labels[r],
                                    negated=name in negated)

            # groups name each row's dataset: per-dataset centring centres each component
            train = LabelledActs.concatenate({n: part(n, data.splits[n].train)
                                              for n in job.names})
            tests = {n: part(n, r) for n, (r, _) in rows[job.key].items()}
            tests.update({f"val:{n}": part(n, data.splits[n].val) for n in job.names})
            pairs = training_pairs(list(job.names), data, source)
            last[(job.key, job.source)] = (train, tests, pairs)
        return last[(job.key, job.source)]

    def run(job: FitJob) -> tuple[ProbeOutcome, float]:
        train, tests, pairs = arrays(job)
        t = time.perf_counter()
        outcome = fit_and_test(
            job.probe, train, tests, pairs=pairs if is_pair_probe(job.probe) else None,
            centering=config.probe.centering,
            variants=variants if job.source == "model" else ["probe"],
            seed=config.run.seed, n_shuffles=config.n_shuffles)
        return outcome, time.perf_counter() - t

    return run


def aggregate(config: TruthConfig, fits: Fits, test_names: list[str], layers: list[int],
              workers: int = 1) -> tuple[dict, dict, dict, dict]:
    """Bootstrap intervals per cell; the layer chosen on validation, the curve on test. Each
    (training set, probe, variant)'s intervals are one job for ``workers`` processes (the
    intervals are seeded per cell, so they do not depend on ``workers``)."""
    cases = list(fits.correct)
    seed = config.run.seed

    def intervals(i: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        key, probe, variant = cases[i]
        return ([interval(fits, key, probe, variant, [t], config.run.n_boot, seed + ti)
                 for ti, t in enumerate(test_names)],
                interval(fits, key, probe, variant, fits.own[key], config.run.n_boot, seed))

    done = dict(zip(cases, map_jobs(intervals, len(cases), workers), strict=True))
    accuracy: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for key, probe, variant in cases:
        cells = done[(key, probe, variant)][0]
        entry = {k: np.stack([c[k] for c in cells], axis=1).tolist()
                 for k in ("value", "lo", "hi")}
        entry["n"] = [c["n"] for c in cells]
        accuracy.setdefault(key, {}).setdefault(probe, {})[variant] = entry
        dec = fits.decisions[(key, probe, variant)]
        if variant in ("probe", "reset"):
            entry["positive_rate"] = np.stack(
                [(dec[t] > 0).mean(axis=1) for t in test_names], axis=1).tolist()
        if variant == "shuffled":  # how much single shuffles disagree with each other
            entry["sd_over_shuffles"] = np.stack([c["sd_over_shuffles"] for c in cells],
                                                 axis=1).tolist()

    heldout: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    validation: dict[str, dict[str, dict[str, Any]]] = {}
    best_layer: dict[str, dict[str, int]] = {}
    for (key, probe, variant), per_test in fits.correct.items():
        own = fits.own[key]
        est = done[(key, probe, variant)][1]
        heldout.setdefault(key, {}).setdefault(probe, {})[variant] = {
            k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in est.items()}
        if variant == "probe":
            val = np.concatenate([per_test[f"val:{n}"] for n in own], axis=1)
            val_acc = val.mean(axis=1)
            validation.setdefault(key, {})[probe] = {"value": val_acc.tolist(),
                                                     "n": int(val.shape[1])}
            best_layer.setdefault(key, {})[probe] = choose_layer(layers, val_acc).layer
    return accuracy, heldout, validation, best_layer


def interval(fits: Fits, key: str, probe: str, variant: str, tests: list[str], n_boot: int,
             seed: int) -> dict[str, Any]:
    """Accuracy per layer on ``tests`` pooled, with its 95 % interval. The shuffled-label
    control's interval is that of one shuffled probe, so it includes the spread between
    shuffles (a bootstrap of their mean would read 0.41 ± 0.02 as below chance)."""
    if variant == "shuffled":
        hits = np.concatenate([fits.shuffle_correct[(key, probe)][t] for t in tests], axis=2)
        est = shuffled_accuracy_interval(hits, n_boot=n_boot, seed=seed)
        est.pop("per_shuffle")
    else:
        correct = np.concatenate([fits.correct[(key, probe, variant)][t] for t in tests], axis=1)
        est = bootstrap_mean(correct, n_boot=n_boot, seed=seed)
    return {k: np.asarray(v) if isinstance(v, list) else v for k, v in est.items()}


def training_pairs(names: list[str], data: StatementData,
                   source: dict[str, StatementActs]) -> PairedActs | None:
    """Training pairs for pair probes (CCS), or None if there are none
    (see :meth:`StatementData.pair_rows`)."""
    found = data.pair_rows(names)
    if not found:
        return None
    return PairedActs(
        np.concatenate([source[a].acts[:, ia] for a, _, ia, _ in found], axis=1),
        np.concatenate([source[b].acts[:, ib] for _, b, _, ib in found], axis=1),
        np.concatenate([data.datasets[a].labels[ia] for a, _, ia, _ in found]),
        groups=np.concatenate([np.full(len(ia), f"{a}/{b}") for a, b, ia, _ in found]))
