"""The SHIFT study's report: one self-contained HTML page.

Top: the summary bullets (the finding, its controls, its uncertainty), then the headline figure
(worst-group and overall accuracy per condition, every seed's value and the first seed's interval
over test examples), then the candidate latents with their correlations and cards, the per-group
accuracies and the corrected tests. It draws what the result holds and computes nothing new.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from interplab.report.html import figure_png, new_figure, render
from interplab.studies.shift import CONDITION_WORDS, CONDITIONS, format_p


def _as_dict(result: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return result if isinstance(result, dict) else asdict(result)


def _figure(r: dict[str, Any]) -> str:
    fig, axes = new_figure((11, 4), 1, 2)
    names = [c for c in CONDITIONS if any(row["condition"] == c for row in r["table"])]
    for ax, key, title in ((axes[0], "worst", "worst-group accuracy"),
                           (axes[1], "overall", "overall accuracy")):
        for x, name in enumerate(names):
            vals = []
            for s in r["seeds"]:
                got = s["conditions"][name]
                vals += [g[key] for g in (got if isinstance(got, list) else [got])]
            first = r["seeds"][0]["conditions"][name]
            first = first[0] if isinstance(first, list) else first
            lo, hi = first[f"{key}_ci"]
            ax.bar([x], [np.mean(vals)], color="#c7d5ea" if name != "shift" else "#1f4e9c",
                   edgecolor="k", lw=0.5)
            ax.errorbar([x + 0.25], [first[key]], yerr=[[first[key] - lo], [hi - first[key]]],
                        fmt="k.", capsize=3)
            ax.scatter([x] * len(vals), vals, color="k", s=8, zorder=3)
        ax.set_xticks(range(len(names)), [n.replace("_", "\n") for n in names], fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.axhline(0.5, color="grey", lw=0.6, ls="--")
        ax.set_ylabel(title)
        ax.set_title(f"{title}, balanced test set", fontsize=9)
    fig.text(0.5, -0.02, "bars: mean over runs (seeds; random: seeds × draws); dots: runs; "
             "error bar: the first seed's 95% interval over test examples", ha="center",
             fontsize=8)
    fig.tight_layout()
    return figure_png(fig)


def write_shift_report(result: Any, path: str | Path) -> Path:
    r = _as_dict(result)
    return render("shift.html", path, r=r, png=_figure(r), words=CONDITION_WORDS,
                  format_p=format_p)


def summary_lines(result: Any) -> list[str]:
    """What ``interplab shift`` prints: the summary sentences."""
    return [f"• {sentence}" for sentence in result.summary]
