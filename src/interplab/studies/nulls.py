"""Null-battery study: run the probe and SAE code paths on real activations and on every null
source (:mod:`interplab.controls.nulls`), and report method − null with an interval.

Probes: statements of a dataset (entity split), last token at ``layer``; for each source and
probe, held-out accuracy with a bootstrap interval and the paired difference real − null; for the
real probe, the accuracies of ``n_random_directions`` norm-matched random directions as a
distribution. SAEs: packed neutral text at the same hook (position 0 and massive-norm tokens left
out, as the SAE study does); for each source a
TopK SAE is trained on the rows of some sequences and evaluated on the rows of the others:
fraction of variance explained on train and held-out rows, L0 and the features used on held-out
rows (an SAE that memorises noise can use many sparse features and still fail held out),
and the model's SAE minus each null's on each of these, with bootstrap intervals over rows.

Every p-value the battery emits (model − null per probe and source, the probe against its random
directions, model − null per SAE metric and source) is one family, corrected with
Benjamini–Hochberg (:func:`nulls_statistics`); the verdicts read the corrected q-values.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from interplab.controls.nulls import DATA_NULLS, NULLS
from interplab.errors import InterplabError
from interplab.studies.config import JsonResult

REAL = "model"


@dataclass
class NullsConfig:
    """Everything that defines a null-battery run (saved with the result)."""

    model: str = field(default="smollm2-135m",
        metadata={"help": "Model: registry name, HF folder or .gguf file."})
    dataset: str = field(default="cities",
        metadata={"help": "Statement dataset for the probe part."})
    layer: int | None = field(default=None,
        metadata={"help": "Block whose resid_post is read (none: the middle block)."})
    nulls: list[str] = field(default_factory=lambda: list(NULLS),
        metadata={"help": "Null sources to run."})
    probes: list[str] = field(default_factory=lambda: ["diffmean", "logistic"],
        metadata={"help": "Probes to run on each source."})
    max_statements: int | None = field(default=1200,
        metadata={"help": "Balanced subsample of at most this many statements (none: all)."})
    test_fraction: float = field(default=0.3,
        metadata={"help": "Share of statements (by entity) held out."})
    n_random_directions: int = field(default=20,
        metadata={"help": "Norm-matched random directions per probe (at least 20)."})
    sae_sequences: int = field(default=64,
        metadata={"help": "Neutral-text sequences for the SAE part (0 skips it)."})
    context_length: int = field(default=64, metadata={"help": "Tokens per neutral-text sequence."})
    corpus: str = field(default="kjv", metadata={"help": "Neutral corpus (kjv or python-docs)."})
    sae_width: int = field(default=4, metadata={"help": "SAE width as a multiple of d_model."})
    sae_k: int = field(default=32, metadata={"help": "Active features of the TopK SAE."})
    sae_steps: int = field(default=300, metadata={"help": "SAE training steps."})
    sae_batch_size: int = field(default=256, metadata={"help": "Rows per SAE training step."})
    sae_heldout_fraction: float = field(default=0.25,
        metadata={"help": "Share of sequences held out from SAE training."})
    seed: int = field(default=0, metadata={"help": "Seed for data, nulls, splits and training."})
    n_boot: int = field(default=1000, metadata={"help": "Bootstrap resamples per interval."})
    batch_size: int = field(default=32, metadata={"help": "Texts per forward pass."})
    device: str | None = field(default=None, metadata={"help": "Device (none: auto)."})

    def validate(self) -> None:
        from interplab.probes import PROBES, PairProbe

        bad = [n for n in self.nulls if n not in NULLS]
        if bad:
            raise InterplabError(f"unknown null(s) {bad}; choose from {', '.join(NULLS)}")
        bad = [p for p in self.probes if p not in PROBES or issubclass(PROBES[p], PairProbe)]
        if bad:
            raise InterplabError(f"probe(s) {bad} cannot run here; choose from "
                                 "diffmean, lda, massmean-iid, logistic")
        if self.n_random_directions < 20:
            raise InterplabError("n_random_directions must be at least 20: one random direction is "
                                 "one draw, and the control is a distribution")
        for name in ("test_fraction", "sae_heldout_fraction"):
            if not 0 < getattr(self, name) < 1:
                raise InterplabError(f"{name} must lie strictly between 0 and 1")
        if min(self.sae_sequences, self.sae_width - 1, self.sae_k - 1, self.sae_steps - 1) < 0:
            raise InterplabError("sae_sequences must be ≥ 0 and sae_width, sae_k, sae_steps ≥ 1")


@dataclass
class NullsResult(JsonResult):
    """``probes[source][probe] = {"value", "lo", "hi", "n", "model_minus_this": {...} | None}``;
    ``random_directions[probe]`` a distribution summary with ``probe_test`` (the real probe's
    accuracy among them); ``saes[source]`` train/held-out metrics with ``model_minus_this``
    (:func:`sae_minus_null`). ``source`` is ``model`` (the real activations) or a null's name.
    Each tested cell holds its raw ``p`` and, corrected as one family (``statistics``,
    :func:`nulls_statistics`), ``q``, ``q_bound`` and ``verdict``."""

    config: dict[str, Any]
    model: dict[str, Any]
    dataset: dict[str, Any]
    hook: str
    n_train: int
    n_test: int
    probes: dict[str, dict[str, dict[str, Any]]]
    random_directions: dict[str, dict[str, Any]]
    saes: dict[str, dict[str, Any]]
    notes: list[str]
    timings: dict[str, float]
    # the family of every p-value above (controls.multiple.Family.to_dict()); None in older
    # result files
    statistics: dict[str, Any] | None = None


def source_rows(name: str, lm: Any, real: np.ndarray, reference: np.ndarray, hook: str,
                positions: str, seed: int, batch_size: int, texts: list[str] | None = None,
                token_ids: Any = None) -> np.ndarray:
    """The rows of source ``name`` matching ``real`` (data nulls are fitted to ``reference``)."""
    from interplab.controls.nulls import data_null, model_null

    if name == REAL:
        return real
    if name in DATA_NULLS:
        return data_null(name, reference, n=len(real), seed=seed)
    return model_null(name, lm, texts, hook, positions, token_ids=token_ids, seed=seed,
                      batch_size=batch_size)


def probe_scores(config: NullsConfig, data: dict[str, np.ndarray], y: np.ndarray,
                  split: Any) -> tuple[dict, dict]:
    """Per source and probe, held-out accuracy and the paired difference real − source, with
    intervals and the bootstrap p-value of "no difference" (``p``, ``p_floor``, ``at_floor``);
    the real probe's norm-matched random directions, with ``probe_test``: the real probe's
    accuracy among them (:func:`~interplab.controls.null_p_value`, one-sided: does it beat
    them?). ``split.train``/``split.test`` index the rows of every source alike. The p-values
    are raw: :func:`nulls_statistics` corrects them."""
    from interplab.controls import (
        bootstrap_mean,
        distribution_summary,
        null_p_value,
        random_direction_accuracies,
    )
    from interplab.probes import make_probe

    hits, probes, randoms = {}, {}, {}
    tr, te = split.train, split.test
    for source, x in data.items():
        for name in config.probes:
            probe = make_probe(name).fit(x[tr], y[tr])
            hits[source, name] = (probe.predict(x[te]) == y[te]).astype(np.float64)
            if source == REAL:
                accs = random_direction_accuracies(probe, x[tr], y[tr], x[te], y[te],
                                                   n=config.n_random_directions, seed=config.seed)
                observed = float(hits[source, name].mean())
                randoms[name] = {**distribution_summary(accs), "probe_test": {
                    "observed": observed, "effect": observed - float(accs.mean()),
                    **null_p_value(observed, accs, alternative="greater").to_dict()}}
    for source in data:
        probes[source] = {}
        for name in config.probes:
            rows = [hits[source, name]] + ([hits[REAL, name] - hits[source, name]]
                                           if source != REAL else [])
            b = bootstrap_mean(np.stack(rows), n_boot=config.n_boot, seed=config.seed, null=0.0)
            diff = ({"value": b["value"][1], "lo": b["lo"][1], "hi": b["hi"][1],
                     "p": b["p"][1], "p_floor": b["p_floor"],
                     "at_floor": b["p"][1] <= b["p_floor"]} if source != REAL else None)
            probes[source][name] = {"value": b["value"][0], "lo": b["lo"][0], "hi": b["hi"][0],
                                    "n": b["n"], "model_minus_this": diff}
    return probes, randoms


def train_and_score_sae(x: np.ndarray, heldout: np.ndarray, config: NullsConfig, seed: int,
                        sae_config: Any = None
                        ) -> tuple[dict[str, Any], dict[str, tuple[np.ndarray, ...]]]:
    """Train a TopK SAE (``config``'s width and k, or ``sae_config``, an
    :class:`~interplab.sae.SAEConfig` of width ``x``'s) on the rows not in ``heldout`` (boolean
    ``[n]``) for ``config.sae_steps`` steps; metrics on both parts, and per part the per-row
    terms of its metrics: squared error, squared deviation from that part's mean
    (FVE = 1 − Σ error / Σ deviation) and active features (L0)."""
    import torch

    from interplab.sae import SAEConfig, TrainerConfig, train_saes
    from interplab.sae.metrics import reconstruction_metrics

    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    train, test = xt[~torch.from_numpy(heldout)], xt[torch.from_numpy(heldout)]
    g = torch.Generator().manual_seed(seed)

    def batches():
        for _ in range(config.sae_steps):
            yield train[torch.randint(0, train.shape[0], (config.sae_batch_size,), generator=g)]

    d = x.shape[1]
    sae_cfg = sae_config or SAEConfig("topk", d, config.sae_width * d, k=config.sae_k, seed=seed)
    tcfg = TrainerConfig(total_steps=config.sae_steps, log_every_steps=0, seed=seed,
                         init_sample_size=min(8192, train.shape[0]))
    sae = train_saes(batches(), [sae_cfg], tcfg)[0].eval()
    out, terms = {}, {}
    with torch.no_grad():
        for part, rows in (("train", train), ("heldout", test)):
            feats = sae.encode(rows)
            recon = sae.decode(feats)
            m = reconstruction_metrics(rows, recon, feats)
            out[part] = {"fve": m.fraction_of_variance_explained, "l0": m.l0,
                         "features_used": m.n_alive, "n_features": m.n_features,
                         "n_rows": m.n_tokens}
            r64 = rows.double()
            terms[part] = ((r64 - recon.double()).pow(2).sum(1).numpy(),
                           (r64 - r64.mean(0)).pow(2).sum(1).numpy(),
                           (feats != 0).sum(1).double().numpy())
    out["generalisation_gap"] = out["train"]["fve"] - out["heldout"]["fve"]
    return out, terms


def _fve(err: np.ndarray, dev: np.ndarray) -> float:
    return float(1 - err.sum() / dev.sum())


def _interval(statistic: Any, columns: list[np.ndarray], config: NullsConfig) -> dict[str, Any]:
    """``value``, ``lo``, ``hi`` and the bootstrap p-value of "the statistic is 0" (``p``,
    ``p_floor``, ``at_floor``; :func:`~interplab.controls.bootstrap_test`)."""
    from interplab.controls import bootstrap_test

    return bootstrap_test(statistic, *columns, null=0.0, n_boot=config.n_boot, seed=config.seed)


def sae_minus_null(real: tuple[dict, dict], null: tuple[dict, dict],
                   config: NullsConfig) -> dict[str, dict[str, Any]]:
    """The model's SAE minus the null's (each a ``train_and_score_sae`` output): FVE on training
    and on held-out rows and held-out L0, each with a bootstrap interval over that part's rows
    (the model's and the null's rows resampled jointly: they are the same token positions) and
    the bootstrap p-value of "no difference" (raw: correct it with the rest of the study's
    family, :func:`sae_cells`), and the features used on held-out rows (a count of distinct
    features: no interval or test, since a resample of rows can only lose features)."""
    (m_real, t_real), (m_null, t_null) = real, null
    out: dict[str, dict[str, Any]] = {}
    for part in ("train", "heldout"):
        (er, dr, _), (en, dn, _) = t_real[part], t_null[part]
        out[f"fve_{part}"] = _interval(lambda a, b, c, d: _fve(a, b) - _fve(c, d),
                                       [er, dr, en, dn], config)
    out["l0_heldout"] = _interval(lambda a, b: float(a.mean() - b.mean()),
                                  [t_real["heldout"][2], t_null["heldout"][2]], config)
    used = m_real["heldout"]["features_used"] - m_null["heldout"]["features_used"]
    out["features_used_heldout"] = {"value": used, "lo": None, "hi": None}
    return out


SAE_TESTED = ("fve_train", "fve_heldout", "l0_heldout")


def sae_cells(diff: dict[str, Any], what: str) -> list[tuple[str, dict[str, Any], float]]:
    """The tested cells of one :func:`sae_minus_null` output, labelled ``"{metric}: {what}"``,
    for :func:`interplab.controls.multiple.correct_cells`."""
    return [(f"{key}: {what}", diff[key], diff[key]["value"]) for key in SAE_TESTED
            if diff.get(key, {}).get("p") is not None]


def nulls_statistics(probes: dict[str, dict[str, Any]], randoms: dict[str, dict[str, Any]],
                     saes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Every p-value of a null battery (:func:`probe_scores`' model − null per probe and source
    and each probe against its random directions; :func:`sae_comparison`'s model − null per
    metric and source) corrected as one family (Benjamini–Hochberg); ``q``, ``q_bound`` and
    ``verdict`` are written into each tested cell. Returns the family's summary."""
    from interplab.controls.multiple import correct_cells

    cells: list[tuple[str, Any, float | None]] = []
    for name, rd in randoms.items():
        if rd.get("probe_test"):
            cells.append((f"{name}: model vs random directions", rd["probe_test"],
                          rd["probe_test"]["effect"]))
    for source, by_probe in probes.items():
        for name, c in by_probe.items():
            d = c.get("model_minus_this")
            if d and d.get("p") is not None:
                cells.append((f"{name}: model − {source}", d, d["value"]))
    for source, m in saes.items():
        if m.get("model_minus_this"):
            cells += sae_cells(m["model_minus_this"], f"model − {source}")
    out = correct_cells(cells).to_dict()
    out["family"] = ("every p-value of this battery: each probe's model − null accuracy "
                     "difference per source and its accuracy against its random directions "
                     "(one-sided: above them), each SAE metric's model − null difference per "
                     "source (bootstrap p-values, two-sided)")
    return out


