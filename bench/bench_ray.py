"""Ray executor benchmarks (results go to docs/benchmarks.md by hand).

Measures, in one run on this machine:
  1. starting a local Ray cluster, and the overhead of one Ray task (no-op tasks, after warm-up)
     next to the local executor's;
  2. a sharded harvest (embedded SmolLM2-135M, blocks.15.hook_resid_post, positions all, 64-token
     windows): 1 local process (torch's default threads) vs 2 Ray workers (1 thread each), the
     same plan; tokens/s, the ratio, whether the two stores are byte-identical, bytes per shard;
  3. a sweep of 2 top-k SAEs on that store: one local pass (both SAEs in one trainer) vs one
     Ray task per SAE; steps/s and the ratio;
  4. what a worker pays once: loading the model and hashing its weights.

Usage: flock /tmp/interplab-heavy.lock python bench/bench_ray.py [--n-seq 1536] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

HOOK = "blocks.15.hook_resid_post"


def _noop(x):
    return x


def task_overhead(n_tasks: int) -> dict:
    import ray

    from interplab.distributed import LocalExecutor, RayExecutor

    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    startup = time.perf_counter() - t
    ex = RayExecutor(workers=2)
    list(ex.run(_noop, list(range(20))))  # warm-up: worker processes start
    t = time.perf_counter()
    list(ex.run(_noop, list(range(n_tasks))))
    per_ray = (time.perf_counter() - t) / n_tasks
    t = time.perf_counter()
    list(LocalExecutor().run(_noop, list(range(n_tasks))))
    per_local = (time.perf_counter() - t) / n_tasks
    return {"ray_init_s": startup, "ray_task_overhead_ms": 1e3 * per_ray,
            "local_task_overhead_us": 1e6 * per_local, "n_tasks": n_tasks}


def harvest_pair(windows, workdir: Path, rows_per_shard: int) -> dict:
    from interplab.activations import harvest_to_store
    from interplab.distributed import ModelSpec, RayExecutor

    spec = ModelSpec("smollm2-135m", device="cpu")
    t = time.perf_counter()
    lm = spec.load()
    load_s = time.perf_counter() - t
    kw = {"batch_size": 32, "rows_per_shard": rows_per_shard, "progress": False,
          "worker_model": spec}
    n_tokens = sum(len(w) for w in windows)
    out = {"model_load_s": load_s, "n_tokens": n_tokens,
           "torch_threads_local": torch.get_num_threads()}
    for name, executor in (("local", None), ("ray", RayExecutor(workers=2))):
        t = time.perf_counter()
        store = harvest_to_store(lm, None, [HOOK], workdir / name, token_ids=windows,
                                 executor=executor, **kw)
        out[f"{name}_s"] = time.perf_counter() - t
        out[f"{name}_tokens_per_s"] = n_tokens / out[f"{name}_s"]
        (workdir / name / ".lock").unlink()  # holds the writer's pid
        out["n_shards"] = len(store.shards)
        out["bytes_per_shard"] = [s["bytes"] for s in store.shards]
    out["ray_over_local"] = out["ray_tokens_per_s"] / out["local_tokens_per_s"]
    out["byte_identical"] = _same_files(workdir / "local", workdir / "ray")
    return out


def _same_files(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir())
    return names == sorted(p.name for p in b.iterdir()) and all(
        (a / n).read_bytes() == (b / n).read_bytes() for n in names)


def sweep_pair(store_path: Path, workdir: Path, steps: int, batch: int) -> dict:
    from interplab.activations import ActivationStore
    from interplab.activations.exclusion import ExclusionCount, ExclusionRule, ordinary_batches
    from interplab.distributed import RayExecutor, plan_sweep, run_sweep
    from interplab.sae import SAEConfig, SAETrainer, TrainerConfig

    store = ActivationStore(store_path)
    configs = [SAEConfig("topk", store.d_model, 8 * store.d_model, k=k, hook=HOOK, seed=0)
               for k in (32, 64)]
    tcfg = TrainerConfig(total_steps=steps, seed=0, lr_warmup_steps=10)
    rule = ExclusionRule()
    plan = plan_sweep(store_path, HOOK, configs, tcfg, batch_size=batch, out=workdir / "saes",
                      exclusion=rule, n_rows=store.n_rows)
    t = time.perf_counter()
    batches = ordinary_batches(store.iter_batches(batch, HOOK, seed=0, epochs=plan[0].epochs,
                                                  drop_last=True, with_position=True),
                               rule, ExclusionCount())
    joint = SAETrainer(configs, tcfg).fit(batches).finalized_saes()
    local_s = time.perf_counter() - t
    t = time.perf_counter()
    results = run_sweep(plan, RayExecutor(workers=2))
    ray_s = time.perf_counter() - t
    from interplab.sae import load_sae

    diffs = [max(float((a - load_sae(r["path"]).state_dict()[k]).abs().max())
                 for k, a in sae.state_dict().items()) for sae, r in zip(joint, results, strict=True)]
    return {"steps": steps, "batch": batch, "width": configs[0].d_sae, "local_s": local_s,
            "ray_s": ray_s, "ray_over_local": local_s / ray_s, "max_abs_weight_diff": diffs}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-seq", type=int, default=1536)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--rows-per-shard", type=int, default=16384)
    ap.add_argument("--sae-steps", type=int, default=150)
    ap.add_argument("--sae-batch", type=int, default=1024)
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_harvest import corpus_windows
    from interplab.models import load

    result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "torch": torch.__version__, "load_avg_start": os.getloadavg()}}
    result["overhead"] = task_overhead(args.tasks)
    print(json.dumps(result["overhead"], indent=1), flush=True)
    windows = corpus_windows(load("smollm2-135m", device="cpu"), args.n_seq, args.seq_len)
    with tempfile.TemporaryDirectory() as tmp:
        result["harvest"] = harvest_pair(windows, Path(tmp), args.rows_per_shard)
        print(json.dumps(result["harvest"], indent=1), flush=True)
        result["sweep"] = sweep_pair(Path(tmp) / "local", Path(tmp), args.sae_steps,
                                     args.sae_batch)
        print(json.dumps(result["sweep"], indent=1), flush=True)
    t = time.perf_counter()
    from interplab.models.loading import weights_sha256

    lm = load("smollm2-135m", device="cpu")
    result["model_load_s"] = time.perf_counter() - t
    t = time.perf_counter()
    weights_sha256(lm.hf)
    result["weights_sha256_s"] = time.perf_counter() - t
    result["machine"]["load_avg_end"] = os.getloadavg()
    print(json.dumps({k: result[k] for k in ("model_load_s", "weights_sha256_s")}))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
