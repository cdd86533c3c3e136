"""SAE training benchmarks (results in docs/benchmarks.md).

All on identical activations and hyper-parameters, d_in 576, batch 4096, in one run:

1. ReLU SAE (width 4608) training tokens/s: interplab's trainer vs a minimal hand-written PyTorch
   step (encode, decode, loss, Adam) vs SAELens's trainer (optional ``bench`` extra).
2. TopK, k = 32, width 16 × d_in: the sparse decoder path (only the k active rows, via
   ``embedding_bag``) vs the dense one — decoder forward+backward and a whole training step, and
   equality of outputs and gradients.
3. bf16 matrix products (fp32 master weights, optimizer state and metrics) vs fp32: step time and
   final FVE on the same data.
4. Training from an on-disk store larger than 4 GB: peak RSS of the training process.

    nice -n 10 python bench/bench_sae.py --out bench_sae.json [--skip-store]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path

import torch

from interplab.sae import SAEConfig, SAETrainer, TrainerConfig, create_sae, evaluate_reconstruction
from interplab.sae.synthetic import random_dictionary, sparse_dictionary_batches

D, WIDTH, BATCH = 576, 4608, 4096


def _data(n_batches: int, seed: int = 0) -> list[torch.Tensor]:
    dic = random_dictionary(4 * WIDTH, D, seed=seed)
    return list(sparse_dictionary_batches(dic, BATCH, n_batches, mean_active=32, seed=seed + 1))


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# -- 1. ReLU throughput ---------------------------------------------------------------------------

def handwritten_relu(data: list[torch.Tensor], lam: float = 1e-3) -> float:
    torch.manual_seed(0)
    W_dec = torch.randn(WIDTH, D)
    W_dec /= W_dec.norm(dim=-1, keepdim=True)
    W_enc = W_dec.t().clone().requires_grad_(True)
    W_dec.requires_grad_(True)
    b_enc = torch.zeros(WIDTH, requires_grad=True)
    b_dec = torch.zeros(D, requires_grad=True)
    opt = torch.optim.Adam([W_enc, b_enc, W_dec, b_dec], lr=3e-4)

    def run():
        for x in data:
            f = torch.relu((x - b_dec) @ W_enc + b_enc)
            x_hat = f @ W_dec + b_dec
            loss = (x_hat - x).pow(2).sum(-1).mean() + lam * f.sum(-1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return _timed(run)


def interplab_relu(data: list[torch.Tensor], lam: float = 1e-3, mixed: str = "fp32") -> float:
    trainer = SAETrainer([SAEConfig("relu", D, WIDTH, sparsity_coefficient=lam)],
                         TrainerConfig(total_steps=len(data), lr=3e-4, log_every_steps=0,
                                       normalise_activations=False, geometric_median_init=False,
                                       mixed_precision=mixed, lr_decay_fraction=0.0))
    return _timed(lambda: trainer.fit(data))


def saelens_relu(data: list[torch.Tensor], lam: float = 1e-3) -> float | None:
    try:
        from sae_lens.config import SAETrainerConfig
        from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
        from sae_lens.training.sae_trainer import SAETrainer as LensTrainer
    except ImportError:
        return None
    torch.manual_seed(0)
    sae = StandardTrainingSAE(StandardTrainingSAEConfig(d_in=D, d_sae=WIDTH, l1_coefficient=lam,
                                                        dtype="float32", device="cpu"))
    cfg = SAETrainerConfig(total_training_samples=len(data) * BATCH,
                           train_batch_size_samples=BATCH, lr=3e-4, lr_end=3e-4, device="cpu",
                           dead_feature_window=1000, feature_sampling_window=2000)
    trainer = LensTrainer(cfg, sae, iter(data))
    return _timed(trainer.fit)


# -- 2. TopK sparse decoder -----------------------------------------------------------------------

def topk_decoder(reps: int = 3) -> dict:
    width, k = 16 * D, 32
    sae = create_sae(SAEConfig("topk", D, width, k=k))
    x = _data(1, seed=5)[0]
    with torch.no_grad():
        pre = sae.pre_activations(x)
    vals0, idx = torch.relu(pre).topk(k, dim=-1)

    def dense():
        vals = vals0.clone().requires_grad_(True)
        sae.zero_grad(set_to_none=True)
        out = sae.decode(torch.zeros_like(pre).scatter(-1, idx, vals))
        out.pow(2).sum().backward()
        return out.detach(), vals.grad, sae.W_dec.grad.clone()

    def sparse():
        vals = vals0.clone().requires_grad_(True)
        sae.zero_grad(set_to_none=True)
        out = sae.decode_sparse(vals, idx)
        out.pow(2).sum().backward()
        return out.detach(), vals.grad, sae.W_dec.grad.clone()

    d_out, s_out = dense(), sparse()
    max_diff = [float((a - b).abs().max()) for a, b in zip(d_out, s_out, strict=True)]
    t_dense = sorted(_timed(dense) for _ in range(reps))[reps // 2]
    t_sparse = sorted(_timed(sparse) for _ in range(reps))[reps // 2]

    data = _data(4, seed=6)
    steps = {}
    for flag in (False, True):
        tr = SAETrainer([SAEConfig("topk", D, width, k=k)],
                        TrainerConfig(total_steps=len(data), log_every_steps=0,
                                      sparse_topk_decoder=flag, geometric_median_init=False))
        steps["sparse" if flag else "dense"] = _timed(lambda tr=tr: tr.fit(data)) / len(data)
    return {"width": width, "k": k, "decoder_fwd_bwd_s": {"dense": t_dense, "sparse": t_sparse},
            "decoder_speedup": t_dense / t_sparse,
            "max_abs_diff_out_gradvals_gradWdec": max_diff, "step_s": steps,
            "step_speedup": steps["dense"] / steps["sparse"]}


# -- 3. bf16 ----------------------------------------------------------------------------------------

def bf16_vs_fp32(n_train: int = 30) -> dict:
    data = _data(n_train + 2, seed=7)
    train, held = data[:n_train], data[n_train:]
    res = {}
    for mp in ("fp32", "bf16"):
        # The ReLU SAE of section 1 (λ = 1 on normalised inputs): median step time over the run
        # (the first step also initialises b_dec, so it is not a training step's cost) and final
        # held-out FVE; and a TopK SAE (k = 32), trained on the same batches both ways.
        relu = SAETrainer([SAEConfig("relu", D, WIDTH, sparsity_coefficient=1.0)],
                          TrainerConfig(total_steps=n_train, lr=2e-3, log_every_steps=0,
                                        mixed_precision=mp, lr_warmup_steps=2))
        stamps = [time.perf_counter()]
        relu.fit(train, callback=lambda _t, s=stamps: s.append(time.perf_counter()))
        diffs = sorted(b - a for a, b in pairwise(stamps[1:]))
        step_s = diffs[len(diffs) // 2]
        m_relu = evaluate_reconstruction(relu.finalized_saes()[0], held)
        topk = SAETrainer([SAEConfig("topk", D, WIDTH, k=32)],
                          TrainerConfig(total_steps=n_train, lr=2e-3, log_every_steps=0,
                                        mixed_precision=mp, lr_warmup_steps=2))
        topk.fit(train)
        m = evaluate_reconstruction(topk.finalized_saes()[0], held)
        res[mp] = {"relu_step_s": step_s, "relu_fve": m_relu.fraction_of_variance_explained,
                   "relu_l0": m_relu.l0, "topk_fve": m.fraction_of_variance_explained,
                   "topk_l0": m.l0}
    a, b = torch.randn(4096, 4608), torch.randn(4608, 576)
    mm = {}
    for name, (x, y) in {"fp32": (a, b), "bf16": (a.bfloat16(), b.bfloat16())}.items():
        x @ y
        mm[name] = sorted(_timed(lambda x=x, y=y: x @ y) for _ in range(5))[2]
    res["matmul_4096x4608x576_s"] = mm
    res["matmul_speedup"] = mm["fp32"] / mm["bf16"]
    res["step_speedup"] = res["fp32"]["relu_step_s"] / res["bf16"]["relu_step_s"]
    res["fve_difference"] = {
        arch: abs(res["fp32"][f"{arch}_fve"] - res["bf16"][f"{arch}_fve"]) for arch in ("relu", "topk")}
    return res


# -- 4. peak RSS on a > 4 GB store -----------------------------------------------------------------

STORE_CHILD = """
import resource, sys, time, torch
from interplab.activations import ActivationStore
from interplab.sae import SAEConfig, SAETrainer, TrainerConfig
st = ActivationStore(sys.argv[1])
steps = st.n_rows // 4096
batches = st.iter_batches(4096, shuffle=True, seed=0, drop_last=True, shards_in_buffer=1)
t = time.time()
tr = SAETrainer([SAEConfig("relu", st.d_model, st.d_model, sparsity_coefficient=1.0)],
                TrainerConfig(total_steps=steps, log_every_steps=0)).fit(batches)
