"""The control every erasure is compared with: erase a random subspace of the same rank."""

from __future__ import annotations

import torch

from interplab.erasure.erasers import LinearEraser
from interplab.errors import InterplabError


def random_subspace_eraser(d_model: int, rank: int, *, seed: int = 0,
                           bias: torch.Tensor | None = None) -> LinearEraser:
    """Orthogonal projection off ``rank`` directions drawn uniformly (QR of a Gaussian
    ``[d, rank]``), centred at ``bias`` (e.g. the training mean) if given."""
    if not 0 <= rank <= d_model:
        raise InterplabError(f"a random subspace of rank {rank} does not fit in d_model={d_model}")
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d_model, rank, generator=g, dtype=torch.float64))
    return LinearEraser("random-subspace", q, q.T.contiguous(), bias)
