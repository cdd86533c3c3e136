"""The XOR study: can a linear probe read XORs of arbitrary features, and what does it cost?

Question (the "random-access XOR" finding): a logistic probe on the residual stream may read not
only basic features a and b but also a ⊕ b for unrelated pairs. If it does, a truth probe
trained where an unrelated feature is constant (only "Alice") mixes in the a ⊕ label direction
and can fail when the feature flips ("Bob"), with no spurious correlation in its training data.

Data flow: the XOR datasets (``interplab.datasets.xor``: every feature crossed with every other,
exactly balanced per entity group) → entity splits (no city on two sides) → resid_post per layer
at the last token (optionally also the mean over the statement's own tokens) for the model, its
weight-permuted reset copy and a randomly initialised network of the same architecture, cached
on disk → per feature (basic, pairwise XOR, three-way XOR), layer and network a logistic probe
fitted on train, the layer chosen on validation, accuracy on test with bootstrap CIs and a
shuffled-label control → graded verdicts, token-level artefacts flagged where a control network
reads a XOR too → the generalization experiment (train on one value of a feature, test on the
other, against training on both; how much of the drop the a ⊕ label direction explains) → a
JSON-serialisable :class:`XorResult`.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from interplab.activations import Positions
from interplab.controls import bootstrap_mean, bootstrap_statistic, shuffled_accuracy_interval
from interplab.controls.multiple import controls_explaining, grade_family
from interplab.datasets import StatementDataset, entity_split, load_dataset
from interplab.datasets.splits import Split
from interplab.datasets.xor import BASIC_FEATURES, feature_aliases, feature_kind, feature_table
from interplab.defaults import DEFAULT_N_BOOT
from interplab.errors import InterplabError
from interplab.models import LanguageModel, load, random_init_copy, reset_copy
from interplab.probes import LinearProbe, make_probe
from interplab.probes.generalization import LabelledActs, fit_and_test
from interplab.progress import progress_display
from interplab.studies.xor.config import (
    CENTERING,
    CONTROL_WORDS,
    CONTROLS,
    NETWORK_WORDS,
    NETWORKS,
    PROBE,
    TOKEN_WORDS,
    XorConfig,
    XorResult,
)
from interplab.study.harvest import harvest_statements
from interplab.study.result import versions
from interplab.study.settings import LAST_TOKEN
from interplab.threads import limit_threads


# ---------------------------------------------------------------------------------- probing
def _as_curve(est: dict[str, Any]) -> dict[str, Any]:
    return {"value": list(est["value"]), "lo": list(est["lo"]), "hi": list(est["hi"]),
            "n": int(est["n"])}


def feature_curves(X: np.ndarray, y: np.ndarray, split: Split, *, shuffled: bool, seed: int = 0,
                   n_boot: int = DEFAULT_N_BOOT, n_shuffles: int = 3) -> dict[str, dict[str, Any]]:
    """Held-out accuracy per layer of a logistic probe for one binary feature.

    ``X`` is ``[n_layers, n, d]``, ``y`` ``[n]`` (0/1), ``split`` has ``train``/``val``/``test``
    row indices. Returns ``{"probe": curve, "shuffled": curve}`` (the latter only with
    ``shuffled``); a curve holds test ``value``/``lo``/``hi`` (95 % bootstrap) per layer, ``n``,
    and for the probe ``val`` (validation accuracy per layer, which chooses the layer). The
    shuffled-label interval is that of one shuffled probe (it covers the spread between shuffles).
    """

    def part(rows: np.ndarray) -> LabelledActs:
        return LabelledActs(X[:, rows], y[rows])

    variants = ["probe", "shuffled"] if shuffled else ["probe"]
    out = fit_and_test(PROBE, part(split.train), {"val": part(split.val), "test": part(split.test)},
                       centering=CENTERING, variants=variants, seed=seed, n_shuffles=n_shuffles)
    probe = _as_curve(bootstrap_mean(out.correct["probe"]["test"], n_boot=n_boot, seed=seed))
    probe["val"] = out.correct["probe"]["val"].mean(axis=1).tolist()
    curves = {"probe": probe}
    if shuffled:
        est = shuffled_accuracy_interval(out.shuffle_correct["test"], n_boot=n_boot, seed=seed)
        curves["shuffled"] = _as_curve(est)
    return curves


def generalization_curves(X: np.ndarray, held: np.ndarray, label: np.ndarray, split: Split, *,
                          seed: int = 0, n_boot: int = DEFAULT_N_BOOT) -> dict[str, Any]:
    """A label probe trained where the feature ``held`` is 1, tested where it is 0.

    Per layer (``X`` ``[n_layers, n, d]``): ``in`` (trained on held = 1, tested on held = 1),
    ``out`` (same probe, tested on held = 0), ``both`` (trained on a stratified subset of the
    same size with both values, tested on held = 0), ``drop`` (``both`` − ``out``, paired
    bootstrap), and two readings of the drop: ``ablated`` (the probe with its component along the
    ``held ⊕ label`` probe direction removed, threshold refitted on its own training rows) and
    ``recentred`` (the probe's threshold moved to the mean decision on the test rows, which
    removes an offset but keeps the direction). ``cos_xor`` / ``cos_xor_both`` are the cosines
    of each probe's direction with the ``held ⊕ label`` probe direction, fitted on the
    validation rows, which neither probe trains on; ``separation_ratio`` is the probe's class
    separation (mean decision, true minus false) on held = 0 over that on held = 1: 1 when the
    label direction is the same for both values, below 0 when it inverts. The layer is chosen by
    the probe's validation accuracy on held = 1; ``explained`` (at that layer) is the share of
    the drop each reading recovers, with CIs.
    """
    held, label = np.asarray(held), np.asarray(label)
    tr, va, te = split.train, split.val, split.test
    rows = {"const": tr[held[tr] == 1], "val_in": va[held[va] == 1], "val": va,
            "in": te[held[te] == 1], "out": te[held[te] == 0]}
    rows["both"] = _stratified_subset(tr, held, label, len(rows["const"]), seed)
    with limit_threads(1):
        per_layer = [_generalization_layer(X[li], held, label, rows) for li in range(len(X))]
    hits = {k: np.stack([p["hits"][k] for p in per_layer]).astype(np.float64)
            for k in ("in", "out", "both", "ablated", "recentred")}
    curves = {k: _as_curve(bootstrap_mean(h, n_boot=n_boot, seed=seed))
              for k, h in hits.items()}
    curves["drop"] = _as_curve(bootstrap_mean(hits["both"] - hits["out"], n_boot=n_boot,
                                                  seed=seed))
    val_in = [p["val_in"] for p in per_layer]
    li = int(np.argmax(val_in))
    explained = {k: _share(hits, k, li, n_boot, seed)
                 for k in ("ablated", "recentred")}
    return {**curves, "val_in": val_in, "cos_xor": [p["cos"] for p in per_layer],
            "cos_xor_both": [p["cos_both"] for p in per_layer],
            "separation_ratio": [p["separation_ratio"] for p in per_layer],
            "layer_index": li, "explained": explained, "n_train": int(len(rows["const"])),
            "n_test_in": int(len(rows["in"])), "n_test_out": int(len(rows["out"]))}


def _generalization_layer(X: np.ndarray, held: np.ndarray, label: np.ndarray,
                          rows: dict[str, np.ndarray]) -> dict[str, Any]:
    """One layer (``X`` ``[n, d]``) of :func:`generalization_curves`: per-row hits and geometry."""
    def fit(idx: np.ndarray, y: np.ndarray) -> LinearProbe:
        return make_probe(PROBE, centering=CENTERING).fit(X[idx], y[idx])

    def hits(probe: LinearProbe, idx: np.ndarray) -> np.ndarray:
        return (probe.decision_function(X[idx]) > 0) == label[idx]

    const, both = fit(rows["const"], label), fit(rows["both"], label)
    # On the validation rows, which no probe here trains on: two probes fitted on shared rows
    # share their overfitting, and with d > n their cosine is large with no XOR at all.
    v = fit(rows["val"], held ^ label).direction_
    w = const.direction_
    ablated = const.with_direction(w - (w @ v) / (v @ v) * v, X[rows["const"]],
                                   label[rows["const"]])
    dec_out, dec_in = (const.decision_function(X[rows[k]]) for k in ("out", "in"))
    y_out, y_in = label[rows["out"]], label[rows["in"]]
    return {
        "hits": {"in": hits(const, rows["in"]), "out": hits(const, rows["out"]),
                 "both": hits(both, rows["out"]), "ablated": hits(ablated, rows["out"]),
                 "recentred": ((dec_out - dec_out.mean()) > 0) == y_out},
        "val_in": float(hits(const, rows["val_in"]).mean()),
        "cos": _cosine(w, v), "cos_both": _cosine(both.direction_, v),
        "separation_ratio": _separation(dec_out, y_out) / (_separation(dec_in, y_in) or np.nan),
    }


def _share(hits: dict, key: str, li: int, n_boot: int, seed: int) -> dict[str, float]:
    """Share of the drop (``both`` − ``out``) that reading ``key`` recovers, with its CI."""
    def share(both: np.ndarray, out: np.ndarray, fixed: np.ndarray) -> float:
        drop = both.mean() - out.mean()
        return float((fixed.mean() - out.mean()) / drop) if drop > 0 else float("nan")

    columns = (hits["both"][li], hits["out"][li], hits[key][li])
    if np.isnan(share(*columns)):  # no drop: nothing to share out
        return {"value": float("nan"), "lo": float("nan"), "hi": float("nan")}
    value, lo, hi = bootstrap_statistic(share, *columns, n_boot=n_boot, seed=seed)
    return {"value": value, "lo": lo, "hi": hi}


def _stratified_subset(rows: np.ndarray, held: np.ndarray, label: np.ndarray, size: int,
                       seed: int) -> np.ndarray:
    """``size`` of ``rows``, as many from each (held, label) cell as the cells allow."""
    rng = np.random.default_rng([seed, 1])
    cells = [rows[(held[rows] == h) & (label[rows] == c)] for h in (0, 1) for c in (0, 1)]
    take = [len(cell) * size // len(rows) for cell in cells]
    return np.sort(np.concatenate([rng.permutation(cell)[:k] for cell, k in zip(cells, take,
                                                                              strict=True)]))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na and nb else float("nan")


def _separation(dec: np.ndarray, y: np.ndarray) -> float:
    return float(dec[y == 1].mean() - dec[y == 0].mean())


# ---------------------------------------------------------------------------------- data
def _load(config: XorConfig) -> tuple[dict[str, Any], dict[str, Any], dict[str, dict]]:
    """Datasets (whole groups), their entity splits and feature tables; checked before any
    model is loaded."""

    datasets, splits, features = {}, {}, {}
    for name in config.datasets:
        ds = load_dataset(name, seed=config.run.seed, max_size=config.data.max_per_dataset or None)
        datasets[name] = ds
        splits[name] = entity_split(ds, tuple(config.data.split), seed=config.run.seed)
        features[name] = feature_table(ds)
    return datasets, splits, features


def _aliases(datasets: dict[str, StatementDataset]) -> dict[str, dict[str, str]]:
    return {name: feature_aliases(ds) for name, ds in datasets.items()}


def _body_positions(lm: LanguageModel, ds: StatementDataset) -> Positions:
    """Per text, the indices of the tokens that overlap its statement's character span."""
    enc = lm.tokenizer(list(ds.statements), add_special_tokens=True, return_offsets_mapping=True)
    rows = []
    for i, offsets in enumerate(enc["offset_mapping"]):
        start, end = ds.metadata["body_start"][i], ds.metadata["body_end"][i]
        idx = [k for k, (s, e) in enumerate(offsets) if e > s and e > start and s < end]
        if not idx:
            raise InterplabError(f"no token of {ds.statements[i]!r} covers its statement; "
                                 "use --tokens last")
        rows.append(idx)
    return Positions.explicit(rows)


