"""Erasure benchmarks (results in docs/benchmarks.md).

1. ``store``: LEACE fitted streaming from an activation store of ≥ 1M rows × 576 (float32 on
   disk, float64 statistics) in a fresh child process: wall time, rows/s and peak RSS (VmHWM),
   next to the size of the rows themselves; the fitted eraser is checked on the first shard
   (class means equal after erasure).
2. ``forward``: the cost of running an eraser inside the model's forward pass (embedded
   SmolLM2-135M, ``blocks.15.hook_resid_post``, through ``models.edit_hooks``) against the plain
   pass on the same batches: interleaved repetitions, median of per-pair ratios, for a rank-1
   LEACE eraser and a rank-16 projection.

    flock /tmp/interplab-heavy.lock env PYTHONPATH=src python bench/bench_erasure.py --out bench_erasure.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

D = 576
ROWS_PER_SHARD = 65536

STORE_CHILD = r"""
import sys, time, json
import numpy as np, torch
import concept_erasure  # imported before the baseline, like the fit's own imports
base_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS:"))
from interplab.activations import ActivationStore
from interplab.erasure import fit_eraser_from_store
store = ActivationStore(sys.argv[1])
labels = np.load(sys.argv[2])
t = time.time()
eraser = fit_eraser_from_store("leace", store, labels)
secs = time.time() - t
peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
x = store.shard_tensor(0).double()
y = torch.from_numpy(labels[: x.shape[0]])
xe = eraser(x)
gap = float((xe[y == 1].mean(0) - xe[y == 0].mean(0)).abs().max())
before = float((x[y == 1].mean(0) - x[y == 0].mean(0)).abs().max())
print(json.dumps({"fit_s": secs, "rank": eraser.rank, "peak_rss_bytes": peak_kb * 1024,
                  "rss_after_imports_bytes": base_kb * 1024,
                  "first_shard_mean_gap_before": before, "first_shard_mean_gap_after": gap}))
"""


def write_store(path: Path, n_rows: int, seed: int = 0) -> np.ndarray:
    """A synthetic store: correlated Gaussian rows, class 1 moved along one direction."""
    from interplab.activations import StoreWriter

    hook = "blocks.15.hook_resid_post"
    header = {"model": {"name": "synthetic"}, "hooks": [hook], "positions": "all",
              "dataset": {"name": "synthetic", "n_texts": n_rows}, "dtype": "float32",
              "d_model": D, "rows_per_shard": ROWS_PER_SHARD}
    g = torch.Generator().manual_seed(seed)
    mix = torch.eye(D) + torch.randn(D, D, generator=g) / D**0.5
    direction = torch.randn(D, generator=g)
    labels = torch.randint(0, 2, (n_rows,), generator=g)
    with StoreWriter(path, header) as w:
        for start in range(0, n_rows, ROWS_PER_SHARD):
            n = min(ROWS_PER_SHARD, n_rows - start)
            y = labels[start:start + n]
            x = torch.randn(n, D, generator=g) @ mix + y[:, None].float() * direction
            w.write_shard({hook: x, "text_index": torch.arange(start, start + n),
                           "position": torch.zeros(n, dtype=torch.long),
                           "token_id": torch.zeros(n, dtype=torch.long)}, start + n)
        w.finish()
    return labels.numpy()


def store_bench(root: Path, n_rows: int) -> dict:
    t = time.time()
    labels = write_store(root / "store", n_rows)
    write_s = time.time() - t
    np.save(root / "labels.npy", labels)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    out = subprocess.run([sys.executable, "-c", STORE_CHILD, str(root / "store"),
                          str(root / "labels.npy")], env=env, capture_output=True, text=True,
                         check=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    res.update({"rows": n_rows, "d_model": D, "write_s": write_s,
                "rows_per_s": n_rows / res["fit_s"],
                "rows_bytes_float32": n_rows * D * 4, "rows_bytes_float64": n_rows * D * 8,
                "store_bytes": sum(f.stat().st_size for f in (root / "store").iterdir())})
    return res


def forward_bench(reps: int, batch: int, length: int) -> dict:
    from interplab.erasure import fit_eraser, random_subspace_eraser
    from interplab.models import edit_hooks, load

    lm = load("smollm2-135m")
    hook = "blocks.15.hook_resid_post"
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, lm.d_model, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (4000,), generator=g)
    erasers = {"leace_rank1": fit_eraser("leace", x + y[:, None] * 0.5, y),
               "projection_rank16": random_subspace_eraser(lm.d_model, 16, bias=x.mean(0))}
    ids = torch.randint(100, lm.tokenizer.vocab_size, (batch, length), generator=g)
    fns = {k: e.to(lm.dtype) for k, e in erasers.items()}

    @torch.no_grad()
    def run(edit=None) -> float:
        t = time.perf_counter()
        if edit is None:
            lm.hf(input_ids=ids)
        else:
            with edit_hooks(lm, {hook: edit}):
                lm.hf(input_ids=ids)
        return time.perf_counter() - t

    run()  # warm-up
    times: dict[str, list[float]] = {"plain": [], **{k: [] for k in fns}}
    for _ in range(reps):  # interleaved, so drifts in machine load hit every contender alike
        times["plain"].append(run())
        for k, fn in fns.items():
            times[k].append(run(fn))
    plain = np.array(times["plain"])
    out = {"batch": batch, "length": length, "reps": reps, "plain_median_s": float(np.median(plain))}
    for k in fns:
        ratios = np.array(times[k]) / plain
        out[k] = {"median_s": float(np.median(times[k])), "median_ratio": float(np.median(ratios)),
                  "ratio_of_medians": float(np.median(times[k]) / np.median(plain))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench_erasure.json")
    ap.add_argument("--rows", type=int, default=1_048_576)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--only", default="", help="comma list of sections: store,forward")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(","))) or {"store", "forward"}
    res: dict = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    if "store" in only:
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
            res["store"] = store_bench(Path(tmp), args.rows)
        print(json.dumps(res["store"]), flush=True)
    if "forward" in only:
        res["forward"] = forward_bench(args.reps, batch=16, length=128)
        print(json.dumps(res["forward"]), flush=True)
    Path(args.out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
