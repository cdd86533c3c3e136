"""Concept erasure: each method where it must work, and the controls where it must fail."""

import numpy as np
import pytest
import torch

from interplab.erasure import (
    fit_eraser,
    fit_eraser_from_store,
    inlp,
    random_subspace_eraser,
    row_labels,
    verify_erasure,
)
from interplab.erasure.classifiers import correct, linear_classifier, mlp_classifier
from interplab.errors import InterplabError


def concept_data(n=1200, d=16, shift=1.5, seed=0, correlated=True):
    """Gaussian rows (correlated features unless told otherwise) whose class 1 is moved along
    one fixed direction."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((d, d)) / np.sqrt(d) * correlated
    y = rng.integers(0, 2, n)
    x = rng.standard_normal((n, d)) @ (np.eye(d) + a) + 3.0
    direction = rng.standard_normal(d)
    x += np.outer(y, direction / np.linalg.norm(direction) * shift * 2)
    return x, y


def split(x, y, n_train):
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def linear_acc(xtr, ytr, xte, yte):
    return correct(linear_classifier(), xtr, ytr, xte, yte).mean()


def test_leace_equalises_class_means_in_sample():
    x, y = concept_data()
    assert linear_acc(x, y, x, y) > 0.9  # sanity: the concept is there before
    e = fit_eraser("leace", x, y)
    xe = e(torch.from_numpy(x)).numpy()
    gap = xe[y == 1].mean(0) - xe[y == 0].mean(0)
    assert np.abs(gap).max() < 1e-8 * np.abs(x).max()
    assert e.rank == 1
    assert np.allclose(xe.mean(0), x.mean(0), atol=1e-9)  # the unconditional mean is kept
    assert np.allclose(e(torch.from_numpy(xe)).numpy(), xe, atol=1e-9)  # idempotent


def test_leace_streamed_from_a_store_equals_the_in_memory_fit(tmp_path):
    from interplab.activations import ActivationStore, StoreWriter

    x, y = concept_data(n=900, d=12, seed=3)
    hook = "blocks.0.hook_resid_post"
    header = {"model": {"name": "synthetic"}, "hooks": [hook], "positions": "last",
              "dataset": {"name": "synthetic", "n_texts": 900}, "dtype": "float32", "d_model": 12}
    with StoreWriter(tmp_path / "s", header) as w:
        for s in range(3):
            rows = slice(300 * s, 300 * (s + 1))
            w.write_shard({hook: torch.from_numpy(x[rows]).float(),
                           "text_index": torch.arange(300 * s, 300 * (s + 1)),
                           "position": torch.zeros(300, dtype=torch.long),
                           "token_id": torch.zeros(300, dtype=torch.long)}, 300 * (s + 1))
        w.finish()
    store = ActivationStore(tmp_path / "s")
    labels = row_labels(store, y)
    x32 = torch.from_numpy(x).float().double()  # the store holds float32 rows
    for method in ("leace", "mean-diff"):
        streamed = fit_eraser_from_store(method, store, labels, batch_size=128)  # batches cross shards
        whole = fit_eraser(method, x32, y)
        assert torch.allclose(streamed.matrix, whole.matrix, atol=1e-8)
        assert torch.allclose(streamed.bias, whole.bias, atol=1e-8)
    oracle = fit_eraser_from_store("oracle", store, labels, batch_size=100)
    assert torch.allclose(oracle(x32, y), fit_eraser("oracle", x32, y)(x32, y), atol=1e-8)
    with pytest.raises(InterplabError, match="cannot be fitted streaming"):
        fit_eraser_from_store("median-match", store, labels)
    with pytest.raises(InterplabError, match="labels for 900 rows"):
        fit_eraser_from_store("leace", store, labels[:10])
    (tmp_path / "s" / "manifest.json").write_text(
        (tmp_path / "s" / "manifest.json").read_text().replace('"complete": true', '"complete": false'))
    with pytest.raises(InterplabError, match="incomplete"):
        fit_eraser_from_store("leace", ActivationStore(tmp_path / "s"), labels)
    assert fit_eraser_from_store("leace", ActivationStore(tmp_path / "s"), labels,
                                 allow_incomplete=True).rank == 1


def outlier_data(n=6000, d=4, seed=0):
    """Class 1 is class 0 moved by +2 on feature 0, except 1 % of its rows, which sit far on the
    other side so that the class means are equal. The outliers carry the mean but almost none of
    the accuracy."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    rng.shuffle(y)
    x = rng.standard_normal((n, d))
    ones = np.flatnonzero(y == 1)
    out = rng.random(ones.size) < 0.01
    x[ones[~out], 0] += 2.0
    x[ones[out], 0] -= 2.0 * (~out).sum() / out.sum()
    x[ones, 0] -= x[ones, 0].mean() - x[y == 0, 0].mean()  # equal means on feature 0
    return x, y


