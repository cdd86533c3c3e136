"""Training loop for the toy transformer on freshly sampled sequences of a process.

Every step draws a new batch from the process (there is no finite training set to overfit), so
the training loss is an unbiased estimate of the expected cross-entropy and can be compared
directly with :func:`interplab.compmech.beliefs.optimal_cross_entropy`. AdamW, linear warm-up,
cosine decay to ``min_lr_fraction``, gradient clipping.

Stopping rule: with ``stop_loss`` set, ``n_steps`` is a cap and training stops at the first
evaluation whose held-out loss is at or below ``stop_loss``. The schedule is always laid out over
the cap, so a run that stops at step ``k`` is exactly the first ``k`` steps of the capped run.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from interplab.compmech.config import TrainConfig
from interplab.compmech.process import HiddenMarkovProcess
from interplab.compmech.transformer import GPT, save_model
from interplab.errors import InterplabError

HELDOUT_STREAM = 1  # the held-out batch draws from rng([seed, 1]), disjoint from the data's rng(seed)


def heldout_seed(cfg: TrainConfig) -> list[int]:
    """The seed of the held-out batch :func:`train_model` evaluates on."""
    return [cfg.seed, HELDOUT_STREAM]


def heldout_tokens(process: HiddenMarkovProcess, length: int, cfg: TrainConfig) -> torch.Tensor:
    """The held-out batch ``[cfg.eval_sequences, length]`` of :func:`train_model`: score another
    model on exactly the sequences training reported its losses on."""
    rng = np.random.default_rng(heldout_seed(cfg))
    return torch.from_numpy(process.sample(cfg.eval_sequences, length, seed=rng))


@dataclass
class TrainHistory:
    """What training measured. Losses in nats per predicted symbol.

    ``train_loss[k]`` is the mean training loss over the ``log_every`` steps ending at
    ``train_steps[k]``; ``eval_loss_per_position[k]`` is the held-out loss at each context
    position after ``eval_steps[k]`` steps (same fixed held-out batch every time). ``steps_run`` is the number of optimiser steps taken;
    ``stop_reason`` says why training ended: ``"steps"`` (all ``n_steps``, no stopping rule),
    ``"stop_loss"`` (the held-out loss reached ``stop_loss``) or ``"step_cap"`` (the cap was
    reached first).
    """

    train_steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    eval_loss: list[float] = field(default_factory=list)
    eval_loss_per_position: list[list[float]] = field(default_factory=list)
    eval_loss_stderr: float = 0.0
    tokens_seen: int = 0
    seconds: float = 0.0
    steps_run: int = 0
    stop_reason: str = "steps"

    def to_dict(self) -> dict:
        return asdict(self)


def _lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = (step - cfg.warmup_steps) / max(1, cfg.n_steps - cfg.warmup_steps)
    cos = 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
    return cfg.lr * (cfg.min_lr_fraction + (1 - cfg.min_lr_fraction) * cos)


@torch.no_grad()
def evaluate(model: GPT, tokens: torch.Tensor, batch_size: int = 4096) -> tuple[np.ndarray, float]:
    """Per-position mean cross-entropy ``[T - 1]`` (nats) of ``model`` on ``tokens [n, T]``, and the
    standard error of the overall mean (over sequences)."""
    was_training = model.training
    model.eval()
    per_seq = []
    for s in range(0, tokens.shape[0], batch_size):
        batch = tokens[s : s + batch_size].to(model.device)
        logits = model(batch[:, :-1])
        ce = F.cross_entropy(logits.transpose(1, 2), batch[:, 1:], reduction="none")  # [b, T-1]
        per_seq.append(ce.double().cpu())
    model.train(was_training)
    ce_all = torch.cat(per_seq)
    stderr = float(ce_all.mean(dim=1).std() / math.sqrt(ce_all.shape[0]))
    return ce_all.mean(dim=0).numpy(), stderr


def train_model(
    model: GPT,
    process: HiddenMarkovProcess,
    cfg: TrainConfig,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    log_every: int = 10,
) -> TrainHistory:
    """Train ``model`` in place on sequences of length ``context_length + 1`` sampled from
    ``process`` (inputs are the first ``context_length`` symbols, targets the next ones).

    Checkpoints (safetensors + JSON) go to ``checkpoint_dir/step-XXXXXX`` every
    ``cfg.checkpoint_every`` steps and to ``checkpoint_dir/final`` at the end.
    """
    if model.cfg.vocab_size != process.n_symbols:
        raise InterplabError(
            f"model vocab_size {model.cfg.vocab_size} != process {process.name!r} symbols "
            f"{process.n_symbols}"
        )
    length = model.cfg.context_length + 1
    rng = np.random.default_rng(cfg.seed)  # training data; nothing else here is random
    eval_tokens = heldout_tokens(process, length, cfg)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "emb" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "emb" not in n)]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.99),
    )
    hist = TrainHistory()
    start = time.perf_counter()
    model.train()
    # Sampling is vectorised; drawing many batches at once amortises the per-position loop.
    chunk_steps = 50
    buffer: torch.Tensor | None = None
    running: list[float] = []
    bar = tqdm(range(cfg.n_steps), desc="training", disable=not progress, unit="step")
    for step in bar:
        if step % chunk_steps == 0:
            buffer = torch.from_numpy(process.sample(cfg.batch_size * chunk_steps, length, seed=rng))
        assert buffer is not None
        k = step % chunk_steps
        batch = buffer[k * cfg.batch_size : (k + 1) * cfg.batch_size].to(model.device)
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg)
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        running.append(loss.item())
        hist.tokens_seen += batch[:, 1:].numel()
        hist.steps_run = step + 1
        evaluating = (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.n_steps
        if evaluating:
            per_pos, stderr = evaluate(model, eval_tokens)
            hist.eval_steps.append(step + 1)
            hist.eval_loss.append(float(per_pos.mean()))
            hist.eval_loss_per_position.append([float(v) for v in per_pos])
            hist.eval_loss_stderr = stderr
        stop = evaluating and cfg.stop_loss is not None and hist.eval_loss[-1] <= cfg.stop_loss
        if (step + 1) % log_every == 0 or step + 1 == cfg.n_steps or stop:
            hist.train_steps.append(step + 1)
            hist.train_loss.append(float(np.mean(running)))
            running = []
            bar.set_postfix(loss=f"{hist.train_loss[-1]:.4f}")
        if checkpoint_dir is not None and cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0:
            save_model(model, Path(checkpoint_dir) / f"step-{step + 1:06d}", {"step": step + 1})
        if stop:
            hist.stop_reason = "stop_loss"
            break
    else:
        hist.stop_reason = "steps" if cfg.stop_loss is None else "step_cap"
    bar.close()
    hist.seconds = time.perf_counter() - start
    if checkpoint_dir is not None:
        save_model(
            model, Path(checkpoint_dir) / "final", {"step": hist.steps_run, "train": asdict(cfg)}
        )
    return hist
