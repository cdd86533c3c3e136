"""`interplab sae train|eval|dashboard` end to end on a tiny model; dashboards escape all text."""

from __future__ import annotations

import json
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from interplab.cli.main import main  # noqa: E402
from interplab.datasets.corpus import load_corpus, pack_tokens  # noqa: E402

HOOK = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def lm():
    from interplab.models import load

    return load("tiny-llama", seed=0)


@pytest.fixture(scope="module")
def store(tmp_path_factory, lm):
    from interplab.activations import harvest_to_store

    texts = [d[:150] for d in load_corpus("python-docs").documents[:40]]
    out = tmp_path_factory.mktemp("store") / "acts"
    harvest_to_store(lm, texts, [HOOK], out, "all", batch_size=8)
    return out


def test_train_eval_dashboard_round_trip(tmp_path, store):
    out = tmp_path / "saes"
    rc = main(["sae", "train", "--store", str(store), "--hook", HOOK, "--arch", "topk,relu",
               "--k", "4", "--sparsity", "0.5", "--width", "128", "--steps", "30",
               "--batch-size", "64", "--lr-warmup", "5", "--sparsity-warmup", "5",
               "--log-every", "10", "--out", str(out)])
    assert rc == 0
    assert (out / "topk_w128_k4" / "config.json").exists()
    assert (out / "relu_w128_l0.5" / "weights.safetensors").exists()
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 30 and len(log[-1]["saes"]) == 2

    metrics = tmp_path / "m.json"
    rc = main(["sae", "eval", "--sae", str(out / "topk_w128_k4"), "--store", str(store),
               "--model", "tiny-llama", "--context-lengths", "8,16", "--n-sequences", "4",
               "--corpus", "python-docs", "--out", str(metrics)])
    assert rc == 0
    res = json.loads(metrics.read_text())
    rec = res["reconstruction"]
    assert 0 < rec["ordinary_tokens"]["fraction_of_variance_explained"] <= 1
    # Headline on ordinary tokens, all tokens beside it; position 0 of each of the 40 texts is out.
    excl = rec["exclusion"]
    assert excl["n_excluded"] >= 40 and excl["first_position"] and excl["norm_ratio"] == 10
    assert rec["ordinary_tokens"]["n_tokens"] == rec["all_tokens"]["n_tokens"] - excl["n_excluded"]
    assert res["config"]["exclusion"] == {"first_position": True, "norm_ratio": 10.0}
    assert [r["context_length"] for r in res["ce"]["results"]] == [8, 16]
    assert "held out" in res["ce"]["data"] or "never uses" in res["ce"]["data"]

    html = tmp_path / "dash.html"
    rc = main(["sae", "dashboard", "--sae", str(out / "topk_w128_k4"), "--model", "tiny-llama",
               "--out", str(html), "--n-features", "3", "--n-sequences", "6",
               "--context-length", "32", "--corpus", "python-docs"])
    assert rc == 0
    text = html.read_text()
    assert text.count('class="feature"') == 3 and "data:image/png;base64," in text
    assert "http://" not in text and "https://" not in text  # self-contained
    # The page names its text (held out by default) and the rule that left tokens out.
    from interplab.datasets.corpus import corpus_split

    held = corpus_split("python-docs", "held_out")[1]
    flat = " ".join(text.split())
    assert "6 sequences of 32 tokens" in flat and held.split(" (")[0] in flat
    assert "position 0 and ‖x‖ &gt; 10 × batch median" in flat
    assert "spread evenly over the density range" in flat


@pytest.mark.parametrize("args, message", [
    (["--arch", "relux"], "unknown architecture"),
    (["--arch", "topk", "--k", "999", "--width", "128"], "larger than the SAE width"),
    (["--hook", "blocks.0.hook_mlp_out"], "not in the store"),
])
def test_train_errors_are_clear(tmp_path, store, capsys, args, message):
    rc = main(["sae", "train", "--store", str(store), "--out", str(tmp_path / "x"), *args])
    assert rc == 2
    assert message in capsys.readouterr().err.replace("\n", " ")


