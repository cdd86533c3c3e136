"""Shared token prefixes: run the common start of many texts once, at every depth.

Statement datasets are written from templates ("The city of X is in Y.", "The Spanish word 'X'
means 'Y'."), so in a harvest read at the last token half or more of all tokens are a prefix
that other texts share. A causal model computes exactly the same keys, values and activations
for those tokens in every text, so interplab runs each shared prefix once, keeps its keys and
values, and runs only the rest of each text on top of them (:func:`interplab.activations.harvest`).

Prefixes nest: "The city of" is shared by every city statement, "The city of Paris is in" by
the statements about Paris. :func:`plan_prefix_tree` therefore plans a *tree* of prefix nodes,
the branching points of the trie of the texts. A node runs only its own tokens (those after its
parent's), on its parent's keys and values; a text runs only the tokens after its deepest node.
Without a budget every token of the trie runs exactly once, which is the fewest tokens any plan
can run. A text may use a prefix only up to its ``cap``: the prefix must end before the first
position harvested from the text and leave at least one token of its own.

The keys and values of every node's own tokens are kept in memory at once, so a budget in token
slots bounds that memory; over budget, the leaf nodes that save least are dropped first (their
texts then run from the parent node).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass
class PrefixTree:
    """Prefix nodes and which node each text runs on.

    Node v is the prefix ``tokens[v]`` (``depth[v]`` tokens); it runs on its ``parent[v]``'s keys
    and values (-1: from the start), so only its ``depth[v] - depth[parent[v]]`` own tokens run.
    ``text_node[i]`` is the node text i runs on (-1: none) and ``text_depth[i]`` that node's depth
    (0: none). Parents come before their children in node order.
    """

    parent: np.ndarray
    depth: np.ndarray
    tokens: list[list[int]]
    text_node: np.ndarray
    text_depth: np.ndarray

    @property
    def n_nodes(self) -> int:
        return len(self.tokens)

    @property
    def parent_depth(self) -> np.ndarray:
        """Depth of each node's parent (0 for a root)."""
        return np.where(self.parent >= 0, self.depth[np.maximum(self.parent, 0)], 0)

    @property
    def own(self) -> np.ndarray:
        """Tokens each node runs itself (its key/value slots)."""
        return self.depth - self.parent_depth

    @property
    def saved_tokens(self) -> int:
        """Tokens not run thanks to the tree (each node's own tokens still run once)."""
        return int(self.text_depth.sum()) - int(self.own.sum())

    @cached_property
    def waves(self) -> list[np.ndarray]:
        """Nodes by distance from their root: a wave runs once the one before it has."""
        level = np.zeros(self.n_nodes, dtype=np.int64)
        for v in range(self.n_nodes):  # parents come first
            if self.parent[v] >= 0:
                level[v] = level[self.parent[v]] + 1
        return [np.flatnonzero(level == w) for w in range(int(level.max(initial=-1)) + 1)]


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def plan_prefix_tree(token_ids: Sequence[Sequence[int]], caps: Sequence[int], *,
                     max_slots: int | None = None) -> PrefixTree:
    """The tree of shared prefixes of ``token_ids`` (see the module docstring).

    ``caps[i]`` is the longest prefix text i may use (0: none). ``max_slots`` bounds the summed
    own tokens of the nodes, the size of the key/value store the tree needs.
    """
    n = len(token_ids)
    eligible = [i for i in range(n) if caps[i] >= 1]
    keys = {i: tuple(token_ids[i][: caps[i]]) for i in eligible}
    order = sorted(eligible, key=keys.__getitem__)
    m = len(order)
    # lcp[j]: common prefix of the j-th and (j-1)-th texts in sorted order (lcp[0] unused).
    lcp = np.zeros(m, dtype=np.int64)
    for j in range(1, m):
        lcp[j] = _common_prefix(keys[order[j - 1]], keys[order[j]])

    # Every branching point of the trie is an interval [lo, hi) of the sorted texts (two or
    # more) whose common prefix k = min(lcp[lo+1:hi]) is longer than its parent's; its children
    # split it where lcp == k, and the texts left alone in the split end on it. Walked top-down
    # with an explicit stack (no recursion limit on deep tries); a parent is numbered before
    # its children.
    parent: list[int] = []
    depth: list[int] = []
    first: list[int] = []  # a text under the node (its tokens start with the node's prefix)
    node_of = np.full(n, -1, dtype=np.int64)
    stack: list[tuple[int, int, int]] = [(0, m, -1)] if m >= 2 else []
    while stack:
        lo, hi, up = stack.pop()
        k = int(lcp[lo + 1 : hi].min())
        here = up
        if k >= 1:
            here = len(depth)
            parent.append(up)
            depth.append(k)
            first.append(order[lo])
        cuts = [lo, *(lo + 1 + np.flatnonzero(lcp[lo + 1 : hi] == k)).tolist(), hi]
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            if b - a >= 2:
                stack.append((a, b, here))
            else:
                node_of[order[a]] = here
    tree_parent = np.asarray(parent, dtype=np.int64)
    tree_depth = np.asarray(depth, dtype=np.int64)
    keep = np.ones(len(depth), dtype=bool)
    if max_slots is not None:
        _prune(tree_parent, tree_depth, node_of, keep, max_slots)
    # renumber the kept nodes (parents still first); -1 stays -1
    new = np.append(np.cumsum(keep) - 1, -1)
    kept = np.flatnonzero(keep)
    text_node = new[node_of]
    return PrefixTree(
        parent=new[tree_parent[kept]], depth=tree_depth[kept],
        tokens=[list(keys[first[v]][: depth[v]]) for v in kept], text_node=text_node,
        text_depth=np.append(tree_depth[kept], 0)[text_node])


def _prune(parent: np.ndarray, depth: np.ndarray, node_of: np.ndarray, keep: np.ndarray,
           max_slots: int) -> None:
    """Drop nodes until their own tokens fit in ``max_slots``: always a leaf node (no child
    node; dropping it frees its own slots), the one whose texts would save least by it. Its
    texts move to its parent (``node_of`` is updated, ``keep`` cleared)."""
    n_nodes = len(depth)
    children = np.zeros(n_nodes, dtype=np.int64)
    for p in parent:
        if p >= 0:
            children[p] += 1
    texts: list[list[int]] = [[] for _ in range(n_nodes)]
    for i, v in enumerate(node_of):
        if v >= 0:
            texts[v].append(i)

    def own(v: int) -> int:
        return int(depth[v] - (depth[parent[v]] if parent[v] >= 0 else 0))

    slots = sum(own(v) for v in range(n_nodes))
    # a leaf node's saving per slot it holds is (texts on it - 1); cheapest first
    heap = [(len(texts[v]) - 1, -own(v), v) for v in range(n_nodes) if not children[v]]
    heapq.heapify(heap)
    while slots > max_slots and heap:
        units, _, v = heapq.heappop(heap)
        if not keep[v] or children[v] or units != len(texts[v]) - 1:
            continue  # stale entry
        keep[v] = False
        slots -= own(v)
        p = int(parent[v])
        node_of[texts[v]] = p
        if p >= 0:
            texts[p].extend(texts[v])
            children[p] -= 1
            if not children[p]:
                heapq.heappush(heap, (len(texts[p]) - 1, -own(p), p))
        texts[v] = []
