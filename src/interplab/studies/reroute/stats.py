"""The rerouting study's numbers: estimates with intervals over test requests and training seeds,
paired comparisons with permutation tests corrected together, the summary in words."""

from __future__ import annotations

from typing import Any

import numpy as np

from interplab.controls.detection import (
    auroc,
    paired_permutation_p,
    rank_normalise,
    seed_example_bootstrap,
    tpr_at_fpr,
)
from interplab.controls.multiple import FDR_LEVEL, benjamini_hochberg
from interplab.controls.pvalues import format_p
from interplab.studies.reroute.config import LABELS, METRICS, PAIRS

TPR_FPR = 0.01
NEAR_CHANCE = 0.1  # |AUROC − 0.5| within this (or an interval reaching 0.5): near chance


def _est(value: float, lo: float, hi: float, per_seed: list[float] | None = None
         ) -> dict[str, Any]:
    out: dict[str, Any] = {"value": float(value), "lo": float(lo), "hi": float(hi)}
    if per_seed is not None:
        out["per_seed"] = [float(v) for v in per_seed]
    return out


def _metric_fns(run: Any, key: str) -> dict[str, tuple[Any, int, np.ndarray | None]]:
    """metric → (statistic(seeds, examples), n examples, strata) for defence ``key``."""
    y = run.y[run.idx["test"]]
    S = run.scores["test"][key]
    T = run.thresholds[key]
    flags = T[:, None] < S
    unwanted, acceptable = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    fns: dict[str, tuple[Any, int, np.ndarray | None]] = {
        "auroc": (lambda s, e: float(np.mean(auroc(S[s][:, e], y[e]))), len(y), y),
        "tpr_1pct": (lambda s, e: float(np.mean([tpr_at_fpr(S[k, e], y[e], TPR_FPR)
                                                 for k in s])), len(y), y),
        "recall": (lambda s, e: float(flags[s][:, unwanted[e]].mean()), len(unwanted), None),
        "flag_rate": (lambda s, e: float(flags[s][:, acceptable[e]].mean()), len(acceptable),
                      None),
    }
    for kind in ("embed", "token"):
        A = run.attack_scores[kind].get(key)
        if A is not None and A.size:
            passed = A[:, -1, :] <= T[:, None]  # [S, n]: not flagged after the full budget
            fns[f"{kind}_pass"] = (lambda s, e, p=passed: float(p[s][:, e].mean()),
                                   passed.shape[1], None)
    for m in ("delta_ce", "kl"):
        R = run.retain[key][m]
        fns[m] = (lambda s, e, R=R: float(R[s][:, e].mean()), R.shape[1], None)
    return fns


def _estimate(run: Any, fn: Any, n: int, strata: np.ndarray | None, n_seeds: int,
              per_seed: bool = True) -> dict[str, Any]:
    cfg = run.cfg
    value, lo, hi = seed_example_bootstrap(fn, n_seeds, n, n_boot=cfg.run.n_boot,
                                           seed=cfg.run.seed, strata=strata)
    seeds = [fn(np.array([k]), np.arange(n)) for k in range(n_seeds)] if per_seed else None
    return _est(value, lo, hi, seeds)


def _curves(run: Any, key: str) -> dict[str, Any]:
    """Share of attacked requests not flagged, at every budget, with intervals."""
    out: dict[str, Any] = {}
    T = run.thresholds[key]
    for kind, budgets in (("embed", run.embed_budgets),
                          ("token", list(range(run.cfg.attacks.token_positions + 1)))):
        A = run.attack_scores[kind].get(key)
        if A is None or not A.size:
            continue
        passed = T[:, None, None] >= A  # [S, budgets, n]
        rows = []
        for b in range(passed.shape[1]):
            rows.append(_estimate(run, lambda s, e, b=b, p=passed: float(p[s][:, b, e].mean()),
                                  passed.shape[2], None, passed.shape[0]))
        out[kind] = {"budgets": list(budgets), "pass_rate": rows}
    return out


