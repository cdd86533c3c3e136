"""The causal study on tiny models: its gates (no "causal for truth" on a task the model does
not solve, no localisation from a zero patching gap), each probe's own steering window, the
controls, the corrected statistics, the report, the CLI and an exact re-run at one thread."""

from __future__ import annotations

import json

import numpy as np
import pytest

from interplab.errors import InterplabError
from interplab.studies.causal import CausalConfig, CausalResult, run_causal

TINY = {"model": "tiny-llama", "n_shots": 1, "max_per_dataset": 200, "n_prompts": 8,
        "n_steer_layers": 2, "patch_pairs": 6, "attr_pairs": 3, "attr_layers": [1, 3],
        "patch_tokens": 4, "attr_tokens": 3, "n_exact": 4, "n_top_exact": 2, "ig_steps": 2,
        "n_boot": 200, "n_neutral": 2, "neutral_tokens": 16, "n_null": 20, "n_transfer": 8,
        "answer_true": ["TRUE", "True", "the"], "answer_false": ["FALSE", "False", "and"],
        "formats": ["statement-is"], "threads": 1}
CLI = ["--model", "tiny-llama", "--n-shots", "1", "--max-per-dataset", "200", "--n-prompts", "8",
       "--n-layers", "2", "--patch-pairs", "6", "--attr-pairs", "3", "--attr-layers", "1,3",
       "--patch-tokens", "4", "--attr-tokens", "3", "--n-exact", "4", "--n-top-exact", "2",
       "--ig-steps", "2", "--n-boot", "200", "--n-neutral", "2", "--neutral-tokens", "16",
       "--n-null", "20", "--n-transfer", "8", "--answer-true", "TRUE,True,the",
       "--answer-false", "FALSE,False,and", "--formats", "statement-is", "--threads", "1",
       "--quiet"]


@pytest.fixture(scope="module")
def tiny() -> CausalResult:
    return run_causal(CausalConfig.make(**TINY), progress=False)


def test_config_nests_the_shared_settings():
    cfg = CausalConfig.make(model="tiny-llama", seed=3, n_shots=2, probes=["diffmean"],
                            max_per_dataset=100, n_null=30)
    assert cfg.run.model == "tiny-llama" and cfg.run.seed == 3 and cfg.prompt.n_shots == 2
    assert cfg.probe.probes == ["diffmean"] and cfg.data.max_per_dataset == 100
    assert cfg.n_null == 30 and CausalConfig().data.max_per_dataset == 400
    assert CausalConfig().probe.centering == "per-dataset"


def test_a_random_model_that_ignores_truth_is_not_called_causal(tiny):
    r = tiny
    b = r.task["baseline"]
    # tiny-llama's random weights tell true from false no better than chance: the gate fires
    assert not b["solves"] and b["gap_lo"] <= 0 <= b["gap_hi"]
    assert not r.verdict["task_solved"]
    assert not any(v["causal_for_truth"] for v in r.verdict["probes"].values())
    assert all(row["normalised"] is None for row in r.comparison)
    text = " ".join(r.findings)
    assert "does not tell true from false" in text and "No direction is called causal" in text
    assert "Causal for truth (" not in text


def test_the_gate_and_the_control_decide_what_is_claimed():
    """The same steering numbers: "causal for truth" only when the task is solved, the effect is
    beyond the null and beyond the no-statement control, and its normalised effect is above 0."""
    from interplab.studies.causal import findings as words

    def case(solves: bool, control_verdict: str) -> dict:
        baseline = {"solves": solves}
        row = {"probe": "diffmean", "dataset": "cities", "verdict": "above the null",
               "lo": 0.08, "normalised": {"value": 0.6, "lo": 0.3, "hi": 0.9} if solves else None}
        control = {"probes": {"diffmean": {"verdict": control_verdict, "difference_lo": 0.05}}}
        patching = {"ran": True, "localise": False, "result": {"null": None}}
        return words.verdict(baseline, [row], control, patching, {})

    assert case(True, "above the null")["probes"]["diffmean"]["causal_for_truth"]
    off = case(False, "above the null")["probes"]["diffmean"]
    assert not off["causal_for_truth"] and off["moves_the_answer"] and off["beyond_control"]
    # beyond the null but not beyond prompts with no statement: not about the statement's truth
    assert not case(True, "not significant")["probes"]["diffmean"]["causal_for_truth"]


