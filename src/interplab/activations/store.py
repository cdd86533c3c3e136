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
from interplab.fileio import atomic_write_bytes

MANIFEST = "manifest.json"
LOCK = ".lock"
FORMAT = "interplab.activation-store/1"
META_KEYS = ("text_index", "position", "token_id")
# Keys whose values must match for rows to be appended to an existing store.
# Everything that changes a row's values (or, for byte-identical resumes, its rounding) is here.
IDENTITY_KEYS = ("model", "hooks", "positions", "dataset", "dtype", "d_model", "rows_per_shard",
                 "texts_per_chunk", "max_length", "truncation", "compute_dtype", "padding_side",
                 "batch_size", "sae_exclusion")

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


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


# Shards whose sha256 matched their manifest entry in this process, keyed by (resolved path,
# size, mtime in ns, expected sha256): a reader hashes each shard once per process, and again only
# when the file (or the manifest's checksum) changes.
_VERIFIED_SHARDS: set[tuple[str, int, int, str]] = set()


def _shard_key(path: Path, sha256: str) -> tuple[str, int, int, str]:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, sha256)


def remember_verified(path: Path, sha256: str) -> None:
    """Record that the shard file at ``path`` has the checksum ``sha256`` (its writer hashed the
    bytes it wrote, or a reader hashed the file), so readers in this process do not hash it
    again while its size and modification time stay the same."""
    _VERIFIED_SHARDS.add(_shard_key(path, sha256))


def resume_hint(manifest: dict[str, Any]) -> str:
    """How to finish a store's harvest: its recorded command, or the generic advice."""
    command = manifest.get("command")
    if isinstance(command, str) and command:
        return f"resume it with: {command}"
    return "re-run the same harvest (same command or harvest_to_store call) to resume it"


def _describe(value: Any) -> str:
    return "not recorded" if value is None else json.dumps(value)


