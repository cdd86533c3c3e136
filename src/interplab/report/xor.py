"""The XOR study's report: one self-contained HTML file with its figures inline.

The top of the page tells the finding: the study's summary (whether RAX reproduces, what is read
beyond every control, what a control network reads as well, what holding a feature constant
costs; each with its interval and control), then the headline figure: every reading at its
chosen layer with its interval beside each control's. Then how the numbers were made, the
complete table of readings, accuracy-by-layer panels and the generalization experiment. It
draws what the result holds and computes nothing new.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from interplab.controls.multiple import VERDICT_WORDS
from interplab.report.html import figure_png, new_figure, plain_text, render
from interplab.studies.xor import CONTROL_WORDS, NETWORK_WORDS, TOKEN_WORDS

STYLE = {
    "model": {"color": "#1f4e9c", "ls": "-", "label": "trained model"},
    "shuffled": {"color": "#888888", "ls": "--", "label": "shuffled labels (one shuffle's CI)"},
    "reset": {"color": "#c0392b", "ls": "-.", "label": "reset (weight-permuted) network"},
    "random_init": {"color": "#c98a00", "ls": ":", "label": "randomly initialised network"},
}
MARKERS = {"shuffled": "x", "reset": "^", "random_init": "s"}
CONTROL_LETTERS = {"shuffled": "S", "reset": "R", "random_init": "I"}
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


def _headline(r: Any) -> str:
    """Every reading at its chosen layer, one panel per token choice: the model's accuracy with
    its interval, each control beside it; a reading beyond every control is labelled in bold,
    one a control explains carries that control's letter."""
    from matplotlib.lines import Line2D

    modes = list(dict.fromkeys(x["tokens"] for x in r.readings))
    n = max(sum(x["tokens"] == m for x in r.readings) for m in modes) if modes else 1
    fig, axes = new_figure((5.6 * len(modes) + 0.6, 0.24 * n + 1.3), 1, max(len(modes), 1),
                           squeeze=False, sharex=True)
    fig.set_layout_engine("constrained")
    for ax, mode in zip(axes[0], modes, strict=False):
        rows = [x for x in r.readings if x["tokens"] == mode]
        y = np.arange(len(rows))[::-1]
        for yi, x in zip(y, rows, strict=True):
            for net in ("shuffled", "reset", "random_init"):
                if net in x:
                    c = x[net]
                    st = STYLE[net]
                    ax.plot([c["lo"], c["hi"]], [yi, yi], color=st["color"], lw=1, alpha=0.5)
                    ax.plot(c["value"], yi, MARKERS[net], color=st["color"], ms=5, mfc="none")
            m = x["model"]
            beyond = x.get("beyond_controls", False)
            ax.errorbar(m["value"], yi, xerr=[[m["value"] - m["lo"]], [m["hi"] - m["value"]]],
                        fmt="o", color=STYLE["model"]["color"], ms=6 if beyond else 4, lw=2,
                        capsize=0, zorder=3)
            letters = "".join(CONTROL_LETTERS[c] for c in x.get("explained_by", []))
            if letters:
                ax.text(1.02, yi, letters, va="center", ha="left", fontsize=8,
                        color="#c0392b", fontweight="bold")
        labels = [f"{x['dataset']} · {x['feature'].replace('^', ' ⊕ ')}" for x in rows]
        ax.set_yticks(y, labels, fontsize=8)
        for tick, x in zip(ax.get_yticklabels(), rows, strict=True):
            if x.get("beyond_controls"):
                tick.set_fontweight("bold")
        for k in range(1, len(rows)):
            if rows[k]["dataset"] != rows[k - 1]["dataset"]:
                ax.axhline(y[k] + 0.5, color="#bbbbbb", lw=0.6)
        ax.axvline(0.5, color="black", lw=0.7)
        ax.set_xlim(0.2, 1.08)
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.set_xlabel("test accuracy at the chosen layer (95 % CI)", fontsize=8)
        ax.set_title(_MODE_TITLES.get(mode, mode), fontsize=10, fontweight="bold")
        ax.grid(axis="x", alpha=0.25)
    handles = [Line2D([], [], marker="o", color=STYLE["model"]["color"], lw=2,
                      label="model (bold label: beyond every control)")]
    handles += [Line2D([], [], marker=MARKERS[n], color=STYLE[n]["color"], mfc="none", lw=1,
                       label=f"{CONTROL_WORDS[n]} ({CONTROL_LETTERS[n]} at right: explains it)")
                for n in ("shuffled", "reset", "random_init")
                if any(n in x for x in r.readings)]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8,
               frameon=False)
    return figure_png(fig)


_MODE_TITLES = {"last": "last token", "mean": "mean over the statement"}


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
    readings = [{"explained_by": [], "partly_explained_by": [], "beyond_controls": False, **x}
                for x in r.readings]  # results written before these fields existed
    return render("xor.html", path, r=r, readings=readings, headline=_headline(r), panels=panels,
                  general=_general_rows(r), token_words=TOKEN_WORDS,
                  network_words=NETWORK_WORDS, verdict_words=VERDICT_WORDS,
                  control_words=CONTROL_WORDS, control_letters=CONTROL_LETTERS)


def summary_lines(result: Any) -> list[str]:
    """What ``interplab xor`` prints: the summary sentences."""
    return [f"• {sentence}" for sentence in result.summary]
