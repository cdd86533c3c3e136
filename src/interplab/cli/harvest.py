"""`interplab harvest` (options derived from :class:`~interplab.studies.harvest.HarvestConfig`) and
`interplab store info|verify`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from interplab.cli.executor import executor_option, ray_address_option, workers_option
from interplab.cli.options import command_line, from_config
from interplab.errors import InterplabError
from interplab.studies.harvest import HarvestConfig

console = Console()
err_console = Console(stderr=True)
store_app = typer.Typer(help="Inspect and check activation stores.", no_args_is_help=True)


def harvest(
    cfg: HarvestConfig,
    executor: str = executor_option("this process", "one task per shard; the same store, "
                                    "byte for byte"),
    ray_address: str = ray_address_option(),
    workers: int = workers_option("tasks"),
) -> None:
    """Harvest activations of a model on texts into an on-disk activation store."""
    from interplab.distributed import make_executor
    from interplab.studies.harvest import run_harvest

    cfg.validate()
    command = resume_command(cfg)
    runner = make_executor(executor, address=ray_address, workers=workers, progress=True)
    try:
        with runner:
            store = run_harvest(cfg, executor=runner, command=command)
    except KeyboardInterrupt:
        _report_interrupt(cfg.out, command)
        raise typer.Exit(130) from None
    _print_info(store.info())


harvest_cmd = from_config(HarvestConfig)(harvest)


def resume_command(cfg: HarvestConfig) -> str:
    """The command line that repeats (and so resumes) the harvest ``cfg``, with absolute paths,
    generated from the config. The executor options are left out: any executor resumes a store
    and writes the same shards."""
    return command_line("interplab harvest", harvest_cmd, cfg.absolute())


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
