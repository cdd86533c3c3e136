"""Stream a harvest into an :class:`ActivationStore`, resumably."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

import interplab
from interplab.activations.exclusion import ExclusionRule
from interplab.activations.harvest import (
    Activations,
    assemble,
    iter_harvest_ids,
    validate_texts,
    validate_token_ids,
)
from interplab.activations.positions import Positions
from interplab.activations.store import (
    ActivationStore,
    StoreWriter,
    dtype_name,
    write_shard_file,
)
from interplab.defaults import DEFAULT_BATCH_SIZE
from interplab.errors import InterplabError
from interplab.models import HookPoint
from interplab.models.hooks import HookLike
from interplab.threads import AdaptiveThreads

if TYPE_CHECKING:  # transformers loads only when a model is run, not to import this module
    from interplab.models import LanguageModel


def _weights_sha256(model: torch.nn.Module) -> str:
    from interplab.models.loading import weights_sha256

    return weights_sha256(model)


def dataset_identity(texts: Sequence[str], name: str | None = None) -> dict:
    """Name, count and content hash of a list of texts."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return {"name": name or "texts", "n_texts": len(texts), "sha256": h.hexdigest()}


def tokens_identity(token_ids: Sequence[Sequence[int]], name: str | None = None) -> dict:
    """Name, count and content hash of pre-tokenised sequences."""
    h = hashlib.sha256()
    for t in token_ids:
        h.update(np.asarray(t, dtype=np.int64).tobytes())
        h.update(b"\xff" * 8)
    return {"name": name or "token-sequences", "n_texts": len(token_ids), "sha256": h.hexdigest(),
            "pretokenized": True}


