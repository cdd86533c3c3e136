"""Excluded positions for SAE work: position 0 and massive-norm tokens, everywhere by default."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
import torch

from interplab.activations.exclusion import ExclusionCount, ExclusionRule
from interplab.errors import InterplabError
from interplab.sae import SAEConfig, SAETrainer, TrainerConfig, create_sae, reconstruction_metrics
from interplab.sae.evaluate import evaluate_reconstruction_split
from tests.conftest import identity_sae

os.environ.setdefault("HF_HUB_OFFLINE", "1")

HOOK = "blocks.1.hook_resid_post"


def _sink_data(n_seq=200, T=16, d=16, seed=0):
    """Rows of ``n_seq`` sequences × ``T`` positions; position 0 (and a few others) ~100 × larger."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_seq, T, d, generator=g)
    sink = torch.randn(d, generator=g)
    sink = 400 * sink / sink.norm()
    x[:, 0] += sink
    x[::37, 1] += sink  # an occasional massive token after position 0
    position = torch.arange(T).expand(n_seq, T)
    return x.reshape(-1, d), position.reshape(-1)


def test_rule_keeps_ordinary_tokens_only():
    x, pos = _sink_data()
    keep = ExclusionRule().keep_mask(x, pos)
    assert not keep[pos == 0].any()
    assert not keep[16 * 37 + 1]  # the massive position-1 token
    assert keep[(pos != 0) & (x.norm(dim=-1) < 50)].all()
    # Position 0 goes even when its norm is ordinary; the norm test alone spares it then.
    small = torch.randn(8, 4)
    p = torch.arange(8) % 4
    assert ExclusionRule().keep_mask(small, p).tolist() == (p != 0).tolist()
    assert ExclusionRule(first_position=False).keep_mask(small, p).all()
    assert ExclusionRule.none().keep_mask(x, pos).all()


def test_rule_round_trips_and_validates():
    r = ExclusionRule(norm_ratio=25.0)
    assert ExclusionRule.from_dict(r.to_dict()) == r
    assert ExclusionRule.from_dict(None) == ExclusionRule()  # SAEs/stores from before the rule
    with pytest.raises(InterplabError, match="norm_ratio"):
        ExclusionRule(norm_ratio=0.5)
    with pytest.raises(InterplabError, match="unknown fields"):
        ExclusionRule.from_dict({"first_position": True, "ratio": 3})
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.norm_ratio = 3.0  # type: ignore[misc]


def test_split_metrics_headline_ordinary_tokens_all_tokens_beside():
    x, pos = _sink_data()
    # An SAE that reconstructs only the sink direction: all-token FVE looks excellent because
    # the few massive rows carry most of the variance; on ordinary tokens it explains ~nothing.
    d = x.shape[1]
    sae = identity_sae(d)
    u = x[0] / x[0].norm()
    with torch.no_grad():
        proj = torch.outer(u, u)
        sae.W_dec.copy_(torch.cat([proj, -proj], 0))
    res = evaluate_reconstruction_split(sae, zip(x.split(512), pos.split(512), strict=True))
    keep = torch.cat([ExclusionRule().keep_mask(a, b)
                      for a, b in zip(x.split(512), pos.split(512), strict=True)])
    want = reconstruction_metrics(x[keep], sae(x[keep]))
    assert res.ordinary.n_tokens == int(keep.sum())
    assert res.ordinary.fraction_of_variance_explained == pytest.approx(
        want.fraction_of_variance_explained, abs=1e-9)
    assert res.all_tokens.n_tokens == x.shape[0]
    assert res.exclusion["n_excluded"] == x.shape[0] - int(keep.sum()) >= 200
    assert res.all_tokens.fraction_of_variance_explained > 0.9
    assert res.ordinary.fraction_of_variance_explained < 0.2
    d = res.to_dict()
    assert set(d) == {"ordinary_tokens", "all_tokens", "exclusion"}


def _train_scale(x, seed, normalise=True):
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    batches = list(x[perm].split(256))
    t = SAETrainer([SAEConfig("topk", x.shape[1], 32, k=2)],
                   TrainerConfig(total_steps=2, log_every_steps=0,
                                 normalise_activations=normalise))
    t.fit(batches)
    return t


