"""Datasets for the XOR study: statements with unrelated binary features added, fully crossed.

``speaker_cities``: a ``cities`` or ``neg_cities`` statement said by one of two speakers,
"Alice: The city of Lima is not in Chad." Its basic features are ``has_alice`` (the speaker is
Alice, not Bob), ``has_not`` (the statement is negated) and ``label`` (it is true).
``distractor_cities``: the statement followed by one of two unrelated words, "The city of Lima is
in Peru. banana" (features ``has_banana`` (not "shed"), ``has_not``, ``label``).
``speaker_filler`` / ``distractor_filler``: the same prefix or suffix around random filler words
from the packaged sample text, with "not" among them or not, so that no statement and no truth
exists and only the token-level features (``has_alice`` or ``has_banana``, ``has_not``) remain.

Balance. The cities rows come in groups of two cities that exchange countries (the entity groups
of ``cities``); a group's two true and two false claims, each affirmed and negated, give eight
rows that cover every (``has_not``, ``label``) cell twice, and of each cell's two rows one is
Alice's (or "banana") and one Bob's (or "shed"), drawn by the seed. Every group is therefore
exactly balanced over all eight cells of the three features, and so is every entity split and
every subsample of whole groups: no feature, pairwise XOR or three-way XOR predicts another
(their correlations are exactly 0). A filler group is four rows, one per cell of its two
features. The three-city group ``cities`` has when its number of cities is odd is left out.

The features are metadata columns (0/1 ints); :func:`basic_features` names those a dataset has and
:func:`feature_table` adds their pairwise and three-way XORs. ``labels`` is ``label`` for the
cities datasets and the first feature (``has_alice`` / ``has_banana``) for filler. Each row also
records ``body_start`` / ``body_end``: the character span of the statement (or filler) without
the prefix or suffix, for probes that average over the statement's tokens; cities rows also
record ``claim_true``, the truth of the claim with its negation undone, which equals
``has_not ⊕ label`` (see :func:`feature_aliases`): that XOR is a feature in its own right.
"""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from functools import lru_cache
from importlib import resources

import numpy as np

from interplab.datasets._build import Claim
from interplab.datasets.cities import NEG_TEMPLATE, TEMPLATE, city_claims, provenance
from interplab.datasets.statements import StatementDataset, package_versions
from interplab.errors import InterplabError

SPEAKERS = ("Alice", "Bob")  # has_alice = 1, 0
DISTRACTORS = ("banana", "shed")  # has_banana = 1, 0
# Basic features in the order they are reported; a dataset has a subset of them.
BASIC_FEATURES = ("has_alice", "has_banana", "has_not", "label")
FILLER_GROUPS = 300  # filler groups (four rows each)
FILLER_WORDS = (6, 10)  # words per filler text (inclusive range), like a cities statement
# Words kept out of filler: negations and the features' own words.
_BANNED = {"not", "no", "never", "nor", "none", "nothing", "alice", "bob", "banana", "shed"}


def _cell_rows(rows: list[tuple[int, int, str]], rng: np.random.Generator) -> list[int]:
    """Per row of one group, the extra feature (1 = Alice / banana), one of each per cell.

    ``rows`` are (has_not, label, text); every (has_not, label) cell holds exactly two rows.
    """
    by_cell: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, (neg, lab, _) in enumerate(rows):
        by_cell[(neg, lab)].append(i)
    extra = [0] * len(rows)
    for members in by_cell.values():
        extra[members[int(rng.integers(2))]] = 1
    return extra


def _city_groups(seed: int) -> list[tuple[str, list[tuple[int, int, str]]]]:
    """Per two-city group: (group name, [(has_not, label, statement)] × 8), seeded order."""
    groups: dict[str, list[Claim]] = defaultdict(list)
    for c in city_claims(seed):
        groups[c.group].append(c)
    out = []
    for name, claims in groups.items():
        if len(claims) != 4:  # the three-city group of an odd count cannot be balanced
            continue
        rows = []
        for c in claims:
            rows.append((0, int(c.true), TEMPLATE.format(**c.fields)))
            rows.append((1, int(not c.true), NEG_TEMPLATE.format(**c.fields)))
        out.append((name, rows))
    return out


