"""Loading the embedded model: the converted-model cache against converting the GGUF each time
(results in docs/benchmarks.md).

Every load runs in a fresh Python process (so nothing is shared through memory), in rounds of
three, the order rotating each round so a change in the machine's load hits all of them alike:

- **no cache**: ``load("smollm2-135m", cache=False)``, transformers' GGUF conversion (what every
  load did before the cache);
- **cold**: an empty cache folder: conversion, writing the entry, reading it back;
- **warm**: the entry written by this round's cold load: hash the GGUF (remembered by size and
  modification time), verify the entry's files against their sha256, read it.

Each process reports the seconds inside ``load()`` and its wall time including Python, torch and
transformers imports. The warm entry is verified equal to the no-cache model (logits bit for bit).

    flock /tmp/interplab-heavy.lock python bench/bench_model_load.py --rounds 3 --out load.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import sys, time, json
t0 = time.perf_counter()
import torch
from interplab.models import load
import transformers  # noqa: F401  (imported by load as well; timed apart)
t1 = time.perf_counter()
lm = load("smollm2-135m", cache=sys.argv[1] == "cache")
t2 = time.perf_counter()
ids = torch.tensor([lm.tokenize(["The city of Paris is in France."])[0]])
with torch.inference_mode():
    torch.save(lm.hf(ids).logits, sys.argv[2])
print(json.dumps({"imports": t1 - t0, "load": t2 - t1}))
"""


def _run(kind: str, cache_dir: Path, logits: Path) -> dict:
    env = dict(os.environ, INTERPLAB_CACHE=str(cache_dir), HF_HUB_OFFLINE="1")
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, "off" if kind == "no cache" else "cache",
                          str(logits)], env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "wall": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    import torch

    loadavg_before = os.getloadavg()
    times: dict[str, list[dict]] = {"no cache": [], "cold": [], "warm": []}
    order = ["no cache", "cold", "warm"]
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            cache_dir = Path(tmp) / f"round{r}"
            kinds = order[r % 3:] + order[:r % 3]
            if kinds.index("warm") < kinds.index("cold"):  # warm needs this round's cold entry
                kinds.remove("warm")
                kinds.insert(kinds.index("cold") + 1, "warm")
            for kind in kinds:
                logits = Path(tmp) / f"{kind}-{r}.pt"
                times[kind].append(_run(kind, cache_dir, logits))
                print(kind, {k: round(v, 2) for k, v in times[kind][-1].items()}, flush=True)
            same = torch.equal(torch.load(Path(tmp) / f"warm-{r}.pt"),
                               torch.load(Path(tmp) / f"no cache-{r}.pt"))
            assert same, "the cached model's logits differ from the conversion's"
    loadavg_after = os.getloadavg()
    med = {k: {m: statistics.median(t[m] for t in v) for m in ("imports", "load", "wall")}
           for k, v in times.items()}
    result = {
        "rounds": args.rounds, "loadavg_before": loadavg_before, "loadavg_after": loadavg_after,
        "median_seconds": med,
        "no_cache_over_warm_load": med["no cache"]["load"] / med["warm"]["load"],
        "cold_over_no_cache_load": med["cold"]["load"] / med["no cache"]["load"],
        "no_cache_over_warm_wall": med["no cache"]["wall"] / med["warm"]["wall"],
        "logits_equal": True, "all": times,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "all"}, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
