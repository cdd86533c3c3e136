"""CE loss recovered / KL with the SAE spliced into a tiny model: identity, padding, BOS, lengths."""

from __future__ import annotations

import os

import pytest
import torch

from interplab.activations.exclusion import ExclusionRule
from interplab.errors import InterplabError
from interplab.sae import SAEConfig, create_sae
from interplab.sae.ce_eval import ce_loss_recovered, pad_sequences
from tests.conftest import identity_sae

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TEXTS = [
    "The cat sat on the mat and looked out of the window at the rain.",
    "A short one.",
    "Numbers like 1, 2 and 3 are followed by more words in this sentence here.",
    "Language models predict the next token from the ones before it.",
]


@pytest.fixture(scope="module", params=["tiny-llama", "tiny-gpt2"])
def lm(request):
    from interplab.models import load

    return load(request.param, seed=0)


def test_identity_sae_recovers_all_the_loss(lm):
    ids = lm.tokenize(TEXTS)
    ev = ce_loss_recovered(lm, identity_sae(lm.d_model), "blocks.1.hook_resid_post", ids,
                           context_lengths=[4, 8])
    for r in ev.results:
        assert r.sae_loss == r.clean_loss
        assert r.loss_recovered_vs_zero == 1.0 and r.loss_recovered_vs_mean == 1.0
        assert r.kl_sae == 0.0
        # Control: ablation really changes the model (a random tiny model need not get worse).
        assert r.zero_ablation_loss != r.clean_loss and r.kl_zero_ablation > 1e-3
    # Control: a random SAE recovers less than everything.
    rand = create_sae(SAEConfig("topk", lm.d_model, 4 * lm.d_model, k=2, seed=5)).eval()
    r = ce_loss_recovered(lm, rand, "blocks.1.hook_resid_post", ids, context_lengths=[8]).results[0]
    assert r.loss_recovered_vs_zero != 1.0 and r.kl_sae > 1e-3


def test_counts_exclude_position_zero_bos_and_padding(lm):
    ids = lm.tokenize(TEXTS)
    L = 6
    hook = "blocks.0.hook_resid_post"
    ev = ce_loss_recovered(lm, identity_sae(lm.d_model), hook, ids, context_lengths=[L])
    # Each sequence of length ℓ ≤ L gives ℓ − 1 predictions, minus the one made at position 0
    # (excluded by default whether or not it holds a BOS token).
    expected = sum(min(len(s), L) - 2 for s in ids)
    assert ev.results[0].n_tokens == expected
    assert ev.exclusion == ExclusionRule().to_dict()
    # Control: with no exclusion only a real BOS token is left out.
    none = ce_loss_recovered(lm, identity_sae(lm.d_model), hook, ids, context_lengths=[L],
                             exclusion=ExclusionRule.none()).results[0]
    has_bos = lm.bos_token_id is not None
    assert none.n_tokens == sum(min(len(s), L) - 1 - int(has_bos) for s in ids)


def _record_attention_masks(lm, monkeypatch):
    seen = []
    real = lm.hf.forward

    def spy(*args, **kwargs):
        seen.append(kwargs["attention_mask"].detach().cpu().clone())
        return real(*args, **kwargs)

    monkeypatch.setattr(lm.hf, "forward", spy)
    return seen


def test_padded_batch_scores_as_sequences_alone(lm, monkeypatch):
    """A padded batch (right or left) goes through the model and gives the numbers that each
    sequence gives alone, unpadded."""
    ids = lm.tokenize(TEXTS)
    sae = create_sae(SAEConfig("topk", lm.d_model, 4 * lm.d_model, k=3, seed=2)).eval()
    hook = "blocks.2.hook_resid_post"
    L = max(len(s) for s in ids)
    alone = [ce_loss_recovered(lm, sae, hook, [s], context_lengths=[len(s)]).results[0]
             for s in ids]
    n_alone = sum(r.n_tokens for r in alone)

    def pooled(name):
        return sum(getattr(r, name) * r.n_tokens for r in alone) / n_alone

    for side in ("right", "left"):
        tokens, mask = pad_sequences(ids, pad_id=0, side=side)
        seen = _record_attention_masks(lm, monkeypatch)
        r = ce_loss_recovered(lm, sae, hook, tokens, mask, context_lengths=[L],
                              batch_size=len(ids)).results[0]
        monkeypatch.undo()
        # The batch really was padded when it reached the model …
        assert seen and all(int((m == 0).sum()) == int((mask == 0).sum()) for m in seen)
        # … and padding changes nothing: same count, same losses as the sequences alone.
        assert r.n_tokens == n_alone < int(mask.sum())
        for name in ("clean_loss", "sae_loss", "zero_ablation_loss", "kl_sae",
                     "kl_zero_ablation"):
            assert getattr(r, name) == pytest.approx(pooled(name), rel=1e-5, abs=1e-7), name


