"""Generalization matrices: fit probes on one set of statements, test them on every other set.

The engine works on activations already harvested, ``[n_layers, n_statements, d_model]`` per
dataset, and returns per-row correctness so confidence intervals can be computed in one place.
Every probe is accompanied by its controls: the same probe fitted on shuffled labels (for CCS,
whose training uses no labels, on *broken pairs* instead), and a norm-matched random direction
given the same threshold fitting.

Centring defaults to ``"per-dataset"``, as in the truth-probe literature (geometry-of-truth): each
test set is centred by its own mean, and a training set mixed from several datasets is centred
component by component (``LabelledActs.groups``). ``"train"`` and ``"none"`` remain options; the
outcome records which one was used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.base import clone

from interplab.controls import bootstrap_mean, random_direction_like, shuffled_labels
from interplab.errors import InterplabError
from interplab.probes import make_probe
from interplab.probes.base import LinearProbe, PairProbe, decision_functions

VARIANTS = ("probe", "shuffled", "random")
__all__ = ["VARIANTS", "LabelledActs", "PairedActs", "ProbeOutcome", "bootstrap_mean",
           "fit_and_test"]


@dataclass
class LabelledActs:
    """Activations of one split: ``X`` is ``[n_layers, n, d_model]``, ``y`` is ``[n]``.

    ``negated``: the statements are negations (e.g. neg_cities); CCS scores them with the
    statistics of the negated side of its training pairs (it matters under ``"train"`` centring).
    ``groups`` (``[n]``, optional): the dataset each row comes from, for a mixed training set;
    ``"per-dataset"`` centring centres each component by its own mean.
    """

    X: np.ndarray
    y: np.ndarray
    negated: bool = False
    groups: np.ndarray | None = None

    @classmethod
    def concatenate(cls, parts: dict[str, LabelledActs]) -> LabelledActs:
        """One training set from several datasets, with ``groups`` naming each row's dataset."""
        names = list(parts)
        return cls(np.concatenate([parts[k].X for k in names], axis=1),
                   np.concatenate([parts[k].y for k in names]),
                   groups=np.concatenate([np.full(len(parts[k].y), k) for k in names]))


@dataclass
class PairedActs:
    """Statement/negation pairs for CCS: row i of ``X_pos`` and ``X_neg`` make opposite claims."""

    X_pos: np.ndarray  # [n_layers, n, d]
    X_neg: np.ndarray  # [n_layers, n, d]
    y: np.ndarray  # [n] labels of the X_pos statements (used only to fix CCS's sign)
    groups: np.ndarray | None = None  # [n] the dataset pair each row comes from (per-dataset)


@dataclass
class ProbeOutcome:
    """Per (variant, test set): correctness ``[n_layers, n_test]`` and decision values.

    For ``random``, correctness is the fraction of the ``n_random`` norm-matched random directions
    that got each row right and ``random_acc[test]`` holds each direction's accuracy
    ``[n_layers, n_random]`` (one random direction is one draw; the control is their
    distribution). For ``shuffled``, correctness is the fraction of the ``n_shuffles`` shuffled fits that got
    each row right, ``shuffle_acc[test]`` holds each shuffle's accuracy ``[n_layers, K]`` and
    ``shuffle_correct[test]`` each shuffle's correctness ``[n_layers, K, n_test]``: give it to
    :func:`interplab.controls.shuffled_accuracy_interval` for an interval that includes the
    spread between shuffles (``bootstrap_mean`` of the averaged ``correct`` does not).
    """

    correct: dict[str, dict[str, np.ndarray]]
    decision: dict[str, dict[str, np.ndarray]]
    shuffle_acc: dict[str, np.ndarray]
    centering: str  # the centring used: "per-dataset", "train" or "none"
    shuffle_correct: dict[str, np.ndarray] = field(default_factory=dict)
    # per test set [n_layers, n_random]: the accuracy of each norm-matched random direction
    random_acc: dict[str, np.ndarray] = field(default_factory=dict)


