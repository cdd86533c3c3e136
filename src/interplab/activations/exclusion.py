"""Which token positions SAE work leaves out: position 0 and massive-norm ("attention-sink") tokens.

In many language models the first position of every sequence (BOS or not) and a few other tokens
carry residual norms ~100 × those of ordinary tokens. Left in, a handful of them dominate the
variance that FVE divides by and the input scale a trainer estimates, so SAE metrics describe them
rather than the ordinary tokens. :class:`ExclusionRule` makes the choice explicit: it is applied by
SAE training and evaluation, the mixing buffer, CE evaluation, and stores harvested for SAE
training, and it is recorded (``to_dict``) in the store manifest and in the SAE config.

The rule lives here, not in :mod:`interplab.sae`, because the activation store records and applies
it and the activations layer must not depend on the SAE layer.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass

import torch

from interplab.errors import InterplabError

__all__ = ["ExclusionRule", "ExclusionCount", "ordinary_batches"]


@dataclass(frozen=True)
class ExclusionRule:
    """Tokens to leave out of SAE training and of the headline reconstruction metrics.

    - ``first_position``: drop position 0 of every sequence (whatever its token; BOS or not).
    - ``norm_ratio``: drop a token whose L2 norm exceeds ``norm_ratio`` × the median norm of the
      batch it arrives in (the batch's ordinary tokens set the median, so a few huge rows cannot
      move it). ``None`` disables the norm test.

    ``ExclusionRule()`` is the default used by SAE work; ``ExclusionRule.none()`` keeps every token.
    """

    first_position: bool = True
    norm_ratio: float | None = 10.0

    def __post_init__(self) -> None:
        if self.norm_ratio is not None and not self.norm_ratio > 1:
            raise InterplabError(
                f"exclusion norm_ratio must be > 1 (a multiple of the median norm) or None to "
                f"disable the norm test, not {self.norm_ratio}"
            )

    @classmethod
    def none(cls) -> ExclusionRule:
        """Keep every token (for comparison with the default)."""
        return cls(first_position=False, norm_ratio=None)

    @property
    def active(self) -> bool:
        return self.first_position or self.norm_ratio is not None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> ExclusionRule:
        """Inverse of :meth:`to_dict`; ``None`` (a store or SAE from before the rule) → default."""
        if d is None:
            return cls()
        unknown = set(d) - {"first_position", "norm_ratio"}
        if unknown:
            raise InterplabError(f"exclusion rule has unknown fields {sorted(unknown)}; expected "
                                 "first_position and norm_ratio")
        return cls(first_position=bool(d.get("first_position", True)),
                   norm_ratio=d.get("norm_ratio", 10.0))

    def describe(self) -> str:
        parts = []
        if self.first_position:
            parts.append("position 0")
        if self.norm_ratio is not None:
            parts.append(f"‖x‖ > {self.norm_ratio:g} × batch median")
        return " and ".join(parts) if parts else "nothing"

    @torch.no_grad()
    def keep_mask(
        self,
        x: torch.Tensor,
        position: torch.Tensor | None = None,
        candidates: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Boolean ``[...]`` mask of the ordinary tokens of ``x [..., d]`` (True = keep).

        ``position``: ``[...]`` index of each token in its sequence (needed when
        ``first_position``; pass None only for rows already known not to be at position 0).
        ``candidates``: ``[...]`` tokens that exist at all (e.g. attended, not padding); the
        median is taken over them, and the result is False outside them.
        """
        lead = x.shape[:-1]
        keep = torch.ones(lead, dtype=torch.bool, device=x.device)
        if candidates is not None:
            keep &= candidates.to(device=x.device, dtype=torch.bool)
        if self.first_position and position is not None:
            keep &= position.to(x.device) != 0
        if self.norm_ratio is not None:
            norms = x.float().norm(dim=-1)
            pool = norms[keep]
            if pool.numel():
                keep &= norms <= self.norm_ratio * pool.median()
        return keep


@dataclass
class ExclusionCount:
    """How many tokens a rule saw and left out (reported beside the metrics)."""

    n_seen: int = 0
    n_excluded: int = 0

    def add(self, keep: torch.Tensor, candidates: torch.Tensor | None = None) -> None:
        n = int(candidates.sum()) if candidates is not None else keep.numel()
        self.n_seen += n
        self.n_excluded += n - int(keep.sum())

    def to_dict(self) -> dict:
        frac = self.n_excluded / self.n_seen if self.n_seen else 0.0
        return {"n_seen": self.n_seen, "n_excluded": self.n_excluded, "fraction_excluded": frac}


def ordinary_batches(batches: Iterable[tuple[torch.Tensor, torch.Tensor]], rule: ExclusionRule,
                     count: ExclusionCount) -> Iterator[torch.Tensor]:
    """``(x [batch, d], position [batch])`` pairs (``iter_batches(..., with_position=True)``) →
    the rows of each batch that ``rule`` keeps, counted in ``count``."""
    for x, position in batches:
        keep = rule.keep_mask(x, position)
        count.add(keep)
        yield x[keep]
