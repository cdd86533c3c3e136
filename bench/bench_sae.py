"""SAE training benchmarks (results in docs/benchmarks.md).

All on identical activations and hyper-parameters, d_in 576, batch 4096, in one run:

1. ReLU SAE (width 4608) training tokens/s: interplab's trainer vs a minimal hand-written PyTorch
   step (encode, decode, loss, Adam) vs SAELens's trainer (optional ``bench`` extra).
2. TopK, k = 32, width 16 × d_in: the sparse decoder path (only the k active rows, via
   ``embedding_bag``) vs the dense one — decoder forward+backward and a whole autograd training
   step, and equality of outputs and gradients.
3. bf16 matrix products (fp32 master weights, optimizer state and metrics) vs fp32: step time and
   final FVE on the same data.
4. Training from an on-disk store larger than 4 GB: peak RSS of the training process.

TopK/BatchTopK training against SAELens's TopK trainer (k = 32, lr 3e-4, Adam, batch 4096; not
in the default set): ``--only topkspeed`` median step time per contender and ratio per repetition,
``--only topkprofile`` torch.profiler operator table per path, ``--only topkfve`` held-out FVE
after the same batches, fp32 vs bf16 and the fused loss vs autograd; ``--width`` sets the width.

    nice -n 10 python bench/bench_sae.py --out bench_sae.json [--skip-store]
    python bench/bench_sae.py --only topkspeed --width 16384 --steps 12 --reps 3 --out x.json
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

from interplab.sae import (
    SAEConfig,
    SAETrainer,
    TrainerConfig,
    create_sae,
    evaluate_reconstruction,
    topk_loss,
)
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
        tr.saes[0].fused_loss = False  # the decoder choice applies to the autograd path
        steps["sparse" if flag else "dense"] = _timed(lambda tr=tr: tr.fit(data)) / len(data)
    return {"width": width, "k": k, "decoder_fwd_bwd_s": {"dense": t_dense, "sparse": t_sparse},
            "decoder_speedup": t_dense / t_sparse,
            "max_abs_diff_out_gradvals_gradWdec": max_diff, "step_s": steps,
            "step_speedup": steps["dense"] / steps["sparse"]}


# -- 2b. TopK / BatchTopK training speed against SAELens's TopK trainer ---------------------------

class _Stamped:
    """Yields the batches and records when each is taken: one stamp per training step."""

    def __init__(self, data):
        self.data, self.stamps = data, []

    def __iter__(self):
        for x in self.data:
            self.stamps.append(time.perf_counter())
            yield x
        self.stamps.append(time.perf_counter())


def _median_step(stamps: list[float]) -> float:
    diffs = sorted(b - a for a, b in pairwise(stamps[1:]))  # the first step also sets things up
    return diffs[len(diffs) // 2]


def _interplab_topk_trainer(arch: str, width: int, n_steps: int, mixed: str, fused: bool = True,
                            lr: float = 3e-4, **extra) -> SAETrainer:
    tr = SAETrainer([SAEConfig(arch, D, width, k=32)],
                    TrainerConfig(total_steps=n_steps, lr=lr, log_every_steps=0,
                                  normalise_activations=False, geometric_median_init=False,
                                  mixed_precision=mixed, lr_decay_fraction=0.0, **extra))
    tr.saes[0].fused_loss = fused
    return tr


def interplab_topk_step(data, arch: str, width: int, mixed: str, fused: bool = True) -> float:
    """Median training-step time of interplab's trainer (same lr and Adam as SAELens's)."""
    tr = _interplab_topk_trainer(arch, width, len(data), mixed, fused)
    stamps = [time.perf_counter()]
    tr.fit(data, callback=lambda _t: stamps.append(time.perf_counter()))
    return _median_step(stamps)


def _saelens_topk(width: int, n_samples: int, data):
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer as LensTrainer

    torch.manual_seed(0)
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=D, d_sae=width, k=32, dtype="float32",
                                                device="cpu"))
    cfg = SAETrainerConfig(total_training_samples=n_samples, train_batch_size_samples=BATCH,
                           lr=3e-4, lr_end=3e-4, device="cpu", dead_feature_window=1000,
                           feature_sampling_window=2000)
    return LensTrainer(cfg, sae, iter(data))


def saelens_topk_step(data, width: int) -> float | None:
    """Median training-step time of SAELens's ``SAETrainer`` + ``TopKTrainingSAE`` (its defaults:
    fp32, decoder-norm rescaling, gradient clipping; no latent is dead within the run, so neither
    trainer computes its aux-k loss)."""
    try:
        import sae_lens  # noqa: F401
    except ImportError:
        return None
    stamped = _Stamped(data)
    _saelens_topk(width, len(data) * BATCH, iter(stamped)).fit()
    return _median_step(stamped.stamps[:-1])


TOPK_CONTENDERS = {  # name: (architecture, precision, fused loss, threads of the sparse part)
    "topk_fp32": ("topk", "fp32", True, 1), "topk_bf16": ("topk", "bf16", True, 1),
    "batchtopk_fp32": ("batchtopk", "fp32", True, 1),
    "batchtopk_bf16": ("batchtopk", "bf16", True, 1),
    "topk_fp32_autograd": ("topk", "fp32", False, 1),
    "topk_bf16_autograd": ("topk", "bf16", False, 1),
    # the sparse part on torch's own thread count instead of one thread
    "topk_fp32_sparse_all_threads": ("topk", "fp32", True, None),
    "topk_bf16_sparse_all_threads": ("topk", "bf16", True, None),
}


def topk_speed(width: int, n_steps: int, reps: int, contenders: list[str]) -> dict:
    """Median step time of each contender, interleaved repetitions on the same batches; ratios
    are SAELens's step time over ours (> 1: faster than SAELens), per repetition and median."""
    data = _data(n_steps, seed=11)
    times: dict[str, list[float]] = {"saelens_topk": []}
    times.update({c: [] for c in contenders})
    for _ in range(reps):
        lens = saelens_topk_step(data, width)
        if lens is not None:
            times["saelens_topk"].append(lens)
        for c in contenders:
            arch, mixed, fused, threads = TOPK_CONTENDERS[c]
            topk_loss.SPARSE_THREADS = threads
            try:
                times[c].append(interplab_topk_step(data, arch, width, mixed, fused))
            finally:
                topk_loss.SPARSE_THREADS = 1
    out: dict = {"width": width, "k": 32, "steps": n_steps, "reps": reps, "step_s": times}
    if times["saelens_topk"]:
        ratios = {c: [lens / t for lens, t in zip(times["saelens_topk"], times[c], strict=True)]
                  for c in contenders}
        out["ratio_vs_saelens"] = ratios
        out["median_ratio_vs_saelens"] = {c: sorted(r)[len(r) // 2] for c, r in ratios.items()}
    return out


def topk_profile(width: int, n_steps: int = 4) -> dict:
    """Where a training step goes: torch.profiler self-CPU time per operator over ``n_steps``
    steps (after one warm-up fit), for each path; the top 12 operators of each."""
    from torch.profiler import ProfilerActivity, profile

    data = _data(n_steps, seed=12)
    runs = {
        "topk_fp32": lambda: _interplab_topk_trainer("topk", width, n_steps, "fp32"),
        "topk_bf16": lambda: _interplab_topk_trainer("topk", width, n_steps, "bf16"),
        # every latent that has not fired in the previous batch counts as dead: the aux-k loss runs
        "topk_fp32_aux": lambda: _interplab_topk_trainer("topk", width, n_steps, "fp32",
                                                         dead_window_tokens=BATCH),
        "batchtopk_fp32": lambda: _interplab_topk_trainer("batchtopk", width, n_steps, "fp32"),
        "topk_fp32_autograd": lambda: _interplab_topk_trainer("topk", width, n_steps, "fp32",
                                                              fused=False),
    }
    try:
        import sae_lens  # noqa: F401
        runs["saelens_topk"] = lambda: _saelens_topk(width, n_steps * BATCH, data)
    except ImportError:
        pass
    out = {}
    for name, make in runs.items():
        make().fit(data) if name != "saelens_topk" else make().fit()  # warm-up
        tr = make()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            tr.fit(data) if name != "saelens_topk" else tr.fit()
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
        out[name] = {"self_cpu_ms_per_step": total / 1e3 / n_steps,
                     "top": [(e.key, round(e.self_cpu_time_total / 1e3 / n_steps, 2),
                              round(e.self_cpu_time_total / total, 3)) for e in top]}
        print(name, json.dumps(out[name]), flush=True)
    return out


def topk_fve(n_train: int = 40, width: int = WIDTH) -> dict:
    """Held-out FVE after the same ``n_train`` batches: new path fp32 vs bf16 vs the autograd
    path (lr 2e-3, 2 warm-up steps, as in section 3)."""
    data = _data(n_train + 2, seed=13)
    train, held = data[:n_train], data[n_train:]
    out = {}
    for arch in ("topk", "batchtopk"):
        for mixed in ("fp32", "bf16"):
            for fused in (True, False):
                tr = _interplab_topk_trainer(arch, width, n_train, mixed, fused, lr=2e-3,
                                             lr_warmup_steps=2)
                tr.fit(train)
                m = evaluate_reconstruction(tr.finalized_saes()[0], held)
                out[f"{arch}_{mixed}_{'fused' if fused else 'autograd'}"] = {
                    "fve": m.fraction_of_variance_explained, "l0": m.l0}
        f = {k: v["fve"] for k, v in out.items() if k.startswith(arch + "_")}
        out[f"{arch}_fve_differences"] = {
            "bf16_vs_fp32": abs(f[f"{arch}_bf16_fused"] - f[f"{arch}_fp32_fused"]),
            "fused_vs_autograd_fp32": abs(f[f"{arch}_fp32_fused"] - f[f"{arch}_fp32_autograd"]),
            "fused_vs_autograd_bf16": abs(f[f"{arch}_bf16_fused"] - f[f"{arch}_bf16_autograd"])}
        print(arch, json.dumps({k: v for k, v in out.items() if k.startswith(arch)}), flush=True)
    return out


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
    ap.add_argument("--only", default="",
                    help="comma list of sections: relu,topk,bf16,store (the default four), "
                    "topkspeed, topkprofile, topkfve")
    ap.add_argument("--width", type=int, default=WIDTH, help="SAE width of the topk* sections")
    ap.add_argument("--contenders", default=",".join(TOPK_CONTENDERS),
                    help="topkspeed: comma list of " + ",".join(TOPK_CONTENDERS))
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
    if "topkspeed" in only:
        res["topkspeed"] = topk_speed(args.width, args.steps, args.reps,
                                      args.contenders.split(","))
        print(json.dumps(res["topkspeed"]), flush=True)
    if "topkprofile" in only:
        res["topkprofile"] = topk_profile(args.width)
    if "topkfve" in only:
        res["topkfve"] = topk_fve(width=args.width)
    if "store" in only and not args.skip_store:
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
            res["store"] = store_rss(Path(tmp))
        print(json.dumps(res["store"]), flush=True)
    res["bench_process_peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    Path(args.out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