def _networks(lm: LanguageModel, config: XorConfig) -> dict[str, LanguageModel]:
    nets = {"model": lm}
    if "reset" in config.controls:
        nets["reset"] = reset_copy(lm, seed=config.run.seed)
    if "random_init" in config.controls:
        nets["random_init"] = random_init_copy(lm, seed=config.run.seed)
    return nets


def _harvest(config: XorConfig, datasets: dict, layers: list[int], nets: dict, bar: Any,
             cache: Path | None) -> tuple[dict, int]:
    """acts[tokens][network][dataset] = X ``[L, n, d]``, through the truth study's cache."""
    acts: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    reused = 0
    for mode in config.tokens:
        for net, lm in nets.items():
            positions_of = (lambda ds, lm=lm: _body_positions(lm, ds)) if mode == "mean" else None
            tokens = (LAST_TOKEN if mode == "last"
                      else f"mean over the statement; {TOKEN_WORDS['mean']}")
            out, hits = harvest_statements(
                lm, datasets, layers, batch_size=config.run.batch_size, progress=bar,
                label=f"{net}, {mode}", cache_dir=cache, with_logprobs=False,
                threads=config.run.threads, tokens=tokens, positions_of=positions_of)
            acts.setdefault(mode, {})[net] = {name: part.acts for name, part in out.items()}
            reused += hits
    return acts, reused


