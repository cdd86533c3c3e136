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
    """The crash is a real SIGKILL of another process; the reference and the resume run here
    (the same code on one thread, so the same bytes), which saves two interpreter start-ups."""
    from tests._store_worker import harvest as worker_harvest

    env = _env()
    ref = tmp_path / "ref"
    worker_harvest(str(ref))
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
    worker_harvest(str(out))
    a, b = ActivationStore(ref), ActivationStore(out)
    assert b.complete and b.verify().ok
    assert [s["sha256"] for s in a.shards] == [s["sha256"] for s in b.shards]
    assert a.n_rows == b.n_rows
    for h in HOOKS:
        assert torch.equal(a.load(h), b.load(h))


def test_disk_error_leaves_valid_resumable_store(tiny_models, tmp_path, monkeypatch):
    lm = tiny_models["tiny-gpt2"]
    ref = _write(lm, tmp_path / "ref")
    original = store.atomic_write_bytes
    calls = {"n": 0}

    def failing(path, data):
        if path.name.startswith("shard-00002"):
            calls["n"] += 1
            raise OSError(28, "No space left on device")
        return original(path, data)

    monkeypatch.setattr(store, "atomic_write_bytes", failing)
    with pytest.raises(InterplabError) as e:
        _write(lm, tmp_path / "s", command="interplab harvest ... --out s")
    msg = str(e.value)  # names the file that failed, what is kept, and how to resume
    assert "shard-00002.safetensors" in msg and "No space left" in msg and "416 rows" in msg
    assert "resume it with: interplab harvest ... --out s" in msg
    assert isinstance(e.value.__cause__, OSError)
    monkeypatch.setattr(store, "atomic_write_bytes", original)
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
    # The store harvests in chunks, so its batches are not the in-memory run's batches: under
    # bf16 autocast the two are different computations and agree to bf16 precision, not bitwise.
    got, want = s.load(HOOKS[0]).float(), mem[HOOKS[0]].float()
    assert got.shape == want.shape
    rel = (got - want).norm(dim=-1) / want.norm(dim=-1)
    assert float(rel.max()) < 2e-2 and float(rel.mean()) < 5e-3
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


def _partial(lm, out, fail_at="shard-00002", **kw):
    """A store whose harvest stopped (a write failed) before ``fail_at``."""
    original = store.atomic_write_bytes

    def failing(path, data):
        if path.name.startswith(fail_at):
            raise OSError(28, "No space left on device")
        return original(path, data)

    store.atomic_write_bytes = failing
    try:
        with pytest.raises(InterplabError, match="could not write"):
            _write(lm, out, **kw)
    finally:
        store.atomic_write_bytes = original
    return ActivationStore(out)


def test_resume_refuses_changed_length_dtype_or_truncation(tiny_models, tmp_path):
    lm = tiny_models["tiny-gpt2"]
    out = tmp_path / "s"
    assert len(_partial(lm, out).shards) == 2
    for change, name in (({"max_length": 8}, "max_length: store has 128, new rows have 8"),
                         ({"compute_dtype": torch.bfloat16}, "compute_dtype"),
                         ({"truncation": "error"}, "truncation"),
                         ({"batch_size": 2, "texts_per_chunk": 8}, "batch_size")):
        with pytest.raises(InterplabError, match="refusing to append") as e:
            _write(lm, out, **change)
        assert name in str(e.value)
    assert len(ActivationStore(out).shards) == 2  # nothing was appended
    assert _write(lm, out).complete  # the original settings still resume


def test_resume_refuses_changed_weights_in_model_folder(tiny_models, tmp_path):
    from interplab.models import load

    folder = tmp_path / "model"
    src = tiny_models["tiny-gpt2"]
    src.hf.save_pretrained(folder)
    src.tokenizer.save_pretrained(folder)
    out = tmp_path / "s"
    _partial(load(folder), out)
    changed = load(folder)
    with torch.no_grad():
        changed.blocks[0].mlp.c_fc.weight.mul_(1.01)
    changed.hf.save_pretrained(folder)  # same name, same config, different weights
    with pytest.raises(InterplabError, match="model.weights_sha256"):
        _write(load(folder), out)


def test_failed_validation_creates_nothing_and_empty_store_is_replaced(tiny_models, tmp_path):
    lm = tiny_models["tiny-gpt2"]
    out = tmp_path / "s"
    with pytest.raises(InterplabError, match="position index 999"):
        harvest_to_store(lm, MANY, HOOKS, out, "index:999", progress=False)
    with pytest.raises(InterplabError, match="batch_size"):
        _write(lm, out, batch_size=0)
    with pytest.raises(InterplabError, match="padding_side"):
        _write(lm, out, padding_side="middle")
    assert not out.exists()
    empty = _partial(lm, out, fail_at="shard-00000", max_length=64)
    assert empty.n_rows == 0 and not empty.shards
    s = _write(lm, out)  # different settings, but the store has no row: replaced
    assert s.complete and s.manifest["max_length"] == lm.n_ctx


