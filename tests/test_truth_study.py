import json

import numpy as np
import pytest
import torch

from interplab.errors import InterplabError
from interplab.probes import CCSProbe
from interplab.probes.generalization import LabelledActs, bootstrap_mean, fit_and_test
from interplab.studies.truth import (
    TruthConfig,
    TruthResult,
    _aggregate,
    _control_comment,
    _Fits,
    _make_splits,
    _scored_rows,
    _verdicts,
    is_pair_probe,
    run_truth,
)
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


def test_bootstrap_mean_matches_binomial_width():
    rng = np.random.default_rng(0)
    correct = rng.random((3, 500)) < np.array([[0.5], [0.8], [0.95]])
    est = bootstrap_mean(correct, n_boot=2000, seed=0)
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
    with pytest.raises(InterplabError, match="three positive fractions"):
        TruthConfig(split=[0.8, 0.0, 0.2]).validate()  # no validation split, no layer choice


@pytest.fixture(scope="module")
def tiny_run():
    config = TruthConfig(
        model="tiny-llama", datasets=["cities", "neg_cities", "larger_than"],
        train_sets=[["cities"], ["larger_than"]], layers=[0, 3], probes=["diffmean", "ccs"],
        max_per_dataset=60, n_boot=100,
    )
    return run_truth(config, progress=False)


def test_layer_is_chosen_on_validation_and_reported_on_test():
    """Layer 1 is best on test, layer 0 on validation: the study must pick 0 and show the curve."""
    n = 40
    ones, half = np.ones(n), (np.arange(n) % 2).astype(float)
    per_test = {"a": np.stack([half, ones]), "val:a": np.stack([ones, half]),
                "b": np.stack([ones, ones])}
    fits = _Fits(correct={("a", "diffmean", "probe"): per_test},
                 decisions={("a", "diffmean", "probe"): {k: v - 0.5 for k, v in per_test.items()}},
                 shuffle_correct={}, rows={}, own={"a": ["a"]})
    accuracy, heldout, validation, best = _aggregate(TruthConfig(n_boot=50), fits, ["a", "b"],
                                                     [3, 7])
    assert best == {"a": {"diffmean": 3}}
    assert validation["a"]["diffmean"]["value"] == [1.0, 0.5]
    assert heldout["a"]["diffmean"]["probe"]["value"] == [0.5, 1.0]  # the test curve, all layers


def test_untouched_targets_use_all_rows_except_twins_of_training_rows():
    from interplab.datasets import load_dataset, paired

    config = TruthConfig(datasets=["cities", "neg_cities", "larger_than"])
    datasets = {n: load_dataset(n, seed=0, max_size=80) for n in config.datasets}
    splits = _make_splits(datasets, config)
    rows = _scored_rows(["cities"], datasets, splits)
    assert rows["cities"][1]["rows"] == "test split"
    np.testing.assert_array_equal(rows["cities"][0], splits["cities"].test)
    assert rows["larger_than"][1] == {"rows": "all rows", "n": 80, "twins_left_out": 0}
    ia, ib = paired(datasets["cities"], datasets["neg_cities"])
    twins_of_train = set(ib[np.isin(ia, splits["cities"].train)].tolist())
    kept = set(rows["neg_cities"][0].tolist())
    assert kept.isdisjoint(twins_of_train)
    assert kept | twins_of_train == set(range(80))
    assert rows["neg_cities"][1]["twins_left_out"] == len(twins_of_train) > 0
    # a mixed training set scores both of its datasets on their test splits, twins together
    mixed = _scored_rows(["cities", "neg_cities"], datasets, splits)
    assert mixed["neg_cities"][1]["rows"] == "test split"
    test_pairs = np.isin(ia, splits["cities"].test)
    assert set(ib[test_pairs].tolist()) <= set(splits["neg_cities"].test.tolist())


def _cell(value, n):
    return {"value": [[value]], "lo": [[value - 0.05]], "hi": [[value + 0.05]], "n": [n],
            "positive_rate": [[0.5]]}


