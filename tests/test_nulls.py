"""Null sources: matched to real activations, usable by probes and SAEs; the battery end to end."""

import numpy as np
import pytest

from interplab.controls import (
    DATA_NULLS,
    data_null,
    distribution_summary,
    random_direction_accuracies,
)
from interplab.errors import InterplabError
from interplab.study.nulls import model_null, shuffle_tokens


def reference(n=3000, d=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) + np.arange(d)


def test_data_nulls_match_the_reference_moments():
    x = reference()
    g = data_null("gaussian", x, n=20000, seed=1)
    assert np.allclose(g.mean(0), x.mean(0), atol=0.1)
    assert np.allclose(np.cov(g.T), np.cov(x.T), atol=0.15 * np.abs(np.cov(x.T)).max())
    h = data_null("hypercube", x, seed=1)
    assert np.allclose(h.std(0), x.std(0), rtol=0.08) and np.allclose(h.mean(0), x.mean(0), atol=0.15)
    half = np.sqrt(3) * x.std(0)
    assert (np.abs(h - x.mean(0)) <= half + 1e-4).all()  # inside the box
    # uncorrelated by construction, unlike the reference
    assert abs(np.corrcoef(h.T)[0, 1]) < 0.1 < abs(np.corrcoef(x.T)[0, 1])
    m = data_null("gaussian-mixture", x, n=4000, seed=1)
    assert m.shape == (4000, 6) and np.allclose(m.mean(0), x.mean(0), atol=0.2)
    with pytest.raises(InterplabError, match="unknown data null"):
        data_null("uniform", x)


def test_probe_on_a_data_null_is_at_chance_and_random_directions_form_a_distribution():
    from interplab.probes import LogisticProbe

    rng = np.random.default_rng(0)
    x = reference(1200, 8)
    y = rng.integers(0, 2, 1200)
    x_real = x + np.outer(y, np.ones(8)) * 2.0
    probe = LogisticProbe().fit(x_real[:800], y[:800])
    assert probe.score(x_real[800:], y[800:]) > 0.9
    for name in DATA_NULLS:
        null = data_null(name, x_real[:800], n=1200, seed=2)
        acc = LogisticProbe().fit(null[:800], y[:800]).score(null[800:], y[800:])
        assert abs(acc - 0.5) < 0.1, (name, acc)
    accs = random_direction_accuracies(probe, x_real[:800], y[:800], x_real[800:], y[800:], n=20)
    s = distribution_summary(accs)
    assert s["n"] == 20 and len(set(accs.round(6))) > 5  # twenty different directions
    assert s["p95"] < probe.score(x_real[800:], y[800:])


def test_model_nulls_on_a_tiny_model(tiny_models):
    from interplab.activations import harvest

    lm = tiny_models["tiny-llama"]
    texts = ["The city of Paris is in France.", "Two is larger than one.", "Bees dance."]
    hook = "blocks.1.hook_resid_post"
    real = harvest(lm, texts, [hook], "last", progress=False)[hook].numpy()
    # seed 1: the tiny test models are themselves a seed-0 initialisation
    for name in ("shuffled-tokens", "layer0", "reset", "random-init"):
        rows = model_null(name, lm, texts, hook, "last", seed=1)
        assert rows.shape == real.shape and not np.allclose(rows, real)
    ids = lm.tokenize(texts)
    shuffled = shuffle_tokens(ids, seed=0)
    assert [s[0] for s in shuffled] == [t[0] for t in ids]
    assert [sorted(s) for s in shuffled] == [sorted(t) for t in ids]


TINY_NULLS = dict(model="tiny-llama", layer=1, max_per_dataset=160,
                  nulls=["gaussian", "hypercube", "shuffled-tokens", "layer0", "reset"],
                  probes=["diffmean"], sae_sequences=12, context_length=16, sae_width=2,
                  sae_k=4, sae_steps=20, sae_batch_size=32, n_boot=100)