def harvest_to_store(
    lm: LanguageModel,
    texts: Sequence[str] | None,
    hooks: Sequence[HookLike] | HookLike,
    out: str | os.PathLike,
    positions: str | Positions = "all",
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    rows_per_shard: int = 65536,
    texts_per_chunk: int | None = None,
    dtype: torch.dtype = torch.float32,
    dataset_name: str | None = None,
    padding_side: str = "right",
    max_length: int | None = None,
    truncation: str = "warn",
    compute_dtype: torch.dtype | None = None,
    token_ids: Sequence[Sequence[int]] | None = None,
    progress: bool = True,
    command: str | None = None,
    exclusion: ExclusionRule | None = None,
    threads: int | str | None = None,
    executor=None,
    worker_model=None,
) -> ActivationStore:
    """Harvest ``texts`` into the store folder ``out``; re-running the same call resumes.

    Texts are processed in fixed chunks of ``texts_per_chunk`` (default ``8 * batch_size``); a
    shard ends at the first chunk boundary where the rows the positions select reach
    ``rows_per_shard``, so a shard holds ``rows_per_shard`` rows plus at most one chunk's worth
    (fewer once ``exclusion`` drops some: the cut is planned from token counts before the
    harvest, :func:`plan_shards`). Memory holds one shard,
    never the corpus. After a crash the store lists only complete shards, and the same call
    continues from the first text not yet in a shard. Pass ``texts=None`` and ``token_ids`` for
    sequences that are already tokenised (e.g. packed corpus windows).

    Every setting that changes a row's values is part of the store's identity (model incl. a hash
    of its weights, hooks, positions, texts, dtype, ``max_length``, ``truncation``,
    ``compute_dtype``, ``padding_side``, ``batch_size``, shard and chunk sizes): a resume with any
    of them changed is refused, naming what differs. All input is validated before the folder is
    created, and a store left without a single row is replaced by the next call. ``command``
    (the command line that resumes this harvest) is recorded in the manifest and shown in
    messages about an unfinished store.

    For a store meant for SAE training pass ``exclusion=ExclusionRule()``: rows it leaves out
    (position 0; a norm above ``norm_ratio`` × the median of the chunk, at any hook) are not
    written, and the manifest records the rule (``sae_exclusion``) and how many rows it dropped
    (``sae_exclusion_count``). ``None`` (the default for general harvesting) keeps every row.
    ``threads`` is the torch/BLAS thread count for the pass, as in :func:`harvest_tokens`
    (default ``$INTERPLAB_THREADS`` or ``"auto"``, re-decided as the pass runs), restored on
    return.

    ``executor`` (an :mod:`interplab.distributed` executor; None: a loop in this process) runs
    one task per shard. The shards' text ranges are planned before anything runs
    (:func:`plan_shards`) and recorded in shard order, so every executor writes the same store,
    byte for byte, and resumes the same way. A remote executor (Ray) loads the model in each
    worker from ``worker_model`` (e.g. ``interplab.distributed.ModelSpec(DEFAULT_MODEL)``) and
    checks that its weights hash to ``lm``'s; the store folder must be on storage every worker
    can write (see docs/distributed.md).
    """
    if (texts is None) == (token_ids is None):
        raise InterplabError("give either texts or token_ids, not both (and not neither)")
    _check_sizes(batch_size=batch_size, rows_per_shard=rows_per_shard,
                 texts_per_chunk=texts_per_chunk, max_length=max_length)
    if padding_side not in ("left", "right"):
        raise InterplabError(f"padding_side must be 'left' or 'right', not {padding_side!r}")
    points = lm.resolve_hooks(hooks)
    pos = Positions.parse(positions)
    if executor is not None and executor.remote and worker_model is None:
        raise InterplabError("a remote executor loads the model in each worker: pass "
                             "worker_model (e.g. interplab.distributed.ModelSpec('name'))")
    # Everything is validated (and every text tokenised) before the store folder is touched.
    if texts is not None:
        texts = validate_texts(texts)
        identity = dataset_identity(texts, dataset_name)
        ids = lm.tokenize(texts, max_length=max_length, truncation=truncation)
        limit: int | None = min(max_length or lm.n_ctx, lm.n_ctx)
    else:
        ids = validate_token_ids(lm, token_ids)
        identity = tokens_identity(ids, dataset_name)
        limit, truncation = None, "none"
    n_texts = len(ids)
    pos.validate_count(n_texts)
    _check_positions(lm, pos, ids)
    _check_some_row_is_kept(lm, pos, ids, exclusion)
    chunk = texts_per_chunk or 8 * batch_size
    header = {
        "interplab_version": interplab.__version__,
        "model": {**lm.identity(), "weights_sha256": _weights_sha256(lm.hf)},
        "hooks": [hp.name for hp in points],
        "positions": pos.spec,
        "dataset": identity,
        "dtype": dtype_name(dtype),
        "d_model": lm.d_model,
        "rows_per_shard": rows_per_shard,
        "texts_per_chunk": chunk,
        "max_length": limit,
        "truncation": truncation,
        "compute_dtype": str(compute_dtype or lm.dtype).removeprefix("torch."),
        "padding_side": padding_side,
        "batch_size": batch_size,
        "sae_exclusion": exclusion.to_dict() if exclusion is not None else None,
    }
    with StoreWriter(out, header) as writer:
        writer.record(interplab_version=interplab.__version__,
                      **({"command": command} if command else {}))
        if writer.manifest["complete"]:
            return ActivationStore(out)
        with AdaptiveThreads(threads):
            _fill(writer, lm, ids, points, pos, chunk, rows_per_shard, progress=progress,
                  batch_size=batch_size, dtype=dtype, padding_side=padding_side,
                  compute_dtype=compute_dtype, exclusion=exclusion, executor=executor,
                  worker_model=worker_model)
        if writer.manifest["n_rows"] == 0:  # left incomplete: the next run replaces it
            count = writer.manifest.get("sae_exclusion_count") or {}
            raise InterplabError(
                f"the harvest into {writer.path} kept no rows: the SAE exclusion "
                f"({exclusion.describe() if exclusion else 'none'}) left out all "
                f"{count.get('n_seen', 0)} rows the positions {pos.spec!r} selected, so the store "
                "would be empty. Choose positions with ordinary tokens (e.g. all) or harvest "
                "without the exclusion (no --for-sae)")
        writer.finish()
    return ActivationStore(out)


def _check_sizes(**sizes: int | None) -> None:
    for name, value in sizes.items():
        if value is not None and (not isinstance(value, int) or value < 1):
            flag = "--" + name.replace("_", "-")
            raise InterplabError(f"{name} ({flag}) must be a positive integer, not {value!r}")


def _check_positions(lm: LanguageModel, pos: Positions, ids: Sequence[Sequence[int]]) -> None:
    """Selectors that can miss a text (index:N, explicit) are checked on every text up front."""
    if pos.kind in ("index", "explicit"):
        has_bos = lm.bos_token_id is not None
        for i, t in enumerate(ids):
            pos.select(i, len(t), has_bos)


