"""Interventions benchmark on the embedded model: ratios measured in one run.

1. A layer × position activation-patching sweep over city-statement pairs: `patch` (cached clean
   run, patched runs batched) against the same sweep written naively (one forward per patch,
   the clean activation read from the same cache).
2. Attribution cost in forward-pass equivalents (medians of 3 interleaved repetitions):
   attribution patching for every node of 90 hooks, integrated gradients per hook at three
   depths, exact patching per node.
3. Steering workload: 7 doses × 20 random directions × 64 prompts (8,960 steered rows).

4. TransformerLens's activation-patching helper (`patching.get_act_patch_resid_pre`, one forward
   per layer × position with every pair in it) against `patch` on the same sweep, on a GPT-2
   (12 layers, d_model 768, random weights built in-process and loaded into both). Skipped when
   `transformer_lens` is not importable.

Usage: python bench/bench_interventions.py [--pairs 8] [--skip-steer] [--skip-patch]
       [--only-transformerlens]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

TAIL = " This statement is:"


def city_pairs(lm, n: int) -> tuple[list[str], list[str]]:
    from interplab.datasets import load_dataset

    ds = load_dataset("cities", seed=0)
    by_city: dict[str, dict[int, str]] = {}
    for s, y, c in zip(ds.statements, ds.labels, ds.metadata["city"], strict=True):
        by_city.setdefault(c, {})[int(y)] = s + TAIL
    clean, bad = [], []
    for pair in by_city.values():
        if len(pair) == 2 and len(lm.tokenizer(pair[1])["input_ids"]) == len(
                lm.tokenizer(pair[0])["input_ids"]):
            clean.append(pair[1])
            bad.append(pair[0])
        if len(clean) == n:
            break
    return clean, bad


def naive_sweep(lm, clean, bad, hooks, offsets, metric) -> np.ndarray:
    """One forward per (pair, hook, position); clean activations from one cached run."""
    from interplab.activations.positions import Positions
    from interplab.interventions import engine
    from interplab.interventions.prompts import encode, make_batch, read_logits
    from interplab.models import edit_hooks

    c, x = encode(lm, clean), encode(lm, bad)
    cache = engine.capture(lm, c, hooks, batch_size=64)
    out = np.zeros((len(clean), len(hooks) * len(offsets)))
    last = Positions.parse("last")
    for i in range(len(clean)):
        batch = make_batch(lm, x, np.array([i]))
        n_tok = len(x.ids[i])
        for hj, h in enumerate(hooks):
            for oj, o in enumerate(offsets):
                p = n_tok + o

                def fn(act, h=h, p=p, i=i):
                    act = act.clone()
                    act[0, p] = cache[h][i, p].to(act)
                    return act

                with torch.inference_mode(), edit_hooks(lm, {h: fn}):
                    logits = read_logits(lm, x, batch, last)
                out[i, hj * len(offsets) + oj] = float(metric(logits, torch.tensor([i]))[0])
    return out


def per_node_sweep(lm, clean, bad, hooks, offsets, metric) -> np.ndarray:
    """One forward per node with every pair in it (the loop of TransformerLens's
    activation-patching helpers), clean activations from one cached run."""
    from interplab.activations.positions import Positions
    from interplab.interventions import engine
    from interplab.interventions.prompts import encode, make_batch, read_logits
    from interplab.models import edit_hooks

    c, x = encode(lm, clean), encode(lm, bad)
    cache = engine.capture(lm, c, hooks, batch_size=64)
    batch = make_batch(lm, x, np.arange(len(bad)))
    rows = torch.arange(len(bad))
    ex = torch.as_tensor(batch.example)
    out = np.zeros((len(clean), len(hooks) * len(offsets)))
    for hj, h in enumerate(hooks):
        for oj, o in enumerate(offsets):
            p = torch.as_tensor(x.lengths) + o

            def fn(act, h=h, p=p):
                act = act.clone()
                act[rows, p] = cache[h][ex, p].to(act)
                return act

            with torch.inference_mode(), edit_hooks(lm, {h: fn}):
                logits = read_logits(lm, x, batch, Positions.parse("last"))
            out[:, hj * len(offsets) + oj] = metric(logits, ex).double().numpy()
    return out


def main() -> None:
    from interplab.interventions import LogitDiff, single_token
    from interplab.models import load

    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--skip-steer", action="store_true")
    ap.add_argument("--skip-patch", action="store_true")
    ap.add_argument("--skip-attribution", action="store_true")
    ap.add_argument("--only-transformerlens", action="store_true")
    ap.add_argument("--repeats", type=int, default=3, help="repetitions timed (medians reported)")
    ap.add_argument("--ig-layers", type=int, nargs="+", default=[3, 15, 27])
    args = ap.parse_args()
    if args.only_transformerlens:
        report = {}
        transformerlens_sweep(args.pairs, report, repeats=args.repeats)
        print(json.dumps(report), flush=True)
        return
    lm = load("smollm2-135m")
    metric = LogitDiff(single_token(lm, " True"), single_token(lm, " False"))
    clean, bad = city_pairs(lm, args.pairs)
    hooks = [f"blocks.{i}.hook_resid_post" for i in range(0, 30, 3)]
    offsets = list(range(-6, 0))
    report: dict = {"pairs": len(clean), "nodes": len(hooks) * len(offsets)}

    if not args.skip_patch:
        patch_sweeps(lm, clean, bad, hooks, offsets, metric, report)
    if not args.skip_attribution:
        attribution_cost(lm, clean, bad, offsets, metric, report, args.repeats, args.ig_layers)
    if not args.skip_steer:
        steering(lm, metric, report)
    print(json.dumps(report), flush=True)


def patch_sweeps(lm, clean, bad, hooks, offsets, metric, report) -> None:
    from interplab.interventions import patch

    t = time.perf_counter()
    r = patch(lm, clean, bad, hooks, metric, positions=offsets, n_null=0, batch_size=64)
    report["patch_batched_s"] = time.perf_counter() - t
    t = time.perf_counter()
    naive = naive_sweep(lm, clean, bad, hooks, offsets, metric)
    report["patch_naive_s"] = time.perf_counter() - t
    report["patch_max_abs_diff"] = float(np.abs(naive - np.asarray(r.effects)
                                                - np.asarray(r.baseline)[:, None]).max())
    report["patch_speedup"] = report["patch_naive_s"] / report["patch_batched_s"]
    t = time.perf_counter()
    per_node = per_node_sweep(lm, clean, bad, hooks, offsets, metric)
    report["patch_per_node_s"] = time.perf_counter() - t
    report["patch_per_node_max_abs_diff"] = float(np.abs(per_node - naive).max())
    report["patch_speedup_vs_per_node"] = report["patch_per_node_s"] / report["patch_batched_s"]
    print(json.dumps(report), flush=True)


def attribution_cost(lm, clean, bad, offsets, metric, report, repeats: int = 3,
                     ig_layers: tuple[int, ...] = (3, 15, 27)) -> None:
    """Seconds of each method over seconds of one plain forward of the corrupted prompts, as
    medians over ``repeats`` interleaved repetitions (a shared machine's noise is large)."""
    from interplab.activations.positions import Positions
    from interplab.interventions import attribute, engine
    from interplab.interventions.prompts import encode

    all_hooks = [f"blocks.{i}.{k}" for i in range(30)
                 for k in ("hook_resid_post", "hook_attn_out", "hook_mlp_out")]
    bad_prompts = encode(lm, bad)
    runs = {
        "atp_all_nodes": lambda: attribute(lm, clean, bad, all_hooks, metric, positions=offsets,
                                           methods=["atp"], n_exact=4, batch_size=64),
        **{f"ig{k}_layer{layer}": (lambda k=k, layer=layer: attribute(
            lm, clean, bad, [f"blocks.{layer}.hook_resid_post"], metric, positions=offsets,
            methods=["ig"], ig_steps=k, n_exact=1, batch_size=64))
           for k in (4, 8) for layer in ig_layers},
    }
    seconds: dict[str, list[float]] = {"forward": [], **{name: [] for name in runs}}
    for _ in range(repeats):
        for name, run in runs.items():
            t = time.perf_counter()
            engine.clean_run(lm, bad_prompts, metric, read=Positions.parse("last"), batch_size=64)
            seconds["forward"].append(time.perf_counter() - t)
            r = run()
            method = "atp" if name.startswith("atp") else "ig"
            seconds[name].append(r.cost[method] * r.cost["forward_s"])
            if name.startswith("atp"):
                report["atp_nodes"] = len(r.nodes)
                seconds.setdefault("exact_per_node", []).append(
                    r.cost["exact_per_node"] * r.cost["forward_s"])
    fwd = float(np.median(seconds["forward"]))
    report["forward_s_median"] = fwd
    report["forward_s_all"] = seconds["forward"]
    for name, vals in seconds.items():
        if name != "forward":
            report[f"{name}_forward_equivalents"] = float(np.median(vals)) / fwd
    print(json.dumps(report), flush=True)


def transformerlens_sweep(n_pairs: int, report: dict, seq: int = 16, repeats: int = 3) -> None:
    """resid_pre patching over every layer × position: TransformerLens's helper vs `patch`."""
    try:
        from transformer_lens import patching
        from transformer_lens.model_bridge import TransformerBridge
        from transformer_lens.model_bridge.sources import transformers as _tl_source  # noqa: F401
    except ImportError as exc:
        report["transformerlens"] = f"skipped: transformer_lens is not importable ({exc})"
        return
    import tempfile

    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from interplab.interventions import LogitDiff, Prompts, patch
    from interplab.models import LanguageModel
    from interplab.models.tiny import tiny_tokenizer

    tok = tiny_tokenizer(add_bos=False)
    cfg = GPT2Config(n_embd=768, n_layer=12, n_head=12, n_positions=128, vocab_size=len(tok),
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1,
                     eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(cfg).eval()
    with tempfile.TemporaryDirectory() as d:  # the bridge reads config and tokenizer by path
        hf.config.save_pretrained(d)
        tok.save_pretrained(d)
        bridge = TransformerBridge.boot_transformers(
            d, hf_model=hf, tokenizer=AutoTokenizer.from_pretrained(d), device="cpu")
    lm = LanguageModel(hf, tok, "gpt2-768x12-random")
    rng = np.random.default_rng(0)
    clean = rng.integers(5, 300, (n_pairs, seq))
    bad = clean.copy()
    bad[:, seq // 2] = rng.integers(5, 300, n_pairs)
    a, b = 10, 20
    last = LogitDiff(a, b)
    hooks = [f"blocks.{i}.hook_resid_pre" for i in range(12)]
    clean_t, bad_t = torch.as_tensor(clean), torch.as_tensor(bad)

    def tl_metric(logits):  # [batch, pos, vocab] -> [batch]
        return logits[:, -1, a] - logits[:, -1, b]

    def run_tl():
        with torch.no_grad():
            _, cache = bridge.run_with_cache(clean_t)
            return patching.get_act_patch_resid_pre(bridge, bad_t, cache, tl_metric,
                                                    reduce="mean")

    def run_ours():
        return patch(lm, Prompts(clean.tolist(), [], False), Prompts(bad.tolist(), [], False),
                     hooks, last, positions="all", n_null=0, batch_size=64)

    times: dict[str, list[float]] = {"tl": [], "ours": []}
    for _ in range(repeats):
        for name, fn in (("tl", run_tl), ("ours", run_ours)):
            t = time.perf_counter()
            out = fn()
            times[name].append(time.perf_counter() - t)
            if name == "tl":
                tl_out = out.detach().double().numpy()  # [layer, pos]
            else:
                ours = (np.asarray(out.effects) + np.asarray(out.baseline)[:, None]).mean(0)
    report["transformerlens_sweep"] = {
        "model": "GPT-2 config, 12 layers, d_model 768, random weights", "pairs": n_pairs,
        "positions": seq, "patches": 12 * seq * n_pairs,
        "transformerlens_s": times["tl"], "interplab_s": times["ours"],
        "ratio_of_medians": float(np.median(times["tl"]) / np.median(times["ours"])),
        "max_abs_diff": float(np.abs(tl_out - ours.reshape(12, seq)).max())}


def steering(lm, metric, report) -> None:
    from interplab.controls import random_direction_like
    from interplab.datasets import load_dataset
    from interplab.interventions import steer, steer_many

    ds = load_dataset("cities", seed=0)
    prompts = [s + TAIL for s in ds.statements[:64]]
    hook = "blocks.12.hook_resid_post"
    base = np.ones(lm.d_model)
    dirs = {f"r{k}": {hook: random_direction_like(base, seed=(1, k))} for k in range(20)}
    t = time.perf_counter()
    out = steer_many(lm, prompts, dirs, [-3, -2, -1, 0, 1, 2, 3], metric, n_null=20,
                     batch_size=128)
    report["steer_s"] = time.perf_counter() - t
    report["steer_rows"] = next(iter(out.values())).info["rows_run"]
    # The same rows one forward each, timed on a sample and scaled.
    t = time.perf_counter()
    steer(lm, prompts[:2], dirs["r0"], [1.0, 2.0], metric, n_null=0, batch_size=1)
    per_row = (time.perf_counter() - t) / (2 * 3)
    report["steer_one_row_per_forward_estimate_s"] = per_row * report["steer_rows"]


if __name__ == "__main__":
    main()
