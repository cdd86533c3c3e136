"""Shared prefixes: the plan is optimal and valid, and harvesting on it changes nothing."""

import random

import numpy as np
import pytest
import torch

from interplab.activations import Positions, harvest_tokens
from interplab.activations.prefixes import plan_prefix_tree

ARCHS = ["tiny-llama", "tiny-gpt2", "tiny-neox", "tiny-qwen2"]


def _trie_tokens(keys: list[tuple[int, ...]]) -> int:
    """Tokens saved when every token of the trie of ``keys`` runs once: each trie node with
    ``c`` keys through it runs once instead of ``c`` times."""
    through: dict[tuple[int, ...], int] = {}
    for key in keys:
        for k in range(1, len(key) + 1):
            through[key[:k]] = through.get(key[:k], 0) + 1
    return sum(c - 1 for c in through.values())


def _check_valid(tree, ids, caps):
    for v in range(tree.n_nodes):
        p = tree.parent[v]
        assert len(tree.tokens[v]) == tree.depth[v]
        assert p < v  # parents first
        if p >= 0:  # a node extends its parent
            assert tree.tokens[v][: tree.depth[p]] == tree.tokens[p] and tree.depth[v] > tree.depth[p]
        users = np.count_nonzero(tree.text_node == v) + np.count_nonzero(tree.parent == v)
        assert users >= 2  # a node nothing shares would save nothing
    for i, v in enumerate(tree.text_node):
        if v >= 0:
            assert list(ids[i][: tree.depth[v]]) == tree.tokens[v]
            assert tree.text_depth[i] == tree.depth[v] <= caps[i]
        else:
            assert tree.text_depth[i] == 0


def test_tree_runs_each_shared_prefix_once_at_every_depth():
    ids = [[1, 2, 3, 9], [1, 2, 3, 8], [1, 2, 4, 7], [5, 6]]
    tree = plan_prefix_tree(ids, [len(t) - 1 for t in ids])
    # "1 2" is shared by three texts, "1 2 3" by two: "1 2" runs once, then "3" once on it.
    assert tree.tokens == [[1, 2], [1, 2, 3]]
    assert tree.parent.tolist() == [-1, 0]
    assert tree.text_node.tolist() == [1, 1, 0, -1]
    assert tree.text_depth.tolist() == [3, 3, 2, 0]
    assert tree.saved_tokens == 8 - 3
    assert [w.tolist() for w in tree.waves] == [[0], [1]]


def test_tree_saves_every_shared_token_and_respects_caps():
    rng = random.Random(0)
    for trial in range(200):
        stems = [[rng.randrange(4) for _ in range(rng.randint(1, 5))] for _ in range(3)]
        ids = [rng.choice(stems + [[]]) + [rng.randrange(4) for _ in range(rng.randint(1, 4))]
               for _ in range(rng.randint(1, 12))]
        caps = [rng.randint(0, len(t) - 1) for t in ids]
        tree = plan_prefix_tree(ids, caps)
        _check_valid(tree, ids, caps)
        keys = [tuple(t[:c]) for t, c in zip(ids, caps, strict=True) if c >= 1]
        # no plan can run fewer tokens than the trie of the texts' capped prefixes
        assert tree.saved_tokens == _trie_tokens(keys), trial


def test_tree_keeps_within_the_key_value_budget():
    ids = [[1] * 10 + [k] for k in range(3)] + [[2, 3, k] for k in range(9)]
    caps = [len(t) - 1 for t in ids]
    full = plan_prefix_tree(ids, caps)
    assert sorted(full.depth.tolist()) == [2, 10]  # saves 2 x 10 and 8 x 2
    small = plan_prefix_tree(ids, caps, max_slots=5)  # the 10-token node saves least per slot
    assert small.tokens == [[2, 3]] and small.saved_tokens == 8 * 2
    _check_valid(small, ids, caps)
    # over budget, a leaf goes first and its texts move to its parent
    ids = [[1, 2, 3, 4, 5, k] for k in range(2)] + [[1, 2, 6 + k] for k in range(4)]
    caps = [len(t) - 1 for t in ids]
    assert plan_prefix_tree(ids, caps).tokens == [[1, 2], [1, 2, 3, 4, 5]]
    pruned = plan_prefix_tree(ids, caps, max_slots=4)
    assert pruned.tokens == [[1, 2]] and pruned.text_node.tolist() == [0] * 6
    _check_valid(pruned, ids, caps)
    assert plan_prefix_tree(ids, [0] * len(ids)).n_nodes == 0


