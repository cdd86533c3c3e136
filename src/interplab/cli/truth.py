"""`interplab truth` and `interplab demo`: shells over :mod:`interplab.studies.truth`, their options
derived from :class:`~interplab.studies.truth.TruthConfig`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from interplab.cli.options import from_config
from interplab.studies.truth import TruthConfig

console = Console()


def _run(config, out: Path) -> None:  # noqa: ANN001 - TruthConfig, imported lazily
    from interplab.report.truth import write_truth_report
    from interplab.studies.truth import run_truth

    out.mkdir(parents=True, exist_ok=True)
    # Harvested activations stay in the output folder: a re-run (or a run that failed after the
    # harvest) reuses them instead of running the model again.
    try:
        result = run_truth(config, cache_dir=out / "activations")
    except KeyboardInterrupt:
        _report_interrupt(out / "activations")
        raise typer.Exit(130) from None
    json_path = result.to_json(out / "truth.json")
    html_path = write_truth_report(result, out / "report.html")
    _print_summary(result)
    console.print(f"results: [bold]{json_path}[/]")
    console.print(f"report:  [bold]{html_path}[/]")


def _report_interrupt(cache: Path) -> None:
    from interplab.cli import command_line

    files = sorted(cache.glob("*.safetensors")) if cache.is_dir() else []
    kept = (f"{len(files)} harvested activation file(s) are kept in {cache}; a re-run reuses them "
            "instead of running the model again" if files else
            "no harvest had finished yet, so nothing was kept")
    Console(stderr=True).print(f"interrupted: {kept}. Run the same command again to resume: "
                               f"{command_line()}", highlight=False, soft_wrap=True, markup=False)


def _print_summary(result) -> None:  # noqa: ANN001
    from rich.table import Table

    table = Table(title=f"truth study · {result.model['name']} (test accuracy at the layer "
                        "chosen on validation)")
    for col in ("trained on", "probe", "layer", "accuracy [95% CI]", "shuffled", "random", "reset"):
        table.add_column(col)
    for train in result.train_sets:
        for probe, layer in result.best_layer.get(train, {}).items():
            li = result.layers.index(layer)
            e = result.heldout[train][probe]
            cells = []
            for v in ("shuffled", "random", "reset"):
                cells.append(f"{e[v]['value'][li]:.2f}" if v in e else "–")
            p = e["probe"]
            table.add_row(train, probe, str(layer),
                          f"{p['value'][li]:.2f} [{p['lo'][li]:.2f}, {p['hi'][li]:.2f}]", *cells)
    console.print(table)
    console.print(" ".join(result.summary))
    for note in result.notes:
        console.print(f"[yellow]•[/] {note}")


def truth(
    config: TruthConfig,
    out: Path = typer.Option(Path("runs/truth"), "--out", help="folder for truth.json + report.html"),
) -> None:
    """Run the truth study: probes across layers and datasets, with controls, and a report."""
    _run(config, out)


def demo(
    config: TruthConfig,
    out: Path = typer.Option(Path("runs/demo"), "--out", help="folder for truth.json + report.html"),
) -> None:
    """The main job: the truth study on the embedded default model with default settings."""
    console.print(f"[bold]interplab demo[/]: truth study on {config.model} → {out}")
    _run(config, out)


truth_cmd = from_config(TruthConfig, rename={"train_sets": "train"})(truth)
demo_cmd = from_config(TruthConfig, only={"model"})(demo)


def register(app: typer.Typer) -> None:
    app.command("truth")(truth_cmd)
    app.command("demo")(demo_cmd)
