"""What the causal study may claim, and in which words: the comparison table, the corrected
statistics, the gates (does the model tell true from false on the task? is there a patching
gap to localise?) and the findings.

A direction is called **causal for truth** only when all of these hold: the model tells true
from false on the task (the unsteered true − false gap's interval lies above 0); the direction's
effect is above 0 and beyond the random-direction null after correction; it is larger on
statements than on prompts with no statement (the non-propositional control, after
correction); and its effect normalised by the gap has an interval above 0. A direction that
passes the null and the control on a task the model does not solve "moves the answer" and no
more. Nothing is localised, and no share of a gap is given, from a patching gap whose interval
includes 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from interplab.controls import format_p
from interplab.controls.multiple import correct_cells
from interplab.studies.causal.config import label
from interplab.studies.causal.tasks import normalised_effect


def _f(v: float | None, fmt: str = "+.3f") -> str:
    if v is None or v != v:
        return "n/a"
    if fmt == "+.3f" and v != 0 and abs(v) < 5e-4:  # a tiny effect is not "+0.000"
        return format(v, "+.1e")
    return format(v, fmt)


def _ci(v: float | None, lo: float | None, hi: float | None, fmt: str = "+.3f") -> str:
    return f"{_f(v, fmt)} [{_f(lo, fmt)}, {_f(hi, fmt)}]"


# ---------------------------------------------------------------------------------- table
def comparison(steering: dict[str, dict[str, Any]], dataset: str, baseline: dict[str, Any],
               labels: np.ndarray, config: Any) -> list[dict[str, Any]]:
    """One row per probe at the null's dose: the effect with its interval, the null (raw ``p``,
    ``k``, ``z``, ``at_floor``; ``q``, ``q_bound``, ``verdict`` after :func:`statistics`), side
    effects, and the effect normalised by the true − false gap (None when the model does not
    tell true from false there)."""
    rows = []
    for name, r in steering.items():
        s, null, side = r["summary"], r["null"], r["side_effects"]
        k = r["doses"].index(null["dose"])
        norm = (normalised_effect(np.asarray(r["effects"])[:, k], np.asarray(r["baseline"]),
                                  labels, n_boot=config.run.n_boot, seed=config.run.seed)
                if baseline["solves"] else None)
        rows.append({"probe": name, "label": label(name), "dataset": dataset,
                     "dose": null["dose"], "effect": s["mean"][k], "lo": s["lo"][k],
                     "hi": s["hi"][k], "slope": s["slope"], "slope_lo": s["slope_lo"],
                     "slope_hi": s["slope_hi"], "wrong_way": s["wrong_way"],
                     "null_mean": null["mean"], "null_sd": null["sd"],
                     "null_max": float(np.max(np.abs(null["values"]))),
                     "percentile": null["percentile"], "kl": side["kl_mean"][k],
                     "delta_ce": side["delta_ce"][k] if side["delta_ce"] else None,
                     "normalised": norm, "hooks": r["hooks"],
                     **{key: null[key] for key in ("p", "k", "z", "at_floor")}})
    return rows


def statistics(comparison: list[dict[str, Any]], control: dict[str, Any],
               patching: dict[str, Any]) -> dict[str, Any]:
    """Every p-value the study emits, corrected as one family (Benjamini–Hochberg): each probe's
    steering effect on each dataset against its random directions, each probe's statement −
    control difference (bootstrap), and each held-out patched node against its random
    directions. ``q``, ``q_bound`` and ``verdict`` are written into each tested cell."""
    cells: list[tuple[str, Any, float | None]] = []
    for row in comparison:
        cells.append((f"steer {row['probe']} on {row['dataset']}", row, row["effect"]))
    for name, c in control["probes"].items():
        cells.append((f"statement − no-statement control, {name}", c, c["difference"]))
    for node in _null_nodes(patching):
        offsets = ",".join(str(o) for o in node["positions"])
        cells.append((f"patch {node['hook']} @{offsets}", node, node["effect"]))
    family = correct_cells(cells)
    out = family.to_dict()
    out["family"] = ("every p-value of this study: each probe direction's steering effect on "
                     "each dataset against norm-matched random directions (two-sided), each "
                     "probe's statement − no-statement difference (bootstrap, two-sided) and "
                     "each held-out patched node against random directions of its norm")
    return out


def verdict(baseline: dict[str, Any], comparison: list[dict[str, Any]],
            control: dict[str, Any], patching: dict[str, Any], transfers: dict[str, Any]
            ) -> dict[str, Any]:
    """The gates and, per probe, what may be claimed."""
    probes = {}
    for row in comparison:
        if row["dataset"] != "cities":
            continue
        c = control["probes"][row["probe"]]
        moves = row["verdict"] == "above the null" and row["lo"] > 0
        beyond = c["verdict"] == "above the null" and c["difference_lo"] > 0
        norm = row["normalised"]
        norm_ok = norm is not None and norm["lo"] == norm["lo"] and norm["lo"] > 0
        probes[row["probe"]] = {
            "moves_the_answer": moves, "beyond_control": beyond, "normalised_above_0": norm_ok,
            "causal_for_truth": bool(baseline["solves"] and moves and beyond and norm_ok)}
    transfer = {}
    for row in comparison:
        if row["dataset"] == "cities":
            continue
        solved = transfers[row["dataset"]]["baseline"]["solves"]
        norm = row["normalised"]
        transfer.setdefault(row["dataset"], {})[row["probe"]] = {
            "task_solved": solved,
            "moves_the_answer": row["verdict"] == "above the null" and row["lo"] > 0,
            "normalised_above_0": norm is not None and norm["lo"] == norm["lo"]
            and norm["lo"] > 0}
    nodes = _null_nodes(patching)
    return {"task_solved": baseline["solves"], "probes": probes, "transfer": transfer,
            "localise": bool(patching.get("localise")),
            "localised_nodes": [{"hook": n["hook"], "positions": n["positions"]} for n in nodes
                                if n["verdict"] == "above the null"
                                and (n["effect_lo"] > 0 or n["effect_hi"] < 0)]}


def _null_nodes(patching: dict[str, Any]) -> list[dict[str, Any]]:
    if not patching["ran"]:
        return []
    return list(((patching["result"].get("null") or {}).get("nodes") or {}).values())


# ---------------------------------------------------------------------------------- words
CONTROL_WORDS = {"above the null": "larger on statements", "below the null":
                 "smaller on statements", "not significant": "not distinguishable"}


def _q(cell: dict[str, Any], words: dict[str, str] | None = None) -> str:
    """A tested cell's corrected verdict, with q, the raw p (its draws, at the floor "≤") and
    the z-score against the null."""
    q = format_p(cell["q"], at_floor=cell["q_bound"], name="q")
    if "k" in cell:
        raw = format_p(cell["p"], at_floor=cell["at_floor"], k=cell["k"])
    else:
        raw = format_p(cell["p"], at_floor=cell["at_floor"], k=None)
        raw += " (bootstrap)"
    z = f", z = {cell['z']:+.1f}" if cell.get("z") is not None else ""
    verdict = (words or {}).get(cell["verdict"], cell["verdict"])
    return f"{verdict} after correction ({q}; {raw} uncorrected{z})"


def findings(task: Any, choice: dict[str, Any], baseline: dict[str, Any],
             comparison: list[dict[str, Any]], control: dict[str, Any],
             transfers: dict[str, Any], patching: dict[str, Any], attribution: dict[str, Any],
             verdict: dict[str, Any], windows: dict[str, Any], config: Any) -> list[str]:
    out = _task_findings(task, choice, baseline)
    out += _steer_findings(task, baseline, comparison, control, verdict, windows)
    out += _transfer_findings(comparison, transfers)
    out += _patch_findings(patching)
    if patching["ran"] and task.answers is None:
        out.append("With the completion format the true and the false run differ in which "
                   "object the statement named, so patching follows where that object reaches "
                   "the repeat (copying), not where the statement's truth is computed.")
    out += _attr_findings(attribution)
    return out


def _task_findings(task: Any, choice: dict[str, Any], baseline: dict[str, Any]) -> list[str]:
    b = baseline
    others = [f"{name} {_f(v['standardised_gap'], '+.2f')} (gap {_ci(v['gap'], v['gap_lo'], v['gap_hi'])})"
              for name, v in choice["validation"].items()]
    out = [f"Task: the {task.name} format, read as {task.metric_text} (chosen by "
           f"{choice['rule']}; standardised gap on {choice['validation_rows']} validation "
           f"statements: {'; '.join(others)})."]
    acc = (f"; the answer word it prefers is right on {_ci(b['accuracy'], b['accuracy_lo'], b['accuracy_hi'], '.2f')} "
           f"of them (it answers true on {100 * b['share_answered_true']:.0f}%)"
           if "accuracy" in b else "")
    out.append(f"Unsteered, on the {b['n']} held-out statements: {_f(b['mean_true'])} on true "
               f"and {_f(b['mean_false'])} on false ones, a true − false gap of "
               f"{_ci(b['gap'], b['gap_lo'], b['gap_hi'])}; a true statement outscores a false "
               f"one in {_ci(b['pairwise_accuracy'], b['pairwise_lo'], b['pairwise_hi'], '.2f')} "
               f"of pairs{acc}.")
    if not b["solves"]:
        out.append("The model does not tell true from false on this task (the gap's interval "
                   "includes 0): effects normalised by the gap are undefined, and no direction "
                   "is called causal for truth. What steering can still show is whether a "
                   "direction moves the answer, beside the random-direction null and the "
                   "prompts with no statement.")
    return out


def _steer_findings(task: Any, baseline: dict[str, Any], comparison: list[dict[str, Any]],
                    control: dict[str, Any], verdict: dict[str, Any],
                    windows: dict[str, Any]) -> list[str]:
    out = []
    metric = task.metric_text
    for row in (r for r in comparison if r["dataset"] == "cities"):
        w = windows[row["probe"]]["layers"]
        span = f"layers {w[0]}–{w[-1]}" if len(w) > 1 else f"layer {w[0]}"
        c = control["probes"][row["probe"]]
        norm = row["normalised"]
        ntext = (f"; normalised by the gap, {_ci(norm['value'], norm['lo'], norm['hi'], '+.2f')}"
                 if norm is not None else "")
        out.append(
            f"{row['label']} ({span}, dose {row['dose']:g} class-mean gaps): moved {metric} by "
            f"{_ci(row['effect'], row['lo'], row['hi'])} in the intended direction{ntext}; "
            f"{row['k']} norm-matched random directions moved it by {_f(row['null_mean'])} ± "
            f"{_f(row['null_sd'], '.3f')}: {_q(row)}. On prompts with no statement the same "
            f"push moved it by {_ci(c['effect'], c['lo'], c['hi'])}; statement − no statement "
            f"{_ci(c['difference'], c['difference_lo'], c['difference_hi'])}, "
            f"{_q(c, CONTROL_WORDS)}. "
            f"KL at the answer {_f(row['kl'], '.3f')} nats.")
    causal = [label(p) for p, v in verdict["probes"].items() if v["causal_for_truth"]]
    moves = [label(p) for p, v in verdict["probes"].items()
             if v["moves_the_answer"] and v["beyond_control"]]
    if causal:
        out.append(f"Causal for truth on the {task.name} task (the model solves it; effect "
                   "beyond the random null and the no-statement control after correction; "
                   "normalised effect above 0): " + ", ".join(causal) + ".")
    elif not baseline["solves"]:
        out.append("No direction is called causal for truth: the model does not tell true from "
                   "false on the task. "
                   + (f"Moves the answer beyond the null and the no-statement control: "
                      f"{', '.join(moves)}." if moves else
                      "No direction moves the answer beyond both the null and the no-statement "
                      "control."))
    else:
        out.append("No probe direction is causal for truth: none has an effect beyond both the "
                   "random null and the no-statement control with a normalised effect above 0."
                   + (f" Beyond the null and the control, but not by a normalised effect above "
                      f"0: {', '.join(moves)}." if moves else ""))
    owners = {tuple(w["layers"]) for w in windows.values()}
    rule = next(iter(windows.values()))["rule"]
    out.append(f"Steering windows: {rule}"
               + ("; " + ", ".join(f"{label(p)} {w['layers'][0]}–{w['layers'][-1]}"
                                   for p, w in windows.items()) if len(owners) > 1 else "")
               + ".")
    return out


def _transfer_findings(comparison: list[dict[str, Any]], transfers: dict[str, Any]
                       ) -> list[str]:
    out = []
    for name, tr in transfers.items():
        b = tr["baseline"]
        rows = [r for r in comparison if r["dataset"] == name]
        parts = []
        for r in rows:
            norm = r["normalised"]
            parts.append(f"{r['label']} {_ci(r['effect'], r['lo'], r['hi'])}"
                         + (f" ({_ci(norm['value'], norm['lo'], norm['hi'], '+.2f')} of the gap)"
                            if norm is not None else "") + f", {r['verdict']} ({_qshort(r)})")
        solved = ("the model tells true from false there" if b["solves"] else
                  "the model does not tell true from false there, so no effect is normalised")
        out.append(f"Transfer to {name} ({b['n']} held-out statements; gap "
                   f"{_ci(b['gap'], b['gap_lo'], b['gap_hi'])}: {solved}): "
                   + "; ".join(parts) + ".")
    return out


def _qshort(cell: dict[str, Any]) -> str:
    return format_p(cell["q"], at_floor=cell["q_bound"], name="q")


def _patch_findings(p: dict[str, Any]) -> list[str]:
    if not p["ran"]:
        return [f"Patching was not run: {p['why']}."]
    g = p["gap"]
    head = (f"Patching true into false statements about one city ({g['n']} pairs, "
            f"{p['metric']}): the clean − corrupted gap is {_ci(g['mean'], g['lo'], g['hi'])} "
            f"(true higher in {100 * g['pairs_with_true_higher']:.0f}% of pairs)")
    if not p["localise"]:
        return [head + "; its interval includes 0, so there is nothing to localise: no node is "
                "named and no share of the gap restored is given."]
    null = p["result"]["null"]
    parts = []
    for node in null["nodes"].values():
        share = (f", {100 * node['fraction']:.0f}% of the held-out gap"
                 if node.get("fraction") is not None else "")
        parts.append(f"{node['hook']} at offset {','.join(map(str, node['positions']))}: "
                     f"{_ci(node['effect'], node['effect_lo'], node['effect_hi'])}{share}, "
                     f"{_q(node)}")
    return [head + f". Nodes of largest effect, chosen on {len(null['selected_on'])} pairs and "
            f"tested on the other {len(null['tested_on'])} against random directions of each "
            "patch's norm: " + "; ".join(parts) + "."]


def _attr_findings(a: dict[str, Any]) -> list[str]:
    if not a["ran"]:
        return []
    out = []
    for kind, row in a["agreement"].items():
        if kind == "all":
            continue
        parts = []
        for m, v in row.items():
            rho = (f"{v['spearman']:.2f}" if v["spearman"] is not None else "n/a")
            if v.get("spearman_lo") is not None:
                rho += f" [{v['spearman_lo']:.2f}, {v['spearman_hi']:.2f}]"
            parts.append(f"{'IG' if m == 'ig' else 'AtP'} Spearman {rho}, top-{v['k']} "
                         f"overlap {_f(v['top_k_overlap'], '.2f')}")
        n = next(iter(row.values()))["n_nodes"]
        line = f"{kind}: " + "; ".join(parts) + f" (vs exact patching, {n} random nodes"
        top = a.get("top_check", {}).get(kind)
        if top:
            fn = len(top["false_negatives"])
            line += (f"; of AtP's {len(top['nodes'])} top-ranked nodes {_f(top['sign_agreement'], '.0%')} "
                     f"have the exact effect's sign, and {fn} larger node(s) it ranked lower "
                     "were found among the sampled ones")
        out.append(line + ").")
    return out


def notes(task: Any, config: Any, statistics: dict[str, Any], patching: dict[str, Any],
          attribution: dict[str, Any]) -> list[str]:
    out = []
    if task.answers is not None:
        a = task.answers
        out.append(f"Answer tokens: {a['true']!r} (id {a['true_id']}) and {a['false']!r} (id "
                   f"{a['false_id']}), the first single-token spellings among "
                   f"{config.prompt.answer_true} / {config.prompt.answer_false}.")
    out.append(f"{patching['skipped_pairs']} city pairs were skipped for patching (different "
               "token counts, or objects that share their first token).")
    k = config.n_null
    out.append(f"Multiple comparisons: the {statistics['m']} p-values of this study (steering "
               "per probe and dataset, the no-statement control per probe, patching's held-out "
               f"nodes) are corrected together with Benjamini–Hochberg at a false discovery rate "
               f"of {statistics['alpha']:g}; verdicts read the corrected q-values. With {k} "
               f"random directions a null p-value's floor is 1/{k + 1} = {1 / (k + 1):.4f}: when "
               f"every test is at its floor each gets q = {1 / (k + 1):.4f}, and a lone one among "
               f"the {statistics['m']} gets q = {_f(statistics['floor_q_alone'], '.3g')}.")
    out += attribution.get("warnings", [])
    return out
