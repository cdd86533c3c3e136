"""SAEs trained once per model, hook, data and settings, and kept in a cache folder.

A study that needs SAEs at a few hooks asks :func:`cached_saes` for them: each SAE is looked up
under a key that hashes the model's identity *and* the sha256 of its weights, the hook, the
training data (corpus content hash, context length, number of sequences, the token exclusion
rule) and every SAE and trainer setting that changes the weights. What is missing is trained in
one harvest (all missing hooks in one forward pass over the corpus) and one trainer per hook (all
of that hook's SAEs from one pass over its rows), then saved; a second call with the same
settings trains nothing.

The cache folder is ``$INTERPLAB_CACHE/saes`` or ``~/.cache/interplab/saes`` (``$XDG_CACHE_HOME``
respected); ``cache_dir=`` names another one (e.g. a run's own folder, to keep the home
directory out of it). An SAE is written to a temporary folder and renamed into place, so a killed
run never leaves a half-written SAE where a later run would read it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from interplab.activations.exclusion import ExclusionCount, ExclusionRule
from interplab.defaults import DEFAULT_CORPUS_BATCH_SIZE
from interplab.errors import InterplabError
from interplab.sae.config import SAEConfig, TrainerConfig

HELD_OUT_FRACTION = 0.05  # last 5 % of the corpus's documents: never trained on
# TrainerConfig fields that do not change the weights (not part of the key)
_NOT_IN_KEY = {"log_path", "log_every_steps", "checkpoint_dir", "checkpoint_every_steps",
               "wandb_project", "device", "progress", "data_identity"}


def default_cache_dir() -> Path:
    """``$INTERPLAB_CACHE/saes``, else ``$XDG_CACHE_HOME/interplab/saes``, else
    ``~/.cache/interplab/saes``."""
    root = os.environ.get("INTERPLAB_CACHE")
    if root:
        return Path(root).expanduser() / "saes"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "interplab" / "saes"


@dataclass(frozen=True)
class CorpusData:
    """The tokens SAEs are trained on: the first ``1 − HELD_OUT_FRACTION`` of a packaged corpus's
    documents, packed into ``n_sequences`` windows of ``context_length`` tokens, each opening
    with the model's BOS token (or EOS when it has none); the exclusion rule leaves out position
    0 and massive-norm tokens."""

    corpus: str = "kjv"
    context_length: int = 64
    n_sequences: int = 512
    exclusion: ExclusionRule = field(default_factory=ExclusionRule)

    def tokens(self, lm: Any, part: str = "train") -> tuple[torch.Tensor, int]:
        """``[n, context_length]`` ids of the ``train`` (or ``held_out``) documents, and the id
        each window opens with."""
        from interplab.datasets.corpus import load_corpus, pack_tokens

        docs = load_corpus(self.corpus).documents
        cut = len(docs) - max(1, round(len(docs) * HELD_OUT_FRACTION))
        docs = docs[:cut] if part == "train" else docs[cut:]
        bos = lm.bos_token_id if lm.bos_token_id is not None else lm.tokenizer.eos_token_id
        toks = pack_tokens(docs, lm.tokenizer, self.context_length, bos="each",
                           bos_token_id=bos, max_sequences=self.n_sequences)
        if part == "train" and len(toks) < self.n_sequences:
            raise InterplabError(f"the {self.corpus} corpus gives {len(toks)} windows of "
                                 f"{self.context_length} tokens, fewer than the "
                                 f"{self.n_sequences} asked for; lower n_sequences")
        return toks, int(bos)

    def identity(self) -> dict[str, Any]:
        from interplab.datasets.corpus import load_corpus

        return {"corpus": load_corpus(self.corpus).sha256, "name": self.corpus,
                "context_length": self.context_length, "n_sequences": self.n_sequences,
                "held_out_fraction": HELD_OUT_FRACTION, "exclusion": self.exclusion.to_dict()}


@dataclass
class CachedSae:
    """One SAE of :func:`cached_saes`: where it lives and whether this call trained it."""

    hook: str
    architecture: str
    path: str
    key: str
    trained: bool
    bytes: int
    train_seconds: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SaeCacheReport:
    """What :func:`cached_saes` did: per SAE its folder, whether it was trained now, its size;
    the harvest's tokens and time; warnings about a run too small to mean much."""

    saes: list[CachedSae]
    cache_dir: str
    harvest_seconds: float = 0.0
    rows: int = 0
    exclusion: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def n_trained(self) -> int:
        return sum(s.trained for s in self.saes)

    @property
    def train_seconds(self) -> float:
        return self.harvest_seconds + sum(s.train_seconds for s in self.saes)

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.saes)

    def to_dict(self) -> dict[str, Any]:
        return {"saes": [s.to_dict() for s in self.saes], "cache_dir": self.cache_dir,
                "harvest_seconds": self.harvest_seconds, "rows": self.rows,
                "exclusion": self.exclusion, "warnings": self.warnings,
                "n_trained": self.n_trained, "train_seconds": self.train_seconds,
                "bytes": self.bytes}