def identity_differences(stored: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """One ``key: store has X, new rows have Y`` line per identity setting that differs
    (nested dicts such as the model identity are compared key by key)."""
    out = []
    for key in IDENTITY_KEYS:
        a, b = stored.get(key), new.get(key)
        if a == b or (key == "hooks" and _same_hooks(a, b)):
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{k}: store has {_describe(a.get(k))}, new rows have "
                    f"{_describe(b.get(k))}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        else:
            out.append(f"{key}: store has {_describe(a)}, new rows have {_describe(b)}")
    return out


def _same_hooks(a: Any, b: Any) -> bool:
    # Hooks are recorded in forward order; stores written before that hold them in the order they
    # were asked for. The same hooks in another order give the same rows.
    return isinstance(a, list) and isinstance(b, list) and sorted(a) == sorted(b)


def _first_nonfinite(acts: torch.Tensor) -> int | None:
    """Index of the first row of ``acts`` [rows, d] holding a NaN or inf, or None."""
    bad = ~torch.isfinite(acts).all(dim=-1)
    return int(bad.nonzero()[0, 0]) if bool(bad.any()) else None


def _bad_manifest(path: Path, problem: str) -> InterplabError:
    return InterplabError(
        f"{path} is damaged: {problem}. It was not written by interplab as it is; restore it from "
        "a backup or harvest again into a new --out folder"
    )


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


_MANIFEST_FIELDS: dict[str, tuple[type, ...]] = {
    "format": (str,), "model": (dict,), "hooks": (list,), "positions": (str,), "dataset": (dict,),
    "dtype": (str,), "d_model": (int,), "shards": (list,), "n_rows": (int,), "texts_done": (int,),
    "complete": (bool,),
}
_SHARD_FIELDS = ("file", "n_rows", "text_start", "text_end", "sha256")


def validate_manifest(m: Any, path: Path) -> dict[str, Any]:
    """Check a parsed manifest's structure; a damaged one raises one clear error."""
    if not isinstance(m, dict):
        raise _bad_manifest(path, f"it holds a JSON {type(m).__name__}, not an object")
    if m.get("format") != FORMAT:
        raise InterplabError(f"{path} has format {m.get('format')!r}, expected {FORMAT!r}; it is "
                             "not an interplab activation store of this version")
    missing = [k for k in _MANIFEST_FIELDS if k not in m]
    if missing:
        raise _bad_manifest(path, f"it lacks the key(s) {', '.join(missing)}")
    wrong = [k for k, t in _MANIFEST_FIELDS.items() if not isinstance(m[k], t)]
    if wrong:
        raise _bad_manifest(path, f"key(s) {', '.join(wrong)} have the wrong type")
    if not m["hooks"] or not all(isinstance(h, str) for h in m["hooks"]):
        raise _bad_manifest(path, "'hooks' must be a non-empty list of hook names")
    if m["dtype"] not in _TORCH_DTYPES or m["d_model"] < 1:
        raise _bad_manifest(path, f"dtype {m['dtype']!r} / d_model {m['d_model']!r} is invalid")
    if not _is_int(m["dataset"].get("n_texts")):
        raise _bad_manifest(path, "'dataset' has no valid n_texts")
    for i, sh in enumerate(m["shards"]):
        if not isinstance(sh, dict) or any(k not in sh for k in _SHARD_FIELDS):
            raise _bad_manifest(path, f"shard entry {i} lacks one of {', '.join(_SHARD_FIELDS)}")
        name = sh["file"]
        if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name \
                or "\\" in name:
            raise _bad_manifest(path, f"shard entry {i} names the file {name!r}, which is not a "
                                      "plain file name inside the store folder")
        if not all(_is_int(sh[k]) for k in ("n_rows", "text_start", "text_end")):
            raise _bad_manifest(path, f"shard entry {i} has invalid row or text counts")
    if sum(sh["n_rows"] for sh in m["shards"]) != m["n_rows"]:
        raise _bad_manifest(path, "its shard row counts do not add up to n_rows")
    return m


def read_manifest(folder: Path) -> dict[str, Any]:
    mpath = folder / MANIFEST
    try:
        return validate_manifest(json.loads(mpath.read_text("utf-8")), mpath)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _bad_manifest(mpath, f"it is not valid JSON ({exc})") from None


# --------------------------------------------------------------------------------------- writer


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


def check_finite_rows(tensors: dict[str, torch.Tensor], hooks: Sequence[str], path: Path) -> None:
    """Refuse rows holding NaN or inf, naming the text, position and hook."""
    for hook in hooks:
        row = _first_nonfinite(tensors[hook])
        if row is not None:
            raise InterplabError(
                f"hook {hook} produced a non-finite value (NaN or inf) at text "
                f"{int(tensors['text_index'][row])}, position {int(tensors['position'][row])}; "
                f"nothing from that shard was written to {path}. Check the model's "
                "weights and the text; inf in a float16 store means the values overflow "
                "float16 (store as bfloat16 or float32)"
            )


def write_shard_file(folder: Path, index: int, tensors: dict[str, torch.Tensor],
                     hooks: Sequence[str]) -> dict[str, Any]:
    """Write shard number ``index`` into ``folder`` atomically (after the finiteness check) and
    return its manifest entry without the text range. The bytes depend on the tensors alone, so
    any process (a local loop, a Ray worker) writes the same file for the same rows."""
    check_finite_rows(tensors, hooks, folder)
    name = shard_name(index)
    data = st_save({k: v.contiguous() for k, v in tensors.items()}, metadata={"format": FORMAT})
    try:
        atomic_write_bytes(folder / name, data)
    except OSError as exc:  # name the shard, whatever the OS named
        raise OSError(exc.errno, exc.strerror or str(exc), str(folder / name)) from exc
    sha = hashlib.sha256(data).hexdigest()
    remember_verified(folder / name, sha)  # a reader in this process need not hash it again
    return {"file": name, "n_rows": int(tensors["text_index"].shape[0]), "sha256": sha,
            "bytes": len(data)}



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
        try:
            if (self.path / MANIFEST).exists():
                self.manifest = self._existing(header)
            else:
                self._start_new(header)
        except BaseException:
            self.close()
            raise

    def _start_new(self, header: dict[str, Any]) -> None:
        self.manifest = validate_manifest(
            {"format": FORMAT, **header, "shards": [], "n_rows": 0, "texts_done": 0,
             "complete": False}, self.path / MANIFEST)
        self._write_manifest()

    def _existing(self, header: dict[str, Any]) -> dict[str, Any]:
        """The folder's manifest if ``header`` may append to it. A store without a single row
        (left by a run that failed early) is replaced, so the corrected command is not blocked."""
        manifest = read_manifest(self.path)
        diffs = identity_differences(manifest, header)
        if not diffs:
            return manifest
        if not manifest["shards"]:
            self._start_new(header)
            return self.manifest
        raise InterplabError(
            f"refusing to append to the store in {self.path}: its {manifest['n_rows']} rows were "
            f"written with different settings ({'; '.join(diffs)}). Resume with the original "
            "settings, or use a new --out folder."
        )

    @property
    def texts_done(self) -> int:
        return int(self.manifest["texts_done"])

    def _write_manifest(self, manifest: dict[str, Any] | None = None) -> None:
        data = json.dumps(manifest or self.manifest, indent=1, sort_keys=True).encode()
        try:
            atomic_write_bytes(self.path / MANIFEST, data)
        except OSError as exc:
            raise self.write_error(self.path / MANIFEST, exc) from exc

    def write_shard(self, tensors: dict[str, torch.Tensor], text_end: int) -> None:
        """Write one shard (all texts up to ``text_end`` done) and record it in the manifest.

        Rows holding NaN or inf are refused (naming the text, position and hook); a failed write
        (e.g. a full disk) raises an error naming the file, and the store stays resumable."""
        index = len(self.manifest["shards"])
        try:
            entry = write_shard_file(self.path, index, tensors, self.manifest["hooks"])
        except OSError as exc:
            raise self.write_error(Path(exc.filename), exc) from exc
        self.add_shard({**entry, "text_start": self.texts_done, "text_end": text_end})

    def add_shard(self, entry: dict[str, Any], exclusion_count: dict[str, int] | None = None,
                  ) -> None:
        """Record a shard already on disk (written by :func:`write_shard_file`, maybe by another
        process) as the next one; ``exclusion_count`` adds to ``sae_exclusion_count``."""
        index = len(self.manifest["shards"])
        if entry["file"] != shard_name(index) or entry["text_start"] != self.texts_done:
            raise InterplabError(
                f"shard {entry['file']} (texts {entry['text_start']}–{entry['text_end']}) is not "
                f"the next shard of {self.path} ({shard_name(index)}, from text "
                f"{self.texts_done}); shards are recorded in order")
        updated = {**self.manifest, "shards": [*self.manifest["shards"], entry],
                   "n_rows": self.manifest["n_rows"] + entry["n_rows"],
                   "texts_done": entry["text_end"]}
        if exclusion_count is not None:
            old = self.manifest.get("sae_exclusion_count") or {"n_seen": 0, "n_excluded": 0}
            updated["sae_exclusion_count"] = {k: old[k] + exclusion_count[k] for k in old}
        self._write_manifest(updated)
        self.manifest = updated

    def write_error(self, path: Path, exc: OSError) -> InterplabError:
        m = self.manifest
        return InterplabError(
            f"could not write {path} ({exc.strerror or exc}); the store keeps its {m['n_rows']} "
            f"rows ({m['texts_done']} of {m['dataset'].get('n_texts')} texts). Fix the cause "
            f"(e.g. free disk space), then {resume_hint(m)}"
        )

    def record(self, **info: Any) -> None:
        """Record facts that are not part of the identity (version, the command that resumes)."""
        self.manifest.update(info)
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


_ITEM_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "F64": 8, "I32": 4}
_MAX_HEADER = 100 << 20


