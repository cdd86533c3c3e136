"""``larger_than`` / ``smaller_than``: "Seventy-one is larger than fifty-two." over 51–99.

Numbers are written as words by :func:`number_words` (a ten-line rule for 51–99; the tests check
it against ``inflect``, which takes seconds to import and so is not used here). A seeded sample of unordered pairs of distinct
numbers is used in both orders, so every number is as often on the left of a true statement as of
a false one and the labels are exactly balanced. ``smaller_than`` states the same ordered pairs
with "smaller", so row ``i`` of the two datasets has opposite labels and a shared pair id.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import combinations

import numpy as np

from interplab.datasets._build import Claim, render
from interplab.datasets.statements import StatementDataset, package_versions

LOW, HIGH = 51, 99
N_PAIRS = 600  # unordered pairs; each gives two statements

TEMPLATE_LARGER = "{left_cap} is larger than {right}."
TEMPLATE_SMALLER = "{left_cap} is smaller than {right}."
_GROUP = "number pair"


_UNITS = ["", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_TENS = {5: "fifty", 6: "sixty", 7: "seventy", 8: "eighty", 9: "ninety"}


@lru_cache(maxsize=1)
def number_words() -> dict[int, str]:
    """``{n: "seventy-one"}`` for n in 51..99 (hyphenated, as in written English)."""
    out = {}
    for n in range(LOW, HIGH + 1):
        tens, units = divmod(n, 10)
        out[n] = _TENS[tens] + (f"-{_UNITS[units]}" if units else "")
    return out


@lru_cache(maxsize=8)
def comparison_claims(seed: int = 0) -> tuple[Claim, ...]:
    """Claims "left > right" for a seeded sample of ordered pairs, both orders of each pair."""
    rng = np.random.default_rng(seed)
    pairs = list(combinations(range(LOW, HIGH + 1), 2))
    chosen = [pairs[k] for k in np.sort(rng.choice(len(pairs), size=N_PAIRS, replace=False))]
    words = number_words()
    claims = []
    for a, b in chosen:
        for left, right in ((a, b), (b, a)):
            fields = {
                "left_cap": words[left].capitalize(),
                "right": words[right],
                "left_value": str(left),
                "right_value": str(right),
            }
            claims.append(Claim(f"numbers/{left}-{right}", fields, left > right, f"{a}-{b}"))
    order = rng.permutation(len(claims))
    return tuple(claims[k] for k in order)


def provenance() -> dict[str, str]:
    return package_versions("interplab")


def larger_than(seed: int = 0) -> StatementDataset:
    """E.g. "Seventy-one is larger than fifty-two." (true iff left > right); balanced."""
    return render(
        "larger_than", comparison_claims(seed), TEMPLATE_LARGER, provenance(), seed, group_by=_GROUP
    )


def smaller_than(seed: int = 0) -> StatementDataset:
    """E.g. "Seventy-one is smaller than fifty-two."; row ``i`` has the opposite label of larger_than."""
    claims = comparison_claims(seed)
    return render(
        "smaller_than", claims, TEMPLATE_SMALLER, provenance(), seed, True, group_by=_GROUP
    )
