"""Hidden Markov processes: validation, stationary distributions, sampling statistics, files."""

import json

import numpy as np
import pytest
from scipy import stats

from interplab.compmech.presets import (
    PRESETS,
    even_process,
    get_process,
    golden_mean,
    mess3,
    rrxor,
    z1r,
)
from interplab.compmech.process import HiddenMarkovProcess
from interplab.errors import InterplabError


@pytest.mark.parametrize(
    ("process", "expected"),
    [
        (mess3(0.05, 0.85), np.full(3, 1 / 3)),
        (mess3(0.15, 0.6), np.full(3, 1 / 3)),
        (rrxor(), np.array([2, 1, 1, 1, 1]) / 6),
        (z1r(), np.full(3, 1 / 3)),
        (even_process(), np.array([2, 1]) / 3),
        (golden_mean(), np.array([2, 1]) / 3),
        (even_process(0.25), np.array([1, 0.75]) / 1.75),
    ],
)
def test_stationary_distributions(process, expected):
    pi = process.stationary_distribution()
    np.testing.assert_allclose(pi, expected, atol=1e-12)
    # and it is a left fixed point of the hidden chain
    np.testing.assert_allclose(pi @ process.state_transition_matrix, pi, atol=1e-12)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_valid_stochastic(name):
    p = get_process(name)
    np.testing.assert_allclose(p.transitions.sum(axis=(0, 2)), 1.0, atol=1e-12)
    assert (p.transitions >= 0).all()


def test_mess3_matches_paper_parameterisation():
    # T[A] row 0 of the belief-geometry paper's Mess3 at x=0.05, alpha=0.85: (a y, b x, b x)
    t = mess3().transitions
    np.testing.assert_allclose(t[0, 0], [0.85 * 0.9, 0.075 * 0.05, 0.075 * 0.05])
    assert not mess3().is_unifilar and rrxor().is_unifilar and z1r().is_unifilar


@pytest.mark.parametrize("name", ["mess3", "rrxor", "even"])
def test_sampled_symbol_frequencies_match_process(name):
    p = get_process(name)
    seqs = p.sample(4000, 30, seed=123)
    counts = np.bincount(seqs.ravel(), minlength=p.n_symbols)
    expected = p.symbol_distribution() * seqs.size
    # Positions within a sequence are correlated, so the chi-square statistic is inflated by the
    # effective-sample factor; a strict fixed-seed test on one symbol per sequence is exact.
    first = np.bincount(seqs[:, 7], minlength=p.n_symbols)
    chi = stats.chisquare(first, p.symbol_distribution() * len(seqs))
    assert chi.pvalue > 0.001
    np.testing.assert_allclose(counts / seqs.size, expected / seqs.size, atol=0.01)


def test_sampled_pairs_and_states_follow_transitions():
    p = mess3()
    symbols, states = p.sample(20000, 3, seed=5, return_states=True)
    assert states.shape == (20000, 4) and symbols.shape == (20000, 3)
    # empirical P(x, j | i) at the first step against T[x, i, j]
    for i in range(3):
        rows = states[:, 0] == i
        joint = np.zeros((3, 3))
        np.add.at(joint, (symbols[rows, 0], states[rows, 1]), 1)
        chi = stats.chisquare(joint.ravel() + 0, p.transitions[:, i, :].ravel() * rows.sum())
        assert chi.pvalue > 0.001


def test_sampling_is_seeded_and_impossible_events_never_occur():
    p = rrxor()
    a, b = p.sample(50, 12, seed=9), p.sample(50, 12, seed=9)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, p.sample(50, 12, seed=10))
    _, states = p.sample(500, 30, seed=1, return_states=True)
    # RRXOR: after T the next state is always S
    t_idx, s_idx = p.states.index("T"), p.states.index("S")
    assert (states[:, 1:][states[:, :-1] == t_idx] == s_idx).all()


@pytest.mark.parametrize(
    ("transitions", "message"),
    [
        (np.ones((2, 2)), "shape"),
        (np.ones((2, 2, 3)), "shape"),
        (np.array([[[0.5, 0.7], [0.5, 0.5]], [[0.0, -0.2], [0.0, 0.0]]]), "negative"),
        (np.array([[[0.5, 0.4], [0.5, 0.5]], [[0.0, 0.0], [0.0, 0.0]]]), "sums to 0.9"),
        (np.array([[[np.nan, 1.0], [0.5, 0.5]]]), "NaN"),
        (np.array([[[1.0, 0.0], [0.0, 1.0]]]), "not irreducible"),
    ],
)
def test_bad_definitions_raise_clear_errors(transitions, message):
    with pytest.raises(InterplabError, match=message):
        HiddenMarkovProcess(transitions, name="bad")


def test_bad_preset_parameters():
    with pytest.raises(InterplabError, match="alpha"):
        mess3(alpha=1.5)
    with pytest.raises(InterplabError, match="accepts"):
        get_process("mess3", beta=0.1)
    with pytest.raises(InterplabError, match="unknown process"):
        get_process("mess4")


def test_process_from_json_and_npy(tmp_path):
    p = rrxor()
    path = p.save(tmp_path / "rrxor.json")
    q = get_process(str(path))
    np.testing.assert_array_equal(q.transitions, p.transitions)
    assert q.states == p.states and q.name == p.name
    np.save(tmp_path / "m.npy", mess3().transitions)
    r = get_process(tmp_path / "m.npy")
    np.testing.assert_allclose(r.stationary_distribution(), 1 / 3)
    assert r.name == "m"


def test_bad_files_raise_clear_errors(tmp_path):
    (tmp_path / "a.json").write_text("{not json")
    with pytest.raises(InterplabError, match="not valid JSON"):
        get_process(tmp_path / "a.json")
    (tmp_path / "b.json").write_text(json.dumps({"matrices": []}))
    with pytest.raises(InterplabError, match="'transitions'"):
        get_process(tmp_path / "b.json")
    (tmp_path / "c.json").write_text(json.dumps({"transitions": [[[0.5, 0.5]], [[0.5]]]}))
    with pytest.raises(InterplabError, match="rectangular|shape"):
        get_process(tmp_path / "c.json")
    (tmp_path / "d.json").write_text(
        json.dumps({"transitions": [[[1.0]]], "symbols": ["a", "b"]})
    )
    with pytest.raises(InterplabError, match="symbol names"):
        get_process(tmp_path / "d.json")
    with pytest.raises(InterplabError, match="does not exist"):
        get_process(tmp_path / "missing.json")