def test_dashboard_escapes_corpus_text(tmp_path, lm):
    from interplab.report.sae_dashboard import render_dashboard
    from interplab.sae import SAEConfig, create_sae
    from interplab.sae.dashboard import feature_dashboards

    evil = "<script>alert('x')</script> & <b>bold</b> " * 6
    ids = lm.tokenizer(evil, add_special_tokens=False)["input_ids"]
    toks = torch.tensor([ids[:40], ids[5:45]])
    sae = create_sae(SAEConfig("relu", lm.d_model, 32, seed=1)).eval()
    data = feature_dashboards(lm, sae, HOOK, toks, n_features=4)
    assert len(data.features) == 4
    f = data.features[0]
    assert f.top_contexts and 0 < f.density <= 1 and len(f.promoted) == 8
    assert f.top_contexts[0]["activation"] == pytest.approx(f.max_activation)
    path = render_dashboard(data, tmp_path / "d.html")
    html = path.read_text()
    assert "<script" not in html.lower() and "<b>bold" not in html
    assert "&lt;" in html  # the text is there, escaped
    # Control: the corpus text really contained markup that an unescaped page would execute.
    assert any("<" in t for c in f.top_contexts for t in c["tokens"]) or "&lt;" in html


def test_dashboard_reports_its_model_pass_batch_by_batch(lm):
    """After the model loads, the dashboard's work shows as it goes: the feature pass advances
    once per batch of sequences, the contexts once per feature (``sae dashboard`` was silent for
    half a minute there)."""
    from interplab.sae import SAEConfig, create_sae
    from interplab.sae.dashboard import feature_dashboards
    from tests.test_progress import _Sink

    toks = pack_tokens(load_corpus("python-docs").documents[:6], lm.tokenizer, 16, bos="each",
                       bos_token_id=1, max_sequences=20)
    sae = create_sae(SAEConfig("relu", lm.d_model, 32, seed=1)).eval()
    sink = _Sink()
    data = feature_dashboards(lm, sae, HOOK, toks, n_features=3, batch_size=6, progress=sink)
    feats, contexts = sink.tasks.values()
    assert feats["total"] == toks.shape[0] == sum(feats["steps"])
    assert feats["steps"] == [6, 6, 6, toks.shape[0] - 18]  # one step per batch
    assert contexts["total"] == len(data.features) == len(contexts["steps"]) == 3


def test_pack_tokens_bos_handling(lm):
    docs = ["one two three four five six seven", "eight nine ten eleven twelve"]
    each = pack_tokens(docs, lm.tokenizer, 5, bos="each", bos_token_id=1)
    assert (each[:, 0] == 1).all() and each.shape[1] == 5
    assert (each[:, 1:] != 1).all()
    none = pack_tokens(docs, lm.tokenizer, 5, bos="none")
    assert none.shape[1] == 5 and none.shape[0] <= each.shape[0]  # 5 vs 4 stream tokens each
    per_doc = pack_tokens(docs, lm.tokenizer, 4, bos="document", bos_token_id=1)
    assert int((per_doc == 1).sum()) == 2  # one BOS per document in the stream
    with pytest.raises(Exception, match="bos must be"):
        pack_tokens(docs, lm.tokenizer, 5, bos="sometimes")


def test_packaged_corpora_are_real_english():
    kjv = load_corpus("kjv")
    assert len(kjv.documents) == 1189  # chapters of the King James Bible
    assert kjv.documents[0].startswith("In the beginning God created the heaven and the earth.")
    # the translators' supplied words ("{was}") are kept without their braces; the editorial
    # notes ("{firmament: Heb. expansion}") are dropped
    genesis = kjv.documents[0]
    assert "and darkness was upon the face of the deep." in genesis
    assert "that it was good" in genesis and "Heb." not in genesis and "expansion" not in genesis
    assert not any("{" in d or "}" in d for d in kjv.documents)
    assert kjv.identity()["license"].startswith("text: public domain")
    docs = load_corpus("python-docs")
    assert docs.n_characters > 100_000


def test_kjv_verses_keep_supplied_words_and_drop_notes():
    from interplab.datasets.corpus import kjv_verse

    assert kjv_verse("darkness {was} upon the deep.") == "darkness was upon the deep."
    assert kjv_verse("the firmament. {firmament: Heb. expansion}") == "the firmament."
    assert kjv_verse("{it was} good: and God divided {x...: Heb. y} it") == "it was good: and God divided it"