def test_nonfinite_rows_are_refused_when_written(tiny_models, tmp_path):
    from interplab.models import reset_copy

    lm = reset_copy(tiny_models["tiny-gpt2"], seed=0)  # a private copy to damage
    texts = [*MANY[:7], "Quixotic zebras vex jumpy kilns.", *MANY[7:20]]
    ids = lm.tokenize(texts)
    seen = {t for seq in ids[:7] for t in seq}
    token = next(t for t in ids[7] if t not in seen)
    with torch.no_grad():
        lm.embed.weight[token] = float("nan")
    with pytest.raises(InterplabError) as e:
        harvest_to_store(lm, texts, "blocks.0.hook_resid_pre", tmp_path / "s", "all",
                         batch_size=4, rows_per_shard=10, texts_per_chunk=2, progress=False)
    msg = str(e.value)
    assert f"text 7, position {ids[7].index(token)}" in msg
    assert "blocks.0.hook_resid_pre" in msg and "non-finite" in msg
    s = ActivationStore(tmp_path / "s")
    assert s.texts_done == 6 and bool(torch.isfinite(s.load()).all())


def _poison(out, shard, row, value=float("nan")):
    """Write ``value`` into one row of a shard and update the manifest's checksums, as an
    unchecked writer would."""
    from safetensors.torch import load_file, save_file

    m = json.loads((out / "manifest.json").read_text())
    f = out / m["shards"][shard]["file"]
    tensors = load_file(f)
    tensors[HOOKS[0]][row, 3] = value
    save_file(tensors, f, metadata={"format": store.FORMAT})
    _rehash(out, shard)
    return int(tensors["text_index"][row]), int(tensors["position"][row])


def _rehash(out, shard):
    m = json.loads((out / "manifest.json").read_text())
    f = out / m["shards"][shard]["file"]
    m["shards"][shard]["sha256"] = store._sha256_file(f)
    m["shards"][shard]["bytes"] = f.stat().st_size
    (out / "manifest.json").write_text(json.dumps(m))


def test_nonfinite_rows_are_reported_by_verify_and_refused_when_read(tiny_models, tmp_path):
    out = tmp_path / "s"
    _write(tiny_models["tiny-gpt2"], out)
    text, pos = _poison(out, 1, 5)
    s = ActivationStore(out)
    report = s.verify()
    assert not report.ok
    assert any("shard 1" in p and "1 non-finite" in p and f"text {text}, position {pos}" in p
               for p in report.problems)
    for read in (lambda: list(s.iter_batches(64, HOOKS[0])),
                 lambda: list(s.iter_batches(64, HOOKS[0], shuffle=False)),
                 lambda: s.load(HOOKS[0]),
                 lambda: s.rows([s.shards[0]["n_rows"] + 5], HOOKS[0])):
        with pytest.raises(InterplabError, match="shard-00001.safetensors .* non-finite"):
            read()
    assert torch.isfinite(s.load(HOOKS[1])).all()  # the other hook is unaffected
    _poison(out, 2, 0, float("inf"))
    assert "inf" in " ".join(ActivationStore(out).verify().problems)


def test_require_complete_names_how_to_finish(tiny_models, tmp_path):
    lm = tiny_models["tiny-gpt2"]
    out = tmp_path / "s"
    partial = _partial(lm, out, command="interplab harvest --out s")
    assert (partial.texts_done, partial.n_texts) == (16, len(MANY))
    with pytest.raises(InterplabError) as e:
        partial.require_complete()
    msg = str(e.value)
    assert "incomplete" in msg and "16 of 60 texts" in msg
    assert "resume it with: interplab harvest --out s" in msg and "--allow-incomplete" in msg
    partial.require_complete(allow_incomplete=True)
    _write(lm, out, command="interplab harvest --out s").require_complete()


def test_truncation_warning_names_the_global_text_index_on_resume(tiny_models, tmp_path):
    lm = tiny_models["tiny-gpt2"]
    texts = list(MANY)
    texts[20] = " ".join(["word"] * 400)
    out = tmp_path / "s"
    original = store.atomic_write_bytes
    store.atomic_write_bytes = lambda p, d: (_ for _ in ()).throw(OSError(28, "full")) \
        if p.name.startswith("shard-00002") else original(p, d)
    try:
        with pytest.raises(InterplabError), pytest.warns(UserWarning, match="text 20 "):
            harvest_to_store(lm, texts, HOOKS, out, batch_size=4, rows_per_shard=200,
                             texts_per_chunk=8, progress=False)
    finally:
        store.atomic_write_bytes = original
    assert ActivationStore(out).texts_done == 16
    with pytest.warns(UserWarning, match="first: text 20 with"):
        harvest_to_store(lm, texts, HOOKS, out, batch_size=4, rows_per_shard=200,
                         texts_per_chunk=8, progress=False)