def _render(name: str, kind: str, groups: list, seed: int, group_by: str,
            source: dict[str, str], has_truth: bool) -> StatementDataset:
    """Add the prefix (``kind="speaker"``) or suffix (``"distractor"``) to every group's rows."""
    rng = np.random.default_rng([seed, 14, 0 if kind == "speaker" else 1])
    feature = "has_alice" if kind == "speaker" else "has_banana"
    words = SPEAKERS if kind == "speaker" else DISTRACTORS
    table: list[dict] = []
    for group, rows in groups:
        for (neg, lab, body), extra in zip(rows, _cell_rows(rows, rng), strict=True):
            word = words[0] if extra else words[1]
            text = f"{word}: {body}" if kind == "speaker" else f"{body} {word}"
            start = len(word) + 2 if kind == "speaker" else 0
            row = {"statement": text, "group": group, feature: extra, "has_not": neg,
                   "body": body, "body_start": start, "body_end": start + len(body)}
            if has_truth:
                row["label"] = lab
                row["claim_true"] = lab ^ neg  # the claim with its negation undone
            table.append(row)
    table = [table[k] for k in rng.permutation(len(table))]
    columns = [c for c in table[0] if c not in ("statement", "group")]
    return StatementDataset(
        name=name,
        statements=[r["statement"] for r in table],
        labels=np.array([r["label" if has_truth else feature] for r in table], dtype=np.int64),
        provenance=source,
        seed=seed,
        metadata={c: [r[c] for r in table] for c in columns},
        groups=np.array([r["group"] for r in table]),
        group_by=group_by,
    )


def speaker_cities(seed: int = 0) -> StatementDataset:
    """E.g. "Alice: The city of Lima is not in Chad." (has_alice 1, has_not 1, label 1)."""
    return _render("speaker_cities", "speaker", _city_groups(seed), seed, "city pair",
                   provenance(), has_truth=True)


def distractor_cities(seed: int = 0) -> StatementDataset:
    """E.g. "The city of Lima is in Peru. shed" (has_banana 0, has_not 0, label 1)."""
    return _render("distractor_cities", "distractor", _city_groups(seed), seed, "city pair",
                   provenance(), has_truth=True)


@lru_cache(maxsize=1)
def filler_vocabulary() -> tuple[str, ...]:
    """Lower-case words of the packaged sample text, negations and feature words left out."""
    text = resources.files("interplab.data").joinpath("sample.txt").read_text("utf-8")
    words = {w for w in re.findall(r"[a-z']+", text.lower()) if len(w) > 1 and "'" not in w}
    return tuple(sorted(words - _BANNED))


def _filler_groups(seed: int) -> list[tuple[str, list[tuple[int, int, str]]]]:
    """Groups of four filler texts, two with "not" among their words and two without (the label
    slot is 0: filler has no truth)."""
    rng = np.random.default_rng([seed, 14, 2])
    vocab = filler_vocabulary()
    groups = []
    for g in range(FILLER_GROUPS):
        rows = []
        for neg in (0, 0, 1, 1):
            words = list(rng.choice(vocab, size=int(rng.integers(*FILLER_WORDS, endpoint=True))))
            if neg:  # never first or last: the last token must not give "not" away
                words.insert(int(rng.integers(1, len(words))), "not")
            text = " ".join(words)
            rows.append((neg, 0, text[0].upper() + text[1:] + "."))
        groups.append((f"filler {g}", rows))
    return groups


def _filler(name: str, kind: str, seed: int) -> StatementDataset:
    return _render(name, kind, _filler_groups(seed), seed, "filler group",
                   package_versions("interplab"), has_truth=False)


