import warnings

import numpy as np
import pytest
import torch

from interplab.activations import Positions, harvest
from interplab.errors import InterplabError
from tests.conftest import TEXTS

HOOKS = ["blocks.1.hook_resid_post", "blocks.3.hook_mlp_out", "blocks.0.hook_attn_out"]


@pytest.mark.parametrize("arch", ["tiny-llama", "tiny-gpt2", "tiny-neox", "tiny-qwen2"])
def test_activation_independent_of_batch_and_padding_side(tiny_models, arch):
    lm = tiny_models[arch]
    alone = [harvest(lm, [t], HOOKS, "all", progress=False) for t in TEXTS]
    for side in ("right", "left"):
        for bs in (2, 5):
            batched = harvest(lm, TEXTS, HOOKS, "all", batch_size=bs, padding_side=side,
                              progress=False)
            for i, single in enumerate(alone):
                rows = batched.rows_for_text(i)
                for h in HOOKS:
                    assert torch.allclose(batched[h][rows], single[h], atol=1e-5, rtol=0), (side, bs, h)
                assert torch.equal(batched.token_id[rows], single.token_id)


def test_rows_come_back_in_input_order_with_addresses(tiny_models):
    lm = tiny_models["tiny-llama"]
    acts = harvest(lm, TEXTS, HOOKS[:1], "all", batch_size=2, progress=False)
    ids = lm.tokenize(TEXTS)
    assert acts.n_rows == sum(map(len, ids))
    expected_text = np.concatenate([[i] * len(t) for i, t in enumerate(ids)])
    assert np.array_equal(acts.text_index.numpy(), expected_text)
    assert np.array_equal(acts.position.numpy(), np.concatenate([np.arange(len(t)) for t in ids]))
    assert np.array_equal(acts.token_id.numpy(), np.concatenate(ids))


def test_position_selectors_agree_with_all(tiny_models):
    lm = tiny_models["tiny-llama"]  # adds BOS
    h = HOOKS[0]
    full = harvest(lm, TEXTS, h, "all", progress=False)
    ids = lm.tokenize(TEXTS)
    last = harvest(lm, TEXTS, h, "last", progress=False)
    minus2 = harvest(lm, TEXTS, h, "index:-2", progress=False)
    no_bos = harvest(lm, TEXTS, h, "all-but-bos", progress=False)
    explicit = harvest(lm, TEXTS, h, Positions.explicit([[0, -1]] * len(TEXTS)), progress=False)
    masks = [[j % 2 == 0 for j in range(len(t))] for t in ids]
    masked = harvest(lm, TEXTS, h, Positions.masks(masks), progress=False)
    for i, t in enumerate(ids):
        rows = full.rows_for_text(i)
        assert torch.allclose(last[h][i], full[h][rows[-1]], atol=1e-5)
        assert torch.allclose(minus2[h][i], full[h][rows[-2]], atol=1e-5)
        nb = no_bos.rows_for_text(i)
        assert len(nb) == len(t) - 1 and (no_bos.position[nb] >= 1).all()
        ex = explicit.rows_for_text(i)
        assert explicit.position[ex].tolist() == [0, len(t) - 1]
        mk = masked.rows_for_text(i)
        assert masked.position[mk].tolist() == list(range(0, len(t), 2))
    assert (last.token_id == torch.tensor([t[-1] for t in ids])).all()


def test_all_but_bos_keeps_first_token_without_bos(tiny_models):
    lm = tiny_models["tiny-gpt2"]  # adds no BOS
    a = harvest(lm, TEXTS[:2], HOOKS[0], "all-but-bos", progress=False)
    b = harvest(lm, TEXTS[:2], HOOKS[0], "all", progress=False)
    assert a.n_rows == b.n_rows


def test_bad_input_gives_clear_errors(tiny_models):
    lm = tiny_models["tiny-llama"]
    with pytest.raises(InterplabError, match="empty"):
        harvest(lm, [], HOOKS[0], progress=False)
    with pytest.raises(InterplabError, match="text 1 is empty"):
        harvest(lm, ["fine", "  "], HOOKS[0], progress=False)
    with pytest.raises(InterplabError, match="Valid hook points"):
        harvest(lm, TEXTS, "blocks.0.hook_nothing", progress=False)
    with pytest.raises(InterplabError, match="out of range"):
        harvest(lm, TEXTS, "blocks.17.hook_resid_post", progress=False)
    with pytest.raises(InterplabError, match="position selector"):
        harvest(lm, TEXTS, HOOKS[0], "middle", progress=False)
    with pytest.raises(InterplabError, match="outside text"):
        harvest(lm, ["Bees."], HOOKS[0], "index:-40", progress=False)
    with pytest.raises(InterplabError, match="one entry per text"):
        harvest(lm, TEXTS, HOOKS[0], Positions.explicit([[0]]), progress=False)
    with pytest.raises(InterplabError, match="mask for text 0"):
        harvest(lm, TEXTS[:1], HOOKS[0], Positions.masks([[True]]), progress=False)


def test_long_texts_truncate_with_warning_or_error(tiny_models):
    lm = tiny_models["tiny-gpt2"]
    long_text = " ".join(["word"] * 400)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        acts = harvest(lm, [long_text, "short"], HOOKS[0], "all", progress=False)
    assert any("exceed" in str(w.message) for w in caught)
    assert int((acts.text_index == 0).sum()) == lm.n_ctx
    with pytest.raises(InterplabError, match="exceed"):
        harvest(lm, [long_text], HOOKS[0], truncation="error", progress=False)
    with pytest.raises(InterplabError, match="max_length must be at least 1"):
        harvest(lm, ["short"], HOOKS[0], max_length=-1, progress=False)


