"""The truth study's run: data → harvest (model and reset copy, cached) → fits → analysis →
optional erasure/null section → :class:`TruthResult`."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from interplab.models import HookPoint, load, reset_copy
from interplab.progress import LineProgress, progress_display
from interplab.studies.truth import wording
from interplab.studies.truth.analysis import likelihood, pca_views
from interplab.studies.truth.config import TruthConfig, TruthResult, is_pair_probe, label
from interplab.studies.truth.erasure_nulls import erasure_nulls_section
from interplab.studies.truth.fits import Fits, aggregate, fit_everything
from interplab.study.data import StatementData, load_statements, short_name, train_key
from interplab.study.harvest import StatementActs, harvest_statements
from interplab.study.result import versions
from interplab.threads import AdaptiveThreads, limit_threads, resolve_threads


def run_truth(config: TruthConfig, *, progress: bool = True, console: Console | None = None,
              cache_dir: str | Path | None = None) -> TruthResult:
    """Run the study described by ``config``; returns the result.

    Every check on the data (split sizes per class, statement/negation pairs for CCS) runs before
    the model is loaded. With ``cache_dir``, harvested activations are kept there (one
    safetensors file per model identity, dataset content hash and layer list) and reused by a
    later run, so a failure after the harvest never costs the harvest again.
    """
    config.validate()
    console = console or Console(stderr=True)
    cache = Path(cache_dir) if cache_dir is not None else None
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    data = load_data(config)
    timings["datasets_s"] = time.perf_counter() - t0

    with progress_display(console, enabled=progress) as bar:
        harvest = harvest_stage(config, data, bar, console, cache, timings)
        t = time.perf_counter()
        # measured now: the CPUs other processes leave free decide how many fits run at once
        fits = fit_everything(config, data, harvest.acts, harvest.layers, bar, data.notes,
                              timings, workers=resolve_threads(config.run.threads))
        timings["probes_s"] = time.perf_counter() - t
        console.print(f"fitted probes and controls in {timings['probes_s']:.0f} s")

    t = time.perf_counter()
    # The PCA views' SVDs and the rest use BLAS: a pool larger than the CPUs other processes
    # leave free spin-waits at every barrier (25 x slower beside two busy loops), so the stage
    # runs on the threads the policy gives it now.
    with limit_threads(resolve_threads(config.run.threads)):
        analysis = analysis_stage(config, data, harvest, fits, timings)
    timings["analysis_s"] = time.perf_counter() - t
    section = None
    if config.erasure_nulls:
        t = time.perf_counter()
        section = erasure_nulls_section(config, data, harvest.acts, harvest.layers,
                                        analysis.best_layer)
        timings["erasure_nulls_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    result = make_result(config, data, harvest, analysis, timings)
    result.erasure_nulls = section
    return result


def load_data(config: TruthConfig) -> StatementData:
    """The run's datasets and splits, with every check that can refuse the run before the model
    loads: split sizes of training datasets, and pairs for pair probes (CCS)."""
    data = load_statements(config.datasets, config.data, config.run.seed)
    train_names = sorted({short_name(n) for ts in config.train_sets for n in ts})
    paired = [p for p in config.probe.probes if is_pair_probe(p)]
    if paired:
        data.check_pairs(train_names, paired, "/".join(map(label, paired)))
    data.check_training(train_names)
    return data


@dataclass
class Harvest:
    """Last-token activations of the model (and of its reset copy, for that control)."""

    layers: list[int]
    acts: dict[str, dict[str, StatementActs]]  # "model" / "reset" -> dataset name -> harvest
    model_identity: dict[str, Any]
    reset_identity: dict[str, Any] | None


def harvest_stage(config: TruthConfig, data: StatementData, bar: Progress | LineProgress,
                  console: Console, cache: Path | None, timings: dict[str, float]) -> Harvest:
    """Load the model, harvest every dataset at every layer (and the reset copy's, when that
    control is on); the model is released before returning."""
    t = time.perf_counter()
    lm = load(config.run.model, device=config.run.device)
    layers = list(range(lm.n_layers)) if config.layers is None else list(config.layers)
    lm.resolve_hooks([HookPoint.resid_post(layer) for layer in layers])
    timings["load_s"] = time.perf_counter() - t
    n_statements = sum(len(ds) for ds in data.datasets.values())
    console.print(f"loaded {lm.name} in {timings['load_s']:.0f} s; {len(data.datasets)} "
                  f"datasets, {n_statements} statements, {len(layers)} layers")
    t = time.perf_counter()
    # threads="auto" is re-decided between batches across both harvests (threads=0 below: the
    # harvest calls leave the count to this pool), so a passing load does not fix it for good
    common = {"batch_size": config.run.batch_size, "progress": bar, "cache_dir": cache,
              "threads": 0}
    with AdaptiveThreads(config.run.threads) as pool:
        model_acts, reused = harvest_statements(lm, data.datasets, layers, label="model",
                                                **common)
        acts = {"model": model_acts}
        timings["harvest_model_s"] = time.perf_counter() - t
        reset_identity = None
        if "reset" in config.controls:
            reset = reset_copy(lm, seed=config.run.seed)
            reset_identity = reset.identity()
            acts["reset"], hits = harvest_statements(reset, data.datasets, layers,
                                                     label="reset network",
                                                     with_logprobs=False, **common)
            reused += hits
            del reset
    timings["harvest_threads"] = pool.used[0]
    timings["harvest_thread_changes"] = len(pool.used) - 1
    timings["harvest_threads_last"] = pool.used[-1]
    timings["harvest_s"] = time.perf_counter() - t
    timings["harvest_reset_s"] = timings["harvest_s"] - timings["harvest_model_s"]
    console.print(f"harvesting done in {timings['harvest_s']:.0f} s"
                  + (f" ({reused} dataset harvests reused from {cache})" if reused else ""))
    return Harvest(layers, acts, lm.identity(), reset_identity)


@dataclass
class Analysis:
    """Everything computed from the fits: accuracies with intervals, the layer chosen on
    validation, verdicts, control checks, likelihood and PCA views, method and summary text."""

    test_names: list[str]
    train_keys: list[str]
    accuracy: dict
    heldout: dict
    validation: dict
    best_layer: dict
    scored: dict
    likelihood: dict
    pca: dict
    verdicts: list[dict]
    in_distribution: list[dict]
    control_checks: list[dict]
    method: dict
    summary: list[str]


def analysis_stage(config: TruthConfig, data: StatementData, harvest: Harvest, fits: Fits,
                   timings: dict[str, float]) -> Analysis:
    layers = harvest.layers
    t = time.perf_counter()
    test_names = data.names
    train_keys = [train_key(ts) for ts in config.train_sets]
    accuracy, heldout, validation, best_layer = aggregate(
        config, fits, test_names, layers, workers=resolve_threads(config.run.threads))
    timings["bootstrap_s"] = time.perf_counter() - t
    scored = {key: {n: info for n, (_, info) in rows.items()} for key, rows in fits.rows.items()}
    model = harvest.acts["model"]
    lik = likelihood(config, data, model, test_names, train_keys, fits, best_layer, layers)
    pca = pca_views(config, data, model, best_layer, train_keys, layers)
    verdicts = wording.verdicts(accuracy, best_layer, train_keys, test_names, layers, scored)
    in_dist = wording.in_distribution(heldout, validation, best_layer, layers)
    checks = wording.control_checks(heldout, best_layer, layers)
    method = wording.method(config, data)
    summary = wording.summary(harvest.model_identity["name"], verdicts, checks, in_dist)
    return Analysis(test_names, train_keys, accuracy, heldout, validation, best_layer, scored,
                    lik, pca, verdicts, in_dist, checks, method, summary)


def make_result(config: TruthConfig, data: StatementData, harvest: Harvest, a: Analysis,
                timings: dict[str, float]) -> TruthResult:
    return TruthResult(
        config=asdict(config), versions=versions(), model=harvest.model_identity,
        reset_model=harvest.reset_identity, datasets=data.identity(),
        layers=harvest.layers, probes=list(config.probe.probes), train_sets=a.train_keys,
        test_sets=a.test_names, accuracy=a.accuracy, heldout=a.heldout, validation=a.validation,
        best_layer=a.best_layer, scored=a.scored, method=a.method, verdicts=a.verdicts,
        control_checks=a.control_checks, summary=a.summary, likelihood=a.likelihood, pca=a.pca,
        notes=data.notes, timings=timings, in_distribution=a.in_distribution,
    )
