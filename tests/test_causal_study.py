"""The causal study end to end on a tiny model (plumbing, report, CLI), and on the embedded model."""

from __future__ import annotations

import json

import pytest

from interplab.studies.causal import CausalConfig, CausalResult, run_causal

TINY = {"model": "tiny-llama", "n_shots": 1, "max_per_dataset": 200, "n_prompts": 8,
        "n_steer_layers": 2, "patch_pairs": 4, "attr_pairs": 3, "attr_layers": [1, 3],
        "patch_tokens": 4, "attr_tokens": 3, "n_exact": 4, "ig_steps": 2, "n_boot": 200,
        "n_neutral": 2, "neutral_tokens": 16, "answer_true": ["TRUE", "True", "the"],
        "answer_false": ["FALSE", "False", "and"], "n_null": 20}


def test_tiny_run_report_and_json(tmp_path):
    from interplab.report.causal import write_causal_report

    r = run_causal(CausalConfig(**TINY))
    assert set(r.steering) == {"diffmean", "logistic", "lda"}
    for s in r.steering.values():
        assert len(s["effects"]) == 8 and len(s["effects"][0]) == 7
        assert s["null"]["k"] == 20 and s["proof"]
    assert r.data["answers"]["true"] == " the"  # the tiny tokenizer has no single-token TRUE
    assert any("Answer tokens" in n for n in r.notes)
    steered = set(r.data["steered_rows"])
    assert len(steered) == 8 and sum(r.data["steered_labels"]) == 4
    assert any("null" in f for f in r.findings)
    assert set(r.attribution["agreement"]) == {"resid_post", "attn_out",
                                               "mlp_out", "all"}
    # every p-value of the study is one family: three probes and the patching null's nodes
    nodes = r.patching["result"]["null"]["nodes"]
    assert r.statistics["m"] == 3 + len(nodes) == len(r.statistics["tests"])
    assert r.statistics["alpha"] == 0.05 and r.statistics["method"] == "Benjamini–Hochberg"
    for row in r.comparison:
        t = r.statistics["tests"][f"steer {row['probe']}"]
        assert row["q"] == t["q"] >= row["p"] and row["verdict"] == t["verdict"]
        assert r.steering[row["probe"]]["null"]["q"] == row["q"]
        assert {"p", "k", "z", "at_floor", "q", "q_bound", "verdict"} <= set(row)
    assert all(n["verdict"] in ("above the null", "below the null", "not significant")
               for n in nodes.values())
    assert any("after correction" in f and "q = " in f for f in r.findings)
    assert r.attribution["layers"] == [1, 3]
    r.to_json(tmp_path / "causal.json")
    back = CausalResult.from_json(tmp_path / "causal.json")
    html = write_causal_report(back, tmp_path / "report.html").read_text()
    assert "Is the truth direction causal?" in html and "data:image/png;base64" in html
    assert json.loads((tmp_path / "causal.json").read_text())["comparison"]
    assert "verdict vs null (corrected)" in html and "p (raw)" in html
    # a p-value at its floor (no random direction as extreme) prints as an upper bound
    row = back.comparison[0]
    row.update(p=1 / 21, at_floor=True, q=1 / 21, q_bound=True, verdict="above the null")
    html = write_causal_report(back, tmp_path / "floor.html").read_text()
    assert "above the null (q ≤ 0.048)" in html and "p ≤ 0.048 (floor, k = 20)" in html


def test_layer_options_outside_the_model_are_one_clear_error(monkeypatch, tmp_path):
    """On tiny-llama (4 blocks): refused after the model loads and before anything runs on it;
    a stride of 0 before the model loads."""
    from interplab.cli.main import main
    from interplab.errors import InterplabError
    from interplab.studies import causal as study

    monkeypatch.setattr(study, "_harvest", lambda *a, **k: pytest.fail("ran past the check"))
    for over, message in (({"steer_layers": [99]}, "--layers: layer.s. 99 do not exist; the "
                           "model has 4 blocks .0–3."),
                          ({"attr_layers": [1, 99]}, "--attr-layers: layer.s. 99 do not exist"),
                          ({"steer_layers": None, "n_steer_layers": 6}, "--n-layers 6 is wider")):
        with pytest.raises(InterplabError, match=message):
            run_causal(CausalConfig(**{**TINY, **over}))
    import interplab.models

    monkeypatch.setattr(interplab.models, "load", lambda *a, **k: pytest.fail("model loaded"))
    for over, message in (({"patch_layer_stride": 0}, "--patch-layer-stride must be at least 1"),
                          ({"attr_layers": [-1]}, "--attr-layers must list block indices")):
        with pytest.raises(InterplabError, match=message):
            run_causal(CausalConfig(**{**TINY, **over}))
    assert main(["causal", "--model", "tiny-llama", "--patch-layer-stride", "0", "--out",
                 str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()  # nothing written for a refused run


def test_attribution_layers_default_to_five_spread_over_the_model():
    assert CausalConfig().attribution_layers(30) == [3, 9, 15, 21, 27]  # SmolLM2-135M
    assert CausalConfig().attribution_layers(4) == [0, 1, 2, 3]  # nothing dropped
    assert CausalConfig(attr_layers=[3, 1, 3]).attribution_layers(4) == [1, 3]


def test_prompts_longer_than_the_context_name_the_n_shots_that_fit(capsys, tmp_path):
    from interplab.cli.main import main
    from interplab.errors import InterplabError

    with pytest.raises(InterplabError, match=r"lower --n-shots \(at most \d fits\)") as err:
        run_causal(CausalConfig(**{**TINY, "n_shots": 4}))
    assert "128" in str(err.value) and "truncation" not in str(err.value)
    args = ["causal", "--model", "tiny-llama", "--n-shots", "4", "--answer-true", "the",
            "--answer-false", "and", "--max-per-dataset", "200", "--n-prompts", "8",
            "--patch-pairs", "4", "--out", str(tmp_path)]
    assert main(args) == 2
    assert "--n-shots" in capsys.readouterr().err


def test_cli_builds_the_config_from_its_options(monkeypatch):
    import typer
    from typer.testing import CliRunner

    from interplab.cli import causal as causal_cli
    from interplab.studies import causal as study

    seen = []
    monkeypatch.setattr(study, "run_causal", lambda cfg, **kw: seen.append(cfg) or 1 / 0)
    app = typer.Typer()
    causal_cli.register(app)
    app.command("other")(lambda: None)
    CliRunner().invoke(app, ["causal", "--layers", "5,6", "--answer-true", "Yes,True"])
    assert seen[0].steer_layers == [5, 6] and seen[0].answer_true == ["Yes", "True"]
    assert seen[0].doses == CausalConfig().doses and seen[0].n_null == 200


def test_config_refuses_a_dose_series_without_zero_or_negatives():
    from interplab.errors import InterplabError

    with pytest.raises(InterplabError, match="including 0"):
        CausalConfig(doses=[0.5, 1, 2, 3, 4]).validate()
    with pytest.raises(InterplabError, match="n_null"):
        CausalConfig(n_null=5).validate()
