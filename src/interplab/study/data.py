"""Statement data for every study: load → pair twins → balanced subsample → entity split.

One convention for every study that scores statements: datasets named by registry name or CSV
path (a name clash between two sources is refused, naming both), twin datasets (cities /
neg_cities) paired by id or aligned rows, each subsampled to at most ``max_per_dataset`` rows
balanced by label (twins keep their alignment: same seed, same quotas), then split by entity into
train / validation / test with the negated twin following its affirmative row for row.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from interplab.datasets import (
    NEGATION_TWINS,
    Split,
    StatementDataset,
    check_split_sizes,
    entity_split,
    load_csv,
    load_dataset,
    paired,
)
from interplab.errors import InterplabError
from interplab.study.settings import SplitConfig

SPLIT_PARTS = ("train", "val", "test")


def short_name(spec: str) -> str:
    """A dataset's name in a run: a CSV's file stem, else the registry name."""
    return Path(spec).stem if spec.lower().endswith(".csv") else spec


def train_key(names: list[str]) -> str:
    """The name of a (possibly mixed) training set: its datasets joined with '+'."""
    return "+".join(short_name(n) for n in names)


def check_names(specs: list[str]) -> None:
    """Refuse two dataset sources that would get the same name in a run (two CSVs with one file
    stem, or a CSV named like a built-in dataset): one would silently replace the other."""
    seen: dict[str, str] = {}
    for spec in specs:
        name = short_name(spec)
        if name in seen and seen[name] != spec:
            raise InterplabError(
                f"two datasets would both be called {name!r}: {seen[name]!r} and {spec!r}; "
                "rename one of the CSV files (the file stem is the dataset's name)")
        if name in seen:
            raise InterplabError(f"dataset {spec!r} is given twice; give it once")
        seen[name] = spec


def load_one(spec: str, split: SplitConfig, seed: int) -> StatementDataset:
    """A registry dataset (generated with ``seed``) or a user CSV."""
    if not spec.lower().endswith(".csv"):
        return load_dataset(spec, seed=seed)
    kwargs: dict[str, str] = {}
    if split.pair_by not in ("auto", "row"):
        kwargs["pair_col"] = split.pair_by
    if split.group_column:
        kwargs["group_col"] = split.group_column
    return load_csv(spec, **kwargs)


def twin_couples(names: list[str]) -> list[tuple[str, str]]:
    """(affirmative, negated) couples of datasets both present among ``names``."""
    return [(a, b) for a, b in NEGATION_TWINS.items() if a in names and b in names]


def _aligned(a: StatementDataset, b: StatementDataset) -> bool:
    return len(a) == len(b) and bool((a.labels != b.labels).all())


@dataclass
class StatementData:
    """Datasets of one run by name, each with its entity split, and notes for the report."""

    datasets: dict[str, StatementDataset]
    splits: dict[str, Split]
    notes: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return list(self.datasets)

    def twin_rows(self, a: str, b: str) -> tuple[np.ndarray, np.ndarray] | None:
        """Aligned row indices of the statements ``a`` and ``b`` share, or None if unknown."""
        try:
            return paired(self.datasets[a], self.datasets[b])
        except InterplabError:
            return None

    def rows(self, name: str, part: str) -> np.ndarray:
        """Row indices of ``name``'s ``part`` ("train", "val" or "test")."""
        return getattr(self.splits[name], part)

    def check_training(self, names: list[str]) -> None:
        """Refuse, before any model runs, training datasets whose splits are too small."""
        for name in sorted(set(names)):
            check_split_sizes(self.datasets[name], self.splits[name])

    def check_pairs(self, train_names: list[str], probes: list[str], who: str) -> None:
        """Pair probes (CCS) need statement/negation pairs: refuse before harvesting if a
        training dataset's twin is present but the two cannot be paired. ``probes`` are the
        pair probes asked for, ``who`` their names as the message prints them."""
        for a, b in twin_couples(self.names):
            if (a in train_names or b in train_names) and self.twin_rows(a, b) is None:
                raise InterplabError(
                    f"the {who} probe needs statement/negation pairs, but {a} and {b} share no "
                    "pair ids and are not aligned row by row; add a shared 'pair_id' column (or "
                    f"pass --pair-by COLUMN), or leave {', '.join(probes)} out of --probes")

    def pair_rows(self, names: list[str]) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
        """``(a, b, rows of a, rows of b)``: each training dataset among ``names`` with its
        negated twin, pairs with both rows in their train splits (what CCS trains on)."""
        out = []
        for a, b in twin_couples(self.names):
            if a not in names and b not in names:
                continue
            rows = self.twin_rows(a, b)
            if rows is None:
                continue
            ia, ib = rows
            keep = np.isin(ia, self.splits[a].train) & np.isin(ib, self.splits[b].train)
            if keep.any():
                out.append((a, b, ia[keep], ib[keep]))
        return out

    def scored_rows(self, names: list[str]) -> dict[str, tuple[np.ndarray, dict]]:
        """Rows of every dataset scored for a probe trained on ``names``, with a description.

        A training dataset is scored on its test split. Any other dataset is untouched by the
        probe and scored on all its rows, except the negation twins of training rows (they
        restate, negated, a claim the probe was fitted on)."""
        out = {}
        for test, ds in self.datasets.items():
            if test in names:
                rows = self.splits[test].test
                out[test] = (rows, {"rows": "test split", "n": len(rows), "twins_left_out": 0})
                continue
            keep = np.ones(len(ds), dtype=bool)
            for a, b in twin_couples(self.names):
                if test not in (a, b) or (b if test == a else a) not in names:
                    continue
                other = b if test == a else a
                found = self.twin_rows(a, b)
                if found is None:
                    continue
                mine, theirs = (found[0], found[1]) if test == a else (found[1], found[0])
                keep[mine[np.isin(theirs, self.splits[other].train)]] = False
            rows = np.flatnonzero(keep)
            out[test] = (rows, {"rows": "all rows", "n": len(rows),
                                "twins_left_out": int(len(ds) - len(rows))})
        return out

    def identity(self) -> list[dict]:
        """Per dataset: identity (name, source, size, content hash) and split sizes and rule."""
        out = []
        for n, ds in self.datasets.items():
            sides = self.splits[n].sides()
            out.append({**ds.identity, **{f"n_{p}": int(len(sides[p])) for p in SPLIT_PARTS},
                        "split_rule": self.splits[n].rule,
                        "example_true": _example(ds, 1), "example_false": _example(ds, 0)})
        return out