def test_bf16_compute_is_close_to_fp32(tiny_models):
    lm = tiny_models["tiny-llama"]
    a = harvest(lm, TEXTS, HOOKS[0], "all", progress=False)[HOOKS[0]]
    b = harvest(lm, TEXTS, HOOKS[0], "all", compute_dtype=torch.bfloat16, progress=False)[HOOKS[0]]
    assert b.dtype == torch.float32
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    assert cos.min() > 0.98
    assert not torch.equal(a, b)  # bf16 really ran


def test_logprobs_match_a_plain_forward_pass(tiny_models):
    lm = tiny_models["tiny-llama"]
    acts = harvest(lm, TEXTS, HOOKS[0], "last", batch_size=3, with_logprobs=True,
                   padding_side="left", progress=False)
    plain = harvest(lm, TEXTS, HOOKS[0], "last", progress=False)
    assert torch.allclose(acts[HOOKS[0]], plain[HOOKS[0]], atol=1e-5)
    for i, text in enumerate(TEXTS):
        ids = torch.tensor([lm.tokenize([text])[0]])
        with torch.inference_mode():
            logp = torch.log_softmax(lm.hf(input_ids=ids).logits[0, :-1].double(), -1)
        expected = logp.gather(-1, ids[0, 1:, None]).sum().item()
        assert abs(acts.text_logprob[i].item() - expected) < 1e-3
        assert int(acts.text_n_scored[i]) == ids.shape[1] - 1


@pytest.mark.parametrize("arch", ["tiny-llama", "tiny-qwen2", "tiny-gpt2", "tiny-neox"])
def test_logprobs_project_only_the_scored_positions(tiny_models, arch):
    """The vocabulary projection sees one row per scored token (no padding, no last tokens; a
    shared prefix's positions once), and the log-probabilities still match a plain forward pass
    of each text alone."""
    lm = tiny_models[arch]
    head = lm.hf.get_output_embeddings()
    n_scored = sum(len(t) - 1 for t in lm.tokenize(TEXTS))
    for share in (False, True):
        rows_seen: list[int] = []
        handle = head.register_forward_hook(
            lambda _m, inp, _o, seen=rows_seen: seen.append(inp[0].shape[:-1].numel()))
        try:
            acts = harvest(lm, TEXTS, HOOKS[0], "last", batch_size=4, with_logprobs=True,
                           progress=False, share_prefixes=share)
        finally:
            handle.remove()
        assert sum(rows_seen) == n_scored - acts.info["shared_prefix_tokens_saved"]
        assert share or acts.info["shared_prefix_tokens_saved"] == 0
    for i, text in enumerate(TEXTS):
        ids = torch.tensor([lm.tokenize([text])[0]])
        with torch.inference_mode():
            logp = torch.log_softmax(lm.hf(input_ids=ids).logits[0, :-1].double(), -1)
        assert abs(acts.text_logprob[i].item() - logp.gather(-1, ids[0, 1:, None]).sum().item()) < 1e-3


def test_harvest_runs_with_the_thread_policy_and_restores_it(tiny_models, monkeypatch):
    lm = tiny_models["tiny-llama"]
    seen: list[int] = []
    handle = lm.blocks[0].register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("INTERPLAB_THREADS", "1")
        harvest(lm, TEXTS, HOOKS[0], progress=False)
        assert seen and set(seen) == {1}
        seen.clear()
        harvest(lm, TEXTS, HOOKS[0], progress=False, threads=3)  # the argument wins
        assert set(seen) == {3}
        monkeypatch.setenv("INTERPLAB_THREADS", "many")
        with pytest.raises(InterplabError, match="neither 'auto' nor a whole number"):
            harvest(lm, TEXTS, HOOKS[0], progress=False)
    finally:
        handle.remove()
    assert torch.get_num_threads() == before


def test_length_batches_are_the_cheapest_cut_of_the_sorted_texts():
    import itertools
    import random

    from interplab.activations.harvest import PASS_COST_SLOTS, batches_by_length

    def cost(batches, lengths):
        return sum(len(b) * max(lengths[i] for i in b) + PASS_COST_SLOTS for b in batches)

    rng = random.Random(0)
    for _ in range(100):
        lengths = [rng.choice([1, 2, 3, 5, 40, 90, 200]) for _ in range(rng.randint(1, 8))]
        size = rng.randint(1, 4)
        batches = batches_by_length(lengths, size)
        flat = np.concatenate(batches)
        assert sorted(flat.tolist()) == list(range(len(lengths)))
        assert all(1 <= len(b) <= size for b in batches)
        assert np.all(np.diff(np.asarray(lengths)[flat]) >= 0)
        order = np.argsort(lengths, kind="stable")
        cheapest = min(
            cost([order[a:b] for a, b in zip((0, *cuts), (*cuts, len(order)), strict=True)], lengths)
            for k in range(len(order))
            for cuts in itertools.combinations(range(1, len(order)), k)
            if all(b - a <= size for a, b in zip((0, *cuts), (*cuts, len(order)), strict=True)))
        assert cost(batches, lengths) == cheapest
