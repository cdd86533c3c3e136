"""HTML report of a null battery. The top tells the finding: a few bullets that grade each
statistic against every null source it ran (model − null differences and the probe against
norm-matched random directions, read through their Benjamini–Hochberg q-values, a null that does
as well as the model named as explaining it), then the headline figure, each statistic beside
its null distribution. Then the complete tables: probe accuracy on real activations and on each
null, the random-direction distribution, SAE reconstruction and features used per source. Reads
a :class:`~interplab.studies.nulls.NullsResult` (or its JSON dict); computes nothing new."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from interplab.report.html import figure_png, new_figure, plain_text, q_text, render


def _as_dict(result: Any) -> dict[str, Any]:
    from dataclasses import asdict, is_dataclass

    return asdict(result) if is_dataclass(result) else result


CHANCE = 0.5  # the statements are balanced true/false


def _ci(c: dict[str, Any], nd: int = 2) -> str:
    return f"{c['value']:.{nd}f} [{c['lo']:.{nd}f}, {c['hi']:.{nd}f}]"


def _diff(c: dict[str, Any], nd: int = 3) -> str:
    return f"{c['value']:+.{nd}f} [{c['lo']:+.{nd}f}, {c['hi']:+.{nd}f}]"


def source_order(r: dict[str, Any]) -> list[str]:
    """The model first, then the nulls by model − null accuracy of the first probe, smallest
    first (the nulls that read as well as the model, or better, first)."""
    probe = next(iter(r["probes"]["model"]))
    nulls = [s for s in r["probes"] if s != "model"]
    return ["model", *sorted(nulls, key=lambda s: (
        (r["probes"][s][probe].get("model_minus_this") or {}).get("value", 0.0), s))]


def sae_order(r: dict[str, Any]) -> list[str]:
    """The model first, then the nulls by held-out FVE, highest first."""
    nulls = [s for s in r["saes"] if s != "model"]
    return ["model", *sorted(nulls, key=lambda s: (-r["saes"][s]["heldout"]["fve"], s))]


def _beyond(tests: list[tuple[str, dict[str, Any]]]) -> tuple[str, list[str]]:
    """The nulls the model is above after correction, in words (names, the range of model −
    null and the largest q; every difference with its interval is in the tables), and the
    nulls that explain the reading (the model is not above them)."""
    above = [(s, t) for s, t in tests if t.get("verdict") == "above the null"]
    explain = [s for s, t in tests if t.get("verdict") != "above the null"]
    if not above:
        return "", explain
    worst = max((t for _, t in above), key=lambda t: t["q"])
    lo, hi = min(t["value"] for _, t in above), max(t["value"] for _, t in above)
    names = "every null source" if not explain else ", ".join(s for s, _ in above)
    span = f"{lo:+.3f}" if lo == hi else f"{lo:+.3f} to {hi:+.3f}"
    return f"{names} (model − null {span}, largest {q_text(worst)})", explain


def findings(r: dict[str, Any]) -> list[str]:
    """The top of the page, 3–5 bullets: each probe on the model against random directions and
    every null source, the SAE's held-out reconstruction against every null, and what the
    corrected family can and cannot show at this number of draws."""
    out = []
    probes = list(r["probes"]["model"])
    for p in probes[:3]:
        model = r["probes"]["model"][p]
        rd = r["random_directions"].get(p) or {}
        t = rd.get("probe_test")
        tests = [(s, r["probes"][s][p]["model_minus_this"]) for s in source_order(r)[1:]
                 if r["probes"][s][p].get("model_minus_this")]
        above, explain = _beyond(tests)
        line = (f"{p} reads {_ci(model)} on the model's held-out statements (chance "
                f"{CHANCE:.2f})")
        if t and "q" in t:
            line += (f"; against {rd['n']} norm-matched random directions (95% of them below "
                     f"{rd['p95']:.2f}): {t['verdict']} ({q_text(t)})")
        if model["lo"] <= CHANCE <= model["hi"]:
            out.append(line + "; its interval includes chance, so the probe reads nothing on "
                       "the model for a null to explain.")
            continue
        line += f"; beyond {above}" if above else "; beyond no null source"
        if explain:
            line += (". Explained by " + ", ".join(explain) + ": the same probe reads that null "
                     "as well within error")
        out.append(line + ".")
    saes = r.get("saes") or {}
    if saes:
        model = saes["model"]
        tests = [(s, saes[s]["model_minus_this"]["fve_heldout"]) for s in sae_order(r)[1:]
                 if saes[s].get("model_minus_this")]
        above, explain = _beyond(tests)
        line = (f"The SAE explains {model['heldout']['fve']:.3f} of the variance of held-out model "
                f"activations ({model['train']['fve']:.3f} on its training rows)")
        if tests:
            line += f"; held-out FVE beyond {above}" if above else "; beyond no null source"
            if explain:
                line += (". Explained by " + ", ".join(
                    f"{s} (held-out FVE {saes[s]['heldout']['fve']:.3f})" for s in explain)
                    + ": the same SAE reconstructs that data as well or better")
        else:
            line += "; " + ", ".join(f"{s} {saes[s]['heldout']['fve']:.3f}"
                                     for s in sae_order(r)[1:])
        out.append(line + ".")
    st = r.get("statistics")
    if st:
        line = (f"{st['m']} p-values corrected together ({st['method']}, false discovery rate "
                f"{st['alpha']:g}); verdicts read the q-values.")
        alone = st.get("floor_q_alone")
        if alone is not None and alone > st["alpha"]:
            line += (f" At these numbers of draws ({r['config'].get('n_random_directions')} random "
                     f"directions, {r['config']['run']['n_boot']} bootstrap resamples) a lone "
                     f"effect at its p-value floor gets q = {alone:.2g}, above {st['alpha']:g}: "
                     "\"not significant\" can mean too few draws; run again with more "
                     "(--n-boot, --n-random-directions) before reading it as no effect.")
        out.append(line)
    return out[:5]


def figure_headline(r: dict[str, Any]) -> str:
    """Each statistic beside its nulls: probe accuracy on the model, on every null source and
    over the norm-matched random directions (95 % intervals); with SAEs, the held-out and
    training FVE of model − null per source with intervals, coloured by the corrected verdict."""
    saes = r.get("saes") or {}
    ncols = 2 if saes and any(m.get("model_minus_this") for m in saes.values()) else 1
    fig, axes = new_figure((11.0 if ncols == 2 else 8.0, 3.3), 1, ncols, squeeze=False,
                           gridspec_kw={"width_ratios": [1.4, 1][:ncols]})
    ax = axes[0][0]
    sources = source_order(r)
    probes = list(r["probes"]["model"])
    w = 0.7 / len(probes)
    for i, p in enumerate(probes):
        off = (i - (len(probes) - 1) / 2) * w
        for j, s in enumerate(sources):
            c = r["probes"][s][p]
            ax.errorbar([j + off], [c["value"]], yerr=[[c["value"] - c["lo"]], [c["hi"] - c["value"]]],
                        fmt="o" if s == "model" else "s", ms=5, capsize=2,
                        color=f"C{i}", mfc=f"C{i}" if s == "model" else "white",
                        label=plain_text(p) if j == 0 else None)
        rd = r["random_directions"].get(p)
        if rd:
            x = len(sources) + off
            ax.scatter(np.full(rd["n"], x) + np.linspace(-w / 3, w / 3, rd["n"]), rd["values"],
                       s=6, color=f"C{i}", alpha=0.6)
            ax.vlines(x, rd["p05"], rd["p95"], color=f"C{i}", lw=3, alpha=0.4)
    ax.axhline(CHANCE, color="k", ls="--", lw=0.8)
    ax.axvspan(0.5, len(sources) + 0.5, color="#f2f2f2", zorder=-1)
    ax.set_xticks(range(len(sources) + 1), [plain_text(s) for s in sources]
                  + ["random\ndirections"], fontsize=8, rotation=20)
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0.0, 1.02)
    ax.set_title("Probe on the model (filled) and on each null (grey band)", fontsize=9)
    ax.legend(fontsize=7, loc="lower left")
    if ncols == 2:
        ax2 = axes[0][1]
        nulls = [s for s in sae_order(r)[1:] if saes[s].get("model_minus_this")]
        colours = {"above the null": "#1f6f3f", "below the null": "#b03a2e"}
        for j, s in enumerate(nulls):
            for key, dy, mfc in (("fve_heldout", -0.15, None), ("fve_train", 0.15, "white")):
                d = saes[s]["model_minus_this"][key]
                colour = colours.get(d.get("verdict"), "#555555")
                ax2.errorbar([d["value"]], [j + dy], xerr=[[d["value"] - d["lo"]], [d["hi"] - d["value"]]],
                             fmt="o", ms=5, capsize=2, color=colour, mfc=mfc or colour,
                             label=("held-out" if key == "fve_heldout" else "train")
                             if j == 0 else None)
        ax2.axvline(0, color="k", lw=0.8)
        ax2.set_yticks(range(len(nulls)), [plain_text(s) for s in nulls], fontsize=8)
        ax2.invert_yaxis()
        ax2.set_xlabel("SAE FVE, model − null (green: above, red: below the null, corrected)",
                       fontsize=8)
        ax2.set_title("SAE reconstruction against each null", fontsize=9)
        ax2.legend(fontsize=7)
    fig.tight_layout()
    return figure_png(fig)


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
    sources = sae_order(r)
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
    r = {"versions": {}, "timings": {}, **_as_dict(result)}
    figures = {"headline": figure_headline(r)}
    if r["saes"]:
        figures["saes"] = figure_saes(r)
    return render("nulls.html", path, r=r, figures=figures, findings=findings(r),
                  order=source_order(r), sae_rows=sae_order(r) if r["saes"] else [],
                  headline_above=True)


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