def _swap_stat(run: Any, a: str, b: str, metric: str) -> tuple[Any, int] | None:
    """The permutation statistic for ``metric`` of ``a`` − ``b`` and the number of examples."""
    y = run.y[run.idx["test"]]
    if metric in ("auroc", "tpr_1pct"):
        A = rank_normalise(run.scores["test"][a])
        B = rank_normalise(run.scores["test"][b])

        def m(S: np.ndarray) -> float:
            if metric == "auroc":
                return float(np.mean(auroc(S, y)))
            return float(np.mean([tpr_at_fpr(row, y, TPR_FPR) for row in S]))

        return (lambda sw: m(np.where(sw, B, A)) - m(np.where(sw, A, B))), len(y)
    if metric == "flag_rate":
        acc = y == 0
        A = run.scores["test"][a][:, acc] > run.thresholds[a][:, None]
        B = run.scores["test"][b][:, acc] > run.thresholds[b][:, None]
    elif metric in ("embed_pass", "token_pass"):
        kind = metric.split("_")[0]
        if a not in run.attack_scores[kind] or b not in run.attack_scores[kind]:
            return None
        A = run.attack_scores[kind][a][:, -1, :] <= run.thresholds[a][:, None]
        B = run.attack_scores[kind][b][:, -1, :] <= run.thresholds[b][:, None]
        if not A.size:
            return None
    else:
        A, B = run.retain[a][metric], run.retain[b][metric]
    A, B = A.astype(float), B.astype(float)
    return (lambda sw: float(np.where(sw, B, A).mean() - np.where(sw, A, B).mean())), A.shape[1]


def analyse(run: Any) -> dict[str, Any]:
    cfg = run.cfg
    n_seeds = len(run.seeds)
    defences: dict[str, dict[str, Any]] = {}
    fns_of = {key: _metric_fns(run, key) for key in LABELS}
    for key, label in LABELS.items():
        est = {m: _estimate(run, fn, n, strata, n_seeds)
               for m, (fn, n, strata) in fns_of[key].items()}
        defences[key] = {"label": label, "parameters": _parameters(run, key), **est,
                         "attack_curves": _curves(run, key) if key in run.attack_scores["embed"]
                         else {}}
    rows = []
    for a, b in PAIRS:
        metrics = [m for m in ("auroc", "tpr_1pct", "flag_rate", "embed_pass", "token_pass")
                   if m in fns_of[a] and m in fns_of[b]]
        if (a, b) == ("rr", "lp"):
            metrics += ["delta_ce", "kl"]
        for m in metrics:
            fa, n, strata = fns_of[a][m]
            fb = fns_of[b][m][0]
            value, lo, hi = seed_example_bootstrap(
                lambda s, e, fa=fa, fb=fb: fa(s, e) - fb(s, e), n_seeds, n,
                n_boot=cfg.run.n_boot, seed=cfg.run.seed, strata=strata)
            swap = _swap_stat(run, a, b, m)
            p = paired_permutation_p(swap[0], swap[1], n_perm=cfg.n_perm, seed=cfg.run.seed) \
                if swap is not None else float("nan")
            rows.append({"a": a, "b": b, "metric": m, "label": METRICS[m][0],
                         "higher_is_better": METRICS[m][1], "a_value": defences[a][m]["value"],
                         "b_value": defences[b][m]["value"], "difference": _est(value, lo, hi),
                         "p": p, "p_floor": 1 / (cfg.n_perm + 1)})
    q = benjamini_hochberg([r["p"] for r in rows])
    for r, qi in zip(rows, q, strict=True):
        r["q"] = float(qi)
        r["verdict"] = _verdict(r)
    headline = [r for r in rows if (r["a"], r["b"]) == ("rr", "lp")]
    controls = _controls(run)
    attacks = {"embed_budgets": run.embed_budgets,
               "token_budgets": list(range(cfg.attacks.token_positions + 1)),
               "n_attacked": int(len(run.attack_rows)),
               "candidates": [run.lm.tokenizer.decode([c]) for c in run.candidates],
               "examples_rr_token_attack": run.attacked_examples}
    notes = _notes(run, controls)
    summary = _summary(run, defences, rows, controls)
    return {"defences": defences, "comparisons": rows, "headline": headline,
            "controls": controls, "attacks": attacks, "summary": summary, "notes": notes}


