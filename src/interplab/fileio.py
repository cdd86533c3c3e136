"""Atomic file writes: a reader sees the old file or the new one, never half of either.

Every result, manifest, report and log rewrite in interplab goes through here: the data is written
to ``<name>.tmp`` beside the target, flushed and fsync'ed, renamed over the target, and the folder
is fsync'ed so the rename survives a power cut. A failure removes the temporary file and leaves
the target as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "atomic_write_json",
           "atomic_write_safetensors"]


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Replace ``path`` atomically with the file ``write(tmp)`` creates at the temporary path
    ``tmp`` (for writers that want a file name, such as ``safetensors.torch.save_file``, so a large
    file is never held in memory twice). Parent folders are created; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Replace ``path`` with ``data`` atomically (parent folders are created); returns the path."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 1) -> Path:
    """``obj`` as JSON (NaN allowed, as Python's json writes it), written atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, allow_nan=True,
                                              ensure_ascii=False))


_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def atomic_write_safetensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor],
                             metadata: Mapping[str, str] | None = None) -> Path:
    """``tensors`` (contiguous, CPU) as a safetensors file with optional string ``metadata``,
    written atomically (the bytes of ``safetensors.torch.save_file``). A failed write (a full
    disk, a quota) raises :class:`OSError` naming ``path``, as the other writers here do
    (safetensors reports it as its own error type, with the OS error number in the text)."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    def write(tmp: Path) -> None:
        try:
            save_file(dict(tensors), str(tmp), metadata=dict(metadata) if metadata else None)
        except SafetensorError as exc:
            found = _OS_ERROR.search(str(exc))
            if found is None:
                raise
            code = int(found.group(1))
            raise OSError(code, os.strerror(code), str(path)) from exc

    return atomic_write(path, write)