def test_verdicts_are_graded_and_corrected_over_the_whole_matrix():
    # One 0.42 cell among 30 chance cells (interval up to ~0.49): once "reliably below chance",
    # now not distinguishable from chance after Benjamini-Hochberg; 0.05 stays "inverted"; a
    # 1-row test set at 0.00 gets no verdict at all.
    tests = ["weak", "strong", "tiny", *[f"null{i}" for i in range(30)]]
    cells = [_cell(0.42, 200), _cell(0.05, 200), _cell(0.0, 1)] + [_cell(0.5, 200)] * 30
    accuracy = {"t": {"diffmean": {"probe": {
        "value": [[c["value"][0][0] for c in cells]], "lo": [[c["lo"][0][0] for c in cells]],
        "hi": [[c["hi"][0][0] for c in cells]], "n": [c["n"][0] for c in cells],
        "positive_rate": [[0.5] * len(cells)]}}}}
    scored = {"t": {t: {"twins_left_out": 0} for t in tests}}
    rows = {r["test"]: r for r in _verdicts(accuracy, {"t": {"diffmean": 0}}, ["t"], tests, [0],
                                            scored)}
    assert rows["weak"]["p"] < 0.05 and rows["weak"]["verdict"] == "chance"
    assert rows["strong"]["verdict"] == "inverted" and rows["strong"]["q"] < 1e-10
    assert rows["tiny"]["verdict"] == "too few statements"


def _write_plain_csv(ds, path, order=None):
    import csv

    order = range(len(ds)) if order is None else order
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["statement", "label"])
        for i in order:
            w.writerow([ds.statements[i], int(ds.labels[i])])
    return path


@pytest.fixture(scope="module")
def plain_csvs(tmp_path_factory):
    """cities.csv / neg_cities.csv as in the geometry-of-truth files: no pair_id, no group."""
    from interplab.datasets import load_dataset

    tmp = tmp_path_factory.mktemp("csvs")
    cities, neg = (load_dataset(n, seed=0, max_size=80) for n in ("cities", "neg_cities"))
    shuffled = tmp / "shuffled"
    shuffled.mkdir()
    order = np.random.default_rng(0).permutation(len(neg))
    return (_write_plain_csv(cities, tmp / "cities.csv"),
            _write_plain_csv(neg, tmp / "neg_cities.csv"),
            _write_plain_csv(neg, shuffled / "neg_cities.csv", order))


def test_ccs_without_pairs_is_refused_before_the_model_is_loaded(plain_csvs):
    cities, _, neg_shuffled = plain_csvs
    config = TruthConfig(model="no-such-model", datasets=[str(cities), str(neg_shuffled)],
                         train_sets=[["cities"]], layers=[0], probes=["diffmean", "ccs"])
    with pytest.raises(InterplabError, match="needs statement/negation pairs"):
        run_truth(config, progress=False)
    # without CCS nothing needs pairs: the run gets as far as loading the model
    config.probes = ["diffmean"]
    with pytest.raises(InterplabError, match="no-such-model"):
        run_truth(config, progress=False)


def test_tiny_training_set_is_refused_before_the_model_is_loaded(tmp_path):
    from interplab.datasets import load_dataset

    path = _write_plain_csv(load_dataset("cities", seed=0, max_size=12), tmp_path / "few.csv")
    config = TruthConfig(model="no-such-model", datasets=[str(path)], train_sets=[["few"]])
    with pytest.raises(InterplabError, match=r"in its (train|val|test) split"):
        run_truth(config, progress=False)


