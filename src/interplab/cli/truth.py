"""`interplab demo`: the truth study on the embedded default model with default settings (the
`truth` command itself is generated from the study registry, in ``cli/studies.py``)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from interplab.cli.options import from_config
from interplab.studies.truth.config import TruthConfig

console = Console()


def demo(
    config: TruthConfig,
    out: Path = typer.Option(Path("runs/demo"), "--out", help="folder for truth.json + report.html"),
) -> None:
    """The main job: the truth study on the embedded default model with default settings."""
    from interplab.cli.studies import execute
    from interplab.studies.registry import STUDIES

    console.print(f"[bold]interplab demo[/]: truth study on {config.run.model} → {out}")
    execute(STUDIES["truth"], config, out)


demo_cmd = from_config(TruthConfig, only={"run.model", "run.threads"})(demo)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_cmd)
