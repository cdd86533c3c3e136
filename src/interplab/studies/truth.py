"""The truth study: do activations linearly represent whether a statement is true?

Data flow: statement datasets → last-token residual stream at every layer (+ each statement's
log-probability, same pass) for the model and for its weight-permuted reset copy → per training
set, layer and probe: held-out and cross-dataset accuracy with bootstrap CIs, beside the
shuffled-label, random-direction and reset-network controls and a log-probability baseline →
a JSON-serialisable :class:`TruthResult` (the report draws it).
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress
from threadpoolctl import threadpool_limits

import interplab
from interplab.errors import InterplabError
from interplab.progress import LineProgress, progress_display

DEFAULT_DATASETS = [
    "cities", "neg_cities", "sp_en_trans", "neg_sp_en_trans",
    "larger_than", "smaller_than", "cities_conj", "cities_disj",
]
DEFAULT_TRAIN_SETS = [["cities"], ["cities", "neg_cities"], ["larger_than"], ["sp_en_trans"]]
DEFAULT_PCA_PAIRS = [["cities", "neg_cities"], ["larger_than", "smaller_than"]]
CONTROLS = ("shuffled", "random", "reset")


@dataclass
class TruthConfig:
    """Everything that defines a truth-study run (saved with the result)."""

    model: str = "smollm2-135m"
    datasets: list[str] = field(default_factory=lambda: list(DEFAULT_DATASETS))
    train_sets: list[list[str]] = field(default_factory=lambda: [list(t) for t in DEFAULT_TRAIN_SETS])
    layers: list[int] | None = None  # None: every block
    probes: list[str] = field(default_factory=lambda: ["diffmean", "lda", "logistic", "ccs"])
    controls: list[str] = field(default_factory=lambda: list(CONTROLS))
    max_per_dataset: int | None = 600
    test_fraction: float = 0.3
    centering: str = "train"
    seed: int = 0
    n_boot: int = 1000
    n_shuffles: int = 5
    batch_size: int = 64
    device: str | None = None
    pca_pairs: list[list[str]] = field(default_factory=lambda: [list(p) for p in DEFAULT_PCA_PAIRS])

    def validate(self) -> None:
        from interplab.probes import CENTERINGS, PROBES

        if not self.datasets:
            raise InterplabError("no datasets given; name at least one (e.g. cities)")
        unknown = [p for p in self.probes if p not in PROBES]
        if unknown:
            raise InterplabError(f"unknown probe(s) {unknown}; choose from {list(PROBES)}")
        bad = [c for c in self.controls if c not in CONTROLS]
        if bad:
            raise InterplabError(f"unknown control(s) {bad}; choose from {list(CONTROLS)}")
        if self.centering not in CENTERINGS:
            raise InterplabError(f"centering must be one of {CENTERINGS}")
        names = {_short_name(d) for d in self.datasets}
        for ts in self.train_sets:
            missing = [d for d in ts if _short_name(d) not in names]
            if missing:
                raise InterplabError(
                    f"training set {ts} uses {missing}, which is not among the datasets "
                    f"{sorted(names)}; add it to the datasets"
                )
        if not 0 < self.test_fraction < 1:
            raise InterplabError("test_fraction must be between 0 and 1")
        if self.n_shuffles < 1:
            raise InterplabError("n_shuffles must be at least 1")


@dataclass
class TruthResult:
    """A truth-study result: config, metrics with their controls, counts, seeds and versions."""

    config: dict[str, Any]
    versions: dict[str, str]
    model: dict[str, Any]
    reset_model: dict[str, Any] | None
    datasets: list[dict[str, Any]]
    layers: list[int]
    probes: list[str]
    train_sets: list[str]
    test_sets: list[str]
    # accuracy[train][probe][variant] = {"value": [L][T], "lo": [L][T], "hi": [L][T], "n": [T]}
    accuracy: dict[str, dict[str, dict[str, dict[str, Any]]]]
    # heldout[train][probe][variant] = {"value": [L], "lo": [L], "hi": [L], "n"}: the training
    # datasets' own test splits pooled (the in-distribution number)
    heldout: dict[str, dict[str, dict[str, dict[str, Any]]]]
    best_layer: dict[str, dict[str, int]]
    likelihood: dict[str, Any]
    pca: dict[str, Any]
    notes: list[str]
    timings: dict[str, float]

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1, allow_nan=True), encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> TruthResult:
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))

    # convenience accessors used by the report and tests
    def acc(self, train: str, probe: str, variant: str, layer: int, test: str) -> dict[str, float]:
        entry = self.accuracy[train][probe][variant]
        li, ti = self.layers.index(layer), self.test_sets.index(test)
        return {"value": entry["value"][li][ti], "lo": entry["lo"][li][ti],
                "hi": entry["hi"][li][ti], "n": entry["n"][ti]}


def _short_name(spec: str) -> str:
    return Path(spec).stem if spec.lower().endswith(".csv") else spec


def _train_key(names: list[str]) -> str:
    return "+".join(_short_name(n) for n in names)


def _versions() -> dict[str, str]:
    import sklearn
    import transformers

    return {"interplab": interplab.__version__, "torch": torch.__version__,
            "transformers": transformers.__version__, "sklearn": sklearn.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def _harvest_all(lm: Any, datasets: dict, layers: list[int], batch_size: int,
                 progress: Progress | LineProgress, label: str,
                 with_logprobs: bool = True) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Per dataset: last-token resid_post at ``layers`` ``[L, n, d]`` and log-probabilities."""
    from interplab.activations import harvest

    hooks = [f"blocks.{layer}.hook_resid_post" for layer in layers]
    task = progress.add_task(f"harvest ({label})", total=len(datasets))
    out = {}
    for name, ds in datasets.items():
        acts = harvest(lm, ds.statements, hooks, "last", batch_size=batch_size,
                       with_logprobs=with_logprobs, progress=False)
        X = torch.stack([acts[h] for h in hooks]).float().numpy()  # [L, n, d]
        out[name] = (X, acts.text_logprob.numpy() if with_logprobs else None)
        progress.advance(task)
    return out