def _damage(out, edit):
    m = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(edit(m) if callable(edit) else edit)


@pytest.mark.parametrize("edit, match", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON list, not an object"),
    (lambda m: json.dumps({k: v for k, v in m.items() if k != "shards"}), "lacks the key.*shards"),
    (lambda m: json.dumps({**m, "shards": [{**m["shards"][0], "file": "../../etc/hostname"}]
                           + m["shards"][1:]}), "not a plain file name"),
    (lambda m: json.dumps({**m, "shards": [{"file": "shard-00000.safetensors"}]}), "lacks one of"),
    (lambda m: json.dumps({**m, "n_rows": 3}), "do not add up"),
])
def test_damaged_manifest_is_one_clear_error(tiny_models, tmp_path, edit, match):
    out = tmp_path / "s"
    _write(tiny_models["tiny-gpt2"], out)
    _damage(out, edit)
    with pytest.raises(InterplabError, match=match):
        ActivationStore(out)
    with pytest.raises(InterplabError, match=match):  # and a resume does not append to it
        _write(tiny_models["tiny-gpt2"], out)


def test_damaged_shard_header_is_one_clear_error(tiny_models, tmp_path):
    out = tmp_path / "s"
    _write(tiny_models["tiny-gpt2"], out)
    f0, f1 = out / "shard-00000.safetensors", out / "shard-00001.safetensors"
    data = bytearray(f0.read_bytes())
    data[5] ^= 0x40  # header length: now far beyond the file
    f0.write_bytes(bytes(data))
    raw = f1.read_bytes()
    f1.write_bytes(raw.replace(b'"dtype"', b'"dtypf"', 1))  # same size, key renamed
    _rehash(out, 0)
    _rehash(out, 1)
    s = ActivationStore(out)
    with pytest.raises(InterplabError, match="shard-00000.safetensors is damaged"):
        s.load(HOOKS[0])
    with pytest.raises(InterplabError, match="shard-00001.safetensors is damaged .*invalid"):
        s.shard_tensor(1, HOOKS[0])
    problems = " ".join(ActivationStore(out).verify().problems)
    assert "shard 0" in problems and "shard 1" in problems and "damaged header" in problems


def test_store_harvest_runs_with_the_thread_policy_and_restores_it(tiny_models, tmp_path,
                                                                   monkeypatch):
    lm = tiny_models["tiny-llama"]
    seen: list[int] = []
    handle = lm.blocks[0].register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    monkeypatch.setenv("INTERPLAB_THREADS", "1")
    try:
        harvest_to_store(lm, TEXTS, "blocks.0.hook_resid_post", tmp_path / "s", progress=False)
        harvest_to_store(lm, TEXTS, "blocks.0.hook_resid_post", tmp_path / "t", progress=False,
                         threads=3)
    finally:
        handle.remove()
    assert set(seen[: len(seen) // 2]) == {1} and set(seen[len(seen) // 2 :]) == {3}
    assert torch.get_num_threads() == before


def _flip_one_float(out, shard):
    """Change one stored activation of a shard in place: the file stays a valid safetensors
    file of the same size, only its bytes (and so its sha256) differ from the manifest's."""
    s = ActivationStore(out)
    loc = s._header(shard)[HOOKS[0]]
    f = out / s.shards[shard]["file"]
    data = bytearray(f.read_bytes())
    data[loc.offset + 4 * 7 + 1] ^= 0x01
    f.write_bytes(bytes(data))
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 1_000_000))


def test_reads_refuse_a_shard_altered_after_the_harvest(tiny_models, tmp_path):
    out = tmp_path / "s"
    s = _write(tiny_models["tiny-gpt2"], out)
    before = s.load(HOOKS[0])
    _flip_one_float(out, 1)
    fresh = ActivationStore(out)
    for read in (lambda: fresh.load(HOOKS[0]), lambda: list(fresh.iter_batches(64, HOOKS[0])),
                 lambda: list(fresh.iter_batches(64, HOOKS[0], shuffle=False)),
                 lambda: fresh.rows([s.shards[0]["n_rows"] + 2], HOOKS[0]),
                 lambda: fresh.metadata()):
        with pytest.raises(InterplabError, match=r"shard-00001.safetensors of the store .* fails "
                                                 r"its sha256 check.*interplab store verify"):
            read()
    assert torch.equal(fresh.shard_tensor(0, HOOKS[0]), before[: s.shards[0]["n_rows"]])
    assert any("shard 1" in p and "altered" in p for p in fresh.verify().problems)


