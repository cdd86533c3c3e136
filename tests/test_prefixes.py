"""Shared prefixes: the plan is optimal and valid, and harvesting on it changes nothing."""

import random

import numpy as np
import pytest
import torch

from interplab.activations import Positions, harvest_tokens
from interplab.activations.prefixes import plan_prefixes

ARCHS = ["tiny-llama", "tiny-gpt2", "tiny-neox", "tiny-qwen2"]


def _trie_reference(seqs: list[tuple[int, ...]]) -> int:
    """Most tokens a one-level plan saves, by plain recursion over an explicit trie."""

    def best(members: list[tuple[int, ...]], depth: int) -> int:
        # members all share their first `depth` tokens and are longer than or equal to `depth`
        take = (len(members) - 1) * depth if depth and len(members) >= 2 else 0
        children: dict[int, list[tuple[int, ...]]] = {}
        for s in members:
            if len(s) > depth:
                children.setdefault(s[depth], []).append(s)
        return max(take, sum(best(c, depth + 1) for c in children.values()))

    return best(seqs, 0)


def _check_valid(plan, ids, caps):
    for g, prefix in enumerate(plan.prefixes):
        members = np.flatnonzero(plan.group == g)
        assert len(members) >= 2
        for i in members:
            assert list(ids[i][: len(prefix)]) == prefix
            assert plan.depth[i] == len(prefix) <= caps[i]
    assert np.all(plan.depth[plan.group < 0] == 0)


def test_plan_prefers_the_prefix_that_saves_most():
    ids = [[1, 2, 3, 9], [1, 2, 3, 8], [1, 2, 4, 7], [5, 6]]
    plan = plan_prefixes(ids, [len(t) - 1 for t in ids])
    # "1 2" for three texts saves 2 x 2 = 4 tokens; "1 2 3" for two saves only 3.
    assert plan.prefixes == [[1, 2]]
    assert plan.depth.tolist() == [2, 2, 2, 0]
    assert plan.saved_tokens == 4
    ids = [[1, 2, 3, 4, 5, 9], [1, 2, 3, 4, 5, 8], [1, 6, 7]]
    plan = plan_prefixes(ids, [len(t) - 1 for t in ids])
    assert plan.prefixes == [[1, 2, 3, 4, 5]] and plan.saved_tokens == 5


def test_plan_is_optimal_and_respects_caps():
    rng = random.Random(0)
    for trial in range(200):
        stems = [[rng.randrange(4) for _ in range(rng.randint(1, 5))] for _ in range(3)]
        ids = [rng.choice(stems + [[]]) + [rng.randrange(4) for _ in range(rng.randint(1, 4))]
               for _ in range(rng.randint(1, 12))]
        caps = [rng.randint(0, len(t) - 1) for t in ids]
        plan = plan_prefixes(ids, caps)
        _check_valid(plan, ids, caps)
        keys = [tuple(t[:c]) for t, c in zip(ids, caps, strict=True) if c >= 1]
        assert plan.saved_tokens == _trie_reference(keys), trial


def test_plan_keeps_within_the_key_value_budget():
    ids = [[1] * 10 + [k] for k in range(3)] + [[2, 3, k] for k in range(9)]
    caps = [len(t) - 1 for t in ids]
    full = plan_prefixes(ids, caps)
    assert sorted(map(len, full.prefixes)) == [2, 10]  # saves 2 x 10 and 8 x 2
    small = plan_prefixes(ids, caps, max_slots=15)  # two groups need 2 x 10 slots
    assert small.prefixes == [[1] * 10] and small.max_depth * small.n_groups <= 15
    assert plan_prefixes(ids, [0] * len(ids)).n_groups == 0


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
    assert shared.info["shared_prefix_groups"] >= 2
    assert shared.info["shared_prefix_tokens_saved"] > 0
    # The reference runs every text whole (its batching and padding invariance is tested in
    # test_harvest.py).
    plain = harvest_tokens(lm, ids, hooks, pos, batch_size=5, share_prefixes=False,
                           progress=False)
    assert plain.info["shared_prefix_groups"] == 0
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


def test_shared_prefixes_run_fewer_tokens(tiny_models):
    lm = tiny_models["tiny-llama"]
    stem = [5, 6, 7, 8, 9, 10, 11, 12]
    ids = [stem + [20 + k, 40 + k] for k in range(16)]
    seen = []
    handle = lm.blocks[0].register_forward_pre_hook(
        lambda _m, args, kwargs: seen.append((args[0] if args else kwargs["hidden_states"]).shape[:2]),
        with_kwargs=True)
    try:
        shared = harvest_tokens(lm, ids, "blocks.1.hook_resid_post", "last", batch_size=16,
                                progress=False)
    finally:
        handle.remove()
    # The stem runs once (8 tokens), then every text's own 2 tokens: 8 + 16 x 2, not 16 x 10.
    assert sum(b * s for b, s in seen) == 8 + 16 * 2
    assert shared.info["shared_prefix_tokens_saved"] == 15 * 8
    # With "all" positions nothing can be shared: every token is harvested.
    every = harvest_tokens(lm, ids, "blocks.1.hook_resid_post", "all", progress=False)
    assert every.info["shared_prefix_groups"] == 0
