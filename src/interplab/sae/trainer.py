"""One trainer for every architecture, and for sweeps of several SAEs from one pass over the data.

The trainer reads any iterable of ``[batch, d_in]`` float tensors (``ActivationStore.iter_batches``,
a :class:`~interplab.sae.buffer.MixingBuffer`, or a plain list); every batch is one step for every
SAE in the sweep. Per SAE it runs: sparsity-coefficient warm-up, LR warm-up and linear decay, Adam,
dead-feature tracking (aux-k for the top-k family, resampling for ReLU), the architecture's decoder
constraint. Optional activation normalisation (inputs scaled so that E‖x‖² = d_in) is folded back
into the weights by :meth:`SAETrainer.finalized_saes`. The scale is estimated before the first
step from the first ``scale_estimation_tokens`` tokens (many batches, not one), leaving out tokens
whose norm exceeds the SAE config's exclusion ``norm_ratio`` (default 10) × their median (massive-
norm tokens would otherwise set it), so two runs over the same data in different orders get the
same scale.

Checkpoints are one safetensors file (weights, Adam moments, counters, RNG state; the JSON
bookkeeping in its metadata) replaced atomically, so a run killed at any instant resumes from the
last checkpoint and ends with the same weights as an uninterrupted run: on resume the trainer
skips the batches it already consumed, so the iterable must be deterministic (a seeded store read).
Resuming refuses any difference between the checkpoint's settings and the current ones (every SAE
config field, every optimisation setting, the data identity), naming each; only the step count may
grow, and only when asked (``fit(..., extend_steps=True)``).

Training never saves non-finite weights: a non-finite batch, loss or parameter stops the run with
a :class:`NonFiniteTrainingError` and leaves the last checkpoint as it was. With a checkpoint
directory, SIGINT/SIGTERM finish the current step, write a checkpoint and raise
:class:`TrainingInterrupted`.
"""

from __future__ import annotations

import copy
import importlib.util
import itertools
import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file

from interplab.activations.exclusion import ExclusionRule
from interplab.errors import InterplabError, ResumableError
from interplab.fileio import atomic_write_bytes, atomic_write_safetensors
from interplab.sae.base import SparseAutoencoder, Workspace, create_sae
from interplab.sae.config import SAEConfig, TrainerConfig, without_retired
from interplab.sae.geometric_median import geometric_median
from interplab.sae.metrics import ReconstructionAccumulator
from interplab.sae.relu import resample_dead_features

__all__ = ["TrainerConfig", "SAETrainer", "train_saes", "NonFiniteTrainingError",
           "TrainingInterrupted", "run_size_warnings", "read_checkpoint_meta"]

CHECKPOINT_FILE = "checkpoint.safetensors"
# TrainerConfig fields that do not change the trained weights: free to differ on resume.
RESUME_EXEMPT = frozenset({"log_path", "log_every_steps", "checkpoint_dir",
                           "checkpoint_every_steps", "wandb_project", "device", "progress"})
# Below these a run is flagged by run_size_warnings (see its docstring for the reasons).
MIN_ROWS_PER_FEATURE = 20
MIN_STEPS = 500


class NonFiniteTrainingError(InterplabError):
    """A batch, loss or parameter became NaN/inf; nothing after the last checkpoint was saved."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped training after a checkpoint was written (``checkpoint``, ``step``)."""

    def __init__(self, signum: int, step: int, total_steps: int, checkpoint: Path | None,
                 checkpoint_step: int | None = None, repeated: bool = False):
        self.signum, self.step, self.total_steps, self.checkpoint = (
            signum, step, total_steps, checkpoint)
        self.checkpoint_step = step if checkpoint and not repeated else checkpoint_step
        name = signal.Signals(signum).name
        if repeated:  # a second signal: stopped at once, without a new checkpoint
            where = (f"a second {name} stopped it at once; the last checkpoint, {checkpoint}, "
                     f"holds step {checkpoint_step}" if checkpoint else
                     f"a second {name} stopped it at once, before any checkpoint was written")
        else:
            where = (f"checkpoint written to {checkpoint}" if checkpoint
                     else "no checkpoint directory")
        super().__init__(f"{name} at step {step} of {total_steps}; {where}")