def _statements(lm, n=36, seed=0):
    rng = random.Random(seed)
    vocab = lm.embed.num_embeddings
    stems = [[rng.randrange(3, vocab) for _ in range(k)] for k in (1, 3, 6)]
    return [rng.choice(stems + [[]]) + [rng.randrange(3, vocab) for _ in range(rng.randint(1, 5))]
            for _ in range(n)]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("positions", ["last", "index:-2", "explicit"])
def test_shared_prefixes_give_the_same_activations(tiny_models, arch, positions):
    lm = tiny_models[arch]
    ids = [t for t in _statements(lm) if len(t) >= 2]
    pos = (Positions.explicit([[len(t) - 1, len(t) // 2] for t in ids])
           if positions == "explicit" else positions)
    hooks = ["blocks.0.attn.hook_z", "blocks.1.hook_attn_out", "blocks.2.hook_mlp_out",
             "blocks.3.hook_resid_pre"]  # the pass stops on entering block 3
    shared = harvest_tokens(lm, ids, hooks, pos, batch_size=5, progress=False)
    assert shared.info["shared_prefix_nodes"] >= 2
    assert shared.info["shared_prefix_tokens_saved"] > 0
    # The reference runs every text whole (its batching and padding invariance is tested in
    # test_harvest.py).
    plain = harvest_tokens(lm, ids, hooks, pos, batch_size=5, share_prefixes=False,
                           progress=False)
    assert plain.info["shared_prefix_nodes"] == 0
    assert torch.equal(shared.text_index, plain.text_index)
    assert torch.equal(shared.position, plain.position)
    assert torch.equal(shared.token_id, plain.token_id)
    for h in hooks:
        assert torch.allclose(shared[h], plain[h], atol=1e-5, rtol=0), h


@pytest.mark.parametrize("arch", ARCHS)
def test_shared_prefixes_keep_every_log_probability(tiny_models, arch):
    lm = tiny_models[arch]
    ids = _statements(lm, seed=1)
    hooks = ["blocks.1.hook_resid_post"]
    shared = harvest_tokens(lm, ids, hooks, "last", batch_size=4, with_logprobs=True,
                            progress=False)
    plain = harvest_tokens(lm, ids, hooks, "last", batch_size=4, with_logprobs=True,
                           share_prefixes=False, progress=False)
    assert shared.info["shared_prefix_tokens_saved"] > 0
    assert torch.equal(shared.text_n_scored, torch.tensor([len(t) - 1 for t in ids]))
    assert torch.equal(shared.text_n_scored, plain.text_n_scored)
    assert torch.allclose(shared.text_logprob, plain.text_logprob, atol=1e-4, rtol=0)


def _harvest_counting_block0_slots(lm, ids):
    """Harvest the last token at block 1 (batches of 16); also the token slots block 0 saw."""
    seen = []
    handle = lm.blocks[0].register_forward_pre_hook(
        lambda _m, args, kwargs: seen.append((args[0] if args else kwargs["hidden_states"]).shape[:2]),
        with_kwargs=True)
    try:
        acts = harvest_tokens(lm, ids, "blocks.1.hook_resid_post", "last", batch_size=16,
                              progress=False)
    finally:
        handle.remove()
    return acts, sum(b * s for b, s in seen)


def test_shared_prefixes_run_fewer_tokens(tiny_models):
    lm = tiny_models["tiny-llama"]
    stem = [5, 6, 7, 8, 9, 10, 11, 12]
    ids = [stem + [20 + k, 40 + k] for k in range(16)]
    shared, slots = _harvest_counting_block0_slots(lm, ids)
    # The stem runs once (8 tokens), then every text's own 2 tokens: 8 + 16 x 2, not 16 x 10.
    assert slots == 8 + 16 * 2
    assert shared.info["shared_prefix_tokens_saved"] == 15 * 8
    # With "all" positions nothing can be shared: every token is harvested.
    every = harvest_tokens(lm, ids, "blocks.1.hook_resid_post", "all", progress=False)
    assert every.info["shared_prefix_nodes"] == 0


def _nested_statements(lm, n=40, seed=0):
    """Texts on three stems, two of which share a root: the stems' own prefix is shared too."""
    rng = random.Random(seed)
    vocab = lm.embed.num_embeddings

    def tokens(k):
        return [rng.randrange(3, vocab) for _ in range(k)]

    root = tokens(3)
    stems = [root + tokens(4), root + tokens(2), tokens(5)]
    return [rng.choice(stems) + tokens(rng.randint(1, 4)) for _ in range(n)]


@pytest.mark.parametrize("arch", ARCHS)
def test_prefixes_of_prefixes_give_the_same_activations_and_log_probabilities(tiny_models, arch):
    lm = tiny_models[arch]
    ids = _nested_statements(lm, seed=3)
    hooks = ["blocks.0.hook_resid_post", "blocks.2.hook_mlp_out", "blocks.3.hook_resid_post"]
    for with_logprobs in (False, True):
        shared = harvest_tokens(lm, ids, hooks, "last", batch_size=3,
                                with_logprobs=with_logprobs, progress=False)
        plain = harvest_tokens(lm, ids, hooks, "last", batch_size=3, with_logprobs=with_logprobs,
                               share_prefixes=False, progress=False)
        assert shared.info["shared_prefix_waves"] == 2
        for h in hooks:
            assert torch.allclose(shared[h], plain[h], atol=1e-5, rtol=0), h
        if with_logprobs:
            assert torch.equal(shared.text_n_scored, plain.text_n_scored)
            assert torch.allclose(shared.text_logprob, plain.text_logprob, atol=1e-4, rtol=0)


def test_prefixes_of_prefixes_run_their_common_root_once(tiny_models):
    lm = tiny_models["tiny-llama"]
    root = [5, 6, 7]
    long_stem, short_stem = root + [8, 9, 10, 11], root + [12, 13]
    ids = ([long_stem + [20 + k, 40 + k] for k in range(8)]
           + [short_stem + [60 + k, 80 + k] for k in range(8)])
    shared, slots = _harvest_counting_block0_slots(lm, ids)
    # The root once (3 tokens), then the two stems' own tokens (4 and 2, one pass padded to 4),
    # then every text's own 2: not 16 texts of 9 or 7 tokens.
    assert slots == 3 + 2 * 4 + 16 * 2
    assert shared.info["shared_prefix_waves"] == 2
    assert shared.info["shared_prefix_tokens_saved"] == 8 * 9 + 8 * 7 - (3 + 4 + 2 + 16 * 2)


def test_prefix_passes_report_liveness_to_the_progress_sink(tiny_models):
    """Before any text finishes, each prefix pass calls ``update(0)`` so a line display can
    print its heartbeat (the demo printed nothing for 36 s of prefix passes under load); the
    counted tokens still add up to the texts' tokens exactly."""
    lm = tiny_models["tiny-llama"]
    ids = _nested_statements(lm)

    class Recorder:
        def __init__(self):
            self.calls = []

        def update(self, n=1):
            self.calls.append(n)

    sink = Recorder()
    acts = harvest_tokens(lm, ids, "blocks.1.hook_resid_post", "last", batch_size=4,
                          progress=sink)
    assert acts.info["shared_prefix_nodes"] >= 2
    first_text = next(i for i, n in enumerate(sink.calls) if n > 0)
    assert first_text >= 2 and set(sink.calls[:first_text]) == {0}
    assert sum(sink.calls) == sum(len(t) for t in ids)
