import itertools

import numpy as np
import pytest

from interplab.datasets import available_datasets, entity_split, load_dataset
from interplab.datasets.xor import (
    GENERATORS,
    basic_features,
    feature_table,
    filler_vocabulary,
    subsample_groups,
)
from interplab.errors import InterplabError


@pytest.fixture(scope="module")
def xor_sets():
    return {name: load_dataset(name, seed=0) for name in GENERATORS}


def _cell_counts(ds, rows=None):
    feats = feature_table(ds)
    basics = basic_features(ds)
    rows = np.arange(len(ds)) if rows is None else rows
    keys = list(zip(*(feats[f][rows] for f in basics), strict=True))
    return {cell: keys.count(cell) for cell in itertools.product((0, 1), repeat=len(basics))}


def test_registered_and_deterministic(xor_sets):
    for name in GENERATORS:
        assert name in available_datasets()
        again = load_dataset(name, seed=0)
        assert again.content_hash == xor_sets[name].content_hash
        assert load_dataset(name, seed=1).content_hash != again.content_hash


def test_no_feature_predicts_another(xor_sets):
    expected = {"speaker_cities": 7, "distractor_cities": 7, "speaker_filler": 3,
                "distractor_filler": 3}
    for name, ds in xor_sets.items():
        feats = feature_table(ds)
        assert len(feats) == expected[name]
        for (fa, a), (fb, b) in itertools.combinations(feats.items(), 2):
            # every pair of features, XORs included: all four joint values equally common
            joint = np.bincount(2 * a + b, minlength=4)
            assert (joint == len(ds) // 4).all(), (name, fa, fb, joint)
        counts = _cell_counts(ds)
        assert len(set(counts.values())) == 1  # every cell of the basic features equally full
        assert len(set(ds.statements)) == len(ds)  # no text twice


def test_every_entity_split_side_is_exactly_balanced(xor_sets):
    for name, ds in xor_sets.items():
        split = entity_split(ds, (0.6, 0.2, 0.2), seed=3)
        for side, rows in split.sides().items():
            counts = _cell_counts(ds, rows)
            assert len(set(counts.values())) == 1, (name, side, counts)
        # no entity on two sides
        groups = [set(ds.groups[rows]) for rows in split.sides().values()]
        assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])


def test_subsample_keeps_whole_groups_and_balance(xor_sets):
    ds = load_dataset("speaker_cities", seed=0, max_size=203)
    assert len(ds) == 200  # 25 groups of eight
    assert len(set(_cell_counts(ds).values())) == 1
    with pytest.raises(InterplabError, match="smaller than one group"):
        subsample_groups(xor_sets["speaker_cities"], 5)


def test_texts_features_and_spans_agree(xor_sets):
    vocab = set(filler_vocabulary())
    assert "not" not in vocab and "alice" not in vocab
    for ds in xor_sets.values():
        m = ds.metadata
        for i, text in enumerate(ds.statements):
            body = text[m["body_start"][i]:m["body_end"][i]]
            assert body == m["body"][i]
            words = body.rstrip(".").lower().split()
            assert ("not" in words) == bool(m["has_not"][i])
            assert words[-1] != "not"
            if "has_alice" in m:
                assert text.startswith("Alice: " if m["has_alice"][i] else "Bob: ")
            else:
                assert text.endswith(" banana" if m["has_banana"][i] else " shed")
        if "label" in m:
            assert (ds.labels == np.asarray(m["label"])).all()
            assert all(s.count("The city of") == 1 for s in ds.statements)


def test_cities_truth_follows_the_claims(xor_sets):
    from interplab.datasets.cities import city_facts

    truth = {city: code for city, code in city_facts()}
    from interplab.datasets._countries import country_name

    ds = xor_sets["speaker_cities"]
    for i in range(0, len(ds), 37):
        body = ds.metadata["body"][i]
        city, country = body[len("The city of "):-1].split(" is not in " if ds.metadata["has_not"][i]
                                                          else " is in ")
        is_in = country_name(truth[city]) == country
        assert int(is_in != bool(ds.metadata["has_not"][i])) == ds.labels[i]


def test_basic_features_refuses_a_dataset_without_them():
    ds = load_dataset("cities", seed=0, max_size=20)
    with pytest.raises(InterplabError, match="features"):
        basic_features(ds)


def test_not_xor_label_is_the_claim_truth_and_is_named_so(xor_sets):
    from interplab.datasets.xor import feature_aliases

    for name in ("speaker_cities", "distractor_cities"):
        aliases = feature_aliases(xor_sets[name])
        assert list(aliases) == ["has_not^label"] and aliases["has_not^label"].startswith("claim_true")
    assert feature_aliases(xor_sets["speaker_filler"]) == {}
