"""Harvest benchmarks on the embedded model (results go to docs/benchmarks.md by hand).

Measures, in one run on the same batches:
  1. harvest tokens/s (hook blocks.15.hook_resid_post, positions all) vs a plain full forward;
  2. harvest into an ActivationStore vs harvest in memory;
  3. bf16 (autocast, and the model loaded in bf16) vs fp32: speed and activation error;
  4. peak RSS of harvesting N tokens into a store, for 100k and 1M tokens (separate processes).

Usage: python bench/bench_harvest.py [--n-seq 1024] [--seq-len 64] [--rss-tokens 100000,1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch

HOOK = "blocks.15.hook_resid_post"


def corpus_windows(lm, n_seq: int, seq_len: int, seed: int = 0) -> list[list[int]]:
    """``n_seq`` windows of ``seq_len`` real tokens from the packaged sample text (repeated)."""
    from importlib import resources

    text = resources.files("interplab.data").joinpath("sample.txt").read_text("utf-8")
    ids = lm.tokenizer(text)["input_ids"]
    while len(ids) < n_seq * seq_len:
        ids = ids + ids
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(ids) - seq_len, n_seq)
    return [ids[s : s + seq_len] for s in starts]


def timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def full_forward(lm, windows, batch_size: int) -> None:
    with torch.inference_mode():
        for i in range(0, len(windows), batch_size):
            ids = torch.tensor(windows[i : i + batch_size], device=lm.device)
            lm.hf(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)


def rss_child(n_tokens: int, seq_len: int, out: str) -> None:
    """Harvest n_tokens into a store; print peak RSS (MiB) sampled every 50 ms."""
    from interplab.activations import harvest_to_store
    from interplab.models import load

    lm = load("smollm2-135m")
    windows = corpus_windows(lm, n_tokens // seq_len, seq_len, seed=1)
    proc = psutil.Process()
    peak = [proc.memory_info().rss]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.05)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    harvest_to_store(lm, None, HOOK, out, "all", token_ids=windows, batch_size=32,
                     rows_per_shard=32768, progress=False)
    stop.set()
    th.join()
    print(json.dumps({"tokens": len(windows) * seq_len, "peak_rss_mib": peak[0] / 2**20}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-seq", type=int, default=1024)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rss-tokens", default="100000,1000000")
    ap.add_argument("--rss-child", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    if args.rss_child:
        rss_child(args.rss_child, args.seq_len, args.out)
        return

    from interplab.activations import harvest_to_store, harvest_tokens
    from interplab.models import load

    lm = load("smollm2-135m")
    windows = corpus_windows(lm, args.n_seq, args.seq_len)
    n_tok = args.n_seq * args.seq_len
    bs = args.batch_size
    res: dict = {"machine": {"cpu": platform.processor() or platform.machine(),
                             "cores": os.cpu_count(), "torch": torch.__version__,
                             "threads": torch.get_num_threads()},
                 "tokens": n_tok}
    harvest_tokens(lm, windows[:bs], HOOK, "all", batch_size=bs, progress=False)  # warm-up
    t_full = timed(lambda: full_forward(lm, windows, bs))
    t_harv = timed(lambda: harvest_tokens(lm, windows, HOOK, "all", batch_size=bs, progress=False))
    res["full_forward_tok_s"] = n_tok / t_full
    res["harvest_tok_s"] = n_tok / t_harv
    res["harvest_over_full"] = t_full / t_harv
    with tempfile.TemporaryDirectory() as d:
        t_store = timed(lambda: harvest_to_store(lm, None, HOOK, Path(d) / "s", "all",
                                                 token_ids=windows, batch_size=bs,
                                                 progress=False))
    res["store_tok_s"] = n_tok / t_store
    res["store_over_memory"] = t_harv / t_store

    ref = harvest_tokens(lm, windows, HOOK, "all", batch_size=bs, progress=False)[HOOK]
    t_auto = timed(lambda: harvest_tokens(lm, windows, HOOK, "all", batch_size=bs,
                                          compute_dtype=torch.bfloat16, progress=False))
    auto = harvest_tokens(lm, windows, HOOK, "all", batch_size=bs, compute_dtype=torch.bfloat16,
                          progress=False)[HOOK]
    lm16 = load("smollm2-135m", dtype=torch.bfloat16)
    t_b16 = timed(lambda: harvest_tokens(lm16, windows, HOOK, "all", batch_size=bs,
                                         progress=False))
    b16 = harvest_tokens(lm16, windows, HOOK, "all", batch_size=bs, progress=False)[HOOK]
    for name, t, acts in (("bf16_autocast", t_auto, auto), ("bf16_weights", t_b16, b16)):
        cos = torch.nn.functional.cosine_similarity(acts.float(), ref, dim=-1)
        rel = (acts.float() - ref).norm(dim=-1) / ref.norm(dim=-1)
        res[name] = {"speedup_over_fp32": t_harv / t, "cos_min": float(cos.min()),
                     "cos_mean": float(cos.mean()), "cos_p01": float(cos.quantile(0.01)),
                     "rel_l2_mean": float(rel.mean()), "rel_l2_p99": float(rel.quantile(0.99))}

    rss = []
    for n in [int(x) for x in args.rss_tokens.split(",") if x]:
        with tempfile.TemporaryDirectory() as d:
            out = subprocess.run([sys.executable, __file__, "--rss-child", str(n), "--seq-len",
                                  str(args.seq_len), "--out", str(Path(d) / "s")],
                                 capture_output=True, text=True, check=True)
            rss.append(json.loads(out.stdout.strip().splitlines()[-1]))
    res["rss"] = rss
    if len(rss) >= 2:
        res["rss_ratio_largest_over_smallest"] = rss[-1]["peak_rss_mib"] / rss[0]["peak_rss_mib"]
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
