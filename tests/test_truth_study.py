import json

import numpy as np
import pytest

from interplab.errors import InterplabError
from interplab.probes.generalization import LabelledActs, bootstrap_accuracy, fit_and_test
from interplab.studies.truth import TruthConfig, TruthResult, run_truth
from tests.conftest import skip_unless_strict


def _planted(n, d, layers, seed, flip=False):
    """Activations whose layer-1 carries the label along a fixed axis (layer 0: pure noise)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    X = rng.standard_normal((layers, n, d))
    # A moderate signal: a very strong one makes its axis the highest-variance direction, and a
    # shuffled-label mass-mean direction then leans on it by chance (accuracy far from 0.5).
    X[1, :, 0] += 1.6 * (2 * y - 1) * (-1 if flip else 1)
    return LabelledActs(X, y)


@pytest.mark.parametrize("probe", ["diffmean", "lda", "logistic"])
def test_engine_finds_planted_truth_and_controls_fail(probe):
    train = _planted(400, 256, 2, seed=0)
    tests = {"same": _planted(400, 256, 2, seed=1), "flipped": _planted(400, 256, 2, seed=2, flip=True)}
    out = fit_and_test(probe, train, tests, seed=0)
    acc = {v: {t: c.mean(axis=1) for t, c in per.items()} for v, per in out.correct.items()}
    assert acc["probe"]["same"][1] > 0.88  # the planted layer (Bayes accuracy Φ(1.6) ≈ 0.95)
    assert abs(acc["probe"]["same"][0] - 0.5) < 0.1  # the noise layer
    # an inverted test set is reported as inverted: accuracy ≈ 1 − accuracy on the same concept
    assert acc["probe"]["flipped"][1] < 0.15
    assert abs(acc["probe"]["flipped"][1] - (1 - acc["probe"]["same"][1])) < 0.06
    assert abs(acc["shuffled"]["same"][1] - 0.5) < 0.12
    # a random direction picks up a strong signal only through its chance overlap (~1/√d)
    assert abs(acc["random"]["same"][1] - 0.5) < 0.2
    assert acc["random"]["same"][1] < acc["probe"]["same"][1] - 0.25


def test_bootstrap_accuracy_matches_binomial_width():
    rng = np.random.default_rng(0)
    correct = rng.random((3, 500)) < np.array([[0.5], [0.8], [0.95]])
    est = bootstrap_accuracy(correct, n_boot=2000, seed=0)
    for k, p in enumerate(est["value"]):
        half = 1.96 * np.sqrt(p * (1 - p) / 500)
        assert abs((est["hi"][k] - est["lo"][k]) / 2 - half) < 0.25 * half + 0.003


def test_config_errors_are_clear():
    with pytest.raises(InterplabError, match="unknown probe"):
        TruthConfig(probes=["svm"]).validate()
    with pytest.raises(InterplabError, match="not among the datasets"):
        TruthConfig(datasets=["cities"], train_sets=[["larger_than"]]).validate()
    with pytest.raises(InterplabError, match="control"):
        TruthConfig(controls=["placebo"]).validate()


@pytest.fixture(scope="module")
def tiny_run():
    config = TruthConfig(
        model="tiny-llama", datasets=["cities", "neg_cities", "larger_than"],
        train_sets=[["cities"], ["larger_than"]], layers=[0, 3], probes=["diffmean", "ccs"],
        max_per_dataset=60, n_boot=100,
    )
    return run_truth(config, progress=False)


def test_tiny_run_has_every_number_with_its_controls(tiny_run, tmp_path):
    r = tiny_run
    assert r.train_sets == ["cities", "larger_than"] and r.layers == [0, 3]
    for variant in ("probe", "shuffled", "random", "reset"):
        entry = r.accuracy["cities"]["diffmean"][variant]
        v, lo, hi = (np.asarray(entry[k]) for k in ("value", "lo", "hi"))
        assert v.shape == (2, 3) and (lo <= v + 1e-12).all() and (v <= hi + 1e-12).all()
        assert ((v >= 0) & (v <= 1)).all()
    assert "ccs" in r.accuracy["cities"]  # trained on cities/neg_cities pairs
    assert "ccs" not in r.accuracy["larger_than"]  # smaller_than is not in this run
    assert any("CCS was not trained on larger_than" in n for n in r.notes)
    assert r.reset_model["variant"].startswith("reset")
    lik = r.likelihood["per_dataset"]
    assert set(lik) == {"cities", "neg_cities", "larger_than"}
    assert all(-1 <= d["r_logprob_label"] <= 1 for d in lik.values())
    path = r.to_json(tmp_path / "truth.json")
    again = TruthResult.from_json(path)
    assert again.accuracy == json.loads(path.read_text())["accuracy"]
    assert again.best_layer == r.best_layer


@pytest.mark.embedded
def test_embedded_model_represents_city_truth_and_controls_do_not():
    try:
        import gguf  # noqa: F401
    except ImportError:
        skip_unless_strict("the gguf package is not installed (pip install gguf)")
    from interplab.errors import InterplabError as _Err

    config = TruthConfig(model="smollm2-135m", datasets=["cities", "neg_cities"],
                         train_sets=[["cities"]], layers=[12], probes=["diffmean"],
                         max_per_dataset=300, n_boot=200, n_shuffles=3)
    try:
        r = run_truth(config, progress=False)
    except _Err as exc:  # pragma: no cover - CI installs the embedded model
        skip_unless_strict(str(exc))
    acc = r.acc("cities", "diffmean", "probe", 12, "cities")
    reset = r.acc("cities", "diffmean", "reset", 12, "cities")
    assert acc["value"] >= 0.7, acc
    assert reset["value"] < acc["value"] - 0.15, (reset, acc)
    assert r.acc("cities", "diffmean", "probe", 12, "neg_cities")["value"] < 0.5  # the inversion