def fit_and_test(
    probe_name: str,
    train: LabelledActs,
    tests: dict[str, LabelledActs],
    *,
    pairs: PairedActs | None = None,
    centering: str = "per-dataset",
    variants: Sequence[str] = VARIANTS,
    seed: int = 0,
    n_shuffles: int = 5,
    n_random: int = 20,
    on_layer: Callable[[], None] | None = None,
) -> ProbeOutcome:
    """Fit ``probe_name`` at every layer of ``train`` and score it on each test set.

    CCS needs ``pairs``. Variants: ``probe`` (the real fit), ``shuffled`` (labels permuted; for
    CCS the pairs are broken instead; ``n_shuffles`` independent shuffles, averaged: a single
    shuffled mass-mean direction leans on whatever high-variance axis it happens to catch, so one
    draw can land far from 0.5 either way) and ``random`` (a random direction with the probe's
    norm and a refit threshold; ``n_random`` of them, averaged). ``centering`` (default ``"per-dataset"``) is recorded in the
    outcome; ``train.groups`` / ``pairs.groups`` make per-dataset centring centre each training
    component by its own mean.
    """
    if n_shuffles < 1 or n_random < 1:
        raise ValueError("n_shuffles and n_random must be at least 1")
    n_layers = train.X.shape[0]
    correct = {v: {t: np.zeros((n_layers, len(s.y))) for t, s in tests.items()} for v in variants}
    decision = {v: {t: np.zeros((n_layers, len(s.y))) for t, s in tests.items()}
                for v in variants}
    shuffle_acc = {t: np.zeros((n_layers, n_shuffles)) for t in tests}
    random_acc = ({t: np.zeros((n_layers, n_random)) for t in tests} if "random" in variants
                  else {})
    shuffle_correct = ({t: np.zeros((n_layers, n_shuffles, len(s.y)), dtype=bool)
                        for t, s in tests.items()} if "shuffled" in variants else {})
    rng = np.random.default_rng(seed)
    shuffled_ys = [shuffled_labels(train.y, seed=seed + k) for k in range(n_shuffles)]
    broken = ([_permute_within(rng, pairs.groups, len(pairs.y)) for _ in range(n_shuffles)]
              if pairs is not None else None)
    template = _new_probe(probe_name, centering, seed)
    if isinstance(template, PairProbe) and pairs is None:
        raise InterplabError(f"the {probe_name} probe trains on statement/negation pairs: pass pairs")
    for layer in range(n_layers):
        fitted: dict[str, LinearProbe] = {}
        shuffled_fits: list[LinearProbe] = []
        if isinstance(template, PairProbe):
            assert pairs is not None and broken is not None
            ref = LabelledActs(pairs.X_pos, pairs.y, groups=pairs.groups)
            fitted["probe"] = clone(template).fit_pairs(
                pairs.X_pos[layer], pairs.X_neg[layer], pairs.y, groups=pairs.groups)
            if "shuffled" in variants:
                # rows are permuted within each component, so a broken pair stays in its dataset
                shuffled_fits = [clone(template).fit_pairs(
                    pairs.X_pos[layer], pairs.X_neg[layer][b], pairs.y, groups=pairs.groups)
                    for b in broken]
        else:
            ref = train
            fitted["probe"] = clone(template).fit(train.X[layer], train.y, groups=train.groups)
            if "shuffled" in variants:
                shuffled_fits = [clone(template).fit(train.X[layer], ys, groups=train.groups)
                                 for ys in shuffled_ys]
        if shuffled_fits:
            fitted["shuffled"] = shuffled_fits[0]
        random_fits = fitted["probe"].with_directions(
            [random_direction_like(fitted["probe"].direction_, seed=(seed, layer, k))
             for k in range(n_random if "random" in variants else 0)],
            ref.X[layer], ref.y, groups=ref.groups)
        if random_fits:
            fitted["random"] = random_fits[0]
        fits = {"probe": [fitted["probe"]], "shuffled": shuffled_fits, "random": random_fits}
        order = [f for v in variants for f in fits[v]]
        for t, s in tests.items():
            # one centring of the test set and one matrix product for every fit of this layer
            decs = iter(decision_functions(order, s.X[layer], negated=s.negated))
            for v in variants:
                dec = np.stack([next(decs) for _ in fits[v]])  # [fits of v, n]
                hits = (dec > 0) == s.y
                decision[v][t][layer] = dec[0]
                correct[v][t][layer] = hits.mean(axis=0)
                if v == "random":
                    random_acc[t][layer] = hits.mean(axis=1)
                elif v == "shuffled":
                    shuffle_acc[t][layer] = hits.mean(axis=1)
                    shuffle_correct[t][layer] = hits
        if on_layer is not None:
            on_layer()
    return ProbeOutcome(correct, decision, shuffle_acc, centering, shuffle_correct, random_acc)


def _permute_within(rng: np.random.Generator, groups: np.ndarray | None, n: int) -> np.ndarray:
    """A random permutation of ``range(n)`` that moves rows only within their group."""
    if groups is None:
        return rng.permutation(n)
    perm = np.arange(n)
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        perm[rows] = rng.permutation(rows)
    return perm


def _new_probe(name: str, centering: str, seed: int) -> LinearProbe:
    """An unfitted probe; one with a random start (a ``seed`` parameter) gets ``seed``."""
    probe = make_probe(name, centering=centering)
    if "seed" in probe.get_params():
        probe.set_params(seed=seed)
    return probe

