"""HTML page of the rerouting study: the answer in bullets, the headline figure (detection and
attack success per defence, with intervals), the RR vs LoRA + probe table, every defence's
numbers, every comparison, the controls, training curves, costs and the method. Reads a
:class:`~interplab.studies.reroute.config.RerouteResult` (or its JSON dict); computes nothing
new."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from interplab.report.html import figure_png, new_figure, plain_text, render

ORDER = ("hp", "hp_last", "hp_mlp", "rr", "rr_output", "lp")
COLOURS = {"hp": "#4c72b0", "hp_last": "#8da0cb", "hp_mlp": "#55a868", "rr": "#c44e52",
           "rr_output": "#e7969c", "lp": "#8172b2"}
PCT = {"flag_rate", "embed_pass", "token_pass", "recall"}


def _as_dict(result: Any) -> dict[str, Any]:
    from dataclasses import asdict, is_dataclass

    return asdict(result) if is_dataclass(result) else result


def _bars(ax: Any, r: dict, metric: str, title: str) -> None:
    keys = [k for k in ORDER if metric in r["defences"][k]]
    vals = [r["defences"][k][metric] for k in keys]
    x = np.arange(len(keys))
    v = np.array([e["value"] for e in vals])
    err = np.array([[e["value"] - e["lo"] for e in vals], [e["hi"] - e["value"] for e in vals]])
    ax.bar(x, v, yerr=np.clip(err, 0, None), color=[COLOURS[k] for k in keys], capsize=3)
    for i, k in enumerate(keys):
        seeds = r["defences"][k][metric].get("per_seed") or []
        ax.plot([i] * len(seeds), seeds, "k.", ms=3)
    ax.set_xticks(x, [plain_text(r["defences"][k]["label"]) for k in keys], rotation=35, ha="right",
                  fontsize=7)
    ax.set_ylim(0, 1.05)
    if metric == "auroc":
        ax.axhline(0.5, color="k", lw=0.6, ls=":")
    ax.set_title(title, fontsize=9)


def figure_headline(r: dict[str, Any]) -> str:
    """Test AUROC and TPR at 1 % FPR per defence (bars: 95 % intervals over requests and seeds;
    dots: seeds), and attack success against budget."""
    fig, axes = new_figure((13, 3.4), 1, 4)
    _bars(axes[0], r, "auroc", "test AUROC")
    _bars(axes[1], r, "tpr_1pct", "TPR at 1 % FPR")
    for ax, kind, xlabel in ((axes[2], "embed", "embedding-attack steps"),
                             (axes[3], "token", "tokens added")):
        for k in ORDER:
            curve = r["defences"][k].get("attack_curves", {}).get(kind)
            if not curve:
                continue
            b = curve["budgets"]
            v = [e["value"] for e in curve["pass_rate"]]
            lo = [e["lo"] for e in curve["pass_rate"]]
            hi = [e["hi"] for e in curve["pass_rate"]]
            ax.plot(b, v, "o-", ms=3, color=COLOURS[k], label=plain_text(r["defences"][k]["label"]))
            ax.fill_between(b, lo, hi, color=COLOURS[k], alpha=0.15)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_title("unwanted requests passing", fontsize=9)
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    return figure_png(fig)


def figure_training(r: dict[str, Any]) -> str:
    """Main and retain loss per step, every seed."""
    fig, axes = new_figure((10, 2.8), 1, 2)
    for kind, colour in (("rr", COLOURS["rr"]), ("lp", COLOURS["lp"])):
        for i, hist in enumerate(r["training"]["history"][kind]):
            steps = [h["step"] for h in hist]
            label = plain_text(r["defences"][kind]["label"]) if i == 0 else None
            axes[0].plot(steps, [h["main"] for h in hist], color=colour, lw=0.8, label=label)
            axes[1].plot(steps, [h["retain"] for h in hist], color=colour, lw=0.8, label=label)
    axes[0].set_title("main loss (RR: ReLU cos; LoRA + probe: cross-entropy)", fontsize=9)
    axes[1].set_title("retain loss ‖h − h₀‖ / mean ‖h₀‖", fontsize=9)
    for ax in axes:
        ax.set_xlabel("step", fontsize=8)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return figure_png(fig)


def _cell(e: dict[str, Any] | None, metric: str) -> str:
    if not e:
        return "–"
    if metric in PCT:
        return f"{100 * e['value']:.0f}% [{100 * e['lo']:.0f}, {100 * e['hi']:.0f}]"
    nd = 4 if metric in ("delta_ce", "kl") else 3
    return f"{e['value']:.{nd}f} [{e['lo']:.{nd}f}, {e['hi']:.{nd}f}]"


def _rows(r: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    from interplab.studies.reroute.stats import fmt_p

    labels = {k: d["label"] for k, d in r["defences"].items()}
    comps = []
    for c in r["comparisons"]:
        d = c["difference"]
        pct = c["metric"] in PCT
        diff = (f"{100 * d['value']:+.0f} [{100 * d['lo']:+.0f}, {100 * d['hi']:+.0f}] points"
                if pct else f"{d['value']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]")
        verdict = c["verdict"]
        if verdict != "not distinguishable from zero":
            verdict = f"{labels[verdict.split()[0]]} better"
        comps.append({"a": labels[c["a"]], "b": labels[c["b"]], "label": c["label"],
                      "a_value": _cell({"value": c["a_value"], "lo": c["a_value"],
                                        "hi": c["a_value"]}, c["metric"]).split(" [")[0],
                      "b_value": _cell({"value": c["b_value"], "lo": c["b_value"],
                                        "hi": c["b_value"]}, c["metric"]).split(" [")[0],
                      "diff": diff, "p": fmt_p(c["p"], c["p_floor"]).removeprefix("p "),
                      "q": "n/a" if c["q"] != c["q"] else f"{c['q']:.2g}", "verdict": verdict,
                      "headline": (c["a"], c["b"]) == ("rr", "lp")})
    defs = []
    for k in ORDER:
        d = r["defences"][k]
        defs.append({"label": d["label"], "parameters": d["parameters"],
                     **{m: _cell(d.get(m), m) for m in ("auroc", "tpr_1pct", "recall",
                                                        "flag_rate", "embed_pass", "token_pass",
                                                        "delta_ce", "kl")},
                     "per_seed": ", ".join(f"{v:.3f}" for v in d["auroc"].get("per_seed", []))})
    return comps, defs


def write_reroute_report(result: Any, path: str | Path) -> Path:
    r = _as_dict(result)
    comps, defs = _rows(r)
    figures = {"headline": figure_headline(r), "training": figure_training(r)}
    controls = [{"name": k.replace("_", " "), "what": v["what"],
                 "auroc": _cell(v["auroc"], "auroc"), "near": v["near_chance"]}
                for k, v in r["controls"].items()]
    return render("reroute.html", path, r=r, figures=figures, comparisons=comps,
                  defences=defs, controls=controls)


def summary_lines(result: Any) -> list[str]:
    """What ``interplab reroute`` prints: the study's summary."""
    return list(_as_dict(result)["summary"])
