"""The circuit study: a sparse feature circuit for city → country recall, and how far attribution
patching and integrated gradients agree with exact patching across SAE architectures.

Data flow: the ``cities`` dataset (balanced subsample, entity split: no city on two sides) →
prompts "The city of {city} is in the country of", clean/corrupted pairs of one token length
from the training split, held-out prompts from the test split → SAEs at a few residual hooks
(loaded from ``--sae-paths`` or trained on the packaged corpus and cached,
:mod:`interplab.sae.cache`) spliced in with error nodes → attribution of the metric (clean
country's logit minus the corrupted one's) to every latent × position and error node: AtP, IG
and exact patching of a sample (:func:`interplab.circuits.attribute.attribute_latents`) → node
scores (summed over positions) → circuits of growing size, their faithfulness and completeness
on the held-out prompts under mean ablation, beside random circuits of the same size → the
reported circuit with its AtP edges and the cards of its top latents → the AtP-vs-IG(k)
measurement per SAE architecture at one hook → :class:`CircuitResult`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from interplab.activations import harvest
from interplab.circuits.attribute import (
    agreement_intervals,
    attribute_latents,
    node_values,
    reference_values,
)
from interplab.circuits.cards import latent_cards
from interplab.circuits.circuit import (
    alive_latents,
    edges,
    faithfulness_curve,
    select,
    thresholds_for_sizes,
    top_nodes,
)
from interplab.circuits.config import load_or_train
from interplab.circuits.splice import SaeSet, sae_set
from interplab.circuits.tasks import RecallPairs, city_facts_of, city_recall, common_length
from interplab.datasets import entity_split, load_dataset
from interplab.errors import InterplabError
from interplab.interventions.prompts import as_prompts
from interplab.models import LanguageModel, load
from interplab.studies.circuit.config import METHODS, CircuitConfig, CircuitResult
from interplab.study.result import versions
from interplab.threads import limit_threads, resolve_threads


# ---------------------------------------------------------------------------------- pieces
def _task(lm: LanguageModel, cfg: CircuitConfig
          ) -> tuple[RecallPairs, RecallPairs, dict[str, Any]]:
    ds = load_dataset("cities", seed=cfg.run.seed)
    if cfg.data.max_per_dataset and cfg.data.max_per_dataset < len(ds):
        ds = ds.balanced_subsample(cfg.data.max_per_dataset, seed=cfg.run.seed)
    split = entity_split(ds, tuple(cfg.data.split), seed=cfg.run.seed)
    train, test = city_facts_of(ds, split.train), city_facts_of(ds, split.test)
    length = common_length(lm, train + test)
    pairs = city_recall(lm, train, max(cfg.n_pairs, cfg.compare_pairs), length, cfg.run.seed)
    held = city_recall(lm, test, cfg.n_heldout, length, cfg.run.seed + 1)
    info = {"dataset": "cities", "split_rule": split.rule, "prompt_tokens": length,
            "train_facts": len(train), "test_facts": len(test), "pairs": pairs.to_dict(),
            "held_out": held.to_dict(),
            "example": {"clean": pairs.clean[0], "corrupted": pairs.corrupted[0]}}
    return pairs, held, info


def _subset(pairs: RecallPairs, n: int) -> RecallPairs:
    return RecallPairs(pairs.clean[:n], pairs.corrupted[:n], pairs.answer[:n], pairs.wrong[:n],
                       pairs.facts[:n])


def _cards(lm: LanguageModel, saes: SaeSet, cfg: CircuitConfig, top: list[dict[str, Any]]
           ) -> list[dict[str, Any]]:
    """Dashboard cards (max-activating held-out corpus contexts, promoted tokens) of ``top``."""
    by_hook: dict[str, list[int]] = {}
    for row in top:
        by_hook.setdefault(row["hook"], []).append(int(row["latent"]))
    out = latent_cards(lm, saes, cfg.sae.corpus_data(), by_hook, n_texts=64, n_contexts=4,
                       window=6, n_logits=6, batch_size=cfg.run.batch_size)
    for card in out:
        card["score"] = next(r["score"] for r in top
                             if r["hook"] == card["hook"] and r["latent"] == card["index"])
    out.sort(key=lambda c: -abs(c["score"]))
    return out


def _comparison(lm: LanguageModel, cfg: CircuitConfig, saes_by: dict, hooks: list[str],
                pairs: RecallPairs, say: Callable[[str], None] = print) -> dict[str, Any]:
    """AtP and IG(k) against exact patching, per architecture: latents of the SAE at the
    measurement hook (error nodes recomputed: its encoder is off the path), and latents of the
    hook before it with the measured SAE downstream and its error node frozen (its encoder, and
    its jumps, on the path)."""

    if not cfg.compare:
        return {}
    layer = cfg.compare_layer if cfg.compare_layer is not None else sorted(cfg.layers)[
        len(cfg.layers) // 2]
    hook = f"blocks.{layer}.hook_resid_post"
    up = [h for h in hooks if lm.parse_hook(h).layer < layer]
    sub = _subset(pairs, cfg.compare_pairs)
    metric = sub.metric()
    rows: list[dict[str, Any]] = []
    for arch in cfg.compare:
        setups = [("own latents, errors recomputed", {hook: saes_by[(hook, arch)]}, hook,
                   "recompute")]
        if up:
            setups.append(("upstream latents, downstream errors frozen",
                           {up[-1]: saes_by[(up[-1], cfg.sae.sae_architecture)],
                            hook: saes_by[(hook, arch)]}, up[-1], "frozen"))
        for name, saes, target, errors in setups:
            S = sae_set(lm, saes)
            t0 = time.perf_counter()
            first = attribute_latents(
                lm, S, sub.clean, sub.corrupted, metric, direction=cfg.direction, errors=errors,
                positions="all", methods=("atp", "ig"), ig_steps=cfg.compare_steps[0],
                n_exact=cfg.n_exact, attributed=[target], n_boot=cfg.run.n_boot,
                batch_size=cfg.run.batch_size, seed=cfg.run.seed)
            ig = {cfg.compare_steps[0]: first.agreement["ig"]}
            cost = {"atp": first.cost["atp"], f"ig{cfg.compare_steps[0]}": first.cost["ig"]}
            for k in cfg.compare_steps[1:]:
                r = attribute_latents(
                    lm, S, sub.clean, sub.corrupted, metric, direction=cfg.direction,
                    errors=errors, positions="all", methods=("ig",), ig_steps=k,
                    nodes=first.exact_nodes, attributed=[target], with_exact=False,
                    batch_size=cfg.run.batch_size, seed=cfg.run.seed)
                est = np.stack([r.estimates["ig"][h][:, p, i] for h, i, p in first.exact_nodes],
                               axis=1)
                ig[k] = agreement_intervals(est, first.exact, 5, n_boot=cfg.run.n_boot,
                                            seed=cfg.run.seed)
                cost[f"ig{k}"] = r.cost["ig"]
            l0 = float((S.encode(hook, _sample_x(lm, hook, sub)) > 0).float().sum(-1).mean())
            rows.append({"architecture": arch, "setup": name, "errors": errors,
                         "hook": target, "downstream": hook if errors == "frozen" else None,
                         "atp": first.agreement["atp"], "ig": {str(k): v for k, v in ig.items()},
                         "cost": cost, "n_nodes": len(first.exact_nodes),
                         "exact_mean_abs": float(np.abs(first.exact.mean(0)).mean()),
                         "l0_on_prompts": l0, "seconds": time.perf_counter() - t0})
            say(f"AtP vs IG, {arch}, {name}: {rows[-1]['seconds']:.0f} s")
    return {"hook": hook, "upstream": up[-1] if up else None, "steps": cfg.compare_steps,
            "n_pairs": len(sub), "rows": rows}


def _sample_x(lm: LanguageModel, hook: str, pairs: RecallPairs) -> torch.Tensor:
    acts = harvest(lm, pairs.clean, [hook], "all", progress=False)
    keep = acts.position != 0
    return acts[hook][keep].float()


def _printer(progress: bool) -> Callable[[str], None]:
    """Progress lines on stderr (nothing with ``progress=False``)."""
    if not progress:
        return lambda message: None

    console = Console(stderr=True)
    return lambda message: console.print(message, highlight=False)


# ---------------------------------------------------------------------------------- summary
def _fmt_ci(v: float, lo: float, hi: float, nd: int = 2) -> str:
    return f"{v:.{nd}f} [{lo:.{nd}f}, {hi:.{nd}f}]"


def _summary(curve: dict, j: int, attribution: dict, comparison: dict, saes: dict,
             circuit: dict) -> list[str]:
    """3–5 findings graded against the study's controls: the behaviour the circuit should
    explain (the gate: a gap whose interval includes 0 leaves nothing to explain), the circuit's
    faithfulness and completeness against same-size random circuits (explained by them when the
    intervals overlap), attribution against exact patching, and where the SAEs came from."""
    f, c, r, gap = curve["faithfulness"], curve["completeness"], curve["random"], curve["gap"]
    gate = gap["lo"] > 0 or gap["hi"] < 0
    out = [f"The behaviour (mean clean − corrupted country logit gap kept by the full model over "
           f"all-ablated) is {gap['mean']:+.2f} [{gap['lo']:+.2f}, {gap['hi']:+.2f}]"
           + (": the model does the task, so a circuit can explain it." if gate else
              ": its interval includes 0, so there is no behaviour for a circuit to explain and "
              "the faithfulness below is not read as a finding.")]
    beyond = f["lo"][j] > r["hi"][j]
    out.append(f"A circuit of {curve['sizes'][j]} nodes ({curve['n_latents'][j]} latents and "
               f"{curve['sizes'][j] - curve['n_latents'][j]} error nodes) has faithfulness "
               f"{_fmt_ci(f['value'][j], f['lo'][j], f['hi'][j])} on {curve['n_prompts']} "
               f"held-out prompts; random circuits of the same latent count (same error nodes) "
               f"reach {r['mean'][j]:.2f} [{r['lo'][j]:.2f}, {r['hi'][j]:.2f}]: "
               + ("beyond the random-circuit control" if beyond else
                  "explained by the random-circuit control (the intervals overlap)")
               + f". Completeness: ablating the circuit leaves "
               f"{_fmt_ci(c['value'][j], c['lo'][j], c['hi'][j])} of the behaviour (0 = the "
               "circuit carries all of it).")
    ag = attribution["agreement"]
    parts = []
    for m in ("atp", "ig"):
        if m in ag and ag[m].get("spearman") is not None:
            a = ag[m]
            parts.append(f"{m.upper() if m == 'ig' else 'AtP'} Spearman {a['spearman']:.2f} "
                         f"[{a.get('spearman_lo') or float('nan'):.2f}, "
                         f"{a.get('spearman_hi') or float('nan'):.2f}]")
    best = []
    for row in (comparison or {}).get("rows", []):
        if row["errors"] != "frozen":
            continue
        atp = row["atp"].get("spearman")
        kmax = str(max(int(k) for k in row["ig"]))
        ig = row["ig"][kmax].get("spearman")
        if atp is not None and ig is not None:
            best.append(f"{row['architecture']} AtP {atp:.2f} vs IG({kmax}) {ig:.2f}")
    if parts or best:
        out.append((("Against exact patching of the sampled nodes: " + "; ".join(parts) + "."
                    if parts else "")
                   + (" Through a downstream SAE with frozen errors (Spearman with exact): "
                      + "; ".join(best) + "." if best else "")).strip())
    out.append(f"SAEs: {saes['trained']} trained now, "
               f"{sum(len(c['saes']) for c in saes['cache']) - saes['trained']} reused from "
               f"{saes.get('cache_dir', 'the given folders')} ({saes['bytes'] / 2**20:.1f} MiB).")
    return out


# ---------------------------------------------------------------------------------- the run
def run_circuit(config: CircuitConfig, out_dir: str | Path | None = None,
                progress: bool = True) -> CircuitResult:
    """Run the circuit study described by ``config`` (SAEs trained for ``--no-sae-cache`` go to
    ``out_dir/saes``)."""

    config.validate()
    out_dir = Path(out_dir) if out_dir is not None else Path("runs/circuit")
    cfg, run = config, config.run
    say = _printer(progress)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    lm = load(run.model, device=run.device)
    bad = [layer for layer in cfg.layers if layer >= lm.n_layers]
    if bad:
        raise InterplabError(f"--layers {bad} are beyond {lm.name}'s {lm.n_layers} blocks")
    hooks = [hp.name for hp in lm.resolve_hooks(
        [f"blocks.{layer}.hook_resid_post" for layer in cfg.layers])]
    pairs, held, task = _task(lm, cfg)
    timings["load_s"] = time.perf_counter() - t0
    threads = resolve_threads(run.threads)
    with limit_threads(threads):
        t = time.perf_counter()
        saes_by, sae_record = load_or_train(lm, hooks, cfg.sae, [cfg.sae.sae_architecture],
                                            run.seed, out_dir, progress)
        if cfg.compare:
            layer = cfg.compare_layer if cfg.compare_layer is not None else sorted(cfg.layers)[
                len(cfg.layers) // 2]
            more, rec2 = load_or_train(lm, [f"blocks.{layer}.hook_resid_post"], cfg.sae,
                                       list(cfg.compare), run.seed, out_dir, progress)
            saes_by.update(more)
            for key in ("cache", "warnings", "loaded"):
                sae_record[key] += rec2[key]
            for key in ("trained", "bytes", "train_seconds"):
                sae_record[key] += rec2[key]
            sae_record.setdefault("cache_dir", rec2.get("cache_dir"))
        timings["saes_s"] = time.perf_counter() - t
        say(f"SAEs ready in {timings['saes_s']:.0f} s ({sae_record['trained']} trained now)")
        saes = sae_set(lm, {h: saes_by[(h, cfg.sae.sae_architecture)] for h in hooks})
        sub = _subset(pairs, cfg.n_pairs)

        t = time.perf_counter()
        attr = attribute_latents(lm, saes, sub.clean, sub.corrupted, sub.metric(),
                                 direction=cfg.direction, positions="all", methods=METHODS,
                                 ig_steps=cfg.ig_steps, n_exact=cfg.n_exact,
                                 n_boot=run.n_boot, batch_size=run.batch_size, seed=run.seed)
        timings["attribute_s"] = time.perf_counter() - t
        say(f"attribution (AtP, IG({cfg.ig_steps}), exact on {len(attr.exact_nodes)} nodes) in "
            f"{timings['attribute_s']:.0f} s")
        scores = attr.node_scores(cfg.node_method)

        t = time.perf_counter()
        reference = sub.clean + sub.corrupted
        means = reference_values(lm, saes, reference, "mean", run.batch_size)
        alive = alive_latents(node_values(lm, saes, as_prompts(lm, sub.clean), run.batch_size),
                              saes)
        sizes = sorted(set(cfg.sizes) | {cfg.circuit_size})
        curve = faithfulness_curve(lm, saes, scores, held.clean, held.metric(), means, alive,
                                   sizes=sizes, n_random=cfg.n_random, n_boot=run.n_boot,
                                   seed=run.seed, batch_size=run.batch_size)
        timings["faithfulness_s"] = time.perf_counter() - t
        say(f"faithfulness curve in {timings['faithfulness_s']:.0f} s")

        t = time.perf_counter()
        size = min(cfg.circuit_size, int(sum((np.abs(v) > 0).sum() for v in scores.values())))
        circuit = select(scores, thresholds_for_sizes(scores, [size])[0])
        e = edges(lm, saes, circuit, sub.clean, sub.corrupted, sub.metric(), attr.offsets,
                  scores, direction=cfg.direction, batch_size=run.batch_size)
        largest = max([float(np.abs(w).max()) for w in e.weights.values() if w.size]
                      + [float(np.abs(e.to_metric).max())], default=0.0)
        edge_dict = e.to_dict(threshold=cfg.edge_threshold * largest)
        timings["edges_s"] = time.perf_counter() - t

        t = time.perf_counter()
        top = top_nodes(attr, circuit, cfg.node_method, cfg.n_cards)
        cards = _cards(lm, saes, cfg, top)
        timings["cards_s"] = time.perf_counter() - t

        t = time.perf_counter()
        comparison = _comparison(lm, cfg, saes_by, hooks, pairs, say)
        timings["compare_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0

    curve_d = curve.to_dict()
    j = curve_d["circuits"].index(next(c for c in curve_d["circuits"]
                                       if c["size"] >= circuit.size))
    node_rows = []
    for h, v in circuit.nodes.items():
        width = saes.width(h)
        for i in v:
            s_atp = attr.node_scores("atp")[h][width if i < 0 else i]
            node_rows.append({"hook": h, "latent": "error" if i < 0 else int(i),
                              "score": float(scores[h][width if i < 0 else i]),
                              "atp": float(s_atp)})
    circuit_d = {**circuit.to_dict(), "method": cfg.node_method, "rows": node_rows,
                 "faithfulness_index": j}
    attr_d = attr.summary(top=20)
    notes = [f"Nodes are latents (and error nodes) summed over the {len(attr.offsets)} attributed "
             "positions (every token but position 0); mean ablation replaces a node by its mean "
             f"over the ordinary tokens of the {len(reference)} attribution prompts (clean and "
             f"corrupted; {saes.exclusion.describe()} left out, and never ablated).",
             "Random circuits draw the same number of latents per hook from the latents that "
             "fire on the attribution prompts, and keep the same error nodes.",
             "The exactly patched nodes are a third the largest by each method and the rest "
             "drawn at random among nodes with a non-zero estimate; agreement is computed on "
             "them."]
    notes += sae_record["warnings"]
    result = CircuitResult(
        config=asdict(config), versions=versions(), model=lm.identity(), task=task,
        saes=sae_record, attribution=attr_d, curve=curve_d, circuit=circuit_d, edges=edge_dict,
        cards=cards, comparison=comparison, summary=[], notes=notes, timings=timings)
    result.summary = _summary(curve_d, j, attr_d, comparison, sae_record, circuit_d)
    return result


def run_circuit_into(config: CircuitConfig, out: Path, progress: bool) -> CircuitResult:
    """The registry's entry point: run into the output folder."""
    return run_circuit(config, out_dir=out, progress=progress)