def _check_some_row_is_kept(lm: LanguageModel, pos: Positions, ids: Sequence[Sequence[int]],
                            exclusion: ExclusionRule | None) -> None:
    """Refuse, before anything is written, a harvest whose positions select no row, or only
    rows at position 0 that the SAE exclusion leaves out (a complete store of 0 rows)."""
    has_bos = lm.bos_token_id is not None
    drop_first = exclusion is not None and exclusion.first_position
    selected = False
    for i, t in enumerate(ids):
        chosen = pos.select(i, len(t), has_bos)
        selected = selected or bool(chosen)
        if any(p != 0 for p in chosen) or (chosen and not drop_first):
            return
    if not selected:
        raise InterplabError(
            f"the positions {pos.spec!r} select no token of any of the {len(ids)} texts, so the "
            "store would hold no rows; choose other positions (e.g. all)")
    raise InterplabError(
        f"every row would be left out: the positions {pos.spec!r} select only position 0 of "
        f"each of the {len(ids)} texts, and the SAE exclusion (--for-sae: "
        f"{exclusion.describe() if exclusion else ''}) leaves position 0 out of the store. "
        "Choose positions past the first token (e.g. all, or index:N with N >= 1), or harvest "
        "without --for-sae")


@dataclass(frozen=True)
class ShardTask:
    """One shard of a harvest: the texts ``text_start:text_end`` (whole chunks), their token ids
    and every setting that shapes the rows, so any process can write the shard on its own."""

    index: int  # the shard's number in the store
    text_start: int
    text_end: int
    token_ids: Sequence[Sequence[int]]  # ids of texts text_start:text_end
    folder: str
    hooks: tuple[str, ...]  # names, in forward order
    positions: Positions
    chunk: int
    batch_size: int
    dtype: torch.dtype
    padding_side: str
    compute_dtype: torch.dtype | None
    exclusion: ExclusionRule | None
    weights_sha256: str  # the model a worker loads must have these weights


def plan_shards(ids: Sequence[Sequence[int]], pos: Positions, has_bos: bool, start: int,
                chunk: int, rows_per_shard: int) -> list[tuple[int, int]]:
    """The text ranges of the shards still to write, from text ``start`` on.

    Texts go in fixed chunks of ``chunk`` from ``start`` (a chunk boundary); a shard ends at the
    first chunk boundary where the rows the positions select reach ``rows_per_shard``, or at the
    last text. Row counts come from the token ids alone (before any SAE exclusion, which depends
    on the activations), so the plan is known before anything runs and every executor, in any
    order, writes the same shards."""
    bounds, first, rows = [], start, 0
    for c0 in range(start, len(ids), chunk):
        c1 = min(c0 + chunk, len(ids))
        rows += sum(len(pos.select(i, len(ids[i]), has_bos)) for i in range(c0, c1))
        if rows >= rows_per_shard or c1 == len(ids):
            bounds.append((first, c1))
            first, rows = c1, 0
    return bounds


def harvest_shard(task: ShardTask, lm: LanguageModel, bar: tqdm | None = None) -> dict:
    """Harvest one shard's texts chunk by chunk and write its file; returns its manifest entry
    plus ``exclusion_count`` (rows seen and left out by the SAE exclusion, if any)."""
    parts, count = [], {"n_seen": 0, "n_excluded": 0}
    kw = {"batch_size": task.batch_size, "dtype": task.dtype, "padding_side": task.padding_side,
          "compute_dtype": task.compute_dtype}
    points = lm.resolve_hooks(task.hooks)
    for c0 in range(task.text_start, task.text_end, task.chunk):
        c1 = min(c0 + task.chunk, task.text_end)
        ids = task.token_ids[c0 - task.text_start : c1 - task.text_start]
        batches = list(iter_harvest_ids(lm, ids, c0, points, task.positions, progress=bar,
                                        **kw))
        part = assemble(batches, task.hooks, lm.d_model, task.dtype)
        if task.exclusion is not None:
            part = _drop_excluded(part, list(task.hooks), task.exclusion, count)
        parts.append(part)
    tensors = {h: torch.cat([p.acts[h] for p in parts]) for h in task.hooks}
    for key in ("text_index", "position", "token_id"):
        tensors[key] = torch.cat([getattr(p, key) for p in parts])
    entry = write_shard_file(Path(task.folder), task.index, tensors, task.hooks)
    return {**entry, "text_start": task.text_start, "text_end": task.text_end,
            "exclusion_count": count if task.exclusion is not None else None}