def speaker_filler(seed: int = 0) -> StatementDataset:
    """E.g. "Bob: Grain the not river sits reads." (has_alice 0, has_not 1); no truth."""
    return _filler("speaker_filler", "speaker", seed)


def distractor_filler(seed: int = 0) -> StatementDataset:
    """E.g. "Grain the river sits reads. banana" (has_banana 1, has_not 0); no truth."""
    return _filler("distractor_filler", "distractor", seed)


GENERATORS = {
    "speaker_cities": speaker_cities,
    "distractor_cities": distractor_cities,
    "speaker_filler": speaker_filler,
    "distractor_filler": distractor_filler,
}


def basic_features(ds: StatementDataset) -> list[str]:
    """The basic features ``ds`` carries as metadata columns, in report order."""
    found = [f for f in BASIC_FEATURES if f in ds.metadata]
    if len(found) < 2:
        raise InterplabError(
            f"dataset {ds.name!r} has {len(found)} of the XOR study's features {BASIC_FEATURES} "
            f"as metadata columns; use one of {', '.join(GENERATORS)}, or give a CSV file at "
            "least two 0/1 columns named like them")
    for f in found:
        values = set(ds.metadata[f])
        if not values <= {0, 1}:
            raise InterplabError(f"dataset {ds.name!r}: feature {f!r} must hold 0/1, got "
                                 f"{sorted(values, key=str)[:5]}")
    return found


def feature_table(ds: StatementDataset) -> dict[str, np.ndarray]:
    """Every basic feature, every pairwise XOR and (with three features) the three-way XOR, as
    ``[n]`` int64 arrays keyed ``"has_alice"``, ``"has_alice^label"``, ``"has_alice^has_not^label"``."""
    basics = basic_features(ds)
    cols = {f: np.asarray(ds.metadata[f], dtype=np.int64) for f in basics}
    out = dict(cols)
    for k in range(2, len(basics) + 1):
        if k > 3:
            break
        for combo in itertools.combinations(basics, k):
            out["^".join(combo)] = np.bitwise_xor.reduce([cols[f] for f in combo])
    return out


# Columns that are known features of their own: a XOR equal to one needs no XOR computation.
KNOWN_FEATURES = {
    "claim_true": "the truth of the claim with its negation undone (is the city in the country?)",
}


def feature_aliases(ds: StatementDataset) -> dict[str, str]:
    """XOR features equal on every row to a known feature (:data:`KNOWN_FEATURES`), e.g.
    ``has_not ⊕ label`` = ``claim_true`` in the cities datasets: ``{xor: "claim_true: ..."}``."""
    table = feature_table(ds)
    out = {}
    for column, words in KNOWN_FEATURES.items():
        if column not in ds.metadata:
            continue
        known = np.asarray(ds.metadata[column], dtype=np.int64)
        out.update({f: f"{column}, {words}" for f, x in table.items()
                    if "^" in f and np.array_equal(x, known)})
    return out


def feature_kind(name: str) -> str:
    """``"basic"``, ``"xor2"`` or ``"xor3"``: how many basic features ``name`` combines."""
    n = name.count("^") + 1
    return "basic" if n == 1 else f"xor{n}"


def subsample_groups(ds: StatementDataset, max_size: int, seed: int = 0) -> StatementDataset:
    """At most ``max_size`` rows made of whole groups chosen by ``seed`` (rows keep their order),
    so the exact balance of every group carries over to the subsample."""
    if ds.groups is None:
        raise InterplabError(f"dataset {ds.name!r} has no groups to subsample by")
    names, sizes = np.unique(ds.groups, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(names))
    keep, total = [], 0
    for k in order:
        if total + sizes[k] > max_size:
            continue
        keep.append(names[k])
        total += int(sizes[k])
    if not keep:
        raise InterplabError(f"max_size {max_size} is smaller than one group of {ds.name!r} "
                             f"({int(sizes.min())} rows)")
    return ds.subset(np.isin(ds.groups, keep))
