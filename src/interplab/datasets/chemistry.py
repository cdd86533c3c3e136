"""``chem_symbols`` / ``neg_chem_symbols``: "The chemical symbol for gold is Au." and negation.

Facts: the element table of ``periodictable`` (public domain), elements 1–118. A false statement
gives an element another element's symbol, so every symbol appears once in a true and once in a
false statement.
"""

from __future__ import annotations

from functools import lru_cache

import periodictable

from interplab.datasets._build import Claim, render, true_and_false_claims
from interplab.datasets.statements import StatementDataset, package_versions

TEMPLATE = "The chemical symbol for {element} is {symbol}."
NEG_TEMPLATE = "The chemical symbol for {element} is not {symbol}."
_GROUP = "element pair"


@lru_cache(maxsize=1)
def element_facts() -> tuple[tuple[str, str], ...]:
    """``(element name, symbol)`` for elements 1..118, e.g. ``("gold", "Au")``."""
    return tuple((el.name, el.symbol) for el in periodictable.elements if el.number > 0)


@lru_cache(maxsize=8)
def element_claims(seed: int = 0) -> tuple[Claim, ...]:
    subjects = [{"element": name, "symbol": symbol} for name, symbol in element_facts()]
    return tuple(true_and_false_claims("chem_symbols", subjects, "symbol", seed, "element"))


def provenance() -> dict[str, str]:
    return package_versions("periodictable", "interplab")


def chem_symbols(seed: int = 0) -> StatementDataset:
    """E.g. "The chemical symbol for gold is Au." (true) / "... is Ag." (false); balanced."""
    return render("chem_symbols", element_claims(seed), TEMPLATE, provenance(), seed, group_by=_GROUP)


def neg_chem_symbols(seed: int = 0) -> StatementDataset:
    """E.g. "The chemical symbol for gold is not Ag." (true); aligned with chem_symbols."""
    claims = element_claims(seed)
    return render("neg_chem_symbols", claims, NEG_TEMPLATE, provenance(), seed, True, group_by=_GROUP)
