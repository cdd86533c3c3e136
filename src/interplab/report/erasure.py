"""HTML report of an erasure study: held-out probe accuracy per method next to its
random-subspace control, the in-model cost, and the "how many directions" curve. Reads an
:class:`~interplab.studies.erasure.ErasureResult` (or its JSON dict); computes nothing new."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from interplab.report.html import figure_png, new_figure, plain_text, render

BARS = (("linear", "before", "linear, before"), ("linear", "erased", "linear, erased"),
        ("linear", "random", "linear, random subspace"), ("mlp", "erased", "MLP, erased"),
        ("mlp", "random", "MLP, random subspace"))


def _as_dict(result: Any) -> dict[str, Any]:
    from dataclasses import asdict, is_dataclass

    return asdict(result) if is_dataclass(result) else result


def figure_checks(r: dict[str, Any]) -> str:
    methods = list(r["checks"])
    x = np.arange(len(methods))
    w = 0.8 / len(BARS)
    fig, ax = new_figure((max(8.0, 1.5 * len(methods)), 3.8))
    for i, (probe, cond, label) in enumerate(BARS):
        cells = [r["checks"][m]["accuracy"][probe][cond] for m in methods]
        v = np.array([c["value"] for c in cells])
        err = np.array([[c["value"] - c["lo"] for c in cells], [c["hi"] - c["value"] for c in cells]])
        ax.bar(x + (i - len(BARS) / 2 + 0.5) * w, v, w, yerr=err, capsize=2, label=label)
    for i, m in enumerate(methods):
        maj = r["checks"][m]["majority"]
        ax.hlines(maj, i - 0.45, i + 0.45, colors="k", linestyles="--", lw=0.8)
    ax.set_xticks(x, [plain_text(m) for m in methods], fontsize=8)
    ax.set_ylim(0.3, 1.02)
    ax.set_ylabel("held-out accuracy")
    ax.set_title("Probe accuracy after erasure (dashed: chance)")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    return figure_png(fig)


def figure_directions(d: dict[str, Any]) -> str:
    fig, ax = new_figure((7.0, 3.6))
    for key, label in (("labels", "true labels"), ("shuffled", "shuffled labels")):
        rounds = d[key]["rounds"]
        k = [p["erased"] for p in rounds]
        ax.plot(k, [p["value"] for p in rounds], "o-", ms=3, label=label)
        ax.fill_between(k, [p["lo"] for p in rounds], [p["hi"] for p in rounds], alpha=0.2)
        ax.axhline(d[key]["majority"], color="k", ls="--", lw=0.8)
    ax.set_xlabel("linear directions erased")
    ax.set_ylabel("held-out accuracy of a retrained linear probe")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return figure_png(fig)


def erasure_figures(r: dict[str, Any]) -> dict[str, str]:
    figs = {"checks": figure_checks(r)}
    if r.get("directions"):
        figs["directions"] = figure_directions(r["directions"])
    return figs


def write_erasure_report(result: Any, path: str | Path) -> Path:
    """Write the study's self-contained HTML report to ``path``."""
    r = _as_dict(result)
    return render("erasure.html", path, r=r, figures=erasure_figures(r))


def summary_lines(result: Any) -> list[str]:
    """What ``interplab erase`` prints: each method's held-out check beside its random subspace,
    the change in the model's own answers with its corrected verdict, the directions curve."""
    from interplab.controls import format_p

    lines = [f"layer {result.layer}: {result.layer_choice['rule']}"] if getattr(
        result, "layer_choice", None) else []
    for m, c in result.checks.items():
        lin = c["accuracy"]["linear"]
        lines.append(f"{m:13s} linear {lin['before']['value']:.2f} → {lin['erased']['value']:.2f} "
                     f"(random subspace {lin['random']['value']:.2f}, chance {c['majority']:.2f})")
    if result.behaviour:
        b = result.behaviour
        lines.append(f"model's true/false separation {b['plain']['separation']['value']:+.3f}")
        for m, e in b["erasers"].items():
            c, rnd = e["separation_change"], b["random"][str(e["rank"])]["separation_change"]
            t = e["vs_random"]
            lines.append(f"{m:13s} Δ separation {c['value']:+.3f} [{c['lo']:+.3f}, "
                         f"{c['hi']:+.3f}] (random subspace {rnd['value']:+.3f}; vs random "
                         f"subspaces: {t['verdict']}, "
                         f"{format_p(t['q'], at_floor=t['q_bound'], name='q')})")
    if result.directions:
        d = result.directions
        lines.append(f"directions to chance: {d['labels']['rounds_to_chance']} "
                     f"(shuffled labels: {d['shuffled']['rounds_to_chance']})")
    return lines
