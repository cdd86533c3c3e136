"""HTML report of the causal truth study: one self-contained file, figures inline.

Reads a :class:`~interplab.studies.causal.CausalResult` (or its JSON dict). At the top: the
finding, its controls and its uncertainty in a few bullets, then the headline figure (each
probe's dose–response beside its random-direction null and the no-statement control, and the
unsteered true/false scores whose gap gates every claim about truth), then the complete tables.
It computes nothing: every number comes from the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from interplab.report.html import figure_png, new_figure, plain_text, q_text, render


def _as_dict(result: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return result if isinstance(result, dict) else asdict(result)


def _figure_headline(r: dict[str, Any]) -> str:
    steering, task = r["steering"], r["task"]
    fig, (ax2, ax) = new_figure((11.5, 3.6), 1, 2, gridspec_kw={"width_ratios": [1, 1.8]})
    rows = {c["probe"]: c for c in r["comparison"] if c["dataset"] == "cities"}
    for i, (name, s) in enumerate(steering.items()):
        colour = f"C{i}"
        d, m = np.asarray(s["doses"]), s["summary"]
        ax.plot(d, m["mean"], "o-", ms=3, color=colour, label=plain_text(rows[name]["label"]))
        ax.fill_between(d, m["lo"], m["hi"], alpha=0.15, color=colour)
        c = r["control"]["probes"].get(name)
        if c is not None:
            ax.errorbar([c["dose"] + 0.06 * (i + 1)], [c["effect"]],
                        yerr=[[c["effect"] - c["lo"]], [c["hi"] - c["effect"]]], fmt="s",
                        mfc="white", color=colour, ms=5, capsize=3,
                        label=plain_text(f"{rows[name]['label']}: no statement"))
        null = s["null"]
        if null:
            vals = np.asarray(null["values"])
            ax.errorbar([null["dose"] - 0.06 * (i + 1)], [null["mean"]],
                        yerr=[[null["mean"] - vals.min()], [vals.max() - null["mean"]]],
                        fmt="x", color=colour, capsize=3, alpha=0.7)
    ax.axhline(0, color="grey", lw=0.6)
    ax.set_xlabel("dose (class-mean gaps at each steered layer); × = random directions (range)")
    ax.set_ylabel(plain_text(f"change of {task['metric']}, intended direction"))
    ax.set_title("2. Steering held-out statements: each probe's dose–response (95% CI)",
                 fontsize=9)
    ax.legend(fontsize=7)
    base = np.asarray(next(iter(steering.values()))["baseline"])
    y = np.asarray(r["data"]["steered_labels"])
    b = task["baseline"]
    for k, lab in enumerate((1, 0)):
        vals = base[y == lab]
        ax2.scatter(np.full(len(vals), k) + np.linspace(-0.15, 0.15, len(vals)), vals, s=8,
                    alpha=0.6, color="C2" if lab else "C3")
        ax2.hlines(vals.mean(), k - 0.25, k + 0.25, color="k")
    ax2.set_xticks([0, 1], ["true", "false"])
    ax2.set_ylabel(plain_text(task["metric"]))
    verdict = "tells them apart" if b["solves"] else "does not tell them apart"
    ax2.set_title(plain_text(f"1. Unsteered (the gate): gap {b['gap']:+.3f} [{b['gap_lo']:+.3f}, "
                         f"{b['gap_hi']:+.3f}]\n({verdict})"), fontsize=9)
    fig.tight_layout()
    return figure_png(fig)


def _figure_patch(p: dict[str, Any]) -> str | None:
    if not p.get("ran"):
        return None
    frac = p["fraction_grid"]
    grid = np.asarray(frac if frac is not None else p["grid"])
    fig, ax = new_figure((7, 5.5))
    lim = max(float(np.abs(grid).max()), 1e-9)
    im = ax.imshow(grid, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, origin="lower")
    ax.set_yticks(range(len(p["layers"])), [str(v) for v in p["layers"]])
    ax.set_xticks(range(len(p["offsets"])), [plain_text(f"{t!r}\n{o}") for t, o in
                                             zip(p["tokens_of_first_pair"], p["offsets"],
                                                 strict=True)], fontsize=7)
    ax.set_ylabel("layer (resid_post)")
    ax.set_xlabel("token (first pair) and offset from the end")
    ax.set_title("Share of the true − false gap restored by patching" if frac is not None else
                 "Mean effect of patching (the gap is not distinguishable from 0:\nno share of "
                 "it is shown and nothing is localised)", fontsize=9)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return figure_png(fig)


def _g(v: float) -> str:
    return f"{v:+.3g}"


def summary_bullets(r: dict[str, Any]) -> list[str]:
    """The top of the page, 3–5 bullets: the behavioural gate (does the model tell true from
    false on the chosen task, unsteered), which directions are causal for truth (only with the
    gate open) or move the answer beyond both controls and which control explains the rest, each
    probe's effect beside its random-direction null and the no-statement control with q-values
    after Benjamini–Hochberg, and whether patching localises anything."""
    b, v, task = r["task"]["baseline"], r["verdict"], r["task"]
    steered = [c for c in r["comparison"] if c["dataset"] == "cities"]
    out = [f"Task: {task['chosen']} ({task['metric']}). Unsteered true − false gap "
           f"{_g(b['gap'])} [{_g(b['gap_lo'])}, {_g(b['gap_hi'])}] on {b['n']} held-out "
           "statements: " + ("the model tells true from false, so a direction that moves this "
                             "gap can be called causal for truth." if b["solves"] else
                             "the model does not tell true from false, so nothing is called "
                             "causal for truth and no effect is normalised.")]
    causal = [c["label"] for c in steered if v["probes"][c["probe"]]["causal_for_truth"]]
    moves = [c["label"] for c in steered if v["probes"][c["probe"]]["moves_the_answer"]
             and v["probes"][c["probe"]]["beyond_control"]]
    control = [c["label"] for c in steered if v["probes"][c["probe"]]["moves_the_answer"]
               and not v["probes"][c["probe"]]["beyond_control"]]
    null = [c["label"] for c in steered if not v["probes"][c["probe"]]["moves_the_answer"]]
    line = (f"Causal for truth on the {task['chosen']} task: "
            + (", ".join(causal) if causal else "none" + ("" if b["solves"] else
                                                         " (the gate above is closed)"))
            + ". Moves the answer beyond the random-direction null and the no-statement "
            "control (corrected): " + (", ".join(moves) if moves else "none") + ".")
    if control:
        line += (" Explained by the no-statement control (the same push moves prompts without a "
                 "statement as much): " + ", ".join(control) + ".")
    if null:
        line += " Explained by the random-direction null: " + ", ".join(null) + "."
    out.append(line)
    cells = []
    for c in steered:
        ctrl = r["control"]["probes"][c["probe"]]
        norm = c["normalised"]
        cells.append(f"{c['label']} {_g(c['effect'])} [{_g(c['lo'])}, {_g(c['hi'])}] vs random "
                     f"directions {_g(c['null_mean'])} ± {c['null_sd']:.2g} ({c['verdict']}, "
                     f"{q_text(c)}), no statement {_g(ctrl['effect'])} (statement − no "
                     f"statement {_cw(ctrl['verdict'])}, {q_text(ctrl)})"
                     + (f", {norm['value']:+.2f} [{norm['lo']:+.2f}, {norm['hi']:+.2f}] of the "
                        "gap" if norm is not None else ""))
    if cells:
        out.append(f"Steering held-out statements at dose {steered[0]['dose']:g} (change of "
                   f"{task['metric']} in the intended direction, 95% CI): " + "; ".join(cells)
                   + ".")
    p = r["patching"]
    if p.get("ran"):
        g = p["gap"]
        out.append(f"Patching true into false statements: gap {_g(g['mean'])} [{_g(g['lo'])}, "
                   f"{_g(g['hi'])}], "
                   + (f"{len(v['localised_nodes'])} node(s) localised beyond the null on "
                      "held-out pairs." if p["localise"] else
                      "not distinguishable from 0, so nothing is localised."))
    return out[:5]


CONTROL_WORDS = {"above the null": "larger on statements", "below the null":
                 "smaller on statements", "not significant": "not distinguishable"}


def _cw(verdict: str) -> str:
    return CONTROL_WORDS.get(verdict, verdict)


def comparison_order(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Steering rows: the steered dataset (cities) first, then the transfer datasets by name;
    within a dataset by q, smallest first."""
    return sorted(r["comparison"], key=lambda c: (c["dataset"] != "cities", c["dataset"],
                                                  c.get("q", 2.0), c["label"]))