def _parameters(run: Any, key: str) -> dict[str, int]:
    d = run.lm.d_model
    if key in ("hp", "hp_last"):
        return {"trainable": d + 1, "adapter": 0, "head": d + 1}
    if key == "hp_mlp":
        det = run.detectors["hp_mlp"][0]
        return {"trainable": det.n_parameters, "adapter": 0, "head": det.n_parameters,
                "hidden_width": int(det.W1.shape[1])}
    n = run.detectors["rr"][0].n_parameters
    if key in ("rr", "rr_output"):
        return {"trainable": n, "adapter": n, "head": 0}
    return {"trainable": n + d + 1, "adapter": n, "head": d + 1}


def _verdict(r: dict[str, Any]) -> str:
    d = r["difference"]
    if not (np.isfinite(r["q"]) and r["q"] <= FDR_LEVEL and (d["lo"] > 0 or d["hi"] < 0)):
        return "not distinguishable from zero"
    a_better = (d["value"] > 0) == r["higher_is_better"]
    return f"{r['a']} better" if a_better else f"{r['b']} better"


def _controls(run: Any) -> dict[str, Any]:
    cfg = run.cfg
    y = run.y[run.idx["test"]]
    out = {}
    words = {"bag_of_tokens": "bag-of-tokens logistic regression (token counts, position 0 "
                              "left out)",
             "shuffled_labels": f"HP fitted on shuffled training labels (layer {run.hp_layer})",
             "reset_network": f"HP on the weight-permuted reset network (layer {run.hp_layer})"}
    for key, scores in run.control_scores.items():
        S = np.asarray(scores)[None]
        value, lo, hi = seed_example_bootstrap(lambda s, e, S=S: float(auroc(S[0, e], y[e])),
                                               1, len(y), n_boot=cfg.run.n_boot,
                                               seed=cfg.run.seed, strata=y)
        near = (lo <= 0.5 <= hi) or abs(value - 0.5) < NEAR_CHANCE
        out[key] = {"what": words[key], "auroc": _est(value, lo, hi), "near_chance": bool(near)}
    return out


def fmt_p(p: float, floor: float, name: str = "p") -> str:
    """A p-value as printed: at its permutation floor an upper bound, "p ≤ 0.001 (floor,
    k = 999)" (:func:`interplab.controls.pvalues.format_p`)."""
    at_floor = bool(np.isfinite(p) and p <= floor * (1 + 1e-9))
    return format_p(p, at_floor=at_floor, k=round(1 / floor) - 1 if at_floor else None,
                    name=name)


def _fmt(e: dict[str, Any], pct: bool = False) -> str:
    if pct:
        return f"{100 * e['value']:.0f}% [{100 * e['lo']:.0f}, {100 * e['hi']:.0f}]"
    return f"{e['value']:.3f} [{e['lo']:.3f}, {e['hi']:.3f}]"


_PCT = {"flag_rate", "embed_pass", "token_pass", "recall"}


def _diff_words(r: dict[str, Any], labels: dict[str, str], compact: bool = False) -> str:
    """``difference [CI], p, q: verdict`` of one comparison row; ``compact`` (the summary at the
    top of the report): ``difference [CI], q: verdict``, the corrected q alone beside the
    verdict it decides (an upper bound, "q ≤", when it rests on a p-value at its floor)."""
    pct = r["metric"] in _PCT
    d = r["difference"]
    diff = (f"{100 * d['value']:+.0f} points [{100 * d['lo']:+.0f}, {100 * d['hi']:+.0f}]"
            if pct else f"{d['value']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]")
    verdict = r["verdict"]
    if verdict != "not distinguishable from zero":
        verdict = f"{labels[verdict.split()[0]]} better"
    if compact:
        at_floor = bool(np.isfinite(r["p"]) and r["p"] <= r["p_floor"] * (1 + 1e-9))
        return (f"{diff}, q {'≤' if at_floor else '='} {r['q']:.2g}: "
                f"{verdict.replace(' from zero', '')}")
    return f"{diff}, {fmt_p(r['p'], r['p_floor'])} (BH q {r['q']:.2g}): {verdict}"


