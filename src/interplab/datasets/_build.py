"""Shared machinery for the fact-table families: claims, wrong answers, twin datasets.

Every family works the same way. A fact table gives (subject, correct answer) rows. Each subject
yields one true claim (its own answer) and one false claim (an answer drawn by
:func:`derangement`, i.e. another subject's answer). The claims are shuffled by the seed and
rendered twice: as affirmative statements (label = claim is true) and as negated statements
(label flipped). Both renderings share the claims' pair ids and order, so ``ds[i]`` and
``neg_ds[i]`` are the same claim. A claim's group is its subject (the field named by ``group``),
so a subject's true claim, its false claim and their negations form one group.

Drawing wrong answers from the other subjects' answers keeps the distribution of answers the
same in true and false statements, so no answer word alone reveals the label.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from interplab.datasets.statements import StatementDataset


@dataclass(frozen=True)
class Claim:
    """One claim: its template fields, whether it is true, and the id its negation shares."""

    pair_id: str
    fields: Mapping[str, str]
    true: bool


def derangement(
    keys: Sequence[object],
    rng: np.random.Generator,
    forbidden: Mapping[int, set[object]] | None = None,
) -> np.ndarray:
    """A permutation ``perm`` with ``keys[perm[i]] != keys[i]`` and not in ``forbidden[i]``.

    Used to give each subject another subject's answer as its false answer; every answer is used
    exactly once. Starts from a random permutation and repairs violations by random swaps.
    """
    n = len(keys)
    forbidden = forbidden or {}
    perm = rng.permutation(n)

    def ok(i: int, j: int) -> bool:
        return keys[j] != keys[i] and keys[j] not in forbidden.get(i, ())

    for _ in range(100):
        bad = [i for i in range(n) if not ok(i, perm[i])]
        if not bad:
            return perm
        for i in bad:
            if ok(i, perm[i]):
                continue
            for j in rng.permutation(n):
                if ok(i, perm[j]) and ok(j, perm[i]):
                    perm[i], perm[j] = perm[j], perm[i]
                    break
    raise RuntimeError("no derangement found: one answer is shared by more than half the rows")


def true_and_false_claims(
    family: str,
    subjects: Sequence[Mapping[str, str]],
    answer_field: str,
    seed: int | Sequence[int],
    forbidden: Mapping[int, set[str]] | None = None,
) -> list[Claim]:
    """One true and one false claim per subject, shuffled by ``seed``.

    Args:
        family: prefix of the pair ids (``"cities"`` → ``"cities/17/t"``).
        subjects: one mapping of template fields per subject, including ``answer_field``.
        answer_field: the field to replace by another subject's value in the false claim.
        seed: seed for the wrong answers and the order.
        forbidden: per subject index, answers that must not be used as its wrong answer
            (because they would make the "false" claim true or ambiguous).
    """
    rng = np.random.default_rng(seed)
    answers = [s[answer_field] for s in subjects]
    perm = derangement(answers, rng, forbidden)
    claims = []
    for i, subject in enumerate(subjects):
        claims.append(Claim(f"{family}/{i}/t", dict(subject), True))
        wrong = dict(subject)
        wrong[answer_field] = answers[perm[i]]
        wrong["correct_" + answer_field] = answers[i]
        claims.append(Claim(f"{family}/{i}/f", wrong, False))
    order = rng.permutation(len(claims))
    return [claims[k] for k in order]


def render(
    name: str,
    claims: Sequence[Claim],
    template: str,
    provenance: Mapping[str, str],
    seed: int,
    negated: bool = False,
    *,
    group: tuple[str, str],
) -> StatementDataset:
    """Fill ``template`` with each claim's fields; label = claim is true (flipped if negated).

    ``group`` is ``(field, description)``: each row's group is the claim's ``field`` (its
    subject), described as ``description`` (e.g. ``("es", "Spanish word")``).
    """
    statements = [template.format(**c.fields) for c in claims]
    labels = [int(c.true != negated) for c in claims]
    keys = list(claims[0].fields) if claims else []
    for c in claims:
        keys += [k for k in c.fields if k not in keys]
    metadata = {k: [c.fields.get(k, "") for c in claims] for k in keys}
    metadata["claim_true"] = [int(c.true) for c in claims]
    return StatementDataset(
        name=name,
        statements=statements,
        labels=np.array(labels, dtype=np.int64),
        provenance=dict(provenance),
        seed=seed,
        pair_ids=np.array([c.pair_id for c in claims]),
        metadata=metadata,
        groups=np.array([c.fields[group[0]] for c in claims]),
        group_by=group[1],
    )


def fold(text: str) -> str:
    """Lower case, accents removed, letters and digits only: for comparing names loosely."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed.lower() if ch.isalnum())
