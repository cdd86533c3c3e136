"""`interplab harvest` and `interplab store info|verify`."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from interplab.errors import InterplabError

console = Console()
err_console = Console(stderr=True)
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
    for_sae: bool = typer.Option(False, "--for-sae", help="a store for SAE training: leave out "
                                 "position 0 and tokens with a norm > 10 × the batch median "
                                 "(the rule and the count are recorded in the manifest)"),
) -> None:
    """Harvest activations of a model on texts into an on-disk activation store."""
    for flag, value, least in (("--batch-size", batch_size, 1), ("--rows-per-shard", rows_per_shard, 1),
                               ("--max-length", max_length, 0)):
        if value < least:
            raise InterplabError(f"{flag} must be at least {least}, not {value}")
    from interplab.activations import harvest_to_store
    from interplab.activations.exclusion import ExclusionRule
    from interplab.activations.store import parse_dtype
    from interplab.activations.texts import read_texts
    from interplab.models import HookPoint, load

    command = _resume_command(locals())
    text_list = read_texts(texts, column=column)
    hook_list = [HookPoint.parse(h) for h in hooks.split(",") if h.strip()]
    if not hook_list:
        raise InterplabError("--hooks is empty; name at least one hook point")
    stored_dtype = parse_dtype(dtype)
    compute = parse_dtype(compute_dtype) if compute_dtype else None
    try:
        lm = load(model, device=device or None)
        store = harvest_to_store(
            lm, text_list, hook_list, out, positions,
            batch_size=batch_size, rows_per_shard=rows_per_shard, dtype=stored_dtype,
            dataset_name=texts.name, max_length=max_length or None,
            truncation="error" if strict_length else "warn", compute_dtype=compute,
            command=command, exclusion=ExclusionRule() if for_sae else None,
        )
    except KeyboardInterrupt:
        _report_interrupt(out, command)
        raise typer.Exit(130) from None
    _print_info(store.info())


def _resume_command(options: dict) -> str:
    """The command line that repeats (and so resumes) this harvest, with absolute paths."""
    model = options["model"]
    if Path(model).expanduser().exists():
        model = str(Path(model).expanduser().resolve())
    args = ["interplab", "harvest", "--model", model, "--texts", str(options["texts"].resolve()),
            "--hooks", options["hooks"], "--out", str(options["out"].resolve()),
            "--positions", options["positions"], "--column", options["column"],
            "--batch-size", str(options["batch_size"]),
            "--rows-per-shard", str(options["rows_per_shard"]), "--dtype", options["dtype"]]
    for flag in ("compute_dtype", "device", "max_length"):
        if options[flag]:
            args += ["--" + flag.replace("_", "-"), str(options[flag])]
    for flag in ("strict_length", "for_sae"):
        if options[flag]:
            args.append("--" + flag.replace("_", "-"))
    return shlex.join(args)


def _report_interrupt(out: Path, command: str) -> None:
    from interplab.activations import ActivationStore

    try:
        st = ActivationStore(out)
        saved = (f"{out} keeps {st.n_rows} rows from {st.texts_done} of {st.n_texts} texts "
                 f"in {len(st.shards)} complete shard(s)")
    except InterplabError:
        saved = "nothing was saved yet"
    err_console.print(f"interrupted: {saved}; resume with: {command}", highlight=False,
                      soft_wrap=True)


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
