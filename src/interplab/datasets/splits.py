"""Train / validation / test splits by entity, so no subject is on two sides.

A row split of ``sp_en_trans`` puts most Spanish words on both sides, once true and once false:
a probe that memorises the word is then *wrong* on the test side, and scores below chance for
reasons that have nothing to do with truth. :func:`entity_split` assigns whole groups
(:attr:`StatementDataset.groups`: the city, the word, the element, the number pair) to one side.

Groups are placed largest first (ties in a seeded random order), each on the side where it most
reduces the squared relative shortfall of true and false rows against that side's target, so
every side gets close to its share of each class. The rule is symmetric in the two labels and
depends only on the group names, their sizes and the seed, so a dataset and its negated twin
(same groups, labels flipped) split identically: twins land on the same side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from interplab.datasets.statements import StatementDataset
from interplab.errors import InterplabError

# Five statements of each class per split: a side of 10 statements is the smallest on which one
# error still leaves an accuracy significantly above chance (9/10 correct, two-sided binomial
# p = 0.021; with four per class, 7/8 gives p = 0.07), and validation needs as many to choose
# a layer with.
MIN_PER_CLASS = 5

SIDES = ("train", "val", "test")


@dataclass(frozen=True, eq=False)
class Split:
    """Row indices of one dataset for training, validation and testing.

    Attributes:
        train, val, test: sorted int64 row indices; disjoint, together every row once.
        rule: how the split was made, for reports, e.g.
            ``"by entity (city; 1134 groups), 60/20/20, seed 0"``.
        fractions: the requested (train, val, test) fractions.
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    rule: str
    fractions: tuple[float, float, float]

    def sides(self) -> dict[str, np.ndarray]:
        """``{"train": ..., "val": ..., "test": ...}``."""
        return {"train": self.train, "val": self.val, "test": self.test}


def _check_fractions(fractions: tuple[float, ...]) -> tuple[float, float, float]:
    values = tuple(float(f) for f in fractions)
    if len(values) != 3 or min(values) < 0 or values[0] <= 0 or values[2] <= 0:
        raise InterplabError(
            f"fractions must be (train, val, test) with train and test > 0 and val >= 0, "
            f"got {fractions}"
        )
    if abs(sum(values) - 1.0) > 1e-6:
        raise InterplabError(f"fractions must sum to 1, got {fractions} (sum {sum(values)})")
    return values  # type: ignore[return-value]


def _split_keys(ds: StatementDataset) -> tuple[np.ndarray, str]:
    """The key each row is grouped by, and a description of the grouping."""
    if ds.groups is not None:
        n = len(set(ds.groups.tolist()))
        return ds.groups, f"entity ({ds.group_by}; {n} groups)"
    if ds.pair_ids is not None:
        # A twin shares its pair id, so splitting by pair id keeps twins on one side.
        return ds.pair_ids, "pair id (no group column)"
    return np.array([str(i) for i in range(len(ds))]), "row (no group column)"


def _assign(counts: np.ndarray, fractions: np.ndarray, seed: int) -> np.ndarray:
    """Side (0, 1, 2) of each group; ``counts`` is ``[n_groups, 2]`` (false, true) rows."""
    n_groups = len(counts)
    order = np.random.default_rng(seed).permutation(n_groups)
    order = order[np.argsort(-counts[order].sum(axis=1), kind="stable")]  # largest first
    target = fractions[:, None] * counts.sum(axis=0)[None, :]  # [3, 2]
    scale = np.maximum(target, 1.0)
    filled = np.zeros_like(target)
    usable = fractions > 0
    side = np.zeros(n_groups, dtype=np.int64)
    for g in order:
        add = counts[g][None, :]
        # Increase of sum((filled - target)^2 / scale) if the group goes to each side.
        cost = (add * (2 * (filled - target) + add) / scale).sum(axis=1)
        cost[~usable] = np.inf
        s = int(np.argmin(cost))
        side[g] = s
        filled[s] += counts[g]
    return side


def entity_split(
    ds: StatementDataset,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    min_per_class: int = MIN_PER_CLASS,
) -> Split:
    """Split ``ds`` into train / validation / test by group, so no group is on two sides.

    Rows are grouped by ``ds.groups`` (every generated dataset has them; a CSV gets them from
    its ``group`` column or ``load_csv(group_col=...)``), else by ``ds.pair_ids``, else each row
    is its own group. The split is stratified by label as closely as whole groups allow and
    deterministic for ``seed``; a dataset and its negated twin split identically.

    Args:
        ds: the dataset.
        fractions: (train, val, test) shares of the rows; val may be 0.
        seed: seed for the order in which equal-sized groups are placed.
        min_per_class: each side with a non-zero fraction needs at least this many true and
            this many false statements (see :func:`check_split_sizes`); 0 turns the check off.

    Raises:
        InterplabError: bad fractions, or a side too small (the message names the dataset, the
            side and the class, and how many rows are needed).
    """
    fr = _check_fractions(fractions)
    keys, kind = _split_keys(ds)
    _, inverse = np.unique(keys, return_inverse=True)
    counts = np.zeros((int(inverse.max()) + 1 if len(ds) else 0, 2), dtype=np.float64)
    np.add.at(counts, (inverse, ds.labels), 1.0)
    side = _assign(counts, np.array(fr), seed)[inverse]
    percents = "/".join(f"{round(100 * f):g}" for f in fr)
    rule = f"by {kind}, {percents}, seed {seed}"
    parts = [np.flatnonzero(side == s).astype(np.int64) for s in range(3)]
    for part in parts:
        part.setflags(write=False)
    split = Split(train=parts[0], val=parts[1], test=parts[2], rule=rule, fractions=fr)
    check_split_sizes(ds, split, min_per_class)
    return split


def check_split_sizes(
    ds: StatementDataset, split: Split, min_per_class: int = MIN_PER_CLASS
) -> None:
    """Raise unless every side with a non-zero fraction has ``min_per_class`` rows per class.

    Call before any expensive work: a test side with one false statement gives an accuracy of
    0 or 1 that no interval or verdict can rescue.
    """
    if min_per_class <= 0:
        return
    labels = ds.labels
    found = {s: idx for s, idx in split.sides().items()}
    summary = ", ".join(
        f"{s} {int(labels[idx].sum())} true/{int(len(idx) - labels[idx].sum())} false"
        for s, idx in found.items()
    )
    smallest = min(f for f in split.fractions if f > 0)
    needed = int(np.ceil(2 * min_per_class / smallest))
    for s, frac in reversed(list(zip(SIDES, split.fractions, strict=True))):  # test first
        if frac == 0:
            continue
        idx = found[s]
        for value, word in ((0, "false"), (1, "true")):
            have = int((labels[idx] == value).sum())
            if have < min_per_class:
                raise InterplabError(
                    f"dataset {ds.name!r} has only {have} {word} statement"
                    f"{'' if have == 1 else 's'} in its {s} split ({summary}; split "
                    f"{split.rule}); at least {min_per_class} per class per split are needed: "
                    f"add statements (at least {needed} rows with both classes, spread over "
                    "many groups) or change the split fractions or min_per_class"
                )
