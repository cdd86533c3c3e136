"""The real run recorded in docs/benchmarks.md: an SAE on ~1M tokens of the embedded model.

SmolLM2-135M (embedded GGUF), residual stream after block 15, King James Bible corpus packed into
128-token sequences. SmolLM2's tokenizer adds no BOS; each sequence starts with the tokenizer's
end-of-sequence token ``<|im_end|>`` (id 2) as its start marker. Excluded positions follow the
default :class:`ExclusionRule` (position 0, and tokens with a norm above 10 × the median of their
batch of 4096 rows): never trained on, not patched in CE evaluation, not in the headline metrics.
TopK SAE, k = 32, width 8 × 576. Reports held-out reconstruction on ordinary tokens (headline) and
on all tokens, the measured norms, CE loss recovered vs mean ablation / CE increase / KL at context
lengths 128 and 512, and writes a feature dashboard.

    flock /tmp/interplab-heavy.lock nice -n 10 python bench/sae_real_run.py --out /tmp/sae_real
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from interplab.activations.exclusion import ExclusionRule
from interplab.datasets.corpus import load_corpus, pack_tokens
from interplab.models import load
from interplab.report.sae_dashboard import render_dashboard
from interplab.sae import SAEConfig, SAETrainer, TrainerConfig, save_sae
from interplab.sae.ce_eval import ce_loss_recovered
from interplab.sae.dashboard import feature_dashboards
from interplab.sae.evaluate import evaluate_reconstruction_split

ROWS = 4096  # the "batch" whose median norm the exclusion rule compares against


def harvest_tokens(lm, hook, tokens, batch_size=16):
    """Activations at ``hook`` for every position, and each row's position (bf16 rows)."""
    from interplab.activations import Positions
    from interplab.activations import harvest_tokens as harvest

    t0 = time.time()
    acts = harvest(lm, tokens.tolist(), hook, Positions.parse("all"), batch_size=batch_size,
                   dtype=torch.bfloat16, compute_dtype=torch.bfloat16, progress=True)
    print(f"harvested {tokens.shape[0]} sequences in {time.time() - t0:.0f}s", flush=True)
    return acts[hook], acts.position


def ordinary_rows(acts, position, rule):
    """Boolean mask of the rows ``rule`` keeps, judged batch by batch of ``ROWS`` rows."""
    return torch.cat([rule.keep_mask(a.float(), p)
                      for a, p in zip(acts.split(ROWS), position.split(ROWS), strict=True)])