def test_shards_are_hashed_once_per_process(tiny_models, tmp_path, monkeypatch):
    out = tmp_path / "s"
    s = _write(tiny_models["tiny-gpt2"], out)
    calls = []
    real = store._sha256_file
    monkeypatch.setattr(store, "_sha256_file", lambda p: calls.append(Path(p).name) or real(p))
    ActivationStore(out).load(HOOKS[0])
    assert calls == []  # the writer of this process hashed the bytes it wrote
    f = out / s.shards[2]["file"]
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 1_000_000))  # touched: re-hash
    for _ in range(2):
        reader = ActivationStore(out)
        reader.load(HOOKS[0])
        list(reader.iter_batches(64, HOOKS[1], seed=1))
    assert calls == [s.shards[2]["file"]]


def test_harvest_that_would_keep_no_row_is_refused_before_writing(tiny_models, tmp_path):
    from interplab.activations.exclusion import ExclusionRule

    lm = tiny_models["tiny-llama"]
    out = tmp_path / "s"
    with pytest.raises(InterplabError, match=r"every row would be left out: the positions "
                                             r"'index:0' select only position 0"):
        harvest_to_store(lm, MANY, HOOKS, out, "index:0", exclusion=ExclusionRule(),
                         progress=False)
    assert not out.exists()
    # The same selector without the exclusion, or a later position with it, harvests.
    assert harvest_to_store(lm, MANY, HOOKS, out, "index:0", progress=False).n_rows == len(MANY)
    kept = harvest_to_store(lm, MANY, HOOKS, tmp_path / "t", "index:1",
                            exclusion=ExclusionRule(norm_ratio=None), progress=False)
    assert kept.n_rows == len(MANY)


def test_empty_store_is_refused_by_the_training_gate(tiny_models, tmp_path, monkeypatch):
    from interplab.activations import to_store
    from interplab.activations.exclusion import ExclusionRule

    # A store written before the harvest refused such runs: complete, 0 rows, all excluded.
    monkeypatch.setattr(to_store, "_check_some_row_is_kept", lambda *a: None)
    out = tmp_path / "s"
    with pytest.raises(InterplabError, match=r"kept no rows: the SAE exclusion \(position 0"):
        harvest_to_store(tiny_models["tiny-llama"], MANY, HOOKS, out, "index:0",
                         exclusion=ExclusionRule(), progress=False)
    s = ActivationStore(out)
    assert s.n_rows == 0 and not s.complete  # never marked complete; the next run replaces it
    m = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**m, "complete": True}))
    s = ActivationStore(out)
    with pytest.raises(InterplabError, match=r"holds no rows: the SAE exclusion \(position 0.*"
                                             r"left out all 60 rows"):
        s.require_complete()
    with pytest.raises(InterplabError, match="holds no rows"):
        list(s.iter_batches(8, HOOKS[0], drop_last=True))
    assert list(s.iter_batches(8, HOOKS[0])) == []  # a plain read of nothing is no error


def test_a_batch_never_holds_a_row_twice(tiny_models, tmp_path):
    s = harvest_to_store(tiny_models["tiny-gpt2"], TEXTS[:2], HOOKS, tmp_path / "s", "all",
                         progress=False)
    n = s.n_rows
    with pytest.raises(InterplabError, match=rf"batch size 4096 is larger than .* holds {n} rows: "
                                             r"one batch would read every row about \d+ times; "
                                             rf"use a batch size of at most {n}"):
        s.iter_batches(4096, HOOKS[0], epochs=456, drop_last=True)
    with pytest.raises(InterplabError, match="not one full batch"):
        s.iter_batches(n + 1, HOOKS[0], drop_last=True)
    assert sum(len(b) for b in s.iter_batches(n + 1, HOOKS[0])) == n  # one partial batch is fine
    one_pass = list(s.iter_batches(n, HOOKS[0], epochs=1, drop_last=True))
    assert len(one_pass) == 1 and len(torch.unique(one_pass[0], dim=0)) == n


def test_shard_whose_rows_were_all_excluded_reads_as_empty(tiny_models, tmp_path):
    from interplab.activations.exclusion import ExclusionRule

    # Texts 0-3 are one token long (position 0 only: every row excluded), so shard 0 is empty.
    lm = tiny_models["tiny-gpt2"]
    short = [t for t in ("a", "b", "c", "d") if len(lm.tokenize([t])[0]) == 1]
    assert len(short) == 4
    s = harvest_to_store(lm, short + MANY[:8], HOOKS, tmp_path / "s", "all", batch_size=4,
                         rows_per_shard=1, texts_per_chunk=4,
                         exclusion=ExclusionRule(norm_ratio=None), progress=False)
    assert s.shards[0]["n_rows"] == 0 and s.n_rows > 0
    got = torch.cat(list(s.iter_batches(16, HOOKS[0], seed=0)))
    assert got.shape[0] == s.n_rows
