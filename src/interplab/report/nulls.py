"""HTML report of a null battery: probe accuracy on real activations and on each null with the
paired difference, the random-direction distribution, and SAE train/held-out reconstruction and
features used per source. Reads a :class:`~interplab.studies.nulls.NullsResult` (or its JSON
dict); computes nothing new."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from interplab.report.html import figure_png, new_figure, plain_text, render


def _as_dict(result: Any) -> dict[str, Any]:
    from dataclasses import asdict, is_dataclass

    return asdict(result) if is_dataclass(result) else result


def figure_probes(r: dict[str, Any]) -> str:
    sources = list(r["probes"])
    probes = list(r["probes"][sources[0]])
    fig, ax = new_figure((max(7.0, 1.1 * len(sources)), 3.6))
    w = 0.8 / len(probes)
    x = np.arange(len(sources))
    for i, p in enumerate(probes):
        cells = [r["probes"][s][p] for s in sources]
        v = np.array([c["value"] for c in cells])
        err = np.array([[c["value"] - c["lo"] for c in cells], [c["hi"] - c["value"] for c in cells]])
        ax.bar(x + (i - len(probes) / 2 + 0.5) * w, v, w, yerr=err, capsize=2,
               label=plain_text(p))
        rd = r["random_directions"].get(p)
        if rd:
            ax.scatter(np.full(rd["n"], x[0] + (i - len(probes) / 2 + 0.5) * w), rd["values"],
                       s=6, color="k", zorder=3, label="random directions" if i == 0 else None)
    ax.axhline(0.5, color="k", ls="--", lw=0.8)
    ax.set_xticks(x, [plain_text(s) for s in sources], fontsize=8, rotation=20)
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0.2, 1.02)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return figure_png(fig)


def figure_saes(r: dict[str, Any]) -> str:
    sources = list(r["saes"])
    x = np.arange(len(sources))
    fig, (ax, ax2) = new_figure((max(9.0, 1.6 * len(sources)), 3.4), 1, 2)
    for off, part in ((-0.2, "train"), (0.2, "heldout")):
        ax.bar(x + off, [r["saes"][s][part]["fve"] for s in sources], 0.4, label=part)
    ax.set_xticks(x, [plain_text(s) for s in sources], fontsize=8, rotation=20)
    ax.set_ylabel("fraction of variance explained")
    ax.legend(fontsize=7)
    ax2.bar(x, [r["saes"][s]["heldout"]["features_used"] for s in sources], 0.6)
    ax2.set_xticks(x, [plain_text(s) for s in sources], fontsize=8, rotation=20)
    ax2.set_ylabel("features used on held-out rows")
    fig.tight_layout()
    return figure_png(fig)


def write_nulls_report(result: Any, path: str | Path) -> Path:
    r = _as_dict(result)
    figures = {"probes": figure_probes(r)}
    if r["saes"]:
        figures["saes"] = figure_saes(r)
    return render("nulls.html", path, r=r, figures=figures)


def summary_lines(result: Any) -> list[str]:
    """What ``interplab nulls`` prints: each source's probe accuracies and SAE FVE."""
    lines = []
    for source, cells in result.probes.items():
        line = ", ".join(f"{p} {c['value']:.2f}" for p, c in cells.items())
        sae = result.saes.get(source)
        extra = (f"; SAE FVE train {sae['train']['fve']:.3f} / held-out {sae['heldout']['fve']:.3f}"
                 if sae else "")
        lines.append(f"{source:16s} {line}{extra}")
    return lines
