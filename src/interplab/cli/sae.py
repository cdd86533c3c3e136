"""`interplab sae train | eval | dashboard`: thin shells over :func:`interplab.studies.sae.
run_sae_study`, :func:`interplab.sae.evaluate.evaluate_sae` and :func:`interplab.sae.dashboard.
dashboard_from_config`, with options derived from :class:`~interplab.studies.sae.SaeStudyConfig`,
:class:`~interplab.sae.config.SaeEvalConfig` and :class:`~interplab.sae.config.DashboardConfig`."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from interplab.cli.executor import executor_option, ray_address_option, workers_option
from interplab.cli.options import command_line, from_config
from interplab.sae.config import DashboardConfig, SaeEvalConfig
from interplab.studies.registry import STUDIES
from interplab.studies.sae import SaeStudyConfig

console = Console(stderr=True)
out_console = Console()
sae_app = typer.Typer(help="Train, evaluate and inspect sparse autoencoders.",
                      no_args_is_help=True)


def _resume_command(cfg: SaeStudyConfig, out: Path, executor: str, ray_address: str,
                    workers: int) -> str:
    """The `sae train` command line of ``cfg``, generated from it, with the output folder and
    the executor (a Ray sweep keeps one checkpoint per SAE, the local one a shared one)."""
    extra = ["--out", str(out)]
    if executor != "local":
        extra += ["--executor", executor] + (["--ray-address", ray_address] if ray_address
                                             else []) + (["--workers", str(workers)] if workers
                                                         else [])
    return f"{command_line('interplab sae train', train_cmd, cfg)} {shlex.join(extra)}"


def train(
    cfg: SaeStudyConfig,
    out: Path = typer.Option(..., "--out", help="folder; one sub-folder per trained SAE"),
    executor: str = executor_option("one pass for the sweep", "one task per SAE on --store; "
                                    "the same SAEs"),
    ray_address: str = ray_address_option(),
    workers: int = workers_option("SAEs trained"),
) -> None:
    """Train one SAE or a sweep (every combination of --arch, --k, --sparsity) in one pass.

    By default position 0 and massive-norm tokens are left out (see --norm-ratio). With
    --executor ray each SAE is a task of its own (out/<name>/ holds its log and checkpoint)."""
    from interplab.distributed import make_executor, study_executor
    from interplab.sae.trainer import TrainingInterrupted
    from interplab.studies.sae.run import run_sae_study, summary_lines, train_sweep

    runner = make_executor(executor, address=ray_address, workers=workers, progress=True)
    try:
        with runner:
            result = run_sae_study(cfg, out, execute=study_executor(runner) if runner.remote
                                   else train_sweep)
    except TrainingInterrupted as exc:
        console.print(f"interrupted: {exc}; train_log.jsonl holds the steps up to it; the SAE "
                      f"folders are written when training ends. Resume with: "
                      f"{_resume_command(cfg, out, executor, ray_address, workers)}",
                      highlight=False)
        raise typer.Exit(128 + exc.signum) from None
    json_path = result.to_json(out / STUDIES["sae"].json_name)
    for line in summary_lines(result):
        console.print(line, highlight=False)
    console.print(f"result: {json_path} (`interplab rerun {json_path} --out DIR` trains the same "
                  "sweep again)", highlight=False)


# Option names of the first release of `sae train`, kept working.
TRAIN_RENAME = {
    "trainer.total_steps": "steps",
    "trainer.lr_warmup_steps": "lr-warmup",
    "trainer.sparsity_warmup_steps": "sparsity-warmup",
    "trainer.checkpoint_every_steps": "checkpoint-every",
    "trainer.log_every_steps": "log-every",
}
# Set by the study from the data and the output folder.
TRAIN_EXCLUDE = {"trainer.log_path", "trainer.checkpoint_dir", "trainer.data_identity",
                 "trainer.progress", "trainer.dead_window_tokens", "trainer.resample_every_steps"}
train_cmd = sae_app.command("train")(
    from_config(SaeStudyConfig, rename=TRAIN_RENAME, exclude=TRAIN_EXCLUDE)(train))


def eval_(
    cfg: SaeEvalConfig,
    out: Path | None = typer.Option(None, "--out", help="JSON file for the full result "
                                    "(default: eval.json in the SAE folder)."),
) -> None:
    """Reconstruction metrics over every row of a store and/or CE loss recovered with the SAE
    spliced into the model.

    The SAE's recorded model and hook are checked against the store's and the model's first (a
    mismatch is refused unless --allow-mismatch). Headline metrics are on ordinary tokens
    (position 0 and massive-norm tokens left out, by the rule the SAE was trained with); CE is
    computed on the held-out tail of the corpus. Prints a short table and writes the full result
    as JSON."""
    from interplab.sae.evaluate import evaluate_sae

    result = evaluate_sae(cfg, progress=True)
    path = result.save(out if out is not None else cfg.sae / "eval.json")
    _print_checks(result.notes, result.mismatches())
    for on, rows in result.headline():
        out_console.print(f"on {on}:", highlight=False, markup=False)
        table = Table(box=None, show_header=False, pad_edge=False)
        for _ in range(3):
            table.add_column(overflow="fold")
        for row in rows:
            table.add_row(f"  {row[0]}", *row[1:])
        out_console.print(table, highlight=False)
    for line in result.exclusion_lines():
        out_console.print(f"left out: {line}", highlight=False, markup=False)
    out_console.print(f"full result (all-token metrics, per-feature densities, CE vs zero "
                      f"ablation, ...) → {path}", highlight=False, markup=False)


def _print_checks(notes: list[str], mismatches: list[str]) -> None:
    for n in notes:
        console.print(f"note: {n}", highlight=False, markup=False)
    for m in mismatches:
        console.print(f"[yellow]warning:[/] evaluated despite a mismatch (--allow-mismatch): {m}",
                      highlight=False)


eval_cmd = sae_app.command("eval")(from_config(SaeEvalConfig)(eval_))


def dashboard(
    cfg: DashboardConfig,
    out: Path = typer.Option(..., "--out", help="HTML file to write."),
) -> None:
    """Write a self-contained HTML dashboard of SAE features on held-out text.

    Tokens are counted as in training (BOS, position 0 and massive-norm tokens left out); the
    page names the text, the rule and how the features were chosen."""
    from interplab.progress import progress_display
    from interplab.report.sae_dashboard import render_dashboard
    from interplab.sae.dashboard import dashboard_from_config

    with progress_display(console) as bar:
        data = dashboard_from_config(cfg, progress=bar)
    identity = data.identity or {}
    _print_checks(identity.get("notes", []), identity.get("mismatches", []))
    path = render_dashboard(data, out)
    console.print(f"dashboard for {len(data.features)} features on {data.text}; "
                  f"{data.n_tokens} tokens counted, {data.n_excluded} left out "
                  f"({data.exclusion_description}) → {path}", highlight=False, markup=False)


dashboard_cmd = sae_app.command("dashboard")(from_config(DashboardConfig)(dashboard))


def register(app: typer.Typer) -> None:
    app.add_typer(sae_app, name="sae")


