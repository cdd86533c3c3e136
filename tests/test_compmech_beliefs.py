"""Exact inference: beliefs vs brute-force Bayes, MSP sizes, optimal cross-entropy, entropy rate."""

import itertools

import numpy as np
import pytest

from interplab.compmech.beliefs import (
    all_sequences,
    belief_states,
    block_entropy_rates,
    entropy_rate,
    mixed_state_presentation,
    optimal_cross_entropy,
)
from interplab.compmech.presets import even_process, golden_mean, mess3, rrxor, z1r
from interplab.errors import InterplabError


def brute_force_posterior(process, seq):
    """P(final state | seq) and P(seq) by summing over every hidden state path."""
    n_s = process.n_states
    pi = process.stationary_distribution()
    t = process.transitions
    post = np.zeros(n_s)
    for path in itertools.product(range(n_s), repeat=len(seq) + 1):
        p = pi[path[0]]
        for k, x in enumerate(seq):
            p *= t[x, path[k], path[k + 1]]
        post[path[-1]] += p
    total = post.sum()
    return (post / total if total > 0 else post), total


@pytest.mark.parametrize("process", [mess3(), rrxor(), z1r(), even_process(0.3)])
def test_beliefs_match_brute_force_bayes(process):
    seqs = process.sample(12, 4, seed=3)
    beliefs, log_probs = belief_states(process, seqs)
    np.testing.assert_allclose(beliefs.sum(axis=-1), 1.0, atol=1e-12)
    for s, seq in enumerate(seqs):
        for t in range(seq.shape[0] + 1):
            post, prob = brute_force_posterior(process, seq[:t])
            np.testing.assert_allclose(beliefs[s, t], post, atol=1e-12)
            np.testing.assert_allclose(np.exp(log_probs[s, t]), prob, rtol=1e-10)


def test_sequence_probabilities_sum_to_one_and_impossible_sequences():
    p = rrxor()
    seqs = all_sequences(2, 6)
    with pytest.raises(InterplabError, match="probability 0"):
        belief_states(p, seqs)
    beliefs, log_probs = belief_states(p, seqs, allow_impossible=True)
    assert np.isclose(np.exp(log_probs[:, -1]).sum(), 1.0)
    possible = np.isfinite(log_probs[:, -1])
    assert 0 < possible.sum() < len(seqs)
    np.testing.assert_allclose(beliefs[possible].sum(-1), 1.0)
    with pytest.raises(InterplabError, match="outside"):
        belief_states(p, np.array([[0, 2]]))


def test_mixed_state_presentation_counts():
    assert mixed_state_presentation(rrxor(), depth=20).n_states == 36
    assert mixed_state_presentation(z1r(), depth=20).n_states == 7
    assert mixed_state_presentation(rrxor(), depth=20).complete
    m = mixed_state_presentation(mess3(), depth=6)
    assert not m.complete  # Mess3's MSP is infinite (a fractal)
    assert m.n_states == sum(3**d for d in range(7))  # no two prefixes share a belief


def test_msp_transitions_are_bayes_updates():
    p = rrxor()
    m = mixed_state_presentation(p, depth=20)
    for s, x, d, prob in zip(m.sources, m.symbols, m.targets, m.probabilities, strict=True):
        unnorm = m.beliefs[s] @ p.transitions[x]
        assert np.isclose(unnorm.sum(), prob)
        np.testing.assert_allclose(unnorm / unnorm.sum(), m.beliefs[d], atol=1e-9)
    # every belief's outgoing probabilities sum to 1
    out = np.bincount(m.sources, weights=m.probabilities, minlength=m.n_states)
    np.testing.assert_allclose(out, 1.0)


@pytest.mark.parametrize("process", [mess3(), rrxor(), even_process()])
def test_optimal_cross_entropy_equals_conditional_entropy_by_enumeration(process):
    length = 6
    seqs = all_sequences(process.n_symbols, length)
    _, log_probs = belief_states(process, seqs, allow_impossible=True)
    # block entropies H(X_0..X_{t-1}) by enumeration, then differences
    block = []
    for t in range(1, length + 1):
        _, idx = np.unique(seqs[:, :t], axis=0, return_index=True)
        lp = log_probs[idx, t]
        lp = lp[np.isfinite(lp)]
        block.append(-(np.exp(lp) * lp).sum())
    cond = np.diff(block)  # H(X_t | X_<t), t = 1..length-1
    np.testing.assert_allclose(optimal_cross_entropy(process, length - 1), cond, atol=1e-10)


def test_optimal_cross_entropy_known_values():
    # golden mean is Markov order 1: after one symbol the floor is the entropy rate
    gm = golden_mean()
    np.testing.assert_allclose(optimal_cross_entropy(gm, 5), entropy_rate(gm))
    # Z1R synchronises after 3 symbols: floor = h = ln(2)/3
    np.testing.assert_allclose(optimal_cross_entropy(z1r(), 6)[2:], np.log(2) / 3, atol=1e-12)
    # the floor never increases with context and never drops below the entropy rate
    f = optimal_cross_entropy(mess3(), 10)
    assert (np.diff(f) <= 1e-12).all()
    assert f[-1] >= entropy_rate(mess3()) - 1e-6
    assert f[0] < np.log(3)


def test_entropy_rate_closed_form_agrees_with_block_entropies():
    # for unifilar processes, h(L) from the MSP converges to the closed form
    for p in (rrxor(), even_process(0.4)):
        h = block_entropy_rates(p, 40)
        h_mu = entropy_rate(p)
        assert (np.diff(h) <= 1e-12).all() and h[-1] >= h_mu - 1e-12
        assert h[-1] - h_mu < 1e-4  # RRXOR synchronises slowly; the gap shrinks geometrically
        assert h[-1] - h_mu < (h[10] - h_mu) / 10
    assert entropy_rate(rrxor()) == pytest.approx(2 / 3 * np.log(2))


def test_belief_states_are_fast_enough_for_all_mess3_length_10():
    import time

    seqs = all_sequences(3, 10)
    start = time.perf_counter()
    beliefs, _ = belief_states(mess3(), seqs)
    elapsed = time.perf_counter() - start
    assert beliefs.shape == (3**10, 11, 3)
    assert elapsed < 2.0  # the benchmark target is < 1 s; margin for a shared machine