def test_mean_matching_leaves_signal_that_median_matching_removes():
    from sklearn.tree import DecisionTreeClassifier

    x, y = outlier_data()
    xtr, ytr, xte, yte = split(x, y, 3000)
    acc = {}
    for name in ("mean-match", "median-match"):
        e = fit_eraser(name, xtr, ytr)
        a, b = e(torch.from_numpy(xtr), ytr).numpy(), e(torch.from_numpy(xte), yte).numpy()
        if name == "mean-match":  # mean matching does what it promises: equal class means
            assert np.abs(a[ytr == 1].mean(0) - a[ytr == 0].mean(0)).max() < 1e-9
        # a threshold on one feature (a linear classifier) and the MLP probe
        acc[name] = [correct(DecisionTreeClassifier(max_depth=1), a, ytr, b, yte).mean(),
                     correct(mlp_classifier(0), a, ytr, b, yte).mean()]
    assert min(acc["mean-match"]) > 0.7, acc
    assert max(acc["median-match"]) < 0.56, acc


def test_random_subspace_control_does_not_erase():
    x, y = concept_data(n=1600, d=24, seed=1)
    xtr, ytr, xte, yte = split(x, y, 1000)
    check = verify_erasure(fit_eraser("leace", xtr, ytr), xtr, ytr, xte, yte, n_boot=300)
    lin = check.accuracy["linear"]
    assert lin["before"]["lo"] > 0.85
    assert check.erased_to_chance("linear") and lin["erased"]["value"] < 0.58
    # equal class means leave a convex-loss linear probe with the constant answer, and say so
    assert lin["erased"]["one_class"] and not lin["before"]["one_class"]
    assert check.control_recoverable("linear") and lin["random"]["value"] > 0.85
    assert check.control_recoverable("mlp")
    assert check.rank == check.control_rank == 1
    assert 0 < check.relative_change < 1 and check.relative_change_random > 0
    assert any("clustering" in s for s in check.not_tested)
    # and the control itself: a random rank-1 projection is orthogonal and idempotent
    r = random_subspace_eraser(24, 3, seed=0)
    m = r.matrix
    assert torch.allclose(m @ m, m, atol=1e-12) and torch.allclose(m, m.T, atol=1e-12)


def test_mean_difference_projection_and_oracle_variants():
    x, y = concept_data(n=1000, d=10, seed=2)
    md = fit_eraser("mean-diff", x, y)
    xe = md(torch.from_numpy(x)).numpy()
    assert md.rank == 1 and np.abs(xe[y == 1].mean(0) - xe[y == 0].mean(0)).max() < 1e-9
    for method in ("oracle", "quadratic"):
        e = fit_eraser(method, x, y, shrinkage=False)
        with pytest.raises(InterplabError, match="needs each row's label"):
            e(torch.from_numpy(x))
        xo = e(torch.from_numpy(x), y).numpy()
        assert np.abs(xo[y == 1].mean(0) - xo[y == 0].mean(0)).max() < 1e-8
    xq = fit_eraser("quadratic", x, y, shrinkage=False)(torch.from_numpy(x), y).numpy()
    c0, c1 = np.cov(xq[y == 0].T), np.cov(xq[y == 1].T)
    assert np.abs(c0 - c1).max() < 1e-6 * np.abs(c0).max()  # quadratic also matches covariances


def test_inlp_counts_directions_and_shuffled_labels_start_at_chance():
    # isotropic noise: the best linear direction is the mean difference, so one round suffices
    x, y = concept_data(n=1600, d=20, seed=4, correlated=False)
    xtr, ytr, xte, yte = split(x, y, 1000)
    res = inlp(xtr, ytr, n_rounds=6, X_test=xte, y_test=yte, stop_at_chance=True, n_boot=300)
    assert res.rounds[0]["value"] > 0.85
    assert res.rounds_to_chance is not None and 1 <= res.rounds_to_chance <= 3
    assert res.eraser.rank == res.rounds_to_chance
    q = res.eraser.left.numpy()
    assert np.allclose(q.T @ q, np.eye(q.shape[1]), atol=1e-10)
    rng = np.random.default_rng(0)
    shuf = inlp(xtr, rng.permutation(ytr), n_rounds=4, X_test=xte, y_test=rng.permutation(yte),
                stop_at_chance=True, n_boot=300)
    assert shuf.rounds_to_chance == 0
    # correlated noise: projecting out the classifier's direction leaves the mean difference's
    # other components, so one round of INLP is not enough (where rank-1 LEACE is)
    x, y = concept_data(n=1600, d=20, seed=4)
    xtr, ytr, xte, yte = split(x, y, 1000)
    res = inlp(xtr, ytr, n_rounds=2, X_test=xte, y_test=yte, n_boot=300)
    assert res.rounds[1]["lo"] > res.majority


