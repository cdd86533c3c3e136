"""Stream a harvest into an :class:`ActivationStore`, resumably."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

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
from interplab.activations.store import ActivationStore, StoreWriter, dtype_name
from interplab.errors import InterplabError
from interplab.models import HookPoint, LanguageModel
from interplab.models.hooks import HookLike
from interplab.models.loading import weights_sha256


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
    batch_size: int = 32,
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
) -> ActivationStore:
    """Harvest ``texts`` into the store folder ``out``; re-running the same call resumes.

    Texts are processed in fixed chunks of ``texts_per_chunk`` (default ``8 * batch_size``); a
    shard is written whenever at least ``rows_per_shard`` rows are buffered at a chunk boundary,
    so a shard holds ``rows_per_shard`` rows plus at most one chunk's worth. Memory holds one shard,
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
    """
    if (texts is None) == (token_ids is None):
        raise InterplabError("give either texts or token_ids, not both (and not neither)")
    _check_sizes(batch_size=batch_size, rows_per_shard=rows_per_shard,
                 texts_per_chunk=texts_per_chunk, max_length=max_length)
    if padding_side not in ("left", "right"):
        raise InterplabError(f"padding_side must be 'left' or 'right', not {padding_side!r}")
    points = lm.resolve_hooks(hooks)
    pos = Positions.parse(positions)
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
    chunk = texts_per_chunk or 8 * batch_size
    header = {
        "interplab_version": interplab.__version__,
        "model": {**lm.identity(), "weights_sha256": weights_sha256(lm.hf)},
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
        _fill(writer, lm, ids, points, pos, chunk, rows_per_shard, progress=progress,
              batch_size=batch_size, dtype=dtype, padding_side=padding_side,
              compute_dtype=compute_dtype, exclusion=exclusion)
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


def _fill(writer: StoreWriter, lm: LanguageModel, ids: Sequence[Sequence[int]],
          hooks: list[HookPoint], pos: Positions, chunk: int, rows_per_shard: int, *,
          progress: bool, exclusion: ExclusionRule | None = None, **harvest_kw) -> None:
    """Harvest the texts the store does not hold yet, chunk by chunk, into shards."""
    names = [hp.name for hp in hooks]
    n_texts, start = len(ids), writer.texts_done
    buffer: list = []
    buffered_rows = 0
    remaining = sum(len(t) for t in ids[start:])
    with tqdm(total=remaining, unit="tok", desc=f"harvest → {writer.path}",
              disable=not progress, leave=False) as bar:
        for c0 in range(start, n_texts, chunk):
            c1 = min(c0 + chunk, n_texts)
            batches = list(iter_harvest_ids(lm, ids[c0:c1], c0, hooks, pos, progress=bar,
                                            **harvest_kw))
            part = assemble(batches, names, lm.d_model, harvest_kw["dtype"])
            if exclusion is not None:
                part = _drop_excluded(part, names, exclusion, writer.manifest)
            buffer.append(part)
            buffered_rows += part.n_rows
            if buffered_rows >= rows_per_shard or c1 == n_texts:
                tensors = {h: torch.cat([p.acts[h] for p in buffer]) for h in names}
                for key in ("text_index", "position", "token_id"):
                    tensors[key] = torch.cat([getattr(p, key) for p in buffer])
                writer.write_shard(tensors, text_end=c1)
                buffer, buffered_rows = [], 0


def _drop_excluded(part: Activations, hooks: list[str], rule: ExclusionRule,
                   manifest: dict) -> Activations:
    """The rows of ``part`` that ``rule`` keeps at every hook; the count goes in ``manifest``."""
    keep = torch.ones(part.position.shape[0], dtype=torch.bool)
    for h in hooks:
        keep &= rule.keep_mask(part.acts[h], part.position)
    count = manifest.setdefault("sae_exclusion_count", {"n_seen": 0, "n_excluded": 0})
    count["n_seen"] += int(keep.numel())
    count["n_excluded"] += int((~keep).sum())
    return Activations({h: part.acts[h][keep] for h in hooks}, part.text_index[keep],
                       part.position[keep], part.token_id[keep])
