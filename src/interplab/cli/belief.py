"""`interplab belief`: train a toy transformer on a hidden Markov process and regress its residual
stream onto the exact belief states (a thin shell over :mod:`interplab.studies.belief`; its
options are derived from :class:`~interplab.studies.belief.BeliefStudyConfig`)."""

from __future__ import annotations

from pathlib import Path

import typer

from interplab.cli.options import from_config
from interplab.studies.belief import BeliefStudyConfig

# Option names of the first release of this command, kept working.
RENAME = {
    "process_params": "param",
    "model.context_length": "context",
    "model.n_layers": "layers",
    "model.n_heads": "heads",
    "train.n_steps": "steps",
    "num_threads": "threads",
}
# Set by the study itself: the vocabulary from the process, the training seed from --seed, the
# stopping loss from --stop-loss-ratio.
EXCLUDE = {"model.vocab_size", "train.seed", "train.stop_loss"}


def belief(
    cfg: BeliefStudyConfig,
    out: Path = typer.Option(Path("runs/belief"), help="Folder for result.json, report.html, "
                             "checkpoints."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress output."),
) -> None:
    """Belief-state geometry: process -> toy transformer -> regression onto beliefs -> report."""
    from interplab.report.belief import render_belief_report
    from interplab.studies.belief import run_belief_study

    result = run_belief_study(cfg, out_dir=out, progress=not quiet)
    json_path = result.save(out / "result.json")
    html_path = render_belief_report(result, out / "report.html")
    t, tr = result.targets, result.training
    typer.echo(
        f"{tr['steps_run']} steps ({tr['stop_reason']}); loss {result.final_loss:.4f} vs floor "
        f"{result.optimal_loss:.4f} (ratio {result.loss_ratio:.4f}, untrained "
        f"{result.untrained_loss:.4f}); at {t['site']} on unseen prefixes: R² {t['r2_unseen']:.4f} "
        f"(untrained {t['untrained_r2_unseen']:.4f}), RMSE trained/untrained "
        f"{t['rmse_ratio']:.3f}; shuffled max R² {t['max_shuffled_r2']:.4f}; best single layer "
        f"R² {result.best_r2:.4f} at {result.best_layer}; targets met: loss {t['loss_met']}, "
        f"R² {t['r2_met']}, RMSE ratio {t['rmse_ratio_met']}, shuffled {t['shuffled_met']}; "
        f"{result.timings['total']:.0f} s"
    )
    typer.echo(f"wrote {json_path} and {html_path}")


belief_cmd = from_config(BeliefStudyConfig, rename=RENAME, exclude=EXCLUDE)(belief)


def register(app: typer.Typer) -> None:
    """Add the ``belief`` command to ``app``."""
    app.command("belief")(belief_cmd)