def test_harvest_is_cached_and_reused(tmp_path, monkeypatch):
    import interplab.activations as activations

    config = TruthConfig(model="tiny-llama", datasets=["cities"], train_sets=[["cities"]],
                         layers=[0, 1], probes=["diffmean"], controls=["reset"],
                         max_per_dataset=60, n_boot=20)
    first = run_truth(config, progress=False, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("cities-*.safetensors"))) == 2  # the model and its reset copy

    def no_harvest(*args, **kwargs):
        raise AssertionError("harvested again although the activations are cached")

    monkeypatch.setattr(activations, "harvest", no_harvest)
    again = run_truth(config, progress=False, cache_dir=tmp_path)
    assert again.accuracy == first.accuracy
    config.layers = [0, 2]  # other layers: another cache entry, so the model runs again
    with pytest.raises(AssertionError, match="harvested again"):
        run_truth(config, progress=False, cache_dir=tmp_path)
    # Same name, same config, other weights (e.g. a fine-tuned folder saved over the old one):
    # the cache must not serve the old model's activations.
    import interplab.models as models

    real_load = models.load

    def changed_weights(*args, **kwargs):
        lm = real_load(*args, **kwargs)
        with torch.no_grad():
            next(lm.hf.parameters()).mul_(1.5)
        return lm

    monkeypatch.setattr(models, "load", changed_weights)
    config.layers = [0, 1]
    with pytest.raises(AssertionError, match="harvested again"):
        run_truth(config, progress=False, cache_dir=tmp_path)


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
    assert json.dumps(again.verdicts) == json.dumps(r.verdicts)  # NaN q-values: compare text
    assert again.summary == r.summary


def test_tiny_run_reports_splits_scopes_and_verdicts(tiny_run):
    r = tiny_run
    by_name = {d["name"]: d for d in r.datasets}
    assert by_name["cities"]["split_rule"].startswith("by entity")
    assert by_name["cities"]["n_train"] + by_name["cities"]["n_val"] + by_name["cities"]["n_test"] == 60
    assert r.scored["cities"]["larger_than"]["n"] == 60  # untouched target: every row
    assert r.scored["cities"]["neg_cities"]["twins_left_out"] == by_name["cities"]["n_train"]
    assert r.method["centering"] == "per-dataset" and "last token" in r.method["tokens"]
    assert r.validation["cities"]["diffmean"]["n"] == by_name["cities"]["n_val"]
    assert len(r.verdicts) == sum(len(p) for p in r.best_layer.values()) * len(r.test_sets)
    for v in r.verdicts:
        assert v["verdict"] == "too few statements" if v["n"] < 20 else v["q"] >= v["p"]
    assert r.summary and r.summary[0].startswith("On tiny-llama")


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


def test_shuffled_interval_covers_the_spread_between_shuffles():
    """Two shuffles, one right on every row and one wrong on every row: the mean is 0.5 with no
    sampling spread at all, but one shuffled probe can land anywhere from 0 to 1."""
    n = 50
    hits = np.stack([np.ones(n, bool), np.zeros(n, bool)])[None]  # [L=1, K=2, n]
    key = ("a", "diffmean", "shuffled")
    fits = _Fits(correct={key: {"a": hits.mean(axis=1), "val:a": hits.mean(axis=1)}},
                 decisions={key: {"a": np.zeros((1, n))}},
                 shuffle_correct={("a", "diffmean"): {"a": hits}}, rows={}, own={"a": ["a"]})
    accuracy, heldout, _, _ = _aggregate(TruthConfig(n_boot=200), fits, ["a"], [0])
    cell = accuracy["a"]["diffmean"]["shuffled"]
    assert cell["value"][0][0] == 0.5
    assert cell["lo"][0][0] < 0.05 and cell["hi"][0][0] > 0.95
    assert heldout["a"]["diffmean"]["shuffled"]["lo"][0] < 0.05


class _NamelessPairProbe(CCSProbe):
    """A pair probe under a name the study has never heard of."""


def test_any_registered_pair_probe_gets_the_pair_handling(plain_csvs, monkeypatch):
    from interplab.probes import PROBES

    monkeypatch.setitem(PROBES, "pairs-v2", _NamelessPairProbe)
    assert is_pair_probe("pairs-v2") and not is_pair_probe("diffmean")
    cities, _, neg_shuffled = plain_csvs
    config = TruthConfig(model="no-such-model", datasets=[str(cities), str(neg_shuffled)],
                         train_sets=[["cities"]], layers=[0], probes=["diffmean", "pairs-v2"])
    with pytest.raises(InterplabError, match="needs statement/negation pairs.*leave pairs-v2 out"):
        run_truth(config, progress=False)
    off = {"value": 0.2, "lo": 0.1, "hi": 0.3}
    assert "broken statement/negation pairs" in _control_comment("shuffled", "pairs-v2", off, off)
    assert "shuffled labels" in _control_comment("shuffled", "diffmean", off, off)


