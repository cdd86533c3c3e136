"""The truth study's readings: the method as stated in the report, graded verdicts, control
checks with their comments, and the summary. Wording lives here, numbers are computed elsewhere."""

from __future__ import annotations

from typing import Any

from interplab.controls.multiple import (
    FDR_LEVEL,
    MIN_VERDICT_N,
    SIDE_OF_VERDICT,
    controls_explaining,
    grade_family,
)
from interplab.studies.truth.config import CONTROLS, TOKENS, TruthConfig, is_pair_probe, label
from interplab.study.data import StatementData
from interplab.study.layers import RULE_VALIDATION

CENTERING_WORDS = {
    "per-dataset": "every dataset centred by its own mean (each component of a mixed training set "
                   "by its own), as in the geometry-of-truth work; this uses each test set's mean",
    "train": "every input centred by the training mean; nothing about a test set is used",
    "none": "raw activations, no centring",
}


def method(config: TruthConfig, data: StatementData) -> dict[str, Any]:
    """How the numbers were made, in words the report prints."""
    return {
        "split": {"fractions": list(config.data.split),
                  "rules": {n: s.rule for n, s in data.splits.items()}},
        "centering": config.probe.centering,
        "centering_description": CENTERING_WORDS[config.probe.centering],
        "tokens": TOKENS,
        "layer_selection": f"{RULE_VALIDATION} (accuracy on the training datasets' pooled "
                           "validation splits)",
        "targets": "a training dataset is scored on its test split; any other dataset on all "
                   "its rows, except the negation twins of training rows",
        "multiple_comparisons": f"exact two-sided binomial test against 0.5 per cell, "
                                f"Benjamini-Hochberg over all cells at the chosen layers, FDR "
                                f"{FDR_LEVEL:g}; no verdict below {MIN_VERDICT_N} statements; "
                                "the pooled in-distribution rows as a family of their own",
        "controls_rule": "a verdict is explained by a control whose value lies on the same "
                         "side of chance and whose 95 % interval overlaps the probe's (or which "
                         "goes further from chance); partly explained by one whose interval "
                         "lies wholly on that side but short of the probe's",
    }


def cell(entry: dict, li: int, ti: int) -> dict[str, float]:
    return {"value": entry["value"][li][ti], "lo": entry["lo"][li][ti],
            "hi": entry["hi"][li][ti], "n": entry["n"][ti]}


def layer_cell(entry: dict, li: int) -> dict[str, float]:
    return {"value": entry["value"][li], "lo": entry["lo"][li], "hi": entry["hi"][li],
            "n": entry["n"]}


def verdicts(accuracy: dict, best_layer: dict, train_keys: list[str], test_names: list[str],
              layers: list[int], scored: dict) -> list[dict[str, Any]]:
    """One row per (training set, probe, test set) at the chosen layer, graded as a family, then
    against every control that ran: ``explained_by`` names the controls that do what the probe
    does there, ``partly_explained_by`` those that do part of it
    (:func:`~interplab.controls.multiple.controls_explaining`)."""
    rows = []
    for key in train_keys:
        own = key.split("+")
        for probe, layer in best_layer.get(key, {}).items():
            li = layers.index(layer)
            per = accuracy[key][probe]
            for ti, test in enumerate(test_names):
                row = {"train": key, "probe": probe, "layer": layer, "test": test,
                       "kind": "own test split" if test in own else "transfer",
                       **cell(per["probe"], li, ti),
                       "positive_rate": per["probe"]["positive_rate"][li][ti],
                       "twins_left_out": scored[key][test]["twins_left_out"]}
                for variant in CONTROLS:
                    row[variant] = cell(per[variant], li, ti) if variant in per else None
                rows.append(row)
    graded = grade_family([r["value"] for r in rows], [r["n"] for r in rows],
                          [r["positive_rate"] for r in rows])
    for row, verdict in zip(rows, graded, strict=True):
        row.update(verdict.to_dict())
        row.update(controls_explaining(row, row["verdict"], {v: row[v] for v in CONTROLS}))
        row["reset_matches"] = "reset" in row["explained_by"]
    return rows


def in_distribution(heldout: dict, validation: dict, best_layer: dict,
                    layers: list[int]) -> list[dict[str, Any]]:
    """One row per (training set, probe): its training datasets' own test splits pooled, at the
    chosen layer, beside every control; graded against chance as their own family, then against
    the controls like :func:`verdicts`."""
    rows = []
    for key, per_probe in heldout.items():
        for probe, entry in per_probe.items():
            layer = best_layer[key][probe]
            li = layers.index(layer)
            row = {"train": key, "probe": probe, "layer": layer,
                   "validation": validation[key][probe]["value"][li],
                   **layer_cell(entry["probe"], li)}
            for variant in CONTROLS:
                row[variant] = layer_cell(entry[variant], li) if variant in entry else None
            rows.append(row)
    graded = grade_family([r["value"] for r in rows], [r["n"] for r in rows], [None] * len(rows))
    for row, verdict in zip(rows, graded, strict=True):
        row.update(verdict.to_dict())
        row.update(controls_explaining(row, row["verdict"], {v: row[v] for v in CONTROLS}))
    return rows