def norm_summary(acts, position, keep):
    """Measured L2 norms: position 0, the excluded rows, the ordinary rows."""
    norms = torch.cat([a.float().norm(dim=-1) for a in acts.split(ROWS)])

    def stats(v):
        q = torch.quantile(v.double(), torch.tensor([0.5, 0.99], dtype=torch.float64))
        return {"n": int(v.numel()), "median": float(q[0]), "p99": float(q[1]),
                "max": float(v.max())}

    by_pos = {int(p): int(((position == p) & ~keep).sum()) for p in position[~keep].unique()}
    return {"position_0": stats(norms[position == 0]), "ordinary": stats(norms[keep]),
            "excluded": stats(norms[~keep]), "all": stats(norms),
            "excluded_by_position": by_pos}


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
    bos = lm.tokenizer.eos_token_id  # SmolLM2's tokenizer adds no BOS; <|im_end|> starts each
    rule = ExclusionRule()
    corpus = load_corpus("kjv")
    # The last 60 chapters are never trained on: the CE evaluation reads them.
    seqs = pack_tokens(corpus.documents[:-60], lm.tokenizer, 128, bos="each", bos_token_id=bos)
    g = torch.Generator().manual_seed(0)
    seqs = seqs[torch.randperm(seqs.shape[0], generator=g)]
    n_hold = 64
    train_seqs = seqs[: min(args.n_train_seqs, seqs.shape[0] - n_hold)]
    held_seqs = seqs[-n_hold:]
    t0 = time.time()
    acts, pos = harvest_tokens(lm, hook, train_seqs)
    held, held_pos = harvest_tokens(lm, hook, held_seqs)
    t_harvest = time.time() - t0
    print(f"harvested {acts.shape[0]} train + {held.shape[0]} held-out tokens in {t_harvest:.0f}s")
    keep = ordinary_rows(acts, pos, rule)
    norms = norm_summary(acts, pos, keep)
    print(json.dumps(norms), flush=True)
    ordinary = keep.nonzero().squeeze(-1)

    d = lm.d_model
    n = int(ordinary.numel())
    steps = n // args.batch_size
    cfg = SAEConfig("topk", d, args.expansion * d, k=args.k, hook=hook, model=lm.name,
                    context_length=128, seed=0, exclusion=rule.to_dict())
    tcfg = TrainerConfig(total_steps=steps, lr=4e-4 * (2 ** 14 / (args.expansion * d)) ** 0.5,
                         lr_warmup_steps=20, mixed_precision="bf16", log_every_steps=25,
                         log_path=str(out / "train_log.jsonl"), dead_window_tokens=100_000,
                         progress=True, checkpoint_dir=str(out / "ckpt"),
                         checkpoint_every_steps=50)

    def batches():
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(1))
        for s in range(steps):
            yield acts[ordinary[perm[s * args.batch_size:(s + 1) * args.batch_size]]].float()

    t0 = time.time()
    trainer = SAETrainer([cfg], tcfg).fit(batches())
    t_train = time.time() - t0
    sae = trainer.finalized_saes()[0]
    save_sae(sae, out / "sae")
    rec = evaluate_reconstruction_split(
        sae, zip(held.float().split(ROWS), held_pos.split(ROWS), strict=True), rule)
    ce_seqs = pack_tokens(corpus.documents[-60:], lm.tokenizer, 512, bos="each",
                          bos_token_id=bos, max_sequences=args.ce_seqs)
    t0 = time.time()
    ce = ce_loss_recovered(lm, sae, hook, ce_seqs, context_lengths=[128, 512], batch_size=4,
                           bos_token_id=bos, exclusion=rule)
    t_ce = time.time() - t0
    dash = feature_dashboards(lm, sae, hook, held_seqs[:48], n_features=12, bos_token_id=bos)
    render_dashboard(dash, out / "dashboard.html")
    result = {
        "model": lm.name, "hook": hook, "corpus": corpus.identity(),
        "start_marker": {"id": bos, "token": lm.tokenizer.convert_ids_to_tokens(bos)},
        "exclusion": rule.to_dict(),
        "train_tokens": n, "train_tokens_seen": int(acts.shape[0]),
        "train_tokens_excluded": int(acts.shape[0]) - n, "train_norms": norms,
        "held_out_tokens": int(held.shape[0]), "steps": trainer.step,
        "input_scale": {"scale": trainer.scale, "estimated_on_tokens": trainer.scale_tokens},
        "sae": sae.config.to_dict(), "trainer": {k: v for k, v in vars(tcfg).items()},
        "held_out_reconstruction": rec.to_dict(), "ce": ce.to_dict(),
        "seconds": {"harvest": t_harvest, "train": t_train, "ce_eval": t_ce},
        "torch_threads": torch.get_num_threads(),
    }
    (out / "result.json").write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps({"fve_ordinary": rec.ordinary.fraction_of_variance_explained,
                      "fve_all": rec.all_tokens.fraction_of_variance_explained,
                      "l0": rec.ordinary.l0, "alive": rec.ordinary.fraction_alive,
                      "scale": trainer.scale,
                      "ce": [(r.context_length, r.loss_recovered_vs_mean, r.ce_increase, r.kl_sae,
                              r.loss_recovered_vs_zero) for r in ce.results]}, indent=1))


if __name__ == "__main__":
    main()