def test_each_probe_steers_its_own_validation_window():
    from interplab.studies.causal.run import steering_windows

    val = {"diffmean": [0.5, 0.9, 0.6, 0.5, 0.5, 0.5], "logistic": [0.5, 0.5, 0.5, 0.6, 0.7, 0.9],
           "lda": [0.9, 0.6, 0.5, 0.5, 0.5, 0.5]}
    own = steering_windows(CausalConfig(n_steer_layers=2), val, 6)
    assert {p: w["centre"] for p, w in own.items()} == {"diffmean": 1, "logistic": 5, "lda": 0}
    assert own["diffmean"]["layers"] == [0, 1] and own["logistic"]["layers"] == [4, 5]
    assert own["lda"]["layers"] == [0, 1] and "own" in own["lda"]["rule"]
    shared = steering_windows(CausalConfig(n_steer_layers=2, window="shared"), val, 6)
    # mean validation accuracy peaks at layer 1 (0.667): one window no probe chose for itself
    assert {tuple(w["layers"]) for w in shared.values()} == {(0, 1)}
    fixed = steering_windows(CausalConfig(steer_layers=[3, 2]), val, 6)
    assert all(w["layers"] == [2, 3] and w["centre"] is None for w in fixed.values())


def test_the_run_uses_each_probes_own_window(tiny):
    for probe, w in tiny.probes["windows"].items():
        val = tiny.probes["validation_accuracy"][probe]
        assert w["centre"] == int(np.argmax(val))
        assert set(tiny.steering[probe]["hooks"]) == {f"blocks.{li}.hook_resid_post"
                                                      for li in w["layers"]}


def test_controls_transfer_and_one_family_of_p_values(tiny):
    r = tiny
    assert set(r.steering) == {"diffmean", "logistic", "lda"}
    for s in r.steering.values():
        assert len(s["effects"]) == 8 and len(s["effects"][0]) == 7
        assert s["null"]["k"] == 20 and s["proof"]
    assert r.data["answers"]["true"] == " the"  # the tiny tokenizer has no single-token TRUE
    assert "The city of" in r.control["prompt_example"] and " is in " not in \
        r.control["prompt_example"]
    for c in r.control["probes"].values():
        assert c["difference_lo"] <= c["difference"] <= c["difference_hi"]
        assert c["p_floor"] == pytest.approx(2 / 201)
    assert set(r.transfer) == {"sp_en_trans"}
    # steering per probe × dataset, the control per probe, patching's held-out nodes: one family
    nodes = (r.patching["result"].get("null") or {}).get("nodes") or {}
    assert r.statistics["m"] == 3 * 2 + 3 + len(nodes) == len(r.statistics["tests"])
    for row in r.comparison:
        t = r.statistics["tests"][f"steer {row['probe']} on {row['dataset']}"]
        assert row["q"] == t["q"] >= row["p"] and row["verdict"] == t["verdict"]
        assert {"p", "k", "z", "at_floor", "q", "q_bound", "verdict"} <= set(row)
    assert any("q = " in f and "z = " in f for f in r.findings)
    # wall time is kept apart from the results (a re-run compares everything else)
    assert "seconds" not in r.steering["diffmean"]["info"] and "cost" not in r.attribution
    assert "attribution_cost_atp" in r.timings


