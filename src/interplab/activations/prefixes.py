"""Shared token prefixes: run the common start of many texts once.

Statement datasets are written from templates ("The city of X is in Y.", "The Spanish word 'X'
means 'Y'."), so in a harvest read at the last token a third or more of all tokens are a prefix
that many texts share. A causal model computes exactly the same keys, values and activations for
those tokens in every text, so interplab runs each chosen prefix once, keeps its keys and values,
and runs only the rest of each text on top of them (:func:`interplab.activations.harvest`).

:func:`plan_prefixes` chooses which prefix each text uses. A text may use a prefix only up to its
``cap``: the prefix must end before the first position harvested from the text and leave at least
one token of its own. Among one-level plans (each text uses at most one prefix) it maximises the
tokens saved, ``sum over groups of (members - 1) * depth``, exactly, by dynamic programming over
the trie of the texts (walked as intervals of the lexicographically sorted texts). The keys and
values of the chosen prefixes are kept in memory at once, so a budget in prefix slots (groups x
longest prefix) bounds that memory; the groups that save least are dropped first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class PrefixPlan:
    """Which shared prefix each text uses.

    ``group[i]`` is the prefix group of text i (-1: none) and ``depth[i]`` that prefix's length
    in tokens (0: none). ``prefixes[g]`` are the token ids of group g.
    """

    group: np.ndarray
    depth: np.ndarray
    prefixes: list[list[int]]

    @property
    def n_groups(self) -> int:
        return len(self.prefixes)

    @property
    def saved_tokens(self) -> int:
        """Tokens not run thanks to the plan (each prefix is still run once)."""
        return int(self.depth.sum()) - sum(len(p) for p in self.prefixes)

    @property
    def max_depth(self) -> int:
        return max((len(p) for p in self.prefixes), default=0)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def plan_prefixes(token_ids: Sequence[Sequence[int]], caps: Sequence[int], *,
                  max_slots: int | None = None) -> PrefixPlan:
    """The one-level prefix plan that saves the most tokens (see the module docstring).

    ``caps[i]`` is the longest prefix text i may use (0: none). ``max_slots`` bounds
    ``n_groups * max_depth``, the size of the key/value table the plan needs.
    """
    n = len(token_ids)
    group = np.full(n, -1, dtype=np.int64)
    depth = np.zeros(n, dtype=np.int64)
    eligible = [i for i in range(n) if caps[i] >= 1]
    if len(eligible) < 2:
        return PrefixPlan(group, depth, [])
    keys = {i: tuple(token_ids[i][: caps[i]]) for i in eligible}
    order = sorted(eligible, key=keys.__getitem__)
    m = len(order)
    # lcp[j]: common prefix of the j-th and (j-1)-th texts in sorted order (lcp[0] unused).
    lcp = np.zeros(m, dtype=np.int64)
    for j in range(1, m):
        lcp[j] = _common_prefix(keys[order[j - 1]], keys[order[j]])

    # Every trie node worth considering is an interval [lo, hi) of the sorted texts whose common
    # prefix k = min(lcp[lo+1:hi]) is longer than its parent's; its children split it where
    # lcp == k. Solve bottom-up with an explicit stack (no recursion limit on deep tries).
    best: dict[tuple[int, int], tuple[int, bool, int, list[tuple[int, int]]]] = {}
    stack: list[tuple[int, int, bool]] = [(0, m, False)]
    while stack:
        lo, hi, expanded = stack.pop()
        k = int(lcp[lo + 1 : hi].min())
        cuts = [lo, *(lo + 1 + np.flatnonzero(lcp[lo + 1 : hi] == k)).tolist(), hi]
        children = [(a, b) for a, b in zip(cuts[:-1], cuts[1:], strict=True) if b - a >= 2]
        if not expanded:
            stack.append((lo, hi, True))
            stack.extend((a, b, False) for a, b in children)
            continue
        split = sum(best[c][0] for c in children)
        take = (hi - lo - 1) * k
        best[(lo, hi)] = (max(take, split), take > 0 and take >= split, k, children)

    chosen: list[tuple[int, int, int]] = []  # (lo, hi, k)
    todo = [(0, m)]
    while todo:
        lo, hi = todo.pop()
        _, take, k, children = best[(lo, hi)]
        if take:
            chosen.append((lo, hi, k))
        else:
            todo.extend(children)

    # Keep within the key/value budget: the groups that save most first.
    chosen.sort(key=lambda c: ((c[1] - c[0] - 1) * c[2], -c[0]), reverse=True)
    kept: list[tuple[int, int, int]] = []
    deepest = 0
    for lo, hi, k in chosen:
        if max_slots is not None and (len(kept) + 1) * max(deepest, k) > max_slots:
            continue
        kept.append((lo, hi, k))
        deepest = max(deepest, k)
    kept.sort()
    prefixes = []
    for g, (lo, hi, k) in enumerate(kept):
        members = order[lo:hi]
        group[members] = g
        depth[members] = k
        prefixes.append(list(keys[members[0]][:k]))
    return PrefixPlan(group, depth, prefixes)
