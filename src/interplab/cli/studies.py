"""Study commands generated from :data:`interplab.studies.registry.STUDIES` (options from each
config dataclass; the run → save JSON → render report → print summary steps written once), and
``interplab rerun``, which runs a result file's own config again and says what changed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from interplab.cli.options import from_config
from interplab.errors import InterplabError
from interplab.fileio import atomic_write_json
from interplab.studies.registry import STUDIES, Study, study_of
from interplab.study.result import config_from_dict, read_result, rerun_comparison

console = Console()


def execute(study: Study, config: Any, out: Path, progress: bool = True) -> tuple[Any, Path]:
    """Run ``study`` with ``config`` into ``out`` and print its summary and files. Interrupted,
    it says what the run had kept in ``out`` (e.g. harvested activations a re-run reuses)."""
    try:
        result, json_path, html_path, lines = study.execute(config, out, progress=progress)
    except KeyboardInterrupt as exc:
        raise KeyboardInterrupt(_kept(Path(out))) from exc
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)
    console.print(f"results: [bold]{json_path}[/]")
    if html_path is not None:
        console.print(f"report:  [bold]{html_path}[/]")
    return result, json_path


def _kept(out: Path) -> str:
    files = [p for p in out.rglob("*") if p.is_file()] if out.is_dir() else []
    if not files:
        return f"nothing had been written to {out} yet"
    size = sum(p.stat().st_size for p in files) / 2**20
    return (f"{len(files)} file(s) ({size:.1f} MiB) are kept in {out}, e.g. harvested "
            "activations a re-run reuses instead of running the model again")


def study_command(study: Study) -> Any:
    """The typer command of ``study``."""

    def command(
        config: Any,
        out: Path = typer.Option(Path(f"runs/{study.name}"), "--out",
                                 help=f"Folder for {study.json_name}, report.html and what the "
                                 "run keeps (cached activations, checkpoints)."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bars.", metavar=""),
    ) -> None:
        execute(study, config, out, progress=not quiet)

    command.__name__ = study.name.replace("-", "_")
    command.__doc__ = study.help
    return from_config(study.config_class(), rename=dict(study.rename),
                       exclude=set(study.exclude))(command)


def rerun(
    result: Path = typer.Argument(..., help="A result file written by a study (e.g. "
                                  "runs/demo/truth.json)."),
    out: Path = typer.Option(..., "--out", help="Folder for the new result and report (kept "
                             "apart from the original's)."),
    threads: int = typer.Option(0, "--threads", help="CPU threads for the new run (0: the "
                                "saved config's setting). A run at one thread repeats bit for "
                                "bit; with more, sums may differ in their last digits."),
) -> None:
    """Run the study a result file names again, with the config saved in it, and compare.

    Lists every number that changed (timings and versions aside) and says which vary with the
    thread count: only a run at --threads 1 repeats bit for bit. The comparison is also saved as
    rerun.json in --out."""
    old = read_result(result)
    study = study_of(old, result)
    config = config_from_dict(study.config_class(), old["config"])
    if threads:
        if hasattr(config, "run"):
            config.run.threads = threads
        elif hasattr(config, "num_threads"):
            config.num_threads = threads
        else:
            raise InterplabError(f"the {study.name} study has no --threads setting to override")
    if Path(out).resolve() == Path(result).resolve().parent:
        raise InterplabError(f"--out {out} holds the result being re-run; choose another folder")
    console.print(f"re-running the [bold]{study.name}[/] study of {result} → {out}")
    _, json_path = execute(study, config, out)
    new = json.loads(Path(json_path).read_text(encoding="utf-8"))
    comparison = rerun_comparison(old, new, _threads_of(config), thread_setting=hasattr(
        config, "run") or hasattr(config, "num_threads"))
    atomic_write_json(Path(out) / "rerun.json", {"result": str(result), "rerun": str(json_path),
                                                   **comparison})
    if comparison["identical"]:
        console.print(f"[green]identical[/] to {result} (timings and versions aside)")
    else:
        console.print(f"[yellow]{comparison['n_differences']} difference(s)[/] from {result}:")
        for line in comparison["differences"]:
            console.print(f"  {line}", highlight=False)
    console.print(comparison["note"], highlight=False, soft_wrap=True)
    console.print(f"comparison: [bold]{Path(out) / 'rerun.json'}[/]")


def _threads_of(config: Any) -> int | None:
    """The thread count a config runs at (None: chosen automatically or the library's)."""
    run = getattr(config, "run", None)
    if run is not None:
        return run.threads
    threads = getattr(config, "num_threads", None)  # the belief study's toy model
    return threads or None


def register(app: typer.Typer) -> None:
    for study in STUDIES.values():
        if not study.own_command:  # e.g. `sae train`, registered with its group
            app.command(study.name)(study_command(study))
    app.command("rerun")(rerun)
