"""The erasure study end to end on a tiny model: result, JSON round trip, report (its graded
findings and headline figure on the first screen in Chromium)."""

import copy
import json

import pytest

from interplab.report.erasure import write_erasure_report
from interplab.studies.erasure import ErasureConfig, ErasureResult, run_erasure


@pytest.fixture(scope="module")
def tiny_erasure():
    config = ErasureConfig.make(model="tiny-llama", max_per_dataset=200, layer=1,
                           methods=["leace", "inlp", "median-match"], inlp_rounds=2,
                           directions_max_rounds=3, neutral_sequences=3, context_length=16,
                           in_model_random=5,
                           n_boot=100, batch_size=16, behaviour_prompts=12, n_shots=1,
                           answer_true=["TRUE", "the"], answer_false=["FALSE", "and"])
    return run_erasure(config)


def test_erasure_study_on_a_tiny_model(tiny_erasure, tmp_path):
    result = tiny_erasure
    assert set(result.checks) == {"leace", "inlp", "median-match"}
    assert set(result.in_model) == {"leace", "inlp"}  # median-match needs labels
    for c in result.checks.values():
        assert c["n_test"] == result.n_test and 0 <= c["majority"] <= 1
        assert c["accuracy"]["linear"]["random"]["n"] == result.n_test
    assert result.checks["leace"]["rank"] == 1
    assert result.in_model["leace"]["erased"]["n_tokens"] == 3 * 15
    rnd = result.in_model["leace"]["random"]  # a distribution of random subspaces, not one draw
    assert rnd["n_draws"] == 5 and len({d["delta_ce"] for d in rnd["draws"]}) == 5
    assert rnd["delta_ce_min"] <= rnd["delta_ce"] <= rnd["delta_ce_max"]
    assert result.in_model["inlp"]["random"]["n_draws"] == 5  # rank 2: its own draws
    assert result.in_model["leace"]["erased"]["edit_size"] > 0
    d = result.directions
    assert len(d["labels"]["rounds"]) >= 1 and d["shuffled"]["rounds"][0]["erased"] == 0
    path = result.to_json(tmp_path / "erasure.json")
    again = ErasureResult.from_json(path)
    assert again.checks == json.loads(path.read_text())["checks"]
    html = write_erasure_report(again, tmp_path / "erasure.html").read_text()
    assert "random subspace" in html and "Not tested" in html and "data:image/png" in html
    assert "ΔCE random [min, max]" in html and "neutral" in html
    b = again.behaviour
    assert set(b["erasers"]) == {"leace", "inlp"} and set(b["random"]) == {"1", "2"}
    assert b["info"]["n_prompts"] == 12 and b["info"]["n_true"] == 6
    assert b["random"]["1"]["n_random"] == 20 and b["random"]["1"]["separation_changes"]["n"] == 20
    for e in (*b["erasers"].values(), *b["random"].values()):
        for key in ("separation_change", "delta_true", "delta_false", "accuracy_change", "kl"):
            assert e[key]["lo"] <= e[key]["value"] <= e[key]["hi"]
        assert len(e["per_example_delta"]) == 12
    assert "true/false answers under erasure" in html and "random subspace (rank 2)" in html
    # the erasers' p-values against their random subspaces are one corrected family
    stats = again.statistics
    assert stats["m"] == 2 and set(stats["tests"]) == {"leace", "inlp"}
    for name, e in b["erasers"].items():
        t = e["vs_random"]
        assert t["k"] == 20 and t["p"] >= 1 / 21 and t["q"] == stats["tests"][name]["q"] >= t["p"]
        assert t["verdict"] in ("above the null", "below the null", "not significant")
    assert "vs random subspaces (corrected)" in html and "q " in html
    # two tests with 20 random subspaces each: a lone eraser at its floor gets q = 2/21
    assert stats["floor_q_alone"] == 2 / 21 and stats["notes"]


def test_erasure_page_opens_with_findings_graded_against_every_control(tiny_erasure, tmp_path):
    from interplab.report.erasure import findings, grade_methods, method_order
    from tests.pages import check_tables_align, check_top_of_page

    path = write_erasure_report(tiny_erasure, tmp_path / "erasure.html")
    html = path.read_text()
    body = html[html.index("<body>"):]
    assert body.index('id="summary"') < body.index('id="headline"') < body.index("<table")
    r = json.loads(tiny_erasure.to_json(tmp_path / "e.json").read_text())
    bullets = findings(r)
    assert 3 <= len(bullets) <= 5 and body.count("<li>") >= len(bullets)
    assert "random-subspace control" in bullets[1] and "BH-corrected" in " ".join(bullets)
    # the checks table follows the stated order, the headline figure's
    order = method_order(r)
    values = [r["checks"][m]["accuracy"]["linear"]["erased"]["value"] for m in order]
    assert values == sorted(values) and "sorted by the linear probe" in html
    rows = [body.index(f'<td class="l">{m}') for m in order]
    assert rows == sorted(rows)
    assert all(grade_methods(r)[m]["words"] in html for m in order)
    assert check_tables_align(html) == 2
    check_top_of_page(path, tmp_path)


def _checks(before, erased, random, mlp_before=(0.5, 0.4, 0.6), mlp_erased=(0.5, 0.4, 0.6)):
    cell = lambda v: {"value": v[0], "lo": v[1], "hi": v[2], "n": 40}  # noqa: E731
    return {"rank": 1, "majority": 0.5, "accuracy": {
        "linear": {"before": cell(before), "erased": cell(erased), "random": cell(random)},
        "mlp": {"before": cell(mlp_before), "erased": cell(mlp_erased), "random": cell(before)}}}


