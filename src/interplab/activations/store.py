"""`ActivationStore`: activations on disk, written crash-safely, read without loading them all.

Layout of a store folder::

    manifest.json               identity (model, hooks, positions, dataset, dtype, d_model) + shards
    shard-00000.safetensors     one tensor per hook [rows, d_model] + text_index/position/token_id
    shard-00001.safetensors
    .lock                       held (flock) by the one process writing

Shards are written to a temporary file, fsync'ed and renamed into place; only then is the shard
added to the manifest, which is itself replaced atomically. So the manifest never lists a shard that
is not fully on disk, and a killed writer leaves a valid store that the same command resumes.
A shard always ends at a chunk boundary of the input texts (``texts_per_chunk``), which is what
makes a resumed store identical, byte for byte, to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save as st_save

from interplab.errors import InterplabError

MANIFEST = "manifest.json"
LOCK = ".lock"
FORMAT = "interplab.activation-store/1"
META_KEYS = ("text_index", "position", "token_id")
# Keys whose values must match for rows to be appended to an existing store.
IDENTITY_KEYS = ("model", "hooks", "positions", "dataset", "dtype", "d_model", "rows_per_shard",
                 "texts_per_chunk", "sae_exclusion")

_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I64": np.int64,
              "F64": np.float64, "I32": np.int32}
_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def dtype_name(dtype: torch.dtype) -> str:
    for k, v in _TORCH_DTYPES.items():
        if v == dtype:
            return k
    raise InterplabError(f"activation dtype must be one of {list(_TORCH_DTYPES)}, not {dtype}")


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        dtype_name(name)
        return name
    key = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}.get(name, name)
    if key not in _TORCH_DTYPES:
        raise InterplabError(f"unknown dtype {name!r}; use float32, float16 or bfloat16")
    return _TORCH_DTYPES[key]


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------------------- writer


class StoreWriter:
    """Appends shards to a store; one writer per folder at a time (enforced with a lock file)."""

    def __init__(self, path: str | os.PathLike, header: dict[str, Any]) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise InterplabError(f"{self.path} exists and is not a folder; choose another --out")
        if (
            self.path.is_dir()
            and not (self.path / MANIFEST).exists()
            and any(p.name != LOCK for p in self.path.iterdir())
        ):
            raise InterplabError(
                f"{self.path} is a non-empty folder that holds no activation store; choose an "
                "empty or new folder for --out"
            )
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise InterplabError(
                    f"another process is writing to the store {self.path} (its lock file "
                    f"{self.path / LOCK} is held); wait for it to finish or write elsewhere"
                ) from None
            raise
        os.ftruncate(self._lock_fd, 0)
        os.write(self._lock_fd, str(os.getpid()).encode())
        manifest_path = self.path / MANIFEST
        if manifest_path.exists():
            self.manifest = json.loads(manifest_path.read_text("utf-8"))
            diffs = [k for k in IDENTITY_KEYS if self.manifest.get(k) != header.get(k)]
            if diffs:
                detail = "; ".join(
                    f"{k}: store has {json.dumps(self.manifest.get(k))}, new rows have "
                    f"{json.dumps(header.get(k))}" for k in diffs
                )
                self.close()
                raise InterplabError(
                    f"refusing to append to the store in {self.path}: it was written with a "
                    f"different {', '.join(diffs)} ({detail}). Use a new --out folder."
                )
        else:
            self.manifest = {"format": FORMAT, **header, "shards": [], "n_rows": 0,
                             "texts_done": 0, "complete": False}
            self._write_manifest()

    @property
    def texts_done(self) -> int:
        return int(self.manifest["texts_done"])

    def _write_manifest(self) -> None:
        data = json.dumps(self.manifest, indent=1, sort_keys=True).encode()
        _atomic_write_bytes(self.path / MANIFEST, data)

    def write_shard(self, tensors: dict[str, torch.Tensor], text_end: int) -> None:
        """Write one shard (all texts up to ``text_end`` done) and record it in the manifest."""
        n_rows = int(tensors["text_index"].shape[0])
        index = len(self.manifest["shards"])
        name = f"shard-{index:05d}.safetensors"
        data = st_save({k: v.contiguous() for k, v in tensors.items()},
                       metadata={"format": FORMAT})
        _atomic_write_bytes(self.path / name, data)
        self.manifest["shards"].append({
            "file": name, "n_rows": n_rows, "text_start": self.texts_done, "text_end": text_end,
            "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
        })
        self.manifest["n_rows"] += n_rows
        self.manifest["texts_done"] = text_end
        self._write_manifest()

    def finish(self) -> None:
        self.manifest["complete"] = True
        self._write_manifest()

    def close(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------- reader


@dataclass(frozen=True)
class _TensorLoc:
    dtype: str
    shape: tuple[int, ...]
    offset: int  # absolute byte offset in the file


def _read_header(path: Path) -> dict[str, _TensorLoc]:
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise InterplabError(f"shard {path} is truncated (no header); run `interplab store verify`")
        (n,) = struct.unpack("<Q", raw)
        header = json.loads(f.read(n))
    base = 8 + n
    out = {}
    for key, meta in header.items():
        if key == "__metadata__":
            continue
        out[key] = _TensorLoc(meta["dtype"], tuple(meta["shape"]), base + meta["data_offsets"][0])
    return out


@dataclass
class VerifyReport:
    ok: bool
    problems: list[str]
    n_shards: int
    n_rows: int


class ActivationStore:
    """Read access to a store folder: memory-mapped rows and seeded shuffled batches."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        mpath = self.path / MANIFEST
        if not mpath.is_file():
            raise InterplabError(
                f"{self.path} is not an activation store (no {MANIFEST}); create one with "
                "`interplab harvest ... --out DIR`"
            )
        try:
            self.manifest: dict[str, Any] = json.loads(mpath.read_text("utf-8"))
        except json.JSONDecodeError as exc:
            raise InterplabError(f"{mpath} is not valid JSON ({exc})") from None
        if self.manifest.get("format") != FORMAT:
            raise InterplabError(f"{mpath} has format {self.manifest.get('format')!r}, "
                                 f"expected {FORMAT!r}")
        self.shards: list[dict[str, Any]] = self.manifest["shards"]
        counts = np.asarray([s["n_rows"] for s in self.shards], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(counts)])
        self._headers: dict[int, dict[str, _TensorLoc]] = {}

    # ------------------------------------------------------------------ facts
    @property
    def n_rows(self) -> int:
        return int(self._starts[-1])

    @property
    def d_model(self) -> int:
        return int(self.manifest["d_model"])

    @property
    def hooks(self) -> list[str]:
        return list(self.manifest["hooks"])

    @property
    def dtype(self) -> torch.dtype:
        return parse_dtype(self.manifest["dtype"])

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete"))

    def __len__(self) -> int:
        return self.n_rows

    def _hook(self, hook: str | None) -> str:
        if hook is None:
            if len(self.hooks) != 1:
                raise InterplabError(f"this store holds several hooks {self.hooks}; name one")
            return self.hooks[0]
        if hook not in self.hooks:
            raise InterplabError(f"this store holds no hook {hook!r}; it holds {self.hooks}")
        return hook

    # ------------------------------------------------------------------ raw access
    def _memmap(self, shard: int, key: str) -> np.memmap:
        if shard not in self._headers:
            self._headers[shard] = _read_header(self.path / self.shards[shard]["file"])
        loc = self._headers[shard][key]
        return np.memmap(self.path / self.shards[shard]["file"], dtype=_ST_DTYPES[loc.dtype],
                         mode="r", offset=loc.offset, shape=loc.shape)

    def _to_torch(self, arr: np.ndarray, key: str) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(arr))
        if key not in META_KEYS and self.manifest["dtype"] == "bfloat16":
            t = t.view(torch.bfloat16)
        return t

    def shard_tensor(self, shard: int, hook: str | None = None) -> torch.Tensor:
        """All rows of one shard for ``hook`` (a copy, ``[rows, d_model]``)."""
        key = self._hook(hook)
        return self._to_torch(np.array(self._memmap(shard, key)), key)

    def rows(self, indices: Sequence[int] | np.ndarray | torch.Tensor,
             hook: str | None = None) -> torch.Tensor:
        """Rows at global ``indices`` (any order), read through memory maps."""
        key = self._hook(hook)
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_rows):
            raise IndexError(f"row index out of range for a store of {self.n_rows} rows")
        out = np.empty((idx.size, self.d_model), dtype=_ST_DTYPES[self._st_dtype()])
        shard_of = np.searchsorted(self._starts, idx, side="right") - 1
        for s in np.unique(shard_of):
            sel = np.flatnonzero(shard_of == s)
            local = idx[sel] - self._starts[s]
            out[sel] = self._memmap(int(s), key)[local]
        return self._to_torch(out, key)

    def _st_dtype(self) -> str:
        return {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}[self.manifest["dtype"]]

    def metadata(self) -> dict[str, np.ndarray]:
        """``text_index``, ``position`` and ``token_id`` of every row (int64 arrays)."""
        out = {}
        for key in META_KEYS:
            parts = [np.array(self._memmap(s, key)) for s in range(len(self.shards))]
            out[key] = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
        return out

    def load(self, hook: str | None = None) -> torch.Tensor:
        """Every row for ``hook`` in memory (for small stores)."""
        parts = [self.shard_tensor(s, hook) for s in range(len(self.shards))]
        return torch.cat(parts) if parts else torch.empty(0, self.d_model, dtype=self.dtype)

    # ------------------------------------------------------------------ shuffled batches
    def _read_into(self, shard: int, key: str, out: np.ndarray) -> None:
        """Read a shard's tensor straight into ``out`` (plain reads: no mapped pages stay
        resident, so memory is what the caller allocated)."""
        if shard not in self._headers:
            self._headers[shard] = _read_header(self.path / self.shards[shard]["file"])
        loc = self._headers[shard][key]
        view = memoryview(out).cast("B")
        with open(self.path / self.shards[shard]["file"], "rb") as f:
            f.seek(loc.offset)
            got = f.readinto(view)
        if got != view.nbytes:
            raise InterplabError(f"shard {self.shards[shard]['file']} is truncated; run "
                                 "`interplab store verify`")

    def iter_batches(
        self,
        batch_size: int,
        hook: str | None = None,
        *,
        shuffle: bool = True,
        seed: int = 0,
        epochs: int = 1,
        shards_in_buffer: int = 4,
        drop_last: bool = False,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        with_position: bool = False,
    ) -> Iterator[torch.Tensor] | Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``[batch_size, d_model]`` batches.

        With ``with_position``, yield ``(batch, position)`` pairs instead, ``position`` being the
        ``[batch_size]`` int64 index of each row in its text (so callers can leave position 0 out).

        With ``shuffle``, each epoch visits shards in a seeded random order, reads
        ``shards_in_buffer`` of them at a time into one buffer, and draws batches from a random
        permutation of its rows, so rows are shuffled across shards while memory stays at one
        buffer (plus a batch) whatever the store's size. Same seed, same batches.
        """
        if batch_size < 1:
            raise InterplabError(f"batch_size must be at least 1, not {batch_size}")
        key = self._hook(hook)
        np_dtype = _ST_DTYPES[self._st_dtype()]
        k = max(1, shards_in_buffer)
        rng = np.random.default_rng(seed)
        carry = np.empty((0, self.d_model), dtype=np_dtype)
        carry_pos = np.empty(0, dtype=np.int64)

        def out(rows: np.ndarray, pos: np.ndarray):
            x = self._to_torch(rows, key).to(device=device, dtype=dtype)
            return (x, torch.from_numpy(pos)) if with_position else x

        for _ in range(epochs):
            order = rng.permutation(len(self.shards)) if shuffle else np.arange(len(self.shards))
            for g in range(0, len(order), k):
                group = [int(x) for x in order[g : g + k]]
                rows = sum(int(self.shards[x]["n_rows"]) for x in group)
                buf = np.empty((carry.shape[0] + rows, self.d_model), dtype=np_dtype)
                buf[: carry.shape[0]] = carry
                pos = np.empty(buf.shape[0], dtype=np.int64)
                pos[: carry.shape[0]] = carry_pos
                offset = carry.shape[0]
                for x in group:
                    n = int(self.shards[x]["n_rows"])
                    self._read_into(x, key, buf[offset : offset + n])
                    if with_position:
                        self._read_into(x, "position", pos[offset : offset + n])
                    offset += n
                perm = rng.permutation(buf.shape[0]) if shuffle else np.arange(buf.shape[0])
                n_full = buf.shape[0] // batch_size
                for b in range(n_full):
                    idx = perm[b * batch_size : (b + 1) * batch_size]
                    yield out(buf[idx], pos[idx])
                carry, carry_pos = buf[perm[n_full * batch_size :]], pos[perm[n_full * batch_size :]]
                del buf
        if carry.shape[0] and not drop_last:
            yield out(carry, carry_pos)

    # ------------------------------------------------------------------ integrity
    def verify(self) -> VerifyReport:
        """Check every shard exists, has its recorded size and sha256, and its row count."""
        problems = []
        for i, s in enumerate(self.shards):
            p = self.path / s["file"]
            if not p.is_file():
                problems.append(f"shard {i} ({s['file']}) is missing")
                continue
            size = p.stat().st_size
            if "bytes" in s and size != s["bytes"]:
                problems.append(f"shard {i} ({s['file']}) has {size} bytes, manifest says "
                                f"{s['bytes']} (truncated or extended)")
                continue
            if _sha256_file(p) != s["sha256"]:
                problems.append(f"shard {i} ({s['file']}) fails its sha256 check (altered)")
                continue
            hdr = _read_header(p)
            if hdr["text_index"].shape[0] != s["n_rows"]:
                problems.append(f"shard {i} has {hdr['text_index'].shape[0]} rows, manifest "
                                f"says {s['n_rows']}")
        if not self.complete:
            problems.append(f"the store is incomplete ({self.manifest['texts_done']} of "
                            f"{self.manifest['dataset']['n_texts']} texts); re-run the harvest "
                            "command to resume")
        return VerifyReport(not problems, problems, len(self.shards), self.n_rows)

    def info(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "path": str(self.path), "model": m["model"].get("name"),
            "model_variant": m["model"].get("variant"), "hooks": m["hooks"],
            "positions": m["positions"], "dataset": m["dataset"], "dtype": m["dtype"],
            "d_model": m["d_model"], "n_rows": self.n_rows, "n_shards": len(self.shards),
            "texts_done": m["texts_done"], "complete": self.complete,
            "interplab_version": m.get("interplab_version"),
            "bytes": sum(s.get("bytes", 0) for s in self.shards),
        }

    def __repr__(self) -> str:
        return (f"ActivationStore({str(self.path)!r}, rows={self.n_rows}, hooks={self.hooks}, "
                f"dtype={self.manifest['dtype']}, complete={self.complete})")