def test_input_scale_is_the_same_for_two_shuffles_of_the_same_data():
    x, pos = _sink_data(n_seq=2000)
    x = x[pos != 0]  # position 0 removed upstream; the occasional massive token remains
    a, b = _train_scale(x, seed=1), _train_scale(x, seed=3)
    # Old behaviour (first batch only) gave scales that depend on how many massive rows the
    # first batch happened to hold; now it is estimated on many batches of ordinary rows.
    assert a.scale == pytest.approx(b.scale, rel=1e-3)
    ordinary = x[x.norm(dim=-1) < 50]
    want = (x.shape[1] / ordinary.pow(2).sum(-1).mean()) ** 0.5
    assert a.scale == pytest.approx(float(want), rel=0.02)
    sae = a.finalized_saes()[0]
    assert sae.config.normalisation_scale == a.scale
    assert sae.config.normalisation_tokens == a.scale_tokens > 0.99 * x.shape[0]
    # Control: the first batches of the two shuffles do hold different numbers of massive rows,
    # and a first-batch estimate therefore differs by far more than the tolerance above.
    firsts = []
    for seed in (1, 3):
        perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
        first = x[perm][:256]
        firsts.append(float((x.shape[1] / first.pow(2).sum(-1).mean()) ** 0.5))
    assert abs(firsts[0] - firsts[1]) / firsts[0] > 0.05


def test_count_reports_fraction():
    c = ExclusionCount()
    c.add(torch.tensor([True, False, True, True]))
    assert c.to_dict() == {"n_seen": 4, "n_excluded": 1, "fraction_excluded": 0.25}


@pytest.fixture(scope="module")
def lm():
    from interplab.models import load

    return load("tiny-llama", seed=0)


def test_mixing_buffer_leaves_out_position_zero_without_bos(lm):
    from interplab.activations import Positions, harvest_tokens
    from interplab.sae.buffer import MixingBuffer

    g = torch.Generator().manual_seed(0)
    toks = torch.randint(5, lm.tokenizer.vocab_size - 1, (6, 12), generator=g)
    no_bos = -1  # no token is a BOS here: position 0 must still be left out
    rows = torch.cat(list(MixingBuffer(lm, HOOK, toks, batch_size=2, buffer_tokens=8,
                                       bos_token_id=no_bos)))
    first = harvest_tokens(lm, toks.tolist(), HOOK, Positions.parse("index:0"),
                           progress=False)[HOOK]
    match = (rows[:, None, :] - first[None].float()).abs().amax(-1) < 1e-5
    assert not match.any()
    # Control: with no exclusion the position-0 rows are handed out.
    buf = MixingBuffer(lm, HOOK, toks, batch_size=2, buffer_tokens=8, bos_token_id=no_bos,
                       exclusion=ExclusionRule.none())
    rows_all = torch.cat(list(buf))
    assert ((rows_all[:, None, :] - first[None].float()).abs().amax(-1) < 1e-5).any()
    assert rows_all.shape[0] == toks.numel() and buf.exclusion_count.n_excluded == 0


def test_store_for_sae_training_records_rule_and_drops_rows(tmp_path, lm):
    from interplab.activations import ActivationStore, harvest_to_store

    texts = ["The cat sat on the mat.", "Bees dance in the sun all day.", "One two three four."]
    plain = harvest_to_store(lm, texts, HOOK, tmp_path / "plain", "all", progress=False)
    sae_store = harvest_to_store(lm, texts, HOOK, tmp_path / "sae", "all", progress=False,
                                 exclusion=ExclusionRule())
    assert plain.manifest["sae_exclusion"] is None
    assert (plain.metadata()["position"] == 0).sum() == len(texts)
    m = json.loads((tmp_path / "sae" / "manifest.json").read_text())
    assert m["sae_exclusion"] == {"first_position": True, "norm_ratio": 10.0}
    assert (sae_store.metadata()["position"] != 0).all()
    count = m["sae_exclusion_count"]
    assert count["n_seen"] == plain.n_rows
    assert count["n_excluded"] == plain.n_rows - sae_store.n_rows >= len(texts)
    assert ActivationStore(tmp_path / "sae").complete


def test_store_batches_carry_their_positions(tmp_path, lm):
    from interplab.activations import harvest_to_store

    texts = ["The cat sat on the mat.", "Bees dance in the sun all day.", "One two three four."]
    st = harvest_to_store(lm, texts, HOOK, tmp_path / "s", "all", progress=False,
                          rows_per_shard=7)
    full, meta_pos = st.load().float(), st.metadata()["position"]
    where = {tuple(np.round(r.numpy(), 5)): int(p) for r, p in zip(full, meta_pos, strict=True)}
    seen = 0
    for x, p in st.iter_batches(5, with_position=True, seed=3):
        for row, pp in zip(x, p, strict=True):
            assert where[tuple(np.round(row.numpy(), 5))] == int(pp)
        seen += x.shape[0]
    assert seen == st.n_rows