def _example(ds: StatementDataset, label: int) -> str:
    idx = np.flatnonzero(ds.labels == label)
    return ds.statements[int(idx[0])] if idx.size else ""


def _pair_twins(datasets: dict[str, StatementDataset], pair_by: str, notes: list[str]) -> None:
    """Give twin datasets pair ids by row order where asked for (or, under "auto", aligned)."""
    for a, b in twin_couples(list(datasets)):
        da, db = datasets[a], datasets[b]
        by_row = pair_by == "row" or (
            pair_by == "auto" and (da.pair_ids is None or db.pair_ids is None) and _aligned(da, db))
        if pair_by == "row" and not _aligned(da, db):
            raise InterplabError(
                f"--pair-by row: {a} ({len(da)} rows) and {b} ({len(db)} rows) are not aligned "
                "(same length, opposite label on every row); give them a shared pair-id column "
                "and pass --pair-by COLUMN")
        if by_row:
            ids = np.array([f"row{i}" for i in range(len(da))])
            datasets[a], datasets[b] = replace(da, pair_ids=ids), replace(db, pair_ids=ids)
            if pair_by == "auto":
                notes.append(f"{a} and {b} have no pair ids; they are aligned (same length, "
                             "opposite labels row by row), so row i of one was paired with "
                             "row i of the other.")


def _make_splits(data: StatementData, fractions: tuple[float, float, float], seed: int) -> None:
    """Split every dataset by entity; a negated twin follows its affirmative's split row for row,
    so a mixed training set (cities + neg_cities) never has a claim in train and its negation in
    test (entity_split already does this when both carry the same groups)."""
    # Sizes are checked afterwards, for training datasets only (a target may be small).
    data.splits = {name: entity_split(ds, fractions, seed=seed, min_per_class=0)
                   for name, ds in data.datasets.items()}
    for a, b in twin_couples(data.names):
        rows = data.twin_rows(a, b)
        if rows is None:
            continue
        part_of = np.empty(len(data.datasets[b]), dtype=object)
        for p, idx in data.splits[b].sides().items():
            part_of[idx] = p
        before = part_of.copy()
        where_a = {int(i): p for p, idx in data.splits[a].sides().items() for i in idx}
        for ia, ib in zip(*rows, strict=True):
            part_of[ib] = where_a[int(ia)]
        if (part_of != before).any():
            data.splits[b] = Split(*(np.flatnonzero(part_of == p) for p in SPLIT_PARTS),
                                   rule=f"{data.splits[b].rule}; twins of {a} rows moved to "
                                   "their side", fractions=data.splits[b].fractions)


def load_statements(specs: list[str], split: SplitConfig, seed: int) -> StatementData:
    """Load, pair, subsample and split the datasets ``specs`` (names or CSV paths)."""
    if not specs:
        raise InterplabError("no datasets given; name at least one (e.g. cities)")
    split.validate()
    check_names(specs)
    notes: list[str] = []
    datasets = {short_name(spec): load_one(spec, split, seed) for spec in specs}
    _pair_twins(datasets, split.pair_by, notes)
    if split.max_per_dataset:  # twins keep their alignment (same seed and quotas)
        datasets = {n: ds.balanced_subsample(split.max_per_dataset, seed=seed)
                    if split.max_per_dataset < len(ds) else ds for n, ds in datasets.items()}
    data = StatementData(datasets, {}, notes)
    _make_splits(data, tuple(split.split), seed)  # type: ignore[arg-type]
    return data