def _z(cell: dict[str, Any]) -> str:
    return "n/a" if cell.get("z") is None else f"{cell['z']:+.1f}"


def write_causal_report(result: Any, path: str | Path) -> Path:
    r = _as_dict(result)
    r = {"versions": {}, "timings": {}, **r}
    pnull = (r["patching"].get("result") or {}).get("null") or {}
    return render("causal.html", path, r=r, bullets=summary_bullets(r),
                  headline_png=_figure_headline(r), patch_png=_figure_patch(r["patching"]),
                  comparison=comparison_order(r),
                  control_rows=sorted(r["control"]["probes"].items(),
                                      key=lambda kv: (kv[1].get("q", 2.0), kv[0])),
                  patch_nodes=sorted((pnull.get("nodes") or {}).values(),
                                     key=lambda n: (n.get("q", 2.0), n["hook"])))


def summary_lines(result: Any) -> list[str]:
    """What ``interplab causal`` prints: the findings, then the run's cost."""
    r = _as_dict(result)
    out = [f"• {line}" for line in r["findings"]]
    t = r["timings"]
    if "attribution_cost_atp" in t:
        out.append(f"• Attribution cost in forward passes (this run's wall time): AtP "
                   f"{t['attribution_cost_atp']:.1f}, IG {t.get('attribution_cost_ig', float('nan')):.1f}, "
                   f"exact patching of every node ≈ {t['attribution_cost_exact_all_nodes_estimate']:.0f}.")
    if "total_s" in t:
        out.append(f"• Run time {t['total_s']:.0f} s.")
    return out