# ---------------------------------------------------------------------------------- readings
def _at(curve: dict[str, Any], li: int, layers: list[int]) -> dict[str, Any]:
    return {"layer": layers[li], "value": curve["value"][li], "lo": curve["lo"][li],
            "hi": curve["hi"][li], "n": curve["n"]}


def _readings(curves: dict, layers: list[int], aliases: dict[str, dict[str, str]]
              ) -> list[dict[str, Any]]:
    """One row per (tokens, dataset, feature): each network at the layer its own validation
    accuracy chooses, graded against chance as one family per network (Benjamini–Hochberg),
    then the model's reading against every control: ``explained_by`` names the controls that
    read it as well, ``partly_explained_by`` those that read part of it
    (:func:`~interplab.controls.multiple.controls_explaining`). ``same_as`` names the known
    feature a XOR equals, if any (then it is not an arbitrary XOR)."""

    rows = []
    for mode, per_ds in curves.items():
        for name, per_feature in per_ds.items():
            for feature, per_net in per_feature.items():
                row: dict[str, Any] = {"tokens": mode, "dataset": name, "feature": feature,
                                       "kind": feature_kind(feature),
                                       "same_as": aliases.get(name, {}).get(feature)}
                for net in NETWORKS:
                    if net in per_net:
                        li = int(np.argmax(per_net[net]["val"]))
                        row[net] = _at(per_net[net], li, layers)
                if "shuffled" in per_net:
                    row["shuffled"] = _at(per_net["shuffled"], layers.index(row["model"]["layer"]),
                                          layers)
                rows.append(row)
    for net in NETWORKS:
        cells = [r[net] for r in rows if net in r]
        for cell, verdict in zip(cells, grade_family([c["value"] for c in cells],
                                                     [c["n"] for c in cells],
                                                     [None] * len(cells)), strict=True):
            cell.update(verdict.to_dict())

    for r in rows:
        r["artefact"], r["comment"] = _artefact(r)
        r.update(controls_explaining(r["model"], r["model"]["verdict"],
                                     {c: r.get(c) for c in CONTROLS}))
        r["beyond_controls"] = _beats_controls(r) and not r["explained_by"]
    return rows


