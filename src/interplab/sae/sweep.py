"""What every SAE sweep executor shares: the folder name of each trained SAE and the outcome an
executor returns (the local one in :mod:`interplab.studies.sae`, the distributed one in
:mod:`interplab.distributed.sweep`). No torch here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from interplab.sae.config import SAEConfig


def sae_name(c: SAEConfig) -> str:
    """The folder name of a trained SAE, e.g. ``topk_w4608_k32`` or ``relu_w4608_l0.5``."""
    return f"{c.architecture}_w{c.d_sae}_" + (f"k{c.k}" if c.k else f"l{c.sparsity_coefficient:g}")


@dataclass
class SweepOutcome:
    """What an executor returns: the finalised SAEs (in the order of the configs given) and the
    trainer's counters."""

    saes: list[Any]  # SparseAutoencoder, normalisation folded in
    last_metrics: list[dict[str, float]]  # per SAE, the last training-log entry
    steps: int
    tokens_seen: int
    input_scale: float
    scale_tokens: int
    tokens_read: int
    tokens_excluded: int
