"""Belief regression: recovers an exact linear embedding, fails on the shuffled control."""

import numpy as np
import pytest

from interplab.compmech.presets import even_process, mess3, rrxor
from interplab.compmech.regression import (
    BeliefRegression,
    belief_dataset,
    cross_validated_fit,
    r2_rmse,
    shuffled_pairs,
)
from interplab.errors import InterplabError


@pytest.fixture(scope="module")
def mess3_data():
    return belief_dataset(mess3(), 7)


def embed(beliefs, d=20, noise_dims=0, seed=0):
    """An exactly affine embedding of beliefs in d dimensions, plus pure-noise columns."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(beliefs.shape[1], d))
    x = beliefs @ a + rng.normal(size=d)
    if noise_dims:
        x = np.hstack([x, rng.normal(size=(len(x), noise_dims))])
    return x.astype(np.float32)


def test_dataset_rows_are_distinct_prefixes_with_prefix_probabilities(mess3_data):
    d = mess3_data
    assert d.exact and len(d.sequences) == 3**7
    assert d.n_rows == sum(3**k for k in range(1, 8))  # every distinct prefix once
    assert np.isclose(d.weights.sum(), 1.0)
    # each position's weights are the prefix probabilities (sum 1 per position, before / L)
    for t in range(7):
        assert np.isclose(d.weights[d.position == t].sum(), 1 / 7)
    np.testing.assert_allclose(d.beliefs.sum(1), 1.0)


def test_sampled_dataset_weights_estimate_probabilities():
    exact = belief_dataset(even_process(), 12, max_sequences=10**6)
    sampled = belief_dataset(even_process(), 12, max_sequences=3000, seed=1)
    assert exact.exact and not sampled.exact
    # probability of the prefix "0" (first symbol 0) estimated from counts
    w_exact = exact.weights[(exact.position == 0) & (exact.sequences[exact.seq_index, 0] == 0)]
    w_samp = sampled.weights[(sampled.position == 0) & (sampled.sequences[sampled.seq_index, 0] == 0)]
    assert w_samp.sum() == pytest.approx(w_exact.sum(), abs=0.02)


def test_exact_linear_embedding_gives_r2_one(mess3_data):
    d = mess3_data
    x = embed(d.beliefs, noise_dims=5)
    test = np.random.default_rng(0).random(d.n_rows) < 0.2
    reg = BeliefRegression().fit(x[~test], d.beliefs[~test], d.weights[~test])
    r2, rmse = r2_rmse(d.beliefs[test], reg.predict(x[test]), d.weights[test])
    assert r2 > 0.99999 and rmse < 1e-3
    # affine regression preserves the simplex constraint
    np.testing.assert_allclose(reg.predict(x[test]).sum(1), 1.0, atol=1e-5)


def split(d, seed=0):
    test_seq = np.random.default_rng(seed).random(len(d.sequences)) < 0.2
    return d.weights_for(~test_seq), d.weights_for(test_seq)


def test_sequence_split_weights(mess3_data):
    d = mess3_data
    w_train, w_test = split(d)
    assert np.isclose(w_train.sum(), 1) and np.isclose(w_test.sum(), 1)
    # every sequence passes through one row per position, so each position keeps 1/L of the mass
    for t in range(7):
        assert np.isclose(w_test[d.position == t].sum(), 1 / 7)
    # the longest prefixes are whole sequences: each is on exactly one side
    last = d.position == 6
    assert not ((w_train[last] > 0) & (w_test[last] > 0)).any()
    np.testing.assert_allclose(d.weights_for(np.ones(len(d.sequences), bool)), d.weights)


def test_shuffled_control_gives_r2_near_zero_and_real_fit_does_not(mess3_data):
    d = mess3_data
    x = embed(d.beliefs, d=8) + np.random.default_rng(5).normal(size=(d.n_rows, 8)) * 0.05
    w_train, w_test = split(d)
    train, test = w_train > 0, w_test > 0
    xi, yi = shuffled_pairs(w_train, 50_000, seed=1)
    shuf = BeliefRegression().fit(x[xi], d.beliefs[yi])
    r2_shuf, _ = r2_rmse(d.beliefs[test], shuf.predict(x[test]), w_test[test])
    assert abs(r2_shuf) < 0.02
    real = BeliefRegression().fit(x[train], d.beliefs[train], w_train[train])
    assert real.score(x[test], d.beliefs[test], w_test[test]) > 0.95


def test_shuffled_pairs_follow_the_weights():
    w = np.array([0.7, 0.2, 0.1, 0.0])
    xi, yi = shuffled_pairs(w, 20000, seed=0)
    np.testing.assert_allclose(np.bincount(xi, minlength=4) / 20000, w, atol=0.01)
    assert not (yi == 3).any()
    assert abs(np.corrcoef(xi, yi)[0, 1]) < 0.03  # independent draws
    with pytest.raises(InterplabError):
        shuffled_pairs(-w, 10, seed=0)


def test_unrelated_features_do_not_predict_beliefs(mess3_data):
    d = mess3_data
    x = np.random.default_rng(3).normal(size=(d.n_rows, 10))
    test = np.random.default_rng(0).random(d.n_rows) < 0.2
    reg = BeliefRegression().fit(x[~test], d.beliefs[~test], d.weights[~test])
    assert reg.score(x[test], d.beliefs[test], d.weights[test]) < 0.01


def test_weights_equal_duplicated_rows():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 4)), rng.normal(size=(50, 3))
    w = rng.integers(1, 4, size=50)
    a = BeliefRegression().fit(x, y, w)
    b = BeliefRegression().fit(np.repeat(x, w, axis=0), np.repeat(y, w, axis=0))
    np.testing.assert_allclose(a.coef_, b.coef_, atol=1e-10)
    np.testing.assert_allclose(a.intercept_, b.intercept_, atol=1e-10)


def test_rank_deficient_inputs_and_chunking():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(300, 3))
    x = np.hstack([base, base, base @ rng.normal(size=(3, 2))])  # rank 3 in 8 columns
    y = base @ rng.normal(size=(3, 2)) + 0.5
    a = BeliefRegression(chunk_size=7).fit(x, y)
    assert a.score(x, y) == pytest.approx(1.0, abs=1e-9)
    b = BeliefRegression().fit(x, y)
    np.testing.assert_allclose(a.predict(x), b.predict(x), atol=1e-9)


def test_bad_inputs():
    with pytest.raises(InterplabError, match="rows"):
        BeliefRegression().fit(np.zeros((4, 2)), np.zeros((3, 2)))
    with pytest.raises(InterplabError, match="not fitted"):
        BeliefRegression().predict(np.zeros((2, 2)))
    with pytest.raises(InterplabError, match="sample_weight"):
        BeliefRegression().fit(np.zeros((4, 2)), np.zeros((4, 2)), -np.ones(4))


def test_rrxor_dataset_drops_impossible_sequences():
    d = belief_dataset(rrxor(), 6)
    assert len(d.sequences) < 2**6
    assert np.isfinite(d.beliefs).all()


def test_cross_validation_recovers_embedding_and_shuffled_control_fails(mess3_data):
    d = mess3_data
    x = embed(d.beliefs, d=8, noise_dims=4)
    folds = np.random.default_rng(0).permutation(len(d.sequences)) % 5
    real = cross_validated_fit(x, d, folds)
    assert real.r2 > 0.99999 and real.r2_unseen > 0.99999 and real.rmse < 1e-3
    shuf = cross_validated_fit(x, d, folds, shuffled_pairs_per_fold=50_000, seed=1)
    # only the fold-to-fold mismatch of weighted means remains (~1 / effective sample size)
    assert abs(shuf.r2) < 0.05 and abs(shuf.r2_unseen) < 0.05
    # unseen rows: the longest prefixes are each unseen in exactly one fold
    assert np.isfinite(real.unseen_predictions[d.position == 6]).all()
    assert np.isnan(real.unseen_predictions[d.position == 0]).all()
    # a real but noisy embedding sits in between, and cross-validation does not flatter it
    noisy = x[:, :8] + np.random.default_rng(2).normal(size=(d.n_rows, 8)) * 3.0
    mid = cross_validated_fit(noisy, d, folds)
    assert 0.05 < mid.r2 < 0.95 and mid.r2 <= mid.r2_train + 0.02


def test_unseen_weight_fraction_counts_prefixes_of_a_single_fold(mess3_data):
    # Computed independently: a row is unseen in the fold holding it iff every sequence through it
    # lies in that one fold; its whole weight then counts as unseen held-out weight.
    d = mess3_data
    folds = np.random.default_rng(0).permutation(len(d.sequences)) % 5
    fit = cross_validated_fit(embed(d.beliefs, d=8), d, folds)
    folds_through = [set() for _ in range(d.n_rows)]
    for s, rows in enumerate(d.row_of):
        for r in rows:
            folds_through[r].add(int(folds[s]))
    single = np.array([len(f) == 1 for f in folds_through])
    assert fit.unseen_weight_fraction == pytest.approx(d.weights[single].sum(), rel=1e-9)
    # most of the held-out weight is on prefixes the training folds also contain
    assert 0.0 < fit.unseen_weight_fraction < 0.5