@pytest.mark.parametrize("where", ["progress", "fit"])
def test_failing_study_run_leaves_thread_counts_unchanged(where, monkeypatch, tmp_path):
    """The probe stage runs on one thread; an error there (from the progress display as it sets
    up, or from a fit) must hand the caller back its own torch and BLAS thread counts."""
    from rich.progress import Progress
    from threadpoolctl import threadpool_info, threadpool_limits

    import interplab.probes.generalization as generalization

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    if where == "fit":
        monkeypatch.setattr(generalization, "fit_and_test", boom)
    else:
        real_add = Progress.add_task
        monkeypatch.setattr(Progress, "add_task", lambda self, description, *a, **k: boom()
                            if description == "fit probes" else real_add(self, description, *a, **k))
    config = TruthConfig(model="tiny-llama", datasets=["cities"], train_sets=[["cities"]],
                         layers=[0], probes=["diffmean"], controls=[], max_per_dataset=60,
                         n_boot=20)
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # not the study's 1, so a leak shows
    try:
        with threadpool_limits(limits=2):
            blas = [d["num_threads"] for d in threadpool_info()]
            with pytest.raises(RuntimeError, match="boom"):
                run_truth(config, progress=False, cache_dir=tmp_path)
            assert torch.get_num_threads() == 2
            assert [d["num_threads"] for d in threadpool_info()] == blas
    finally:
        torch.set_num_threads(before)


def test_every_interval_follows_n_boot():
    """With one bootstrap draw every interval collapses to that draw (lo == hi), the
    log-probability/label correlation's included: no interval keeps a resample count of its own."""
    config = TruthConfig(model="tiny-llama", datasets=["cities", "larger_than"],
                         train_sets=[["cities"]], layers=[0], probes=["diffmean"], controls=[],
                         max_per_dataset=60, n_boot=1)
    r = run_truth(config, progress=False)
    for name, d in r.likelihood["per_dataset"].items():
        assert d["r_lo"] == d["r_hi"], (name, d)
    for cell in r.likelihood["baseline"]["cities"]["test"].values():
        assert cell["lo"] == cell["hi"]
    entry = r.accuracy["cities"]["diffmean"]["probe"]
    assert entry["lo"] == entry["hi"]


def test_datasets_are_harvested_together_and_split_back(tmp_path, monkeypatch):
    """Several datasets go through one harvest call (so its length sorting spans them); each
    gets back exactly its own rows, and a dataset already cached is not harvested again."""
    import interplab.activations as activations
    from interplab.datasets import load_dataset
    from interplab.models import load
    from interplab.progress import LineProgress
    from interplab.studies.truth import _harvest_all

    lm = load("tiny-llama")
    datasets = {n: load_dataset(n, max_size=40) for n in ("cities", "larger_than", "sp_en_trans")}
    calls: list[int] = []
    real = activations.harvest

    def counting(lm, texts, *args, **kwargs):
        calls.append(len(texts))
        return real(lm, texts, *args, **kwargs)

    monkeypatch.setattr(activations, "harvest", counting)
    from rich.console import Console

    bar = LineProgress(Console(quiet=True))
    together, _ = _harvest_all(lm, {"cities": datasets["cities"]}, [0, 1], 8, bar, "m", tmp_path)
    calls.clear()
    out, reused = _harvest_all(lm, datasets, [0, 1], 8, bar, "m", tmp_path)
    assert reused == 1 and calls == [80]  # cities came from the cache, the other two in one call
    for name, ds in datasets.items():
        alone = real(lm, ds.statements, ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"],
                     "last", with_logprobs=True, progress=False)
        X, lp = out[name]
        assert X.shape == (2, len(ds), lm.d_model)
        assert np.allclose(X[1], alone["blocks.1.hook_resid_post"].numpy(), atol=1e-4)
        assert np.allclose(lp, alone.text_logprob.numpy(), atol=1e-3)
    assert np.array_equal(out["cities"][0], together["cities"][0])


