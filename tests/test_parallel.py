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


_FRESH = """
import json, sys
from interplab.parallel import map_jobs

def job(i):
    import interplab.probes.logistic  # noqa: F401  (loads SciPy and scikit-learn inside the job)
    import torch
    from threadpoolctl import threadpool_info
    return [torch.get_num_threads()] + [d["num_threads"] for d in threadpool_info()]

assert "sklearn" not in sys.modules and "scipy.linalg" not in sys.modules
print(json.dumps(map_jobs(job, 2, int(sys.argv[1]))))
"""


@pytest.mark.parametrize("workers", [1, 2])
def test_every_thread_pool_a_job_uses_is_limited(workers):
    """Libraries loaded first inside a job (SciPy's OpenBLAS, scikit-learn's OpenMP) are limited
    to one thread too: threadpoolctl reaches only libraries loaded when the limit is set."""
    import json
    import subprocess
    import sys

    if workers > 1 and not fork_available():
        pytest.skip("forked workers need Linux")
    env = {k: v for k, v in os.environ.items()  # the libraries' own defaults (all CPUs)
           if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", _FRESH, str(workers)], capture_output=True,
                         text=True, check=True, env={**env, "PYTHONPATH": "src"})
    counts = json.loads(out.stdout.strip().splitlines()[-1])
    assert all(len(c) >= 4 for c in counts)  # torch, and at least two BLAS/OpenMP libraries
    assert all(n == 1 for c in counts for n in c), counts
