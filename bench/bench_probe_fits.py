"""Probe-fit micro-benchmark: ``fit_and_test`` with all controls, this checkout against another.

Synthetic activations shaped like one training set of the truth study: 30 layers, d_model 576,
a training set of 700 statements (and 700 negations for CCS), 12 test sets of 890 statements,
anisotropic (decaying variance spectrum) with a label signal on 50 axes. Each round runs one
child process per source tree, alternating (``new, old, new, old, …``), each timing
``fit_and_test(probe, …)`` with the default controls (5 shuffles, 20 random directions) on one
BLAS/torch thread, as the truth study fits probes. Prints each child's seconds, the ratio
old ÷ new per probe (median over rounds), and how far the two trees' results differ.

Usage: PYTHONPATH=src python bench/bench_probe_fits.py --baseline-src /tmp/old/src
       [--probes logistic,ccs] [--layers 30] [--rounds 2]
(``git archive <commit> src | tar -x -C /tmp/old`` makes a baseline tree.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

D, N_TRAIN, N_TEST, N_TESTS = 576, 700, 890, 12


def _data(layers: int) -> tuple:
    from interplab.probes.generalization import LabelledActs, PairedActs

    rng = np.random.default_rng(0)
    spec = np.sqrt(np.exp(-np.arange(D) / 60) * 10 + 0.1)
    signal = np.zeros(D)
    signal[:50] = rng.standard_normal(50)

    def acts(y: np.ndarray, sign: float) -> np.ndarray:
        X = rng.standard_normal((layers, len(y), D)) * spec
        return 30 * (X + sign * np.outer(y - 0.5, signal)) + 5

    y = (rng.random(N_TRAIN) < 0.5).astype(np.int64)
    train = LabelledActs(acts(y, 1.0), y)
    pairs = PairedActs(train.X, acts(y, -1.0) + 3, y)
    tests = {}
    for i in range(N_TESTS):
        yt = (rng.random(N_TEST) < 0.5).astype(np.int64)
        tests[f"t{i}"] = LabelledActs(acts(yt, 1.0), yt)
    return train, tests, pairs


def child(probe: str, layers: int, out: str) -> None:
    import time

    import torch

    from interplab.probes.generalization import fit_and_test

    torch.set_num_threads(1)
    train, tests, pairs = _data(layers)
    fit_and_test(probe, train, {"t0": tests["t0"]}, pairs=pairs)  # imports, first-call costs
    t = time.perf_counter()
    res = fit_and_test(probe, train, tests, pairs=pairs)
    seconds = time.perf_counter() - t
    acc = {v: {k: c.mean(axis=1).tolist() for k, c in res.correct[v].items()} for v in res.correct}
    Path(out).write_text(json.dumps({"seconds": seconds, "acc": acc}))


def _run(src: str, probe: str, layers: int) -> dict:
    env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1"}
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        subprocess.run([sys.executable, __file__, "--child", probe, "--layers", str(layers),
                        "--out", f.name], env=env, check=True)
        return json.loads(Path(f.name).read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline-src", help="the src/ directory of the tree to compare against")
    ap.add_argument("--probes", default="logistic,ccs")
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--child")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.layers, args.out)
    if not args.baseline_src:
        ap.error("--baseline-src is required")
    new_src = str(Path(__file__).resolve().parents[1] / "src")
    for probe in args.probes.split(","):
        times: dict[str, list[float]] = {"new": [], "old": []}
        results = {}
        for r in range(args.rounds):
            for tree, src in (("new", new_src), ("old", args.baseline_src)):
                results[tree] = _run(src, probe, args.layers)
                times[tree].append(results[tree]["seconds"])
                print(f"{probe} round {r} {tree}: {results[tree]['seconds']:.1f} s", flush=True)
        diffs = {v: max(abs(a - b) for t in results["new"]["acc"][v]
                        for a, b in zip(results["new"]["acc"][v][t], results["old"]["acc"][v][t],
                                        strict=True))
                 for v in results["new"]["acc"]}
        ratio = statistics.median(o / n for o, n in zip(times["old"], times["new"], strict=True))
        print(f"{probe}: old ÷ new = {ratio:.2f} (median of {args.rounds} rounds); largest "
              f"|accuracy difference| per layer and test set, new vs old: "
              + ", ".join(f"{v} {d:.4f}" for v, d in diffs.items()), flush=True)


if __name__ == "__main__":
    main()