def test_erasure_nulls_section_on_planted_truth():
    """LEACE takes the linear probe to chance where the same-rank random subspace does not, and
    the probe beats every data null with an interval above zero."""
    from types import SimpleNamespace

    from interplab.controls.nulls import DATA_NULLS
    from interplab.studies.truth_erasure import erasure_and_nulls

    planted = _planted(400, 32, 2, seed=0)
    datasets = {"a": SimpleNamespace(labels=planted.y)}
    splits = {"a": SimpleNamespace(train=np.arange(280), test=np.arange(280, 400))}
    acts = {"a": (planted.X, None)}
    config = TruthConfig(probes=["diffmean", "logistic", "ccs"], n_boot=200)
    en = erasure_and_nulls(config, datasets, splits, acts, [0, 1], {"a": {"logistic": 1}}, "a",
                           ["a"])
    assert en["layer"] == 1 and en["n_train"] == 280 and en["n_test"] == 120
    check = en["erasure"]["checks"]["leace"]
    lin, maj = check["accuracy"]["linear"], check["majority"]
    assert lin["before"]["lo"] > maj + 0.2
    assert lin["erased"]["lo"] <= maj and lin["erased"]["value"] < maj + 0.1
    assert lin["random"]["lo"] > maj + 0.2  # a random rank-1 subspace leaves truth decodable
    assert en["nulls"]["nulls_run"] == list(DATA_NULLS)
    probes = en["nulls"]["probes"]
    assert set(probes) == {"model", *DATA_NULLS}
    for null in DATA_NULLS:
        for probe in ("diffmean", "logistic"):  # CCS (a pair probe) is left out
            cell = probes[null][probe]
            assert cell["lo"] <= cell["value"] <= cell["hi"] and abs(cell["value"] - 0.5) < 0.2
            diff = cell["model_minus_this"]
            assert diff["lo"] <= diff["value"] <= diff["hi"] and diff["lo"] > 0
    assert probes["model"]["logistic"]["model_minus_this"] is None
    assert en["nulls"]["random_directions"]["logistic"]["n"] >= 20


def test_erasure_nulls_minus_a_null_that_holds_the_signal_is_about_zero():
    """A null source that carries the real signal (the real rows plus a little noise, row for
    row) gives model − null ≈ 0 with an interval covering 0; the data nulls a clearly positive
    difference."""
    from types import SimpleNamespace

    from interplab.studies.truth_erasure import erasure_and_nulls

    planted = _planted(400, 32, 2, seed=0)
    datasets = {"a": SimpleNamespace(labels=planted.y)}
    splits = {"a": SimpleNamespace(train=np.arange(280), test=np.arange(280, 400))}
    holds = planted.X[1] + 0.05 * np.random.default_rng(1).standard_normal(planted.X[1].shape)
    config = TruthConfig(probes=["diffmean", "logistic"], n_boot=200)
    en = erasure_and_nulls(config, datasets, splits, {"a": (planted.X, None)}, [0, 1],
                           {"a": {"logistic": 1}}, "a", ["a"], model_rows={"holds-signal": holds})
    nulls = en["nulls"]
    assert nulls["nulls_run"] == ["gaussian", "gaussian-mixture", "hypercube", "holds-signal"]
    for probe in ("diffmean", "logistic"):
        d = nulls["probes"]["holds-signal"][probe]["model_minus_this"]
        assert d["lo"] <= 0 <= d["hi"] and abs(d["value"]) < 0.05
        assert nulls["probes"]["gaussian"][probe]["model_minus_this"]["lo"] > 0.2
    assert any("not run: shuffled-tokens, layer0, reset, random-init" in n for n in nulls["notes"])