def sae_comparison(config: NullsConfig, rows: dict[str, np.ndarray],
                   heldout: np.ndarray) -> dict[str, Any]:
    """Per source (``rows[REAL]`` first, the real activations), a TopK SAE of ``config`` trained
    on the rows not in ``heldout`` and scored on both parts, with ``model_minus_this``
    (:func:`sae_minus_null`; None for the real activations)."""
    trained = {s: train_and_score_sae(x, heldout, config, config.seed) for s, x in rows.items()}
    out = {}
    for source, (metrics, _) in trained.items():
        out[source] = {**metrics, "model_minus_this": (
            sae_minus_null(trained[REAL], trained[source], config) if source != REAL else None)}
    return out


def _sae_part(config: NullsConfig, lm: Any, hook: str, sources: list[str]) -> dict[str, Any]:
    from interplab.activations import harvest_tokens
    from interplab.erasure.in_model import neutral_tokens

    tokens = neutral_tokens(lm, corpus=config.corpus, context_length=config.context_length,
                            n_sequences=config.sae_sequences)
    ids = tokens.tolist()
    acts = harvest_tokens(lm, ids, [hook], "all", batch_size=config.batch_size, progress=False)
    real = acts[hook].float().numpy()
    L = config.context_length
    keep = ordinary_rows(real, np.tile(np.arange(L), len(ids)))
    rng = np.random.default_rng(config.seed)
    held_seq = rng.random(len(ids)) < config.sae_heldout_fraction
    heldout = np.repeat(held_seq, L)[keep]
    reference = real[keep][~heldout]
    rows = {s: source_rows(s, lm, real, reference, hook, "all", config.seed, config.batch_size,
                           token_ids=ids)[keep] for s in sources}
    out = sae_comparison(config, rows, heldout)
    out[REAL]["rows_left_out"] = int((~keep).sum())
    return out


