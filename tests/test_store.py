import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from interplab.activations import ActivationStore, StoreWriter, harvest, harvest_to_store, store
from interplab.errors import InterplabError
from tests.conftest import TEXTS

WORKER = Path(__file__).with_name("_store_worker.py")
HOOKS = ["blocks.2.hook_resid_post", "blocks.1.hook_mlp_out"]
MANY = [f"{t} ({i})" for i in range(12) for t in TEXTS]


def _env():
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    env["HF_HUB_OFFLINE"] = "1"
    return env


def _write(lm, out, **kw):
    args = {"batch_size": 4, "rows_per_shard": 200, "texts_per_chunk": 8, "progress": False}
    args.update(kw)
    return harvest_to_store(lm, MANY, HOOKS, out, "all", **args)


def test_store_rows_equal_in_memory_harvest(tiny_models, tmp_path):
    lm = tiny_models["tiny-gpt2"]
    s = _write(lm, tmp_path / "s")
    mem = harvest(lm, MANY, HOOKS, "all", batch_size=4, progress=False)
    assert len(s.shards) > 2 and s.complete and s.n_rows == mem.n_rows
    for h in HOOKS:
        assert torch.allclose(s.load(h), mem[h], atol=1e-6)
    meta = s.metadata()
    assert np.array_equal(meta["text_index"], mem.text_index.numpy())
    assert np.array_equal(meta["token_id"], mem.token_id.numpy())
    idx = np.array([s.n_rows - 1, 0, 17, 5])
    assert torch.equal(s.rows(idx, HOOKS[0]), s.load(HOOKS[0])[idx])
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    for key in ("model", "hooks", "positions", "dataset", "dtype", "d_model", "rows_per_shard",
                "interplab_version"):
        assert key in m
    assert all(len(sh["sha256"]) == 64 for sh in m["shards"])
    assert s.verify().ok


def test_kill_9_mid_harvest_then_resume_is_identical(tmp_path):
    env = _env()
    ref = tmp_path / "ref"
    subprocess.run([sys.executable, str(WORKER), str(ref), "0"], env=env, check=True, timeout=300)
    out = tmp_path / "crash"
    proc = subprocess.Popen([sys.executable, str(WORKER), str(out), "0.4"], env=env,
                            stdout=subprocess.PIPE, text=True)
    # wait until two shards are on disk, then kill without warning
    for line in proc.stdout:
        if line.startswith("shard 2"):
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    partial = ActivationStore(out)
    assert not partial.complete and 2 <= len(partial.shards) < len(ActivationStore(ref).shards)
    assert (out / ".lock").exists()  # the dead writer's lock file remains; flock is released
    subprocess.run([sys.executable, str(WORKER), str(out), "0"], env=env, check=True, timeout=300)
    a, b = ActivationStore(ref), ActivationStore(out)
    assert b.complete and b.verify().ok
    assert [s["sha256"] for s in a.shards] == [s["sha256"] for s in b.shards]
    assert a.n_rows == b.n_rows
    for h in HOOKS:
        assert torch.equal(a.load(h), b.load(h))


def test_disk_error_leaves_valid_resumable_store(tiny_models, tmp_path, monkeypatch):
    lm = tiny_models["tiny-gpt2"]
    ref = _write(lm, tmp_path / "ref")
    original = store._atomic_write_bytes
    calls = {"n": 0}

    def failing(path, data):
        if path.name.startswith("shard-00002"):
            calls["n"] += 1
            raise OSError(28, "No space left on device")
        return original(path, data)

    monkeypatch.setattr(store, "_atomic_write_bytes", failing)
    with pytest.raises(InterplabError) as e:
        _write(lm, tmp_path / "s", command="interplab harvest ... --out s")
    msg = str(e.value)  # names the file that failed, what is kept, and how to resume
    assert "shard-00002.safetensors" in msg and "No space left" in msg and "416 rows" in msg
    assert "resume it with: interplab harvest ... --out s" in msg
    assert isinstance(e.value.__cause__, OSError)
    monkeypatch.setattr(store, "_atomic_write_bytes", original)
    partial = ActivationStore(tmp_path / "s")
    assert len(partial.shards) == 2 and not partial.complete
    assert not list((tmp_path / "s").glob("*.tmp"))
    report = partial.verify()
    assert not report.ok and all("incomplete" in p for p in report.problems)
    resumed = _write(lm, tmp_path / "s")
    assert [s["sha256"] for s in resumed.shards] == [s["sha256"] for s in ref.shards]


