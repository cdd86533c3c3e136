"""The XOR study's probing and generalization on toy activations, and a small run end to end."""

import numpy as np
import pytest
import torch

from interplab.datasets import Split
from interplab.studies.xor import feature_curves, generalization_curves


def _split(n, seed=0):
    perm = np.random.default_rng(seed).permutation(n)
    a, b = int(0.6 * n), int(0.8 * n)
    return Split(train=np.sort(perm[:a]), val=np.sort(perm[a:b]), test=np.sort(perm[b:]),
                 rule="by row (toy)", fractions=(0.6, 0.2, 0.2))


def _toy_inputs(n, seed):
    """Two balanced, independent bits embedded along two random unit directions, plus noise."""
    rng = np.random.default_rng(seed)
    a, b = rng.permutation(np.arange(n) % 2), rng.permutation((np.arange(n) // 2) % 2)
    E = torch.nn.functional.normalize(torch.randn(2, 16, generator=torch.Generator().manual_seed(seed)),
                                      dim=1)
    s = torch.tensor(np.stack([2 * a - 1, 2 * b - 1], axis=1), dtype=torch.float32)
    x = s @ E + 0.2 * torch.randn(n, 16, generator=torch.Generator().manual_seed(seed + 1))
    return x, a, b


def _toy_model(nonlinear: bool, seed: int = 0) -> torch.nn.Module:
    """Input → random hidden layer (ReLU or none) → read out at both layers."""
    torch.manual_seed(seed)
    hidden = torch.nn.Linear(16, 64)
    return torch.nn.Sequential(hidden, torch.nn.ReLU()) if nonlinear else torch.nn.Sequential(hidden)


def _toy_acts(nonlinear, n=1200, seed=0):
    x, a, b = _toy_inputs(n, seed)
    with torch.no_grad():
        h = _toy_model(nonlinear, seed)(x)
    X = np.stack([np.pad(x.numpy(), ((0, 0), (0, 48))), h.numpy()])  # [2 layers, n, 64]
    return X, a, b


@pytest.mark.parametrize("nonlinear", [True, False])
def test_probe_reads_xor_only_after_a_nonlinearity(nonlinear):
    X, a, b = _toy_acts(nonlinear)
    split = _split(len(a))
    for y in (a, b):  # the basic features are read at both layers
        probe = feature_curves(X, y, split, shuffled=False, n_boot=300)["probe"]
        assert min(probe["value"]) > 0.95
    curves = feature_curves(X, a ^ b, split, shuffled=True, n_boot=300)
    probe, shuffled = curves["probe"], curves["shuffled"]
    # the input layer is linear in (a, b) in both models: XOR at chance, its CI covers 0.5
    assert probe["lo"][0] <= 0.5 <= probe["hi"][0]
    if nonlinear:
        assert probe["value"][1] > 0.9 and probe["lo"][1] > shuffled["hi"][1]
    else:
        assert probe["lo"][1] <= 0.5 <= probe["hi"][1]
    assert shuffled["lo"][1] <= 0.5 <= shuffled["hi"][1]


def _planted(k, n=1600, d=32, seed=0):
    """x = u_a·a + u_c·label + k·u_x·(a ⊕ label) + noise (±1 codes): RAX when k > 0."""
    rng = np.random.default_rng(seed)
    a, c = rng.permutation(np.arange(n) % 2), rng.permutation((np.arange(n) // 2) % 2)
    U = np.linalg.qr(rng.standard_normal((d, 3)))[0].T  # three orthonormal directions
    codes = np.stack([2 * a - 1, 2 * c - 1, 2 * (a ^ c) - 1], axis=1).astype(float)
    x = codes @ (U * np.array([[1.0], [1.0], [k]])) + rng.standard_normal((n, d))
    return x[None], a, c


def test_generalization_drops_with_planted_rax_and_the_xor_explains_it():
    X, a, c = _planted(k=1.2)
    g = generalization_curves(X, a, c, _split(len(a)), n_boot=500)
    assert g["in"]["value"][0] > 0.9  # trained where a = 1, read there well
    assert g["drop"]["lo"][0] > 0.25  # tested where a = 0 it fails; training on both does not
    assert g["out"]["value"][0] < 0.5 < g["both"]["value"][0]
    assert g["cos_xor"][0] < -0.5 and abs(g["cos_xor_both"][0]) < 0.2
    assert g["separation_ratio"][0] < 0  # the label direction inverts between a = 1 and a = 0
    # removing the a ⊕ label component repairs most of it
    assert g["explained"]["ablated"]["value"] > 0.75 and g["explained"]["ablated"]["lo"] > 0.5
    assert g["ablated"]["value"][0] > 0.75


def test_no_drop_without_the_planted_xor():
    # more dimensions than training rows: probes fitted on shared rows would share their
    # overfitting and look aligned with the XOR direction
    X, a, c = _planted(k=0.0, n=1000, d=400)
    g = generalization_curves(X, a, c, _split(len(a)), n_boot=500)
    assert g["drop"]["lo"][0] <= 0 <= g["drop"]["hi"][0]
    assert g["out"]["lo"][0] <= g["in"]["hi"][0] and g["in"]["lo"][0] <= g["out"]["hi"][0]
    assert abs(g["cos_xor"][0]) < 0.25
    assert 0.7 < g["separation_ratio"][0] < 1.3


def _row(kind, model, reset):
    def cell(v, lo, hi, verdict):
        return {"layer": 2, "value": v, "lo": lo, "hi": hi, "n": 100, "verdict": verdict}

    return {"kind": kind, "model": cell(*model), "reset": cell(*reset)}


def test_artefact_flag_follows_the_control_network():
    from interplab.studies.xor import _artefact

    model = (0.90, 0.84, 0.95, "above chance")
    flag, comment = _artefact(_row("xor2", model, (0.86, 0.80, 0.92, "above chance")))
    assert flag == "token-level artefact" and "reset" in comment
    flag, comment = _artefact(_row("xor2", model, (0.62, 0.55, 0.70, "weakly above chance")))
    assert flag == "partly token-level"
    assert _artefact(_row("xor2", model, (0.52, 0.42, 0.62, "chance"))) == (None, "")
    flag, comment = _artefact(_row("xor2", (0.52, 0.44, 0.60, "chance"),
                                   (0.73, 0.66, 0.80, "above chance")))
    assert flag is None and "although the model does not" in comment
    flag, comment = _artefact(_row("basic", model, (0.90, 0.84, 0.95, "above chance")))
    assert flag is None and "tokens themselves" in comment


def test_mean_positions_cover_exactly_the_statement(tiny_models):
    _check_body_positions(tiny_models["tiny-llama"])


@pytest.mark.embedded
def test_mean_positions_on_the_embedded_tokenizer(smollm):
    _check_body_positions(smollm)


def _check_body_positions(lm):
    from interplab.datasets import load_dataset
    from interplab.studies.xor import _body_positions

    for name in ("speaker_cities", "distractor_cities", "distractor_filler"):
        ds = load_dataset(name, seed=0, max_size=16)
        pos = _body_positions(lm, ds)
        ids = lm.tokenize(ds.statements)
        for i, rows in enumerate(pos.per_text):
            text = lm.tokenizer.decode([ids[i][k] for k in rows]).strip()
            assert text == ds.metadata["body"][i]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    from interplab.cli.main import main

    out = tmp_path_factory.mktemp("xor") / "xor"
    code = main(["xor", "--model", "tiny-llama", "--datasets", "speaker_cities,speaker_filler",
                 "--layers", "1,3", "--tokens", "last,mean", "--max-per-dataset", "80",
                 "--n-boot", "200", "--n-shuffles", "2", "--out", str(out)])
    return code, out


def test_small_study_on_a_tiny_model_through_the_cli(cli_run):
    from interplab.cli.main import main
    from interplab.studies.xor import XorResult

    code, out = cli_run
    assert code == 0
    r = XorResult.from_json(out / "xor.json")
    assert r.layers == [1, 3] and set(r.control_models) == {"reset", "random_init"}
    features = {(x["tokens"], x["dataset"]): [] for x in r.readings}
    for x in r.readings:
        features[(x["tokens"], x["dataset"])].append(x["feature"])
        assert {"model", "shuffled", "reset", "random_init"} <= set(x)
        assert set(x["explained_by"]) | set(x["partly_explained_by"]) <= {"shuffled", "reset",
                                                                         "random_init"}
    assert len(features[("mean", "speaker_cities")]) == 7
    assert features[("last", "speaker_filler")] == ["has_alice", "has_not", "has_alice^has_not"]
    assert set(r.generalization["last"]["speaker_cities"]) == {"has_alice", "has_not"}
    # a randomly initialised tiny model knows no geography: truth, hence RAX, is not there
    assert any(s.startswith("RAX does not reproduce on tiny-llama") for s in r.summary)
    assert len(r.summary) <= 6  # findings, not one sentence per dataset
    assert r.method["splits"]["speaker_cities"].startswith("by entity (city pair")
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "speaker_cities" in html and "Alice: The city of" in html
    again = main(["xor", "--model", "tiny-llama", "--datasets", "bogus", "--out", str(out)])
    assert again == 2


def test_report_opens_with_its_answer_in_a_browser(cli_run, tmp_path):
    from interplab.studies.xor import XorResult
    from tests.pages import check_tables_align, check_top_of_page

    _, out = cli_run
    html = (out / "report.html").read_text(encoding="utf-8")
    body = html[html.index("<body>"):]
    assert body.index('id="summary"') < body.index('id="headline"') < body.index("<table")
    r = XorResult.from_json(out / "xor.json")
    summary = body[body.index('id="summary"'):body.index("</section>")]
    assert summary.count("<li>") == len(r.summary)
    readings = html[html.index("<h2>Readings</h2>"):]
    readings = readings[:readings.index("</table>")]
    assert readings.count("<tr>") == len(r.readings) + 1  # every reading, and the header
    assert check_tables_align(html) >= 3
    check_top_of_page(out / "report.html", tmp_path)


def test_readings_name_the_control_that_reads_them_too():
    from interplab.studies.xor import _readings

    def curve(value, lo, hi, val=None):
        return {"value": [value], "lo": [lo], "hi": [hi], "n": 200,
                **({"val": [val]} if val is not None else {})}

    curves = {"last": {"d": {
        # the reset network reads this XOR as well as the model: explained by it
        "a^b": {"model": curve(0.90, 0.85, 0.94, 0.9), "reset": curve(0.88, 0.83, 0.93, 0.9),
                "random_init": curve(0.50, 0.43, 0.57, 0.5),
                "shuffled": curve(0.50, 0.43, 0.57)},
        # no control reads it
        "a^label": {"model": curve(0.85, 0.80, 0.90, 0.9), "reset": curve(0.52, 0.45, 0.59, 0.5),
                    "random_init": curve(0.49, 0.42, 0.56, 0.5),
                    "shuffled": curve(0.51, 0.44, 0.58)},
    }}}
    rows = {r["feature"]: r for r in _readings(curves, [0], {})}
    assert rows["a^b"]["explained_by"] == ["reset"] and not rows["a^b"]["beyond_controls"]
    assert rows["a^b"]["artefact"] == "token-level artefact"
    assert rows["a^label"]["explained_by"] == [] and rows["a^label"]["beyond_controls"]


def test_summary_counts_only_arbitrary_xors_with_truth():
    from interplab.studies.xor import _summary

    def reading(feature, kind, model, same_as=None):
        cell = {"layer": 5, "n": 160, "value": model[0], "lo": model[1], "hi": model[2],
                "verdict": model[3]}
        chance = {"layer": 5, "n": 160, "value": 0.5, "lo": 0.42, "hi": 0.58, "verdict": "chance"}
        return {"tokens": "last", "dataset": "speaker_cities", "feature": feature, "kind": kind,
                "same_as": same_as, "model": cell, "reset": dict(chance),
                "random_init": dict(chance), "shuffled": dict(chance), "artefact": None}

    strong = (0.80, 0.74, 0.86, "above chance")
    label = reading("label", "basic", strong)
    claim = reading("has_not^label", "xor2", strong, same_as="claim_true, the claim's truth")
    weak = reading("has_alice^label", "xor2", (0.55, 0.47, 0.63, "chance"))
    out = _summary("m", [label, claim, weak], {}, [5], {})
    assert any(s.startswith("RAX does not reproduce on m") for s in out)
    assert any("has_not^label" in s and "not an arbitrary XOR" in s for s in out)
    rax = reading("has_alice^label", "xor2", strong)
    out = _summary("m", [label, claim, rax], {}, [5], {})
    assert any(s.startswith("RAX reproduces on m") and "has_alice^label" in s
               and "has_not^label" not in s for s in out)
