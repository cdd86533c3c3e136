"""Entity groups and :func:`entity_split`: no subject (and no answer) on two sides of a split."""

from __future__ import annotations

import os

import numpy as np
import pytest

from interplab.datasets import (
    MIN_PER_CLASS,
    NEGATION_TWINS,
    StatementDataset,
    available_datasets,
    check_split_sizes,
    entity_split,
    load_csv,
    load_dataset,
)
from interplab.errors import InterplabError

os.environ.setdefault("HF_HUB_OFFLINE", "1")

BUILTIN = [n for n in available_datasets() if not n.endswith("_freedict")]
# The metadata column naming each family's subject, and (where every subject has its own
# answer) the answer column.
SUBJECT = {"cities": "city", "sp_en_trans": "es", "capitals": "country_code",
           "chem_symbols": "element"}  # fmt: skip
ANSWER = {"sp_en_trans": "en", "capitals": "capital", "chem_symbols": "symbol"}


def _family(name: str) -> str:
    return name.removeprefix("neg_")


@pytest.fixture(scope="module")
def datasets() -> dict[str, StatementDataset]:
    # The truth study's default size (600 per dataset, balanced subsample).
    return {name: load_dataset(name, seed=0, max_size=600) for name in BUILTIN}


def _sides(split):
    return [split.train, split.val, split.test]


def _values(column, idx) -> set:
    return {column[i] for i in idx}


@pytest.mark.parametrize("name", BUILTIN)
def test_no_group_subject_or_answer_on_two_sides(datasets, name):
    ds = datasets[name]
    assert ds.groups is not None and len(ds.groups) == len(ds) and ds.group_by
    split = entity_split(ds, seed=0)
    sides = _sides(split)
    assert np.array_equal(np.sort(np.concatenate(sides)), np.arange(len(ds)))
    assert split.rule.startswith(f"by entity ({ds.group_by}; ")
    assert split.rule.endswith(", 60/20/20, seed 0")
    columns = [ds.groups]
    columns += [ds.metadata[SUBJECT[_family(name)]]] if _family(name) in SUBJECT else []
    columns += [ds.metadata[ANSWER[_family(name)]]] if _family(name) in ANSWER else []
    if name == "larger_than" or name == "smaller_than":
        columns.append([frozenset(p) for p in zip(ds.metadata["left_value"],
                                                  ds.metadata["right_value"], strict=True)])
    for column in columns:
        for a in range(3):
            for b in range(a + 1, 3):
                assert not _values(column, sides[a]) & _values(column, sides[b])
    for side, frac in zip(sides, (0.6, 0.2, 0.2), strict=True):  # near its share, balanced
        assert abs(len(side) - frac * len(ds)) <= 6
        assert abs(2 * int(ds.labels[side].sum()) - len(side)) <= 4


@pytest.mark.parametrize(
    "positive,negative", sorted((p, n) for p, n in NEGATION_TWINS.items() if p in BUILTIN)
)
def test_negated_twins_share_groups_and_split_identically(datasets, positive, negative):
    pos, neg = datasets[positive], datasets[negative]
    assert np.array_equal(pos.groups, neg.groups)
    assert np.array_equal(pos.pair_ids, neg.pair_ids)
    for seed in (0, 3):
        a, b = entity_split(pos, seed=seed), entity_split(neg, seed=seed)
        for side_a, side_b in zip(_sides(a), _sides(b), strict=True):
            assert np.array_equal(side_a, side_b)


def _opposite_label_leaks(keys, labels, train, test) -> int:
    """Test rows whose key appears in training, and there only with the other label."""
    seen: dict[str, set[int]] = {}
    for i in train:
        seen.setdefault(keys[i], set()).add(int(labels[i]))
    return sum(1 for i in test if seen.get(keys[i]) == {1 - int(labels[i])})


def test_sp_en_trans_leakage_row_split_vs_entity_split(datasets):
    # The truth study's old split: rows, 30 % test. Most test statements then use a Spanish
    # word (and an English word) that training shows only with the opposite label, so
    # memorising words scores below chance.
    ds = datasets["sp_en_trans"]
    where = {s: i for i, s in enumerate(ds.statements)}
    train_ds, test_ds = ds.train_test_split(0.3, seed=0)
    train = [where[s] for s in train_ds.statements]
    test = [where[s] for s in test_ds.statements]
    assert len(test) == 88
    assert _opposite_label_leaks(ds.metadata["es"], ds.labels, train, test) > 44
    assert _opposite_label_leaks(ds.metadata["en"], ds.labels, train, test) > 44
    split = entity_split(ds, (0.7, 0.0, 0.3), seed=0)
    assert abs(len(split.test) - 88) <= 4 and len(split.val) == 0
    for column in ("es", "en"):
        assert _opposite_label_leaks(ds.metadata[column], ds.labels, split.train, split.test) == 0


def test_deterministic_and_seed_dependent(datasets):
    ds = datasets["capitals"]
    a, b, c = entity_split(ds, seed=1), entity_split(ds, seed=1), entity_split(ds, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(_sides(a), _sides(b), strict=True))
    assert a.rule == b.rule and a.rule.endswith("seed 1")
    assert not np.array_equal(a.test, c.test)
    assert not a.test.flags.writeable


