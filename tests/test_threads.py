"""The thread policy: as many threads as there are CPUs other processes leave free."""

import os
import subprocess
import sys
import time

import pytest
import torch

import interplab.threads as th
from interplab.errors import InterplabError
from interplab.threads import (
    AdaptiveThreads,
    cpus_busy_elsewhere,
    pace,
    resolve_threads,
    threads_for,
)


def test_threads_for_leaves_the_busy_cpus_alone():
    assert threads_for(2, 0.0) == 2
    assert threads_for(2, 0.45) == 2  # beside a neighbour using 45 % of a core two threads pay
    assert threads_for(2, 0.75) == 1  # at 75 % the second thread costs more than it brings
    assert threads_for(2, 1.0) == 1
    assert threads_for(2, 6.0) == 1  # never fewer than one
    assert threads_for(8, 2.6) == 5


def test_resolve_threads_reads_the_argument_then_the_environment(monkeypatch):
    monkeypatch.setenv("INTERPLAB_THREADS", "3")
    assert resolve_threads() == 3
    assert resolve_threads(1) == 1
    assert resolve_threads("2") == 2
    monkeypatch.setenv("INTERPLAB_THREADS", "auto")
    assert 1 <= resolve_threads() <= len(os.sched_getaffinity(0))
    with pytest.raises(InterplabError, match="whole number >= 0"):
        resolve_threads(-1)


def test_busy_neighbours_are_measured_and_our_own_work_is_not():
    t = time.process_time()
    while time.process_time() - t < 0.05:  # our own CPU use must not count as "elsewhere"
        pass
    idle = cpus_busy_elsewhere(0.3)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        loaded = cpus_busy_elsewhere(0.5)
    finally:
        busy.kill()
        busy.wait()
    assert loaded > 0.6  # the neighbour keeps (most of) one CPU busy
    assert loaded > idle - 0.5  # a busy machine may already be busy; the neighbour adds to it


class _ScriptedLoad:
    """A clock and /proc readings under the test's control: ``elsewhere(n)`` makes the next
    reading show ``n`` CPUs kept busy by other processes over 10 s."""

    def __init__(self, monkeypatch):
        self.t, self.busy, self.own = 0.0, 0, 0
        self.clk = os.sysconf("SC_CLK_TCK")
        monkeypatch.setattr(th, "cpus_available", lambda: 2)
        monkeypatch.setattr(th, "cpus_busy_elsewhere", lambda *a: 0.0)
        monkeypatch.setattr(th.time, "monotonic", lambda: self.t)
        monkeypatch.setattr(th, "_busy_jiffies", lambda: (self.busy, self.own))
        monkeypatch.setattr(th, "_LAST", None)  # no decision made before the script

    def elsewhere(self, n: float) -> None:
        self.t += 10.0
        self.own += int(1.0 * 10 * self.clk)
        self.busy += int((1.0 + n) * 10 * self.clk)


def test_auto_threads_follow_the_load_as_it_changes(monkeypatch):
    load = _ScriptedLoad(monkeypatch)
    monkeypatch.setenv("INTERPLAB_THREADS", "auto")
    before = torch.get_num_threads()
    with AdaptiveThreads(every_s=5.0) as pool:
        assert pool.threads == 2 and torch.get_num_threads() == 2  # idle at the start
        load.elsewhere(2.0)  # two busy neighbours start
        pace()
        assert torch.get_num_threads() == 1
        load.t += 1.0  # less than every_s later: no new decision
        pace()
        assert pool.threads == 1
        load.elsewhere(0.0)  # they stop
        pace()
        assert torch.get_num_threads() == 2
    assert pool.used == [2, 1, 2]
    assert torch.get_num_threads() == before


def test_a_pool_soon_after_another_decides_from_the_load_since_without_pausing(monkeypatch):
    load = _ScriptedLoad(monkeypatch)
    monkeypatch.setenv("INTERPLAB_THREADS", "auto")
    measured: list[float] = []
    monkeypatch.setattr(th, "cpus_busy_elsewhere", lambda *a: measured.append(0.0) or 0.0)
    with AdaptiveThreads() as first:
        assert first.threads == 2
    assert len(measured) == 1  # no decision to go on: measured (a pause of MEASURE_S)
    load.t += 0.05  # too soon to measure anything: the count decided then
    with AdaptiveThreads() as soon:
        assert soon.threads == 2
    load.elsewhere(2.0)  # two busy neighbours over the 10 s since
    with AdaptiveThreads() as later:
        assert later.threads == 1 and torch.get_num_threads() == 1
    assert len(measured) == 1  # neither call paused
    load.t += th.RECENT_S + 1  # that decision is too old to go on: measure again
    with AdaptiveThreads() as fresh:
        assert fresh.threads == 2
    assert len(measured) == 2
    with AdaptiveThreads(1) as fixed:  # a fixed count neither reads nor records a decision
        assert fixed.threads == 1
    assert th._LAST is not None and th._LAST[1] == 2


def test_a_fixed_thread_count_is_never_changed_and_defers_to_an_auto_pool_around_it(monkeypatch):
    load = _ScriptedLoad(monkeypatch)
    with AdaptiveThreads(3) as fixed:
        load.elsewhere(2.0)
        pace()
        assert torch.get_num_threads() == 3 and fixed.used == [3]
    with AdaptiveThreads("auto") as outer, AdaptiveThreads(0) as inner:
        load.elsewhere(2.0)
        pace()  # the inner call keeps the count (0): the outer pool decides
        assert torch.get_num_threads() == 1 and outer.used == [2, 1] and inner.used == [0]
    assert th._ACTIVE is None


def test_a_harvest_follows_the_load_between_batches(monkeypatch, tiny_models):
    from interplab.activations import harvest

    lm = tiny_models["tiny-llama"]
    load = _ScriptedLoad(monkeypatch)
    seen: list[int] = []

    def forward_hook(*_):
        seen.append(torch.get_num_threads())
        load.elsewhere(2.0)  # neighbours start while the first batch runs

    handle = lm.blocks[0].register_forward_hook(forward_hook)
    try:
        acts = harvest(lm, ["one two", "three four five", "six"], "blocks.0.hook_resid_post",
                       batch_size=1, progress=False, threads="auto",
                       share_prefixes=False)  # one pass per text, no pass for the shared BOS
    finally:
        handle.remove()
    assert seen == [2, 1, 1] and acts.info["threads"] == [2, 1]
