"""Every verdict of the truth study graded against every control, on planted cells: which
control explains a cell, and a summary whose headline is never a number a control matches."""

import pytest

from interplab.controls.multiple import controls_explaining
from interplab.studies.truth.wording import in_distribution, summary, verdicts


def c(value, lo, hi):
    return {"value": value, "lo": lo, "hi": hi}


CHANCE = c(0.50, 0.42, 0.58)


@pytest.mark.parametrize(("verdict", "probe", "controls", "full", "part"), [
    # the reset network inverts too, intervals overlapping: the flip needs no learned weights
    ("inverted", c(0.02, 0.00, 0.06), {"shuffled": CHANCE, "reset": c(0.07, 0.03, 0.12)},
     ["reset"], []),
    # the reset network inverts further than the probe: explained although they do not overlap
    ("inverted", c(0.22, 0.15, 0.30), {"reset": c(0.10, 0.05, 0.14)}, ["reset"], []),
    # above chance, every control at chance: nothing explains it
    ("above chance", c(0.95, 0.91, 0.98), {"shuffled": CHANCE, "random": c(0.52, 0.47, 0.57),
                                           "reset": c(0.55, 0.48, 0.62)}, [], []),
    # a control above chance but well short of the probe explains part of it
    ("above chance", c(0.98, 0.96, 1.00), {"reset": c(0.70, 0.65, 0.75)}, [], ["reset"]),
    # the headline case of the review: the reset network scores as well as the probe
    ("above chance", c(0.98, 0.96, 1.00), {"reset": c(0.97, 0.94, 0.99)}, ["reset"], []),
    # a control whose interval overlaps but whose value sits on the other side explains nothing
    ("weakly above chance", c(0.58, 0.52, 0.64), {"shuffled": c(0.49, 0.41, 0.57)}, [], []),
    # chance, one class and too-small cells have nothing to explain
    ("chance", c(0.52, 0.44, 0.60), {"reset": c(0.53, 0.45, 0.61)}, [], []),
    ("one class", c(0.80, 0.70, 0.90), {"reset": c(0.80, 0.70, 0.90)}, [], []),
])
def test_controls_explaining_planted_cells(verdict, probe, controls, full, part):
    got = controls_explaining(probe, verdict, {"random": None, **controls})
    assert got == {"explained_by": full, "partly_explained_by": part}


def _accuracy(cells):
    """``accuracy[train][probe][variant]`` at one layer from ``{test: {variant: (v, lo, hi)}}``."""
    tests = list(cells)
    out = {}
    for variant in ("probe", "shuffled", "random", "reset"):
        entry = {k: [[cells[t][variant][i] for t in tests]] for i, k in enumerate(("value", "lo",
                                                                                     "hi"))}
        entry["n"] = [200] * len(tests)
        if variant == "probe":
            entry["positive_rate"] = [[0.5] * len(tests)]
        out[variant] = entry
    return out


NULL = {"shuffled": (0.50, 0.43, 0.57), "random": (0.51, 0.45, 0.57), "reset": (0.49, 0.42, 0.56)}