def control_checks(heldout: dict, best_layer: dict, layers: list[int]) -> list[dict[str, Any]]:
    """Every control that is off on the training sets' own test splits, with a comment."""
    checks = []
    for key, per_probe in heldout.items():
        for probe, entry in per_probe.items():
            li = layers.index(best_layer[key][probe])
            p = {k: entry["probe"][k][li] for k in ("value", "lo", "hi")}
            for variant in ("shuffled", "random", "reset"):
                if variant not in entry:
                    continue
                c = {k: entry[variant][k][li] for k in ("value", "lo", "hi")}
                comment = control_comment(variant, probe, c, p)
                if comment:
                    checks.append({"train": key, "probe": probe, "layer": best_layer[key][probe],
                                   "control": variant, **c, "probe_value": p["value"],
                                   "comment": comment})
    return checks


def control_comment(variant: str, probe: str, c: dict, p: dict) -> str | None:
    """Why a control away from where it should be matters, or None when it is where expected."""
    side = "above" if c["lo"] > 0.5 else "below" if c["hi"] < 0.5 else None
    if variant == "shuffled" and side:
        what = ("broken statement/negation pairs" if is_pair_probe(probe)
                else "shuffled labels")
        return (f"Fitted on {what}, the probe still scores {c['value']:.2f}, {side} chance: "
                "such directions lean on the highest-variance axes of the residual stream, "
                f"which here correlate with the labels{' negatively' if side == 'below' else ''}. "
                f"Read the probe's {p['value']:.2f} against {c['value']:.2f}, not against 0.50.")
    if variant == "random" and side:
        return (f"Norm-matched random directions (20, each with its threshold refitted on "
                f"training labels) score {c['value']:.2f} on average, {side} chance: part of the separation lies along "
                "dominant axes that any direction overlaps with, so the probe's margin over "
                "this control, not over 0.50, is its own contribution.")
    if variant == "reset" and p["value"] > 0.6 and c["hi"] >= p["lo"]:
        return (f"The weight-permuted network reaches {c['value']:.2f} against the trained "
                f"model's {p['value']:.2f} (overlapping intervals): what the probe reads here "
                "is available without learned weights (token identity or position), so it is "
                "not evidence of a learned truth representation.")
    return None


CONTROL_NAMES = {"shuffled": "shuffled labels", "random": "random directions",
                 "reset": "the reset network"}
LISTED = 3  # cells a summary sentence names before "and N more"


def fmt(c: dict[str, Any]) -> str:
    return f"{c['value']:.2f} [{c['lo']:.2f}, {c['hi']:.2f}]"


def _names(controls: list[str]) -> str:
    return " and ".join(CONTROL_NAMES.get(c, c) for c in controls)


def _listed(items: list[str]) -> str:
    more = len(items) - LISTED
    return "; ".join(items[:LISTED]) + (f"; and {more} more (see the tables)" if more > 0 else "")


def _grouped(rows: list[dict[str, Any]], key: Any, item: Any) -> str:
    """Rows grouped by ``key(row)`` in order of first appearance, "key (item; item)" each, the
    first ``LISTED`` groups named."""
    groups: dict[str, list[str]] = {}
    for r in rows:
        groups.setdefault(key(r), []).append(item(r))
    return _listed([f"{k} ({'; '.join(v)})" for k, v in groups.items()])


def _transfer(v: dict[str, Any]) -> str:
    return f"{v['train']} → {v['test']}"


def _with_control(v: dict[str, Any], controls: list[str]) -> str:
    """"LDA 0.23 [0.14, 0.31] vs the reset network 0.26 [0.18, 0.35]"."""
    against = ", ".join(f"{CONTROL_NAMES.get(c, c)} {fmt(v[c])}" for c in controls if v.get(c))
    return f"{label(v['probe'])} {fmt(v)}" + (f" vs {against}" if against else "")


def _matched_by(rows: list[dict[str, Any]]) -> str:
    """" (2 by the reset network: token-level, no learned weights needed)", or ""."""
    token = sum("reset" in r["explained_by"] for r in rows)
    if not token:
        return " (shuffled labels or random directions)"
    return (f" ({'all' if token == len(rows) else token} by the reset network: token-level, no "
            "learned weights needed)")


def _strongest_control(v: dict[str, Any]) -> str | None:
    """The control closest to the reading, on the reading's side, in words."""
    side = SIDE_OF_VERDICT.get(v["verdict"], 1)
    present = [c for c in CONTROLS if v.get(c)]
    if not present:
        return None
    c = max(present, key=lambda c: side * (v[c]["value"] - 0.5))
    return f"{CONTROL_NAMES[c]} {fmt(v[c])}"


