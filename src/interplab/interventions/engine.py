"""Running many edited forward passes in batches, with proof that each edit happened.

A *job* is one row of a forward pass: a prompt (its example index) plus whatever the intervention
does to it. Jobs are run ``batch_size`` at a time; ``edits(batch, jobs)`` builds the hook
functions of one batch. Every hook records how often it fired, how many token activations it
changed and by how much (:class:`Proof`), so an edit that never ran is an error, not a zero.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from interplab.activations.harvest import _StopForward
from interplab.activations.positions import Positions
from interplab.interventions.errors import HookNeverFiredError, InterventionNoOpError
from interplab.interventions.prompts import (
    Batch,
    Prompts,
    chunks,
    hidden,
    make_batch,
    read_logits,
)
from interplab.models import LanguageModel, edit_hooks
from interplab.models.hooks import ActFn
from interplab.progress import counted
from interplab.threads import pace

Metric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
EditFactory = Callable[[Batch, slice], Mapping[str, ActFn]]


class Proof:
    """Per hook: forward passes it ran in, token activations changed, and ‖Δactivation‖."""

    def __init__(self, hooks: Sequence[str]) -> None:
        self.fires = dict.fromkeys(hooks, 0)
        self.n_edited = dict.fromkeys(hooks, 0)
        self.delta_sum = dict.fromkeys(hooks, 0.0)
        self.delta_max = dict.fromkeys(hooks, 0.0)

    def record(self, hook: str, delta: torch.Tensor) -> None:
        """``delta`` ``[k, d]``: the change made to ``k`` token activations in one pass."""
        self.fires[hook] += 1
        if delta.numel():
            norms = delta.detach().float().norm(dim=-1)
            self.n_edited[hook] += int((norms > 0).sum())
            self.delta_sum[hook] += float(norms.sum())
            self.delta_max[hook] = max(self.delta_max[hook], float(norms.max()))

    def check(self, what: str) -> None:
        """Raise if a hook never fired or changed nothing."""
        never = [h for h, n in self.fires.items() if n == 0]
        if never:
            raise HookNeverFiredError(
                f"{what}: hook(s) {never} never fired during the forward passes, so nothing was "
                "intervened on; the model does not run through the modules these hooks are "
                "attached to (were its blocks replaced after loading?)")
        idle = [h for h, s in self.delta_sum.items() if s == 0.0]
        if idle:
            raise InterventionNoOpError(
                f"{what}: hook(s) {idle} fired but changed no activation (‖Δ‖ = 0); e.g. the "
                "clean and corrupted activations are identical at the chosen positions, or the "
                "direction is zero. Choose positions at or after the first differing token")

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {h: {"fires": self.fires[h], "n_edited": self.n_edited[h],
                    "mean_delta_norm": self.delta_sum[h] / max(self.n_edited[h], 1),
                    "max_delta_norm": self.delta_max[h]} for h in self.fires}


@dataclass
class Outputs:
    metric: np.ndarray  # [jobs]
    kl: np.ndarray | None  # [jobs] KL(reference ‖ edited) at the read token, nats


def run_jobs(lm: LanguageModel, prompts: Prompts, job_example: np.ndarray, edits: EditFactory,
             metric: Metric, *, read: Positions, batch_size: int, padding_side: str = "right",
             reference_logp: torch.Tensor | None = None) -> Outputs:
    """Metric (and KL against ``reference_logp[example]`` ``[n, vocab]``) of every job."""
    out_m, out_kl = [], []
    for sl in counted(chunks(len(job_example), batch_size)):
        pace()  # under threads='auto': re-decide the thread count between batches
        batch = make_batch(lm, prompts, job_example[sl], padding_side)
        with torch.inference_mode(), edit_hooks(lm, edits(batch, sl)):
            logits = read_logits(lm, prompts, batch, read)
        ex = torch.as_tensor(batch.example, device=logits.device)
        out_m.append(metric(logits, ex).double().cpu())
        if reference_logp is not None:
            ref = reference_logp[ex]
            logp = torch.log_softmax(logits, dim=-1)
            out_kl.append((ref.exp() * (ref - logp)).sum(-1).double().cpu())
    return Outputs(torch.cat(out_m).numpy(),
                   torch.cat(out_kl).numpy() if reference_logp is not None else None)


def clean_run(lm: LanguageModel, prompts: Prompts, metric: Metric, *, read: Positions,
              batch_size: int, padding_side: str = "right") -> tuple[np.ndarray, torch.Tensor]:
    """Unedited metric ``[n]`` and log-probabilities ``[n, vocab]`` at the read token."""
    ms, lps = [], []
    for sl in counted(chunks(len(prompts), batch_size)):
        pace()  # under threads='auto': re-decide the thread count between batches
        batch = make_batch(lm, prompts, np.arange(sl.start, sl.stop), padding_side)
        with torch.inference_mode():
            logits = read_logits(lm, prompts, batch, read)
        ms.append(metric(logits, torch.as_tensor(batch.example)).double().cpu())
        lps.append(torch.log_softmax(logits, dim=-1))
    return torch.cat(ms).numpy(), torch.cat(lps)


def capture(lm: LanguageModel, prompts: Prompts, hooks: Sequence[str], *, batch_size: int
            ) -> dict[str, torch.Tensor]:
    """Every activation of ``prompts`` at ``hooks``: ``[n, max_len, d]`` (zero past a prompt's end).

    Each forward pass ends as soon as every hook has fired: blocks above the last hook never run.
    """
    n, width = len(prompts), int(prompts.lengths.max())
    out: dict[str, torch.Tensor] = {}
    for sl in counted(chunks(n, batch_size)):
        pace()  # under threads='auto': re-decide the thread count between batches
        batch = make_batch(lm, prompts, np.arange(sl.start, sl.stop))
        store: dict[str, torch.Tensor] = {}

        def keep(h: str, store: dict = store) -> ActFn:
            def fn(act: torch.Tensor) -> None:
                store[h] = act.detach().float().cpu()
                if len(store) == len(set(hooks)):
                    raise _StopForward
            return fn

        with torch.inference_mode(), edit_hooks(lm, {h: keep(h) for h in hooks}), \
                contextlib.suppress(_StopForward):
            hidden(lm, prompts, batch)
        missing = [h for h in hooks if h not in store]
        if missing:
            raise HookNeverFiredError(
                f"capturing activations: hook(s) {missing} never fired during the forward pass; "
                "the model does not run through the modules these hooks are attached to (were "
                "its blocks replaced after loading?)")
        for h in hooks:
            out.setdefault(h, torch.zeros(n, width, store[h].shape[-1]))
            for r, i in enumerate(batch.example):
                length = int(batch.length[r])
                out[h][i, :length] = store[h][r, :length]
    return out


@contextlib.contextmanager
def activation_grads_only(lm: LanguageModel) -> Iterator[None]:
    """Within the block no parameter requires grad, so a forward pass records a graph only from
    the first activation marked ``requires_grad`` upward and a backward pass computes activation
    gradients only. The parameters' flags are restored on exit."""
    params = [p for p in lm.hf.parameters() if p.requires_grad]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def run_ce(lm: LanguageModel, texts: Prompts, job_example: np.ndarray, edits: EditFactory, *,
           batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Summed next-token CE (nats) and token count of every job on (neutral) texts."""
    from interplab.interventions.prompts import token_ce

    ce, count = [], []
    for sl in counted(chunks(len(job_example), batch_size)):
        pace()  # under threads='auto': re-decide the thread count between batches
        batch = make_batch(lm, texts, job_example[sl])
        with torch.inference_mode(), edit_hooks(lm, edits(batch, sl)):
            c, k = token_ce(lm, texts, batch)
        ce.append(c.double().cpu())
        count.append(k.double().cpu())
    return torch.cat(ce).numpy(), torch.cat(count).numpy()


def no_edits(batch: Batch, sl: slice) -> dict[str, ActFn]:
    return {}
