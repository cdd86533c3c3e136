"""Prompt pairs for circuit discovery, built from the packaged statement datasets.

``city_recall``: "The city of {city} is in the country of" → the first token of " {country}".
A clean prompt names one city, its corrupted twin another city of the same token length whose
country starts with a different token; the metric is the clean country's logit minus the
corrupted one's, read at the last token (:class:`~interplab.interventions.LogitDiff` with one
pair of ids per prompt).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from interplab.errors import InterplabError

RECALL_TEMPLATE = "The city of {city} is in the country of"


@dataclass
class RecallPairs:
    """``clean[i]`` and ``corrupted[i]`` have equal token counts; ``answer[i]`` is the id of the
    clean city's country (first token), ``wrong[i]`` the corrupted city's."""

    clean: list[str]
    corrupted: list[str]
    answer: list[int]
    wrong: list[int]
    facts: list[dict[str, str]]

    def __len__(self) -> int:
        return len(self.clean)

    def metric(self) -> Any:
        from interplab.interventions import LogitDiff

        return LogitDiff(tuple(self.answer), tuple(self.wrong))

    def to_dict(self) -> dict[str, Any]:
        return {"template": RECALL_TEMPLATE, "n": len(self), "facts": self.facts}


def city_facts_of(ds: Any, rows: np.ndarray) -> list[tuple[str, str]]:
    """(city, country) of the true statements among ``rows`` of a ``cities`` dataset."""
    city, country = ds.metadata["city"], ds.metadata["country"]
    return sorted({(str(city[i]), str(country[i])) for i in rows if int(ds.labels[i]) == 1})


def prompt_length(lm: Any, city: str) -> int:
    return len(lm.tokenizer(RECALL_TEMPLATE.format(city=city))["input_ids"])


def common_length(lm: Any, facts: list[tuple[str, str]]) -> int:
    """The token count most prompts of ``facts`` share (ties: the shorter)."""
    counts: dict[int, int] = defaultdict(int)
    for city, _ in facts:
        counts[prompt_length(lm, city)] += 1
    if not counts:
        raise InterplabError("no true city statements to build prompts from")
    return min(counts, key=lambda k: (-counts[k], k))


def city_recall(lm: Any, facts: list[tuple[str, str]], n: int, length: int, seed: int
                ) -> RecallPairs:
    """Up to ``n`` clean/corrupted pairs from ``facts`` whose prompts have ``length`` tokens."""
    rng = np.random.default_rng((seed, 31))
    usable = []
    for city, country in facts:
        if prompt_length(lm, city) != length:
            continue
        ids = lm.tokenizer(" " + country, add_special_tokens=False)["input_ids"]
        usable.append((city, country, int(ids[0])))
    order = rng.permutation(len(usable))
    out = RecallPairs([], [], [], [], [])
    for j in order:
        city, country, tok = usable[j]
        others = [k for k in rng.permutation(len(usable)) if usable[k][2] != tok]
        if not others:
            continue
        o_city, o_country, o_tok = usable[others[0]]
        out.clean.append(RECALL_TEMPLATE.format(city=city))
        out.corrupted.append(RECALL_TEMPLATE.format(city=o_city))
        out.answer.append(tok)
        out.wrong.append(o_tok)
        out.facts.append({"city": city, "country": country, "corrupted_city": o_city,
                          "corrupted_country": o_country})
        if len(out) == n:
            break
    if len(out) < 2:
        raise InterplabError(f"fewer than 2 city prompts of {length} tokens with distinct "
                             "countries; raise --max-per-dataset")
    return out