def _damaged(path: Path, problem: str) -> InterplabError:
    return InterplabError(f"shard {path} is damaged ({problem}); run `interplab store verify "
                          f"{path.parent}` and harvest again into a new --out folder")


def _parse_header(path: Path) -> tuple[dict[str, Any], int]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise _damaged(path, "truncated: no header")
        (n,) = struct.unpack("<Q", raw)
        if n > min(size - 8, _MAX_HEADER):
            raise _damaged(path, f"its header claims {n} bytes, more than the file holds")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _damaged(path, "its header is not valid JSON") from None
    if not isinstance(header, dict):
        raise _damaged(path, "its header is not a JSON object")
    return header, 8 + n


def _tensor_loc(path: Path, key: str, meta: Any, base: int, size: int) -> _TensorLoc:
    try:
        dtype, shape, (start, end) = meta["dtype"], tuple(meta["shape"]), meta["data_offsets"]
        ok = (dtype in _ITEM_BYTES and all(_is_int(d) for d in shape) and _is_int(start)
              and _is_int(end) and end - start == _ITEM_BYTES[dtype] * int(np.prod(shape))
              and base + end <= size)
    except (TypeError, KeyError, ValueError):
        ok = False
    if not ok:
        raise _damaged(path, f"the header entry of tensor {key!r} is invalid")
    return _TensorLoc(dtype, shape, base + start)