def test_erasure_grades_name_the_control_that_explains_a_method():
    from interplab.report.erasure import findings, grade_methods

    read = (0.8, 0.7, 0.9)
    r = {"hook": "blocks.1.hook_resid_post", "dataset": {"name": "cities"}, "n_test": 40,
         "checks": {"good": _checks(read, (0.5, 0.4, 0.6), read, read, (0.75, 0.65, 0.85)),
                    "lucky": _checks(read, (0.52, 0.42, 0.62), (0.55, 0.45, 0.65)),
                    "weak": _checks(read, (0.7, 0.6, 0.8), read)}}
    g = grade_methods(r)
    assert [g[m]["grade"] for m in ("good", "lucky", "weak")] == ["erased", "control", "kept"]
    assert g["lucky"]["explained_by"] == ["random subspace"] and not g["good"]["explained_by"]
    assert g["good"]["mlp_recovers"] is True and g["weak"]["mlp_recovers"] is None
    text = " ".join(findings(r))
    assert "beyond the same-rank random-subspace control: good (rank 1)" in text
    assert "Explained by the random-subspace control (it reaches chance too): lucky" in text
    assert "Still decodable after erasure: weak" in text
    assert "An MLP probe reads it again after good" in text
    # a concept no probe reads before erasure: nothing to erase, no method credited
    r2 = copy.deepcopy(r)
    for c in r2["checks"].values():
        c["accuracy"]["linear"]["before"] = {"value": 0.55, "lo": 0.45, "hi": 0.65, "n": 40}
    assert {v["grade"] for v in grade_methods(r2).values()} == {"nothing"}
    text = " ".join(findings(r2))
    assert "nothing to erase" in text and "beyond the same-rank" not in text


def test_behaviour_prompts_longer_than_the_context_are_refused_before_the_fits(monkeypatch):
    import pytest

    from interplab.errors import InterplabError
    from interplab.studies.erasure import run as study

    monkeypatch.setattr(study, "_fit_and_check", lambda *a, **k: pytest.fail("fitted"))
    config = ErasureConfig.make(model="tiny-llama", max_per_dataset=200, layer=1, n_shots=4,
                           behaviour_prompts=12, answer_true=["the"], answer_false=["and"])
    with pytest.raises(InterplabError, match="lower --n-shots"):
        run_erasure(config)


def test_behaviour_summary_separates_a_real_effect_from_none():
    """Scores whose true/false gap an edit removes give a separation change with an interval
    below zero; an edit that only adds noise gives one covering zero."""
    import numpy as np

    from interplab.erasure import behaviour_summary

    rng = np.random.default_rng(0)
    y = np.repeat([1, 0], 60)
    base = np.where(y == 1, 0.3, -0.3) + 0.05 * rng.standard_normal(120)
    erased = 0.05 * rng.standard_normal(120)
    noisy = base + 0.05 * rng.standard_normal(120)
    gone = behaviour_summary(erased, base, y, n_boot=300, seed=0)
    kept = behaviour_summary(noisy, base, y, n_boot=300, seed=0)
    assert abs(gone["separation_change"]["value"] + 0.6) < 0.05 and gone["separation_change"]["hi"] < -0.5
    assert gone["delta_true"]["hi"] < 0 < gone["delta_false"]["lo"]
    assert gone["accuracy_change"]["hi"] < -0.3
    ch = kept["separation_change"]
    assert ch["lo"] <= 0 <= ch["hi"] and abs(ch["value"]) < 0.05
    assert kept["accuracy"]["value"] == 1.0 and kept["accuracy_change"]["value"] == 0.0


def test_truth_behaviour_applies_the_edit_inside_the_forward_pass(tiny_models):
    """An identity edit (rank 0) leaves every score and the KL exactly at zero change; erasing the
    whole residual stream at the hook moves the scores."""
    import numpy as np
    import torch

    from interplab.erasure import random_subspace_eraser, truth_behaviour
    from interplab.interventions import ProbDiff

    lm = tiny_models["tiny-llama"]
    d = lm.d_model
    erasers = {"identity": random_subspace_eraser(d, 0),
               "everything": random_subspace_eraser(d, d, bias=torch.zeros(d, dtype=torch.float64))}
    statements = ["Paris is in France.", "Paris is in Peru.", "Rome is in Italy.",
                  "Rome is in Chile."]
    the, and_ = (lm.tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in (" the", " and"))
    out = truth_behaviour(lm, "blocks.1.hook_resid_post", erasers, statements, [1, 0, 1, 0],
                          "Oslo is in Norway. This statement is: the\n", ProbDiff(the, and_),
                          n_random=20, n_boot=50)
    same = out["erasers"]["identity"]
    assert np.all(np.array(same["per_example_delta"]) == 0) and same["kl"]["value"] == 0
    moved = out["erasers"]["everything"]
    assert np.abs(moved["per_example_delta"]).max() > 1e-6 and moved["kl"]["value"] > 0
    assert out["plain"]["accuracy"]["n"] == 4 and set(out["random"]) == {"0", str(d)}


def test_the_committed_smollm2_erasure_page_opens_with_its_answer(tmp_path):
    """The full-size result in docs/results (eight methods on SmolLM2) still shows its findings
    and headline figure on the first screen."""
    from pathlib import Path

    from interplab.report.erasure import findings
    from tests.pages import check_tables_align, check_top_of_page

    r = json.loads((Path(__file__).parents[1] / "docs/results/erasure.json").read_text())
    assert 3 <= len(findings(r)) <= 5
    path = write_erasure_report(r, tmp_path / "erasure.html")
    assert check_tables_align(path.read_text()) == 2
    check_top_of_page(path, tmp_path)
