"""SAE training study: one SAE or a sweep (every combination of architecture × k or λ) trained in one
pass over an activation store, or over a model's activations streamed from a packaged corpus.

``run_sae_study(SaeStudyConfig(...), out_dir)`` checks the data source, resolves the hook, expands
the sweep into one :class:`~interplab.sae.SAEConfig` per run, lays out the trainer settings
(:class:`~interplab.sae.TrainerConfig` defaults, the run length, dead-feature windows, log and
checkpoint paths), hands the per-run configs to an executor (:func:`train_sweep`: one trainer, one
pass, in this process) and saves one folder per SAE, named by :func:`sae_name`. With
``null_control`` it then retrains each TopK/BatchTopK config on a sample of the rows and on a data
null fitted to them (:func:`null_comparison`). The result (:class:`SaeStudyResult`) is
JSON-serialisable.

Defaults: every optimisation default is :class:`~interplab.sae.TrainerConfig`'s except the four
this study sets in ``SaeStudyConfig.trainer`` (warm-ups and checkpoint interval); SAE
hyper-parameters not swept here are :class:`~interplab.sae.SAEConfig`'s; the token exclusion is
:class:`~interplab.activations.exclusion.ExclusionRule`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from interplab.activations import ActivationStore
from interplab.activations.exclusion import ExclusionCount, ExclusionRule, ordinary_batches
from interplab.controls import format_p
from interplab.controls.multiple import correct_cells
from interplab.controls.nulls import data_null
from interplab.datasets.corpus import corpus_split, corpus_tokens
from interplab.defaults import DEFAULT_N_BOOT
from interplab.errors import InterplabError
from interplab.fileio import atomic_write_json
from interplab.models import LanguageModel, load
from interplab.models.loading import weights_sha256
from interplab.sae import SAETrainer, save_sae
from interplab.sae.buffer import MixingBuffer
from interplab.sae.config import SAEConfig, TrainerConfig
from interplab.sae.nulls import SaeNullConfig, sae_cells, sae_minus_null, train_and_score_sae
from interplab.sae.sweep import SweepOutcome, sae_name
from interplab.sae.trainer import CHECKPOINT_FILE, read_checkpoint_meta, run_size_warnings
from interplab.studies.sae.config import (
    NULL_HELDOUT_FRACTION,
    NULL_MIN_ROWS,
    NULL_SAMPLE_ROWS,
    TOPK_FAMILY,
    SaeRun,
    SaeStudyConfig,
    SaeStudyResult,
)
from interplab.study.result import versions

# -- data -----------------------------------------------------------------------------------------

def store_fingerprint(st: ActivationStore) -> str:
    """sha256 of what a store's rows are (:meth:`ActivationStore.fingerprint`)."""
    return st.fingerprint()


@dataclass
class DataSource:
    """The resolved data of a run: where rows come from, their width and count, and identity.

    ``batches`` makes a fresh, deterministic stream of ordinary rows, so an executor may call it
    in its own process."""

    hook: str
    d_in: int
    n_rows: int
    identity: dict[str, Any]
    model_name: str | None
    context_length: int | None  # with a model: the length of the streamed sequences
    store: ActivationStore | None = None
    lm: LanguageModel | None = None
    tokens: torch.Tensor | None = None  # [n, context_length] ids (with a model)
    bos_id: int | None = None
    # Recorded in each saved SAE's config (SAEConfig.model_identity / .data) and checked by
    # `sae eval` and `sae dashboard` (interplab.sae.identity).
    model_identity: dict[str, Any] | None = None
    provenance: dict[str, Any] | None = None

    def batches(self, batch_size: int, seed: int, epochs: int, rule: ExclusionRule
                ) -> tuple[Iterator[torch.Tensor], ExclusionCount]:
        """``([batch, d_in]`` rows the exclusion ``rule`` keeps, the running ``ExclusionCount``)."""
        if self.lm is None:
            count = ExclusionCount()
            raw = self.store.iter_batches(batch_size, self.hook, seed=seed, epochs=epochs,
                                          drop_last=True, with_position=True)
            return ordinary_batches(raw, rule, count), count

        buffer = MixingBuffer(self.lm, self.hook, self.tokens, batch_size,
                              buffer_tokens=16 * batch_size, seed=seed, bos_token_id=self.bos_id,
                              epochs=epochs, exclusion=rule)
        return buffer, buffer.exclusion_count


