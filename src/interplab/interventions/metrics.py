"""Metrics read from the logits at one token of each prompt.

A metric is any callable ``metric(logits, example) -> values``: ``logits`` ``[b, vocab]`` at the
read token of each row, ``example`` ``[b]`` the prompt index of each row (for per-prompt targets);
it returns ``[b]``. The built-ins carry a ``name`` that results record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from interplab.errors import InterplabError
from interplab.models import LanguageModel


def _targets(t: int | Sequence[int], device: torch.device, example: torch.Tensor) -> torch.Tensor:
    arr = torch.as_tensor(np.atleast_1d(np.asarray(t, dtype=np.int64)), device=device)
    return arr.expand(len(example)) if arr.numel() == 1 else arr[example]


@dataclass(frozen=True)
class LogitDiff:
    """``logit[a] − logit[b]`` (one id for all prompts, or one per prompt)."""

    a: int | tuple[int, ...]
    b: int | tuple[int, ...]

    @property
    def name(self) -> str:
        return "logit difference"

    def __call__(self, logits: torch.Tensor, example: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(len(example), device=logits.device)
        return (logits[rows, _targets(self.a, logits.device, example)]
                - logits[rows, _targets(self.b, logits.device, example)])


@dataclass(frozen=True)
class ProbDiff:
    """``P(a) − P(b)`` under the full softmax (e.g. P(" TRUE") − P(" FALSE"))."""

    a: int | tuple[int, ...]
    b: int | tuple[int, ...]

    @property
    def name(self) -> str:
        return "probability difference"

    def __call__(self, logits: torch.Tensor, example: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(logits.float(), dim=-1)
        rows = torch.arange(len(example), device=logits.device)
        return (p[rows, _targets(self.a, logits.device, example)]
                - p[rows, _targets(self.b, logits.device, example)])


@dataclass(frozen=True)
class TargetLogProb:
    """``log P(target)`` (nats)."""

    target: int | tuple[int, ...]

    @property
    def name(self) -> str:
        return "log-probability of the target"

    def __call__(self, logits: torch.Tensor, example: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(logits.float(), dim=-1)
        rows = torch.arange(len(example), device=logits.device)
        return logp[rows, _targets(self.target, logits.device, example)]


def metric_name(metric: object) -> str:
    return str(getattr(metric, "name", getattr(metric, "__name__", type(metric).__name__)))


def single_token(lm: LanguageModel, text: str) -> int:
    """The id of ``text`` if it is exactly one token (no BOS), else a clear error."""
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        pieces = lm.tokenizer.convert_ids_to_tokens(ids)
        raise InterplabError(f"{text!r} is {len(ids)} tokens for {lm.name} ({pieces}); answer "
                             "tokens must be single tokens, pick another spelling")
    return int(ids[0])


def first_single_token(lm: LanguageModel, candidates: Sequence[str]) -> tuple[str, int]:
    """The first of ``candidates`` that is one token for this model, and its id."""
    for c in candidates:
        try:
            return c, single_token(lm, c)
        except InterplabError:
            continue
    raise InterplabError(f"none of {list(candidates)} is a single token for {lm.name}; give "
                         "answer words the tokenizer keeps whole")
