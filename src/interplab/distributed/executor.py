"""Executors: run a list of independent tasks in this process (the default) or as Ray tasks.

An executor has one method, ``run(fn, tasks, description=...)``, yielding ``(index, result)`` for
every task as it finishes: in order for :class:`LocalExecutor`, in completion order for
:class:`RayExecutor`. Callers that need an order (the store manifest) sort by index themselves.
Ray is imported only when a :class:`RayExecutor` runs, so everything else works without it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

from interplab.errors import InterplabError
from interplab.progress import progress_display
from interplab.threads import limit_threads

# Ray starts its workers at niceness 15, so beside other busy processes a Ray task gets a small
# fraction of the CPU a local run gets (a test module ran at ~5 % CPU next to two busy loops). A
# local cluster started here runs its workers at the driver's priority unless the user set this.
WORKER_NICENESS_ENV = "RAY_worker_niceness"


def init_local_ray(ray: Any, **kwargs: Any) -> None:
    """``ray.init(**kwargs)`` for a local cluster whose workers keep the driver's priority."""
    os.environ.setdefault(WORKER_NICENESS_ENV, "0")
    ray.init(**kwargs)

__all__ = ["LocalExecutor", "RayExecutor", "make_executor", "EXECUTORS"]

EXECUTORS = ("local", "ray")


@contextlib.contextmanager
def _task_progress(description: str, total: int, enabled: bool) -> Iterator[Callable[[], None]]:
    """``advance()`` once per finished task, shown as a bar (terminal) or log lines."""
    with progress_display(Console(stderr=True), enabled=enabled) as bar:
        task = bar.add_task(description, total=total)
        yield lambda: bar.advance(task)


def _call(fn: Callable[[Any], Any], task: Any, threads: int | None) -> Any:
    with limit_threads(threads):
        return fn(task)


@dataclass
class LocalExecutor:
    """Tasks one after the other in this process; ``threads_per_task`` (None: unchanged) sets
    torch's and BLAS's thread counts while each runs."""

    threads_per_task: int | None = None
    progress: bool = False
    remote = False

    def run(self, fn: Callable[[Any], Any], tasks: Sequence[Any], *,
            description: str = "tasks") -> Iterator[tuple[int, Any]]:
        with _task_progress(description, len(tasks), self.progress) as advance:
            for i, task in enumerate(tasks):
                result = _call(fn, task, self.threads_per_task)
                advance()
                yield i, result

    def close(self) -> None:
        return None

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class RayExecutor:
    """Each task a ``ray.remote`` task with ``threads_per_task`` threads (and as many CPUs).

    ``address``: an existing cluster (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``);
    None starts a local cluster with ``workers`` CPUs (and stops it on :meth:`close`). If Ray is
    already initialised in this process, that runtime is used as is. At most ``workers`` tasks
    are in flight at once (None: as many as the cluster has CPUs). A task whose worker process
    dies (killed, out of memory, node lost) is re-run up to ``max_retries`` times; an exception
    raised by the task itself is not retried and is re-raised here as it was raised.
    """

    address: str | None = None
    workers: int | None = None
    max_retries: int = 3
    threads_per_task: int = 1
    progress: bool = False
    remote = True
    _started: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.workers is not None and (not isinstance(self.workers, int) or self.workers < 1):
            raise InterplabError(f"workers (--workers) must be a positive integer, "
                                 f"not {self.workers!r}")
        if self.max_retries < 0:
            raise InterplabError(f"max_retries must be ≥ 0, not {self.max_retries}")

    def _ray(self):
        try:
            import ray
        except ImportError:
            raise InterplabError("the Ray executor needs Ray, which is not installed; "
                                 "pip install 'interplab[ray]' (or use --executor local)") from None
        if not ray.is_initialized():
            kw: dict[str, Any] = {"address": self.address, "include_dashboard": False,
                                  "logging_level": "WARNING", "log_to_driver": True}
            if self.address is None and self.workers is not None:
                kw["num_cpus"] = self.workers
            try:
                if self.address is None:
                    init_local_ray(ray, **kw)
                else:
                    ray.init(**kw)
            except ConnectionError as exc:
                raise InterplabError(f"could not connect to the Ray cluster at {self.address} "
                                     f"({exc}); start it (`ray start --head`) or check "
                                     "--ray-address") from None
            self._started = True
        return ray

    def run(self, fn: Callable[[Any], Any], tasks: Sequence[Any], *,
            description: str = "tasks") -> Iterator[tuple[int, Any]]:
        ray = self._ray()
        remote = ray.remote(num_cpus=self.threads_per_task, max_retries=self.max_retries)(_call)
        pending: dict[Any, int] = {}
        todo = iter(enumerate(tasks))
        in_flight = self.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        with _task_progress(description, len(tasks), self.progress) as advance:
            try:
                while True:
                    for i, task in todo:
                        pending[remote.remote(fn, task, self.threads_per_task)] = i
                        if len(pending) >= in_flight:
                            break
                    if not pending:
                        return
                    (ref,), _ = ray.wait(list(pending), num_returns=1)
                    i = pending.pop(ref)
                    result = self._get(ray, ref, i)
                    advance()
                    yield i, result
            finally:
                for ref in pending:  # an error or an abandoned generator: stop the rest
                    with contextlib.suppress(Exception):
                        ray.cancel(ref, force=True)

    def _get(self, ray, ref, index: int) -> Any:
        from ray.exceptions import RayTaskError, WorkerCrashedError

        try:
            return ray.get(ref)
        except RayTaskError as exc:  # the task raised: re-raise its own exception
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from None
            raise
        except WorkerCrashedError:
            raise InterplabError(
                f"task {index}'s worker process died {self.max_retries + 1} time(s) (killed or out "
                "of memory); the finished tasks are kept: free memory or raise max_retries, then "
                "run the same command again") from None

    def close(self) -> None:
        """Stop the local cluster this executor started (an existing one is left running)."""
        if self._started:
            import ray

            ray.shutdown()
            self._started = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_executor(name: str = "local", *, address: str | None = None, workers: int = 0,
                  progress: bool = False, max_retries: int = 3) -> LocalExecutor | RayExecutor:
    """The executor the command-line flags name (``--executor``, ``--ray-address``,
    ``--workers``; ``workers`` 0: as many tasks at once as the cluster has CPUs, and a local
    cluster gets every CPU of this machine)."""
    if name not in EXECUTORS:
        raise InterplabError(f"unknown executor {name!r}; use one of {', '.join(EXECUTORS)}")
    if workers < 0:
        raise InterplabError(f"--workers must be ≥ 0 (0: as many as the cluster has CPUs), "
                             f"not {workers}")
    if name == "local":
        if address or workers > 1:
            raise InterplabError("--ray-address and --workers > 1 need --executor ray; the local "
                                 "executor runs the tasks one after the other in this process")
        return LocalExecutor(progress=progress)
    return RayExecutor(address=address or None, workers=workers or None, progress=progress,
                       max_retries=max_retries)