def summary(model: str, verdicts: list[dict], checks: list[dict],
            in_dist: list[dict]) -> list[str]:
    """The answer in at most five findings, each with its uncertainty and the control it was
    checked against: in-distribution accuracy the controls do not match (never a number a
    control matches), the results a control matches, transfer, inversions, controls that are
    off."""
    if not verdicts:
        return [f"No probe could be fitted on {model} with these settings (see the notes)."]
    out = []
    reads = [r for r in in_dist if SIDE_OF_VERDICT.get(r["verdict"]) == 1]
    clean = [r for r in reads if not r["explained_by"]]
    matched = [r for r in in_dist if r["explained_by"]]
    few = min((int(r["n"]) for r in in_dist), default=0)
    caveat = (f" (some on as few as {few} statements, too few for a verdict)"
              if few < MIN_VERDICT_N else "")
    if clean:
        best = max(clean, key=lambda r: (r["value"], r["lo"]))
        partly = (f"; {_names(best['partly_explained_by'])} already reach"
                  f"{'es' if len(best['partly_explained_by']) == 1 else ''} part of it"
                  if best["partly_explained_by"] else "")
        out.append(f"On {model}, {len(clean)} of {len(in_dist)} probe results (training set × "
                   "probe) read truth on their own test statements beyond every control. Best "
                   f"result no control matches: {label(best['probe'])} on {best['train']}, "
                   f"{fmt(best)} at layer {best['layer']} (closest control: "
                   f"{_strongest_control(best)}"
                   f"{partly}){caveat}.")
    elif reads:
        out.append(f"On {model}, no probe reads truth on its training sets' own test statements "
                   f"beyond its controls: each of the {len(reads)} read above chance is matched "
                   f"by a control{_matched_by(reads)}{caveat}: " + _grouped(
                       sorted(reads, key=lambda r: -r["value"]), lambda r: r["train"],
                       lambda r: f"{_with_control(r, r['explained_by'])} at layer {r['layer']}")
                   + ".")
    else:
        best = max(in_dist, key=lambda r: (r["value"], r["lo"]))
        out.append(f"On {model}, no probe reads truth above chance on its training sets' own test "
                   f"statements (highest: {label(best['probe'])} on {best['train']}, {fmt(best)} "
                   f"at layer {best['layer']}){caveat}.")
    if clean and matched:
        out.append(f"{len(matched)} of {len(in_dist)} in-distribution results are matched by a "
                   f"control{_matched_by(matched)}, so they are no evidence of a truth "
                   "representation: " + _grouped(
                       sorted(matched, key=lambda r: -r["value"]), lambda r: r["train"],
                       lambda r: _with_control(r, r["explained_by"])) + ".")
    transfers = [v for v in verdicts if v["kind"] == "transfer"]
    if transfers:
        counts = {k: sum(v["verdict"] == k for v in transfers) for k in (
            "above chance", "weakly above chance", "chance", "weakly below chance", "inverted",
            "one class", "too few statements")}
        parts = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
        up = [v for v in transfers if SIDE_OF_VERDICT.get(v["verdict"]) == 1]
        up_clean = sorted((v for v in up if not v["explained_by"]), key=lambda v: -v["value"])
        text = (f"Transfer to other datasets ({len(transfers)} cell"
                f"{'s' if len(transfers) != 1 else ''}; Benjamini–Hochberg, FDR "
                f"{FDR_LEVEL:.0%}): {parts}. ")
        if up_clean:
            text += ("Above chance beyond every control: " + _grouped(
                up_clean, _transfer, lambda v: f"{label(v['probe'])} {fmt(v)}") + ".")
        else:
            text += "No transfer is above chance beyond every control."
        if len(up) > len(up_clean):
            text += f" {len(up) - len(up_clean)} above-chance transfer(s) a control matches."
        out.append(text)
        down = sorted((v for v in transfers if SIDE_OF_VERDICT.get(v["verdict"]) == -1),
                      key=lambda v: v["value"])
        if down:
            own_flip = [v for v in down if not v["explained_by"]]
            ctrl_flip = [v for v in down if v["explained_by"]]
            parts_down = []
            if own_flip:
                parts_down.append("with no control flipping too: " + _grouped(
                    own_flip, _transfer, lambda v: f"{label(v['probe'])} {fmt(v)}"))
            if ctrl_flip:
                parts_down.append("where a control flips too, so the flip needs no truth "
                                  "direction: " + _grouped(
                                      ctrl_flip, _transfer,
                                      lambda v: _with_control(v, v["explained_by"])))
            out.append(f"Below chance (the direction flips sign on the test set) in {len(down)} "
                       "transfer(s), " + "; ".join(parts_down) + ".")
    if checks:
        out.append(f"{len(checks)} control reading(s) on the training sets' own test splits are "
                   "off chance; each is commented under the tables.")
    return out