class SAETrainer:
    """Train one or several SAEs (a sweep) from a single pass over a stream of activations.

    >>> trainer = SAETrainer([SAEConfig("topk", 64, 512, k=4)], TrainerConfig(total_steps=1000))
    >>> trainer.fit(batches)           # doctest: +SKIP
    >>> sae = trainer.finalized_saes()[0]   # normalisation folded in, eval mode
    """

    def __init__(self, sae_configs: list[SAEConfig], config: TrainerConfig):
        if not sae_configs:
            raise InterplabError("give at least one SAEConfig to train")
        config.validate()
        d_ins = {c.d_in for c in sae_configs}
        if len(d_ins) != 1:
            raise InterplabError(f"all SAEs of one sweep must share d_in (got {sorted(d_ins)})")
        self.config = config
        self.d_in = d_ins.pop()
        self.device = torch.device(config.device)
        self.saes: list[SparseAutoencoder] = []
        self.workspace = Workspace()
        self.optimizers: list[torch.optim.Adam] = []
        for c in sae_configs:
            sae = create_sae(copy.deepcopy(c), device=self.device)
            if config.mixed_precision == "bf16":
                sae.matmul_dtype = torch.bfloat16
            # One scratch workspace for the whole sweep: the SAEs run one after the other within
            # a step, each finishing its backward (and its log) before the next one starts.
            sae.workspace = self.workspace
            if hasattr(sae, "sparse_decode"):
                sae.sparse_decode = config.sparse_topk_decoder
            self.saes.append(sae)
            self.optimizers.append(
                torch.optim.Adam(sae.parameters(), lr=config.lr, betas=config.adam_betas)
            )
        self.tokens_since_fired = [
            torch.zeros(s.d_sae, dtype=torch.int64, device=self.device) for s in self.saes
        ]
        # One resampling stream per SAE, each seeded as a one-SAE run's: an SAE's draws never
        # depend on which other SAEs share the sweep, so it equals the SAE trained alone.
        self.generators = [torch.Generator(device="cpu").manual_seed(config.seed)
                           for _ in self.saes]
        self.step = 0
        self.tokens_seen = 0
        self.scale = 1.0
        self.scale_tokens = 0
        self.initialised = False
        self.log_history: list[dict] = []
        self._wandb = None
        self._checkpoint_step: int | None = None  # step of the checkpoint on disk, if any
        self.extended_from: list[int] = []  # earlier total_steps when a run was extended

    # -- schedules --------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        c = self.config
        warm = min(1.0, (step + 1) / c.lr_warmup_steps) if c.lr_warmup_steps > 0 else 1.0
        decay_steps = int(c.total_steps * c.lr_decay_fraction)
        decay_start = c.total_steps - decay_steps
        decay = 1.0 if step < decay_start or decay_steps == 0 else (
            max(0.0, (c.total_steps - step) / decay_steps))
        return c.lr * warm * decay

    def sparsity_scale_at(self, step: int) -> float:
        w = self.config.sparsity_warmup_steps
        return min(1.0, (step + 1) / w) if w > 0 else 1.0

    # -- initialisation ---------------------------------------------------------------------
    def _initialise_from(self, it: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
        """Set the scale and b_dec from the first batches of ``it``; return ``it`` unconsumed."""
        head: list[torch.Tensor] = []
        n = 0
        while n < max(1, self.config.scale_estimation_tokens):
            x = next(it, None)
            if x is None:
                break
            head.append(x)
            n += x.shape[0] if x.ndim == 2 else 0
        usable = [x for x in head if x.ndim == 2 and x.shape[-1] == self.d_in]
        if usable:
            self._initialise(usable)
        return itertools.chain(head, it)

    @torch.no_grad()
    def _initialise(self, batches: list[torch.Tensor]) -> None:
        """Scale and b_dec from the ordinary rows of ``batches`` (massive-norm rows left out)."""
        norms = torch.cat([x.double().norm(dim=-1).cpu() for x in batches])
        rule = ExclusionRule.from_dict(self.saes[0].config.exclusion)
        # Non-finite rows set nothing here; the step that reaches them stops with a clear error.
        finite = torch.isfinite(norms)
        keep = ExclusionRule(False, rule.norm_ratio).keep_mask(norms[finite, None])
        keep = torch.zeros_like(finite).masked_scatter(finite, keep)
        if self.config.normalise_activations:
            mean_sq = float(norms[keep].pow(2).mean())
            self.scale = math.sqrt(self.d_in / mean_sq) if mean_sq > 0 else 1.0
            self.scale_tokens = int(keep.sum())
        g = torch.Generator().manual_seed(self.config.seed)
        ordinary = keep.nonzero().squeeze(-1)
        pick = ordinary[torch.randperm(ordinary.shape[0], generator=g)[
            : self.config.init_sample_size]].sort().values
        offsets = torch.tensor([0] + [x.shape[0] for x in batches]).cumsum(0)
        b = torch.searchsorted(offsets, pick, right=True) - 1
        sample = torch.stack([batches[int(i)][int(r)] for i, r in
                              zip(b, pick - offsets[b], strict=True)]).float().to(self.device)
        if self.config.geometric_median_init:
            median = geometric_median(sample * self.scale)
            for sae in self.saes:
                sae.b_dec.copy_(median.to(sae.b_dec.dtype))
        self.initialised = True

    # -- one step ---------------------------------------------------------------------------
    def _train_step(self, x: torch.Tensor, log_now: bool) -> dict:
        lr = self.lr_at(self.step)
        sp = self.sparsity_scale_at(self.step)
        record: dict = {"step": self.step + 1, "tokens": self.tokens_seen + x.shape[0], "lr": lr,
                        "sparsity_scale": sp, "saes": []}
        for i, (sae, opt) in enumerate(zip(self.saes, self.optimizers, strict=True)):
            dead = self.tokens_since_fired[i] >= self.config.dead_window_tokens
            out = sae.training_loss(x, sp, dead)
            loss = float(out.loss.detach())
            if not math.isfinite(loss):
                raise self._non_finite(f"the loss of SAE {i} ({_describe(sae)}) is {loss}", lr)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            with sae.update_threads():
                sae.before_optimizer_step()
                for g in opt.param_groups:
                    g["lr"] = lr
                opt.step()
                sae.after_optimizer_step()
                finite = _all_finite(sae)
                with torch.no_grad():
                    fired = out.fired if out.fired is not None else (out.features() != 0).any(0)
                    self.tokens_since_fired[i] += x.shape[0]
                    self.tokens_since_fired[i][fired] = 0
            if not finite:
                raise self._non_finite(
                    f"the optimizer step made parameters of SAE {i} ({_describe(sae)}) NaN/inf", lr)
            n_resampled = 0
            every = self.config.resample_every_steps
            if every and getattr(sae, "resample_dead", False) and (self.step + 1) % every == 0:
                dead = self.tokens_since_fired[i] >= self.config.dead_window_tokens
                n_resampled = resample_dead_features(sae, x, dead, opt,
                                                     generator=self.generators[i])
                self.tokens_since_fired[i][dead] = 0
            if log_now:
                # Same metrics module as evaluation, in the raw (un-normalised) units.
                acc = ReconstructionAccumulator(sae.d_in, sae.d_sae)
                acc.update(x / self.scale, out.x_hat.detach() / self.scale, out.features().detach())
                m = acc.compute().to_dict()
                m.pop("density_histogram")
                m["loss"] = loss
                m.update({k: float(v.detach()) for k, v in out.parts.items()})
                m["n_dead_window"] = int(
                    (self.tokens_since_fired[i] >= self.config.dead_window_tokens).sum())
                m["n_resampled"] = n_resampled
                m["architecture"] = sae.config.architecture
                record["saes"].append(m)
        return record

    # -- the loop ---------------------------------------------------------------------------
    def fit(
        self,
        batches: Iterable[torch.Tensor],
        callback: Callable[[SAETrainer], None] | None = None,
        *,
        extend_steps: bool = False,
    ) -> SAETrainer:
        """Train until ``total_steps`` or the end of ``batches``; resumes from a checkpoint.

        If ``checkpoint_dir`` holds a checkpoint, it must have been written with the same
        settings (else :class:`InterplabError` naming each difference); its state is loaded, the
        first ``step`` batches of ``batches`` are skipped (they were consumed before the
        interruption) and the log is cut back to that step. ``extend_steps=True`` lets
        ``total_steps`` exceed the checkpoint's (the LR schedule is recomputed for the new total,
        so the result differs from a run started with the larger count).
        ``callback(trainer)`` runs after every step. With a ``checkpoint_dir``, SIGINT/SIGTERM
        end the run after the current step with a checkpoint and :class:`TrainingInterrupted`.
        """
        c = self.config
        if c.checkpoint_dir and (Path(c.checkpoint_dir) / CHECKPOINT_FILE).exists():
            self.load_checkpoint(c.checkpoint_dir, extend_steps=extend_steps)
        self._truncate_log()
        it = iter(batches)
        if not self.initialised and self.step == 0:
            it = self._initialise_from(it)
        with _StopOnSignal(enabled=bool(c.checkpoint_dir), on_repeat=self._stopped_at_once) as stop:
            self._skip_consumed(it, stop)
            self._maybe_init_wandb()
            bar = None
            if c.progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=c.total_steps, initial=self.step, desc="sae train", unit="step")
            t0 = time.perf_counter()
            while self.step < c.total_steps and not stop.signum:
                x = next(it, None)
                if x is None:
                    break
                x = self._prepare(x)
                log_now = bool(c.log_every_steps) and (
                    (self.step + 1) % c.log_every_steps == 0 or self.step + 1 == c.total_steps)
                record = self._train_step(x, log_now)
                self.step += 1
                self.tokens_seen += x.shape[0]
                if log_now:
                    record["elapsed_s"] = time.perf_counter() - t0
                    self._log(record)
                if c.checkpoint_dir and c.checkpoint_every_steps and (
                        self.step % c.checkpoint_every_steps == 0):
                    self.save_checkpoint(c.checkpoint_dir)
                if bar is not None:
                    bar.update(1)
                if callback is not None:
                    callback(self)
            if bar is not None:
                bar.close()
            path = self.save_checkpoint(c.checkpoint_dir) if c.checkpoint_dir else None
            if stop.signum:
                raise TrainingInterrupted(stop.signum, self.step, c.total_steps, path)
        return self

    def _skip_consumed(self, it, stop: _StopOnSignal) -> None:
        """Deterministic stream: skip the ``step`` batches the checkpoint already trained on."""
        for _ in range(self.step):
            if stop.signum:
                return
            if next(it, None) is None:
                raise InterplabError(
                    f"the data stream ended before the checkpoint's step {self.step}; resume with "
                    "the same data (same store and seed) as the interrupted run"
                )

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Check a batch (shape, finiteness), initialise on the first one, scale it."""
        if x.ndim != 2 or x.shape[-1] != self.d_in:
            raise InterplabError(
                f"batch of shape {tuple(x.shape)} does not match the SAE input d_in="
                f"{self.d_in}; check that the store/hook matches the SAE config"
            )
        x = x.to(self.device, torch.float32, non_blocking=True)
        bad = ~torch.isfinite(x).all(-1)
        if bool(bad.any()):
            raise NonFiniteTrainingError(
                f"batch {self.step + 1} holds {int(bad.sum())} of {x.shape[0]} rows with NaN/inf "
                f"activations; training stopped before using it ({self._kept()}). Find and drop "
                "the non-finite rows (`interplab store verify` names them in a store)"
            )
        if self.scale != 1.0:
            x = x * self.scale
        return x

    def _kept(self) -> str:
        if not self.config.checkpoint_dir:
            return "no checkpoint directory was set"
        if self._checkpoint_step is None:
            return "no checkpoint had been written yet"
        return (f"the checkpoint in {self.config.checkpoint_dir} still holds the finite state of "
                f"step {self._checkpoint_step}")

    def _non_finite(self, what: str, lr: float) -> NonFiniteTrainingError:
        return NonFiniteTrainingError(
            f"training stopped at step {self.step + 1}: {what}; nothing was saved "
            f"({self._kept()}). The learning rate ({lr:g} at this step) is likely too high for "
            "this data: lower it and train into a fresh output folder (checkpoint_dir)"
        )

    def _truncate_log(self) -> None:
        """Drop log lines past the current step (they belong to steps about to be redone) and a
        line torn by a kill, so a resumed log never repeats a step."""
        path = Path(self.config.log_path) if self.config.log_path else None
        if path is None or not path.exists():
            return
        kept = []
        for line in path.read_bytes().splitlines(keepends=True):
            try:
                step = json.loads(line)["step"]
            except (ValueError, KeyError, TypeError):
                continue
            if line.endswith(b"\n") and step <= self.step:
                kept.append(line)
        try:
            atomic_write_bytes(path, b"".join(kept))
        except OSError as exc:
            raise self._write_failed(path, exc) from exc

    def _log(self, record: dict) -> None:
        self.log_history.append(record)
        if self.config.log_path:
            try:  # a line torn by a full disk is dropped on resume (_truncate_log)
                Path(self.config.log_path).parent.mkdir(parents=True, exist_ok=True)
                with open(self.config.log_path, "a") as fh:
                    fh.write(json.dumps(record) + "\n")
            except OSError as exc:
                raise self._write_failed(Path(self.config.log_path), exc) from exc
        if self._wandb is not None:
            flat = {f"sae{i}/{k}": v for i, m in enumerate(record["saes"]) for k, v in m.items()
                    if isinstance(v, int | float)}
            self._wandb.log({"lr": record["lr"], **flat}, step=record["step"])

    def _maybe_init_wandb(self) -> None:
        if self.config.wandb_project and self._wandb is None:
            if importlib.util.find_spec("wandb") is None:
                raise InterplabError("wandb_project was set but wandb is not installed; "
                                     "pip install wandb or leave wandb_project unset")
            import wandb

            wandb.init(project=self.config.wandb_project, config=asdict(self.config))
            self._wandb = wandb

    # -- results ----------------------------------------------------------------------------
    def finalized_saes(self) -> list[SparseAutoencoder]:
        """Copies of the trained SAEs in eval mode, normalisation folded in (take raw inputs)."""
        out = []
        for sae in self.saes:
            s = copy.deepcopy(sae).eval()
            s.matmul_dtype = None
            if self.scale != 1.0:
                s.fold_input_scale(self.scale)
            s.config.normalisation_scale = self.scale
            s.config.normalisation_tokens = self.scale_tokens
            s.config.training_tokens = self.tokens_seen
            if self.extended_from:
                s.config.extra["extended_from_steps"] = list(self.extended_from)
            out.append(s)
        return out

    # -- checkpoints ------------------------------------------------------------------------
    def _state_tensors(self) -> dict[str, torch.Tensor]:
        t: dict[str, torch.Tensor] = {}
        for i, (sae, opt) in enumerate(zip(self.saes, self.optimizers, strict=True)):
            for name, p in sae.named_parameters():
                t[f"sae{i}.param.{name}"] = p.detach()
                st = opt.state.get(p, {})
                for key in ("exp_avg", "exp_avg_sq", "step"):
                    if key in st:
                        t[f"sae{i}.adam.{name}.{key}"] = st[key].detach().reshape(-1) if (
                            key == "step") else st[key].detach()
            for name, b in sae.named_buffers():
                t[f"sae{i}.buffer.{name}"] = b.detach()
            t[f"sae{i}.tokens_since_fired"] = self.tokens_since_fired[i]
            t[f"sae{i}.generator_state"] = self.generators[i].get_state()
        return {k: v.contiguous().cpu().clone() for k, v in t.items()}

    def save_checkpoint(self, directory: str | os.PathLike) -> Path:
        """Write the full training state atomically to ``directory/checkpoint.safetensors``."""
        d = Path(directory)
        meta = {
            "step": self.step, "tokens_seen": self.tokens_seen, "scale": self.scale,
            "scale_tokens": self.scale_tokens,
            "initialised": self.initialised, "trainer_config": asdict(self.config),
            "sae_configs": [s.config.to_dict() for s in self.saes],
            "extended_from": self.extended_from,
        }
        try:
            d.mkdir(parents=True, exist_ok=True)
            atomic_write_safetensors(d / CHECKPOINT_FILE, self._state_tensors(),
                                     metadata={"state": json.dumps(meta)})
        except OSError as exc:
            raise self._write_failed(d / CHECKPOINT_FILE, exc) from exc
        self._checkpoint_step = self.step
        return d / CHECKPOINT_FILE

    def _stopped_at_once(self, signum: int) -> TrainingInterrupted:
        """What a second SIGINT/SIGTERM raises: no new checkpoint, the last one named."""
        last = self._checkpoint_step
        path = (Path(self.config.checkpoint_dir) / CHECKPOINT_FILE
                if self.config.checkpoint_dir and last is not None else None)
        return TrainingInterrupted(signum, self.step, self.config.total_steps, path,
                                   checkpoint_step=last, repeated=True)

    def _write_failed(self, path: Path, exc: OSError) -> ResumableError:
        """The error for a failed write (a full disk): the file, the cause, what is kept."""
        if self.config.checkpoint_dir and self._checkpoint_step is not None:
            kept = (f"the last checkpoint, {Path(self.config.checkpoint_dir) / CHECKPOINT_FILE} "
                    f"(step {self._checkpoint_step}), is kept as it was")
        else:
            kept = "no checkpoint had been written yet"
        return ResumableError(
            f"could not write {path} ({exc.strerror or exc}) at step {self.step} of "
            f"{self.config.total_steps}; {kept}. Free disk space, then run the same command "
            "again to resume.")

    @torch.no_grad()
    def load_checkpoint(self, directory: str | os.PathLike, extend_steps: bool = False) -> None:
        """Restore the state written by :meth:`save_checkpoint`; refuse (naming every
        difference) unless it was written with the same settings. ``extend_steps``: allow a
        larger ``total_steps`` than the checkpoint's."""
        path = Path(directory) / CHECKPOINT_FILE
        meta = read_checkpoint_meta(directory)
        diffs = self._resume_differences(meta, extend_steps)
        if diffs:
            raise InterplabError(
                f"checkpoint {path} was written with different settings: " + "; ".join(diffs)
                + ". Resume with the checkpoint's settings, or train into a fresh output folder "
                "(checkpoint_dir)" + ("" if extend_steps else
                                      "; to train a run longer, extend its steps (extend_steps=True; "
                                      "--extend-steps on the command line)")
            )
        try:
            t = load_file(str(path))
        except Exception as exc:  # a damaged file: safetensors raises several types
            raise InterplabError(f"checkpoint {path} is damaged ({exc}); delete it to start "
                                 "the run over") from None
        for i, (sae, opt) in enumerate(zip(self.saes, self.optimizers, strict=True)):
            for name, p in sae.named_parameters():
                p.copy_(t[f"sae{i}.param.{name}"])
                if f"sae{i}.adam.{name}.exp_avg" in t:
                    opt.state[p] = {
                        "step": t[f"sae{i}.adam.{name}.step"].reshape(()).clone(),
                        "exp_avg": t[f"sae{i}.adam.{name}.exp_avg"].to(self.device).clone(),
                        "exp_avg_sq": t[f"sae{i}.adam.{name}.exp_avg_sq"].to(self.device).clone(),
                    }
            for name, b in sae.named_buffers():
                b.copy_(t[f"sae{i}.buffer.{name}"])
            self.tokens_since_fired[i].copy_(t[f"sae{i}.tokens_since_fired"])
            # checkpoints from before per-SAE streams hold one shared state
            self.generators[i].set_state(t.get(f"sae{i}.generator_state", t.get("generator_state")))
        self.step = int(meta["step"])
        self.tokens_seen = int(meta["tokens_seen"])
        self.scale = float(meta["scale"])
        self.scale_tokens = int(meta.get("scale_tokens", 0))
        self.initialised = bool(meta["initialised"])
        self._checkpoint_step = self.step
        self.extended_from = list(meta.get("extended_from", []))
        old_total = int(meta["trainer_config"]["total_steps"])
        if old_total != self.config.total_steps:
            self.extended_from.append(old_total)

    def _resume_differences(self, meta: dict, extend_steps: bool) -> list[str]:
        """Every setting that differs between a checkpoint's metadata and this trainer."""
        saved = meta["sae_configs"]
        if len(saved) != len(self.saes):
            return [f"{len(saved)} SAE(s) in the checkpoint, {len(self.saes)} now"]
        diffs = []
        for i, (old, sae) in enumerate(zip(saved, self.saes, strict=True)):
            diffs += _differences(without_retired(old), _jsonable(sae.config.to_dict()),
                                  f"SAE {i} ")
        now = _jsonable(asdict(self.config))
        old_t = {k: v for k, v in meta["trainer_config"].items() if k not in RESUME_EXEMPT}
        now_t = {k: v for k, v in now.items() if k not in RESUME_EXEMPT}
        if extend_steps and now_t["total_steps"] >= old_t.get("total_steps", 0):
            now_t["total_steps"] = old_t.get("total_steps")
        diffs += _differences(old_t, now_t, "", defaults=_jsonable(asdict(
            TrainerConfig(total_steps=1))))
        return diffs


