"""The truth study's readings: the method as stated in the report, graded verdicts, control
checks with their comments, and the summary. Wording lives here, numbers are computed elsewhere."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from interplab.controls.multiple import FDR_LEVEL, MIN_VERDICT_N, grade_family
from interplab.studies.truth.config import TOKENS, TruthConfig, is_pair_probe, label
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
                                f"{FDR_LEVEL:g}; no verdict below {MIN_VERDICT_N} statements",
    }


def cell(entry: dict, li: int, ti: int) -> dict[str, float]:
    return {"value": entry["value"][li][ti], "lo": entry["lo"][li][ti],
            "hi": entry["hi"][li][ti], "n": entry["n"][ti]}


def verdicts(accuracy: dict, best_layer: dict, train_keys: list[str], test_names: list[str],
              layers: list[int], scored: dict) -> list[dict[str, Any]]:
    """One row per (training set, probe, test set) at the chosen layer, graded as a family."""
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
                for variant in ("shuffled", "random", "reset"):
                    row[variant] = cell(per[variant], li, ti) if variant in per else None
                reset = row["reset"]
                row["reset_matches"] = bool(reset is not None and row["value"] > 0.6
                                            and reset["hi"] >= row["lo"])
                rows.append(row)
    graded = grade_family([r["value"] for r in rows], [r["n"] for r in rows],
                          [r["positive_rate"] for r in rows])
    for row, verdict in zip(rows, graded, strict=True):
        row.update(verdict.to_dict())
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


def by_transfer(rows: Iterable[dict[str, Any]]) -> str:
    """"a → b (mass-mean 0.17, LDA 0.20); c → d (...)": cells grouped by transfer."""
    grouped: dict[str, list[str]] = {}
    for v in rows:
        grouped.setdefault(f"{v['train']} → {v['test']}", []).append(
            f"{label(v['probe'])} {v['value']:.2f}")
    return "; ".join(f"{k} ({', '.join(p)})" for k, p in grouped.items())


def summary(model: str, verdicts: list[dict], checks: list[dict], heldout: dict,
             best_layer: dict, layers: list[int]) -> list[str]:
    """The answer in a few sentences: in-distribution level, transfer, controls, inversions."""
    if not verdicts:
        return [f"No probe could be fitted on {model} with these settings (see the notes)."]
    own = []
    for key, per_probe in heldout.items():
        for probe, entry in per_probe.items():
            li = layers.index(best_layer[key][probe])
            own.append((entry["probe"]["value"][li], entry["probe"]["lo"][li],
                        entry["probe"]["hi"][li], key, probe, best_layer[key][probe]))
    best = max(own)
    few = min(int(e["probe"]["n"]) for pe in heldout.values() for e in pe.values())
    caveat = (f" — on as few as {few} statements, too few for a verdict"
              if few < MIN_VERDICT_N else "")
    out = [f"On {model}, probes reach {min(o[0] for o in own):.2f}–{best[0]:.2f} accuracy on "
           "their training sets' test statements at the layer chosen on validation (best: "
           f"{label(best[4])} on {best[3]}, {best[0]:.2f} "
           f"[{best[1]:.2f}, {best[2]:.2f}] at layer {best[5]}){caveat}."]
    transfers = [v for v in verdicts if v["kind"] == "transfer"]
    if transfers:
        counts = {k: sum(v["verdict"] == k for v in transfers) for k in (
            "above chance", "weakly above chance", "chance", "weakly below chance", "inverted",
            "one class", "too few statements")}
        parts = [f"{n} {'clearly above chance' if k == 'above chance' else k}"
                 for k, n in counts.items() if n]
        good = by_transfer(v for v in transfers if v["verdict"] == "above chance")
        out.append(f"Does the direction generalize? Of {len(transfers)} transfers to other "
                   f"datasets (Benjamini–Hochberg, FDR 5 %): {', '.join(parts)}."
                   + (f" It carries over clearly on {good}." if good else
                      " No transfer is clearly above chance."))
    beats = []
    for variant, words in (("shuffled", "the shuffled-label control"),
                           ("random", "the random directions"), ("reset", "the reset network")):
        pairs = [(e["probe"]["lo"][layers.index(best_layer[k][p])],
                  e[variant]["hi"][layers.index(best_layer[k][p])])
                 for k, pe in heldout.items() for p, e in pe.items() if variant in e]
        if pairs:
            beats.append(f"{words} in {sum(lo > hi for lo, hi in pairs)} of {len(pairs)}")
    if beats:
        out.append("On their own test splits the probes beat " + ", ".join(beats)
                   + " cases (probe interval entirely above the control's).")
    inverted = by_transfer(v for v in transfers if v["verdict"] == "inverted")
    if inverted:
        out.append(f"It inverts (strongly and significantly below chance) on {inverted}: there "
                   "the direction tracks something correlated with truth on the training data, "
                   "with the opposite sign.")
    if checks:
        out.append(f"{len(checks)} control reading(s) are off and commented below.")
    return out