def test_padding_control_would_catch_counted_padding(lm):
    """Control for the test above: if padding entered the counts, the numbers would differ."""
    ids = lm.tokenize(TEXTS)
    tokens, mask = pad_sequences(ids, pad_id=0)
    sae = create_sae(SAEConfig("topk", lm.d_model, 4 * lm.d_model, k=3, seed=2)).eval()
    hook = "blocks.2.hook_resid_post"
    L = tokens.shape[1]
    real = ce_loss_recovered(lm, sae, hook, tokens, mask, context_lengths=[L]).results[0]
    # Treat the pad columns as real tokens (what counting padding amounts to).
    counted = ce_loss_recovered(lm, sae, hook, tokens, torch.ones_like(mask),
                                context_lengths=[L]).results[0]
    assert counted.n_tokens > real.n_tokens
    assert counted.clean_loss != pytest.approx(real.clean_loss, rel=1e-3)


def test_massive_norm_tokens_are_left_clean_and_reported(lm):
    """A token the norm rule excludes is neither patched nor counted, and is reported."""
    ids = lm.tokenize(TEXTS)
    hook = "blocks.1.hook_resid_post"
    sae = create_sae(SAEConfig("topk", lm.d_model, 4 * lm.d_model, k=2, seed=5)).eval()
    # A low ratio flags the largest-norm tokens of each batch as "massive".
    tight = ExclusionRule(norm_ratio=1.05)
    r = ce_loss_recovered(lm, sae, hook, ids, context_lengths=[8], exclusion=tight).results[0]
    base = ce_loss_recovered(lm, sae, hook, ids, context_lengths=[8]).results[0]
    assert r.n_excluded_positions > base.n_excluded_positions
    assert r.n_tokens < base.n_tokens
    # Reconstruction metrics: ordinary (patched) tokens and all attended tokens, both reported.
    assert r.reconstruction_ordinary_tokens["n_tokens"] < r.reconstruction_all_tokens["n_tokens"]
    n_attended = sum(min(len(s), 8) for s in ids)
    assert r.reconstruction_all_tokens["n_tokens"] == n_attended


def test_headline_is_mean_ablation_ce_increase_and_kl(lm):
    ids = lm.tokenize(TEXTS)
    sae = create_sae(SAEConfig("topk", lm.d_model, 4 * lm.d_model, k=2, seed=5)).eval()
    ev = ce_loss_recovered(lm, sae, "blocks.1.hook_resid_post", ids, context_lengths=[8])
    r = ev.results[0]
    d = ev.to_dict()
    assert d["headline"] == ["loss_recovered_vs_mean", "ce_increase", "kl_sae"]
    assert r.ce_increase == pytest.approx(r.sae_loss - r.clean_loss)
    assert r.loss_recovered_vs_mean == pytest.approx(
        (r.mean_ablation_loss - r.sae_loss) / (r.mean_ablation_loss - r.clean_loss))
    assert "loss_recovered_vs_zero" in d["results"][0]


def test_reports_each_requested_context_length(lm):
    ids = lm.tokenize(TEXTS)
    sae = identity_sae(lm.d_model)
    ev = ce_loss_recovered(lm, sae, "blocks.0.hook_resid_post", ids, context_lengths=[12, 3])
    assert [r.context_length for r in ev.results] == [3, 12]
    assert ev.at(3).n_tokens < ev.at(12).n_tokens
    assert ev.to_dict()["results"][0]["context_length"] == 3


def test_clear_errors(lm):
    ids = lm.tokenize(TEXTS)
    with pytest.raises(InterplabError, match="dimension mismatch"):
        ce_loss_recovered(lm, identity_sae(lm.d_model + 1), "blocks.0.hook_resid_post", ids)
    with pytest.raises(InterplabError, match="exceeds the longest"):
        ce_loss_recovered(lm, identity_sae(lm.d_model), "blocks.0.hook_resid_post", ids,
                          context_lengths=[10_000])
    with pytest.raises(InterplabError):
        ce_loss_recovered(lm, identity_sae(lm.d_model), "blocks.99.hook_resid_post", ids)
