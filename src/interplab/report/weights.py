"""HTML page of a weight-SVD study. The top tells the finding: the study's summary (singular
values above the random-matrix null in the model and in each control network, where, the
strongest direction), then the headline figure, the counts above the null per block for the
model and its controls. Then the method, the spectra against the Marchenko–Pastur edge, and the
complete per-matrix and top-direction tables. Reads a
:class:`~interplab.studies.weights.WeightsResult` (or its JSON dict); computes nothing beyond
scaling for display."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from interplab.report.html import figure_png, new_figure, plain_text, render


def _as_dict(result: Any) -> dict[str, Any]:
    from dataclasses import asdict, is_dataclass

    return asdict(result) if is_dataclass(result) else result


def _kinds(mats: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(m["kind"] for m in mats))


def figure_spectra(mats: list[dict[str, Any]]) -> str:
    """Singular values / MP upper edge against rank, one panel per matrix kind, one line per
    block (light to dark with depth)."""
    kinds = _kinds(mats)
    n_blocks = max(m["block"] for m in mats) + 1
    fig, axes = new_figure((3.2 * len(kinds), 3.2), 1, len(kinds), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        for m in (m for m in mats if m["kind"] == kind):
            s = np.asarray(m["singular_values"]) / m["mp_upper"]
            ax.plot(np.arange(1, len(s) + 1), s, lw=0.8,
                    color=(0.1, 0.2 + 0.6 * m["block"] / max(n_blocks - 1, 1), 0.8))
        ax.axhline(1.0, color="k", ls="--", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(plain_text(kind), fontsize=9)
        ax.set_xlabel("rank")
    axes[0][0].set_ylabel("singular value / MP upper edge")
    fig.tight_layout()
    return figure_png(fig)


NETWORK_STYLE = {"model": ("#1f4e9c", "o-", "model"),
                 "random-init": ("#c98a00", "s--", "randomly initialised network (control)"),
                 "reset": ("#c0392b", "^:", "reset network (same spectra by construction)")}


def figure_counts(networks: dict[str, list[dict[str, Any]]]) -> str:
    """Singular values above the null per block, per kind, for each network."""
    from matplotlib.ticker import MaxNLocator

    kinds = _kinds(networks["model"])
    fig, axes = new_figure((2.9 * len(kinds) + 0.4, 2.7), 1, len(kinds), squeeze=False,
                           sharey=True)
    fig.set_layout_engine("constrained")
    for ax, kind in zip(axes[0], kinds, strict=True):
        for name, mats in networks.items():
            color, style, label = NETWORK_STYLE.get(name, ("#555555", "o-", name))
            rows = [m for m in mats if m["kind"] == kind]
            ax.plot([m["block"] for m in rows], [m["n_above"] for m in rows], style, ms=3,
                    color=color, lw=1.2, label=plain_text(label), alpha=0.8 if name == "reset" else 1)
        ax.set_title(plain_text(kind), fontsize=10, fontweight="bold")
        ax.set_xlabel("block")
        ax.grid(alpha=0.25)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    top = max(m["n_above"] for mats in networks.values() for m in mats)
    axes[0][0].set_ylim(-0.05 * max(top, 1), 1.08 * max(top, 1))
    axes[0][0].set_ylabel("singular values above the null")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=8,
               frameon=False)
    return figure_png(fig)


def write_weights_report(result: Any, path: str | Path) -> Path:
    # results written before the summary existed, and bare dicts, lack some fields
    r = {"summary": [], "versions": {}, "timings": {}, **_as_dict(result)}
    figures = {"spectra": figure_spectra(r["networks"]["model"]),
               "counts": figure_counts(r["networks"])}
    return render("weights.html", path, r=r, figures=figures)


def summary_lines(result: Any) -> list[str]:
    """What ``interplab weights`` prints: singular values above the null per network, then the
    study's summary."""
    return [f"{name:12s} {sum(m['n_above'] for m in mats)} singular values above the null in "
            f"{len(mats)} matrices" for name, mats in result.networks.items()] + [
        f"• {s}" for s in getattr(result, "summary", [])]