def test_a_zero_patching_gap_localises_nothing(monkeypatch):
    """A pair metric that cannot differ between the true and the false run (logit[a] − logit[a])
    has a gap of exactly 0: no null is run, no node is named, no share of a gap is given."""
    from interplab.interventions import LogitDiff
    from interplab.models import load
    from interplab.studies.causal import findings as words
    from interplab.studies.causal.patching import patching_stage
    from interplab.studies.causal.tasks import make_task
    from interplab.study.data import load_statements

    cfg = CausalConfig.make(**TINY)
    lm = load("tiny-llama")
    data = load_statements(["cities", "neg_cities"], cfg.data, 0)
    task = make_task(lm, "statement-is", cfg.prompt, 0)
    monkeypatch.setattr(type(task), "pair_metric", lambda self, t, f: LogitDiff(5, 5))
    prefix, tail = task.prefix_and_tail(data.datasets["cities"], data.splits["cities"].train)
    p = patching_stage(lm, cfg, task, prefix, tail, data.datasets["cities"],
                       data.splits["cities"].test, {})
    assert p["ran"] and p["gap"]["mean"] == 0 and not p["localise"]
    assert p["result"]["null"] is None and p["fraction_grid"] is None
    assert p["result"]["info"]["fraction_restored"] is None
    text = " ".join(words._patch_findings(p))
    assert "nothing to localise" in text and "%" not in text.replace("% of pairs", "")
    assert "blocks." not in text


def test_localisation_is_tested_on_pairs_it_was_not_chosen_on(linear_patch):
    r = linear_patch
    null = r.null
    chosen, tested = set(null["selected_on"]), set(null["tested_on"])
    assert chosen and tested and not chosen & tested and chosen | tested == set(range(6))
    effects = np.asarray(r.effects)
    for j, node in null["nodes"].items():
        assert node["effect"] == pytest.approx(effects[sorted(tested), int(j)].mean())
    top = np.argsort(-np.abs(effects[sorted(chosen)].mean(axis=0)), kind="stable")[:2]
    assert sorted(map(int, null["nodes"])) == sorted(top.tolist())


@pytest.fixture(scope="module")
def linear_patch():
    import torch

    from interplab.interventions import LogitDiff, patch
    from interplab.interventions.prompts import Prompts
    from interplab.models import load

    lm = load("tiny-llama", seed=0)
    lm.hf.model.norm = torch.nn.Identity()
    rng = np.random.default_rng(0)
    ids = [[1] + rng.integers(5, 300, 9).tolist() for _ in range(6)]
    bad = [list(t) for t in ids]
    for t in bad:
        t[3] = 7 if t[3] != 7 else 8
    return patch(lm, Prompts(ids, [], True), Prompts(bad, [], True),
                 ["blocks.1.hook_resid_post", "blocks.2.hook_resid_post"], LogitDiff(11, 12),
                 positions=[3, -1], n_null=20, null_nodes=2, null_select=[0, 2, 4])


def test_attribution_checks_its_top_nodes_and_gives_spearman_an_interval():
    import torch

    from interplab.interventions import LogitDiff, attribute
    from interplab.interventions.prompts import Prompts
    from interplab.models import load

    lm = load("tiny-llama", seed=0)
    lm.hf.model.norm = torch.nn.Identity()
    rng = np.random.default_rng(1)
    ids = [[1] + rng.integers(5, 300, 9).tolist() for _ in range(6)]
    bad = [[1] + rng.integers(5, 300, 9).tolist() for _ in range(6)]
    hooks = [f"blocks.{i}.hook_{k}" for i in (1, 2) for k in ("resid_post", "mlp_out")]
    r = attribute(lm, Prompts(ids, [], True), Prompts(bad, [], True), hooks, LogitDiff(11, 12),
                  positions=[-3, -2, -1], ig_steps=2, n_exact=3, n_top=2, n_boot=200)
    for kind in ("resid_post", "mlp_out"):
        v = r.agreement[kind]["atp"]
        if v["spearman"] is not None:
            assert v["spearman_lo"] <= v["spearman"] + 1e-12 and v["spearman_hi"] <= 1
        top = r.top_check[kind]
        est = r.mean("atp")
        kind_nodes = [j for j, nd in enumerate(r.nodes) if nd["hook"].endswith(kind)]
        best = sorted(kind_nodes, key=lambda j: -abs(est[j]))[:2]
        assert [row["node"] for row in top["nodes"]] == best  # AtP's own top two
        assert set(best) <= set(r.exact_nodes)  # ... patched exactly
        exact = dict(zip(r.exact_nodes, np.asarray(r.exact).mean(axis=0), strict=True))
        for row in top["nodes"]:
            assert row["exact"] == pytest.approx(exact[row["node"]])
    # the agreement is measured on the random sample only (the top nodes are a biased sample)
    assert r.agreement["all"]["atp"]["n_nodes"] == 2 * 3


