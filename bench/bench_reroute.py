"""Cost of the rerouting study's parts in forward-pass equivalents (results in docs/reroute.md).

Every figure is a ratio of wall times measured in one process on the same requests, each part
interleaved with its reference (repetitions alternate part and reference, so a change in the
machine's load hits both alike; the median of the per-pair ratios is reported). The reference is
one forward pass of the full model (all blocks, final norm and vocabulary projection) over the
same batch of requests: "cost 12 FPE" means as long as 12 such passes.

- one training step of RR and of LoRA + probe (``train_batch`` unwanted + as many acceptable
  requests + ``neutral_batch`` neutral chunks), against a full forward over that step's texts;
- fitting HP on pooled activations (after the pass that reads them), against a full forward of
  the training requests;
- one step of the input-embedding attack and one position of the token attack (every candidate
  tried), on ``attack_examples`` requests, per defence, against a full forward of those requests.

The counts of block-token passes the study records (``cost`` in its result) are printed beside
the measured ratios.

    PYTHONPATH=src python bench/bench_reroute.py --model smollm2-135m --out docs/bench_reroute.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch


def _median_ratio(part, reference, reps: int) -> float:
    ratios = []
    for k in range(reps):
        first, second = (part, reference) if k % 2 == 0 else (reference, part)
        t = time.perf_counter()
        first()
        a = time.perf_counter() - t
        t = time.perf_counter()
        second()
        b = time.perf_counter() - t
        ratios.append(a / b if first is part else b / a)
    return float(statistics.median(ratios))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny-llama")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from interplab.datasets import entity_split
    from interplab.defences.attacks import candidate_tokens, embedding_attack, token_attack
    from interplab.defences.detectors import LoraProbeDetector, RerouteDetector
    from interplab.defences.heads import fit_probe, pooled_features
    from interplab.defences.inputs import COST, final_logits, pack
    from interplab.defences.lora import AdapterHost
    from interplab.defences.settings import (
        CANDIDATE_WORDS,
        AdapterSettings,
        AttackSettings,
        TrainSettings,
    )
    from interplab.defences.train import BaseCache, TrainTexts, train_adapter
    from interplab.models import load
    from interplab.studies.reroute.config import RerouteConfig
    from interplab.studies.reroute.run import load_requests, neutral_chunks, target_layers

    cfg = RerouteConfig.make(model=args.model)
    lm = load(cfg.run.model)
    ds = load_requests(cfg)
    split = entity_split(ds, tuple(cfg.data.split), seed=0)
    tokens = lm.tokenize(ds.statements)
    y = np.asarray(ds.labels)
    layers = target_layers(cfg, lm.n_layers)
    head = max(layers)
    tr = split.train
    neutral, _ = neutral_chunks(lm, cfg)
    texts = TrainTexts([tokens[i] for i in tr if y[i]], [tokens[i] for i in tr if not y[i]],
                       neutral)
    a, ts = AdapterSettings(), TrainSettings()
    host = AdapterHost(lm, layers, a.rank, a.lora_alpha)
    cache = BaseCache(host, texts, layers, head)
    host.add("rr", 0)
    host.add("lp", 0)

    def full(lists):
        def run():
            with torch.no_grad(), host.disabled():
                final_logits(lm, pack(lm, lists))
        return run

    step_texts = (texts.unwanted[:ts.train_batch] + texts.acceptable[:ts.train_batch])
    neutral_texts = texts.neutral[:ts.neutral_batch]

    def full_step():
        full(step_texts)()
        if neutral_texts:
            full(neutral_texts)()

    out: dict = {"model": args.model, "layers": layers, "threads": args.threads,
                 "load_avg_before": os.getloadavg()[0], "fpe": {}}
    one_step = TrainSettings(steps=1, lr=ts.lr, train_batch=ts.train_batch,
                             neutral_batch=ts.neutral_batch)
    outcomes = {}
    for kind in ("rr", "lp"):
        def step(kind=kind):
            outcomes[kind] = train_adapter(host, kind, kind, texts, cache, layers=layers,
                                           head_layer=head, settings=one_step, seed=0)
        out["fpe"][f"training step, {kind}"] = _median_ratio(step, full_step, args.reps)
    train_lists = [tokens[i] for i in tr]

    def hp_fit():
        with host.disabled():
            X = pooled_features(lm, train_lists, [head])[("mean", head)]
        fit_probe(X, y[tr], name="hp", layer=head, pooling="mean")

    out["fpe"]["HP: read and fit on the training split"] = _median_ratio(
        hp_fit, full(train_lists), max(3, args.reps // 2))
    with host.disabled():
        X = pooled_features(lm, train_lists, [head])[("mean", head)]
    hp = fit_probe(X, y[tr], name="hp", layer=head, pooling="mean")
    n_ad = host.n_parameters("rr")
    rr = RerouteDetector(name="rr", adapter="rr", layers=layers, n_adapter_parameters=n_ad)
    o = outcomes["lp"]
    lp = LoraProbeDetector(name="lp", adapter="lp", layer=head, scale=o.head_scale,
                           w=o.head_w.detach(), b=o.head_b.detach(), n_adapter_parameters=n_ad)
    att = AttackSettings()
    victims = [tokens[i] for i in split.test if y[i]][:att.attack_examples]
    cands = candidate_tokens(lm, CANDIDATE_WORDS, att.token_candidates)
    for det in (hp, rr, lp):
        out["fpe"][f"embedding attack, one step, {det.name}"] = _median_ratio(
            lambda det=det: embedding_attack(host, det, victims, steps=1, norm=att.embed_norm,
                                             budgets=[1]), full(victims), args.reps)
        out["fpe"][f"token attack, one position, {det.name}"] = _median_ratio(
            lambda det=det: token_attack(host, det, victims, candidates=cands, n_tokens=1),
            full(victims), args.reps)
    COST.reset()
    train_adapter(host, "rr", "rr", texts, cache, layers=layers, head_layer=head,
                  settings=one_step, seed=0)
    unit = lm.n_layers * float(np.mean([len(t) for t in step_texts + neutral_texts]))
    out["counted_fpe_per_rr_step_per_text"] = (COST.forward + 2 * COST.backward) / unit / len(
        step_texts + neutral_texts)
    out["load_avg_after"] = os.getloadavg()[0]
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
