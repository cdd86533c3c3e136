"""The truth study's report: one self-contained HTML file with its figures inline.

The top of the page tells the finding: the study's summary (a few findings, each with its
interval and the control it was checked against), then the headline figure, the generalization
matrix at the chosen layers with one panel per probe, where each cell a control explains is
hatched and lettered with that control. Then the tables, each complete and saying what it holds:
in-distribution accuracy, every cell of the matrix grouped by verdict (chance cells collapsed),
the controls that are off; then accuracy by layer, truth versus likelihood, PCA views, data and
run. It draws what the result holds and computes nothing new: verdicts, the controls that
explain them and their thresholds come from the study.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from interplab.controls.multiple import SIDE_OF_VERDICT, VERDICT_WORDS
from interplab.report.html import figure_png, new_figure, plain_text, render
from interplab.studies.truth import PROBE_LABELS

SIDED = set(SIDE_OF_VERDICT)  # verdicts that read something (above or below chance)
VARIANT_STYLE = {
    "probe": {"color": "#1f4e9c", "ls": "-", "label": "probe"},
    "shuffled": {"color": "#888888", "ls": "--",
                 "label": "shuffled labels (CCS: broken pairs); interval of one shuffle"},
    "random": {"color": "#c98a00", "ls": ":", "label": "random directions (norm-matched, mean of 20)"},
    "reset": {"color": "#c0392b", "ls": "-.", "label": "reset (weight-permuted) network"},
}


def _accuracy_by_layer(r: Any, train: str) -> str:
    from matplotlib.ticker import MaxNLocator

    probes = [p for p in r.probes if p in r.heldout.get(train, {})]
    fig, axes = new_figure((3.6 * max(len(probes), 1), 3.2), 1, max(len(probes), 1),
                           sharey=True, squeeze=False)
    base = r.likelihood["baseline"].get(train, {}).get("test", {})
    own = [t for t in train.split("+") if t in base]
    lp_acc = float(np.mean([base[t]["value"] for t in own])) if own else None
    for ax, probe in zip(axes[0], probes, strict=False):
        for variant, entry in r.heldout[train][probe].items():
            st = VARIANT_STYLE[variant]
            ax.plot(r.layers, entry["value"], color=st["color"], ls=st["ls"], lw=1.6,
                    label=st["label"])
            ax.fill_between(r.layers, entry["lo"], entry["hi"], color=st["color"], alpha=0.15,
                            lw=0)
        val = r.validation.get(train, {}).get(probe)
        if val is not None:
            ax.plot(r.layers, val["value"], color="#1f4e9c", lw=0.9, ls=(0, (1, 1.5)),
                    label="probe on validation (chooses the layer)")
        ax.axhline(0.5, color="black", lw=0.6)
        if lp_acc is not None:
            ax.axhline(lp_acc, color="#2e8b57", lw=1, ls=(0, (5, 2, 1, 2)),
                       label="log-probability threshold")
        best = r.best_layer[train][probe]
        ax.axvline(best, color="#1f4e9c", lw=0.6, alpha=0.5)
        ax.set_title(plain_text(f"{PROBE_LABELS.get(probe, probe)} (layer {best} chosen on "
                                "validation)"),
                     fontsize=9)
        ax.set_xlabel("layer")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.25)
    axes[0][0].set_ylabel(plain_text(f"test accuracy\n(trained on {train})"))
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, -0.2))
    return figure_png(fig)


# How a control that explains a cell is marked in the headline figure and the tables
CONTROL_LETTERS = {"shuffled": "S", "random": "D", "reset": "R"}
CONTROL_WORDS = {"shuffled": "shuffled labels", "random": "random directions",
                 "reset": "reset network"}
# Verdict groups of the tables, in the order the page lists them
VERDICT_ORDER = ["inverted", "weakly below chance", "above chance", "weakly above chance",
                 "one class", "too few statements", "chance"]


def _marks(v: dict[str, Any]) -> str:
    """"R" for a control that explains the cell, "(d)" for one that explains part of it."""
    full = "".join(CONTROL_LETTERS.get(c, "?") for c in v.get("explained_by", []))
    part = "".join(CONTROL_LETTERS.get(c, "?").lower()
                   for c in v.get("partly_explained_by", []))
    return full + (f"({part})" if part else "")


def _headline(r: Any) -> str:
    """The generalization matrix at each row's chosen layer, one panel per probe: colour is
    accuracy; a cell a control explains is hatched and lettered; a cell with a verdict no
    control explains is framed."""
    from matplotlib.patches import Rectangle

    verdicts = _verdict_index(r)
    probes = [p for p in r.probes if any(p in r.best_layer.get(t, {}) for t in r.train_sets)]
    tests = r.test_sets
    cols = 1 if len(probes) == 1 else 2
    rows_n = (len(probes) + cols - 1) // cols
    n_train = max(len(r.train_sets), 1)
    fig, axes = new_figure(((0.56 * len(tests) + 2.0) * cols, (0.34 * n_train + 1.3) * rows_n),
                           rows_n, cols, squeeze=False)
    fig.set_layout_engine("constrained")
    for ax in axes.flat[len(probes):]:
        ax.axis("off")
    im = None
    for ax, probe in zip(axes.flat, probes, strict=False):
        trains = [t for t in r.train_sets if probe in r.best_layer.get(t, {})]
        vals = np.full((len(trains), len(tests)), np.nan)
        for i, t in enumerate(trains):
            for j, s in enumerate(tests):
                v = verdicts.get((t, probe, s))
                if v is None:
                    continue
                vals[i, j] = v["value"]
                sided = v["verdict"] in SIDED
                dark = abs(v["value"] - 0.5) > 0.3
                box = None
                if v.get("explained_by"):
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="////",
                                           ec="white" if dark else "#444444", lw=0))
                    box = {"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none",
                           "alpha": 0.85}
                elif sided:
                    ax.add_patch(Rectangle((j - 0.46, i - 0.46), 0.92, 0.92, fill=False,
                                           ec="black", lw=1.8))
                mark = _marks(v)
                ax.text(j, i, f"{v['value']:.2f}" + (f" {mark}" if mark else ""), ha="center",
                        va="center", fontsize=7.5, fontweight="bold" if sided else "normal",
                        bbox=box, color="black" if box else "white" if dark else
                        "black" if sided else "#555555")
        im = ax.imshow(vals, cmap="RdBu_r", vmin=0, vmax=1, aspect="auto", zorder=0)
        ax.set_xticks(range(len(tests)), [plain_text(t) for t in tests], rotation=30, ha="right",
                      fontsize=8)
        ax.set_yticks(range(len(trains)),
                      [plain_text(f"{t} (L{r.best_layer[t][probe]})") for t in trains],
                      fontsize=8)
        ax.set_title(plain_text(PROBE_LABELS.get(probe, probe)), fontsize=10, fontweight="bold")
        ax.tick_params(length=0)
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), fraction=0.015, pad=0.01,
                     label="test accuracy")
    return figure_png(fig)


def _pca_grid(r: Any) -> str:
    names = list(r.pca["own"])
    cols = min(4, len(names))
    rows = (len(names) + cols - 1) // cols
    fig, axes = new_figure((3.1 * cols, 2.9 * rows), rows, cols, squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names, strict=False):
        d = r.pca["own"][name]
        lab = np.asarray(d["label"])
        x, y = np.asarray(d["x"]), np.asarray(d["y"])
        ax.scatter(x[lab == 0], y[lab == 0], s=6, c="#c0392b", alpha=0.6, label="false")
        ax.scatter(x[lab == 1], y[lab == 1], s=6, c="#1f4e9c", alpha=0.6, label="true")
        ev = d["explained"]
        ax.set_title(plain_text(f"{name}\nPC1 {ev[0]:.0%}, PC2 {ev[1]:.0%}"), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes.flat[0].legend(fontsize=7, loc="best")
    fig.suptitle(f"Top two principal components of each dataset, layer {r.pca['layer']}",
                 fontsize=10)
    return figure_png(fig)


def _pca_cross(r: Any, view: dict[str, Any]) -> str:
    fig, axes = new_figure((7.4, 3.2), 1, 2, sharex=True, sharey=True)
    for ax, (xs, ys, lab, title) in zip(axes, [
        (view["x_basis"], view["y_basis"], view["label_basis"], f"{view['basis']} (own basis)"),
        (view["x"], view["y"], view["label"], f"{view['data']} in {view['basis']}'s basis"),
    ], strict=True):
        lab = np.asarray(lab)
        x, y = np.asarray(xs), np.asarray(ys)
        ax.scatter(x[lab == 0], y[lab == 0], s=6, c="#c0392b", alpha=0.6, label="false")
        ax.scatter(x[lab == 1], y[lab == 1], s=6, c="#1f4e9c", alpha=0.6, label="true")
        ax.set_title(plain_text(title), fontsize=9)
        ax.set_xlabel("PC1")
    axes[0].set_ylabel("PC2")
    axes[0].legend(fontsize=7)
    return figure_png(fig)


def _verdict_index(r: Any) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(v["train"], v["probe"], v["test"]): v for v in r.verdicts}


def _row(v: dict[str, Any]) -> dict[str, Any]:
    return {**v, "probe_name": PROBE_LABELS.get(v["probe"], v["probe"]), "marks": _marks(v),
            "explained_by": v.get("explained_by", []),
            "partly_explained_by": v.get("partly_explained_by", [])}


def _verdict_groups(r: Any) -> list[dict[str, Any]]:
    """Every cell of the generalization matrix, one group per verdict (in ``VERDICT_ORDER``),
    each sorted by distance from chance, largest first."""
    groups = []
    for verdict in VERDICT_ORDER:
        rows = sorted((_row(v) for v in r.verdicts if v["verdict"] == verdict),
                      key=lambda v: -abs(v["value"] - 0.5))
        if rows:
            groups.append({"verdict": verdict, "rows": rows,
                           "explained": sum(bool(v["explained_by"]) for v in rows)})
    return groups


def _erasure_nulls_figures(r: Any) -> dict[str, Any]:
    """The figures of the optional erasure and null section (none when it was not run)."""
    from interplab.report.erasure import erasure_figures
    from interplab.report.nulls import figure_probes

    en = getattr(r, "erasure_nulls", None)
    if not en:
        return {"erasure_figures": {}, "nulls_figures": {}}
    return {"erasure_figures": erasure_figures(en["erasure"]),
            "nulls_figures": {"probes": figure_probes(en["nulls"])}}


def write_truth_report(result: Any, path: str | Path) -> Path:
    """Write the HTML report of a :class:`~interplab.studies.truth.TruthResult` to ``path``."""
    r = result
    figures = {
        "by_layer": [(t, _accuracy_by_layer(r, t)) for t in r.train_sets if t in r.heldout],
        "headline": _headline(r),
        "pca": _pca_grid(r),
        "pca_cross": [(v["data"], v["basis"], _pca_cross(r, v)) for v in r.pca["cross"]],
    }
    lik = r.likelihood
    likelihood_rows = []
    for name in r.test_sets:
        d = lik["per_dataset"][name]
        first = r.train_sets[0] if r.train_sets else None
        likelihood_rows.append({
            "name": name, **d,
            "baseline": lik["baseline"][first]["test"][name] if first else None,
            "probe_r": {PROBE_LABELS.get(p, p): v.get(name)
                        for p, v in lik["probe_logprob_r"].get(first, {}).items()},
        })
    return render(
        "truth.html", path, r=r, figures=figures, **_erasure_nulls_figures(r),
        in_distribution=[_row(v) for v in getattr(r, "in_distribution", None) or []],
        groups=_verdict_groups(r), verdict_words=VERDICT_WORDS, probe_labels=PROBE_LABELS,
        control_letters=CONTROL_LETTERS, control_words=CONTROL_WORDS,
        likelihood_rows=likelihood_rows,
        first_train=r.train_sets[0] if r.train_sets else "",
    )


def summary_lines(result: Any) -> list[str]:
    """What ``interplab truth`` prints: test accuracy at the chosen layer beside each control,
    then the summary and the notes."""
    lines = [f"truth study · {result.model['name']} (test accuracy at the layer chosen on "
             "validation; controls: shuffled, random, reset)"]
    for train in result.train_sets:
        for probe, layer in result.best_layer.get(train, {}).items():
            li = result.layers.index(layer)
            e = result.heldout[train][probe]
            p = e["probe"]
            controls = " ".join(f"{v} {e[v]['value'][li]:.2f}" if v in e else f"{v} –"
                                for v in ("shuffled", "random", "reset"))
            lines.append(f"  {train:24s} {probe:10s} layer {layer:<3d} "
                         f"{p['value'][li]:.2f} [{p['lo'][li]:.2f}, {p['hi'][li]:.2f}]  {controls}")
    lines.extend(f"• {s}" for s in result.summary)
    lines.extend(f"note: {n}" for n in result.notes)
    return lines