def test_report_and_json_round_trip(tiny, tmp_path):
    from interplab.report.causal import summary_lines, write_causal_report

    tiny.to_json(tmp_path / "causal.json")
    back = CausalResult.from_json(tmp_path / "causal.json")
    assert json.loads((tmp_path / "causal.json").read_text())["study"] == "causal"
    html = write_causal_report(back, tmp_path / "report.html").read_text()
    assert "Is the truth direction causal?" in html and "data:image/png;base64" in html
    assert "does not tell" in html and "undefined (no gap)" in html
    assert "Control: the same push on prompts with no statement" in html
    assert any(line.startswith("• Task:") for line in summary_lines(back))
    # a p-value at its floor (no random direction as extreme) prints as an upper bound
    row = back.comparison[0]
    row.update(p=1 / 21, at_floor=True, q=1 / 21, q_bound=True, verdict="above the null")
    html = write_causal_report(back, tmp_path / "floor.html").read_text()
    assert "above the null (q ≤ 0.048)" in html and "p ≤ 0.048 (floor, k = 20)" in html
    # text from the data is escaped
    back.data["prompt_example"] = "<script>x</script>"
    html = write_causal_report(back, tmp_path / "esc.html").read_text()
    assert "<script>x" not in html and "&lt;script&gt;x" in html


def test_causal_page_opens_with_the_gate_the_controls_and_the_dose_response(tiny, tmp_path):
    from interplab.report.causal import comparison_order, summary_bullets, write_causal_report
    from tests.pages import check_tables_align, check_top_of_page

    path = write_causal_report(tiny, tmp_path / "causal.html")
    html = path.read_text()
    body = html[html.index("<body>"):]
    assert body.index('id="summary"') < body.index('id="headline"') < body.index("<table")
    r = json.loads(tiny.to_json(tmp_path / "c.json").read_text())
    bullets = summary_bullets(r)
    assert 3 <= len(bullets) <= 5 and bullets[0].startswith("Task: ")
    # the random model does not solve the task: the gate is closed and nothing is causal
    assert not r["task"]["baseline"]["solves"] and "the gate above is closed" in bullets[1]
    assert "Explained by the random-direction null" in bullets[1]
    # verdicts carry their q-values; no raw p-value stands as a verdict at the top
    assert all(f"q = {c['q']:.3f}" in bullets[2] for c in r["comparison"]
               if c["dataset"] == "cities") and " p = " not in " ".join(bullets)
    rows = comparison_order(r)
    assert rows[0]["dataset"] == "cities" and [c["dataset"] == "cities" for c in rows] == sorted(
        (c["dataset"] == "cities" for c in rows), reverse=True)
    assert check_tables_align(html) >= 5
    check_top_of_page(path, tmp_path)


def test_causal_bullets_call_a_direction_causal_only_with_the_gate_open(tiny, tmp_path):
    from interplab.report.causal import summary_bullets

    r = json.loads(tiny.to_json(tmp_path / "c.json").read_text())
    first = r["comparison"][0]["probe"]
    r["task"]["baseline"]["solves"] = True
    r["verdict"]["probes"][first].update(moves_the_answer=True, beyond_control=True,
                                         causal_for_truth=True)
    label = r["comparison"][0]["label"]
    line = summary_bullets(r)[1]
    assert line.startswith(f"Causal for truth on the {r['task']['chosen']} task: {label}.")
    # moving the answer as much without a statement is explained by that control
    r["verdict"]["probes"][first].update(beyond_control=False, causal_for_truth=False)
    line = summary_bullets(r)[1]
    assert "task: none." in line and "Explained by the no-statement control" in line
    assert label in line.split("Explained by the no-statement control")[1]


