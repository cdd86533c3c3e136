"""`interplab xor`: can a linear probe read XORs of arbitrary features (a thin shell over
:mod:`interplab.studies.xor`; its options are derived from
:class:`~interplab.studies.xor.XorConfig`)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from interplab.cli.options import from_config
from interplab.studies.xor import XorConfig

console = Console()


def xor(
    cfg: XorConfig,
    out: Path = typer.Option(Path("runs/xor"), "--out", help="Folder for xor.json, report.html "
                             "and the harvested activations."),
) -> None:
    """XOR study: probes for features, their XORs, controls and the generalization cost."""
    from interplab.report.xor import write_xor_report
    from interplab.studies.xor import run_xor

    cfg.validate()
    out.mkdir(parents=True, exist_ok=True)
    # Harvested activations stay in the output folder, so a re-run reuses them.
    result = run_xor(cfg, cache_dir=out / "activations")
    json_path = result.to_json(out / "xor.json")
    html_path = write_xor_report(result, out / "report.html")
    for sentence in result.summary:
        console.print(f"• {sentence}", highlight=False)
    console.print(f"results: [bold]{json_path}[/]")
    console.print(f"report:  [bold]{html_path}[/]")


xor_cmd = from_config(XorConfig)(xor)


def register(app: typer.Typer) -> None:
    app.command("xor")(xor_cmd)