def test_cli_eval_ce_uses_the_held_out_slice(lm):
    from interplab.datasets.corpus import corpus_split as _corpus_split
    from interplab.datasets.corpus import corpus_tokens as _corpus_tokens

    train, _ = _corpus_split("python-docs", "train")
    held, desc = _corpus_split("python-docs", "held_out")
    assert not set(train) & set(held) and "never uses" in desc
    a, _ = _corpus_tokens(lm, "python-docs", 16, 8, part="train")
    b, _ = _corpus_tokens(lm, "python-docs", 16, 8, part="held_out")
    # The held-out sequences are packed from the held-out documents only (the corpus has some
    # repeated lines, e.g. rows of asterisks, so compare against the documents themselves).
    from interplab.datasets.corpus import pack_tokens

    assert torch.equal(b, pack_tokens(held, lm.tokenizer, 16, bos="each",
                                      bos_token_id=lm.bos_token_id, max_sequences=8))
    assert not torch.equal(a[: len(b)], b)
    # Control: the whole corpus starts with the training sequences, which eval used before.
    c, _ = _corpus_tokens(lm, "python-docs", 16, 8)
    assert torch.equal(a, c)


def test_cli_train_records_the_rule_and_can_switch_it_off(tmp_path, lm):
    from interplab.activations import harvest_to_store
    from interplab.cli.main import main
    from interplab.sae import load_sae

    texts = ["The cat sat on the mat and looked at the rain outside."] * 6
    store = harvest_to_store(lm, texts, HOOK, tmp_path / "s", "all", progress=False)
    for extra, want in (([], ExclusionRule()), (["--no-exclusion"], ExclusionRule.none())):
        out = tmp_path / f"o{len(extra)}"
        rc = main(["sae", "train", "--store", str(store.path), "--hook", HOOK, "--width", "64",
                   "--k", "2", "--steps", "3", "--batch-size", "16", "--out", str(out), *extra])
        assert rc == 0
        cfg = load_sae(out / "topk_w64_k2").config
        assert ExclusionRule.from_dict(cfg.exclusion) == want


@pytest.mark.embedded
def test_embedded_position_zero_never_enters_fve_by_default(tmp_path, smollm):
    """On SmolLM2-135M position 0 has a massive norm; the default headline must leave it out."""
    from interplab.activations import harvest_to_store
    from interplab.cli.main import main
    from interplab.datasets.corpus import load_corpus, pack_tokens
    from interplab.sae import save_sae

    hook = "blocks.15.hook_resid_post"
    eos = smollm.tokenizer.eos_token_id
    toks = pack_tokens(load_corpus("kjv"), smollm.tokenizer, 32, bos="each", bos_token_id=eos,
                       max_sequences=12)
    st = harvest_to_store(smollm, None, hook, tmp_path / "s", "all", token_ids=toks.tolist(),
                          progress=False)
    x = st.load().float()
    pos = torch.from_numpy(st.metadata()["position"])
    norms = x.norm(dim=-1)
    assert norms[pos == 0].min() > 10 * norms[pos != 0].median()  # the phenomenon is real
    sae = create_sae(SAEConfig("topk", smollm.d_model, 2 * smollm.d_model, k=8, hook=hook,
                               seed=0)).eval()
    save_sae(sae, tmp_path / "sae")
    rc = main(["sae", "eval", "--sae", str(tmp_path / "sae"), "--store", str(st.path),
               "--out", str(tmp_path / "m.json")])
    assert rc == 0
    rec = json.loads((tmp_path / "m.json").read_text())["reconstruction"]
    keep = ExclusionRule().keep_mask(x, pos)
    assert not keep[pos == 0].any()
    want = reconstruction_metrics(x[keep], sae(x[keep]))
    head = rec["ordinary_tokens"]
    assert head["n_tokens"] == int(keep.sum()) <= int((pos != 0).sum())
    assert head["fraction_of_variance_explained"] == pytest.approx(
        want.fraction_of_variance_explained, abs=1e-6)
    # Control: with position 0 in, the FVE is a different number.
    with_0 = reconstruction_metrics(x, sae(x)).fraction_of_variance_explained
    assert abs(with_0 - head["fraction_of_variance_explained"]) > 0.01