def test_rerun_reproduces_a_causal_result_exactly_at_one_thread(tmp_path):
    from typer.testing import CliRunner

    from interplab.cli.main import app

    first = tmp_path / "first"
    res = CliRunner().invoke(app, ["causal", *CLI, "--out", str(first)])
    assert res.exit_code == 0, res.output
    saved = json.loads((first / "causal.json").read_text())
    assert saved["study"] == "causal" and saved["config"]["run"]["threads"] == 1
    assert saved["config"]["steer_layers"] is None and saved["config"]["n_steer_layers"] == 2
    res = CliRunner().invoke(app, ["rerun", str(first / "causal.json"), "--out",
                                   str(tmp_path / "again")])
    assert res.exit_code == 0, res.output
    assert "identical" in res.output
    again = json.loads((tmp_path / "again" / "causal.json").read_text())
    for d in (saved, again):
        d.pop("timings")
    assert json.dumps(again) == json.dumps(saved)


def test_layer_options_outside_the_model_are_one_clear_error(monkeypatch, tmp_path):
    """On tiny-llama (4 blocks): refused after the model loads and before anything runs on it;
    a stride of 0 and a pair probe before the model loads."""
    from interplab.cli.main import main
    from interplab.studies.causal import run as stage

    monkeypatch.setattr(stage, "_harvest", lambda *a, **k: pytest.fail("ran past the check"))
    for over, message in (({"steer_layers": [99]}, "--layers: layer.s. 99 do not exist; the "
                           "model has 4 blocks .0–3."),
                          ({"attr_layers": [1, 99]}, "--attr-layers: layer.s. 99 do not exist"),
                          ({"steer_layers": None, "n_steer_layers": 6}, "--n-layers 6 is wider")):
        with pytest.raises(InterplabError, match=message):
            run_causal(CausalConfig.make(**{**TINY, **over}), progress=False)
    import interplab.models

    monkeypatch.setattr(interplab.models, "load", lambda *a, **k: pytest.fail("model loaded"))
    for over, message in (({"patch_layer_stride": 0}, "--patch-layer-stride must be at least 1"),
                          ({"attr_layers": [-1]}, "--attr-layers must list block indices"),
                          ({"probes": ["diffmean", "ccs"]}, "ccs is a pair probe"),
                          ({"formats": ["chat", "poetry"]}, "--formats chat,poetry"),
                          ({"transfer": ["neg_cities"]}, "probes are trained on cities")):
        with pytest.raises(InterplabError, match=message):
            run_causal(CausalConfig.make(**{**TINY, **over}), progress=False)
    assert main(["causal", "--model", "tiny-llama", "--patch-layer-stride", "0", "--out",
                 str(tmp_path / "out")]) == 2
    assert not list((tmp_path / "out").glob("*"))  # nothing written for a refused run


def test_a_chat_format_needs_a_chat_template():
    with pytest.raises(InterplabError, match="needs a chat template"):
        run_causal(CausalConfig.make(**{**TINY, "formats": ["chat"]}), progress=False)


def test_prompts_longer_than_the_context_name_the_n_shots_that_fit(capsys, tmp_path):
    from interplab.cli.main import main

    with pytest.raises(InterplabError, match=r"lower --n-shots \(at most \d fits\)") as err:
        run_causal(CausalConfig.make(**{**TINY, "n_shots": 4}), progress=False)
    assert "128" in str(err.value)
    args = ["causal", "--model", "tiny-llama", "--n-shots", "4", "--answer-true", "the",
            "--answer-false", "and", "--formats", "statement-is", "--max-per-dataset", "200",
            "--n-prompts", "8", "--out", str(tmp_path)]
    assert main(args) == 2
    assert "--n-shots" in capsys.readouterr().err


def test_completion_format_reads_each_statements_own_object():
    from interplab.interventions.prompts import object_split

    assert object_split("The city of Paris is in France.") == ("The city of Paris is in",
                                                              " France")
    assert object_split("The Spanish word 'enero' means 'January'.") == (
        "The Spanish word 'enero' means '", "January")
    with pytest.raises(InterplabError, match="no last word"):
        object_split("Hello.")


