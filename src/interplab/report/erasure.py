"""HTML report of an erasure study. The top tells the finding: a few bullets graded against
every control the study ran (chance, the same-rank random subspace, an MLP probe, the model's
own answers against random subspaces with Benjamini–Hochberg q-values, shuffled labels for the
directions curve), then the headline figure, held-out accuracy before and after each method
beside its random-subspace control. Then the complete tables, the directions curve and what was
not tested. Reads an :class:`~interplab.studies.erasure.ErasureResult` (or its JSON dict);
computes nothing new: the grading reads the stored intervals and q-values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from interplab.report.html import figure_png, new_figure, plain_text, q_text, render

BARS = (("linear", "before", "linear, before"), ("linear", "erased", "linear, erased"),
        ("linear", "random", "linear, random subspace"), ("mlp", "erased", "MLP, erased"),
        ("mlp", "random", "MLP, random subspace"))


def _as_dict(result: Any) -> dict[str, Any]:
    from dataclasses import asdict, is_dataclass

    return asdict(result) if is_dataclass(result) else result


GRADES = {"erased": "erased beyond the random-subspace control",
          "control": "explained by the random-subspace control",
          "kept": "not erased (still decodable)",
          "nothing": "nothing to erase (chance before erasure)"}


def _ci(c: dict[str, Any], nd: int = 2) -> str:
    return f"{c['value']:.{nd}f} [{c['lo']:.{nd}f}, {c['hi']:.{nd}f}]"


def _span(cells: list[dict[str, Any]]) -> str:
    lo, hi = min(c["value"] for c in cells), max(c["value"] for c in cells)
    return f"{lo:.2f}" if f"{lo:.2f}" == f"{hi:.2f}" else f"{lo:.2f}–{hi:.2f}"


def _g(c: dict[str, Any]) -> str:
    return f"{c['value']:+.3g} [{c['lo']:+.3g}, {c['hi']:+.3g}]"


def grade_methods(r: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each method's held-out linear check against chance and its controls: ``grade`` (a key of
    :data:`GRADES`), ``explained_by`` (the controls that account for the result: the random
    subspace when it too reaches chance, chance itself when the probe could not read the concept
    before erasure), ``mlp_recovers`` (an MLP probe reads it after erasure; None when the MLP
    cannot read it before either, so its check says nothing). "Reaches chance" means the 95 %
    interval includes the majority rate."""
    out = {}
    for m, c in r["checks"].items():
        lin, mlp, maj = c["accuracy"]["linear"], c["accuracy"]["mlp"], c["majority"]
        if lin["before"]["lo"] <= maj:
            grade, by = "nothing", ["chance before erasure"]
        elif lin["erased"]["lo"] <= maj:
            grade, by = ("control", ["random subspace"]) if lin["random"]["lo"] <= maj else (
                "erased", [])
        else:
            grade, by = "kept", []
        out[m] = {"grade": grade, "words": GRADES[grade], "explained_by": by,
                  "mlp_recovers": (mlp["erased"]["lo"] > maj) if mlp["before"]["lo"] > maj
                  else None}
    return out


def method_order(r: dict[str, Any]) -> list[str]:
    """The methods sorted by the held-out linear accuracy after erasure, lowest (most erased)
    first, ties by name: the order of the headline figure and the checks table."""
    return sorted(r["checks"], key=lambda m: (r["checks"][m]["accuracy"]["linear"]["erased"]
                                              ["value"], m))


def _label(m: str, c: dict[str, Any]) -> str:
    return f"{m} (rank {c['rank']})" if c.get("rank") is not None else m


