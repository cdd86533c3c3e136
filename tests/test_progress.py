"""Progress lines when the output is not a terminal (a log file, CI)."""

import io

from rich.console import Console
from rich.progress import Progress

from interplab.progress import LineProgress, progress_display


def _console(terminal: bool) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=terminal, width=100), buf


def test_log_output_gets_plain_lines_while_work_runs():
    console, buf = _console(terminal=False)
    bar = progress_display(console, enabled=True)
    assert isinstance(bar, LineProgress)
    bar.min_interval = 0.0
    with bar:
        task = bar.add_task("harvest (model)", total=20)
        for i in range(20):
            bar.advance(task)
            if i == 0:
                assert "harvest (model): started (20 steps)" in buf.getvalue()
    lines = buf.getvalue().splitlines()
    assert lines[-1].startswith("harvest (model): 20/20 steps done in")
    assert 3 <= len(lines) <= 12  # a line per tenth at most, not one per step
    assert all("\r" not in line and "\x1b" not in line for line in lines)


def test_terminal_gets_a_rich_bar_and_disabled_prints_nothing():
    console, _ = _console(terminal=True)
    assert isinstance(progress_display(console, enabled=True), Progress)
    console, buf = _console(terminal=False)
    with progress_display(console, enabled=False) as bar:
        bar.advance(bar.add_task("x", total=3), 3)
    assert buf.getvalue() == ""


class _Clock:
    """A fake ``time.perf_counter`` that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _elapsed(lines: list[str]) -> list[int]:
    import re

    return [int(m.group(1)) for ln in lines if (m := re.search(r"\((\d+) s\)$", ln))]


def test_a_long_task_prints_a_line_every_few_seconds_of_work_and_no_more(monkeypatch):
    """A 20-minute task whose tenths are two minutes apart still prints a line at least every
    `heartbeat` seconds of work (the demo's harvest was silent for minutes), and a task that
    advances many times a second prints no more than one line per `min_interval`."""
    import interplab.progress as progress

    clock = _Clock()
    monkeypatch.setattr(progress.time, "perf_counter", clock)
    console, buf = _console(terminal=False)
    bar = LineProgress(console)
    task = bar.add_task("harvest (model)", total=1200, unit="tokens")
    for _ in range(1200):  # one batch per second of work
        clock.now += 1.0
        bar.advance(task)
    lines = buf.getvalue().splitlines()
    times = _elapsed(lines)
    assert lines[0] == "harvest (model): started (1200 tokens)"
    assert lines[1] == "harvest (model): 12/1200 tokens (12 s)"
    assert lines[-1] == "harvest (model): 1200/1200 tokens done in 1200 s"
    gaps = [b - a for a, b in zip([0, *times], times, strict=False)]
    assert max(gaps) <= bar.heartbeat + 1 and min(gaps) >= bar.min_interval
    assert 1200 / (bar.heartbeat + 1) <= len(times) <= 1200 / bar.min_interval
    # a fast task: a hundred steps in two seconds give the start and the end lines only
    console, buf = _console(terminal=False)
    bar = LineProgress(console)
    task = bar.add_task("fast", total=100)
    for _ in range(100):
        clock.now += 0.02
        bar.advance(task)
    assert len(buf.getvalue().splitlines()) == 2


class _Sink:
    """Records what a study reports to its progress display."""

    def __init__(self) -> None:
        self.tasks: dict[int, dict] = {}

    def add_task(self, description: str, total: float | None = None, **_: object) -> int:
        self.tasks[len(self.tasks)] = {"description": description, "total": total, "steps": []}
        return len(self.tasks) - 1

    def advance(self, task: int, advance: float = 1) -> None:
        self.tasks[task]["steps"].append(advance)


def test_statement_harvest_reports_every_batch_of_tokens(tmp_path):
    """The study spine's harvest advances its task once per batch by that batch's tokens (not
    once per group of thousands of statements), and a cached re-run reports the cache."""
    from interplab.datasets import load_dataset
    from interplab.models import load
    from interplab.study.harvest import harvest_statements

    lm = load("tiny-llama")
    datasets = {n: load_dataset(n, max_size=40) for n in ("cities", "larger_than")}
    sink = _Sink()
    harvest_statements(lm, datasets, [0, 1], batch_size=8, progress=sink, cache_dir=tmp_path)
    (task,) = sink.tasks.values()
    tokens = sum(len(t) for ds in datasets.values() for t in lm.tokenize(ds.statements))
    assert task["total"] == tokens and sum(task["steps"]) == tokens
    assert len(task["steps"]) >= 80 // 8  # at least one step per batch of 8 statements
    longest = max(len(t) for ds in datasets.values() for t in lm.tokenize(ds.statements))
    assert max(task["steps"]) <= 8 * longest
    sink = _Sink()
    harvest_statements(lm, datasets, [0, 1], batch_size=8, progress=sink, cache_dir=tmp_path)
    (task,) = sink.tasks.values()
    assert "2 of 2 datasets from the cache" in task["description"]
    assert sum(task["steps"]) == task["total"] == 1


def test_intervention_batches_report_to_the_enclosing_stage_and_nowhere_else():
    """Steering run inside `reporting(...)` advances that stage's task once per batch, by the
    rows of the batch, after the batch ran; outside any stage it reports nothing."""
    import numpy as np

    from interplab.interventions import steer
    from interplab.interventions.metrics import LogitDiff
    from interplab.models import load
    from interplab.progress import counted, reporting, tick

    tick(5)  # no enclosing stage: nothing to report to, and no error
    done: list[int] = []
    sink = _Sink()
    with reporting(sink, "a stage"):
        for _sl in counted([slice(0, 3), slice(3, 5)]):
            done.append(sum(sink.tasks[0]["steps"]))  # the body runs before its tick
    assert done == [0, 3] and sink.tasks[0]["steps"] == [3, 2]

    lm = load("tiny-llama")
    prompts = [f"The number {i} is" for i in range(10)]
    direction = np.random.default_rng(0).normal(size=lm.d_model)
    sink = _Sink()
    with reporting(sink, "steering", unit="rows"):
        steer(lm, prompts, {"blocks.1.hook_resid_post": direction}, [0.0, 1.0],
              LogitDiff(1, 2), batch_size=4, n_null=0)
    (task,) = sink.tasks.values()
    assert task["description"] == "steering" and max(task["steps"]) <= 4
    assert sum(task["steps"]) >= 10  # every prompt's rows were counted
    quiet = _Sink()
    steer(lm, prompts, {"blocks.1.hook_resid_post": direction}, [1.0], LogitDiff(1, 2),
          batch_size=4, n_null=0)
    assert quiet.tasks == {}