def test_bad_input_is_refused_with_one_clear_error():
    x, y = concept_data(n=50, d=4)
    with pytest.raises(InterplabError, match="unknown erasure method"):
        fit_eraser("rlace", x, y)
    with pytest.raises(InterplabError, match="labels for 50 rows"):
        fit_eraser("leace", x, y[:3])
    with pytest.raises(InterplabError, match="NaN"):
        fit_eraser("leace", np.full((5, 4), np.nan), [0, 1, 0, 1, 0])
    with pytest.raises(InterplabError, match="at least 2 classes"):
        fit_eraser("leace", x, np.zeros(50, dtype=int))
    with pytest.raises(InterplabError, match="takes no option"):
        fit_eraser("mean-diff", x, y, shrinkage=False)
    with pytest.raises(InterplabError, match="d_model=4"):
        fit_eraser("leace", x, y)(torch.zeros(2, 5, dtype=torch.float64))


def test_erasure_inside_the_model_costs_ce_and_kl(tiny_models):
    from interplab.activations import harvest, harvest_tokens
    from interplab.erasure import erasure_cost, erasure_costs, neutral_tokens

    lm = tiny_models["tiny-llama"]
    hook = "blocks.1.hook_resid_post"
    texts = [f"The number {i} is {'even' if i % 2 == 0 else 'odd'}." for i in range(60)]
    acts = harvest(lm, texts, [hook], "last", progress=False)[hook]
    y = np.arange(60) % 2
    tokens = neutral_tokens(lm, context_length=24, n_sequences=6)
    nothing = random_subspace_eraser(lm.d_model, 0)
    zero = erasure_cost(lm, hook, nothing, tokens, batch_size=4)
    assert abs(zero["delta_ce"]) < 1e-5 and abs(zero["kl"]) < 1e-5
    cost = erasure_cost(lm, hook, fit_eraser("leace", acts, y), tokens, batch_size=4)
    assert cost["n_tokens"] == 6 * 23 and cost["kl"] > 1e-6 and np.isfinite(cost["delta_ce"])
    big = erasure_cost(lm, hook, random_subspace_eraser(lm.d_model, lm.d_model // 2), tokens)
    assert big["kl"] > cost["kl"]  # removing half the stream hurts more than one direction
    both = erasure_costs(lm, hook, {"leace": fit_eraser("leace", acts, y), "none": nothing},
                         tokens, batch_size=4)  # one shared plain pass, same numbers
    assert abs(both["leace"]["kl"] - cost["kl"]) < 1e-6 and abs(both["none"]["kl"]) < 1e-5
    assert zero["edit_size"] < 1e-6 and both["none"]["edit_size"] < 1e-6
    # edit_size is the mean ‖Δx‖/‖x‖ over every position but the first, recomputed here from
    # the plain activations at the hook (the edit at one hook does not change its own input)
    leace = fit_eraser("leace", acts, y).to(torch.float32, "cpu")
    x = harvest_tokens(lm, tokens.tolist(), [hook], "all", progress=False)[hook]
    x = x.reshape(len(tokens), tokens.shape[1], -1)[:, 1:].reshape(-1, x.shape[-1]).float()
    by_hand = float(((leace(x) - x).norm(dim=-1) / x.norm(dim=-1)).mean())
    assert abs(both["leace"]["edit_size"] - by_hand) < 1e-4 * max(by_hand, 1e-3)
    with pytest.raises(InterplabError, match="cannot run inside the model"):
        erasure_cost(lm, hook, fit_eraser("mean-match", acts, y), tokens)


@pytest.mark.embedded
def test_leace_on_cities_in_the_embedded_model(smollm):
    """On real activations: LEACE leaves the linear probe with one answer, a random direction
    leaves truth decodable, and a small MLP still reads some of it (what a linear check misses)."""
    from interplab.activations import harvest
    from interplab.study.data import load_statements
    from interplab.study.settings import SplitConfig

    data = load_statements(["cities"], SplitConfig(max_per_dataset=300), 0)
    ds, split = data.datasets["cities"], data.splits["cities"]
    hook = "blocks.15.hook_resid_post"
    x = harvest(smollm, ds.statements, [hook], "last", progress=False)[hook].double().numpy()
    xtr, ytr = x[split.train], ds.labels[split.train]
    xte, yte = x[split.test], ds.labels[split.test]
    check = verify_erasure(fit_eraser("leace", xtr, ytr), xtr, ytr, xte, yte, n_boot=200)
    lin = check.accuracy["linear"]
    assert lin["before"]["lo"] > 0.7 and check.control_recoverable("linear")
    assert lin["erased"]["one_class"] and check.erased_to_chance("linear")