_WORKER_MODELS: dict = {}


def harvest_shard_in_worker(task: ShardTask, model) -> dict:
    """:func:`harvest_shard` in a worker process: the model is loaded from ``model`` (anything
    with a ``load()`` returning a LanguageModel, e.g. ``interplab.distributed.ModelSpec``) once
    per process, and its weights must hash to the store's ``weights_sha256``."""
    if model not in _WORKER_MODELS:
        lm = model.load()
        _WORKER_MODELS.clear()  # one model per worker process
        _WORKER_MODELS[model] = (lm, _weights_sha256(lm.hf))
    lm, sha = _WORKER_MODELS[model]
    if sha != task.weights_sha256:
        raise InterplabError(
            f"the model a worker loaded from {model} has other weights (sha256 {sha[:12]}…) than "
            f"the store's ({task.weights_sha256[:12]}…); install the same model files on every "
            "node (or put them on the shared storage) and run again")
    return harvest_shard(task, lm)


def _fill(writer: StoreWriter, lm: LanguageModel, ids: Sequence[Sequence[int]],
          hooks: list[HookPoint], pos: Positions, chunk: int, rows_per_shard: int, *,
          progress: bool, executor=None, worker_model=None,
          exclusion: ExclusionRule | None = None, **harvest_kw) -> None:
    """Harvest the texts the store does not hold yet, shard by shard, through ``executor``
    (None: in this process). Shards are recorded in the manifest in shard order, whatever order
    they finish in, so the store is the same for every executor."""
    start = writer.texts_done
    bounds = plan_shards(ids, pos, lm.bos_token_id is not None, start, chunk, rows_per_shard)
    first = len(writer.manifest["shards"])
    tasks = [ShardTask(first + j, a, b, ids[a:b], str(writer.path.resolve()),
                       tuple(hp.name for hp in hooks), pos, chunk, exclusion=exclusion,
                       weights_sha256=writer.manifest["model"]["weights_sha256"], **harvest_kw)
             for j, (a, b) in enumerate(bounds)]
    with tqdm(total=sum(len(t) for t in ids[start:]), unit="tok", desc=f"harvest → {writer.path}",
              disable=not progress or executor is not None, leave=False) as bar:
        if executor is None or not executor.remote:
            results = _run_locally(executor, tasks, partial(harvest_shard, lm=lm, bar=bar))
        else:
            results = executor.run(partial(harvest_shard_in_worker, model=worker_model), tasks,
                                   description=f"harvest → {writer.path} (shards)")
        _record_in_order(writer, results)


def _record_in_order(writer: StoreWriter, results) -> None:
    """Add shards to the manifest in shard order as ``(task index, entry)`` pairs arrive in any
    order; a shard finished early waits (on disk, unlisted) for those before it."""
    first = len(writer.manifest["shards"])
    finished: dict[int, dict] = {}
    try:
        for i, entry in results:
            finished[i] = entry
            while len(writer.manifest["shards"]) - first in finished:
                entry = finished.pop(len(writer.manifest["shards"]) - first)
                writer.add_shard(entry, entry.pop("exclusion_count"))
    except OSError as exc:  # e.g. a full disk while a shard was written
        raise writer.write_error(Path(exc.filename or writer.path), exc) from exc


def _run_locally(executor, tasks: list[ShardTask], fn):
    if executor is None:
        return ((i, fn(t)) for i, t in enumerate(tasks))
    return executor.run(fn, tasks, description="harvest (shards)")


def _drop_excluded(part: Activations, hooks: list[str], rule: ExclusionRule,
                   count: dict) -> Activations:
    """The rows of ``part`` that ``rule`` keeps at every hook; the count is added to ``count``."""
    keep = torch.ones(part.position.shape[0], dtype=torch.bool)
    for h in hooks:
        keep &= rule.keep_mask(part.acts[h], part.position)
    count["n_seen"] += int(keep.numel())
    count["n_excluded"] += int((~keep).sum())
    return Activations({h: part.acts[h][keep] for h in hooks}, part.text_index[keep],
                       part.position[keep], part.token_id[keep])