def ordinary_rows(x: np.ndarray, position: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows the SAE part uses: the SAE study's default
    :class:`~interplab.activations.exclusion.ExclusionRule` (position 0 and tokens whose norm is
    far above the median) applied to the real activations. A handful of massive-norm tokens
    would otherwise hold most of the variance and decide every FVE."""
    import torch

    from interplab.activations.exclusion import ExclusionRule

    return ExclusionRule().keep_mask(torch.from_numpy(x), torch.from_numpy(position)).numpy()


def run_nulls(config: NullsConfig) -> NullsResult:
    """Run the battery described by ``config`` (see the module docstring)."""
    from interplab.studies.erasure import harvest_split

    config.validate()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    ds, split, lm, layer, hook, real = harvest_split(config)
    real = real.float().numpy()
    sources = [REAL, *config.nulls]
    data = {s: source_rows(s, lm, real, real[split.train], hook, "last", config.seed,
                           config.batch_size, texts=ds.statements) for s in sources}
    timings["harvest_s"] = time.perf_counter() - t0
    t = time.perf_counter()
    probes, randoms = probe_scores(config, data, ds.labels, split)
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
             "their rows keep their statements' labels"]
    if saes:
        from interplab.activations.exclusion import ExclusionRule

        notes.append(f"SAE part: {saes[REAL]['rows_left_out']} token rows left out "
                     f"({ExclusionRule().describe()}), at the same positions for every source")
    statistics = nulls_statistics(probes, randoms, saes)
    notes += statistics["notes"]
    return NullsResult(config=asdict(config), model=lm.identity(), dataset=ds.identity, hook=hook,
                       n_train=len(split.train), n_test=len(split.test), probes=probes,
                       random_directions=randoms, saes=saes, notes=notes, timings=timings,
                       statistics=statistics)
