"""Weight SVD: the random-matrix edge against real random matrices, a planted spike found where
it was planted, and the analysis on tiny models of every layout."""

import numpy as np
import pytest
import torch

from interplab.weights import (
    above_edge,
    analyse_weights,
    block_matrices,
    entry_std,
    mp_edges,
    mp_quantiles,
    spectrum_difference,
)


@pytest.mark.parametrize("shape", [(100, 400), (576, 1536), (300, 150)])
def test_marchenko_pastur_edges_match_random_matrices(shape):
    m, n = shape
    g = torch.Generator().manual_seed(m)
    for _ in range(3):
        w = torch.randn(m, n, generator=g, dtype=torch.float64) * 0.02
        s = torch.linalg.svdvals(w).numpy()
        sigma = entry_std(w)
        lo, hi = mp_edges(m, n, sigma)
        assert 0.95 < s[0] / hi < 1.03 and 0.95 < s[-1] / lo < 1.06
        assert not above_edge(s, m, n, sigma).any()
        q = (np.arange(len(s)) + 0.5) / len(s)
        assert np.max(np.abs(np.sort(s) - mp_quantiles(m, n, sigma, q))) < 0.04 * hi


def test_a_planted_spike_stands_above_the_edge_and_nothing_else_does():
    m, n = 200, 500
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(m, n, generator=g, dtype=torch.float64)
    u, v = torch.randn(m, 1, generator=g, dtype=torch.float64), torch.randn(n, 1, generator=g, dtype=torch.float64)
    spike = 3 * (m * n) ** 0.25 * (u / u.norm()) @ (v / v.norm()).T  # well above the BBP threshold
    w = noise + spike
    s = torch.linalg.svdvals(w).numpy()
    assert above_edge(s, m, n, entry_std(w)).sum() == 1
    weak = noise + 0.3 * spike  # below the detection threshold
    assert above_edge(torch.linalg.svdvals(weak).numpy(), m, n, entry_std(weak)).sum() == 0


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2", "tiny-neox"])
def test_weights_on_tiny_models(tiny_models, name):
    from interplab.models import reset_copy

    lm = tiny_models[name]
    mats = block_matrices(lm)
    d = lm.d_model
    kinds = {m.kind for m in mats}
    assert kinds >= {"attn_out", "mlp_in", "mlp_out"} and ("mlp_gate" in kinds) == (name == "tiny-llama")
    for m in mats:  # [out, in]: writing matrices end in d_model, reading ones start from it
        assert m.weight.shape[0 if m.kind in ("attn_out", "mlp_out") else 1] == d
    res = analyse_weights(lm, top_directions=2, top_tokens=4)
    assert len(res) == len(mats)
    r = res[0]
    assert len(r["directions"]) == 2 and len(r["directions"][0]["plus"]) == 4
    assert r["n_singular"] == min(r["shape"]) == len(r["singular_values"])
    # freshly initialised tiny models: Gaussian weights, nothing above the null
    assert sum(x["n_above"] for x in res) <= 1
    assert all(x["n_above_both"] <= x["n_above"] for x in res)
    assert spectrum_difference(res, analyse_weights(reset_copy(lm), top_directions=0)) < 1e-10


def test_weights_study_report(tmp_path):
    from interplab.report.weights import write_weights_report
    from interplab.studies.weights import WeightsConfig, WeightsResult, run_weights
    from tests.pages import check_tables_align, check_top_of_page

    result = run_weights(WeightsConfig.make(model="tiny-qwen2", top_directions=1, top_tokens=3))
    assert set(result.networks) == {"model", "reset", "random-init"}
    assert result.reset_max_spectrum_difference < 1e-10
    assert 3 <= len(result.summary) <= 5 and result.summary[0].startswith("tiny-qwen2: ")
    again = WeightsResult.from_json(result.to_json(tmp_path / "w.json"))
    assert again.summary == result.summary
    path = write_weights_report(again, tmp_path / "w.html")
    html = path.read_text()
    assert "Marchenko" in html and "data:image/png" in html
    body = html[html.index("<body>"):]
    assert body.index('id="summary"') < body.index('id="headline"') < body.index("<table")
    assert body.count("<li>") >= len(result.summary)
    assert check_tables_align(html) == 2
    check_top_of_page(path, tmp_path)


def _matrix(block, kind, n_above, top=9.0, plus=("yes",), minus=("no",)):
    return {"block": block, "kind": kind, "shape": [4, 4], "sigma": 1.0, "mp_lower": 0.0,
            "mp_upper": 4.0, "threshold": 4.5, "n_above": n_above, "n_above_both": n_above,
            "n_singular": 4, "singular_values": [top, 3.0, 2.0, 1.0], "shuffled_top": 4.1,
            "space": "unembedding",
            "directions": [{"index": 0, "s": top, "above": True, "plus": list(plus),
                            "minus": list(minus)}]}


def test_summary_counts_the_model_against_its_controls():
    from interplab.studies.weights import summary

    model = [_matrix(0, "attn_out", 2), _matrix(0, "mlp_out", 0, top=3.5),
             _matrix(1, "attn_out", 1, top=12.0, plus=("Paris",), minus=("<b>",)),
             _matrix(1, "mlp_out", 0, top=3.0)]
    init = [_matrix(b, k, 0, top=3.9) for b in (0, 1) for k in ("attn_out", "mlp_out")]
    init[1]["n_above"] = 1  # one matrix of the control has a value above the null too
    out = summary("m", {"model": model, "reset": model, "random-init": init}, 0.0)
    assert out[0].startswith("m: 3 of 16 singular values in 4 matrices stand above")
    assert "the randomly initialised network: 1; the reset network: 3" in out[0]
    assert "attn_out 3 (random init 0), mlp_out 0 (random init 1)" in out[1]
    assert "2 of 4 matrices have more values above the null than the same matrix" in out[1]
    assert "block 1 attn_out, 3.00 × the edge" in out[2] and "'Paris'" in out[2]
    assert "no null here" in out[3]


def test_weights_page_escapes_tokens(tmp_path):
    from interplab.report.weights import write_weights_report

    mat = {"block": 0, "kind": "attn_out", "shape": [4, 4], "sigma": 1.0, "mp_lower": 0.0,
           "mp_upper": 4.0, "threshold": 4.5, "n_above": 1, "n_above_both": 1, "n_singular": 4,
           "singular_values": [9.0, 3.0, 2.0, 1.0], "shuffled_top": 4.1, "space": "unembedding",
           "directions": [{"index": 0, "s": 9.0, "above": True, "plus": ["<script>x</script>"],
                           "minus": ["&amp;"]}]}
    r = {"config": {}, "model": {"name": "m<b>"}, "networks": {"model": [mat]},
         "reset_max_spectrum_difference": None, "notes": [], "timings": {}}
    html = write_weights_report(r, tmp_path / "w.html").read_text()
    assert "<script>x" not in html and "&lt;script&gt;x" in html and "m&lt;b&gt;" in html
