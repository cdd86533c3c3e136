"""Atomic writes: the target is the old file or the new one, never a mix; no leftovers."""

import json
import math
import os
from pathlib import Path

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


def test_failed_safetensors_write_is_an_os_error_naming_the_file(tmp_path):
    """A real write failure (the file-size limit standing in for a full disk): safetensors
    reports it as its own error type; the writer raises OSError with the errno and the target's
    name, and leaves the old file and no temporary file behind."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import errno, resource, signal, sys
        import torch
        from interplab.fileio import atomic_write_safetensors
        target = sys.argv[1]
        atomic_write_safetensors(target, {"a": torch.zeros(4)})  # small: fits the limit
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over the limit: EFBIG, not a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
        try:
            atomic_write_safetensors(target, {"a": torch.zeros(100_000)})
        except OSError as exc:
            print(exc.errno == errno.EFBIG, exc.filename == target, exc.strerror)
    """)
    target = tmp_path / "w.safetensors"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    out = subprocess.run([sys.executable, "-c", script, str(target)], env=env, text=True,
                         capture_output=True, timeout=120)
    assert out.stdout.split()[:2] == ["True", "True"], out.stdout + out.stderr
    from safetensors.torch import load_file

    assert load_file(target)["a"].shape == (4,)  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]
