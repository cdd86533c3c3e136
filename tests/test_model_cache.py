"""The converted-model cache: a GGUF loaded from it is the GGUF's own conversion, bit for bit;
entries are verified, written atomically, evicted beyond the size limit; the opt-outs work."""

import json
import os
from pathlib import Path

import pytest
import torch

import interplab.models.loading as loading
from interplab.cli.main import main
from interplab.errors import InterplabError
from interplab.models import load
from interplab.models.cache import ENTRY_FILE, ModelCache
from interplab.models.loading import weights_sha256
from tests._gguf import write_tiny_gguf

TEXTS = ["The city of Lisbon sits on seven hills.", "Bees dance.", "<bos> x <eos> y"]


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    """A private cache for the test (never the user's), on with the default limit."""
    monkeypatch.setenv("INTERPLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("INTERPLAB_MODEL_CACHE", raising=False)
    monkeypatch.delenv("INTERPLAB_MODEL_CACHE_GB", raising=False)
    return tmp_path / "cache" / "models"


@pytest.fixture
def conversions(monkeypatch):
    """How many times a GGUF was converted by transformers during the test."""
    calls = []
    real = loading._convert_gguf

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(loading, "_convert_gguf", counting)
    return calls


def _logits(lm):
    batch = lm.tokenizer(TEXTS, return_tensors="pt", padding=True)
    with torch.inference_mode():
        return lm.hf(**batch).logits


def _assert_same_model(a, b):
    """Bit-for-bit the same model and tokenizer: weights, logits on a padded batch, identity."""
    sa, sb = a.hf.state_dict(), b.hf.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) and sa[k].dtype == sb[k].dtype for k in sa)
    assert torch.equal(_logits(a), _logits(b))
    assert a.identity() == b.identity() and weights_sha256(a.hf) == weights_sha256(b.hf)
    assert a.tokenize(TEXTS) == b.tokenize(TEXTS)
    assert (a.tokenizer.bos_token_id, a.tokenizer.eos_token_id, a.tokenizer.pad_token_id) == \
        (b.tokenizer.bos_token_id, b.tokenizer.eos_token_id, b.tokenizer.pad_token_id)
    assert a.tokenizer.get_vocab() == b.tokenizer.get_vocab()
    assert (a.hf.config.tie_word_embeddings, a.hf.config._attn_implementation) == \
        (b.hf.config.tie_word_embeddings, b.hf.config._attn_implementation)


@pytest.mark.parametrize("tied", [False, True])
def test_cached_load_is_the_gguf_conversion_bit_for_bit(tmp_path, cache_root, conversions, tied):
    gguf = write_tiny_gguf(tmp_path / "tiny.gguf", seed=1, tied=tied)
    reference = load(gguf, cache=False)  # transformers' own conversion, no cache involved
    assert not cache_root.exists() and len(conversions) == 1
    first = load(gguf)  # converts and writes the entry
    assert len(conversions) == 2 and len(ModelCache(cache_root).entries()) == 1
    second = load(gguf)  # reads it: no conversion
    assert len(conversions) == 2
    assert _logits(reference).abs().mean() > 0.1  # the comparison is not trivial
    _assert_same_model(reference, first)
    _assert_same_model(reference, second)
    assert second.source == str(gguf) and second.name == "tiny.gguf"
    assert (second.hf.lm_head.weight is second.hf.model.embed_tokens.weight) == tied
    # the entry holds safetensors, JSON and the tokenizer's files: nothing pickled
    entry = ModelCache(cache_root).entries()[0]
    assert "model.safetensors" in entry.files and not any(
        n.endswith((".bin", ".pt", ".pkl")) for n in os.listdir(entry.path))