def findings(r: dict[str, Any]) -> list[str]:
    """The top of the page, 3–5 bullets: what a probe reads before erasure (the gate), which
    methods erase it beyond their random-subspace control and which a control explains, the
    MLP check and the in-model cost, the model's own answers (q-values after BH; a change of
    behaviour is read as one about truth only when the model separates true from false), and
    the directions curve against shuffled labels."""
    grades, order = grade_methods(r), method_order(r)
    first = r["checks"][order[0]]
    maj, lin0, mlp0 = first["majority"], first["accuracy"]["linear"]["before"], \
        first["accuracy"]["mlp"]["before"]
    out = [f"Before erasure, a linear probe at {r['hook']} reads {r['dataset']['name']} at "
           f"{_ci(lin0)} on {r['n_test']} held-out statements (chance {maj:.2f}); an MLP probe "
           f"at {_ci(mlp0)}."
           + (" The linear reading's interval reaches chance: there is nothing to erase, and no "
              "method's result below says anything about erasure." if lin0["lo"] <= maj else "")]
    by = {g: [m for m in order if grades[m]["grade"] == g] for g in GRADES}
    parts = []
    if by["erased"]:
        lin = [r["checks"][m]["accuracy"]["linear"] for m in by["erased"]]
        parts.append("Erased to chance beyond the same-rank random-subspace control: "
                     + ", ".join(_label(m, r["checks"][m]) for m in by["erased"])
                     + f" (linear accuracy after erasure {_span([c['erased'] for c in lin])}; "
                     f"after the random subspace {_span([c['random'] for c in lin])}).")
    elif not by["nothing"]:
        parts.append("No method erases it beyond its random-subspace control.")
    if by["control"]:
        parts.append("Explained by the random-subspace control (it reaches chance too): "
                     + ", ".join(by["control"]) + ".")
    if by["kept"]:
        parts.append("Still decodable after erasure: " + ", ".join(
            f"{m} {r['checks'][m]['accuracy']['linear']['erased']['value']:.2f}"
            for m in by["kept"]) + ".")
    if parts and not by["nothing"]:
        out.append(" ".join(parts))
    mlp = [m for m in order if grades[m]["grade"] == "erased"]
    if mlp0["lo"] <= maj:
        line = (f"The MLP probe cannot read the concept before erasure either ({_ci(mlp0)}), so "
                "the non-linear check says nothing here.")
    else:
        back = [m for m in mlp if grades[m]["mlp_recovers"]]
        line = ("An MLP probe reads it again after " + ", ".join(back) + " (linear erasure only)."
                if back else "No MLP probe reads it after the methods that erase it linearly."
                if mlp else "")
    cost = [f"{m} {e['erased']['delta_ce']:+.3f} ({e['random']['delta_ce']:+.3f})"
            for m, e in r.get("in_model", {}).items()]
    if cost:
        line += (" " if line else "") + ("In-model cost, ΔCE in nats per token of neutral text "
                                         "(a random subspace of the same rank): "
                                         + ", ".join(cost) + ".")
    if line:
        out.append(line)
    b = r.get("behaviour")
    if b:
        sep = b["plain"]["separation"]
        gate = sep["lo"] > 0
        tests = sorted(b["erasers"].items(), key=lambda kv: kv[1].get("vs_random", {}).get(
            "q", 1.0))
        tested = [(m, e) for m, e in tests if "q" in e.get("vs_random", {})]
        beyond = [(m, e) for m, e in tested if e["vs_random"]["verdict"] != "not significant"]
        rest = [m for m, e in tested if e["vs_random"]["verdict"] == "not significant"]
        verdicts = "; ".join(
            f"{m} Δ separation {_g(e['separation_change'])}, "
            f"{BEHAVIOUR_WORDS[e['vs_random']['verdict']]} ({q_text(e['vs_random'])})"
            for m, e in beyond)
        if rest:
            least = min((e["vs_random"] for m, e in tested if m in rest), key=lambda t: t["q"])
            verdicts += (("; " if verdicts else "") + "not beyond random: " + ", ".join(rest)
                         + f" (smallest {q_text(least)})")
        out.append((f"The model's own few-shot answers separate true from false ({_g(sep)}); "
                    "against random subspaces of the same rank (BH-corrected): " if gate else
                    f"The model's own few-shot answers do not separate true from false "
                    f"({_g(sep)}, the interval includes 0), so no change below is read as one "
                    "about truth; against random subspaces of the same rank (BH-corrected): ")
                   + (verdicts or "not tested") + ".")
    d = r.get("directions")
    if d:
        def rounds(k: str) -> str:
            n = d[k]["rounds_to_chance"]
            return str(n) if n is not None else f"more than {len(d[k]['rounds']) - 1}"
        out.append(f"Erasing one linear direction at a time and retraining, held-out accuracy "
                   f"reaches chance after {rounds('labels')} direction(s); with shuffled labels "
                   f"(the control) after {rounds('shuffled')}.")
    return out[:5]


BEHAVIOUR_WORDS = {"above the null": "separation raised beyond random",
                   "below the null": "separation lowered beyond random",
                   "not significant": "not beyond random"}


def figure_checks(r: dict[str, Any]) -> str:
    """Held-out accuracy before and after each method beside its random-subspace control, with
    95 % intervals; methods in :func:`method_order`, chance dashed."""
    methods = method_order(r)
    x = np.arange(len(methods))
    w = 0.8 / len(BARS)
    fig, ax = new_figure((max(8.0, 1.3 * len(methods)), 3.1))
    for i, (probe, cond, label) in enumerate(BARS):
        cells = [r["checks"][m]["accuracy"][probe][cond] for m in methods]
        v = np.array([c["value"] for c in cells])
        err = np.array([[c["value"] - c["lo"] for c in cells], [c["hi"] - c["value"] for c in cells]])
        ax.bar(x + (i - len(BARS) / 2 + 0.5) * w, v, w, yerr=err, capsize=2, label=label)
    for i, m in enumerate(methods):
        maj = r["checks"][m]["majority"]
        ax.hlines(maj, i - 0.45, i + 0.45, colors="k", linestyles="--", lw=0.8)
    ax.set_xticks(x, [plain_text(m) for m in methods], fontsize=8)
    ax.set_ylim(0.0, 1.02)
    ax.set_ylabel("held-out accuracy")
    ax.set_title("Probe accuracy before and after erasure, beside a random subspace of the same "
                 "rank (dashed: chance)", fontsize=9)
    ax.legend(fontsize=7, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)
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
    r = {"versions": {}, "timings": {}, **_as_dict(result)}
    return render("erasure.html", path, r=r, figures=erasure_figures(r), findings=findings(r),
                  grades=grade_methods(r), order=method_order(r), headline_above=True,
                  behaviour_order=sorted(
                      (r.get("behaviour") or {}).get("erasers", {}),
                      key=lambda m: r["behaviour"]["erasers"][m].get("vs_random", {}).get("q", 2)))


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
