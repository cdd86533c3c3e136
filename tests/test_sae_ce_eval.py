"""CE loss recovered / KL with the SAE spliced into a tiny model: identity, padding, BOS, lengths."""

from __future__ import annotations

import os

import pytest
import torch

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


def test_counts_exclude_bos_and_padding(lm):
    ids = lm.tokenize(TEXTS)
    L = 6
    ev = ce_loss_recovered(lm, identity_sae(lm.d_model), "blocks.0.hook_resid_post", ids,
                           context_lengths=[L])
    has_bos = lm.bos_token_id is not None
    # Each sequence of length ℓ ≤ L gives ℓ − 1 predictions, minus the one made at BOS.
    expected = sum(min(len(s), L) - 1 - int(has_bos) for s in ids)
    assert ev.results[0].n_tokens == expected


def test_score_does_not_change_with_more_padding(lm):
    ids = lm.tokenize(TEXTS)
    sae = create_sae(SAEConfig("topk", lm.d_model, 4 * lm.d_model, k=3, seed=2)).eval()
    hook = "blocks.2.hook_resid_post"
    tokens, mask = pad_sequences(ids, pad_id=0)
    base = ce_loss_recovered(lm, sae, hook, tokens, mask, context_lengths=[10]).results[0]
    extra = 7  # more padding columns on the right
    tok2 = torch.cat([tokens, torch.zeros(len(ids), extra, dtype=torch.long)], 1)
    mask2 = torch.cat([mask, torch.zeros(len(ids), extra, dtype=torch.long)], 1)
    more = ce_loss_recovered(lm, sae, hook, tok2, mask2, context_lengths=[10]).results[0]
    tok3, mask3 = pad_sequences(ids, pad_id=0, side="left")
    left = ce_loss_recovered(lm, sae, hook, tok3, mask3, context_lengths=[10]).results[0]
    for other in (more, left):
        assert other.n_tokens == base.n_tokens
        for name in ("clean_loss", "sae_loss", "zero_ablation_loss", "mean_ablation_loss",
                     "loss_recovered_vs_zero", "kl_sae"):
            assert getattr(other, name) == pytest.approx(getattr(base, name), rel=1e-5,
                                                         abs=1e-7), name
    # Control: counting padding positions (the anchor bug) would change the number.
    assert base.n_tokens < int(mask2.sum())


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
