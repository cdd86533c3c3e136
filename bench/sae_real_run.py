"""The real run recorded in docs/benchmarks.md: an SAE on ~1M tokens of the embedded model.

SmolLM2-135M (embedded GGUF), residual stream after block 15, King James Bible corpus packed into
128-token sequences (BOS = <|endoftext|> at the start of each, never trained on or patched).
TopK SAE, k = 32, width 8 × 576. Reports FVE / L0 / alive on held-out tokens, CE loss recovered
at context lengths 128 and 512, and writes a feature dashboard.

    nice -n 10 python bench/sae_real_run.py --out /tmp/sae_real   (≈ 30–60 min on 2 CPU cores)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from interplab.datasets.corpus import load_corpus, pack_tokens
from interplab.models import load
from interplab.report.sae_dashboard import render_dashboard
from interplab.sae import SAEConfig, SAETrainer, TrainerConfig, evaluate_reconstruction, save_sae
from interplab.sae.ce_eval import ce_loss_recovered
from interplab.sae.dashboard import feature_dashboards


def harvest_tokens(lm, hook, tokens, bos_id, batch_size=16):
    """Activations at ``hook`` for every non-BOS position (bf16 matrix products, bf16 rows)."""
    from interplab.activations import Positions
    from interplab.activations import harvest_tokens as harvest

    keep = (tokens != bos_id).tolist()
    t0 = time.time()
    acts = harvest(lm, tokens.tolist(), hook, Positions.masks(keep), batch_size=batch_size,
                   dtype=torch.bfloat16, compute_dtype=torch.bfloat16, progress=True)
    print(f"harvested {tokens.shape[0]} sequences in {time.time() - t0:.0f}s", flush=True)
    return acts[hook]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/sae_real")
    ap.add_argument("--layer", type=int, default=15)
    ap.add_argument("--n-train-seqs", type=int, default=7600)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--expansion", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--ce-seqs", type=int, default=16)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    lm = load("smollm2-135m")
    hook = f"blocks.{args.layer}.hook_resid_post"
    bos = lm.tokenizer.eos_token_id  # SmolLM2's tokenizer adds no BOS; <|endoftext|> starts docs
    corpus = load_corpus("kjv")
    seqs = pack_tokens(corpus, lm.tokenizer, 128, bos="each", bos_token_id=bos)
    g = torch.Generator().manual_seed(0)
    seqs = seqs[torch.randperm(seqs.shape[0], generator=g)]
    n_hold = 64
    train_seqs = seqs[: min(args.n_train_seqs, seqs.shape[0] - n_hold)]
    held_seqs = seqs[-n_hold:]
    acts_path = out / "acts.pt"
    t0 = time.time()
    acts = harvest_tokens(lm, hook, train_seqs, bos)
    held = harvest_tokens(lm, hook, held_seqs, bos)
    t_harvest = time.time() - t0
    print(f"harvested {acts.shape[0]} train + {held.shape[0]} held-out tokens in {t_harvest:.0f}s")
    del acts_path

    d = lm.d_model
    n = acts.shape[0]
    steps = n // args.batch_size
    cfg = SAEConfig("topk", d, args.expansion * d, k=args.k, hook=hook, model=lm.name,
                    context_length=128, seed=0)
    tcfg = TrainerConfig(total_steps=steps, lr=4e-4 * (2 ** 14 / (args.expansion * d)) ** 0.5,
                         lr_warmup_steps=20, mixed_precision="bf16", log_every_steps=25,
                         log_path=str(out / "train_log.jsonl"), dead_window_tokens=100_000,
                         progress=True, checkpoint_dir=str(out / "ckpt"),
                         checkpoint_every_steps=50)

    def batches():
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(1))
        for s in range(steps):
            yield acts[perm[s * args.batch_size:(s + 1) * args.batch_size]].float()

    t0 = time.time()
    trainer = SAETrainer([cfg], tcfg).fit(batches())
    t_train = time.time() - t0
    sae = trainer.finalized_saes()[0]
    save_sae(sae, out / "sae")
    rec = evaluate_reconstruction(sae, held.float().split(4096))
    ce_seqs = pack_tokens(corpus.documents[-60:], lm.tokenizer, 512, bos="each",
                          bos_token_id=bos, max_sequences=args.ce_seqs)
    t0 = time.time()
    ce = ce_loss_recovered(lm, sae, hook, ce_seqs, context_lengths=[128, 512], batch_size=4,
                           bos_token_id=bos)
    t_ce = time.time() - t0
    dash = feature_dashboards(lm, sae, hook, held_seqs[:48], n_features=12, bos_token_id=bos)
    render_dashboard(dash, out / "dashboard.html")
    result = {
        "model": lm.name, "hook": hook, "corpus": corpus.identity(),
        "train_tokens": n, "held_out_tokens": int(held.shape[0]), "steps": trainer.step,
        "sae": sae.config.to_dict(), "trainer": {k: v for k, v in vars(tcfg).items()},
        "held_out_reconstruction": rec.to_dict(), "ce": ce.to_dict(),
        "seconds": {"harvest": t_harvest, "train": t_train, "ce_eval": t_ce},
        "torch_threads": torch.get_num_threads(),
    }
    (out / "result.json").write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps({"fve": rec.fraction_of_variance_explained, "l0": rec.l0,
                      "alive": rec.fraction_alive,
                      "ce": [(r.context_length, r.loss_recovered_vs_zero, r.clean_loss, r.sae_loss)
                             for r in ce.results]}, indent=1))


if __name__ == "__main__":
    main()
