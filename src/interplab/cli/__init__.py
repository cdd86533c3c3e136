"""The `interplab` command line: a thin shell that parses options and calls a study."""

from __future__ import annotations

import shlex

# The arguments of the command being run, set by ``main`` (kept here, not in ``cli.main``, which
# runs as ``__main__`` under ``python -m interplab.cli.main``).
ARGS: list[str] = []


def command_line() -> str:
    """The command being run, as a shell line that runs it again."""
    return "interplab " + shlex.join(ARGS) if ARGS else "the same interplab command"