def test_key_covers_dtype_and_the_files_bytes(tmp_path, cache_root, conversions):
    gguf = write_tiny_gguf(tmp_path / "m.gguf", seed=1)
    a = load(gguf)
    half = load(gguf, dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16 and len(ModelCache(cache_root).entries()) == 2
    _assert_same_model(half, load(gguf, dtype=torch.bfloat16, cache=False))
    # the same path rewritten with other weights is another entry, never the stale one
    write_tiny_gguf(gguf, seed=2)
    b = load(gguf)
    assert len(conversions) == 4 and len(ModelCache(cache_root).entries()) == 3
    assert not torch.equal(_logits(a), _logits(b))
    _assert_same_model(b, load(gguf, cache=False))


def test_the_gguf_hash_is_remembered_by_path_size_and_mtime(tmp_path, cache_root, monkeypatch):
    import interplab.models.cache as cache_module

    gguf = write_tiny_gguf(tmp_path / "m.gguf", seed=1)
    hashed = []
    real = cache_module.file_sha256
    monkeypatch.setattr(cache_module, "file_sha256",
                        lambda p: hashed.append(os.path.basename(p)) or real(p))
    cache = ModelCache(cache_root)
    digest = cache.gguf_sha256(gguf)
    assert hashed == ["m.gguf"] and digest == real(gguf)
    assert cache.gguf_sha256(gguf) == digest and hashed == ["m.gguf"]  # remembered
    st = gguf.stat()
    os.utime(gguf, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # touched: hashed again
    assert cache.gguf_sha256(gguf) == digest and hashed == ["m.gguf", "m.gguf"]


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "drop the record", "edit config"])
def test_a_corrupt_entry_is_deleted_and_converted_again(tmp_path, cache_root, conversions,
                                                         damage):
    gguf = write_tiny_gguf(tmp_path / "m.gguf", seed=1)
    reference = load(gguf, cache=False)
    load(gguf)
    entry = ModelCache(cache_root).entries()[0]
    weights = entry.path / "model.safetensors"
    if damage == "flip a byte":  # same size and header: only the checksum can tell
        data = bytearray(weights.read_bytes())
        data[-5] ^= 0x40
        weights.write_bytes(bytes(data))
    elif damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:-100])
    elif damage == "drop the record":
        (entry.path / ENTRY_FILE).unlink()
    else:
        config = json.loads((entry.path / "config.json").read_text())
        config["rms_norm_eps"] = 0.5
        (entry.path / "config.json").write_text(json.dumps(config))
    assert main(["cache", "verify"]) == (0 if damage == "drop the record" else 1)
    with pytest.warns(UserWarning, match=r"model cache entry .* is corrupt"):
        again = load(gguf)
    assert len(conversions) == 3  # reference, first load, the re-conversion
    _assert_same_model(reference, again)
    assert ModelCache(cache_root).problems(ModelCache(cache_root).entries()[0]) == []
    assert main(["cache", "verify"]) == 0


def test_an_interrupted_conversion_leaves_no_entry(tmp_path, cache_root, conversions,
                                                    monkeypatch):
    gguf = write_tiny_gguf(tmp_path / "m.gguf", seed=1)
    real = loading._save_converted

    def killed(model, tok, folder):
        real(model, tok, folder)  # every file written, the record and the rename not yet
        raise KeyboardInterrupt

    monkeypatch.setattr(loading, "_save_converted", killed)
    with pytest.raises(KeyboardInterrupt):
        load(gguf)
    assert ModelCache(cache_root).entries() == []
    assert [p.name for p in cache_root.iterdir() if p.is_dir()] == []  # no half entry left
    monkeypatch.setattr(loading, "_save_converted", real)
    # what a kill -9 would leave: a temporary folder, which is never read as an entry
    leftover = cache_root / ".tmp-m-float32-0123-dead"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"half")
    load(gguf)
    assert len(conversions) == 2 and len(ModelCache(cache_root).entries()) == 1
    assert main(["cache", "clear"]) == 0
    assert not any(p.is_dir() for p in cache_root.iterdir())  # the leftover went too


def test_the_size_limit_evicts_the_least_recently_used(tmp_path, cache_root, conversions,
                                                      monkeypatch):
    a, b, c = (write_tiny_gguf(tmp_path / f"{n}.gguf", seed=i) for i, n in enumerate("abc"))
    load(a)
    size = ModelCache(cache_root).entries()[0].bytes
    monkeypatch.setenv("INTERPLAB_MODEL_CACHE_GB", str(2.5 * size / 1e9))  # room for two
    load(b)
    by_name = {e.source: e.path for e in ModelCache(cache_root).entries()}
    os.utime(by_name[str(a)], (1e9, 1e9))
    os.utime(by_name[str(b)], (1.1e9, 1.1e9))  # b used after a ...
    load(a)  # ... until a is used again (read from the cache, no conversion)
    assert len(conversions) == 2
    load(c)
    assert sorted(e.source for e in ModelCache(cache_root).entries()) == [str(a), str(c)]
    # a model bigger than the limit is not cached, and still loads
    monkeypatch.setenv("INTERPLAB_MODEL_CACHE_GB", str(0.5 * size / 1e9))
    with pytest.warns(UserWarning, match="more than the model cache's limit"):
        lm = load(write_tiny_gguf(tmp_path / "d.gguf", seed=4))
    assert lm.n_layers == 2 and str(tmp_path / "d.gguf") not in {
        e.source for e in ModelCache(cache_root).entries()}


