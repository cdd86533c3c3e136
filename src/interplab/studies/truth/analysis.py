"""Readings of the truth study beside the probes: truth versus likelihood, and PCA views."""

from __future__ import annotations

from typing import Any

import numpy as np

from interplab.controls import bootstrap_mean, bootstrap_statistic
from interplab.probes import pca_basis
from interplab.studies.truth.config import TruthConfig
from interplab.studies.truth.fits import Fits
from interplab.study.data import StatementData, short_name
from interplab.study.harvest import StatementActs


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def likelihood(config: TruthConfig, data: StatementData, acts: dict[str, StatementActs],
               test_names: list[str], train_keys: list[str], fits: Fits,
               best_layer: dict, layers: list[int]) -> dict[str, Any]:
    """Truth versus likelihood: log-prob/label correlations and a log-prob threshold baseline."""
    n_boot, seed = config.run.n_boot, config.run.seed
    per_dataset = {}
    for name in test_names:
        lp = acts[name].logprob
        y = data.datasets[name].labels
        r, lo, hi = bootstrap_statistic(pearson, lp, y, n_boot=n_boot, seed=seed)
        per_dataset[name] = {"r_logprob_label": r, "r_lo": lo, "r_hi": hi, "n": int(len(y)),
                             "mean_logprob_true": float(lp[y == 1].mean()),
                             "mean_logprob_false": float(lp[y == 0].mean())}
    baseline: dict[str, dict[str, Any]] = {}
    for ts, key in zip(config.train_sets, train_keys, strict=True):
        names = [short_name(n) for n in ts]
        lp = np.concatenate([acts[n].logprob[data.splits[n].train] for n in names])
        y = np.concatenate([data.datasets[n].labels[data.splits[n].train] for n in names])
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
            idx = fits.rows[key][name][0]
            pred = ((sign * (acts[name].logprob[idx] - cut)) > 0).astype(int)
            ok = (pred == data.datasets[name].labels[idx])[None, :]
            est = bootstrap_mean(ok, n_boot=n_boot, seed=seed + ti)
            baseline[key]["test"][name] = {"value": est["value"][0], "lo": est["lo"][0],
                                           "hi": est["hi"][0], "n": est["n"]}
    probe_corr: dict[str, dict[str, dict[str, float]]] = {}
    for key in train_keys:
        for probe, layer in best_layer.get(key, {}).items():
            dec = fits.decisions.get((key, probe, "probe"))
            if dec is None:
                continue
            li = layers.index(layer)
            probe_corr.setdefault(key, {})[probe] = {
                name: pearson(dec[name][li], acts[name].logprob[fits.rows[key][name][0]])
                for name in test_names
            }
    return {"per_dataset": per_dataset, "baseline": baseline, "probe_logprob_r": probe_corr}


def pca_views(config: TruthConfig, data: StatementData, acts: dict[str, StatementActs],
              best_layer: dict, train_keys: list[str], layers: list[int]) -> dict[str, Any]:
    """Each dataset on its own top two principal components, and the configured pairs (one
    dataset on the other's components), at the first training set's chosen layer."""
    key = train_keys[0] if train_keys else None
    probe = next(iter(best_layer.get(key, {})), None) if key else None
    layer = best_layer[key][probe] if probe else layers[len(layers) // 2]
    li = layers.index(layer)
    own = {}
    for name, ds in data.datasets.items():
        basis = pca_basis(acts[name].acts[li], k=2)
        xy = basis.project(acts[name].acts[li])
        own[name] = {"x": xy[:, 0].round(4).tolist(), "y": xy[:, 1].round(4).tolist(),
                     "label": ds.labels.tolist(),
                     "explained": basis.explained_variance_ratio.round(4).tolist()}
    cross = []
    for a, b in config.pca_pairs:
        if a in data.datasets and b in data.datasets:
            basis = pca_basis(acts[a].acts[li], k=2)
            xy_a, xy_b = basis.project(acts[a].acts[li]), basis.project(acts[b].acts[li])
            cross.append({"basis": a, "data": b,
                          "x_basis": xy_a[:, 0].round(4).tolist(),
                          "y_basis": xy_a[:, 1].round(4).tolist(),
                          "label_basis": data.datasets[a].labels.tolist(),
                          "x": xy_b[:, 0].round(4).tolist(), "y": xy_b[:, 1].round(4).tolist(),
                          "label": data.datasets[b].labels.tolist()})
    return {"layer": layer, "own": own, "cross": cross}