def read_checkpoint_meta(directory: str | os.PathLike) -> dict:
    """The JSON bookkeeping of ``directory/checkpoint.safetensors`` (step, configs, scale)."""
    from safetensors import safe_open

    path = Path(directory) / CHECKPOINT_FILE
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads(fh.metadata()["state"])
        missing = {"step", "tokens_seen", "scale", "initialised", "sae_configs",
                   "trainer_config"} - set(meta)
        if missing:
            raise KeyError(f"no {sorted(missing)}")
    except Exception as exc:  # damaged header, metadata or JSON: several exception types
        raise InterplabError(f"checkpoint {path} is damaged or not an interplab checkpoint "
                             f"({type(exc).__name__}: {exc}); delete it to start the run over"
                             ) from None
    return meta


def _jsonable(d: dict) -> dict:
    """``d`` as it reads back from JSON (tuples become lists), for comparison with metadata."""
    return json.loads(json.dumps(d))


def _differences(old: dict, now: dict, prefix: str, defaults: dict | None = None) -> list[str]:
    """``"prefix key: old in the checkpoint, new now"`` for each differing key (one level of
    nested dicts is flattened, so a data identity names the part that changed)."""
    out = []
    for key in sorted(set(old) | set(now)):
        missing = (defaults or {}).get(key)  # a key older checkpoints did not record
        a, b = old.get(key, missing), now.get(key, missing)
        if isinstance(a, dict) and isinstance(b, dict) and key != "extra":
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} in the checkpoint, {b!r} now")
    return out


