"""The converted-model cache: a GGUF file converted once into safetensors and tokenizer files.

Loading a ``.gguf`` through transformers parses the file three times (config, tokenizer,
weights) and de-quantises every tensor: about 20-30 s for the embedded SmolLM2-135M on two CPU
cores. The first load keeps the result in a folder of this cache and later loads read that
folder instead (``from_pretrained`` on safetensors, memory-mapped, no pickle).

Where it lives: ``$INTERPLAB_CACHE/models``, else ``$XDG_CACHE_HOME/interplab/models``, else
``~/.cache/interplab/models``; one sub-folder per entry. ``interplab cache info`` lists the
entries, ``interplab cache verify`` re-hashes every file, ``interplab cache clear`` deletes them
(or ``rm -rf`` the folder: nothing else is kept there).

Key: the sha256 of the GGUF's bytes, the dtype the model computes in, and the versions of
transformers, gguf (which de-quantises) and torch, plus this cache's format number. The GGUF's
hash is itself remembered by (path, size, modification time) in ``gguf-sha256.json``, so an
unchanged file is not read again; a file rewritten in place gets a new modification time and is
hashed again (only a same-size rewrite whose time is deliberately set back would go unseen).

Verification on every use: the entry's record (``entry.json``) must match the key, every
recorded file must be present with its recorded size, and every file is hashed against the
sha256 recorded when it was written. A mismatch deletes the entry and the GGUF is converted
again (a warning says which file failed).

Writes are atomic: the entry is written into a temporary folder beside the others, every file
fsync'ed, then renamed into place, so a conversion killed half-way leaves no entry that a later
load would read (``interplab cache clear`` removes its leftover temporary folder).

Size limit: ``$INTERPLAB_MODEL_CACHE_GB`` (default 4) gigabytes (10^9 bytes); after a write
the least recently used entries are deleted until the rest fit. A model bigger than the limit
is not cached. Opt-out: ``INTERPLAB_MODEL_CACHE=0`` or ``load(..., cache=False)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interplab.errors import InterplabError
from interplab.fileio import _fsync_dir, atomic_write_json

FORMAT = 1
DEFAULT_LIMIT_GB = 4.0
ENTRY_FILE = "entry.json"
HASHES_FILE = "gguf-sha256.json"
_TMP_PREFIX = ".tmp-"
_OFF = {"0", "false", "no", "off"}
_CHUNK = 1 << 22


def default_cache_dir() -> Path:
    """``$INTERPLAB_CACHE/models``, else ``$XDG_CACHE_HOME/interplab/models``, else
    ``~/.cache/interplab/models``."""
    root = os.environ.get("INTERPLAB_CACHE")
    if root:
        return Path(root).expanduser() / "models"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "interplab" / "models"


def cache_enabled(cache: bool | None = None) -> bool:
    """Whether a GGUF load uses the cache: ``cache`` if given, else not when
    ``$INTERPLAB_MODEL_CACHE`` is 0/false/no/off."""
    if cache is not None:
        return bool(cache)
    return os.environ.get("INTERPLAB_MODEL_CACHE", "1").strip().lower() not in _OFF


def size_limit_bytes() -> int:
    """The cache's size limit in bytes, from ``$INTERPLAB_MODEL_CACHE_GB`` (default 4 GB)."""
    raw = os.environ.get("INTERPLAB_MODEL_CACHE_GB", "").strip()
    if not raw:
        return int(DEFAULT_LIMIT_GB * 1e9)
    try:
        gb = float(raw)
    except ValueError:
        gb = -1.0
    if not gb >= 0:  # also refuses NaN
        raise InterplabError(f"INTERPLAB_MODEL_CACHE_GB must be a number of gigabytes >= 0, not "
                             f"{raw!r}; set it to e.g. 4, or INTERPLAB_MODEL_CACHE=0 to turn the "
                             "model cache off")
    return int(gb * 1e9)


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def cache_key(gguf_sha256: str, dtype: str) -> dict[str, Any]:
    """Everything the converted weights depend on: the GGUF's bytes, the dtype and the code that
    converts (transformers, gguf, torch)."""
    from importlib.metadata import version

    import torch
    import transformers

    return {"format": FORMAT, "gguf_sha256": gguf_sha256, "dtype": dtype,
            "transformers": transformers.__version__, "gguf": version("gguf"),
            "torch": torch.__version__}