@pytest.fixture(scope="module")
def tiny_nulls():
    from interplab.studies.nulls import NullsConfig, run_nulls

    return run_nulls(NullsConfig.make(**TINY_NULLS))


def test_null_battery_on_a_tiny_model(tiny_nulls, tmp_path):
    from interplab.report.nulls import write_nulls_report
    from interplab.studies.nulls import NullsConfig, NullsResult

    config = NullsConfig.make(**TINY_NULLS)
    r = tiny_nulls
    assert set(r.probes) == {"model", *config.nulls}
    assert r.probes["model"]["diffmean"]["model_minus_this"] is None
    d = r.probes["gaussian"]["diffmean"]["model_minus_this"]
    assert d["lo"] <= d["value"] <= d["hi"]
    assert r.random_directions["diffmean"]["n"] == 20
    s = r.saes["hypercube"]
    assert s["train"]["n_rows"] + s["heldout"]["n_rows"] == 12 * 15
    assert 0 < s["heldout"]["features_used"] <= s["heldout"]["n_features"] == 2 * 64
    d = s["model_minus_this"]
    for key in ("fve_train", "fve_heldout", "l0_heldout"):
        assert d[key]["lo"] <= d[key]["value"] <= d[key]["hi"]
    assert d["features_used_heldout"]["value"] == (
        r.saes["model"]["heldout"]["features_used"] - s["heldout"]["features_used"])
    assert r.saes["model"]["model_minus_this"] is None
    again = NullsResult.from_json(r.to_json(tmp_path / "n.json"))
    html = write_nulls_report(again, tmp_path / "n.html").read_text()
    assert "held-out" in html and "hypercube" in html
    assert "SAE: model − null" in html and html.count("<td class=\"l\">hypercube</td>") == 3
    # every p-value of the battery is one corrected family, its q and verdict in each cell
    stats = again.statistics
    assert stats["m"] == len(config.nulls) * (1 + 3) + 1 == len(stats["tests"])
    cells = [again.probes[n]["diffmean"]["model_minus_this"] for n in config.nulls]
    cells += [again.saes[n]["model_minus_this"][k] for n in config.nulls
              for k in ("fve_train", "fve_heldout", "l0_heldout")]
    cells.append(again.random_directions["diffmean"]["probe_test"])
    for c in cells:
        assert c["q"] == stats["tests"][c["test"]]["q"] >= c["p"] and "verdict" in c
    assert "Verdicts read q-values" in html and "q " in html


def test_nulls_page_opens_with_findings_graded_against_every_null(tiny_nulls, tmp_path):
    import json

    from interplab.report.nulls import findings, sae_order, source_order, write_nulls_report
    from tests.pages import check_tables_align, check_top_of_page

    path = write_nulls_report(tiny_nulls, tmp_path / "nulls.html")
    html = path.read_text()
    body = html[html.index("<body>"):]
    assert body.index('id="summary"') < body.index('id="headline"') < body.index("<table")
    r = json.loads(tiny_nulls.to_json(tmp_path / "n.json").read_text())
    bullets = findings(r)
    assert 3 <= len(bullets) <= 5 and body.count("<li>") >= len(bullets)
    assert bullets[0].startswith("diffmean reads ") and "random directions" in bullets[0]
    assert "p-values corrected together" in bullets[-1] and " p = " not in " ".join(bullets)
    # 21 tests with 20 random directions: a lone effect at its floor cannot reach q ≤ 0.05, and
    # the page says so instead of reading "not significant" as no effect
    assert r["statistics"]["floor_q_alone"] > 0.05 and "too few draws" in bullets[-1]
    order = source_order(r)
    diffs = [r["probes"][s]["diffmean"]["model_minus_this"]["value"] for s in order[1:]]
    assert order[0] == "model" and diffs == sorted(diffs) and "smallest first" in html
    fves = [r["saes"][s]["heldout"]["fve"] for s in sae_order(r)[1:]]
    assert fves == sorted(fves, reverse=True)
    assert check_tables_align(html) == 4
    check_top_of_page(path, tmp_path)