def test_opt_outs_and_a_bad_limit(tmp_path, cache_root, monkeypatch):
    gguf = write_tiny_gguf(tmp_path / "m.gguf", seed=1)
    load(gguf, cache=False)
    monkeypatch.setenv("INTERPLAB_MODEL_CACHE", "0")
    load(gguf)
    assert not cache_root.exists()  # neither read nor written, not even the hash table
    load(gguf, cache=True)  # the argument wins over the variable
    assert len(ModelCache(cache_root).entries()) == 1
    monkeypatch.setenv("INTERPLAB_MODEL_CACHE", "1")
    monkeypatch.setenv("INTERPLAB_MODEL_CACHE_GB", "lots")
    with pytest.raises(InterplabError, match="INTERPLAB_MODEL_CACHE_GB must be a number"):
        load(gguf)


def test_cli_info_and_clear(tmp_path, cache_root, capsys):
    gguf = write_tiny_gguf(tmp_path / "m.gguf", seed=1)
    assert main(["cache", "info"]) == 0
    assert "0 entries" in capsys.readouterr().out
    load(gguf)
    assert main(["cache", "info"]) == 0
    out = capsys.readouterr().out
    assert str(cache_root) in out and "1 entry" in out and str(gguf) in out
    assert main(["cache", "clear"]) == 0
    assert "deleted 1 entry" in capsys.readouterr().out
    assert ModelCache(cache_root).entries() == []


def test_conversion_reports_lines_not_bars_when_stderr_is_a_file(tmp_path, cache_root, capfd):
    gguf = write_tiny_gguf(tmp_path / "m.gguf", seed=1)
    load(gguf)
    err = capfd.readouterr().err
    lines = err.splitlines()
    assert any("m.gguf: de-quantising tensors: started (21 steps)" in line for line in lines)
    assert any("m.gguf: converted in" in line and "cached in" in line for line in lines)
    assert "\r" not in err and "it/s" not in err  # no tqdm bar, from the GGUF loader or others
    assert len(lines) <= 8  # a few lines, not one per tensor
    load(gguf)
    assert capfd.readouterr().err == ""  # a cached load is silent


@pytest.mark.embedded
def test_embedded_model_from_the_cache_is_its_gguf_conversion_bit_for_bit(smollm):
    """The shared fixture loads through the user's cache (converting on a first run); a load
    with the cache off converts the GGUF afresh: the same weights, logits and tokenizer."""
    from interplab.models.cache import ModelCache, cache_enabled

    fresh = load("smollm2-135m", cache=False)
    _assert_same_model(smollm, fresh)
    assert _logits(fresh).abs().mean() > 1.0
    if cache_enabled():
        # The entry is found by the GGUF's hash, not its path: another checkout of the project
        # (another venv holding the same wheel) reuses the entry the first one wrote.
        cache = ModelCache()
        digest = cache.gguf_sha256(Path(smollm.source).resolve())
        assert digest in {e.key.get("gguf_sha256") for e in cache.entries()}


def test_an_entry_another_process_finished_first_is_kept(tmp_path, cache_root):
    """Two workers converting the same file at once: the second keeps the first one's entry."""
    from interplab.models.cache import cache_key

    gguf = write_tiny_gguf(tmp_path / "m.gguf", seed=1)
    load(gguf)
    cache = ModelCache(cache_root)
    (entry,) = cache.entries()
    before = {p.name: p.stat().st_mtime_ns for p in entry.path.iterdir()}
    key = cache_key(cache.gguf_sha256(gguf), "float32")
    late = cache.store(gguf, key, lambda d: (d / "model.safetensors").write_bytes(b"late"),
                       expected_bytes=10)
    assert late == entry.path and cache.problems(cache.entries()[0]) == []
    assert {p.name: p.stat().st_mtime_ns for p in entry.path.iterdir()} == before
    assert [p.name for p in cache_root.iterdir() if p.is_dir()] == [entry.path.name]
