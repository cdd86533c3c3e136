"""The causal study end to end on a tiny model (plumbing, report, CLI), and on the embedded model."""

from __future__ import annotations

import json

import pytest

from interplab.studies.causal import CausalConfig, CausalResult, run_causal

TINY = {"model": "tiny-llama", "n_shots": 1, "max_per_dataset": 200, "n_prompts": 8,
        "n_steer_layers": 2, "patch_pairs": 4, "attr_pairs": 3, "attr_layers": [1, 3],
        "patch_tokens": 4, "attr_tokens": 3, "n_exact": 4, "ig_steps": 2, "n_boot": 200,
        "n_neutral": 2, "neutral_tokens": 16, "answer_true": ["TRUE", "True", "the"],
        "answer_false": ["FALSE", "False", "and"]}


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
    r.to_json(tmp_path / "causal.json")
    back = CausalResult.from_json(tmp_path / "causal.json")
    html = write_causal_report(back, tmp_path / "report.html").read_text()
    assert "Is the truth direction causal?" in html and "data:image/png;base64" in html
    assert json.loads((tmp_path / "causal.json").read_text())["comparison"]


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
    assert seen[0].doses == CausalConfig().doses and seen[0].n_null == 20


def test_config_refuses_a_dose_series_without_zero_or_negatives():
    from interplab.errors import InterplabError

    with pytest.raises(InterplabError, match="including 0"):
        CausalConfig(doses=[0.5, 1, 2, 3, 4]).validate()
    with pytest.raises(InterplabError, match="n_null"):
        CausalConfig(n_null=5).validate()