def sae_key(model: dict[str, Any], hook: str, data: dict[str, Any], sae: SAEConfig,
            trainer: TrainerConfig) -> str:
    """The cache key (sha256 hex) of one SAE."""
    t = {k: v for k, v in asdict(trainer).items() if k not in _NOT_IN_KEY}
    s = {k: v for k, v in sae.to_dict().items() if k not in ("hook", "model", "extra")}
    blob = json.dumps({"model": model, "hook": hook, "data": data, "sae": s, "trainer": t},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _batches(rows: torch.Tensor, batch_size: int, steps: int, seed: int) -> Iterator[torch.Tensor]:
    """``steps`` batches of shuffled rows (a fresh permutation per epoch, seeded)."""
    g = torch.Generator().manual_seed(seed)
    done = 0
    while done < steps:
        order = torch.randperm(len(rows), generator=g)
        for i in range(0, len(order) - batch_size + 1, batch_size):
            yield rows[order[i: i + batch_size]]
            done += 1
            if done == steps:
                return


def _harvest_rows(lm: Any, hooks: list[str], data: CorpusData, batch_size: int,
                  progress: bool) -> tuple[dict[str, torch.Tensor], ExclusionCount]:
    """Ordinary-token rows of the corpus at every hook (one forward pass for all hooks)."""
    from interplab.activations import Positions, harvest_tokens

    toks, bos = data.tokens(lm)
    keep_pos = (toks != bos)
    acts = harvest_tokens(lm, toks.tolist(), hooks, Positions.masks(keep_pos.tolist()),
                          batch_size=batch_size, progress=progress)
    count = ExclusionCount()
    out = {}
    for j, h in enumerate(hooks):
        x = acts[h].float()
        keep = data.exclusion.keep_mask(x, acts.position)
        if j == 0:
            count.add(keep)
        out[h] = x[keep].contiguous()
    return out, count


def cached_saes(lm: Any, hooks: list[str], configs: list[SAEConfig], trainer: TrainerConfig,
                data: CorpusData, *, batch_size: int, cache_dir: str | Path | None = None,
                model_batch_size: int = DEFAULT_CORPUS_BATCH_SIZE, progress: bool = False
                ) -> tuple[dict[tuple[str, str], Any], SaeCacheReport]:
    """SAEs for every hook × config (``configs`` are templates: ``d_in``, ``hook`` and ``model``
    are filled in), from the cache or trained now. Returns ``{(hook, architecture): SAE}`` and a
    :class:`SaeCacheReport`. ``trainer.total_steps`` steps of ``batch_size`` rows each."""
    from interplab.models.loading import weights_sha256
    from interplab.sae.formats import load_sae
    from interplab.sae.trainer import SAETrainer, run_size_warnings

    names = [c.architecture for c in configs]
    if len(set(names)) != len(names):
        raise InterplabError(f"give one SAE config per architecture, not {names}")
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    identity = {**lm.identity(), "weights_sha256": weights_sha256(lm.hf)}
    data_id = data.identity()
    hooks = [hp.name for hp in lm.resolve_hooks(hooks)]
    plan: dict[tuple[str, str], tuple[SAEConfig, str, Path]] = {}
    for h in hooks:
        for c in configs:
            cfg = replace(c, d_in=lm.d_model, hook=h, model=lm.name,
                          context_length=data.context_length,
                          exclusion=data.exclusion.to_dict())
            key = sae_key(identity, h, data_id, cfg, trainer)
            plan[(h, c.architecture)] = (cfg, key, root / key[:2] / key)
    missing = [k for k, (_, _, path) in plan.items() if not (path / "config.json").is_file()]
    report = SaeCacheReport([], str(root), exclusion=data.exclusion.to_dict())
    timings: dict[tuple[str, str], float] = {}
    metrics: dict[tuple[str, str], dict[str, Any]] = {}
    if missing:
        t = time.perf_counter()
        need = [h for h in hooks if any(m[0] == h for m in missing)]
        rows, count = _harvest_rows(lm, need, data, model_batch_size, progress)
        report.harvest_seconds = time.perf_counter() - t
        report.rows = int(len(rows[need[0]]))
        report.exclusion = {**data.exclusion.to_dict(), **count.to_dict()}
        tcfg = replace(trainer, progress=progress, data_identity={**data_id, "hooks": need})
        for h in need:
            todo = [plan[m][0] for m in missing if m[0] == h]
            report.warnings += [f"{h}: {w}" for w in run_size_warnings(len(rows[h]), todo, tcfg)
                                if f"{h}: {w}" not in report.warnings]
            t = time.perf_counter()
            tr = SAETrainer(todo, tcfg).fit(_batches(rows[h], batch_size, trainer.total_steps,
                                                     trainer.seed))
            if tr.step < trainer.total_steps:
                raise InterplabError(f"{len(rows[h])} rows at {h} ran out before step "
                                     f"{trainer.total_steps}; raise n_sequences or lower steps")
            spent = (time.perf_counter() - t) / len(todo)
            last = tr.log_history[-1] if tr.log_history else {}
            for c, sae in zip(todo, tr.finalized_saes(), strict=True):
                k = (h, c.architecture)
                timings[k] = spent
                metrics[k] = {**_last_metrics(last, len(todo), todo.index(c)),
                              "train_seconds": spent, "rows": len(rows[h]),
                              "note": "last training batch"}
                _save(sae, plan[k][2], metrics[k])
    out = {}
    for k, (cfg, key, path) in plan.items():
        out[k] = load_sae(path)
        m = metrics.get(k) or _read_metrics(path)
        report.saes.append(CachedSae(k[0], k[1], str(path), key, k in timings,
                                     _folder_bytes(path), timings.get(k, 0.0), m))
        if k not in timings and isinstance(m.get("rows"), int):  # a cached SAE: same warnings
            for w in run_size_warnings(m["rows"], [cfg], trainer):
                if f"{k[0]}: {w}" not in report.warnings:
                    report.warnings.append(f"{k[0]}: {w}")
    return out, report


def _last_metrics(record: dict[str, Any], n: int, i: int) -> dict[str, Any]:
    """The trainer's last log entry for the ``i``-th of ``n`` SAEs (FVE, L0, alive...)."""
    per = record.get("saes")
    if isinstance(per, list) and len(per) == n:
        return {k: v for k, v in per[i].items() if isinstance(v, (int, float, str))}
    return {k: v for k, v in record.items() if isinstance(v, (int, float))}


def _read_metrics(path: Path) -> dict[str, Any]:
    f = path / "metrics.json"
    try:
        return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}


def _save(sae: Any, path: Path, metrics: dict[str, Any]) -> None:
    """Write the SAE (and its training metrics) to a temporary folder beside ``path`` and rename
    it into place."""
    from interplab.fileio import atomic_write_json
    from interplab.sae.formats import save_sae

    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_sae(sae, tmp)
    atomic_write_json(tmp / "metrics.json", metrics)
    for f in tmp.iterdir():  # save_sae writes plainly; make the files durable before the rename
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    try:
        os.replace(tmp, path)
    except OSError:  # another process put the same SAE there first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
