"""The truth study's report: one self-contained HTML file with its figures inline.

The page answers its question first (the summary the study wrote), then shows the graded
findings in one table, the controls that are off with a comment each, and the figures: test
accuracy by layer per probe with every control, the validation curve and the chosen layer;
generalization heatmaps at the chosen layer (cells below chance stand out in blue); PCA scatter
of each dataset and of one dataset in another's basis; plus the likelihood table. It draws what
the result holds and computes nothing new: verdicts and their thresholds come from the study.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from interplab.controls.multiple import VERDICT_WORDS
from interplab.report.html import figure_png, new_figure, plain_text, render
from interplab.studies.truth import PROBE_LABELS

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


def _heatmap(r: Any, probe: str) -> str:
    trains = [t for t in r.train_sets if probe in r.accuracy.get(t, {})]
    tests = r.test_sets
    vals = np.full((len(trains), len(tests)), np.nan)
    ctrl = np.full_like(vals, np.nan)
    reset = np.full_like(vals, np.nan)
    for i, t in enumerate(trains):
        layer = r.best_layer[t][probe]
        for j, s in enumerate(tests):
            vals[i, j] = r.acc(t, probe, "probe", layer, s)["value"]
            if "shuffled" in r.accuracy[t][probe]:
                ctrl[i, j] = r.acc(t, probe, "shuffled", layer, s)["value"]
            if "reset" in r.accuracy[t][probe]:
                reset[i, j] = r.acc(t, probe, "reset", layer, s)["value"]
    fig, ax = new_figure((1.05 * len(tests) + 2.2, 0.75 * len(trains) + 1.6))
    im = ax.imshow(vals, cmap="RdBu_r", vmin=0, vmax=1, aspect="auto")
    for i in range(len(trains)):
        for j in range(len(tests)):
            text = f"{vals[i, j]:.2f}"
            if not np.isnan(ctrl[i, j]):
                text += f"\nsh {ctrl[i, j]:.2f}"
            if not np.isnan(reset[i, j]):
                text += f"\nrs {reset[i, j]:.2f}"
            dark = abs(vals[i, j] - 0.5) > 0.3
            ax.text(j, i, text, ha="center", va="center", fontsize=7,
                    color="white" if dark else "black")
    ax.set_xticks(range(len(tests)), [plain_text(t) for t in tests], rotation=35, ha="right",
                  fontsize=8)
    ax.set_yticks(range(len(trains)),
                  [plain_text(f"{t} (L{r.best_layer[t][probe]})") for t in trains], fontsize=8)
    ax.set_xlabel("test set (own datasets: test split; others: all rows but twins of "
                  "training rows)", fontsize=8)
    ax.set_ylabel("trained on")
    ax.set_title(plain_text(f"{PROBE_LABELS.get(probe, probe)}: accuracy at each row's chosen "
                            "layer (sh = shuffled control, rs = reset network)"), fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02)
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


def _summary_rows(r: Any) -> list[dict[str, Any]]:
    rows = []
    for train in r.train_sets:
        for probe in r.probes:
            if probe not in r.heldout.get(train, {}):
                continue
            layer = r.best_layer[train][probe]
            li = r.layers.index(layer)
            row = {"train": train, "probe_name": PROBE_LABELS.get(probe, probe), "layer": layer,
                   "validation": r.validation[train][probe]["value"][li]}
            for variant in ("probe", "shuffled", "random", "reset"):
                e = r.heldout[train][probe].get(variant)
                row["acc" if variant == "probe" else variant] = None if e is None else {
                    "value": e["value"][li], "lo": e["lo"][li], "hi": e["hi"][li], "n": e["n"]}
            rows.append(row)
    return rows


def _verdict_index(r: Any) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(v["train"], v["probe"], v["test"]): v for v in r.verdicts}


def _transfer_rows(r: Any) -> list[dict[str, Any]]:
    """The headline transfers, each with its controls and the study's verdict."""
    wanted = [("cities", "neg_cities"), ("cities", "sp_en_trans"), ("larger_than", "smaller_than"),
              ("cities", "cities_conj"), ("cities", "cities_disj")]
    verdicts = _verdict_index(r)
    return [{**verdicts[(train, probe, test)], "probe_name": PROBE_LABELS.get(probe, probe)}
            for train, test in wanted for probe in r.probes
            if (train, probe, test) in verdicts]


def _finding_rows(r: Any) -> list[dict[str, Any]]:
    """Every transfer the study did not read as chance, plus own-split results the reset network
    matches: one table instead of one box per finding, most striking first."""
    order = ["inverted", "weakly below chance", "one class", "above chance", "weakly above chance",
             "too few statements", "chance"]
    rows = [{**v, "probe_name": PROBE_LABELS.get(v["probe"], v["probe"])} for v in r.verdicts
            if (v["kind"] == "transfer" and v["verdict"] != "chance") or v["reset_matches"]]
    return sorted(rows, key=lambda v: (order.index(v["verdict"]), v["value"]))


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
        "heatmaps": [(PROBE_LABELS.get(p, p), _heatmap(r, p)) for p in r.probes
                     if any(p in r.accuracy.get(t, {}) for t in r.train_sets)],
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
        summary=_summary_rows(r),
        transfers=_transfer_rows(r), findings=_finding_rows(r), verdict_words=VERDICT_WORDS,
        probe_labels=PROBE_LABELS, likelihood_rows=likelihood_rows,
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