# VmHWM is this program's own peak; ru_maxrss would also count the parent's memory that was
# mapped into the child at fork time (Linux keeps that high-water mark across exec).
try:
    peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status")
                   if line.startswith("VmHWM:"))
except (OSError, StopIteration):
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(tr.step, st.n_rows, time.time() - t, peak_kb)
"""


def store_rss(root: Path, gb: float = 4.3) -> dict:
    from interplab.activations.store import StoreWriter

    hook = "blocks.0.hook_resid_post"
    rows_per_shard = 65536
    n_shards = int(gb * 1e9 / (rows_per_shard * D * 4)) + 1
    path = root / "big_store"
    header = {"interplab_version": "bench", "model": {"name": "synthetic"}, "hooks": [hook],
              "positions": "all", "dataset": {"name": "synthetic"}, "dtype": "float32",
              "d_model": D, "rows_per_shard": rows_per_shard}
    g = torch.Generator().manual_seed(0)
    with StoreWriter(path, header) as w:
        for s in range(n_shards):
            n = rows_per_shard
            w.write_shard({hook: torch.randn(n, D, generator=g),
                           "text_index": torch.arange(s * n, (s + 1) * n),
                           "position": torch.zeros(n, dtype=torch.long),
                           "token_id": torch.zeros(n, dtype=torch.long)}, (s + 1) * n)
        w.finish()
    size = sum(f.stat().st_size for f in path.iterdir())
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    out = subprocess.run([sys.executable, "-c", STORE_CHILD, str(path)], env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    steps, rows, secs, maxrss_kb = int(out[0]), int(out[1]), float(out[2]), int(out[3])
    return {"store_bytes": size, "rows": rows, "steps": steps, "train_s": secs,
            "peak_rss_bytes": maxrss_kb * 1024}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench_sae.json")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--skip-store", action="store_true")
    ap.add_argument("--only", default="", help="comma list of sections: relu,topk,bf16,store")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(","))) or {"relu", "topk", "bf16", "store"}
    res: dict = {"torch": torch.__version__, "threads": torch.get_num_threads(),
                 "machine": platform.processor() or platform.machine(), "d_in": D,
                 "batch": BATCH}
    if "relu" in only:
        data = _data(args.steps)
        # Interleaved repetitions, best of each: the machine is shared, so take the least
        # disturbed run of every contender.
        hand, ours, lens = [], [], []
        for _ in range(args.reps):
            hand.append(handwritten_relu(data))
            ours.append(interplab_relu(data))
            try:
                lens.append(saelens_relu(data))
            except Exception as exc:  # an API change in SAELens must not sink the other figures
                res["saelens_error"] = repr(exc)
        hand, ours = min(hand), min(ours)
        lens = min(lens) if lens and None not in lens else None
        tok = args.steps * BATCH
        res["relu"] = {"width": WIDTH, "steps": args.steps,
                       "tokens_per_s": {"handwritten": tok / hand, "interplab": tok / ours,
                                        "saelens": tok / lens if lens else None},
                       "ratio_vs_handwritten": hand / ours,
                       "ratio_vs_saelens": (lens / ours) if lens else None}
        print(json.dumps(res["relu"]), flush=True)
    if "topk" in only:
        res["topk"] = topk_decoder()
        print(json.dumps(res["topk"]), flush=True)
    if "bf16" in only:
        res["bf16"] = bf16_vs_fp32()
        print(json.dumps(res["bf16"]), flush=True)
    if "store" in only and not args.skip_store:
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
            res["store"] = store_rss(Path(tmp))
        print(json.dumps(res["store"]), flush=True)
    res["bench_process_peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    Path(args.out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