def test_refuses_different_model_hook_or_selector(tiny_models, tmp_path):
    out = tmp_path / "s"
    _write(tiny_models["tiny-gpt2"], out)
    with pytest.raises(InterplabError, match="model"):
        _write(tiny_models["tiny-neox"], out)
    with pytest.raises(InterplabError, match="positions"):
        harvest_to_store(tiny_models["tiny-gpt2"], MANY, HOOKS, out, "last", batch_size=4,
                         rows_per_shard=200, texts_per_chunk=8, progress=False)
    with pytest.raises(InterplabError, match="non-empty folder"):
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "notes.txt").write_text("keep me")
        _write(tiny_models["tiny-gpt2"], tmp_path / "other")
    assert (tmp_path / "other" / "notes.txt").read_text() == "keep me"
    assert ActivationStore(out).verify().ok


def test_second_writer_gets_lock_error(tiny_models, tmp_path):
    lm = tiny_models["tiny-gpt2"]
    header = {"model": lm.identity(), "hooks": HOOKS, "positions": "all", "dataset": {"n_texts": 1},
              "dtype": "float32", "d_model": 64, "rows_per_shard": 10, "texts_per_chunk": 8}
    with StoreWriter(tmp_path / "s", header), pytest.raises(InterplabError, match="another process"):
        StoreWriter(tmp_path / "s", header)
    StoreWriter(tmp_path / "s", header).close()  # released after the first closes


def test_verify_detects_truncated_and_altered_shards(tiny_models, tmp_path):
    s = _write(tiny_models["tiny-gpt2"], tmp_path / "s")
    f0 = tmp_path / "s" / s.shards[0]["file"]
    f1 = tmp_path / "s" / s.shards[1]["file"]
    data = bytearray(f1.read_bytes())
    data[-10] ^= 0xFF
    f1.write_bytes(bytes(data))
    f0.write_bytes(f0.read_bytes()[:-100])
    report = ActivationStore(tmp_path / "s").verify()
    assert not report.ok
    text = " ".join(report.problems)
    assert "shard 0" in text and "truncated" in text and "shard 1" in text and "altered" in text


def test_shuffled_batches_are_seeded_complete_and_cross_shards(tiny_models, tmp_path):
    s = _write(tiny_models["tiny-gpt2"], tmp_path / "s")
    full = s.load(HOOKS[0])
    shard_of = np.repeat(np.arange(len(s.shards)), [sh["n_rows"] for sh in s.shards])
    batches = list(s.iter_batches(64, HOOKS[0], seed=3, shards_in_buffer=2))
    again = list(s.iter_batches(64, HOOKS[0], seed=3, shards_in_buffer=2))
    other = list(s.iter_batches(64, HOOKS[0], seed=4, shards_in_buffer=2))
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))
    assert not torch.equal(batches[0], other[0])
    got = torch.cat(batches)
    assert got.shape == full.shape
    # every row exactly once: match rows by value
    key = lambda t: sorted(map(tuple, t.numpy().round(5).tolist()))  # noqa: E731
    assert key(got) == key(full)
    first = batches[0].numpy()
    lookup = {tuple(r.round(5)): shard_of[i] for i, r in enumerate(full.numpy())}
    assert len({lookup[tuple(r.round(5))] for r in first}) >= 2


def test_bf16_store_round_trip(tiny_models, tmp_path):
    lm = tiny_models["tiny-gpt2"]
    s = _write(lm, tmp_path / "s", dtype=torch.bfloat16)
    mem = harvest(lm, MANY, HOOKS, "all", batch_size=4, dtype=torch.bfloat16, progress=False)
    assert s.dtype == torch.bfloat16 and s.load(HOOKS[0]).dtype == torch.bfloat16
    assert torch.equal(s.load(HOOKS[0]), mem[HOOKS[0]])
    assert next(s.iter_batches(16, HOOKS[0])).dtype == torch.float32


def test_not_a_store_is_a_clear_error(tmp_path):
    with pytest.raises(InterplabError, match="not an activation store"):
        ActivationStore(tmp_path)


def test_pretokenized_sequences_harvest_and_store(tiny_models, tmp_path):
    from interplab.activations import harvest_tokens

    lm = tiny_models["tiny-gpt2"]
    ids = [lm.tokenize([t])[0] for t in MANY[:20]]
    mem = harvest_tokens(lm, ids, HOOKS[0], "all", progress=False)
    text_mem = harvest(lm, MANY[:20], HOOKS[0], "all", progress=False)
    assert torch.equal(mem[HOOKS[0]], text_mem[HOOKS[0]])
    s = harvest_to_store(lm, None, HOOKS[0], tmp_path / "s", "all", token_ids=ids,
                         rows_per_shard=50, texts_per_chunk=4, progress=False)
    assert s.manifest["dataset"]["pretokenized"]
    assert torch.allclose(s.load(), mem[HOOKS[0]], atol=1e-5)
    with pytest.raises(InterplabError, match="outside"):
        harvest_tokens(lm, [[10**6]], HOOKS[0], progress=False)
    with pytest.raises(InterplabError, match="either texts or token_ids"):
        harvest_to_store(lm, MANY, HOOKS[0], tmp_path / "t", token_ids=ids, progress=False)
