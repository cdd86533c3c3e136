"""The truth study at scale, with a per-stage breakdown (results go to docs/benchmarks.md by hand).

The generated statement datasets are exported in the geometry-of-truth CSV layout
(``statement,label`` plus pair, group and metadata columns) and the study runs on those files,
as a user's own CSVs would: every dataset in full, every layer, every probe and control, the HTML
report included. Prints the stage timings, the process's CPU time and the load average before and
after.

Usage: python bench/bench_truth_study.py [--datasets cities,neg_cities,...] [--out x.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

ALL = ["cities", "neg_cities", "sp_en_trans", "neg_sp_en_trans", "larger_than", "smaller_than",
       "cities_conj", "cities_disj", "chem_symbols", "neg_chem_symbols", "capitals",
       "neg_capitals"]


def paths_statements(names: str, max_size: int | None) -> list[str]:
    from interplab.datasets import load_dataset

    return [s for n in names.split(",") for s in load_dataset(n, max_size=max_size).statements]


def count_shared_prefixes() -> dict[str, int]:
    """Tokens the harvests did not run thanks to shared prefixes, per model variant (filled as
    the study runs)."""
    import importlib

    module = importlib.import_module("interplab.activations.harvest")
    saved: dict[str, int] = {}
    inner = module.harvest_tokens

    def counted(lm, *args, **kwargs):
        acts = inner(lm, *args, **kwargs)
        saved[lm.variant] = saved.get(lm.variant, 0) + int(acts.info["shared_prefix_tokens_saved"])
        return acts

    module.harvest_tokens = counted
    return saved


def flop_bound(model: str, statements: list[str], timings: dict, saved: dict[str, int]) -> dict:
    """Achieved GFLOP/s of the two harvests against a float32 matrix product of the model's own
    shapes on this machine (same thread count): near 1 means the harvest is FLOP-bound. FLOPs
    count the tokens actually run (a shared prefix once), padding not included."""
    import torch

    from interplab.models import load
    from interplab.threads import limit_threads

    lm = load(model)
    n_tok = sum(len(t) for t in lm.tokenize(statements))
    head = lm.unembed.numel()
    body = sum(p.numel() for p in lm.hf.parameters()) - lm.embed.weight.numel()
    # 2 FLOPs per weight per token; the model pass also projects every scored token (n - 1 per
    # statement) onto the vocabulary; attention over ~15 tokens is negligible next to this.
    # A shared prefix runs (and projects its positions) once: each saved token is one token
    # fewer through the body and one scored position fewer through the head.
    run_model = n_tok - saved.get("original", 0)
    run_reset = n_tok - sum(v for k, v in saved.items() if k != "original")
    model_flop = 2 * run_model * body + 2 * (run_model - len(statements)) * head
    reset_flop = 2 * run_reset * body
    a, w = torch.randn(1024, lm.d_model), torch.randn(lm.d_model, 4 * lm.d_model)
    with limit_threads(int(timings.get("harvest_threads", 0))):
        for _ in range(3):
            a @ w
        t = time.perf_counter()
        for _ in range(50):
            a @ w
        gemm = 50 * 2 * a.shape[0] * w.numel() / (time.perf_counter() - t) / 1e9
    model_gflops = model_flop / timings["harvest_model_s"] / 1e9
    reset_gflops = reset_flop / max(timings["harvest_reset_s"], 1e-9) / 1e9
    return {"n_tokens": n_tok, "tokens_not_run_shared_prefixes": saved,
            "model_pass_gflop": model_flop / 1e9, "reset_pass_gflop": reset_flop / 1e9,
            "model_harvest_gflop_s": model_gflops, "reset_harvest_gflop_s": reset_gflops,
            "gemm_gflop_s": gemm, "model_harvest_over_gemm": model_gflops / gemm,
            "reset_harvest_over_gemm": reset_gflops / gemm}


def main() -> None:
    from interplab.datasets import load_dataset
    from interplab.report.truth import write_truth_report
    from interplab.studies.truth import TruthConfig, run_truth

    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", default=",".join(ALL))
    ap.add_argument("--layers", default="", help="comma list (default: every layer)")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--max-per-dataset", type=int, default=0, help="0: every statement")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as d:
        paths = [str(load_dataset(n).to_csv(Path(d) / f"{n}.csv"))
                 for n in args.datasets.split(",")]
        config = TruthConfig.make(model=args.model, datasets=paths,
                             max_per_dataset=args.max_per_dataset or None,
                             layers=[int(x) for x in args.layers.split(",")] if args.layers else None)
        saved = count_shared_prefixes()
        c0, t0 = os.times(), time.perf_counter()
        result = run_truth(config, progress=False)
        t = time.perf_counter()
        write_truth_report(result, Path(d) / "report.html")
        report_s = time.perf_counter() - t
        wall = time.perf_counter() - t0
        c1 = os.times()
    timings = dict(result.timings)
    bound = flop_bound(args.model, paths_statements(args.datasets, args.max_per_dataset or None),
                       timings, saved)
    timings["report_s"] = report_s
    fits = {k: v for k, v in timings.items() if k.startswith("fit_")}
    out = {"n_statements": sum(ds["n"] if "n" in ds else ds.get("n_rows", 0)
                               for ds in result.datasets),
           "datasets": [ds.get("name") for ds in result.datasets],
           "n_layers": len(result.layers), "timings": timings,
           "fit_s_by_probe": fits, "wall_s": wall,
           # The fit and bootstrap workers are forked processes: their CPU time is the
           # children's (counted once they are joined), which the process's own leaves out.
           "cpu_s_own": (c1.user - c0.user) + (c1.system - c0.system),
           "cpu_s_workers": (c1.children_user - c0.children_user)
           + (c1.children_system - c0.children_system),
           "loadavg_before": load_before, "loadavg_after": os.getloadavg()}
    out["cpu_s"] = out["cpu_s_own"] + out["cpu_s_workers"]
    out["cpu_share"] = out["cpu_s"] / wall
    out["bound"] = bound
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