def resolve_data(cfg: SaeStudyConfig) -> DataSource:
    """Open the store (or load the model and pack the corpus's training part) and resolve the
    hook, or raise one clear error naming the fix."""
    if cfg.store is not None:
        return _store_source(cfg)

    lm = load(cfg.model, device=cfg.trainer.device)
    if not cfg.hook:
        raise InterplabError("--hook is required with --model")
    lm.parse_hook(cfg.hook)
    toks, bos_id = corpus_tokens(lm, cfg.corpus, cfg.context_length, cfg.max_sequences or None,
                                 part="train")
    identity = {"model": lm.identity(), "hook": cfg.hook, "corpus": cfg.corpus,
                "context_length": cfg.context_length, "max_sequences": cfg.max_sequences}
    provenance = {"kind": "corpus", "corpus": cfg.corpus, "part": "train",
                  "documents": corpus_split(cfg.corpus, "train")[1],
                  "context_length": cfg.context_length, "max_sequences": cfg.max_sequences,
                  "n_sequences": int(toks.shape[0])}
    return DataSource(hook=cfg.hook, d_in=lm.d_model, n_rows=int((toks != bos_id).sum()),
                      identity=identity, model_name=lm.name, context_length=cfg.context_length,
                      lm=lm, tokens=toks, bos_id=bos_id,
                      model_identity={**lm.identity(), "weights_sha256": weights_sha256(lm.hf)},
                      provenance=provenance)


def _store_source(cfg: SaeStudyConfig) -> DataSource:
    st = ActivationStore(cfg.store)
    st.require_complete(cfg.allow_incomplete)
    hook = cfg.hook or (st.hooks[0] if len(st.hooks) == 1 else "")
    if hook not in st.hooks:
        raise InterplabError(f"hook {hook!r} is not in the store {cfg.store} (it holds "
                             f"{st.hooks}); pass --hook with one of them")
    model = st.manifest.get("model")
    model_name = model.get("name") if isinstance(model, dict) else model
    fingerprint = store_fingerprint(st)
    provenance = {"kind": "store", "path": str(Path(cfg.store).resolve()),
                  "fingerprint": fingerprint, "dataset": st.manifest.get("dataset"),
                  "positions": st.manifest.get("positions"), "n_rows": st.n_rows,
                  "sae_exclusion": st.manifest.get("sae_exclusion")}
    return DataSource(hook=hook, d_in=st.d_model, n_rows=st.n_rows,
                      identity={"store": fingerprint, "hook": hook},
                      model_name=model_name, context_length=None, store=st,
                      model_identity=model if isinstance(model, dict) else None,
                      provenance=provenance)


# -- the sweep ------------------------------------------------------------------------------------

def sweep_configs(cfg: SaeStudyConfig, data: DataSource, rule: ExclusionRule) -> list[SAEConfig]:
    """One :class:`SAEConfig` per run: each top-k architecture × every k, every other one × every
    λ; hyper-parameters not swept keep :class:`SAEConfig`'s defaults."""
    width = cfg.width or 8 * data.d_in
    common = dict(hook=data.hook, model=data.model_name, context_length=data.context_length,
                  seed=cfg.trainer.seed, exclusion=rule.to_dict())
    configs = []
    for arch in cfg.arch:
        if arch in TOPK_FAMILY:
            for k in cfg.k:
                configs.append(SAEConfig(arch, data.d_in, width, k=k, **common))
        else:
            configs.extend(SAEConfig(arch, data.d_in, width, sparsity_coefficient=lam, **common)
                           for lam in cfg.sparsity)
    if data.store is not None and not data.store.complete:  # only with allow_incomplete
        for c in configs:
            c.extra["incomplete_store"] = {"texts_done": data.store.texts_done,
                                           "n_texts": data.store.n_texts}
    return configs


