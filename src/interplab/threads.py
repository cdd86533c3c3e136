"""Thread limits that are always undone: torch's intra-op pool and the BLAS/OpenMP pools."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

from interplab.errors import InterplabError


@contextlib.contextmanager
def limit_threads(n: int | None) -> Iterator[None]:
    """Run the body with ``n`` torch threads and ``n`` BLAS/OpenMP threads (threadpoolctl), and
    restore both on exit, also when the body raises. ``None`` or 0 leaves the counts alone."""
    if not n:
        yield
        return
    import torch

    load_thread_pools()
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        torch.set_num_threads(old)


def load_thread_pools() -> None:
    """Load every BLAS/OpenMP library our numerical code uses, so a thread limit reaches them.

    threadpoolctl limits only the libraries already loaded. scikit-learn brings SciPy's OpenBLAS
    and its own OpenMP runtime; left unloaded until a probe module is first imported inside a
    limited block, they kept their default thread counts (2 threads per job here, oversubscribed
    beside other processes)."""
    import sklearn  # noqa: F401  (loads scipy's OpenBLAS and scikit-learn's libgomp too)
    import torch  # noqa: F401


THREADS_ENV = "INTERPLAB_THREADS"


def cpus_available() -> int:
    """CPUs this process may run on (its affinity mask, which containers and ``taskset`` set)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _busy_jiffies() -> tuple[int, int]:
    """(jiffies every CPU spent busy, jiffies this process ran) since boot, from /proc."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # minus idle, iowait
    with open("/proc/self/stat") as f:
        own = f.read().rsplit(")", 1)[1].split()
    return busy, int(own[11]) + int(own[12])  # utime, stime


MEASURE_S = 0.2  # how long "auto" watches the load when it has no recent decision to go on
RECENT_S = 60.0  # a pool starting this soon after another's decision measures the load since it


def cpus_busy_elsewhere(window_s: float = MEASURE_S) -> float:
    """How many CPUs other processes keep busy, measured over ``window_s`` (0.0 if unknown)."""
    try:
        b0, o0 = _busy_jiffies()
        time.sleep(window_s)
        b1, o1 = _busy_jiffies()
    except (OSError, ValueError, IndexError):
        return 0.0
    return _elsewhere(b1 - b0, o1 - o0, window_s)


def _elsewhere(busy: int, own: int, seconds: float) -> float:
    return max(0.0, (busy - own) / (os.sysconf("SC_CLK_TCK") * seconds))


# A CPU counts as taken once other processes keep more than this fraction of it busy.
SHARED_CPU_FRACTION = 0.5


def threads_for(cpus: int, busy_elsewhere: float) -> int:
    """Threads for a compute pool: the CPUs other processes leave free, at least 1.

    A thread more than there are free CPUs does not add CPU time; it makes every parallel region
    wait for whichever thread the scheduler last put aside, so throughput falls much faster than
    the CPU share (measured in docs/benchmarks.md, "Speed under load"). A CPU that others keep
    busy more than :data:`SHARED_CPU_FRACTION` of the time counts as taken: beside a neighbour
    using 30 % or 45 % of a core a second thread still paid on all but the smallest passes; beside
    neighbours using 75 % of one in total it made small passes 1.5 x slower (docs/benchmarks.md,
    "Why the prefix tree's lead vanished under load").
    """
    return max(1, min(cpus, int(cpus - busy_elsewhere + 1.0 - SHARED_CPU_FRACTION)))


def _is_auto(threads: int | str | None) -> bool:
    spec = threads if threads is not None else os.environ.get(THREADS_ENV, "auto")
    return isinstance(spec, str) and spec.strip().lower() == "auto"


def resolve_threads(threads: int | str | None = None) -> int:
    """The thread count for a harvest or study: ``threads`` if given, else ``$INTERPLAB_THREADS``,
    else ``"auto"``. An integer is used as is (0 keeps torch's current setting); ``"auto"`` is
    :func:`threads_for` the CPUs available and the load measured now."""
    spec = threads if threads is not None else os.environ.get(THREADS_ENV, "auto")
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text == "auto":
            return threads_for(cpus_available(), cpus_busy_elsewhere())
        if not text.isdigit():
            raise InterplabError(f"thread setting {spec!r} (from threads= or ${THREADS_ENV}) is "
                                 "neither 'auto' nor a whole number; use e.g. 'auto' or 2")
        spec = int(text)
    if spec < 0:
        raise InterplabError(f"threads must be 'auto' or a whole number >= 0, not {spec}")
    return spec


class AdaptiveThreads:
    """The thread count of a long computation under ``"auto"``, re-decided while it runs.

    A count measured once at the start is wrong for the rest of a long harvest whenever the load
    at that moment was passing (another job finishing: one thread for the whole run) or changes
    later (a neighbour starting: two threads contending with it). Inside ``with
    AdaptiveThreads(threads) as pace:``, :func:`pace` (called between batches by the harvest
    loops) compares the CPU time other processes used since the last decision with the elapsed
    time and sets torch's thread count to :func:`threads_for` that load, at most every
    ``every_s`` seconds and without sleeping. An explicit count (``threads=2``,
    ``$INTERPLAB_THREADS=2``) is fixed, as before. ``used`` lists the counts in the order used;
    both are restored on exit. A pool that starts within :data:`RECENT_S` of another pool's last
    decision in this process decides from the load since then instead of pausing
    :data:`MEASURE_S` to measure it.
    """

    def __init__(self, threads: int | str | None = None, every_s: float = 5.0) -> None:
        self.adaptive = _is_auto(threads)
        self.every_s = every_s
        recent = self._recent_decision() if self.adaptive else None
        self.threads = recent if recent is not None else resolve_threads(threads)
        self.used = [self.threads]
        self._limit = limit_threads(self.threads)
        self._mark: tuple[float, int, int] | None = None

    def _recent_decision(self) -> int | None:
        """The count for the load since the last decision of an "auto" pool in this process, if
        that was at most :data:`RECENT_S` ago, so that a program calling the harvest chunk by
        chunk does not pause :data:`MEASURE_S` at every call (at 3 s per call, a 7 % loss); None
        if there was none (then the load is measured over :data:`MEASURE_S`)."""
        if _LAST is None:
            return None
        (t0, b0, o0), count = _LAST
        mark = self._sample()
        if mark is None or not 0 <= mark[0] - t0 <= RECENT_S:
            return None
        if mark[0] - t0 < MEASURE_S:  # too short to measure: the count decided then
            return count
        return threads_for(cpus_available(), _elsewhere(mark[1] - b0, mark[2] - o0, mark[0] - t0))

    def __enter__(self) -> AdaptiveThreads:
        global _ACTIVE
        self._limit.__enter__()
        self._outer = _ACTIVE
        if self.adaptive:  # a fixed count inside leaves the decision to the pool around it
            _ACTIVE = self
        self._mark = self._sample()
        if self.adaptive and self._mark is not None:
            _remember(self._mark, self.threads)
        return self

    def __exit__(self, *exc: object) -> None:
        global _ACTIVE
        _ACTIVE = self._outer
        if self.adaptive:  # the count held until now: the next pool measures from here
            mark = self._sample()
            if mark is not None:
                _remember(mark, self.threads)
        self._limit.__exit__(*exc)

    @staticmethod
    def _sample() -> tuple[float, int, int] | None:
        try:
            return (time.monotonic(), *_busy_jiffies())
        except (OSError, ValueError, IndexError):
            return None

    def check(self) -> int:
        """Re-decide the count if ``every_s`` has passed since the last decision; the count."""
        if not self.adaptive or self._mark is None:
            return self.threads
        t0, b0, o0 = self._mark
        if time.monotonic() - t0 < self.every_s:
            return self.threads
        mark = self._sample()
        if mark is None:
            return self.threads
        t1, b1, o1 = mark
        self._mark = mark
        new = threads_for(cpus_available(), _elsewhere(b1 - b0, o1 - o0, t1 - t0))
        _remember(mark, new)
        if new != self.threads:
            import torch

            torch.set_num_threads(new)
            self.threads = new
            self.used.append(new)
        return self.threads


_ACTIVE: AdaptiveThreads | None = None
# The last decision of an "auto" pool in this process: ((monotonic s, busy jiffies, own
# jiffies) when it was made or confirmed, the count).
_LAST: tuple[tuple[float, int, int], int] | None = None


def _remember(mark: tuple[float, int, int], count: int) -> None:
    global _LAST
    _LAST = (mark, count)


def pace() -> None:
    """Between two batches of long work: let the innermost :class:`AdaptiveThreads` re-decide
    the thread count (nothing happens outside one)."""
    if _ACTIVE is not None:
        _ACTIVE.check()
