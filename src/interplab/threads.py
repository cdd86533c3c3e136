"""Thread limits that are always undone: torch's intra-op pool and the BLAS/OpenMP pools."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def limit_threads(n: int | None) -> Iterator[None]:
    """Run the body with ``n`` torch threads and ``n`` BLAS/OpenMP threads (threadpoolctl), and
    restore both on exit, also when the body raises. ``None`` or 0 leaves the counts alone."""
    if not n:
        yield
        return
    import torch
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        torch.set_num_threads(old)