def _read_header(path: Path, expect: dict[str, Any] | None = None) -> dict[str, _TensorLoc]:
    """Tensor locations of a shard, checked against the file size and, given ``expect`` (a
    manifest's shard entry plus ``hooks``, ``dtype``, ``d_model``), against the manifest."""
    header, base = _parse_header(path)
    size = path.stat().st_size
    out = {k: _tensor_loc(path, k, m, base, size) for k, m in header.items() if k != "__metadata__"}
    if expect is not None:
        _check_layout(path, out, expect)
    return out


def _check_layout(path: Path, locs: dict[str, _TensorLoc], expect: dict[str, Any]) -> None:
    rows, st_dtype = expect["n_rows"], expect["st_dtype"]
    for key in [*expect["hooks"], *META_KEYS]:
        want = ((st_dtype, (rows, expect["d_model"])) if key not in META_KEYS
                else ("I64", (rows,)))
        loc = locs.get(key)
        if loc is None:
            raise _damaged(path, f"it holds no tensor {key!r}")
        if (loc.dtype, loc.shape) != want:
            raise _damaged(path, f"tensor {key!r} is {loc.dtype} {list(loc.shape)}, the manifest "
                                 f"says {want[0]} {list(want[1])}")


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
        self.manifest: dict[str, Any] = read_manifest(self.path)
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

    @property
    def texts_done(self) -> int:
        """Texts whose rows are in the store (a prefix of the input texts)."""
        return int(self.manifest["texts_done"])

    @property
    def n_texts(self) -> int:
        """Texts the harvest was asked for."""
        return int(self.manifest["dataset"]["n_texts"])

    def require_complete(self, allow_incomplete: bool = False) -> None:
        """Raise unless the harvest finished (or ``allow_incomplete``): an interrupted store
        holds only a prefix of the texts, which silently biases whatever is trained on it. A
        store without a single row is refused either way: there is nothing to train or
        evaluate on."""
        if not self.complete and not allow_incomplete:
            raise InterplabError(
                f"the store {self.path} is incomplete: its harvest stopped after "
                f"{self.texts_done} of {self.n_texts} texts. Finish it first "
                f"({resume_hint(self.manifest)}), or pass --allow-incomplete "
                "(allow_incomplete=True) to use the rows it holds"
            )
        if self.n_rows == 0:
            raise InterplabError(f"the store {self.path} holds no rows: {self._why_empty()}")

    def _why_empty(self) -> str:
        count = self.manifest.get("sae_exclusion_count") or {}
        rule = self.manifest.get("sae_exclusion")
        if count.get("n_seen") and count.get("n_excluded") == count["n_seen"]:
            from interplab.activations.exclusion import ExclusionRule

            described = ExclusionRule.from_dict(rule).describe() if isinstance(rule, dict) \
                else "the SAE exclusion"
            return (f"the SAE exclusion ({described}) left out all {count['n_seen']} rows its "
                    f"positions ({self.manifest['positions']}) selected. Harvest again into a new "
                    "--out folder with positions past the first token (e.g. --positions all)")
        if not self.complete:
            return f"its harvest has written none yet; {resume_hint(self.manifest)}"
        return (f"its positions ({self.manifest['positions']}) selected no token of its "
                f"{self.n_texts} texts. Harvest again into a new --out folder with other "
                "--positions")

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
    def _header(self, shard: int) -> dict[str, _TensorLoc]:
        if shard not in self._headers:
            path = self.path / self.shards[shard]["file"]
            if not path.is_file():
                raise InterplabError(f"shard {path} is missing; run `interplab store verify "
                                     f"{self.path}` and harvest again into a new --out folder")
            self._check_checksum(shard, path)
            self._headers[shard] = _read_header(path, self._expect(shard))
        return self._headers[shard]

    def _check_checksum(self, shard: int, path: Path) -> None:
        """Refuse a shard whose size or sha256 differs from its manifest entry. Hashed once per
        process (streamed; cached by path, size and modification time), so every read that
        trains or evaluates sees the bytes the harvest wrote."""
        entry = self.shards[shard]
        key = _shard_key(path, entry["sha256"])
        if key in _VERIFIED_SHARDS:
            return
        size = key[1]
        if "bytes" in entry and size != entry["bytes"]:
            problem = f"has {size} bytes, the manifest says {entry['bytes']} (truncated or extended)"
        elif _sha256_file(path) != entry["sha256"]:
            problem = "fails its sha256 check: its bytes changed after the harvest wrote it"
        else:
            _VERIFIED_SHARDS.add(key)
            return
        raise InterplabError(
            f"shard {entry['file']} of the store {self.path} {problem}; training or evaluating "
            f"on it would use altered activations. Run `interplab store verify {self.path}` and "
            "harvest again into a new --out folder"
        )

    def _expect(self, shard: int) -> dict[str, Any]:
        return {"n_rows": self.shards[shard]["n_rows"], "hooks": self.hooks,
                "d_model": self.d_model, "st_dtype": self._st_dtype()}

    def _check_finite(self, shard: int, key: str, rows: torch.Tensor,
                      local: np.ndarray | None = None) -> None:
        """Raise if ``rows`` (read from ``shard``; at ``local`` rows if given) hold NaN or inf."""
        bad = _first_nonfinite(rows)
        if bad is None:
            return
        row = int(local[bad]) if local is not None else bad
        text = int(self._memmap(shard, "text_index")[row])
        pos = int(self._memmap(shard, "position")[row])
        raise InterplabError(
            f"shard {self.shards[shard]['file']} of the store {self.path} holds a non-finite value "
            f"(NaN or inf) for hook {key} at text {text}, position {pos}; training or evaluating "
            f"on it would give NaN. Run `interplab store verify {self.path}` and harvest again "
            "into a new --out folder"
        )

    def _memmap(self, shard: int, key: str) -> np.memmap:
        loc = self._header(shard)[key]
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
        out = self._to_torch(np.array(self._memmap(shard, key)), key)
        self._check_finite(shard, key, out)
        return out

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
            self._check_finite(int(s), key, self._to_torch(out[sel], key), local)
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
        loc = self._header(shard)[key]
        if out.size == 0:  # a shard whose every row was left out by the SAE exclusion
            return
        view = memoryview(out).cast("B")
        with open(self.path / self.shards[shard]["file"], "rb") as f:
            f.seek(loc.offset)
            got = f.readinto(view)
        if got != view.nbytes:
            raise InterplabError(f"shard {self.shards[shard]['file']} is truncated; run "
                                 f"`interplab store verify {self.path}`")
        self._check_finite(shard, key, self._to_torch(out, key))

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

        Batches are cut across epochs, so a ``batch_size`` larger than the store is refused when
        ``epochs > 1`` (a batch would hold rows several times) or ``drop_last`` (no batch could
        be drawn). Each shard's sha256 is checked the first time this process reads it.
        """
        if batch_size < 1:
            raise InterplabError(f"batch_size must be at least 1, not {batch_size}")
        if epochs < 1:
            raise InterplabError(f"epochs must be at least 1, not {epochs}")
        if batch_size > self.n_rows and (epochs > 1 or drop_last):
            # Batches are cut across epochs: a batch larger than the store would hold rows
            # several times (and with drop_last, one epoch would yield no batch at all).
            if not self.n_rows:
                raise InterplabError(f"the store {self.path} holds no rows: no batch can be "
                                     "drawn from it")
            why = (f"one batch would read every row about {-(-batch_size // self.n_rows)} times"
                   if epochs > 1 else "not one full batch can be drawn")
            raise InterplabError(
                f"batch size {batch_size} is larger than the store {self.path}, which holds "
                f"{self.n_rows} rows: {why}; use a batch size of at most {self.n_rows} "
                "(--batch-size)")
        return self._batches(batch_size, self._hook(hook), shuffle=shuffle, seed=seed,
                             epochs=epochs, shards_in_buffer=shards_in_buffer,
                             drop_last=drop_last, device=device, dtype=dtype,
                             with_position=with_position)

    def _batches(self, batch_size: int, key: str, *, shuffle: bool, seed: int, epochs: int,
                 shards_in_buffer: int, drop_last: bool, device: str | torch.device | None,
                 dtype: torch.dtype, with_position: bool,
                 ) -> Iterator[torch.Tensor] | Iterator[tuple[torch.Tensor, torch.Tensor]]:
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
        """Check every shard: present, recorded size and sha256, header layout, finite rows."""
        problems = []
        for i in range(len(self.shards)):
            problem = self._verify_shard(i)
            if problem:
                problems.append(f"shard {i} ({self.shards[i]['file']}) {problem}")
        if not self.complete:
            problems.append(f"the store is incomplete ({self.texts_done} of {self.n_texts} "
                            f"texts); {resume_hint(self.manifest)}")
        return VerifyReport(not problems, problems, len(self.shards), self.n_rows)

    def _verify_shard(self, i: int) -> str | None:
        s = self.shards[i]
        p = self.path / s["file"]
        if not p.is_file():
            return "is missing"
        size = p.stat().st_size
        if "bytes" in s and size != s["bytes"]:
            return f"has {size} bytes, manifest says {s['bytes']} (truncated or extended)"
        if _sha256_file(p) != s["sha256"]:
            return "fails its sha256 check (altered)"
        remember_verified(p, s["sha256"])
        try:
            self._headers[i] = _read_header(p, self._expect(i))
        except InterplabError as exc:
            return f"has a damaged header: {exc}"
        bad = []
        for hook in self.hooks:
            rows = self._to_torch(np.array(self._memmap(i, hook)), hook)
            flags = ~torch.isfinite(rows).all(dim=-1)
            if bool(flags.any()):
                r = int(flags.nonzero()[0, 0])
                bad.append(f"{int(flags.sum())} non-finite (NaN/inf) rows for {hook} (first: text "
                           f"{int(self._memmap(i, 'text_index')[r])}, position "
                           f"{int(self._memmap(i, 'position')[r])})")
        return "holds " + "; ".join(bad) if bad else None

    def info(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "path": str(self.path), "model": m["model"].get("name"),
            "model_variant": m["model"].get("variant"), "hooks": m["hooks"],
            "positions": m["positions"], "dataset": m["dataset"], "dtype": m["dtype"],
            "d_model": m["d_model"], "n_rows": self.n_rows, "n_shards": len(self.shards),
            "texts_done": m["texts_done"], "complete": self.complete,
            "sae_exclusion": self.exclusion_summary(),
            "interplab_version": m.get("interplab_version"),
            "bytes": sum(s.get("bytes", 0) for s in self.shards),
        }

    def exclusion_summary(self) -> str:
        """What a ``--for-sae`` harvest left out, from the manifest: the rule and how many of the
        tokens it saw (``"none"`` for a store that keeps every row)."""
        from interplab.activations.exclusion import ExclusionRule

        rule = self.manifest.get("sae_exclusion")
        if rule is None:
            return "none (every selected token is stored)"
        count = self.manifest.get("sae_exclusion_count") or {"n_seen": 0, "n_excluded": 0}
        return (f"{count['n_excluded']} of {count['n_seen']} tokens left out "
                f"({ExclusionRule.from_dict(rule).describe()})")

    def fingerprint(self) -> str:
        """sha256 of what the rows are: the identity fields of the manifest and every shard's
        checksum (two stores with the same fingerprint hold the same rows)."""
        blob = {"identity": {k: self.manifest.get(k) for k in IDENTITY_KEYS},
                "shards": [[s.get("sha256"), s.get("n_rows")] for s in self.shards]}
        return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()

    def __repr__(self) -> str:
        return (f"ActivationStore({str(self.path)!r}, rows={self.n_rows}, hooks={self.hooks}, "
                f"dtype={self.manifest['dtype']}, complete={self.complete})")
