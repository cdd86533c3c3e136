"""Independent jobs on the machine's cores: forked worker processes, one thread each.

Many small dependent solver steps (a probe fit is hundreds of L-BFGS iterations on a
``[n ≤ 2,300, 576]`` matrix) do not use a second thread well, but two such fits side by side in
two processes do. :func:`map_jobs` runs ``job(0) … job(n - 1)`` in ``workers`` forked processes
that inherit the parent's memory (the activations are not copied or pickled; only the job index
goes in and the job's result comes back) and returns the results in job order. Every job runs on
one BLAS/torch thread in either mode, so the results do not depend on the number of workers.

Forking is used only on Linux; elsewhere (and with ``workers`` ≤ 1) the jobs run one after the
other in this process.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from typing import Any

from interplab.threads import limit_threads, load_thread_pools

# The job of the running map_jobs call; set before the workers are forked, so they inherit it.
_JOB: Callable[[int], Any] | None = None


def fork_available() -> bool:
    """Whether worker processes can be forked safely here (Linux only)."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def _one_thread() -> None:
    import torch
    from threadpoolctl import threadpool_limits

    load_thread_pools()
    torch.set_num_threads(1)
    threadpool_limits(limits=1)


def _run(i: int) -> Any:
    assert _JOB is not None, "map_jobs sets the job before forking its workers"
    return _JOB(i)


def map_jobs(job: Callable[[int], Any], n: int, workers: int,
             on_done: Callable[[int], None] | None = None) -> list[Any]:
    """``[job(0), …, job(n - 1)]``, computed by ``workers`` forked processes (one thread each).

    ``job`` may be any callable (a closure over large arrays is fine: the workers inherit it);
    its results must be picklable. ``on_done(i)`` is called in this process as each job ends
    (e.g. to advance a progress bar). An exception in a job is raised here, and the jobs not yet
    started are cancelled.
    """
    global _JOB
    with limit_threads(1):
        if workers <= 1 or n <= 1 or not fork_available():
            results = []
            for i in range(n):
                results.append(job(i))
                if on_done is not None:
                    on_done(i)
            return results
        _JOB = job
        try:
            return _map_forked(n, workers, on_done)
        finally:
            _JOB = None


def _map_forked(n: int, workers: int, on_done: Callable[[int], None] | None) -> list[Any]:
    results: list[Any] = [None] * n
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(min(workers, n), mp_context=context, initializer=_one_thread) as pool:
        pending = {pool.submit(_run, i): i for i in range(n)}
        while pending:
            done, _ = wait(pending, return_when=FIRST_EXCEPTION)
            for future in done:
                i = pending.pop(future)
                if future.exception() is not None:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise future.exception()  # type: ignore[misc]
                results[i] = future.result()
                if on_done is not None:
                    on_done(i)
    return results