def test_model_null_rows_reuse_the_reset_harvest_and_match_a_fresh_pass(tiny_models):
    """The reset control's harvest is the reset null's rows (same network, texts, tokens), so
    the section reuses it; both agree with a fresh model-null pass."""
    from types import SimpleNamespace

    from interplab.activations import harvest
    from interplab.controls.nulls import model_null
    from interplab.datasets import load_dataset
    from interplab.models import reset_copy
    from interplab.studies.truth_erasure import model_null_rows

    lm = tiny_models["tiny-llama"]
    ds = load_dataset("cities", seed=0, max_size=24)
    hook = "blocks.2.hook_resid_post"
    control = harvest(reset_copy(lm, seed=3), ds.statements, [hook], "last", progress=False)[hook]
    fresh = model_null("reset", lm, ds.statements, hook, "last", seed=3)
    assert np.allclose(control.numpy(), fresh, atol=1e-5)
    splits = {"cities": SimpleNamespace(train=np.arange(16), test=np.arange(16, 24))}
    config = TruthConfig(model="no-such-model", nulls=["gaussian", "reset"], seed=3)
    rows = model_null_rows(config, {"cities": ds}, splits, ["cities"], 2, fresh)
    assert list(rows) == ["reset"] and rows["reset"] is fresh  # no model loaded, no new pass


def test_erasure_nulls_is_off_by_default_and_old_results_load(tiny_run, tmp_path):
    assert TruthConfig().erasure_nulls is False
    assert tiny_run.erasure_nulls is None
    data = json.loads(tiny_run.to_json(tmp_path / "r.json").read_text())
    del data["erasure_nulls"]  # a result file written before the section existed
    (tmp_path / "old.json").write_text(json.dumps(data))
    assert TruthResult.from_json(tmp_path / "old.json").erasure_nulls is None


def test_fits_are_the_same_in_parallel_workers_and_in_one_process(tmp_path, monkeypatch):
    """The fit jobs run in forked workers when threads allow; the figures must not move."""
    from interplab.parallel import fork_available

    if not fork_available():
        pytest.skip("worker processes are forked on Linux only")
    config = TruthConfig(model="tiny-llama", datasets=["cities", "neg_cities", "larger_than"],
                         train_sets=[["cities"], ["cities", "neg_cities"], ["larger_than"]],
                         layers=[0, 2, 3], max_per_dataset=60, n_boot=50, n_shuffles=2)
    runs = {}
    for workers in ("1", "2"):  # the second run reads the first one's harvest from the cache
        monkeypatch.setenv("INTERPLAB_THREADS", workers)
        runs[workers] = run_truth(config, progress=False, cache_dir=tmp_path)
    one, two = runs["1"], runs["2"]
    assert one.timings["fit_workers"] == 1 and two.timings["fit_workers"] == 2
    assert list(two.accuracy["cities"]) == config.probes  # the configuration's order
    for field_name in ("accuracy", "heldout", "validation", "best_layer", "verdicts", "notes"):
        # compared as JSON text, where NaN (a p-value that is not defined) equals NaN
        assert json.dumps(getattr(two, field_name)) == json.dumps(getattr(one, field_name))
    assert two.accuracy["cities"]["ccs"]["probe"]["value"] != one.accuracy["larger_than"]["lda"][
        "probe"]["value"]  # the figures compared differ between probes: the test can fail


def test_analysis_stage_runs_on_the_threads_the_policy_gives(monkeypatch):
    """Beside busy processes `auto` gives one thread; an SVD on a larger BLAS pool then spin-waits
    (the PCA views once took 100 s instead of 5 under load): the stage must use the policy's."""
    from threadpoolctl import threadpool_info

    import interplab.studies.truth as truth

    seen = []
    inner = truth._pca_views

    def pca_views(*args, **kwargs):
        seen.append(max(p["num_threads"] for p in threadpool_info()))
        seen.append(torch.get_num_threads())
        return inner(*args, **kwargs)

    monkeypatch.setattr(truth, "_pca_views", pca_views)
    monkeypatch.setattr(truth, "resolve_threads", lambda *a, **k: 1)
    config = TruthConfig(model="tiny-llama", datasets=["cities"], train_sets=[["cities"]],
                         layers=[0, 1], probes=["diffmean"], controls=["shuffled"],
                         max_per_dataset=60, n_boot=20)
    with truth.limit_threads(2):  # a process whose pools are larger than the policy's count
        run_truth(config, progress=False)
    assert seen == [1, 1]
