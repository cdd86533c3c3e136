"""The thread policy: as many threads as there are CPUs other processes leave free."""

import os
import subprocess
import sys
import time

import pytest

from interplab.errors import InterplabError
from interplab.threads import cpus_busy_elsewhere, resolve_threads, threads_for


def test_threads_for_leaves_the_busy_cpus_alone():
    assert threads_for(2, 0.0) == 2
    assert threads_for(2, 0.3) == 2
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
