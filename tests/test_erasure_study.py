"""The erasure study end to end on a tiny model: result, JSON round trip, report."""

import json

from interplab.report.erasure import write_erasure_report
from interplab.studies.erasure import ErasureConfig, ErasureResult, run_erasure


def test_erasure_study_on_a_tiny_model(tmp_path):
    config = ErasureConfig(model="tiny-llama", max_statements=200, layer=1,
                           methods=["leace", "inlp", "median-match"], inlp_rounds=2,
                           directions_max_rounds=3, neutral_sequences=3, context_length=16,
                           n_boot=100, batch_size=16)
    result = run_erasure(config)
    assert set(result.checks) == {"leace", "inlp", "median-match"}
    assert set(result.in_model) == {"leace", "inlp"}  # median-match needs labels
    for c in result.checks.values():
        assert c["n_test"] == result.n_test and 0 <= c["majority"] <= 1
        assert c["accuracy"]["linear"]["random"]["n"] == result.n_test
    assert result.checks["leace"]["rank"] == 1
    assert result.in_model["leace"]["erased"]["n_tokens"] == 3 * 15
    d = result.directions
    assert len(d["labels"]["rounds"]) >= 1 and d["shuffled"]["rounds"][0]["erased"] == 0
    path = result.to_json(tmp_path / "erasure.json")
    again = ErasureResult.from_json(path)
    assert again.checks == json.loads(path.read_text())["checks"]
    html = write_erasure_report(again, tmp_path / "erasure.html").read_text()
    assert "random subspace" in html and "Not tested" in html and "data:image/png" in html
