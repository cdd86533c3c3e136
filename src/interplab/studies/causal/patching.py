"""Patching and attribution of the causal study: the true and the false statement about one city,
true activations patched into the false run.

Localisation is claimed only where it can mean something: the clean − corrupted gap of the
metric is measured first, and when its interval includes 0 nothing is localised (no null is run,
no "fraction restored" is kept). Otherwise the nodes of largest effect are chosen on one half of
the pairs and tested, against random directions of the patch's norm, on the other half.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from interplab.activations import Positions
from interplab.controls import bootstrap_mean, bootstrap_statistic
from interplab.datasets import load_dataset
from interplab.interventions import attribute, engine, patch
from interplab.interventions.prompts import encode


def _pairs(lm: Any, task: Any, tail: str, sub: Any, test: np.ndarray, n: int, seed: int
           ) -> tuple[list[str], list[str], int]:
    """(true statement, false statement) about one city whose prompts have equal token counts
    (and, for the completion format, objects with different first tokens).

    Both claims of a city come from the full dataset, restricted to the entity groups of the
    test split (a group is on one side only, so no statement here was trained on)."""
    ds = load_dataset("cities", seed=seed)
    groups = set(np.asarray(sub.groups)[test].tolist())
    rows = np.flatnonzero(np.isin(np.asarray(ds.groups), list(groups)))
    city = np.asarray(ds.metadata["city"])
    by_city: dict[str, dict[int, int]] = {}
    for i in rows:
        by_city.setdefault(str(city[i]), {})[int(ds.labels[i])] = int(i)
    true_s, false_s, skipped = [], [], 0
    for c in np.random.default_rng((seed, 3)).permutation(sorted(by_city)):
        pair = by_city[c]
        if len(pair) < 2:
            continue
        t, f = ds.statements[pair[1]], ds.statements[pair[0]]
        pt, pf = task.prompts([t, f], tail)
        if (len(lm.tokenizer(pt, add_special_tokens=False)["input_ids"])
                != len(lm.tokenizer(pf, add_special_tokens=False)["input_ids"])):
            skipped += 1
            continue
        if task.answers is None and len(set(task.object_ids([t, f]))) < 2:
            skipped += 1
            continue
        true_s.append(t)
        false_s.append(f)
        if len(true_s) == n:
            break
    return true_s, false_s, skipped


MIN_PAIRS = 4


def patching_stage(lm: Any, config: Any, task: Any, prefix: str, tail: str, cities: Any,
                   test: np.ndarray, timings: dict[str, Any]) -> dict[str, Any]:
    seed, n_boot = config.run.seed, config.run.n_boot
    true_s, false_s, skipped = _pairs(lm, task, tail, cities, test, config.patch_pairs, seed)
    if len(true_s) < MIN_PAIRS:
        return {"ran": False, "skipped_pairs": skipped, "pairs": [], "statements": [],
                "why": f"only {len(true_s)} true/false pairs about one city have prompts of equal "
                       "token counts" + ("" if task.answers is not None else
                                         " and objects with different first tokens")
                       + f" (at least {MIN_PAIRS} are needed); raise --max-per-dataset"}
    clean, corrupt = task.prompts(true_s, tail), task.prompts(false_s, tail)
    metric = task.pair_metric(true_s, false_s)
    read = Positions.parse("last")
    scores = [engine.clean_run(lm, encode(lm, texts, prefix or None), metric, read=read,
                               batch_size=config.run.batch_size)[0] for texts in (clean, corrupt)]
    gaps = scores[0] - scores[1]
    value, lo, hi = bootstrap_statistic(np.mean, gaps, n_boot=n_boot, seed=seed)
    localise = bool(lo > 0 or hi < 0)
    n = len(clean)
    select = np.sort(np.random.default_rng((seed, 5)).permutation(n)[: n // 2])

    layers = list(range(0, lm.n_layers, config.patch_layer_stride))
    if layers[-1] != lm.n_layers - 1:
        layers.append(lm.n_layers - 1)
    offsets = list(range(-config.patch_tokens, 0))
    hooks = [f"blocks.{layer}.hook_resid_post" for layer in layers]
    r = patch(lm, clean, corrupt, hooks, metric, positions=offsets, prefix=prefix or None,
              n_null=config.n_null if localise else 0, null_nodes=config.patch_null_nodes,
              null_select=select if localise else None, batch_size=config.run.batch_size,
              n_boot=n_boot, seed=seed).to_dict()
    timings["patch_call_s"] = r["info"].pop("seconds", None)
    effects = np.asarray(r["effects"])
    grid = effects.mean(axis=0).reshape(len(layers), len(offsets))
    if not localise:  # a fraction of a gap that may be 0 is noise: none is kept
        r["info"]["fraction_restored"] = None
    held_out = None
    if r["null"]:
        tested = r["null"]["tested_on"]
        h, h_lo, h_hi = bootstrap_statistic(np.mean, gaps[tested], n_boot=n_boot, seed=seed)
        held_out = {"mean": h, "lo": h_lo, "hi": h_hi, "n": len(tested)}
        for node in r["null"]["nodes"].values():
            j = next(k for k, nd in enumerate(r["info"]["nodes"])
                     if nd["hook"] == node["hook"] and nd["positions"] == node["positions"])
            b = bootstrap_mean(effects[tested, j][None], n_boot=n_boot, seed=seed)
            # a share of the held-out pairs' gap, only where that gap's interval excludes 0
            node.update(node=j, effect_lo=b["lo"][0], effect_hi=b["hi"][0],
                        fraction=node["effect"] / h if h_lo > 0 or h_hi < 0 else None)
    ids = lm.tokenizer(clean[0], add_special_tokens=False)["input_ids"]
    tokens = [lm.tokenizer.decode([i]) for i in ids[-config.patch_tokens:]]
    return {"ran": True, "result": r, "layers": layers, "offsets": offsets, "grid": grid.tolist(),
            "metric": ("P(true word) − P(false word)" if task.answers is not None else
                       "log P(true object) − log P(false object) (nats)"),
            "gap": {"mean": value, "lo": lo, "hi": hi, "n": n,
                    "pairs_with_true_higher": float(np.mean(gaps > 0))},
            "held_out_gap": held_out,
            "localise": localise,
            "null_rule": (f"nodes chosen on {len(select)} of the {n} pairs, tested on the other "
                          f"{n - len(select)}" if localise else
                          "not run: the clean − corrupted gap's interval includes 0"),
            "tokens_of_first_pair": [str(t) for t in tokens],
            "fraction_grid": (grid / value).tolist() if localise else None,
            "skipped_pairs": skipped,
            "pairs": [[c, x] for c, x in zip(clean, corrupt, strict=True)],
            "statements": [[t, f] for t, f in zip(true_s, false_s, strict=True)]}


def attribution_stage(lm: Any, config: Any, task: Any, prefix: str, patching: dict[str, Any],
                      timings: dict[str, Any]) -> dict[str, Any]:
    """Attribution patching and integrated gradients against exact patching on the first
    ``attr_pairs`` patching pairs: a random sample of nodes per hook kind and the nodes
    attribution patching ranks highest."""
    if not patching["ran"]:
        return {"ran": False, "why": patching["why"]}
    n = min(config.attr_pairs, len(patching["pairs"]))
    true_s = [t for t, _ in patching["statements"][:n]]
    false_s = [f for _, f in patching["statements"][:n]]
    clean = [c for c, _ in patching["pairs"][:n]]
    corrupt = [x for _, x in patching["pairs"][:n]]
    layers = config.attribution_layers(lm.n_layers)
    hooks = [f"blocks.{layer}.{k}" for layer in layers
             for k in ("hook_resid_post", "hook_attn_out", "hook_mlp_out")]
    r = attribute(lm, clean, corrupt, hooks, task.pair_metric(true_s, false_s),
                  positions=list(range(-config.attr_tokens, 0)), prefix=prefix or None,
                  ig_steps=config.ig_steps, n_exact=config.n_exact, n_top=config.n_top_exact,
                  batch_size=config.run.batch_size, n_boot=config.run.n_boot,
                  seed=config.run.seed).to_dict()
    # forward-pass equivalents are measured from wall time: a record of the run, not a result
    for key, value in r.pop("cost").items():
        timings[f"attribution_cost_{key}"] = value
    rule = ("as given (--attr-layers)" if config.attr_layers is not None else
            "five blocks spread evenly, ⌊(i + ½)·L/5⌋")
    return {"ran": True, **r, "layers": layers, "layers_rule": rule, "n_pairs": n}