_READS = ("above chance", "weakly above chance")


def _artefact(row: dict[str, Any]) -> tuple[str | None, str]:
    """Whether a control network reads the feature too, and what that means, in words."""
    model = row["model"]
    controls = [(net, row[net]) for net in ("reset", "random_init")
                if net in row and row[net]["verdict"] in _READS]
    if not controls:
        return None, ""
    net, c = max(controls, key=lambda nc: nc[1]["value"])
    what = NETWORK_WORDS[net]
    if model.get("verdict") not in _READS:
        return None, (f"{what} reads it ({c['value']:.2f} at layer {c['layer']}) although the "
                      "model does not")
    if row["kind"] == "basic":
        return None, (f"{what} reads it too ({c['value']:.2f} at layer {c['layer']}): the "
                      "feature is present in the tokens themselves")
    if c["hi"] >= model["lo"]:
        return "token-level artefact", (
            f"{what} reads this XOR as well as the model ({c['value']:.2f} [{c['lo']:.2f}, "
            f"{c['hi']:.2f}] at layer {c['layer']} against {model['value']:.2f}): fixed random "
            "nonlinearities applied to the tokens compute it, so it is no evidence of a learned "
            "XOR representation")
    return "partly token-level", (
        f"{what} reads this XOR above chance ({c['value']:.2f} at layer {c['layer']}), below the "
        f"model's {model['value']:.2f}: part of it needs no learned weights")