def test_mixing_buffer_yields_every_non_bos_activation_once_shuffled(lm):
    from interplab.models import edit_hooks
    from interplab.sae.buffer import MixingBuffer

    toks = pack_tokens(load_corpus("python-docs").documents[:3], lm.tokenizer, 16, bos="each",
                       bos_token_id=1, max_sequences=24)
    batches = list(MixingBuffer(lm, HOOK, toks, batch_size=32, buffer_tokens=128, seed=0,
                                bos_token_id=1))
    assert all(b.shape == (32, lm.d_model) for b in batches)
    got = torch.cat(batches)
    ref = []
    with torch.no_grad(), edit_hooks(lm, {HOOK: lambda a: ref.append(a.clone())}):
        lm.hf(input_ids=toks)
    ref = ref[0][toks != 1]
    n_full = (ref.shape[0] // 32) * 32
    assert got.shape[0] == n_full  # only the last incomplete batch is dropped
    # Every yielded row is a real (non-BOS) activation, and the order is shuffled.
    d = torch.cdist(got, ref)
    assert float(d.min(1).values.max()) < 0.05  # cdist and batch-size float noise; others ≥ 1
    # (Repeated tokens in the corpus can give near-identical rows, so no uniqueness check.)
    assert not torch.equal(d.argmin(1)[:32], torch.arange(32))


def test_dashboard_leaves_out_massive_norm_tokens_as_training_does():
    """A token planted with ~300 × the ordinary norm would top the cards; under the SAE's
    exclusion rule (the default) it tops none, and is counted as left out."""
    from interplab.activations.exclusion import ExclusionRule
    from interplab.models import load
    from interplab.sae import SAEConfig, create_sae
    from interplab.sae.dashboard import feature_dashboards

    lm = load("tiny-llama", seed=0)
    planted = 7
    with torch.no_grad():
        lm.hf.get_input_embeddings().weight[planted] *= 300
    g = torch.Generator().manual_seed(0)
    toks = torch.randint(10, lm.tokenizer.vocab_size, (8, 32), generator=g)
    toks[:, 0] = lm.bos_token_id
    for i in range(8):
        toks[i, 4 + 3 * i] = planted
    sae = create_sae(SAEConfig("relu", lm.d_model, 32, seed=1)).eval()
    every = list(range(32))

    def centres(data):
        return [int(toks[c["sequence"], c["position"]]) for f in data.features
                for c in f.top_contexts[:1]]

    data = feature_dashboards(lm, sae, HOOK, toks, features=every)
    assert centres(data) and planted not in centres(data)
    assert data.n_excluded >= 8 and data.n_tokens == 8 * 31 - data.n_excluded
    assert all(f.max_activation < 1e3 for f in data.features)
    # Control: with every token kept, the planted token tops cards.
    control = feature_dashboards(lm, sae, HOOK, toks, features=every,
                                 exclusion=ExclusionRule.none())
    assert centres(control).count(planted) >= 4 and control.n_excluded == 0


def test_dashboard_shows_non_ascii_tokens_as_characters(tmp_path):
    from interplab.report.sae_dashboard import render_dashboard
    from interplab.sae.dashboard import DashboardData, FeatureDashboard

    f = FeatureDashboard(
        index=3, density=0.5, n_fired=1, max_activation=2.0, histogram_counts=[1],
        histogram_edges=[0.0, 2.0],
        top_contexts=[{"activation": 2.0, "tokens": ["ч", "é<b>", "x"], "acts": [2.0, 0.0, 0.5],
                       "excluded": [False, True, False], "centre": 0, "sequence": 0,
                       "position": 1}],
        promoted=[("ч", 1.5), (" naïve", 1.0)], suppressed=[("\n", -1.0), ("日本", -0.5)])
    data = DashboardData(model="m", hook=HOOK, sae={"architecture": "topk", "d_sae": 8, "k": 2},
                         n_tokens=2, features=[f], text="two tokens")
    html = render_dashboard(data, tmp_path / "d.html").read_text(encoding="utf-8")
    assert "&#34;ч&#34;" in html and "&#34; naïve&#34;" in html and "&#34;日本&#34;" in html
    assert "\\u04" not in html and "\\u65e5" not in html and "\\u00ef" not in html
    assert "&#34;\\n&#34;" in html  # whitespace stays visible as an escape
    assert "é&lt;b&gt;" in html and "tok excl" in html  # context text escaped; excluded marked