def _cell(v, lo, hi, verdict="not significant", q=0.5):
    return {"value": v, "lo": lo, "hi": hi, "p": q, "p_floor": 0.01, "at_floor": False, "q": q,
            "q_bound": False, "verdict": verdict}


def test_nulls_findings_name_the_nulls_that_explain_a_reading():
    from interplab.report.nulls import findings

    probes = {"model": {"p": {"value": 0.9, "lo": 0.85, "hi": 0.95, "model_minus_this": None}},
              "gaussian": {"p": {"value": 0.5, "lo": 0.4, "hi": 0.6,
                                 "model_minus_this": _cell(0.4, 0.3, 0.5, "above the null", 0.01)}},
              "reset": {"p": {"value": 0.88, "lo": 0.8, "hi": 0.95,
                              "model_minus_this": _cell(0.02, -0.05, 0.09)}}}
    r = {"probes": probes, "saes": {}, "config": {"n_random_directions": 20, "run": {"n_boot": 100}},
         "random_directions": {"p": {"n": 20, "p95": 0.6, "probe_test": _cell(
             0.9, 0.9, 0.9, "above the null", 0.02)}}}
    (line,) = findings(r)
    assert "above the null (q = 0.020)" in line
    assert "beyond gaussian (model − null +0.400, largest q = 0.010)" in line
    assert "Explained by reset" in line and "Explained by gaussian" not in line
    # a probe at chance on the model has nothing for a null to explain
    probes["model"]["p"].update(value=0.52, lo=0.42, hi=0.62)
    (line,) = findings(r)
    assert "includes chance" in line and "Explained by" not in line


def test_sae_minus_null_is_zero_for_a_null_with_the_signal_and_positive_for_gaussian():
    """Sparse dictionary data: an SAE explains held-out rows far better than on the Gaussian with
    the same mean and covariance; on fresh rows of the same sparse source (a "null" that contains
    the signal) the difference is about zero, its interval covering zero."""
    import torch

    from interplab.sae.synthetic import random_dictionary, sparse_dictionary_batches
    from interplab.studies.nulls import NullsConfig
    from interplab.studies.nulls.run import sae_comparison
    from interplab.study.nulls import REAL

    dic = random_dictionary(64, 24, seed=0)
    real, same = (next(sparse_dictionary_batches(dic, 3000, 1, mean_active=3.0, seed=s)).numpy()
                  for s in (1, 2))
    heldout = np.arange(3000) >= 2000
    config = NullsConfig.make(sae_width=4, sae_k=4, sae_steps=400, sae_batch_size=256, n_boot=200)
    torch.manual_seed(0)
    out = sae_comparison(config, {REAL: real, "same-source": same,
                                  "gaussian": data_null("gaussian", real[~heldout], 3000)},
                         heldout)
    assert out[REAL]["model_minus_this"] is None
    gauss, same_d = out["gaussian"]["model_minus_this"], out["same-source"]["model_minus_this"]
    assert out[REAL]["heldout"]["fve"] > 0.7
    assert gauss["fve_heldout"]["lo"] > 0.15 and gauss["fve_train"]["lo"] > 0.15
    for key in ("fve_train", "fve_heldout"):
        d = same_d[key]
        assert d["lo"] <= 0 <= d["hi"] and abs(d["value"]) < 0.05
    # corrected together: the Gaussian's differences survive, the same source's do not
    from interplab.study.nulls import nulls_statistics

    stats = nulls_statistics({}, {}, out)
    assert stats["m"] == 6
    for key in ("fve_train", "fve_heldout"):
        assert gauss[key]["verdict"] == "above the null" and gauss[key]["at_floor"]
        assert same_d[key]["verdict"] == "not significant" and same_d[key]["p"] > 0.05


