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
from interplab.models import LanguageModel


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
    hooks: Sequence[str] | str,
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
    exclusion: ExclusionRule | None = None,
) -> ActivationStore:
    """Harvest ``texts`` into the store folder ``out``; re-running the same call resumes.

    Texts are processed in fixed chunks of ``texts_per_chunk`` (default ``8 * batch_size``); a
    shard is written whenever at least ``rows_per_shard`` rows are buffered at a chunk boundary,
    so a shard holds ``rows_per_shard`` rows plus at most one chunk's worth. Memory holds one shard,
    never the corpus. After a crash the store lists only complete shards, and the same call
    continues from the first text not yet in a shard. Pass ``texts=None`` and ``token_ids`` for
    sequences that are already tokenised (e.g. packed corpus windows).

    For a store meant for SAE training pass ``exclusion=ExclusionRule()``: rows it leaves out
    (position 0; a norm above ``norm_ratio`` × the median of the chunk, at any hook) are not
    written, and the manifest records the rule (``sae_exclusion``) and how many rows it dropped
    (``sae_exclusion_count``). ``None`` (the default for general harvesting) keeps every row.
    """
    if (texts is None) == (token_ids is None):
        raise InterplabError("give either texts or token_ids, not both (and not neither)")
    if texts is not None:
        texts = validate_texts(texts)
        n_texts = len(texts)
        identity = dataset_identity(texts, dataset_name)
    else:
        token_ids = validate_token_ids(lm, token_ids)
        n_texts = len(token_ids)
        identity = tokens_identity(token_ids, dataset_name)
    hooks = [hooks] if isinstance(hooks, str) else list(dict.fromkeys(hooks))
    if not hooks:
        raise InterplabError("no hooks given; name at least one, e.g. 'blocks.0.hook_resid_post'")
    for h in hooks:
        lm.parse_hook(h)
    if rows_per_shard < 1:
        raise InterplabError(f"rows_per_shard must be at least 1, not {rows_per_shard}")
    pos = Positions.parse(positions)
    pos.validate_count(n_texts)
    chunk = texts_per_chunk or 8 * batch_size
    header = {
        "interplab_version": interplab.__version__,
        "model": lm.identity(),
        "hooks": hooks,
        "positions": pos.spec,
        "dataset": identity,
        "dtype": dtype_name(dtype),
        "d_model": lm.d_model,
        "rows_per_shard": rows_per_shard,
        "texts_per_chunk": chunk,
        "sae_exclusion": exclusion.to_dict() if exclusion is not None else None,
    }
    with StoreWriter(out, header) as writer:
        writer.manifest["interplab_version"] = interplab.__version__
        start = writer.texts_done
        if writer.manifest["complete"]:
            return ActivationStore(out)
        if texts is not None:
            ids = lm.tokenize(texts[start:], max_length=max_length, truncation=truncation)
        else:
            ids = token_ids[start:]
        remaining = sum(len(t) for t in ids)
        buffer = []
        buffered_rows = 0
        with tqdm(total=remaining, unit="tok", desc=f"harvest → {out}", disable=not progress,
                  leave=False) as bar:
            for c0 in range(start, n_texts, chunk):
                c1 = min(c0 + chunk, n_texts)
                batches = list(iter_harvest_ids(
                    lm, ids[c0 - start : c1 - start], c0, hooks, pos, batch_size=batch_size,
                    dtype=dtype, padding_side=padding_side, compute_dtype=compute_dtype,
                    progress=bar,
                ))
                part = assemble(batches, hooks, lm.d_model, dtype)
                if exclusion is not None:
                    part = _drop_excluded(part, hooks, exclusion, writer.manifest)
                buffer.append(part)
                buffered_rows += part.n_rows
                if buffered_rows >= rows_per_shard or c1 == n_texts:
                    tensors = {h: torch.cat([p.acts[h] for p in buffer]) for h in hooks}
                    tensors["text_index"] = torch.cat([p.text_index for p in buffer])
                    tensors["position"] = torch.cat([p.position for p in buffer])
                    tensors["token_id"] = torch.cat([p.token_id for p in buffer])
                    writer.write_shard(tensors, text_end=c1)
                    buffer, buffered_rows = [], 0
        writer.finish()
    return ActivationStore(out)


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
