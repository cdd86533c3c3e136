"""`interplab causal`: is the truth direction causal? Steering, patching and attribution (a thin
shell over :mod:`interplab.studies.causal`; its options are derived from
:class:`~interplab.studies.causal.CausalConfig`)."""

from __future__ import annotations

from pathlib import Path

import typer

from interplab.cli.options import from_config
from interplab.studies.causal import CausalConfig


def causal(
    cfg: CausalConfig,
    out: Path = typer.Option(Path("runs/causal"), help="Folder for causal.json + report.html."),
) -> None:
    """Is the truth direction causal? Steer with probe directions (with a random-direction
    null), patch true into false city statements, and compare attribution methods."""
    from interplab.report.causal import write_causal_report
    from interplab.studies.causal import run_causal

    result = run_causal(cfg)
    out.mkdir(parents=True, exist_ok=True)
    json_path = result.to_json(out / "causal.json")
    html_path = write_causal_report(result, out / "report.html")
    for line in result.findings:
        typer.echo(f"• {line}")
    typer.echo(f"results: {json_path}")
    typer.echo(f"report:  {html_path}")


causal_cmd = from_config(CausalConfig, rename={"n_steer_layers": "n-layers",
                                                "steer_layers": "layers"})(causal)


def register(app: typer.Typer) -> None:
    app.command("causal")(causal_cmd)
