"""The XOR study's report: one self-contained HTML file with its figures inline.

The page answers first (the study's summary), says which tokens, splits and controls were used,
then gives one table of readings (each feature and XOR at its chosen layer, with every control
and the token-level flag), accuracy-by-layer panels per dataset, and the generalization
experiment (curves and a table at the chosen layer). It draws what the result holds and computes
nothing new.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from interplab.controls.multiple import VERDICT_WORDS
from interplab.report.html import figure_png, new_figure, plain_text, render
from interplab.studies.xor import NETWORK_WORDS, TOKEN_WORDS

STYLE = {
    "model": {"color": "#1f4e9c", "ls": "-", "label": "trained model"},
    "shuffled": {"color": "#888888", "ls": "--", "label": "shuffled labels (one shuffle's CI)"},
    "reset": {"color": "#c0392b", "ls": "-.", "label": "reset (weight-permuted) network"},
    "random_init": {"color": "#c98a00", "ls": ":", "label": "randomly initialised network"},
}
GENERAL_STYLE = {
    "in": ("#1f4e9c", "-", "trained on {h}=1, tested on {h}=1"),
    "out": ("#c0392b", "-", "trained on {h}=1, tested on {h}=0"),
    "both": ("#2e8b57", "-", "trained on both, tested on {h}=0"),
    "ablated": ("#7d3c98", "--", "{h}=1 probe minus its {h}^label component, on {h}=0"),
    "recentred": ("#c98a00", ":", "{h}=1 probe, threshold at the test mean, on {h}=0"),
}


def _band(ax: Any, layers: list[int], curve: dict[str, Any], color: str, ls: str,
          label: str) -> None:
    ax.plot(layers, curve["value"], color=color, ls=ls, lw=1.5, label=label)
    ax.fill_between(layers, curve["lo"], curve["hi"], color=color, alpha=0.13, lw=0)


def _feature_panels(r: Any, mode: str, name: str) -> str:
    per_feature = r.curves[mode][name]
    feats = list(per_feature)
    cols = min(4, len(feats))
    rows = (len(feats) + cols - 1) // cols
    fig, axes = new_figure((3.3 * cols, 2.7 * rows + 0.6), rows, cols, squeeze=False,
                           sharey=True)
    for ax in axes.flat[len(feats):]:
        ax.axis("off")
    for ax, feature in zip(axes.flat, feats, strict=False):
        for net, curve in per_feature[feature].items():
            st = STYLE[net]
            _band(ax, r.layers, curve, st["color"], st["ls"], st["label"])
        chosen = next(x for x in r.readings if x["tokens"] == mode and x["dataset"] == name
                      and x["feature"] == feature)
        ax.axvline(chosen["model"]["layer"], color="#1f4e9c", lw=0.6, alpha=0.5)
        ax.axhline(0.5, color="black", lw=0.6)
        ax.set_title(plain_text(feature.replace("^", " ⊕ ")), fontsize=9)
        ax.set_ylim(0.3, 1.02)
        ax.grid(alpha=0.25)
    for ax in axes[-1]:
        ax.set_xlabel("layer", fontsize=8)
    for row in axes:
        row[0].set_ylabel("test accuracy")
    fig.subplots_adjust(hspace=0.35)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, -0.04))
    fig.suptitle(plain_text(f"{name}: logistic probe per layer ({mode})"), fontsize=10)
    return figure_png(fig)


def _generalization_panel(r: Any, g: dict[str, Any], held: str) -> str:
    fig, (acc, geo) = new_figure((10.5, 3.2), 1, 2)
    for key, (color, ls, label) in GENERAL_STYLE.items():
        _band(acc, r.layers, g[key], color, ls, plain_text(label.format(h=held)))
    acc.axhline(0.5, color="black", lw=0.6)
    acc.axvline(r.layers[g["layer_index"]], color="#1f4e9c", lw=0.6, alpha=0.5)
    acc.set_ylim(0, 1.02)
    acc.set_xlabel("layer")
    acc.set_ylabel("truth accuracy")
    acc.legend(fontsize=7, loc="lower left")
    acc.grid(alpha=0.25)
    geo.plot(r.layers, g["cos_xor"], color="#c0392b",
             label=plain_text(f"cos({held}=1 probe, {held}^label probe)"))
    geo.plot(r.layers, g["cos_xor_both"], color="#2e8b57",
             label=plain_text(f"cos(both-values probe, {held}^label probe)"))
    geo.plot(r.layers, g["separation_ratio"], color="#555555", ls="--",
             label=plain_text(f"class separation {held}=0 / {held}=1"))
    geo.axhline(0, color="black", lw=0.6)
    geo.set_xlabel("layer")
    geo.legend(fontsize=7)
    geo.grid(alpha=0.25)
    return figure_png(fig)


def _general_rows(r: Any) -> list[dict[str, Any]]:
    rows = []
    for mode, per_ds in r.generalization.items():
        for name, per_held in per_ds.items():
            for held, g in per_held.items():
                li = g["layer_index"]
                cells = {k: {s: g[k][s][li] for s in ("value", "lo", "hi")}
                         for k in ("in", "out", "both", "drop", "ablated", "recentred")}
                rows.append({"tokens": mode, "dataset": name, "held": held,
                             "layer": r.layers[li], **cells, "cos": g["cos_xor"][li],
                             "cos_both": g["cos_xor_both"][li],
                             "separation": g["separation_ratio"][li],
                             "explained": g["explained"], "n_train": g["n_train"],
                             "n_out": g["n_test_out"],
                             "figure": _generalization_panel(r, g, held)})
    return rows


def write_xor_report(result: Any, path: str | Path) -> Path:
    """Write the HTML report of a :class:`~interplab.studies.xor.XorResult` to ``path``."""
    r = result
    panels = [(mode, name, _feature_panels(r, mode, name))
              for mode, per_ds in r.curves.items() for name in per_ds]
    return render("xor.html", path, r=r, panels=panels, general=_general_rows(r),
                  token_words=TOKEN_WORDS, network_words=NETWORK_WORDS,
                  verdict_words=VERDICT_WORDS)


def summary_lines(result: Any) -> list[str]:
    """What ``interplab xor`` prints: the summary sentences."""
    return [f"• {sentence}" for sentence in result.summary]