def test_every_verdict_names_the_control_that_explains_it():
    cells = {
        # own split: above chance, but the reset network does as well (token-level)
        "larger_than": {"probe": (0.98, 0.96, 1.00), **NULL, "reset": (0.97, 0.95, 0.99)},
        # inverted, and the reset network inverts too
        "smaller_than": {"probe": (0.03, 0.01, 0.06), **NULL, "reset": (0.08, 0.05, 0.12)},
        # inverted, no control inverts
        "neg_cities": {"probe": (0.10, 0.06, 0.15), **NULL},
        # above chance, no control matches
        "cities": {"probe": (0.90, 0.86, 0.94), **NULL},
        "sp_en_trans": {"probe": (0.50, 0.43, 0.57), **NULL},
    }
    tests = list(cells)
    rows = verdicts({"larger_than": {"lda": _accuracy(cells)}}, {"larger_than": {"lda": 0}},
                    ["larger_than"], tests, [0],
                    {"larger_than": {t: {"twins_left_out": 0} for t in tests}})
    by_test = {r["test"]: r for r in rows}
    assert by_test["larger_than"]["verdict"] == "above chance"
    assert by_test["larger_than"]["explained_by"] == ["reset"]
    assert by_test["larger_than"]["reset_matches"]
    assert by_test["smaller_than"]["verdict"] == "inverted"
    assert by_test["smaller_than"]["explained_by"] == ["reset"]
    assert by_test["neg_cities"]["verdict"] == "inverted"
    assert by_test["neg_cities"]["explained_by"] == []
    assert by_test["cities"]["explained_by"] == [] and not by_test["cities"]["reset_matches"]
    assert by_test["sp_en_trans"]["verdict"] == "chance"
    assert by_test["sp_en_trans"]["explained_by"] == []


def _heldout(value, lo, hi, reset):
    return {"probe": {"value": [value], "lo": [lo], "hi": [hi], "n": 120},
            "shuffled": {"value": [0.5], "lo": [0.41], "hi": [0.59], "n": 120},
            "random": {"value": [0.51], "lo": [0.45], "hi": [0.57], "n": 120},
            "reset": {"value": [reset[0]], "lo": [reset[1]], "hi": [reset[2]], "n": 120}}


def test_summary_headline_is_never_a_result_a_control_matches():
    heldout = {"larger_than": {"logistic": _heldout(0.98, 0.96, 1.00, (0.98, 0.95, 1.00))},
               "cities": {"lda": _heldout(0.85, 0.79, 0.90, (0.55, 0.46, 0.64))}}
    best_layer = {"larger_than": {"logistic": 0}, "cities": {"lda": 0}}
    validation = {k: {p: {"value": [0.9]} for p in v} for k, v in heldout.items()}
    rows = in_distribution(heldout, validation, best_layer, [0])
    by_train = {r["train"]: r for r in rows}
    assert by_train["larger_than"]["explained_by"] == ["reset"]
    assert by_train["cities"]["explained_by"] == []
    transfer = {"train": "larger_than", "probe": "logistic", "layer": 3, "test": "smaller_than",
                "kind": "transfer", **c(0.03, 0.01, 0.06), "n": 200, "verdict": "inverted",
                "shuffled": CHANCE, "random": None, "reset": c(0.08, 0.05, 0.12),
                "explained_by": ["reset"], "partly_explained_by": []}
    out = summary("m", [transfer], [], rows)
    assert len(out) == 4  # in-distribution, what a control matches, transfer, flips
    first = out[0]
    assert first.startswith("On m, 1 of 2 probe results (training set × probe) read truth")
    assert "LDA on cities, 0.85 [0.79, 0.90]" in first and "0.98" not in first
    assert "closest control" in first and "0.55 [0.46, 0.64]" in first
    matched = next(s for s in out if "matched by a control" in s)
    assert "larger_than" in matched and "0.98 [0.96, 1.00]" in matched and "reset" in matched
    flipped = next(s for s in out if s.startswith("Below chance"))
    assert "a control flips too" in flipped and "larger_than → smaller_than" in flipped
    assert "the reset network 0.08 [0.05, 0.12]" in flipped


def test_summary_when_every_result_is_matched_says_so():
    heldout = {"larger_than": {"logistic": _heldout(0.98, 0.96, 1.00, (0.98, 0.95, 1.00))}}
    rows = in_distribution(heldout, {"larger_than": {"logistic": {"value": [0.9]}}},
                           {"larger_than": {"logistic": 0}}, [0])
    row = {**rows[0], "test": "larger_than", "kind": "own test split"}
    (first,) = summary("m", [row], [], rows)
    assert first.startswith("On m, no probe reads truth on its training sets' own test "
                            "statements beyond its controls")
    assert "all by the reset network: token-level" in first and "0.98 [0.96, 1.00]" in first