def run_truth(config: TruthConfig, *, progress: bool = True,
              console: Console | None = None) -> TruthResult:
    """Run the study described by ``config``; returns the result (nothing is written)."""
    from interplab.datasets import NEGATION_TWINS, load_dataset
    from interplab.models import load, reset_copy
    from interplab.probes.generalization import (
        LabelledActs,
        bootstrap_accuracy,
        fit_and_test,
    )

    config.validate()
    console = console or Console(stderr=True)
    timings: dict[str, float] = {}
    notes: list[str] = []
    t0 = time.perf_counter()

    datasets = {}
    for spec in config.datasets:
        ds = load_dataset(spec, seed=config.seed, max_size=config.max_per_dataset)
        datasets[_short_name(spec)] = ds
    splits = {}
    for name, ds in datasets.items():
        train_ds, test_ds = ds.train_test_split(config.test_fraction, seed=config.seed)
        where = {s: i for i, s in enumerate(ds.statements)}
        splits[name] = (np.array([where[s] for s in train_ds.statements]),
                        np.array([where[s] for s in test_ds.statements]))
    timings["datasets_s"] = time.perf_counter() - t0

    with progress_display(console, enabled=progress) as bar:
        t = time.perf_counter()
        lm = load(config.model, device=config.device)
        layers = list(range(lm.n_layers)) if config.layers is None else list(config.layers)
        for layer in layers:
            lm.parse_hook(f"blocks.{layer}.hook_resid_post")
        timings["load_s"] = time.perf_counter() - t
        n_statements = sum(len(ds) for ds in datasets.values())
        console.print(f"loaded {lm.name} in {timings['load_s']:.0f} s; {len(datasets)} datasets, "
                      f"{n_statements} statements, {len(layers)} layers")
        t = time.perf_counter()
        acts = {"model": _harvest_all(lm, datasets, layers, config.batch_size, bar, "model")}
        console.print(f"harvested the model in {time.perf_counter() - t:.0f} s")
        reset_identity = None
        if "reset" in config.controls:
            reset = reset_copy(lm, seed=config.seed)
            reset_identity = reset.identity()
            acts["reset"] = _harvest_all(reset, datasets, layers, config.batch_size, bar,
                                         "reset network", with_logprobs=False)
            del reset
        timings["harvest_s"] = time.perf_counter() - t
        console.print(f"harvesting done in {timings['harvest_s']:.0f} s")
        model_identity = lm.identity()
        del lm

        t = time.perf_counter()
        # Probe fits are many small problems: one BLAS/torch thread each is several times faster
        # than two threads contending (and than torch's idle workers spinning next to BLAS's).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        blas_limit = threadpool_limits(limits=1)
        test_names = list(datasets)
        train_keys = [_train_key(ts) for ts in config.train_sets]
        variants = ["probe", *[c for c in ("shuffled", "random") if c in config.controls]]
        n_fits = len(train_keys) * len(config.probes) * (1 + ("reset" in acts))
        fit_task = bar.add_task("fit probes", total=n_fits * len(layers))
        correct: dict[tuple, np.ndarray] = {}  # (train, probe, variant) -> per test [L, n]
        shuffle_sd: dict[tuple, dict[str, np.ndarray]] = {}  # spread over shuffles, per test [L]
        decisions: dict[tuple, dict[str, np.ndarray]] = {}
        for ts, key in zip(config.train_sets, train_keys, strict=True):
            names = [_short_name(n) for n in ts]
            for source in acts:
                data = acts[source]

                def part(name: str, which: int, data: dict = data) -> tuple[np.ndarray, np.ndarray]:
                    idx = splits[name][which]
                    return data[name][0][:, idx], datasets[name].labels[idx]

                Xs, ys = zip(*(part(n, 0) for n in names), strict=True)
                train = LabelledActs(np.concatenate(Xs, axis=1), np.concatenate(ys))
                tests = {n: LabelledActs(*part(n, 1)) for n in test_names}
                pairs = _ccs_pairs(names, datasets, splits, data, NEGATION_TWINS)
                for probe in config.probes:
                    if probe == "ccs" and pairs is None:
                        if source == "model":
                            notes.append(
                                f"CCS was not trained on {key}: it needs statement/negation "
                                "pairs, and none of its datasets has its negated twin among the "
                                "datasets of this run."
                            )
                        bar.advance(fit_task, len(layers))
                        continue
                    t_fit = time.perf_counter()
                    outcome = fit_and_test(
                        probe, train, tests, pairs=pairs, centering=config.centering,
                        variants=variants if source == "model" else ["probe"],
                        seed=config.seed, n_shuffles=config.n_shuffles,
                        on_layer=lambda: bar.advance(fit_task),
                    )
                    fit_key = f"fit_{probe}_{source}_s"
                    timings[fit_key] = timings.get(fit_key, 0.0) + time.perf_counter() - t_fit
                    if source == "model" and "shuffled" in outcome.correct:
                        shuffle_sd[(key, probe)] = {t: a.std(axis=1)
                                                    for t, a in outcome.shuffle_acc.items()}
                    for v in outcome.correct:
                        name_v = v if source == "model" else "reset"
                        correct[(key, probe, name_v)] = outcome.correct[v]
                        decisions[(key, probe, name_v)] = outcome.decision[v]
        blas_limit.restore_original_limits()
        torch.set_num_threads(threads)
        timings["probes_s"] = time.perf_counter() - t
        console.print(f"fitted probes and controls in {timings['probes_s']:.0f} s")

    t = time.perf_counter()
    accuracy: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for (key, probe, variant), per_test in correct.items():
        value = np.zeros((len(layers), len(test_names)))
        lo, hi = value.copy(), value.copy()
        ns = []
        for ti, tname in enumerate(test_names):
            est = bootstrap_accuracy(per_test[tname], n_boot=config.n_boot, seed=config.seed + ti)
            value[:, ti], lo[:, ti], hi[:, ti] = est["value"], est["lo"], est["hi"]
            ns.append(est["n"])
        accuracy.setdefault(key, {}).setdefault(probe, {})[variant] = {
            "value": value.tolist(), "lo": lo.tolist(), "hi": hi.tolist(), "n": ns}
        if variant in ("probe", "reset") and (key, probe, variant) in decisions:
            dec = decisions[(key, probe, variant)]
            accuracy[key][probe][variant]["positive_rate"] = np.stack(
                [(dec[t] > 0).mean(axis=1) for t in test_names], axis=1).tolist()
        if variant == "shuffled":  # how much single shuffles disagree with each other
            accuracy[key][probe][variant]["sd_over_shuffles"] = np.stack(
                [shuffle_sd[(key, probe)][t] for t in test_names], axis=1).tolist()

    # In-distribution accuracy: the training datasets' own test splits pooled. The best layer per
    # (train set, probe) maximises it; cross-dataset numbers are not used to choose it.
    heldout: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    best_layer: dict[str, dict[str, int]] = {}
    own_of = {k: [_short_name(n) for n in ts] for ts, k in zip(config.train_sets, train_keys,
                                                                strict=True)}
    for (key, probe, variant), per_test in correct.items():
        pooled = np.concatenate([per_test[n] for n in own_of[key]], axis=1)  # [L, n_own]
        heldout.setdefault(key, {}).setdefault(probe, {})[variant] = bootstrap_accuracy(
            pooled, n_boot=config.n_boot, seed=config.seed)
    for key, per_probe in heldout.items():
        for probe, entry in per_probe.items():
            best_layer.setdefault(key, {})[probe] = layers[int(np.argmax(entry["probe"]["value"]))]

    likelihood = _likelihood(config, datasets, splits, acts["model"], test_names, train_keys,
                             decisions, best_layer, layers)
    pca = _pca_views(config, datasets, acts["model"], best_layer, train_keys, layers)
    notes.extend(_findings(config, accuracy, best_layer, train_keys, test_names, layers))
    if config.centering == "per-dataset":
        notes.append("Per-dataset centring: every test set was centred by its own mean, which "
                     "uses test-set statistics (and assumes each test set is balanced).")
    timings["analysis_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0

    return TruthResult(
        config=asdict(config), versions=_versions(), model=model_identity,
        reset_model=reset_identity,
        datasets=[{**ds.identity, "n_train": int(len(splits[n][0])),
                   "n_test": int(len(splits[n][1])), "example_true": _example(ds, 1),
                   "example_false": _example(ds, 0)} for n, ds in datasets.items()],
        layers=layers, probes=list(config.probes), train_sets=train_keys, test_sets=test_names,
        accuracy=accuracy, heldout=heldout, best_layer=best_layer, likelihood=likelihood, pca=pca, notes=notes,
        timings=timings,
    )


def _example(ds: Any, label: int) -> str:
    idx = np.flatnonzero(ds.labels == label)
    return ds.statements[int(idx[0])] if idx.size else ""


def _ccs_pairs(names: list[str], datasets: dict, splits: dict, data: dict,
               twins: dict[str, str]) -> Any:
    """Training pairs for CCS: each training dataset with its negated twin (train splits)."""
    from interplab.datasets import paired
    from interplab.probes.generalization import PairedActs

    reverse = {v: k for k, v in twins.items()}
    Xp, Xn, ys = [], [], []
    used = set()
    for name in names:
        if name in used:
            continue
        pos, neg = (name, twins.get(name)) if name in twins else (reverse.get(name), name)
        if pos is None or neg is None or pos not in datasets or neg not in datasets:
            continue
        used.update((pos, neg))
        tp, tn = splits[pos][0], splits[neg][0]
        ia, ib = paired(datasets[pos].subset(tp), datasets[neg].subset(tn))
        Xp.append(data[pos][0][:, tp[ia]])
        Xn.append(data[neg][0][:, tn[ib]])
        ys.append(datasets[pos].labels[tp[ia]])
    if not Xp:
        return None
    return PairedActs(np.concatenate(Xp, axis=1), np.concatenate(Xn, axis=1), np.concatenate(ys))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _likelihood(config: TruthConfig, datasets: dict, splits: dict, data: dict,
                test_names: list[str], train_keys: list[str], decisions: dict,
                best_layer: dict, layers: list[int]) -> dict[str, Any]:
    """Truth versus likelihood: log-prob/label correlations and a log-prob threshold baseline."""
    from interplab.probes.generalization import bootstrap_accuracy

    per_dataset = {}
    for name in test_names:
        lp = data[name][1]
        y = datasets[name].labels
        rng = np.random.default_rng(config.seed)
        boot = [_pearson(lp[i], y[i]) for i in rng.integers(0, len(y), (300, len(y)))]
        lo, hi = np.nanquantile(boot, [0.025, 0.975])
        per_dataset[name] = {"r_logprob_label": _pearson(lp, y), "r_lo": float(lo),
                             "r_hi": float(hi), "n": int(len(y)),
                             "mean_logprob_true": float(lp[y == 1].mean()),
                             "mean_logprob_false": float(lp[y == 0].mean())}
    baseline: dict[str, dict[str, Any]] = {}
    for ts, key in zip(config.train_sets, train_keys, strict=True):
        names = [_short_name(n) for n in ts]
        lp = np.concatenate([data[n][1][splits[n][0]] for n in names])
        y = np.concatenate([datasets[n].labels[splits[n][0]] for n in names])
        # 1-D threshold classifier, orientation and cut chosen on the training split only
        candidates = np.unique(lp)
        best = (0.0, 0.0, 1)
        for sign in (1, -1):
            for c in candidates:
                acc = float((((sign * (lp - c)) > 0).astype(int) == y).mean())
                if acc > best[0]:
                    best = (acc, float(c), sign)
        _, cut, sign = best
        baseline[key] = {"threshold": cut, "sign": sign, "test": {}}
        for ti, name in enumerate(test_names):
            idx = splits[name][1]
            pred = ((sign * (data[name][1][idx] - cut)) > 0).astype(int)
            ok = (pred == datasets[name].labels[idx])[None, :]
            est = bootstrap_accuracy(ok, n_boot=config.n_boot, seed=config.seed + ti)
            baseline[key]["test"][name] = {"value": est["value"][0], "lo": est["lo"][0],
                                           "hi": est["hi"][0], "n": est["n"]}
    probe_corr: dict[str, dict[str, dict[str, float]]] = {}
    for key in train_keys:
        for probe, layer in best_layer.get(key, {}).items():
            dec = decisions.get((key, probe, "probe"))
            if dec is None:
                continue
            li = layers.index(layer)
            probe_corr.setdefault(key, {})[probe] = {
                name: _pearson(dec[name][li], data[name][1][splits[name][1]]) for name in test_names
            }
    return {"per_dataset": per_dataset, "baseline": baseline, "probe_logprob_r": probe_corr}


def _pca_views(config: TruthConfig, datasets: dict, data: dict, best_layer: dict,
               train_keys: list[str], layers: list[int]) -> dict[str, Any]:
    from interplab.probes import pca_basis

    key = train_keys[0] if train_keys else None
    probe = next(iter(best_layer.get(key, {})), None) if key else None
    layer = best_layer[key][probe] if probe else layers[len(layers) // 2]
    li = layers.index(layer)
    own = {}
    for name in datasets:
        basis = pca_basis(data[name][0][li], k=2)
        xy = basis.project(data[name][0][li])
        own[name] = {"x": xy[:, 0].round(4).tolist(), "y": xy[:, 1].round(4).tolist(),
                     "label": datasets[name].labels.tolist(),
                     "explained": basis.explained_variance_ratio.round(4).tolist()}
    cross = []
    for a, b in config.pca_pairs:
        if a in datasets and b in datasets:
            basis = pca_basis(data[a][0][li], k=2)
            xy_a, xy_b = basis.project(data[a][0][li]), basis.project(data[b][0][li])
            cross.append({"basis": a, "data": b,
                          "x_basis": xy_a[:, 0].round(4).tolist(),
                          "y_basis": xy_a[:, 1].round(4).tolist(),
                          "label_basis": datasets[a].labels.tolist(),
                          "x": xy_b[:, 0].round(4).tolist(), "y": xy_b[:, 1].round(4).tolist(),
                          "label": datasets[b].labels.tolist()})
    return {"layer": layer, "own": own, "cross": cross}


def _findings(config: TruthConfig, accuracy: dict, best_layer: dict, train_keys: list[str],
              test_names: list[str], layers: list[int]) -> list[str]:
    """Plain-language notes: inversions, one-class predictions, and a reset network that matches."""
    notes = []
    for key in train_keys:
        for probe, layer in best_layer.get(key, {}).items():
            entry = accuracy[key][probe]["probe"]
            li = layers.index(layer)
            for ti, name in enumerate(test_names):
                hi = entry["hi"][li][ti]
                if hi < 0.5:
                    notes.append(
                        f"Inversion: the {probe} direction trained on {key} scores "
                        f"{entry['value'][li][ti]:.2f} (95% CI up to {hi:.2f}) on {name} at "
                        f"layer {layer} — reliably below chance. It separates the classes of "
                        f"{name} but with the opposite sign, so it tracks something correlated "
                        "with truth on the training data (e.g. the association between the "
                        "words) rather than truth itself."
                    )
            rates = entry.get("positive_rate")
            one_class = [name for ti, name in enumerate(test_names)
                         if rates and (rates[li][ti] >= 0.97 or rates[li][ti] <= 0.03)]
            if one_class:
                notes.append(
                    f"One-class predictions: at layer {layer} the {probe} probe trained on {key} "
                    f"calls (nearly) every statement of {', '.join(one_class)} the same class, so "
                    "its ~0.50 there says nothing about truth: those statements' mean lies on one "
                    "side of the training threshold (a shift in activation space, e.g. from "
                    "longer sentences). Per-dataset centring (--centering per-dataset) removes "
                    "such shifts at the price of using test-set statistics."
                )
            reset = accuracy[key][probe].get("reset")
            if reset is not None:
                own = [test_names.index(n) for n in key.split("+") if n in test_names]
                for ti in own:
                    if reset["hi"][li][ti] >= entry["lo"][li][ti] and entry["value"][li][ti] > 0.6:
                        notes.append(
                            f"Reset network matches: on {test_names[ti]}, the {probe} probe "
                            f"reaches {entry['value'][li][ti]:.2f} at layer {layer} and the same "
                            f"pipeline on the weight-permuted network {reset['value'][li][ti]:.2f} "
                            "(overlapping intervals). What the probe reads there is available "
                            "without learned weights — token identity or position — so it is "
                            "not evidence of a learned truth representation."
                        )
    return notes