def _describe(sae: SparseAutoencoder) -> str:
    c = sae.config
    return f"{c.architecture}, width {c.d_sae}, " + (
        f"k={c.k}" if c.k else f"λ={c.sparsity_coefficient:g}")


def _all_finite(sae: SparseAutoencoder) -> bool:
    # A sum of finite terms is finite unless it overflows, so one read pass per tensor settles
    # the usual case; isfinite() (several passes) decides only when a sum is not finite.
    with torch.no_grad():
        params = list(sae.parameters())
        if bool(torch.stack([p.sum() for p in params]).isfinite().all()):
            return True
        return bool(torch.stack([torch.isfinite(p).all() for p in params]).all())


class _StopOnSignal:
    """While active (main thread only), SIGINT/SIGTERM set ``signum`` instead of killing: the
    loop finishes its step and checkpoints. A second signal interrupts at once (checkpoint
    writes are atomic, so that is safe too)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, enabled: bool,
                 on_repeat: Callable[[int], BaseException] | None = None):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.signum: int | None = None
        self.on_repeat = on_repeat  # the exception a second signal raises (what is kept)
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise self.on_repeat(signum) if self.on_repeat else KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> _StopOnSignal:
        if self.enabled:
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def run_size_warnings(n_rows: int | None, sae_configs: list[SAEConfig],
                      config: TrainerConfig) -> list[str]:
    """Reasons a run is too small to give a meaningful SAE (empty list: none).

    - Fewer than ``MIN_ROWS_PER_FEATURE`` (20) distinct rows per feature: an SAE has 2·d_in·width
      weights and each row gives d_in numbers, so 20 rows per feature is 10 numbers per weight.
      Below that the SAE can memorise its training rows (on 619 rows a width-4608 SAE reaches
      FVE 0.999 with 99 % of its features dead), and FVE on them says nothing.
    - A run that ends within the LR or λ warm-up never trains at the settings it names.
    - Fewer than ``MIN_STEPS`` (500) steps: our ground-truth test needs about 600 steps to
      recover a known dictionary, and the LR decay and dead-feature window need room.
    """
    out = []
    width = max(c.d_sae for c in sae_configs)
    if n_rows is not None and n_rows < MIN_ROWS_PER_FEATURE * width:
        out.append(
            f"the data holds {n_rows:,} rows for a width of {width}: fewer than "
            f"{MIN_ROWS_PER_FEATURE} rows per feature ({MIN_ROWS_PER_FEATURE * width:,}), so the "
            "SAE can memorise its training rows and its metrics mean little; harvest more text "
            "or lower the width")
    uses_lambda = any(c.k is None for c in sae_configs)  # the top-k family has no λ
    warm = max(config.lr_warmup_steps, config.sparsity_warmup_steps if uses_lambda else 0)
    if config.total_steps <= warm:
        lam = f", λ warm-up {config.sparsity_warmup_steps}" if uses_lambda else ""
        out.append(f"the run ends during warm-up ({config.total_steps} steps, LR warm-up "
                   f"{config.lr_warmup_steps}{lam}): it never trains at the settings it names; "
                   "train for more steps")
    elif config.total_steps < MIN_STEPS:
        out.append(f"{config.total_steps} steps are too few for a meaningful SAE (fewer than "
                   f"{MIN_STEPS}); train for more steps (a smaller batch gives more steps per "
                   "pass)")
    return out


def train_saes(
    batches: Iterable[torch.Tensor],
    sae_configs: list[SAEConfig],
    config: TrainerConfig,
) -> list[SparseAutoencoder]:
    """Convenience: train a sweep and return the finalised SAEs (normalisation folded in)."""
    return SAETrainer(sae_configs, config).fit(batches).finalized_saes()
