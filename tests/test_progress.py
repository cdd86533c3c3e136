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
    assert lines[-1].startswith("harvest (model): 20/20 done in")
    assert 3 <= len(lines) <= 12  # a line per tenth at most, not one per step
    assert all("\r" not in line and "\x1b" not in line for line in lines)


def test_terminal_gets_a_rich_bar_and_disabled_prints_nothing():
    console, _ = _console(terminal=True)
    assert isinstance(progress_display(console, enabled=True), Progress)
    console, buf = _console(terminal=False)
    with progress_display(console, enabled=False) as bar:
        bar.advance(bar.add_task("x", total=3), 3)
    assert buf.getvalue() == ""