def test_stratifies_uneven_groups():
    # Groups of 1 to 8 rows with uneven label mixes: each side still gets close to its share
    # of each class.
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 9, size=150)
    groups = np.repeat([f"g{k}" for k in range(len(sizes))], sizes)
    p_true = np.repeat(rng.uniform(0.1, 0.9, size=len(sizes)), sizes)
    labels = (rng.uniform(size=len(groups)) < p_true).astype(np.int64)
    ds = StatementDataset("uneven", [f"s{i}." for i in range(len(groups))], labels, {},
                          groups=groups)  # fmt: skip
    split = entity_split(ds, (0.6, 0.2, 0.2), seed=0)
    assert split.rule.startswith("by entity (group; 150 groups)")
    for side, frac in zip(_sides(split), (0.6, 0.2, 0.2), strict=True):
        for value in (0, 1):
            target = frac * (labels == value).sum()
            assert abs((labels[side] == value).sum() - target) <= 4
        assert not _values(groups, side) & _values(groups, np.setdiff1d(np.arange(len(ds)), side))


def test_without_groups_split_by_pair_id_or_row(tmp_path):
    rows = "".join(f"S{i} is true.,1,p{i}\nS{i} is false.,0,q{i}\n" for i in range(40))
    twin = "".join(f"S{i} is not true.,0,p{i}\nS{i} is not false.,1,q{i}\n" for i in range(40))
    (tmp_path / "a.csv").write_text("statement,label,pair_id\n" + rows, encoding="utf-8")
    (tmp_path / "neg_a.csv").write_text("statement,label,pair_id\n" + twin, encoding="utf-8")
    pos, neg = load_csv(tmp_path / "a.csv"), load_csv(tmp_path / "neg_a.csv")
    assert pos.groups is None
    a, b = entity_split(pos, seed=4), entity_split(neg, seed=4)
    assert a.rule == "by pair id (no group column), 60/20/20, seed 4"
    assert all(np.array_equal(x, y) for x, y in zip(_sides(a), _sides(b), strict=True))
    plain = StatementDataset("plain", pos.statements, pos.labels, {})
    assert entity_split(plain).rule == "by row (no group column), 60/20/20, seed 0"


def test_groups_survive_subset_and_csv(tmp_path, datasets):
    ds = datasets["neg_sp_en_trans"]
    sub = ds.subset(np.arange(10, 50))
    assert np.array_equal(sub.groups, ds.groups[10:50]) and sub.group_by == ds.group_by
    back = load_csv(sub.to_csv(tmp_path / "neg.csv"))
    assert np.array_equal(back.groups, sub.groups) and back.group_by == "group"
    assert back.content_hash == sub.content_hash  # groups are not part of the hash
    assert "group" not in back.metadata
    # named columns
    (tmp_path / "w.csv").write_text(
        "statement,label,word,twin\nA.,1,x,1\nB.,0,x,2\nC.,1,y,3\n", encoding="utf-8"
    )
    named = load_csv(tmp_path / "w.csv", group_col="word", pair_col="twin")
    assert named.groups.tolist() == ["x", "x", "y"] and named.group_by == "word"
    assert named.pair_ids.tolist() == ["1", "2", "3"] and list(named.metadata) == []
    ignored = load_csv(tmp_path / "w.csv", group_col=None)
    assert ignored.groups is None and "word" in ignored.metadata
    with pytest.raises(InterplabError, match="no column 'entity'; the header has"):
        load_csv(tmp_path / "w.csv", group_col="entity")
    (tmp_path / "e.csv").write_text("statement,label,group\nA.,1,x\nB.,0, \n", encoding="utf-8")
    with pytest.raises(InterplabError, match="line 3: empty group in column 'group'"):
        load_csv(tmp_path / "e.csv")
    with pytest.raises(InterplabError, match="3 groups for 2 statements"):
        StatementDataset("x", ["A.", "B."], [1, 0], {}, groups=["a", "b", "c"])


@pytest.mark.parametrize(
    "fractions", [(0.5, 0.5), (0.0, 0.5, 0.5), (0.6, 0.2, 0.0), (0.6, -0.1, 0.5), (0.6, 0.3, 0.3)]
)
def test_bad_fractions(datasets, fractions):
    with pytest.raises(InterplabError, match="fractions must"):
        entity_split(datasets["cities"], fractions)


@pytest.mark.parametrize(
    "rows,side,word",
    [
        ("A is A.,1\nA is B.,0\n", "test", "false statements"),
        ("A is A.,1\nA is B.,0\nB is B.,1\n", "test", "false statements"),
    ],
)
def test_tiny_csv_gives_a_clear_error(tmp_path, rows, side, word):
    path = tmp_path / "tiny.csv"
    path.write_text("statement,label\n" + rows, encoding="utf-8")
    ds = load_csv(path)
    with pytest.raises(
        InterplabError,
        match=rf"dataset 'tiny' has only 0 {word} in its {side} split .*"
        rf"at least {MIN_PER_CLASS} per class per split are needed: add statements \(at least "
        r"50 rows",
    ):
        entity_split(ds)
    # the check can be turned off, and applies to any split
    split = entity_split(ds, min_per_class=0)
    with pytest.raises(InterplabError, match="per class per split"):
        check_split_sizes(ds, split)


def test_min_per_class_boundary():
    # 25 groups of one true and one false row: 60/20/20 gives exactly 5 per class in test.
    n = 25
    statements = [f"S{i} {kind}." for i in range(n) for kind in ("yes", "no")]
    labels = np.tile([1, 0], n)
    ds = StatementDataset("edge", statements, labels, {}, groups=np.repeat(np.arange(n), 2))
    split = entity_split(ds, min_per_class=5)
    assert [len(s) for s in _sides(split)] == [30, 10, 10]
    with pytest.raises(InterplabError, match="has only 5 false statements in its test split"):
        entity_split(ds, min_per_class=6)