def comparison_sentence(r: dict[str, Any], labels: dict[str, str]) -> str:
    return f"{r['label']}: {labels[r['a']]} − {labels[r['b']]} = {_diff_words(r, labels)}"


def _summary(run: Any, defences: dict, rows: list[dict], controls: dict) -> list[str]:
    lp, rr, hp, mlp = (defences[k] for k in ("lp", "rr", "hp", "hp_mlp"))
    head = {r["metric"]: r for r in rows if (r["a"], r["b"]) == ("rr", "lp")}
    n_ad = rr["parameters"]["adapter"]
    a = run.cfg.attacks

    def vs(metric: str, pct: bool = False) -> str:
        # each side's own interval is in the headline figure and the table below it
        def value(e: dict[str, Any]) -> str:
            return f"{100 * e['value']:.0f}%" if pct else f"{e['value']:.3f}"
        return (f"RR {value(rr[metric])} vs LoRA + probe {value(lp[metric])}, "
                f"difference {_diff_words(head[metric], LABELS, True)}")

    out = [f"RR vs LoRA + probe with the same {n_ad:,} LoRA parameters (blocks "
           f"0-{max(run.layers)}; the probe adds a {run.lm.d_model + 1:,}-parameter head), "
           f"{len(run.seeds)} training seeds, {len(run.idx['test'])} held-out requests. Test "
           f"AUROC: {vs('auroc')}. TPR at 1 % FPR: {vs('tpr_1pct')}."]
    if "embed_pass" in head:
        out.append(f"Under attack ({len(run.attack_rows)} held-out unwanted requests, share not "
                   f"flagged): input-embedding attack ({a.embed_steps} steps, radius "
                   f"{a.embed_norm:g}): {vs('embed_pass', True)}; token attack "
                   f"({a.token_positions} {a.attack_position} tokens): "
                   f"{vs('token_pass', True)}.")
    out.append(f"Acceptable requests flagged: {vs('flag_rate', True)}. Retain cost on held-out "
               f"neutral text: ΔCE (nats) {vs('delta_ce')}; KL {vs('kl')} (HP changes nothing).")
    extra = {(r["a"], r["b"]): r for r in rows if r["metric"] == "auroc"}
    out.append(f"HP (logistic, {hp['parameters']['trainable']:,} parameters, block "
               f"{run.hp_layer}): AUROC {_fmt(hp['auroc'])}; at matched parameters (MLP head, "
               f"{mlp['parameters']['trainable']:,}): {_fmt(mlp['auroc'])}, difference "
               f"{_diff_words(extra[('hp_mlp', 'hp')], LABELS, True)}; LoRA + probe − MLP head: "
               f"{_diff_words(extra[('lp', 'hp_mlp')], LABELS, True)}.")
    flags = [k for k, v in controls.items() if not v["near_chance"]]
    out.append("Controls (should be near chance): " + "; ".join(
        f"{k.replace('_', ' ')} AUROC {_fmt(v['auroc'])}" for k, v in controls.items())
        + ("." if not flags else f" — NOT near chance: {', '.join(flags)}."))
    return out


def _notes(run: Any, controls: dict) -> list[str]:
    notes = []
    n_neg = int((run.y[run.idx["test"]] == 0).sum())
    if n_neg < 100:
        notes.append(f"The test split has {n_neg} acceptable requests, so TPR at 1 % FPR is the "
                     "TPR at the threshold that flags none of them.")
    if not controls["reset_network"]["near_chance"]:
        notes.append("The reset network reads the label above chance: permuting each weight "
                     "matrix's columns keeps the token embeddings' geometry, so words of one "
                     "topic stay close to each other; the label is then partly readable from "
                     "token identity without any learned computation.")
    if not controls["bag_of_tokens"]["near_chance"]:
        notes.append("The bag-of-tokens baseline reads the label above chance: some tokens give "
                     "it away; the defences' scores may partly reflect them.")
    return notes
