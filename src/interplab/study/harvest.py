"""The one statement harvest every study uses: residual stream at chosen blocks, one row per
statement, optionally with each statement's log-probability, cached on disk.

The cache key names the model's identity *and* a hash of its weights, the dataset's content
hash, the blocks, the token rule and whether log-probabilities were taken, so changed weights
saved under the same name, or an edited CSV, are harvested again. Statements of several datasets
go through one harvest call (the length sorting and shared prefixes then pad and recompute
less); the groups are fixed from the whole dataset list before the cache is read, so a run
resumed after an interruption harvests exactly the groups an uninterrupted run does and gives
the same numbers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from safetensors.numpy import load_file, save

from interplab.activations import Positions, harvest
from interplab.datasets import Split, StatementDataset
from interplab.fileio import atomic_write_bytes
from interplab.models import HookPoint, LanguageModel, load
from interplab.models.loading import weights_sha256
from interplab.progress import LineProgress, TaskAdvance
from interplab.study.data import StatementData, load_statements
from interplab.study.layers import LayerChoice, choose_layer_by_probe, fixed_layer
from interplab.study.settings import LAST_TOKEN, RunConfig, SplitConfig

# Statements of several datasets go through one harvest call (up to this many per call).
HARVEST_GROUP = 2048


class StatementActs(NamedTuple):
    """One dataset's harvest: ``acts [L, n, d]`` (float32, rows in statement order) and
    ``logprob [n]`` (each statement's log-probability under the model) or None."""

    acts: np.ndarray
    logprob: np.ndarray | None


def cache_path(cache_dir: Path, identity: dict, ds: StatementDataset, layers: list[int],
               with_logprobs: bool, tokens: str = LAST_TOKEN) -> Path:
    key = json.dumps({"model": identity, "dataset": ds.content_hash, "layers": layers,
                      "tokens": tokens, "logprobs": with_logprobs}, sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return cache_dir / f"{ds.name}-{digest}.safetensors"


def _read_cache(path: Path | None, ds: StatementDataset, layers: list[int],
                with_logprobs: bool) -> StatementActs | None:
    """The cached harvest, or None when there is none or it is not usable (damaged, wrong shape,
    not finite): such a file is harvested again and replaced, never read into a result."""
    if path is None or not path.is_file():
        return None
    try:
        t = load_file(str(path))
        X, lp = t["acts"], t.get("logprob")
    except Exception:  # noqa: BLE001 - a damaged cache file is re-harvested, not fatal
        return None
    if X.shape[:2] != (len(layers), len(ds)) or (with_logprobs and lp is None):
        return None
    if not np.isfinite(X).all() or (lp is not None and not np.isfinite(lp).all()):
        return None
    return StatementActs(X, lp)


def _write_cache(path: Path, part: StatementActs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"acts": np.ascontiguousarray(part.acts)}
    if part.logprob is not None:
        tensors["logprob"] = np.ascontiguousarray(part.logprob)
    atomic_write_bytes(path, save(tensors))


def harvest_group(lm: LanguageModel, group: list[StatementDataset], layers: list[int],
                  batch_size: int, with_logprobs: bool, threads: int | None,
                  positions: str | Positions = "last", progress: Any = None
                  ) -> list[StatementActs]:
    """resid_post ``[L, n, d]`` (and log-probabilities) of each dataset in ``group``, harvested
    in one call over all their statements.

    One row per text: the last token by default; with ``positions`` selecting several tokens of
    a text (e.g. ``Positions.explicit``, for a group of one dataset), their mean. ``progress``
    (an ``update(n)`` sink) gets each batch's token count."""
    hooks = [HookPoint.resid_post(layer) for layer in layers]
    n = sum(len(ds) for ds in group)
    acts = harvest(lm, [s for ds in group for s in ds.statements], hooks, positions,
                   batch_size=batch_size, with_logprobs=with_logprobs,
                   progress=progress if progress is not None else False, threads=threads)
    X = torch.stack([acts[h] for h in hooks]).float().numpy()  # [L, rows, d]
    if X.shape[1] != n:  # several tokens per text: their mean
        text = acts.text_index.numpy()
        X = np.stack([np.add.reduceat(x, np.flatnonzero(np.r_[True, text[1:] != text[:-1]]))
                      for x in X]) / np.bincount(text, minlength=n)[None, :, None]
    lp = acts.text_logprob.float().numpy() if with_logprobs else None
    ends = np.cumsum([len(ds) for ds in group])
    return [StatementActs(X[:, a:b], None if lp is None else lp[a:b])
            for a, b in zip([0, *ends[:-1]], ends, strict=True)]


def plan_groups(datasets: dict[str, StatementDataset], one_per_group: bool = False
                ) -> list[list[str]]:
    """Datasets in harvest calls: in order, a new call once the current one holds
    :data:`HARVEST_GROUP` statements (or one dataset per call)."""
    groups: list[list[str]] = []
    for name in datasets:
        full = groups and sum(len(datasets[n]) for n in groups[-1]) >= HARVEST_GROUP
        if not groups or full or one_per_group:
            groups.append([])
        groups[-1].append(name)
    return groups


def harvest_statements(
    lm: LanguageModel, datasets: dict[str, StatementDataset], layers: list[int], *,
    batch_size: int, progress: LineProgress | None = None, label: str = "model",
    cache_dir: Path | None = None, with_logprobs: bool = True, threads: int | None = None,
    tokens: str = LAST_TOKEN,
    positions_of: Callable[[StatementDataset], str | Positions] | None = None,
) -> tuple[dict[str, StatementActs], int]:
    """Per dataset its :class:`StatementActs`; also how many datasets came from the cache.

    ``positions_of(ds)`` (default: the last token) selects the tokens averaged per statement;
    such datasets are harvested one per call, since their positions are their own (``tokens``
    must then describe the rule: it is part of the cache key). ``progress`` is anything with
    ``add_task``/``advance`` (a rich ``Progress`` or :class:`LineProgress`): one task counts the
    tokens to harvest and advances after every batch, so a group of thousands of statements is
    not minutes of silence."""
    identity = {**lm.identity(), "weights_sha256": weights_sha256(lm.hf)} if cache_dir else None
    paths = {name: cache_path(cache_dir, identity, ds, layers, with_logprobs, tokens)
             if cache_dir else None for name, ds in datasets.items()}
    out: dict[str, StatementActs] = {}
    reused = 0
    groups = plan_groups(datasets, one_per_group=positions_of is not None)
    todo = []
    for names in groups:  # the groups are fixed before the cache is read
        hits = {n: _read_cache(paths[n], datasets[n], layers, with_logprobs) for n in names}
        if all(hit is not None for hit in hits.values()):
            out.update(hits)  # type: ignore[arg-type]
            reused += len(names)
        else:  # the whole group again: its numbers then equal an uninterrupted run's
            todo.append(names)
    sink = None
    if progress is not None:
        n_tokens = sum(len(t) for names in todo for t in lm.tokenize(
            [s for n in names for s in datasets[n].statements]))
        cached = f", {reused} of {len(datasets)} datasets from the cache" if reused else ""
        task = progress.add_task(f"harvest ({label}{cached})", total=max(n_tokens, 1),
                                 unit="tokens")
        sink = TaskAdvance(progress, task)
        if not todo:
            sink.update(1)
    for names in todo:
        positions = positions_of(datasets[names[0]]) if positions_of else "last"
        parts = harvest_group(lm, [datasets[n] for n in names], layers, batch_size,
                              with_logprobs, threads, positions, progress=sink)
        for name, part in zip(names, parts, strict=True):
            out[name] = part
            if paths[name] is not None:
                _write_cache(paths[name], part)
    return {name: out[name] for name in datasets}, reused


@dataclass
class AtLayer:
    """One statement dataset read at one block: its entity split, the model, the layer and how
    it was chosen, and the last-token resid_post rows ``acts [n, d]`` (float32)."""

    data: StatementData
    name: str
    lm: LanguageModel
    choice: LayerChoice
    acts: np.ndarray

    @property
    def hook(self) -> str:
        return HookPoint.resid_post(self.choice.layer).name

    @property
    def dataset(self) -> StatementDataset:
        return self.data.datasets[self.name]

    @property
    def split(self) -> Split:
        return self.data.splits[self.name]


def statements_at_layer(run: RunConfig, split: SplitConfig, dataset: str, layer: int | None, *,
                        probe: str = "logistic", centering: str = "train",
                        cache_dir: Path | None = None) -> AtLayer:
    """``dataset`` loaded and split by the spine's convention, and its statements' last-token
    resid_post at ``layer``; with ``layer`` None, at the block chosen on validation
    (:func:`~interplab.study.layers.choose_layer_by_probe`: every block is harvested once)."""
    data = load_statements([dataset], split, run.seed)
    name = data.names[0]
    data.check_training([name])
    lm = load(run.model, device=run.device)
    ds = data.datasets[name]
    if layer is not None:
        choice = fixed_layer(layer, lm.n_layers)
        layers = [choice.layer]
    else:
        layers = list(range(lm.n_layers))
    out, _ = harvest_statements(lm, {name: ds}, layers, batch_size=run.batch_size,
                                cache_dir=cache_dir, with_logprobs=False, threads=run.threads)
    X = out[name].acts
    if layer is None:
        s = data.splits[name]
        choice = choose_layer_by_probe(X, ds.labels, s.train, s.val, layers, probe, centering)
    return AtLayer(data, name, lm, choice, np.ascontiguousarray(X[layers.index(choice.layer)]))
