"""The circuit study's report: one self-contained HTML page.

Top: the summary bullets (the finding, its control, its uncertainty), then the headline figure
(faithfulness and completeness against circuit size, beside same-size random circuits), the
circuit drawn as hooks × latents with its edges, its top latents with their cards, the
AtP-vs-IG(k) measurement per SAE architecture, and complete tables. It draws what the result
holds and computes nothing new.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from interplab.report.html import figure_png, new_figure, render


def plain(text: Any) -> str:
    """A string safe to hand to matplotlib: ``$`` would start math mode."""
    return str(text).replace("$", r"\$")


def _as_dict(result: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return result if isinstance(result, dict) else asdict(result)


def _curve_figure(c: dict[str, Any]) -> str:
    fig, ax = new_figure((7.5, 4))
    x = np.asarray(c["sizes"], dtype=float)
    for key, color, label in (("faithfulness", "#1f4e9c", "circuit: faithfulness"),
                              ("completeness", "#c0392b", "complement: faithfulness (completeness)")):
        v = c[key]
        ax.plot(x, v["value"], "o-", color=color, ms=3, label=label)
        ax.fill_between(x, v["lo"], v["hi"], color=color, alpha=0.15, lw=0)
    r = c["random"]
    ax.plot(x, r["mean"], "s--", color="#888888", ms=3, label="random circuits of the same size")
    ax.fill_between(x, r["lo"], r["hi"], color="#888888", alpha=0.15, lw=0)
    ax.axhline(1, color="k", lw=0.5)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("nodes in the circuit (latents + error nodes)")
    ax.set_ylabel("(m(C) − m(∅)) / (m(M) − m(∅))")
    ax.set_title("Held-out faithfulness under mean ablation (95% CI)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return figure_png(fig)


def _graph_figure(r: dict[str, Any]) -> str:
    circuit, edges = r["circuit"], r["edges"]
    hooks = list(edges["nodes"])
    rows = {(row["hook"], row["latent"]): row["score"] for row in circuit["rows"]}
    fig, ax = new_figure((max(6.0, 2.6 * (len(hooks) + 1)), 6))
    pos = {}
    for x, h in enumerate(hooks):
        nodes = sorted(edges["nodes"][h], key=lambda i: -abs(rows.get((h, i), 0.0)))
        for y, i in enumerate(nodes):
            pos[(h, i)] = (x, -y)
    pos[("metric", None)] = (len(hooks), 0.0)
    weights = [abs(e["weight"]) for e in edges["edges"]] or [1.0]
    top = max(weights) or 1.0
    for e in edges["edges"]:
        a = pos.get((e["from"][0], e["from"][1]))
        b = pos.get((e["to"][0], e["to"][1]))
        if a is None or b is None:
            continue
        ax.plot([a[0], b[0]], [a[1], b[1]], color="#1f4e9c" if e["weight"] > 0 else "#c0392b",
                lw=0.4 + 3 * abs(e["weight"]) / top, alpha=0.25 + 0.6 * abs(e["weight"]) / top)
    scale = max([abs(v) for v in rows.values()] or [1.0]) or 1.0
    for (h, i), (x, y) in pos.items():
        if h == "metric":
            ax.scatter([x], [y], s=220, marker="D", color="#222222", zorder=3)
            ax.annotate("metric", (x, y), textcoords="offset points", xytext=(8, 0), fontsize=8)
            continue
        s = rows.get((h, i), 0.0)
        ax.scatter([x], [y], s=40 + 260 * abs(s) / scale, zorder=3,
                   marker="s" if i == "error" else "o",
                   color="#1f4e9c" if s > 0 else "#c0392b", edgecolor="k", lw=0.5)
        ax.annotate(plain("err" if i == "error" else i), (x, y), textcoords="offset points",
                    xytext=(7, -3), fontsize=7)
    ax.set_xticks(range(len(hooks) + 1),
                  [plain(h.replace("hook_", "")) for h in hooks] + ["metric"], fontsize=8)
    ax.set_yticks([])
    ax.set_title("The circuit: latents (circles) and error nodes (squares) by hook, size ∝ "
                 "|effect|, blue raises the metric; edges AtP-style", fontsize=9)
    fig.tight_layout()
    return figure_png(fig)


def _compare_figure(cmp: dict[str, Any]) -> str | None:
    if not cmp:
        return None
    setups = sorted({row["setup"] for row in cmp["rows"]})
    fig, axes = new_figure((5.5 * len(setups), 4), 1, len(setups), squeeze=False)
    steps = cmp["steps"]
    colors = {"relu": "#1f4e9c", "topk": "#c0392b", "batchtopk": "#c98a00",
              "jumprelu": "#2e8b57", "gated": "#7d3c98"}
    for ax, setup in zip(axes[0], setups, strict=True):
        for row in (r for r in cmp["rows"] if r["setup"] == setup):
            col = colors.get(row["architecture"], "#444444")
            ig = [row["ig"][str(k)].get("spearman") for k in steps]
            lo = [row["ig"][str(k)].get("spearman_lo") for k in steps]
            hi = [row["ig"][str(k)].get("spearman_hi") for k in steps]
            ok = [v is not None for v in ig]
            xs = [k for k, o in zip(steps, ok, strict=True) if o]
            ax.plot(xs, [v for v in ig if v is not None], "o-", color=col, ms=3,
                    label=f"{row['architecture']} IG(k)")
            if all(v is not None for v in lo + hi):
                ax.fill_between(steps, lo, hi, color=col, alpha=0.1, lw=0)
            atp = row["atp"].get("spearman")
            if atp is not None:
                ax.axhline(atp, color=col, ls=":", lw=1)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("IG steps k (dotted: AtP)")
        ax.set_ylabel("Spearman with exact patching")
        ax.set_title(plain(setup), fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return figure_png(fig)


def write_circuit_report(result: Any, path: str | Path) -> Path:
    r = {"versions": {}, "timings": {}, **_as_dict(result)}
    nodes = sorted(r["circuit"]["rows"], key=lambda n: (-abs(n["score"]), n["hook"]))
    return render("circuit.html", path, r=r, curve_png=_curve_figure(r["curve"]),
                  graph_png=_graph_figure(r), compare_png=_compare_figure(r["comparison"]),
                  nodes=nodes)


def summary_lines(result: Any) -> list[str]:
    """What ``interplab circuit`` prints: the summary sentences."""
    return [f"• {sentence}" for sentence in result.summary]