# ---------------------------------------------------------------------------------- the run
def run_xor(config: XorConfig, *, progress: bool = True, console: Console | None = None,
            cache_dir: str | Path | None = None) -> XorResult:
    """Run the study described by ``config``. Datasets and splits are built and checked before
    the model is loaded; with ``cache_dir`` harvested activations are kept and reused (one file
    per network identity, dataset content hash, layer list and token choice)."""
    config.validate()
    console = console or Console(stderr=True)
    cache = Path(cache_dir) if cache_dir is not None else None
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    datasets, splits, features = _load(config)
    timings["datasets_s"] = time.perf_counter() - t0
    with progress_display(console, enabled=progress) as bar:
        t = time.perf_counter()
        lm = load(config.run.model, device=config.run.device)
        layers = _layers(config, lm.n_layers)
        nets = _networks(lm, config)
        timings["load_s"] = time.perf_counter() - t
        t = time.perf_counter()
        acts, reused = _harvest(config, datasets, layers, nets, bar, cache)
        timings["harvest_s"] = time.perf_counter() - t
        console.print(f"harvested {len(nets)} network(s) × {len(datasets)} datasets × "
                      f"{len(layers)} layers in {timings['harvest_s']:.0f} s"
                      + (f" ({reused} reused from {cache})" if reused else ""))
        identities = {net: m.identity() for net, m in nets.items()}
        del nets, lm
        t = time.perf_counter()
        curves = _all_curves(config, acts, features, splits, bar)
        timings["probes_s"] = time.perf_counter() - t
        t = time.perf_counter()
        general = _all_generalization(config, acts, features, splits) \
            if config.generalization else {}
        timings["generalization_s"] = time.perf_counter() - t
    aliases = _aliases(datasets)
    readings = _readings(curves, layers, aliases)
    notes = _notes(config)
    summary = _summary(identities["model"]["name"], readings, general, layers, aliases)
    timings["total_s"] = time.perf_counter() - t0
    return XorResult(
        config=asdict(config), versions=versions(), model=identities["model"],
        control_models={n: i for n, i in identities.items() if n != "model"},
        datasets=[_dataset_info(ds, splits[n], features[n]) for n, ds in datasets.items()],
        layers=layers, curves=curves, readings=readings, generalization=general,
        method=_method(config, splits), summary=summary, notes=notes, timings=timings)


def _layers(config: XorConfig, n_layers: int) -> list[int]:
    if config.layers is not None:
        bad = [layer for layer in config.layers if layer >= n_layers]
        if bad:
            raise InterplabError(f"layers {bad} do not exist: the model has blocks 0–{n_layers - 1}")
        return sorted(set(config.layers))
    return sorted(set(range(0, n_layers, config.layer_step)) | {n_layers - 1})


def _all_curves(config: XorConfig, acts: dict, features: dict, splits: dict, bar: Any) -> dict:
    total = sum(len(f) for f in features.values()) * len(config.tokens)
    task = bar.add_task("fit probes", total=total)
    curves: dict = {}
    with limit_threads(1):  # many small fits: one thread each is faster than two contending
        for mode, per_net in acts.items():
            for name, feats in features.items():
                for feature, y in feats.items():
                    entry = {}
                    for net, data in per_net.items():
                        got = feature_curves(data[name], y, splits[name],
                                             shuffled=net == "model" and "shuffled" in
                                             config.controls, seed=config.run.seed,
                                             n_boot=config.run.n_boot, n_shuffles=config.n_shuffles)
                        entry[net] = got["probe"]
                        if "shuffled" in got:
                            entry["shuffled"] = got["shuffled"]
                    curves.setdefault(mode, {}).setdefault(name, {})[feature] = entry
                    bar.advance(task)
    return curves


def _all_generalization(config: XorConfig, acts: dict, features: dict, splits: dict) -> dict:
    """For every dataset with truth, every other basic feature held constant at 1."""
    out: dict = {}
    for mode, per_net in acts.items():
        for name, feats in features.items():
            if "label" not in feats:
                continue
            for held in (f for f in BASIC_FEATURES if f in feats and f != "label"):
                g = generalization_curves(per_net["model"][name], feats[held], feats["label"],
                                          splits[name], seed=config.run.seed, n_boot=config.run.n_boot)
                out.setdefault(mode, {}).setdefault(name, {})[held] = g
    return out


