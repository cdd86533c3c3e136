"""Probe-fitting benchmark: 30 layers × 8 training datasets × 4 probes, activations given.

Activations are harvested once from the embedded model (last token, every layer; not timed),
then every probe is fitted on every dataset's train split at every layer and scored on its test
split. Prints the fitting time per probe and in total.

Usage: python bench/bench_probes.py [--max-per-dataset 600] [--synthetic]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

DATASETS = ["cities", "neg_cities", "sp_en_trans", "neg_sp_en_trans", "larger_than",
            "smaller_than", "cities_conj", "cities_disj"]
TWINS = {"cities": "neg_cities", "neg_cities": "cities", "sp_en_trans": "neg_sp_en_trans",
         "neg_sp_en_trans": "sp_en_trans", "larger_than": "smaller_than",
         "smaller_than": "larger_than", "cities_conj": "cities_disj",
         "cities_disj": "cities_conj"}


def main() -> None:
    from interplab.activations import harvest
    from interplab.datasets import load_dataset
    from interplab.models import load
    from interplab.probes import PairProbe, make_probe

    ap = argparse.ArgumentParser()
    ap.add_argument("--max-per-dataset", type=int, default=600)
    ap.add_argument("--synthetic", action="store_true", help="random activations of the same shape")
    args = ap.parse_args()
    data = {}
    if args.synthetic:
        rng = np.random.default_rng(0)
        for name in DATASETS:
            y = rng.integers(0, 2, args.max_per_dataset)
            data[name] = (rng.standard_normal((30, len(y), 576)).astype(np.float32), y)
    else:
        lm = load("smollm2-135m")
        hooks = [f"blocks.{i}.hook_resid_post" for i in range(lm.n_layers)]
        for name in DATASETS:
            ds = load_dataset(name, max_size=args.max_per_dataset)
            acts = harvest(lm, ds.statements, hooks, "last", progress=False)
            data[name] = (torch.stack([acts[h] for h in hooks]).numpy(), ds.labels)
    times = {}
    t_all = time.perf_counter()
    for probe in ("diffmean", "lda", "logistic", "ccs"):
        t = time.perf_counter()
        for name in DATASETS:
            X, y = data[name]
            Xn = data[TWINS[name]][0]
            n = min(len(y), Xn.shape[1])
            cut = int(0.7 * n)
            for layer in range(X.shape[0]):
                p = make_probe(probe)
                if isinstance(p, PairProbe):  # the negated twin (conj/disj: each other, timing only)
                    p.fit_pairs(X[layer, :cut], Xn[layer, :cut], y[:cut])
                else:
                    p.fit(X[layer, :cut], y[:cut])
                p.score(X[layer, cut:n], y[cut:n])
        times[probe] = time.perf_counter() - t
    total = time.perf_counter() - t_all
    print(json.dumps({"fits": 30 * 8 * 4, "seconds_per_probe": times, "total_s": total,
                      "synthetic": args.synthetic}, indent=1))


if __name__ == "__main__":
    main()