def test_probe_differences_and_random_directions_with_a_planted_signal():
    """A planted truth direction: the probe beats a Gaussian null and its random directions after
    correction; a null that is a copy of the real rows differs by exactly 0 (p = 1)."""
    from interplab.study.nulls import REAL, nulls_statistics, probe_scores

    rng = np.random.default_rng(0)
    n, d = 600, 16
    y = rng.integers(0, 2, n)
    x = rng.standard_normal((n, d)) + 1.5 * np.outer(2 * y - 1, np.eye(d)[0])
    data = {REAL: x, "gaussian": data_null("gaussian", x[:400], n, seed=1), "copy": x.copy()}
    probes, randoms = probe_scores(["diffmean"], "train", data, y, np.arange(400),
                                   np.arange(400, n), seed=0, n_boot=500,
                                   n_random_directions=100)
    stats = nulls_statistics(probes, randoms, {})
    assert stats["m"] == 3
    gauss, copy = (probes[s]["diffmean"]["model_minus_this"] for s in ("gaussian", "copy"))
    assert gauss["verdict"] == "above the null" and gauss["at_floor"] and gauss["q_bound"]
    assert copy["value"] == 0 and copy["p"] == 1 and copy["verdict"] == "not significant"
    t = randoms["diffmean"]["probe_test"]
    assert t["k"] == 100 and t["at_floor"] and t["verdict"] == "above the null" and t["z"] > 3


def test_sae_rows_leave_out_position_0_and_massive_norm_tokens():
    """As the SAE study does: a few massive-norm tokens after position 0 would otherwise hold
    most of the variance and decide every FVE."""
    from interplab.studies.nulls.run import ordinary_rows

    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 8)).astype(np.float32)
    x[[0, 20]] *= 100  # position 0 of each sequence
    x[[1, 27]] *= 50  # massive-norm tokens elsewhere
    keep = ordinary_rows(x, np.tile(np.arange(20), 2))
    assert keep.sum() == 36 and not keep[[0, 1, 20, 27]].any()


def test_nulls_report_renders_a_result_written_before_the_sae_differences(tmp_path):
    """An older nulls.json (SAE part without model_minus_this) still renders, without the
    model − null table."""
    from interplab.report.nulls import write_nulls_report

    probe = {"value": 0.8, "lo": 0.7, "hi": 0.9, "n": 10, "model_minus_this": None}
    sae = {"train": {"fve": 0.9, "l0": 4.0, "features_used": 10, "n_features": 16, "n_rows": 50},
           "heldout": {"fve": 0.8, "l0": 4.0, "features_used": 9, "n_features": 16, "n_rows": 20},
           "generalisation_gap": 0.1, "heldout_fve_model_minus_this": None}
    old = {"config": {"n_random_directions": 20, "sae_k": 4, "sae_width": 2, "sae_steps": 10},
           "hook": "blocks.1.hook_resid_post", "n_train": 10, "n_test": 10,
           "probes": {"model": {"diffmean": probe}}, "random_directions": {},
           "saes": {"model": sae, "gaussian": sae}, "notes": [], "model": {"name": "m"},
           "dataset": {"name": "d"}}
    html = write_nulls_report(old, tmp_path / "old.html").read_text()
    assert "FVE held-out" in html and "SAE: model − null" not in html


def test_the_committed_smollm2_nulls_page_opens_with_its_answer(tmp_path):
    """The full-size result in docs/results (seven nulls, two probes, SAEs on SmolLM2) still
    shows its findings and headline figure on the first screen."""
    import json
    from pathlib import Path

    from interplab.report.nulls import findings, write_nulls_report
    from tests.pages import check_tables_align, check_top_of_page

    r = json.loads((Path(__file__).parents[1] / "docs/results/nulls.json").read_text())
    lines = findings(r)
    assert 3 <= len(lines) <= 5 and "beyond every null source" in lines[0]
    path = write_nulls_report(r, tmp_path / "nulls.html")
    assert check_tables_align(path.read_text()) == 4
    check_top_of_page(path, tmp_path)