@dataclass
class CacheEntry:
    """One converted model: its folder, key, recorded files (name -> bytes, sha256) and when it
    was written and last used (seconds since the epoch)."""

    path: Path
    key: dict[str, Any]
    source: str
    files: dict[str, dict[str, Any]]
    created: float
    last_used: float
    convert_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def bytes(self) -> int:
        return sum(int(f["bytes"]) for f in self.files.values())

    def to_dict(self) -> dict[str, Any]:
        return {"folder": str(self.path), "source": self.source, "bytes": self.bytes,
                "created": self.created, "last_used": self.last_used,
                "convert_seconds": self.convert_seconds, "key": self.key}


class ModelCache:
    """The cache folder ``root`` (default :func:`default_cache_dir`) with a size limit in bytes
    (default :func:`size_limit_bytes`)."""

    def __init__(self, root: str | os.PathLike | None = None, limit_bytes: int | None = None):
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        self.limit_bytes = size_limit_bytes() if limit_bytes is None else int(limit_bytes)

    # ------------------------------------------------------------------ the GGUF's hash
    def gguf_sha256(self, gguf: Path) -> str:
        """The sha256 of ``gguf``, remembered by (resolved path, size, modification time)."""
        gguf = Path(gguf).resolve()
        st = gguf.stat()
        stamp = [st.st_size, st.st_mtime_ns]
        table = self._read_json(self.root / HASHES_FILE) or {}
        known = table.get(str(gguf))
        if isinstance(known, dict) and known.get("stat") == stamp \
                and isinstance(known.get("sha256"), str):
            return known["sha256"]
        digest = file_sha256(gguf)
        table = {p: v for p, v in table.items() if Path(p).is_file()}  # forget deleted files
        table[str(gguf)] = {"stat": stamp, "sha256": digest}
        with contextlib.suppress(OSError):  # a read-only cache still works, hashing each time
            atomic_write_json(self.root / HASHES_FILE, table)
        return digest

    def folder_for(self, gguf: Path, key: dict[str, Any]) -> Path:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        return self.root / f"{Path(gguf).stem}-{key['dtype']}-{digest}"

    # ------------------------------------------------------------------ reading
    def entries(self) -> list[CacheEntry]:
        """Every complete entry, least recently used first (unreadable records are skipped)."""
        found = []
        if not self.root.is_dir():
            return found
        for folder in sorted(self.root.iterdir()):
            if folder.is_dir() and not folder.name.startswith(_TMP_PREFIX):
                entry = self._entry(folder)
                if entry is not None:
                    found.append(entry)
        return sorted(found, key=lambda e: e.last_used)

    def _entry(self, folder: Path) -> CacheEntry | None:
        record = self._read_json(folder / ENTRY_FILE)
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            return None
        try:
            return CacheEntry(path=folder, key=dict(record["key"]), source=str(record["source"]),
                              files=dict(record["files"]), created=float(record["created"]),
                              last_used=folder.stat().st_mtime,
                              convert_seconds=float(record.get("convert_seconds", 0.0)))
        except (KeyError, TypeError, ValueError, OSError):
            return None

    def problems(self, entry: CacheEntry) -> list[str]:
        """What is wrong with ``entry``'s files (missing, wrong size, wrong sha256), hashing
        them in parallel threads (hashlib releases the GIL); empty when it is intact."""
        found: list[str] = []
        names = sorted(entry.files)
        for name in names:
            if Path(name).name != name or name == ENTRY_FILE:
                return [f"the record names the file {name!r}, which is not a plain file name"]
            file = entry.path / name
            if not file.is_file():
                found.append(f"{name} is missing")
            elif file.stat().st_size != int(entry.files[name]["bytes"]):
                found.append(f"{name} has {file.stat().st_size} bytes, not the "
                             f"{entry.files[name]['bytes']} written")
        if found:
            return found
        with ThreadPoolExecutor(max_workers=min(4, len(names) or 1)) as pool:
            digests = dict(zip(names, pool.map(lambda n: file_sha256(entry.path / n), names),
                               strict=True))
        return [f"{name}'s sha256 is {digests[name][:12]}…, not the {entry.files[name]['sha256'][:12]}… "
                "written" for name in names if digests[name] != entry.files[name]["sha256"]]

    def lookup(self, gguf: Path, key: dict[str, Any]) -> Path | None:
        """The verified folder of ``key``'s entry, or None. A corrupt entry is deleted (with a
        warning naming what failed) so the caller converts again."""
        folder = self.folder_for(gguf, key)
        if not folder.is_dir():
            return None
        entry = self._entry(folder)
        found = ["its record entry.json is missing or unreadable"] if entry is None else (
            [f"its record's key {entry.key} differs from {key}"] if entry.key != key
            else self.problems(entry))
        if found:
            warnings.warn(f"the model cache entry {folder} is corrupt ({'; '.join(found)}); "
                          "deleting it and converting the GGUF again", stacklevel=3)
            self.remove(folder)
            return None
        with contextlib.suppress(OSError):
            os.utime(folder)  # last use, for the least-recently-used eviction
        return folder

    # ------------------------------------------------------------------ writing
    def store(self, gguf: Path, key: dict[str, Any], write: Callable[[Path], None],
              expected_bytes: int, convert_seconds: float = 0.0) -> Path | None:
        """Write an entry with ``write(folder)`` into a temporary folder, record its files'
        sizes and sha256, fsync, and rename it into place; then evict least recently used
        entries beyond the limit. Returns the entry's folder, or None when ``expected_bytes``
        alone exceeds the limit (nothing is written; a warning says so)."""
        if expected_bytes > self.limit_bytes:
            warnings.warn(f"{Path(gguf).name} converts to {expected_bytes / 1e9:.2f} GB, more than "
                          f"the model cache's limit of {self.limit_bytes / 1e9:.2f} GB, so it is "
                          "not cached and will be converted on every load; raise "
                          "INTERPLAB_MODEL_CACHE_GB (or set INTERPLAB_MODEL_CACHE=0 to turn the "
                          "cache off)", stacklevel=3)
            return None
        final = self.folder_for(gguf, key)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f"{_TMP_PREFIX}{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            tmp.mkdir()
            write(tmp)
            files = {}
            for file in sorted(tmp.iterdir()):
                with open(file, "rb") as f:
                    os.fsync(f.fileno())
                files[file.name] = {"bytes": file.stat().st_size, "sha256": file_sha256(file)}
            atomic_write_json(tmp / ENTRY_FILE, {
                "format": FORMAT, "key": key, "source": str(Path(gguf).resolve()),
                "files": files, "created": time.time(), "convert_seconds": convert_seconds})
            done = self._entry(final) if final.exists() else None
            if done is not None and done.key == key:
                return final  # another process (a parallel worker) wrote the same entry first
            if final.exists():  # a leftover without a readable record
                self.remove(final)
            try:
                os.rename(tmp, final)
            except OSError:
                if not (final / ENTRY_FILE).is_file():  # another process did not just finish it
                    raise
            _fsync_dir(self.root)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        self.evict(keep=final)
        return final

    def evict(self, keep: Path | None = None) -> list[Path]:
        """Delete least recently used entries (never ``keep``) until the total fits the limit;
        returns the deleted folders."""
        entries = self.entries()
        total = sum(e.bytes for e in entries)
        removed = []
        for entry in entries:
            if total <= self.limit_bytes:
                break
            if keep is not None and entry.path == keep:
                continue
            self.remove(entry.path)
            total -= entry.bytes
            removed.append(entry.path)
        return removed

    def remove(self, folder: Path) -> None:
        """Delete one entry: renamed away first, so no reader finds it half deleted."""
        doomed = folder.with_name(f"{_TMP_PREFIX}rm-{folder.name}-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(folder, doomed)
        except FileNotFoundError:
            return
        shutil.rmtree(doomed, ignore_errors=True)

    def clear(self) -> tuple[int, int]:
        """Delete every entry, leftover temporary folder and the GGUF hash table; returns
        (entries deleted, bytes freed)."""
        entries = self.entries()
        n, freed = len(entries), sum(e.bytes for e in entries)
        if self.root.is_dir():
            for child in self.root.iterdir():
                if child.is_dir():
                    self.remove(child)
            with contextlib.suppress(FileNotFoundError):
                (self.root / HASHES_FILE).unlink()
        return n, freed

    def _read_json(self, path: Path) -> Any:
        try:
            return json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            return None

