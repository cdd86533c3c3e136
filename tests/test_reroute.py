"""Representation rerouting vs LoRA + probe vs a probe: defences, attacks, data, the study."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from interplab.errors import InterplabError

LAYERS = [1, 2]


@pytest.fixture
def lm():
    from interplab.models import load

    return load("tiny-llama", seed=0)


def _planted(lm, n_per_class: int = 40, seed: int = 0):
    """Requests whose label is a planted word, "zebra" (unwanted) or "table" (acceptable), said
    twice between two runs of three random filler words (which carry most of the variance, so
    a probe fitted on shuffled labels finds no label direction by accident)."""
    rng = np.random.default_rng(seed)
    words = ["please", "tell", "me", "about", "this", "today", "now", "quickly", "here", "more", "the", "of", "and", "house", "river", "light", "stone", "green", "water", "small", "old", "city", "road"]
    texts, labels = [], []
    for i in range(2 * n_per_class):
        label = i % 2
        word = "zebra" if label else "table"
        before, after = (" ".join(rng.choice(words, size=3)) for _ in range(2))
        texts.append(f"{before} {word} {word} {after}.")
        labels.append(label)
    return lm.tokenize(texts), np.array(labels)


def _texts(tokens, y, neutral):
    from interplab.defences.train import TrainTexts

    return TrainTexts([t for t, v in zip(tokens, y, strict=True) if v == 1],
                      [t for t, v in zip(tokens, y, strict=True) if v == 0], neutral)


def _neutral(lm, n: int = 12, width: int = 24):
    from interplab.datasets.corpus import load_corpus

    docs = load_corpus("kjv").documents
    return [lm.tokenizer(d[:400])["input_ids"][:width] for d in docs[:n]]


def _settings(**kw):
    from interplab.defences.settings import TrainSettings

    return TrainSettings(**{"steps": 30, "lr": 3e-3, "train_batch": 8, "neutral_batch": 4, **kw})


# ---------------------------------------------------------------------------------- training
def test_retain_loss_alone_brings_a_perturbed_adapter_back_to_the_model(lm):
    from interplab.defences.lora import AdapterHost
    from interplab.defences.retain import retain_effects
    from interplab.defences.train import BaseCache, train_adapter

    tokens, y = _planted(lm)
    neutral = _neutral(lm)
    texts = _texts(tokens, y, neutral[:8])
    host = AdapterHost(lm, LAYERS, rank=4, lora_alpha=16)
    cache = BaseCache(host, texts, LAYERS, max(LAYERS))
    host.add("a", seed=0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in host.parameters("a").items():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    before = retain_effects(host, ["a"], neutral[8:])["a"]
    assert abs(before["delta_ce"].mean()) > 0.05 and before["kl"].mean() > 0.05
    train_adapter(host, "a", "retain", texts, cache, layers=LAYERS, head_layer=2,
                  settings=_settings(steps=80, lr=5e-3), seed=0)
    after = retain_effects(host, ["a"], neutral[8:])["a"]
    assert abs(after["delta_ce"].mean()) < 0.02
    assert after["kl"].mean() < 0.1 * before["kl"].mean()


def test_rerouting_pushes_training_requests_orthogonal_and_keeps_the_rest(lm):
    from interplab.defences.inputs import pack, residuals
    from interplab.defences.lora import AdapterHost
    from interplab.defences.train import BaseCache, train_adapter

    tokens, y = _planted(lm)
    texts = _texts(tokens, y, _neutral(lm)[:8])
    host = AdapterHost(lm, LAYERS, rank=4, lora_alpha=16)
    cache = BaseCache(host, texts, LAYERS, max(LAYERS))
    host.add("rr", seed=0)

    def mean_cos(lists):
        inputs = pack(lm, lists)
        with torch.no_grad():
            with host.active("rr"):
                h = residuals(lm, inputs, LAYERS)
            with host.disabled():
                h0 = residuals(lm, inputs, LAYERS)
        cos = torch.nn.functional.cosine_similarity(h[2], h0[2], dim=-1)
        return float(cos[inputs.scored].mean())

    assert mean_cos(texts.unwanted) > 0.999  # B = 0: the adapter starts as the identity
    out = train_adapter(host, "rr", "rr", texts, cache, layers=LAYERS, head_layer=2,
                        settings=_settings(steps=60), seed=0)
    assert out.history[-1]["main"] < 0.5 * out.history[0]["main"]
    cos_unwanted, cos_acceptable = mean_cos(texts.unwanted), mean_cos(texts.acceptable)
    assert cos_unwanted < 0.5
    assert cos_acceptable > cos_unwanted + 0.3, (cos_acceptable, cos_unwanted)


def test_rr_and_lora_probe_train_exactly_the_same_adapters(lm):
    from interplab.defences.lora import AdapterHost

    host = AdapterHost(lm, LAYERS, rank=4, lora_alpha=16)
    for name in ("rr", "lp", "other"):
        host.add(name, seed=0 if name != "other" else 1)
    rr, lp, other = (host.parameters(n) for n in ("rr", "lp", "other"))
    assert list(rr) == list(lp) and len(rr) == 2 * 7 * 3  # A and B of 7 linears in blocks 0-2
    assert all(torch.equal(rr[k], lp[k]) for k in rr)  # same initialisation
    assert not all(torch.equal(rr[k], other[k]) for k in rr)  # the seed matters
    assert host.n_parameters("rr") == host.n_parameters("lp") == sum(p.numel() for p in rr.values())
    with host.active("lp"):
        trainable = {n for n, p in lm.hf.named_parameters() if p.requires_grad}
    assert len(trainable) == len(lp) and all(".lp." in n for n in trainable)


def test_merged_adapters_give_the_unmerged_outputs(lm):
    from interplab.defences.lora import AdapterHost

    host = AdapterHost(lm, LAYERS, rank=4, lora_alpha=16)
    host.add("a", seed=0)
    with torch.no_grad():
        for name, p in host.parameters("a").items():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    ids = lm.tokenizer(["The cat sat on the mat.", "Tell me about the zebra."],
                       return_tensors="pt", padding=True)
    with torch.no_grad(), host.active("a"):
        unmerged = lm.hf(**ids).logits
        with host.merged("a"):
            merged = lm.hf(**ids).logits
    with torch.no_grad(), host.disabled():
        base = lm.hf(**ids).logits
    assert (unmerged - base).abs().max() > 0.1  # the adapter does something
    torch.testing.assert_close(merged, unmerged, atol=1e-4, rtol=1e-4)


def test_an_interrupted_run_resumes_to_the_same_adapter(lm, tmp_path):
    from interplab.defences.lora import AdapterHost
    from interplab.defences.train import BaseCache, train_adapter

    tokens, y = _planted(lm)
    texts = _texts(tokens, y, _neutral(lm)[:8])
    host = AdapterHost(lm, LAYERS, rank=4, lora_alpha=16)
    cache = BaseCache(host, texts, LAYERS, max(LAYERS))
    settings = _settings(steps=12, checkpoint_every=5)
    kw = dict(layers=LAYERS, head_layer=2, settings=settings, seed=3)
    host.add("whole", seed=3)
    whole = train_adapter(host, "whole", "lp", texts, cache, **kw)

    host.add("cut", seed=3)
    calls = []

    def stop_after_seven():
        calls.append(1)
        if len(calls) == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_adapter(host, "cut", "lp", texts, cache, checkpoint_dir=tmp_path,
                      fingerprint={"x": 1}, on_step=stop_after_seven, **kw)
    assert json.loads((tmp_path / "cut.json").read_text())["step"] == 5
    host.add("cut-again", seed=99)  # a fresh adapter, loaded from the checkpoint
    # the checkpoint names the adapter "cut": point the new run at it
    (tmp_path / "cut.json").rename(tmp_path / "cut-again.json")
    (tmp_path / "cut.safetensors").rename(tmp_path / "cut-again.safetensors")
    resumed = train_adapter(host, "cut-again", "lp", texts, cache, checkpoint_dir=tmp_path,
                            fingerprint={"x": 1}, **kw)
    assert resumed.resumed_from == 5 and len(resumed.history) == 12
    for k, p in host.parameters("whole").items():
        torch.testing.assert_close(host.parameters("cut-again")[k], p, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(resumed.head_w, whole.head_w, atol=1e-6, rtol=1e-5)
    again = train_adapter(host, "cut-again", "lp", texts, cache, checkpoint_dir=tmp_path,
                          fingerprint={"x": 1}, **kw)
    assert again.loaded
    with pytest.raises(InterplabError, match="another run"):
        train_adapter(host, "cut-again", "lp", texts, cache, checkpoint_dir=tmp_path,
                      fingerprint={"x": 2}, **kw)


# ---------------------------------------------------------------------------------- detection
def _all_defences(lm, tokens, y, train, seed=0, steps=40):
    from interplab.defences.detectors import LoraProbeDetector, RerouteDetector
    from interplab.defences.heads import fit_mlp, fit_probe, matched_width, pooled_features
    from interplab.defences.lora import AdapterHost
    from interplab.defences.train import BaseCache, train_adapter

    texts = _texts([tokens[i] for i in train], y[train], _neutral(lm)[:8])
    X = pooled_features(lm, tokens, [2])[("mean", 2)]
    hp = fit_probe(X[train], y[train], name="hp", layer=2, pooling="mean")
    host = AdapterHost(lm, LAYERS, rank=4, lora_alpha=16)
    cache = BaseCache(host, texts, LAYERS, 2)
    dets = [hp]
    for kind in ("rr", "lp"):
        name = f"{kind}-{seed}"
        host.add(name, seed)
        o = train_adapter(host, name, kind, texts, cache, layers=LAYERS, head_layer=2,
                          settings=_settings(steps=steps), seed=seed)
        if kind == "rr":
            dets.append(RerouteDetector(name="rr", adapter=name, layers=LAYERS,
                                        n_adapter_parameters=host.n_parameters(name)))
        else:
            dets.append(LoraProbeDetector(name="lp", adapter=name, layer=2, scale=o.head_scale,
                                          w=o.head_w.detach(), b=o.head_b.detach(),
                                          n_adapter_parameters=host.n_parameters(name)))
    dets.append(fit_mlp(X[train], y[train], hidden=matched_width(dets[2].n_parameters, 64),
                        seed=seed, name="mlp", layer=2))
    return host, dets


def test_a_planted_concept_is_read_and_shuffled_labels_are_not(lm):
    from interplab.controls.detection import auroc
    from interplab.defences.detectors import score_texts

    tokens, y = _planted(lm, n_per_class=80)
    train, test = np.arange(0, 96), np.arange(96, 160)
    host, dets = _all_defences(lm, tokens, y, train)
    scores = score_texts(host, dets, [tokens[i] for i in test])
    assert auroc(scores["hp"], y[test]) > 0.97
    assert auroc(scores["lp"], y[test]) > 0.9
    assert auroc(scores["rr"], y[test]) > 0.9
    # the parameter counts: RR = adapters, LoRA + probe = adapters + d + 1, the MLP ≈ the latter
    assert dets[2].n_parameters == dets[1].n_parameters + 65
    assert abs(dets[3].n_parameters - dets[2].n_parameters) <= 66

    # Shuffled so that the new labels are uncorrelated with the true ones on the training rows
    # (half of each true class gets each label): a plain permutation keeps a chance correlation
    # of about ±0.1 that a strong planted signal amplifies.
    rng = np.random.default_rng(5)
    shuffled = y.copy()
    for c in (0, 1):
        rows = rng.permutation(train[y[train] == c])
        shuffled[rows[: len(rows) // 2]], shuffled[rows[len(rows) // 2:]] = 1, 0
    assert np.corrcoef(shuffled[train], y[train])[0, 1] == pytest.approx(0, abs=1e-9)
    host, dets = _all_defences(lm, tokens, shuffled, train, seed=1)
    scores = score_texts(host, dets, [tokens[i] for i in test])
    shuffled_auroc = {name: auroc(s, y[test]) for name, s in scores.items()}
    assert all(abs(a - 0.5) < 0.2 for a in shuffled_auroc.values()), shuffled_auroc


# ---------------------------------------------------------------------------------- attacks
def _planted_hp(lm):
    from interplab.defences.heads import fit_probe, pooled_features
    from interplab.defences.lora import AdapterHost

    tokens, y = _planted(lm, n_per_class=30)
    X = pooled_features(lm, tokens, [2])[("mean", 2)]
    hp = fit_probe(X, y, name="hp", layer=2, pooling="mean")
    host = AdapterHost(lm, LAYERS, rank=4, lora_alpha=16)
    unwanted = [t for t, v in zip(tokens, y, strict=True) if v == 1][:12]
    return host, hp, unwanted


def test_an_attack_with_zero_budget_changes_nothing(lm):
    from interplab.defences.attacks import embedding_attack, token_attack
    from interplab.defences.detectors import score_texts

    host, hp, unwanted = _planted_hp(lm)
    clean = score_texts(host, [hp], unwanted)["hp"]
    assert (clean > 0).mean() > 0.9  # flagged before any attack
    no_norm = embedding_attack(host, hp, unwanted, steps=5, norm=0.0)
    no_steps = embedding_attack(host, hp, unwanted, steps=0, norm=1.0)
    np.testing.assert_allclose(no_norm, np.tile(clean, (6, 1)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(no_steps[0], clean, rtol=1e-5, atol=1e-5)
    tokens_zero, attacked = token_attack(host, hp, unwanted, candidates=[5, 6], n_tokens=0)
    np.testing.assert_allclose(tokens_zero[0], clean)
    assert attacked == [list(t) for t in unwanted]
    some = embedding_attack(host, hp, unwanted, steps=5, norm=0.5)
    assert (some[-1] < clean - 1e-3).all()  # a budget lowers every score


def test_attack_success_grows_with_the_budget_on_a_planted_case(lm):
    from interplab.defences.attacks import embedding_attack, token_attack

    host, hp, unwanted = _planted_hp(lm)
    rates = []
    for norm in (0.0, 0.02, 0.05, 0.1, 0.2, 0.4):
        best = embedding_attack(host, hp, unwanted, steps=10, norm=norm)
        assert (np.diff(best, axis=0) <= 1e-9).all()  # best so far, step by step
        rates.append(float((best[-1] <= 0).mean()))  # below the probe's threshold: passes
    assert rates[0] == 0.0 and rates[-1] == 1.0
    assert all(b >= a for a, b in zip(rates, rates[1:], strict=False)), rates
    cands = lm.tokenizer(" table table the a", add_special_tokens=False)["input_ids"]
    curve, _ = token_attack(host, hp, unwanted, candidates=list(dict.fromkeys(cands)),
                            n_tokens=3)
    passing = (curve <= 0).mean(axis=1)
    assert (np.diff(curve, axis=0) <= 1e-9).all() and (np.diff(passing) >= 0).all()
    assert curve[-1].mean() < curve[0].mean()


# ---------------------------------------------------------------------------------- statistics
def test_auroc_and_tpr_at_fpr_match_their_definitions():
    from sklearn.metrics import roc_auc_score

    from interplab.controls.detection import auroc, threshold_at_fpr, tpr_at_fpr

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = rng.normal(size=200) + y + rng.integers(0, 3, 200)  # ties too
    assert auroc(s, y) == pytest.approx(roc_auc_score(y, s))
    np.testing.assert_allclose(auroc(np.stack([s, -s]), y), [roc_auc_score(y, s),
                                                              roc_auc_score(y, -s)])
    neg = np.arange(100.0)
    assert threshold_at_fpr(neg, 0.01) == 98.0 and threshold_at_fpr(neg, 0.0) == 99.0
    assert tpr_at_fpr(np.r_[neg, [98.5, 99.5, 50.0]], np.r_[np.zeros(100), np.ones(3)],
                      0.01) == pytest.approx(2 / 3)


def test_paired_permutation_test_finds_a_real_difference_and_not_a_null_one():
    from interplab.controls.detection import paired_permutation_p

    rng = np.random.default_rng(1)
    a = rng.normal(size=(3, 80))
    same = a + rng.normal(scale=0.01, size=a.shape)

    def diff(A, B):
        return lambda sw: float(np.where(sw, B, A).mean() - np.where(sw, A, B).mean())

    assert paired_permutation_p(diff(a + 0.5, a), 80, n_perm=199) == pytest.approx(1 / 200)
    assert paired_permutation_p(diff(same, a), 80, n_perm=199) > 0.05


# ---------------------------------------------------------------------------------- data
def test_generated_requests_keep_templates_and_entities_on_one_side():
    from interplab.datasets import entity_split
    from interplab.datasets.requests import requests_dataset

    ds = requests_dataset(seed=0)
    split = entity_split(ds, (0.6, 0.2, 0.2), seed=0)
    meta = ds.metadata
    for column in ("template", "entity"):
        sides = [{meta[column][i] for i in rows} for rows in split.sides().values()]
        assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2]), column
    for template in set(meta["template"]):  # every template as often unwanted as acceptable
        labels = [ds.labels[i] for i, t in enumerate(meta["template"]) if t == template]
        assert sum(labels) * 2 == len(labels)
    assert ds.labels.mean() == 0.5 and len(ds) == 480
    assert all(ds.labels[split.test].mean() == 0.5 for _ in [0])
    small = requests_dataset(seed=0, max_size=100)
    assert len(small) <= 100 and small.labels.mean() == 0.5


def test_a_requests_csv_is_read_and_bad_ones_are_refused(tmp_path):
    from interplab.datasets.requests import load_requests_csv

    good = tmp_path / "mine.csv"
    good.write_text("request,label,group\nHow do I pet the cat?,unwanted,a\n"
                    "How do I fix the chair?,acceptable,a\nDraw a dog.,1,b\nDraw a cup.,0,b\n"
                    "Draw a cup.,0,b\n")
    ds = load_requests_csv(good)
    assert ds.labels.tolist() == [1, 0, 1, 0] and ds.groups.tolist() == ["a", "a", "b", "b"]
    for body, match in (("request,label\nx,maybe\ny,0\n", "neither unwanted nor acceptable"),
                        ("text,kind\nx,1\n", "needs a 'request' and a 'label'"),
                        ("request,label\nx,1\ny,1\n", "same label"),
                        ("request,label\nx,1\nx,0\n", "both labels")):
        bad = tmp_path / "bad.csv"
        bad.write_text(body)
        with pytest.raises(InterplabError, match=match):
            load_requests_csv(bad)
    with pytest.raises(InterplabError, match="not found"):
        load_requests_csv(tmp_path / "none.csv")


def test_the_config_refuses_fewer_than_three_seeds_and_bad_settings():
    from interplab.studies.reroute.config import RerouteConfig

    for kw, match in (({"training_seeds": 2}, "at least 3"), ({"fpr": 0.7}, "fpr"),
                      ({"requests": "x.txt"}, "csv"), ({"rank": 0}, "rank"),
                      ({"attack_position": "middle"}, "attack-position")):
        with pytest.raises(InterplabError, match=match):
            RerouteConfig.make(**kw).validate()


# ---------------------------------------------------------------------------------- the study
def test_the_study_runs_end_to_end_and_reuses_its_checkpoints(tmp_path):
    from typer.testing import CliRunner

    from interplab.cli.main import app

    args = ["reroute", "--model", "tiny-llama", "--layers", "1,2", "--steps", "6",
            "--n-boot", "100", "--n-perm", "99", "--threads", "1", "--attack-examples", "6",
            "--embed-steps", "2", "--token-positions", "1", "--token-candidates", "3",
            "--neutral-train", "8", "--neutral-eval", "4", "--neutral-tokens", "24",
            "--max-per-dataset", "300", "--quiet", "--out", str(tmp_path / "a")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "RR vs LoRA + probe with the same" in res.output and "Controls" in res.output
    saved = json.loads((tmp_path / "a" / "reroute.json").read_text())
    assert saved["study"] == "reroute" and saved["training"]["same_adapters"][
        "same_names_and_shapes"]
    head = {r["metric"] for r in saved["headline"]}
    assert {"auroc", "tpr_1pct", "embed_pass", "token_pass", "delta_ce", "kl"} <= head
    rr, lp = saved["defences"]["rr"], saved["defences"]["lp"]
    assert lp["parameters"]["trainable"] == rr["parameters"]["trainable"] + 65
    assert len(rr["auroc"]["per_seed"]) == 3 and rr["auroc"]["lo"] <= rr["auroc"]["hi"]
    assert saved["defences"]["hp"]["delta_ce"]["value"] == 0.0
    q = [r["q"] for r in saved["comparisons"]]
    assert len(q) > 10 and all(0 <= x <= 1 for x in q)
    html = (tmp_path / "a" / "report.html").read_text()
    assert "LoRA + probe" in html and "data:image/png;base64" in html
    # the summary and the headline figure open the page; the summary's verdicts carry q alone
    from tests.pages import check_tables_align, check_top_of_page

    assert check_tables_align(html) >= 4 and not [s for s in saved["summary"] if " p = " in s]
    check_top_of_page(tmp_path / "a" / "report.html", tmp_path)
    assert len(list((tmp_path / "a" / "checkpoints").glob("*.safetensors"))) == 6
    # user text is escaped in the report
    from interplab.report.reroute import write_reroute_report

    saved["data"]["examples"]["unwanted"][0] = "<script>alert(1)</script> costs $5 and $6"
    page = write_reroute_report(saved, tmp_path / "escaped.html").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)" in page
    # again into the same folder: every adapter is loaded, not trained, with the same numbers
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    again = json.loads((tmp_path / "a" / "reroute.json").read_text())
    assert len(again["training"]["resumed"]) == 6
    assert again["comparisons"] == saved["comparisons"]
