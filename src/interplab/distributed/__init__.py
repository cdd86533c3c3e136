"""Scale out on Ray: sharded harvests and SAE sweeps whose results equal a local run's.

- :mod:`~interplab.distributed.executor`: :class:`LocalExecutor` (a loop in this process, the
  default) and :class:`RayExecutor` (``ray.remote`` tasks on a local or existing cluster, retried
  when a worker dies); Ray is imported only when used (``pip install 'interplab[ray]'``).
- Sharded harvest: ``harvest_to_store(..., executor=..., worker_model=ModelSpec(...))``; the
  shard plan is fixed before anything runs and the manifest is assembled in shard order.
- :mod:`~interplab.distributed.sweep`: one SAE configuration per task on the same store.

How to run both on a cluster: docs/distributed.md.
"""

from interplab.distributed.executor import EXECUTORS, LocalExecutor, RayExecutor, make_executor
from interplab.distributed.spec import ModelSpec
from interplab.distributed.sweep import SweepTask, plan_sweep, run_sweep, study_executor

__all__ = ["EXECUTORS", "LocalExecutor", "RayExecutor", "make_executor", "ModelSpec",
           "SweepTask", "plan_sweep", "run_sweep", "study_executor"]
