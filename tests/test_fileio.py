"""Atomic writes: the target is the old file or the new one, never a mix; no leftovers."""

import json
import math

import pytest

from interplab.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text


def test_atomic_write_replaces_and_creates_parents(tmp_path):
    target = tmp_path / "a" / "b" / "out.json"
    atomic_write_json(target, {"x": 1, "nan": math.nan, "name": "Zürich"})
    assert json.loads(target.read_text(encoding="utf-8"))["name"] == "Zürich"
    atomic_write_text(target, "second")
    assert target.read_text(encoding="utf-8") == "second"
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "manifest.json"
    atomic_write_bytes(target, b"old")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("interplab.fileio.os.replace", broken_replace)
    with pytest.raises(OSError, match="No space"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_safetensors_writer_writes_save_file_bytes_atomically(tmp_path, monkeypatch):
    import torch
    from safetensors.torch import load_file, save

    from interplab.fileio import atomic_write_safetensors

    tensors = {"w": torch.arange(6.0).reshape(2, 3), "step": torch.tensor([7])}
    target = atomic_write_safetensors(tmp_path / "ckpt.safetensors", tensors, {"state": "{}"})
    assert target.read_bytes() == save(tensors, metadata={"state": "{}"})  # format unchanged
    assert torch.equal(load_file(str(target))["w"], tensors["w"])
    old = target.read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("interplab.fileio.os.replace", broken_replace)
    with pytest.raises(OSError, match="No space"):
        atomic_write_safetensors(target, {"w": torch.zeros(2)})
    assert target.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.safetensors"]