def test_cli_builds_the_config_from_its_options(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from interplab.cli.main import app
    from interplab.studies import registry

    seen = []
    monkeypatch.setattr(registry, "run_causal_into",
                        lambda cfg, out, progress: seen.append(cfg) or 1 / 0)
    CliRunner().invoke(app, ["causal", "--layers", "5,6", "--n-layers", "3", "--answer-true",
                             "Yes,True", "--window", "shared", "--probes", "diffmean",
                             "--out", str(tmp_path / "causal")])  # not runs/ of the checkout
    cfg = seen[0]
    assert cfg.steer_layers == [5, 6] and cfg.n_steer_layers == 3
    assert cfg.prompt.answer_true == ["Yes", "True"] and cfg.window == "shared"
    assert cfg.probe.probes == ["diffmean"] and cfg.doses == CausalConfig().doses


def test_config_refuses_a_dose_series_without_zero_or_negatives():
    with pytest.raises(InterplabError, match="including 0"):
        CausalConfig(doses=[0.5, 1, 2, 3, 4]).validate()
    with pytest.raises(InterplabError, match="n-null"):
        CausalConfig(n_null=5).validate()


def test_steering_runs_each_prompts_unedited_head_once_with_the_same_effects():
    """Read at the last token, steering runs the tokens before each prompt's first edit once
    and shares them across its rows; reading the same token as "index:-1" takes the plain path
    (every row runs the whole prompt): the effects, null and KL agree to rounding."""
    from interplab.activations import Positions
    from interplab.interventions import TargetLogProb, steer_many
    from interplab.interventions.prompts import encode
    from interplab.models import load

    lm = load("tiny-llama", seed=0)
    p = encode(lm, ["The city of Paris is in France. The city of Paris is in",
                    "The city of Rome is in Peru. The city of Rome is in",
                    "Two is larger than three. Two is larger than"], "The city of Oslo is in Norway.\n")
    pos = Positions.explicit([[5, 6], [4, 6], [3]])
    rng = np.random.default_rng(0)
    d = {"a": {f"blocks.{i}.hook_resid_post": rng.normal(size=lm.d_model) for i in (1, 2)}}
    a, b = (steer_many(lm, p, d, [-1, 0, 1, 2], TargetLogProb((11, 12, 13)), positions=pos,
                       read=read, n_null=5, signs=[1, -1, 1], n_boot=100)["a"]
            for read in ("last", "index:-1"))
    assert a.info["rows_run"] == b.info["rows_run"]
    np.testing.assert_allclose(a.effects, b.effects, atol=1e-5)
    np.testing.assert_allclose(a.null["values"], b.null["values"], atol=1e-5)
    np.testing.assert_allclose(a.side_effects["kl_mean"], b.side_effects["kl_mean"], atol=1e-6)
    assert np.abs(np.asarray(a.effects)).max() > 1e-3  # the steering did move the metric


@pytest.mark.embedded
def test_embedded_model_solves_the_completion_task_and_not_the_few_shot_one(smollm):
    """The default format choice on SmolLM2-135M: on the 64 validation statements the completion
    format's true − false gap lies above 0 and beats the few-shot format's, whose interval
    includes 0 (the model does not answer "This statement is:" by the statement's truth)."""
    from interplab.interventions.prompts import held_out_rows
    from interplab.studies.causal.run import _choose_task
    from interplab.studies.causal.tasks import make_task
    from interplab.study.data import load_statements

    cfg = CausalConfig.make(formats=["completion", "statement-is"], n_boot=200)
    data = load_statements(["cities", "neg_cities"], cfg.data, 0)
    ds, split = data.datasets["cities"], data.splits["cities"]
    tasks = {n: make_task(smollm, n, cfg.prompt, 0) for n in cfg.formats}
    choice = _choose_task(smollm, cfg, tasks, ds, split.train,
                          held_out_rows(ds, split.val, cfg.n_prompts, 0))
    v = choice["validation"]
    assert choice["chosen"] == "completion" and v["completion"]["solves"]
    assert v["statement-is"]["gap_lo"] <= 0 <= v["statement-is"]["gap_hi"]
