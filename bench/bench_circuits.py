"""Benchmark of attribution over SAE latents (interplab.circuits), as ratios within one run.

* AtP over every latent × position and error node of one hook, in forward-pass equivalents
  (wall time over one plain forward pass of the same prompts; the donor prompts' pass up to the
  hook included), with the SAE spliced in, against the same attribution patching without SAEs
  (``interplab.interventions.attribute`` on the hook's dense activation);
* IG(k) per hook and exact patching per node in the same units;
* the SAE cache: training SAEs at two hooks, then the same call again (it must train nothing).

Run: ``PYTHONPATH=src python bench/bench_circuits.py [--model smollm2-135m] [--json]``. State
whether other jobs shared the CPU when quoting the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import torch

from interplab.circuits.attribute import attribute_latents
from interplab.circuits.splice import sae_set
from interplab.circuits.tasks import city_facts_of, city_recall, common_length
from interplab.datasets import load_dataset
from interplab.interventions import attribute
from interplab.models import load
from interplab.sae.base import SAEConfig, create_sae


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--layer", type=int, default=12)
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--ig-steps", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    lm = load(args.model)
    layer = min(args.layer, lm.n_layers - 1)
    hook = f"blocks.{layer}.hook_resid_post"
    ds = load_dataset("cities", seed=0)
    facts = city_facts_of(ds, range(len(ds)))
    pairs = city_recall(lm, facts, args.pairs, common_length(lm, facts), 0)
    sae = create_sae(SAEConfig("topk", lm.d_model, args.width, k=32, seed=0))
    with torch.no_grad():
        sae.b_enc.fill_(0.05)
    saes = sae_set(lm, {hook: sae})
    metric = pairs.metric()

    def best(fn):  # noqa: ANN001, ANN202
        out = []
        for _ in range(args.repeat):
            out.append(fn())
        return min(out, key=lambda r: r[0]), out

    def with_sae():  # noqa: ANN202
        r = attribute_latents(lm, saes, pairs.clean, pairs.corrupted, metric, methods=("atp",),
                              n_exact=4, n_boot=100, batch_size=args.pairs)
        return r.cost["atp"], r.cost

    def without_sae():  # noqa: ANN202
        r = attribute(lm, pairs.clean, pairs.corrupted, [hook], metric, methods=("atp",),
                      n_exact=4, batch_size=args.pairs)
        return r.cost["atp"], r.cost

    (atp_sae, cost_sae), runs_sae = best(with_sae)
    (atp_dense, cost_dense), runs_dense = best(without_sae)
    t = time.perf_counter()
    r = attribute_latents(lm, saes, pairs.clean[:4], pairs.corrupted[:4], metric,
                          methods=("ig",), ig_steps=args.ig_steps, n_exact=4, n_boot=100,
                          batch_size=args.pairs)
    ig_cost, exact_cost = r.cost["ig"], r.cost["exact_per_node"]
    ig_wall = time.perf_counter() - t

    from interplab.sae.cache import CorpusData, cached_saes
    from interplab.sae.config import TrainerConfig

    with tempfile.TemporaryDirectory() as d:
        kw = dict(batch_size=128, cache_dir=d)
        hooks = [f"blocks.{max(layer - 6, 0)}.hook_resid_post", hook]
        cfgs = [SAEConfig("topk", 0, 256, k=16)]
        data = CorpusData(context_length=32, n_sequences=64)
        t = time.perf_counter()
        _, first = cached_saes(lm, hooks, cfgs, TrainerConfig(total_steps=50), data, **kw)
        first_s = time.perf_counter() - t
        t = time.perf_counter()
        _, second = cached_saes(lm, hooks, cfgs, TrainerConfig(total_steps=50), data, **kw)
        second_s = time.perf_counter() - t

    rows = {
        "atp_with_sae_forward_passes": atp_sae,
        "atp_without_sae_forward_passes": atp_dense,
        "ratio_with_over_without": atp_sae / atp_dense,
        "atp_runs_with_sae": [x[0] for x in runs_sae],
        "atp_runs_without_sae": [x[0] for x in runs_dense],
        "forward_s": cost_sae["forward_s"],
        f"ig{args.ig_steps}_forward_passes_4_pairs": ig_cost,
        "ig_wall_s_4_pairs": ig_wall,
        "exact_forward_passes_per_node": exact_cost,
        "cache_first_call_s": first_s, "cache_first_trained": first.n_trained,
        "cache_second_call_s": second_s, "cache_second_trained": second.n_trained,
    }
    meta = {"model": lm.name, "hook": hook, "width": args.width, "pairs": len(pairs),
            "prompt_tokens": int(len(lm.tokenizer(pairs.clean[0])["input_ids"])),
            "cpus": os.cpu_count(), "load_average": os.getloadavg(),
            "python": platform.python_version(), "torch": torch.__version__}
    if args.json:
        print(json.dumps({"meta": meta, "results": rows}, indent=1))
        return
    for k, v in meta.items():
        print(f"{k:>40}: {v}")
    for k, v in rows.items():
        print(f"{k:>40}: {v if not isinstance(v, float) else round(v, 3)}")


if __name__ == "__main__":
    main()
