"""End-to-end belief study on a tiny config: result with controls, JSON round trip, HTML report,
and the CLI command."""

import base64
import json
import re

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from interplab.errors import InterplabError
from interplab.report.belief import render_belief_report
from interplab.studies.belief import BeliefStudyConfig, BeliefStudyResult, run_belief_study

TINY = dict(
    context_length=6,
    n_layers=2,
    d_model=32,
    d_mlp=64,
    n_heads=2,
    n_steps=300,
    batch_size=128,
    lr=1e-2,
    warmup_steps=20,
    eval_every=100,
    eval_sequences=1024,
    max_plot_points=500,
)


@pytest.fixture(scope="module")
def mess3_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("belief")
    result = run_belief_study(BeliefStudyConfig(**TINY), out_dir=out, progress=False)
    return result, out


def test_study_learns_and_controls_behave(mess3_run):
    r, out = mess3_run
    # training brings the loss close to the exact floor and far below the untrained model
    assert r.optimal_loss < r.final_loss < r.optimal_loss * 1.03
    assert r.untrained_loss > r.optimal_loss + 0.1
    assert len(r.optimal_loss_per_position) == 6 == len(r.final_loss_per_position)
    # beliefs are linearly decodable from the trained residual stream ...
    assert r.best_r2 > 0.9
    # ... and the shuffled control fails everywhere (close to 0, never above the target)
    assert r.max_shuffled_r2 <= 0.05
    for s in r.regression:
        assert abs(s.shuffled_r2) < 0.1, s
        assert s.r2_train >= s.r2_unseen - 0.05
    # controls sit beside every number
    assert [s.layer for s in r.regression] == [
        "blocks.0.hook_resid_pre",
        "blocks.0.hook_resid_post",
        "blocks.1.hook_resid_post",
        "concat",
    ]
    # the untrained model's embedding layer is the same function of the input as the trained
    # model's initial one was; after training the best site beats the untrained one's best
    assert r.best_r2 > r.untrained_best_r2
    assert (out / "checkpoints" / "final" / "model.safetensors").is_file()
    assert (out / "checkpoints" / "init" / "model.safetensors").is_file()
    assert r.counts["regression_weights_exact"] and r.counts["regression_rows_unseen"] > 0
    fd = r.figure_data
    assert len(fd["beliefs"]) == len(fd["trained"]) == len(fd["untrained"]) == 500
    np.testing.assert_allclose(np.sum(fd["beliefs"], axis=1), 1.0, atol=1e-4)


def test_result_json_roundtrip_and_report(mess3_run, tmp_path):
    r, _ = mess3_run
    path = r.save(tmp_path / "result.json")
    data = json.loads(path.read_text())
    assert data["config"]["n_steps"] == 300 and data["versions"]["torch"] == torch.__version__
    again = BeliefStudyResult.load(path)
    assert again.regression == r.regression and again.best_layer == r.best_layer
    html_path = render_belief_report(again, tmp_path / "report.html")
    html = html_path.read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == 3
    assert all(base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n" for b in images)
    assert "http://" not in html and "https://" not in html  # self-contained
    assert "shuffled" in html and "untrained" in html


def test_report_escapes_text(mess3_run, tmp_path):
    r, _ = mess3_run
    d = r.to_dict()
    d["process"]["name"] = "<script>alert(1)</script>"
    html = render_belief_report(d, tmp_path / "x.html").read_text()
    assert "<script>alert" not in html and "&lt;script&gt;" in html


def test_other_processes_run_and_bad_config_fails(tmp_path):
    cfg = BeliefStudyConfig(
        process="even", **{**TINY, "n_steps": 30, "eval_every": 30, "n_layers": 1}
    )
    r = run_belief_study(cfg, progress=False)
    assert r.process["n_states"] == 2 and len(r.regression) == 3
    render_belief_report(r, tmp_path / "even.html")  # 2-state figure path
    cfg5 = BeliefStudyConfig(
        process="rrxor", **{**TINY, "n_steps": 30, "eval_every": 30, "n_layers": 1}
    )
    r5 = run_belief_study(cfg5, progress=False)
    assert r5.process["n_states"] == 5
    render_belief_report(r5, tmp_path / "rrxor.html")  # PCA-projection figure path
    with pytest.raises(InterplabError, match="n_folds"):
        BeliefStudyConfig(n_folds=1)
    with pytest.raises(InterplabError, match="unknown process"):
        run_belief_study(BeliefStudyConfig(process="nope"), progress=False)


def test_cli_command(tmp_path):
    from interplab.cli import belief

    app = typer.Typer()
    belief.register(app)

    @app.callback()
    def _root() -> None:  # keep "belief" as a sub-command
        pass

    out = tmp_path / "run"
    res = CliRunner().invoke(
        app,
        ["belief", "--process", "golden_mean", "--out", str(out), "--steps", "20", "--layers", "1",
         "--d-model", "16", "--d-mlp", "32", "--context", "5", "--quiet"],
    )
    assert res.exit_code == 0, res.output
    assert (out / "result.json").is_file() and (out / "report.html").is_file()
    assert "best R²" in res.output
    bad = CliRunner().invoke(app, ["belief", "--param", "x"])
    assert isinstance(bad.exception, InterplabError)
