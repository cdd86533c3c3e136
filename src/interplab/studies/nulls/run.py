"""The null battery's run: one dataset at the layer chosen on validation → every source's rows →
probes and SAEs on each → model − null, corrected as one family."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from interplab.activations import harvest_tokens
from interplab.activations.exclusion import ExclusionRule
from interplab.controls.nulls import DATA_NULLS
from interplab.erasure.in_model import neutral_tokens
from interplab.models import LanguageModel
from interplab.sae.nulls import sae_minus_null, train_and_score_sae
from interplab.studies.nulls.config import NullsConfig, NullsResult
from interplab.study.harvest import statements_at_layer
from interplab.study.nulls import REAL, nulls_statistics, probe_scores, source_rows
from interplab.study.result import versions
from interplab.threads import limit_threads, resolve_threads


def sae_comparison(config: NullsConfig, rows: dict[str, np.ndarray],
                   heldout: np.ndarray) -> dict[str, Any]:
    """Per source (``rows[REAL]`` first, the real activations), a TopK SAE of ``config.sae``
    trained on the rows not in ``heldout`` and scored on both parts, with ``model_minus_this``
    (:func:`~interplab.sae.nulls.sae_minus_null`; None for the real activations)."""
    seed = config.run.seed
    trained = {s: train_and_score_sae(x, heldout, config.sae, seed) for s, x in rows.items()}
    out = {}
    for source, (metrics, _) in trained.items():
        out[source] = {**metrics, "model_minus_this": (
            sae_minus_null(trained[REAL], trained[source], n_boot=config.run.n_boot, seed=seed)
            if source != REAL else None)}
    return out


def _sae_part(config: NullsConfig, lm: LanguageModel, hook: str, sources: list[str]
              ) -> dict[str, Any]:
    tokens = neutral_tokens(lm, corpus=config.corpus, context_length=config.context_length,
                            n_sequences=config.sae_sequences)
    ids = tokens.tolist()
    seed, batch = config.run.seed, config.run.batch_size
    acts = harvest_tokens(lm, ids, [hook], "all", batch_size=batch, progress=False,
                          threads=config.run.threads)
    real = acts[hook].float().numpy()
    L = config.context_length
    keep = ordinary_rows(real, np.tile(np.arange(L), len(ids)))
    rng = np.random.default_rng(seed)
    held_seq = rng.random(len(ids)) < config.sae.sae_heldout_fraction
    heldout = np.repeat(held_seq, L)[keep]
    reference = real[keep][~heldout]
    rows = {s: source_rows(s, lm, real, reference, hook, "all", seed, batch,
                           token_ids=ids)[keep] for s in sources}
    out = sae_comparison(config, rows, heldout)
    out[REAL]["rows_left_out"] = int((~keep).sum())
    return out


def ordinary_rows(x: np.ndarray, position: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows the SAE part uses: the SAE study's default
    :class:`~interplab.activations.exclusion.ExclusionRule` (position 0 and tokens whose norm is
    far above the median) applied to the real activations. A handful of massive-norm tokens
    would otherwise hold most of the variance and decide every FVE."""
    return ExclusionRule().keep_mask(torch.from_numpy(x), torch.from_numpy(position)).numpy()


def run_nulls(config: NullsConfig) -> NullsResult:
    """Run the battery described by ``config`` (see the module docstring)."""
    config.validate()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    seed, batch = config.run.seed, config.run.batch_size
    with limit_threads(resolve_threads(config.run.threads)):
        at = statements_at_layer(config.run, config.data, config.dataset, config.layer,
                                 centering="train")
        ds, split, lm, hook = at.dataset, at.split, at.lm, at.hook
        real = at.acts
        sources = [REAL, *config.nulls]
        data = {s: source_rows(s, lm, real, real[split.train], hook, "last", seed, batch,
                               texts=ds.statements) for s in sources}
        timings["harvest_s"] = time.perf_counter() - t0
        t = time.perf_counter()
        probes, randoms = probe_scores(
            config.probe.probes, config.probe.centering, data, ds.labels, split.train,
            split.test, seed=seed, n_boot=config.run.n_boot,
            n_random_directions=config.n_random_directions)
        timings["probes_s"] = time.perf_counter() - t
        saes: dict[str, Any] = {}
        if config.sae_sequences:
            t = time.perf_counter()
            saes = _sae_part(config, lm, hook, sources)
            timings["saes_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    notes = [f"data nulls ({', '.join(n for n in config.nulls if n in DATA_NULLS)}) are fitted to "
             "the real training rows and carry the real labels by row index only: any accuracy "
             "above chance on them is an artefact of the method or of the interval",
             "model nulls are harvested from the same texts at the same hook and positions, so "
             "their rows keep their statements' labels",
             f"layer {at.choice.layer}: {at.choice.rule}; probes centred {config.probe.centering}"]
    if saes:
        notes.append(f"SAE part: {saes[REAL]['rows_left_out']} token rows left out "
                     f"({ExclusionRule().describe()}), at the same positions for every source")
    statistics = nulls_statistics(probes, randoms, saes)
    notes += statistics["notes"]
    return NullsResult(config=asdict(config), versions=versions(), model=lm.identity(),
                       dataset=ds.identity, hook=hook, layer=at.choice.to_dict(),
                       n_train=len(split.train), n_test=len(split.test), probes=probes,
                       random_directions=randoms, saes=saes, notes=notes, timings=timings,
                       statistics=statistics)
