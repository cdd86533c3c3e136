"""`interplab truth` and `interplab demo`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console()


def _csv_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _numbers(value: str, option: str, kind: type, example: str) -> list:
    """Comma-separated numbers, or one clear error naming the option and a valid example."""
    from interplab.errors import InterplabError

    try:
        return [kind(x) for x in _csv_list(value)]
    except ValueError:
        raise InterplabError(f"{option} {value!r} is not a comma-separated list of "
                             f"{kind.__name__} values; e.g. {option} {example}") from None


def _run(config, out: Path) -> None:  # noqa: ANN001 - TruthConfig, imported lazily
    from interplab.report.truth import write_truth_report
    from interplab.studies.truth import run_truth

    out.mkdir(parents=True, exist_ok=True)
    # Harvested activations stay in the output folder: a re-run (or a run that failed after the
    # harvest) reuses them instead of running the model again.
    result = run_truth(config, cache_dir=out / "activations")
    json_path = result.to_json(out / "truth.json")
    html_path = write_truth_report(result, out / "report.html")
    _print_summary(result)
    console.print(f"results: [bold]{json_path}[/]")
    console.print(f"report:  [bold]{html_path}[/]")


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


def truth_cmd(
    model: str = typer.Option("smollm2-135m", "--model", help="registry name, HF folder or .gguf"),
    datasets: str = typer.Option(
        "cities,neg_cities,sp_en_trans,neg_sp_en_trans,larger_than,smaller_than,cities_conj,cities_disj",
        "--datasets", help="comma-separated dataset names or .csv paths"),
    train: list[str] = typer.Option(
        ["cities", "cities+neg_cities", "larger_than", "sp_en_trans"], "--train",
        help="a training set; join datasets with '+' to mix them; repeat the option"),
    layers: str = typer.Option("", "--layers", help="comma-separated layers (default: all)"),
    probes: str = typer.Option("diffmean,lda,logistic,ccs", "--probes"),
    controls: str = typer.Option("shuffled,random,reset", "--controls",
                                 help="any of shuffled,random,reset (or 'none')"),
    max_per_dataset: int = typer.Option(600, "--max-per-dataset", help="0 for no limit"),
    split: str = typer.Option("0.6,0.2,0.2", "--split",
                              help="train,validation,test fractions (split by entity)"),
    centering: str = typer.Option("per-dataset", "--centering",
                                  help="per-dataset | train | none"),
    pair_by: str = typer.Option(
        "auto", "--pair-by",
        help="match twin datasets (cities/neg_cities): auto (pair ids, else aligned rows), "
             "row, or a CSV column name"),
    group_column: str = typer.Option(
        "", "--group-column", help="CSV column naming each row's entity (for the split)"),
    seed: int = typer.Option(0, "--seed"),
    n_shuffles: int = typer.Option(5, "--n-shuffles", help="shuffled-label fits averaged per probe"),
    batch_size: int = typer.Option(64, "--batch-size"),
    device: str = typer.Option("", "--device"),
    out: Path = typer.Option(Path("runs/truth"), "--out", help="folder for truth.json + report.html"),
) -> None:
    """Run the truth study: probes across layers and datasets, with controls, and a report."""
    from interplab.studies.truth import TruthConfig

    config = TruthConfig(
        model=model, datasets=_csv_list(datasets),
        train_sets=[[p for p in t.split("+") if p] for t in train],
        layers=_numbers(layers, "--layers", int, "0,6,12") or None, probes=_csv_list(probes),
        controls=[] if controls.strip() == "none" else _csv_list(controls),
        max_per_dataset=max_per_dataset or None,
        split=_numbers(split, "--split", float, "0.6,0.2,0.2"), centering=centering,
        pair_by=pair_by, group_column=group_column or None, seed=seed, batch_size=batch_size, device=device or None,
        n_shuffles=n_shuffles,
    )
    _run(config, out)


def demo_cmd(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="folder for truth.json + report.html"),
    model: str = typer.Option("smollm2-135m", "--model"),
) -> None:
    """The main job: the truth study on the embedded default model with default settings."""
    from interplab.studies.truth import TruthConfig

    console.print(f"[bold]interplab demo[/]: truth study on {model} → {out}")
    _run(TruthConfig(model=model), out)


def register(app: typer.Typer) -> None:
    app.command("truth")(truth_cmd)
    app.command("demo")(demo_cmd)
