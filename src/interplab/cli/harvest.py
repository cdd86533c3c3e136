"""`interplab harvest` and `interplab store info|verify`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from interplab.errors import InterplabError

console = Console()
store_app = typer.Typer(help="Inspect and check activation stores.", no_args_is_help=True)


def harvest_cmd(
    texts: Path = typer.Option(..., "--texts", help=".txt (one per line), .jsonl or .csv file"),
    hooks: str = typer.Option(..., "--hooks", help="comma-separated, e.g. blocks.15.hook_resid_post"),
    out: Path = typer.Option(..., "--out", help="store folder (re-run the same command to resume)"),
    model: str = typer.Option("smollm2-135m", "--model", help="registry name, HF folder or .gguf"),
    positions: str = typer.Option("all", "--positions",
                                  help="last | all | all-but-bos | index:N"),
    column: str = typer.Option("text", "--column", help="column/field for .csv/.jsonl"),
    batch_size: int = typer.Option(32, "--batch-size"),
    rows_per_shard: int = typer.Option(65536, "--rows-per-shard"),
    dtype: str = typer.Option("float32", "--dtype", help="float32 | float16 | bfloat16 (stored)"),
    compute_dtype: str = typer.Option("", "--compute-dtype",
                                      help="run matrix products in this dtype (e.g. bfloat16)"),
    device: str = typer.Option("", "--device", help="cpu, cuda, ... (default: cuda if present)"),
    max_length: int = typer.Option(0, "--max-length", help="truncate texts to this many tokens"),
    strict_length: bool = typer.Option(False, "--strict-length",
                                       help="error (not warn) on texts longer than the context"),
) -> None:
    """Harvest activations of a model on texts into an on-disk activation store."""
    from interplab.activations import harvest_to_store
    from interplab.activations.store import parse_dtype
    from interplab.activations.texts import read_texts
    from interplab.models import load

    text_list = read_texts(texts, column=column)
    hook_list = [h.strip() for h in hooks.split(",") if h.strip()]
    if not hook_list:
        raise InterplabError("--hooks is empty; name at least one hook point")
    lm = load(model, device=device or None)
    store = harvest_to_store(
        lm, text_list, hook_list, out, positions,
        batch_size=batch_size, rows_per_shard=rows_per_shard, dtype=parse_dtype(dtype),
        dataset_name=texts.name, max_length=max_length or None,
        truncation="error" if strict_length else "warn",
        compute_dtype=parse_dtype(compute_dtype) if compute_dtype else None,
    )
    _print_info(store.info())


def _print_info(info: dict) -> None:
    table = Table(show_header=False, box=None)
    for k, v in info.items():
        table.add_row(str(k), json.dumps(v) if isinstance(v, dict | list) else str(v))
    console.print(table)


@store_app.command("info")
def store_info(path: Path = typer.Argument(..., help="store folder")) -> None:
    """Print what a store holds."""
    from interplab.activations import ActivationStore

    _print_info(ActivationStore(path).info())


@store_app.command("verify")
def store_verify(path: Path = typer.Argument(..., help="store folder")) -> None:
    """Check every shard's size, checksum and row count; exit 1 on any problem."""
    from interplab.activations import ActivationStore

    report = ActivationStore(path).verify()
    if report.ok:
        console.print(f"[green]ok[/]: {report.n_shards} shards, {report.n_rows} rows verified")
        return
    for p in report.problems:
        console.print(f"[red]problem[/]: {p}")
    raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("harvest")(harvest_cmd)
    app.add_typer(store_app, name="store")
