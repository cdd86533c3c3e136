import os

import numpy as np
import pytest

from interplab.parallel import fork_available, map_jobs

needs_fork = pytest.mark.skipif(not fork_available(), reason="worker processes are forked on Linux only")


@needs_fork
def test_jobs_run_in_other_processes_and_come_back_in_order():
    big = np.arange(1_000_000, dtype=np.float64)  # inherited by the workers, never pickled
    done = []

    def job(i):
        return i, os.getpid(), float(big[i::7].sum())

    out = map_jobs(job, 9, workers=2, on_done=done.append)
    assert [o[0] for o in out] == list(range(9))
    assert [o[2] for o in out] == [float(big[i::7].sum()) for i in range(9)]
    assert os.getpid() not in {o[1] for o in out}
    assert sorted(done) == list(range(9))


@needs_fork
def test_workers_run_one_thread_each():
    import torch
    from threadpoolctl import threadpool_info

    def job(_):
        return torch.get_num_threads(), {p["num_threads"] for p in threadpool_info()}

    for torch_threads, blas_threads in map_jobs(job, 2, workers=2):
        assert torch_threads == 1 and blas_threads <= {1}


def test_one_worker_runs_in_this_process():
    assert map_jobs(lambda i: (i, os.getpid()), 3, workers=1) == [(i, os.getpid()) for i in range(3)]


@needs_fork
def test_an_error_in_a_job_is_raised_here():
    def job(i):
        if i == 2:
            raise ValueError("job 2 failed")
        return i

    with pytest.raises(ValueError, match="job 2 failed"):
        map_jobs(job, 5, workers=2)