def _dataset_info(ds: StatementDataset, split: Split, feats: dict) -> dict[str, Any]:
    sides = split.sides()
    return {**ds.identity, "split_rule": split.rule, "group_by": ds.group_by,
            **{f"n_{s}": int(len(rows)) for s, rows in sides.items()},
            "features": list(feats), "examples": ds.statements[:4]}


def _method(config: XorConfig, splits: dict) -> dict[str, Any]:
    return {
        "probe": "logistic regression (interplab.probes.LogisticProbe, L2, C=1 on inputs scaled "
                 "to unit RMS), centred by the training mean",
        "tokens": {m: TOKEN_WORDS[m] for m in config.tokens},
        "splits": {n: s.rule for n, s in splits.items()},
        "split_words": "by entity group (a city pair of cities and every statement about it, or a "
                       "filler group): no city is on two sides; every side is exactly balanced "
                       "over all cells of the basic features",
        "layer_selection": "each network's layer is the one with the highest validation "
                           "accuracy; test accuracy is reported at that layer",
        "intervals": f"95 % percentile bootstrap over test statements ({config.run.n_boot} draws); "
                     "the shuffled-label interval is that of one shuffled probe",
        "verdicts": "exact binomial test against 0.5 per reading, Benjamini-Hochberg per network",
        "artefact_rule": "a XOR is a token-level artefact when a control network reads it "
                         "(significantly above chance) with an interval reaching the model's; "
                         "partly token-level when a control reads it less well",
        "generalization": "truth probe trained on the rows where a feature is 1 (e.g. Alice), "
                          "tested on the test rows where it is 0 (Bob), against a probe trained "
                          "on a stratified subset of the same size with both values; layer "
                          "chosen on the held = 1 validation rows",
    }


def _notes(config: XorConfig) -> list[str]:
    notes = []
    if "mean" in config.tokens:
        notes.append("Mean-over-statement activations average the tokens whose characters "
                     "overlap the statement, so a token spanning the boundary with the prefix "
                     "(rare) is included.")
    if not {"reset", "random_init"} & set(config.controls):
        notes.append("No control network was run: token-level artefacts cannot be told apart.")
    return notes


# ---------------------------------------------------------------------------------- summary
_MODE_SHORT = {"last": "last token", "mean": "mean over the statement"}


def _fmt(c: dict[str, Any]) -> str:
    return f"{c['value']:.2f} [{c['lo']:.2f}, {c['hi']:.2f}]"


def _beats_controls(r: dict[str, Any]) -> bool:
    """The model reads it, significantly, and above every control's interval."""
    if r["model"]["verdict"] not in _READS:
        return False
    ctrl = [r[k]["hi"] for k in ("reset", "random_init", "shuffled") if k in r]
    return all(r["model"]["lo"] > hi for hi in ctrl)


def _closest(r: dict[str, Any]) -> str:
    """The control reading closest to the model's, in words ("reset network 0.82 [0.70, 0.93]
    at L3"), or "" when no control ran."""
    present = [c for c in CONTROLS if c in r]
    if not present:
        return ""
    c = max(present, key=lambda c: r[c]["value"])
    at = f" at L{r[c]['layer']}" if "layer" in r[c] and c != "shuffled" else ""
    return f"{CONTROL_WORDS[c]} {_fmt(r[c])}{at}"


def _named(r: dict[str, Any], mode: bool = False) -> str:
    where = f", {_MODE_SHORT[r['tokens']]}" if mode else ""
    return f"{r['dataset']} {r['feature']}{where}: {_fmt(r['model'])}"


def _listed(items: list[str], limit: int = 3) -> str:
    more = len(items) - limit
    return "; ".join(items[:limit]) + (f"; and {more} more (see the table)" if more > 0 else "")