def trainer_config(cfg: SaeStudyConfig, data: DataSource, out_dir: Path,
                   progress: bool) -> TrainerConfig:
    """``cfg.trainer`` with what the study sets: the run length (one pass when 0), the
    dead-feature window and resampling interval, paths, the data identity."""
    total = cfg.trainer.total_steps or max(1, data.n_rows // cfg.batch_size)
    return replace(
        cfg.trainer, total_steps=total, log_path=str(out_dir / "train_log.jsonl"),
        checkpoint_dir=str(out_dir / "checkpoint"), progress=progress,
        dead_window_tokens=min(10_000_000, max(cfg.batch_size, data.n_rows // 4)),
        resample_every_steps=_resample_every(out_dir / "checkpoint", total, cfg.extend_steps),
        data_identity={**data.identity, "batch_size": cfg.batch_size},
    )


def _resample_every(checkpoint_dir: Path, total: int, extend_steps: bool) -> int:
    """Dead-feature resampling interval: an eighth of the run, or the extended run's own."""
    if not extend_steps:
        return max(1, total // 8)
    if not (checkpoint_dir / CHECKPOINT_FILE).exists():
        raise InterplabError(f"--extend-steps: there is no checkpoint in {checkpoint_dir} to "
                             "extend; drop the flag to start a new run")
    return read_checkpoint_meta(checkpoint_dir)["trainer_config"]["resample_every_steps"]


Executor = Callable[[list[SAEConfig], TrainerConfig, DataSource, "SaeStudyConfig"], SweepOutcome]


def train_sweep(runs: list[SAEConfig], tcfg: TrainerConfig, data: DataSource,
                cfg: SaeStudyConfig) -> SweepOutcome:
    """The local executor: every run of the sweep in one trainer, on one pass over the data, in
    this process. Another executor (e.g. spreading ``runs`` over workers) takes the same
    arguments; ``data.batches`` gives each worker the same stream."""
    epochs = max(1, -(-tcfg.total_steps * cfg.batch_size // max(data.n_rows, 1)))
    batches, count = data.batches(cfg.batch_size, tcfg.seed, epochs, cfg.exclusion_rule())
    trainer = SAETrainer(runs, tcfg).fit(batches, extend_steps=cfg.extend_steps)
    last = trainer.log_history[-1] if trainer.log_history else {}
    return SweepOutcome(saes=trainer.finalized_saes(), last_metrics=list(last.get("saes", [])),
                        steps=trainer.step, tokens_seen=trainer.tokens_seen,
                        input_scale=trainer.scale, scale_tokens=trainer.scale_tokens,
                        tokens_read=count.n_seen, tokens_excluded=count.n_excluded)


# -- null control (--null-control) ---------------------------------------------------------------

NULL_NOTE = ("each compared config is retrained from scratch on the sample's training rows and, "
             "identically, on the null fitted to them, then scored on both parts; the full run's "
             "SAE is not scored against the null (an SAE trained on real rows says nothing about "
             "what training on structureless data would have found)")
NOT_RETRAINED = ("λ-penalised: its sparsity follows the λ warm-up over the full run, which a "
                 "short retrain on a sample does not reproduce")


def null_sample(data: DataSource, rule: ExclusionRule, seed: int,
                n_rows: int = NULL_SAMPLE_ROWS) -> np.ndarray:
    """Up to ``n_rows`` rows that ``rule`` keeps, from the start of a seeded pass over the
    study's data (``data.batches``), as float32 numpy ``[n, d_in]``."""

    batches, _ = data.batches(256, seed, 1, rule)
    parts, total = [], 0
    for x in batches:
        parts.append(x.detach().float().cpu())
        total += len(x)
        if total >= n_rows:
            break
    close = getattr(batches, "close", None)
    if close is not None:
        close()
    if not parts:
        return np.empty((0, data.d_in), dtype=np.float32)
    return torch.cat(parts)[:n_rows].numpy()


def null_comparison(cfg: SaeStudyConfig, data: DataSource, rule: ExclusionRule,
                    runs: list[SAEConfig]) -> dict[str, Any]:
    """Each TopK/BatchTopK config of ``runs`` retrained on a sample of the study's rows and on the
    data null ``cfg.null_control`` fitted to the sample's training rows (same number of rows),
    both scored on training and held-out rows: per config ``model`` and ``null`` metrics
    (:func:`~interplab.sae.nulls.train_and_score_sae`, ``--null-steps`` steps of
    ``--null-batch-size`` rows) and ``model_minus_null`` (:func:`~interplab.sae.nulls.sae_minus_null`, bootstrap intervals over rows and bootstrap
    p-values). The p-values of every compared config and metric are corrected as one family
    (Benjamini–Hochberg): ``q``, ``q_bound`` and ``verdict`` in each tested cell, the family in
    ``statistics`` and one line per config in ``summary``. Configs not retrained are listed in
    ``not_compared`` with the reason."""

    seed, n_boot = cfg.trainer.seed, DEFAULT_N_BOOT
    settings = SaeNullConfig(sae_steps=cfg.null_steps, sae_batch_size=cfg.null_batch_size)
    x = null_sample(data, rule, seed)
    heldout = np.zeros(len(x), dtype=bool)
    heldout[np.random.default_rng(seed).permutation(len(x))[:round(len(x) *
                                                                    NULL_HELDOUT_FRACTION)]] = True
    out: dict[str, Any] = {
        "null": cfg.null_control, "n_rows": len(x), "n_heldout": int(heldout.sum()),
        "sample": f"the first {len(x)} rows of a seeded pass over the training data "
                  f"({rule.describe()}); {int(heldout.sum())} of them, drawn at random, held out",
        "steps": settings.sae_steps, "batch_size": settings.sae_batch_size,
        "n_boot": n_boot, "seed": seed, "note": NULL_NOTE, "compared": {},
        "not_compared": {sae_name(c): NOT_RETRAINED for c in runs
                         if c.architecture not in TOPK_FAMILY}}
    retrain = [c for c in runs if c.architecture in TOPK_FAMILY]
    if len(x) < NULL_MIN_ROWS:
        out["not_compared"].update({sae_name(c): f"only {len(x)} rows to sample (at least "
                                    f"{NULL_MIN_ROWS} needed)" for c in retrain})
        return out
    null = data_null(cfg.null_control or "", x[~heldout], n=len(x), seed=seed)
    for c in retrain:
        fits = [train_and_score_sae(rows, heldout, settings, seed, sae_config=replace(c))
                for rows in (x, null)]
        out["compared"][sae_name(c)] = {"model": fits[0][0], "null": fits[1][0],
                                        "model_minus_null": sae_minus_null(
                                            *fits, n_boot=n_boot, seed=seed)}
    family = correct_cells([cell for name, c in out["compared"].items()
                            for cell in sae_cells(c["model_minus_null"], name)])
    out["statistics"] = {**family.to_dict(), "family": (
        "every compared config's model − null difference in training FVE, held-out FVE and "
        "held-out L0 (bootstrap p-values over rows, two-sided)")}
    out["summary"] = [null_control_line(name, c) for name, c in out["compared"].items()]
    return out


def null_control_line(name: str, compared: dict[str, Any]) -> str:
    """One config's held-out FVE, model vs null, with the difference's interval and its corrected
    verdict (q-value; a p-value at its floor makes q an upper bound, printed "≤")."""
    d = compared["model_minus_null"]["fve_heldout"]
    q = format_p(d["q"], at_floor=d["q_bound"], name="q")
    return (f"{name}: held-out FVE {compared['model']['heldout']['fve']:.3f} vs null "
            f"{compared['null']['heldout']['fve']:.3f}, model − null {d['value']:+.3f} "
            f"[{d['lo']:+.3f}, {d['hi']:+.3f}], {d['verdict']} after correction ({q})")


def run_sae_study(cfg: SaeStudyConfig, out_dir: str | Path, progress: bool = True,
                  execute: Executor = train_sweep) -> SaeStudyResult:
    """Train the sweep of ``cfg`` into ``out_dir`` (one sub-folder per SAE, plus the training log
    and checkpoint). ``execute`` runs the per-run configs (default: :func:`train_sweep`).
    Interrupted training raises :class:`~interplab.sae.trainer.TrainingInterrupted` after a
    checkpoint is written."""

    out_dir = Path(out_dir)
    cfg.validate()
    data = resolve_data(cfg)
    rule = cfg.exclusion_rule()
    runs = sweep_configs(cfg, data, rule)
    if data.n_rows and cfg.batch_size > data.n_rows:  # refused before any folder is made
        where = f"the store {data.store.path}" if data.store is not None else "the corpus rows"
        raise InterplabError(f"batch size {cfg.batch_size} is larger than {where}, which holds "
                             f"{data.n_rows} rows: one batch would repeat rows; use a batch size "
                             f"of at most {data.n_rows} (--batch-size)")
    out_dir.mkdir(parents=True, exist_ok=True)
    tcfg = trainer_config(cfg, data, out_dir, progress)
    warnings = run_size_warnings(data.n_rows, runs, tcfg)
    for warning in warnings:
        Console(stderr=True).print(f"[yellow]warning:[/] {warning}", highlight=False)
    outcome = execute(runs, tcfg, data, cfg)
    results = []
    for i, sae in enumerate(outcome.saes):
        c = sae.config
        name = sae_name(c)
        c.model_identity, c.data = data.model_identity, data.provenance
        save_sae(sae, out_dir / name)
        metrics = outcome.last_metrics[i] if i < len(outcome.last_metrics) else {}
        results.append(SaeRun(name=name, path=name, architecture=c.architecture,
                              d_sae=c.d_sae, k=c.k, sparsity_coefficient=c.sparsity_coefficient,
                              metrics=metrics))
    null = None
    if cfg.null_control:  # fresh configs: the trainer wrote its scale into the trained ones

        null = null_comparison(cfg, data, rule, sweep_configs(cfg, data, rule))
        atomic_write_json(out_dir / "null_control.json", null)
    return SaeStudyResult(
        config=cfg.to_dict(), versions=versions(), data=tcfg.data_identity or {}, runs=results, steps=outcome.steps,
        tokens_seen=outcome.tokens_seen, n_rows=data.n_rows, tokens_read=outcome.tokens_read,
        tokens_excluded=outcome.tokens_excluded, exclusion=rule.to_dict(),
        exclusion_description=rule.describe(), input_scale=outcome.input_scale,
        scale_tokens=outcome.scale_tokens, warnings=warnings, null_control=null)


def run_sae_into(config: SaeStudyConfig, out: Path, progress: bool) -> SaeStudyResult:
    """The registry's entry point (``interplab rerun``): the local executor into ``out``."""
    return run_sae_study(config, out, progress=progress)


def summary_lines(result: SaeStudyResult) -> list[str]:
    """What was trained and on what, each SAE's last training-log entry and the null control."""
    out = [f"trained {len(result.runs)} SAE(s) for {result.steps} steps ({result.tokens_seen} "
           "tokens)",
           f"excluded {result.tokens_excluded} of {result.tokens_read} tokens read "
           f"({result.exclusion_description}); input scale {result.input_scale:.4g} from "
           f"{result.scale_tokens} ordinary tokens"]
    logged = [run for run in result.runs if run.metrics]
    if logged:
        n = logged[0].metrics.get("n_tokens", result.data.get("batch_size"))
        out.append(f"last training-log entry, on one training batch of {n} rows (`sae eval "
                   "--store` scores every row of a store):")
    for run in logged:
        m = run.metrics
        out.append(f"  {run.name}: FVE {m['fraction_of_variance_explained']:.3f}, "
                   f"L0 {m['l0']:.1f}, alive {m['fraction_alive']:.2f} (features firing "
                   "on that batch)")
    nc = result.null_control
    if nc:
        out.append(f"null control ({nc['null']}; retrained on {nc['n_rows']} sampled rows, "
                   f"{nc['n_heldout']} held out) → null_control.json")
        for name, c in nc["compared"].items():
            d = c["model_minus_null"]["fve_heldout"]
            out.append(f"  {name}: held-out FVE {c['model']['heldout']['fve']:.3f} vs null "
                       f"{c['null']['heldout']['fve']:.3f}, model − null {d['value']:+.3f} "
                       f"[{d['lo']:+.3f}, {d['hi']:+.3f}]")
        out.extend(f"  {name}: not compared ({why})" for name, why in nc["not_compared"].items())
    return out
