"""Shared machinery for the fact-table families: claims, wrong answers, twin datasets.

Every family works the same way. A fact table gives (subject, correct answer) rows. Each subject
yields one true claim (its own answer) and one false claim (an answer drawn by
:func:`derangement`, i.e. another subject's answer). The claims are shuffled by the seed and
rendered twice: as affirmative statements (label = claim is true) and as negated statements
(label flipped). Both renderings share the claims' pair ids and order, so ``ds[i]`` and
``neg_ds[i]`` are the same claim.

Subjects exchange wrong answers in pairs (a 3-cycle when their number is odd): the false claim
of Lima takes Oslo's country and Oslo's takes Lima's. Such a pair is a *group*: its true and
false claims and their negations stay on one side of an entity split, and with them every row
that uses one of its answers as its own, so no answer is learnt as true on one side and met as
false on the other.

Drawing wrong answers from the other subjects' answers keeps the distribution of answers the
same in true and false statements, so no answer word alone reveals the label.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from interplab.datasets.statements import StatementDataset


@dataclass(frozen=True)
class Claim:
    """One claim: its template fields, whether it is true, the id its negation shares, and its
    group (the subjects whose rows must stay on one side of a train/test split)."""

    pair_id: str
    fields: Mapping[str, str]
    true: bool
    group: str


def derangement(
    keys: Sequence[object],
    rng: np.random.Generator,
    forbidden: Mapping[int, set[object]] | None = None,
) -> np.ndarray:
    """A permutation ``perm`` with ``keys[perm[i]] != keys[i]`` and not in ``forbidden[i]``,
    made of cycles of length 2 (and one of length 3 when ``len(keys)`` is odd).

    Used to give each subject another subject's answer as its false answer; every answer is used
    exactly once. Short cycles keep answers inside small groups: subjects ``i`` and ``j`` swap
    answers, so both of ``i``'s answers and both of ``j``'s are in the rows of ``{i, j}`` and a
    split by those groups never puts an answer on one side as true and on the other as false.
    Starts from random blocks of 2 (or 3) and repairs violations by exchanging members.
    """
    n = len(keys)
    forbidden = forbidden or {}

    def ok(i: int, j: int) -> bool:
        return keys[j] != keys[i] and keys[j] not in forbidden.get(i, ())

    def cycle(block: list[int]) -> list[int] | None:
        # An order of the block in which each member takes the next one's answer, if any.
        orders = [block] if len(block) == 2 else [block, [block[0], block[2], block[1]]]
        for order in orders:
            if all(ok(a, b) for a, b in zip(order, order[1:] + order[:1], strict=True)):
                return order
        return None

    order = rng.permutation(n).tolist()
    blocks = [order[k : k + 2] for k in range(0, n - n % 2, 2)]
    if n % 2:
        if not blocks:
            raise RuntimeError("no derangement of a single row")
        blocks[-1].append(order[-1])
    for _ in range(100):
        bad = [b for b, block in enumerate(blocks) if cycle(block) is None]
        if not bad:
            break
        for b in bad:
            if cycle(blocks[b]) is None:
                _repair(blocks, b, cycle, rng)
    else:
        raise RuntimeError("no derangement found: one answer is shared by more than half the rows")
    perm = np.empty(n, dtype=np.int64)
    for block in blocks:
        members = cycle(block)
        assert members is not None
        for a, b in zip(members, members[1:] + members[:1], strict=True):
            perm[a] = b
    return perm


def _repair(
    blocks: list[list[int]],
    b: int,
    cycle: Callable[[list[int]], list[int] | None],
    rng: np.random.Generator,
) -> None:
    """Exchange one member of ``blocks[b]`` with one of another block if both then work."""
    for c in rng.permutation(len(blocks)):
        if c == b:
            continue
        for x in range(len(blocks[b])):
            for y in range(len(blocks[c])):
                new_b, new_c = list(blocks[b]), list(blocks[c])
                new_b[x], new_c[y] = blocks[c][y], blocks[b][x]
                if cycle(new_b) is not None and cycle(new_c) is not None:
                    blocks[b], blocks[c] = new_b, new_c
                    return


def cycles(perm: np.ndarray) -> list[list[int]]:
    """The cycles of a permutation, each as a list of indices starting from its smallest."""
    seen, out = set(), []
    for start in range(len(perm)):
        if start in seen:
            continue
        members, i = [], start
        while i not in seen:
            seen.add(i)
            members.append(i)
            i = int(perm[i])
        out.append(members)
    return out


def true_and_false_claims(
    family: str,
    subjects: Sequence[Mapping[str, str]],
    answer_field: str,
    seed: int | Sequence[int],
    subject_field: str,
    forbidden: Mapping[int, set[str]] | None = None,
) -> list[Claim]:
    """One true and one false claim per subject, shuffled by ``seed``.

    Args:
        family: prefix of the pair ids (``"cities"`` → ``"cities/17/t"``).
        subjects: one mapping of template fields per subject, including ``answer_field``.
        answer_field: the field to replace by another subject's value in the false claim.
        seed: seed for the wrong answers and the order.
        subject_field: the field naming the subject; a claim's group joins the names of the
            subjects that exchange answers (``"Lima & Oslo"``), sorted.
        forbidden: per subject index, answers that must not be used as its wrong answer
            (because they would make the "false" claim true or ambiguous).
    """
    rng = np.random.default_rng(seed)
    answers = [s[answer_field] for s in subjects]
    perm = derangement(answers, rng, forbidden)
    group = {}
    for members in cycles(perm):
        name = " & ".join(sorted(subjects[i][subject_field] for i in members))
        group.update({i: name for i in members})
    claims = []
    for i, subject in enumerate(subjects):
        claims.append(Claim(f"{family}/{i}/t", dict(subject), True, group[i]))
        wrong = dict(subject)
        wrong[answer_field] = answers[perm[i]]
        wrong["correct_" + answer_field] = answers[i]
        claims.append(Claim(f"{family}/{i}/f", wrong, False, group[i]))
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
    group_by: str,
) -> StatementDataset:
    """Fill ``template`` with each claim's fields; label = claim is true (flipped if negated).

    Each row's group is its claim's; ``group_by`` says what a group is (``"Spanish word pair"``).
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
        groups=np.array([c.group for c in claims]),
        group_by=group_by,
    )


def fold(text: str) -> str:
    """Lower case, accents removed, letters and digits only: for comparing names loosely."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed.lower() if ch.isalnum())