def _summary(model: str, readings: list[dict], general: dict, layers: list[int],
             aliases: dict[str, dict[str, str]]) -> list[str]:
    """The answer in a few findings, each with its interval and the control it was checked
    against: whether RAX reproduces (per token choice), what is read beyond every control, what
    a control network reads as well (token-level), XORs that are known features, and what
    holding a feature constant in training costs."""
    out = []
    modes = list(dict.fromkeys(r["tokens"] for r in readings))
    for mode in modes:
        rows = [r for r in readings if r["tokens"] == mode]
        truth_xors = [r for r in rows if r["kind"] != "basic" and "label" in r["feature"]
                      and not r["same_as"]]
        labels = [r for r in rows if r["feature"] == "label"]
        label_read = [r for r in labels if _beats_controls(r)]
        real = [r for r in truth_xors if _beats_controls(r) and r["artefact"] is None]
        if real and label_read:
            out.append(f"RAX reproduces on {model} ({mode}): "
                       + "; ".join(f"{_named(r)} (closest control: {_closest(r)})"
                                   for r in real)
                       + " — XORs with truth, which no token carries, read significantly above "
                         "chance and above every control.")
        elif truth_xors:
            best = max(truth_xors, key=lambda r: r["model"]["value"])
            if not label_read:
                top = max(labels, key=lambda r: r["model"]["value"]) if labels else None
                why = "truth itself is not read above the controls" + (
                    f" (best: {_named(top)}, closest control: {_closest(top)})" if top else "")
            else:
                why = (f"no XOR with truth is read above chance and above every control (best: "
                       f"{_named(best)}, closest control: {_closest(best)})")
            out.append(f"RAX does not reproduce on {model} ({mode}): {why}.")
    several = len(modes) > 1
    beyond = sorted((r for r in readings if _beats_controls(r) and not r.get("explained_by")),
                    key=lambda r: -r["model"]["value"])
    if beyond:
        out.append(f"Read beyond every control ({len(beyond)} of {len(readings)} readings): "
                   + _listed([_named(r, several) for r in beyond]) + ".")
    else:
        out.append(f"None of the {len(readings)} readings is above chance beyond every control.")
    networks = [r for r in readings
                if {"reset", "random_init"} & set(r.get("explained_by", []))]
    xors = [r for r in networks if r["kind"] != "basic"]
    basic = len(networks) - len(xors)
    if networks:
        out.append(("XORs read as well by a control network, so token-level (fixed random "
                    "nonlinearities of the tokens compute them; no learned weights needed): "
                    + _listed([f"{_named(r, several)} vs "
                               + ", ".join(f"{CONTROL_WORDS[c]} {_fmt(r[c])}"
                                           for c in r["explained_by"] if c != "shuffled")
                               for r in sorted(xors, key=lambda r: -r["model"]["value"])])
                    + "." if xors else "No XOR is read as well by a control network.")
                   + (f" {basic} basic feature reading(s) are matched by a control network, as "
                      "expected of features the tokens carry." if basic else ""))
    known = [r for r in readings if r["same_as"] and _beats_controls(r)]
    if known:
        out.append("; ".join(f"{r['dataset']} {r['feature']} ({_fmt(r['model'])}) is not an "
                             f"arbitrary XOR: it equals {r['same_as']}" for r in known) + ".")
    cases = [(mode, name, held, g) for mode, per_ds in general.items()
             for name, per_held in per_ds.items() for held, g in per_held.items()]
    if cases:
        drops = []
        for mode, name, held, g in cases:
            li = g["layer_index"]
            drop = {k: g["drop"][k][li] for k in ("value", "lo", "hi")}
            if drop["lo"] > 0:
                same = aliases.get(name, {}).get(f"{held}^label")
                drops.append(f"{name} {held}{', ' + _MODE_SHORT[mode] if several else ''}: "
                             f"drop {_fmt(drop)} at layer {layers[li]}, of which removing the "
                             f"{held}^label direction{f' (= {same})' if same else ''} recovers "
                             f"{_fmt(g['explained']['ablated'])}")
        head = (f"A truth probe trained where a feature is held at 1 and tested where it is 0 "
                f"({len(cases)} case{'s' if len(cases) != 1 else ''}, against a probe trained on "
                "both values): ")
        out.append(head + (f"a significant drop in {len(drops)}: " + _listed(drops) + "."
                           if drops else "no significant drop, so there is nothing for a XOR "
                           "to explain."))
    return out
