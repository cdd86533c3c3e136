"""``cities_conj`` / ``cities_disj``: two city claims joined by "and" / "or".

"It is the case both that the city of Lima is in Peru and that the city of Oslo is in Chad."
The two parts are claims about two different cities, drawn from the ``cities`` claims. Their
truth values are independent, each true with probability ``p``, where ``p`` makes the compound's
label balanced: ``p**2 = 1/2`` for a conjunction and ``1 - (1 - p)**2 = 1/2`` for a disjunction.
The numbers of (true, true), (true, false), (false, true) and (false, false) rows are fixed to
their expected values, so the labels are exactly balanced and the parts independent up to
rounding.

A compound's group is its pair of cities ("Lima & Oslo", sorted): the compounds about one pair
stay on one side of an entity split. One city can still appear in compounds on both sides (with
1,000 compounds over a few hundred cities, grouping every compound that shares a city with
another would leave almost all rows in one group).
"""

from __future__ import annotations

import math

import numpy as np

from interplab.datasets.cities import city_claims, provenance
from interplab.datasets.statements import StatementDataset

N_STATEMENTS = 1000

CONJ_TEMPLATE = "It is the case both that {a} and that {b}."
DISJ_TEMPLATE = "It is the case either that {a} or that {b}."


def _clause(sentence: str) -> str:
    """E.g. "The city of X is in Y." → "the city of X is in Y" (for use inside a sentence)."""
    return sentence[0].lower() + sentence[1:].rstrip(".")


def part_counts(n: int, kind: str) -> dict[tuple[bool, bool], int]:
    """Rows per (part a true, part b true) for ``n`` balanced statements of ``kind``."""
    if kind == "conj":
        p = math.sqrt(0.5)
        tt = n // 2
        ff = round(n * (1 - p) ** 2)
    elif kind == "disj":
        p = 1 - math.sqrt(0.5)
        ff = n // 2
        tt = round(n * p**2)
    else:
        raise ValueError(kind)
    mixed = n - tt - ff
    return {(True, True): tt, (True, False): mixed // 2, (False, True): mixed - mixed // 2,
            (False, False): ff}  # fmt: skip


def _compound(kind: str, seed: int) -> StatementDataset:
    rng = np.random.default_rng([seed, 1 if kind == "conj" else 2])
    by_city: dict[str, dict[bool, dict[str, str]]] = {}
    for c in city_claims(seed):
        by_city.setdefault(c.fields["city"], {})[c.true] = dict(c.fields)
    cities = sorted(by_city)
    rows = [key for key, count in part_counts(N_STATEMENTS, kind).items() for _ in range(count)]
    rows = [rows[k] for k in rng.permutation(len(rows))]
    template = CONJ_TEMPLATE if kind == "conj" else DISJ_TEMPLATE
    statements, labels, groups = [], [], []
    meta: dict[str, list] = {k: [] for k in ("a", "b", "a_true", "b_true")}
    for a_true, b_true in rows:
        i, j = rng.choice(len(cities), size=2, replace=False)  # two different cities
        a = by_city[cities[i]][a_true]
        b = by_city[cities[j]][b_true]
        a_text = f"The city of {a['city']} is in {a['country']}."
        b_text = f"The city of {b['city']} is in {b['country']}."
        statements.append(template.format(a=_clause(a_text), b=_clause(b_text)))
        labels.append(int(a_true and b_true) if kind == "conj" else int(a_true or b_true))
        groups.append(" & ".join(sorted((a["city"], b["city"]))))
        meta["a"].append(a_text)
        meta["b"].append(b_text)
        meta["a_true"].append(int(a_true))
        meta["b_true"].append(int(b_true))
    return StatementDataset(
        name=f"cities_{kind}",
        statements=statements,
        labels=np.array(labels, dtype=np.int64),
        provenance=provenance(),
        seed=seed,
        metadata=meta,
        groups=np.array(groups),
        group_by="pair of cities",
    )


def cities_conj(seed: int = 0) -> StatementDataset:
    """E.g. "It is the case both that … and that …"; label = both parts true; balanced."""
    return _compound("conj", seed)


def cities_disj(seed: int = 0) -> StatementDataset:
    """E.g. "It is the case either that … or that …"; label = at least one part true; balanced."""
    return _compound("disj", seed)
