"""`interplab belief`: train a toy transformer on a hidden Markov process and regress its residual
stream onto the exact belief states (a thin shell over :mod:`interplab.studies.belief`)."""

from __future__ import annotations

from pathlib import Path

import typer

from interplab.errors import InterplabError


def _parse_params(items: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InterplabError(f"--param {item!r}: write NAME=VALUE, e.g. --param alpha=0.85")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            raise InterplabError(f"--param {item!r}: {value!r} is not a number") from None
    return out


def register(app: typer.Typer) -> None:
    """Add the ``belief`` command to ``app``."""

    @app.command("belief")
    def belief(
        process: str = typer.Option(
            "mess3", help="Preset (mess3, rrxor, z1r, even, golden_mean) or a .json/.npy file."
        ),
        out: Path = typer.Option(Path("runs/belief"), help="Folder for result.json, report.html, checkpoints."),
        param: list[str] = typer.Option([], help="Preset parameter NAME=VALUE (repeatable), e.g. x=0.05."),
        steps: int = typer.Option(1500, help="Training steps (the cap when --stop-loss-ratio is set)."),
        stop_loss_ratio: float = typer.Option(
            0.0, help="Stop at the first evaluation whose held-out loss is within this ratio of the "
            "optimal floor, e.g. 1.02 (0 = run all --steps)."
        ),
        batch_size: int = typer.Option(256, help="Sequences per training step."),
        lr: float = typer.Option(3e-3, help="Peak learning rate (AdamW, cosine decay)."),
        context: int = typer.Option(10, help="Context length (symbols the model reads)."),
        layers: int = typer.Option(4, help="Transformer layers."),
        d_model: int = typer.Option(64, help="Residual-stream width."),
        heads: int = typer.Option(1, help="Attention heads."),
        d_mlp: int = typer.Option(256, help="MLP hidden width."),
        seed: int = typer.Option(0, help="Seed for initialisation, data, split and controls."),
        device: str = typer.Option("auto", help="auto, cpu or cuda[:N]."),
        threads: int = typer.Option(1, help="Torch and BLAS CPU threads (0 = library defaults)."),
        checkpoint_every: int = typer.Option(0, help="Extra checkpoints every N steps (0 = none)."),
        quiet: bool = typer.Option(False, help="No progress output."),
    ) -> None:
        """Belief-state geometry: process -> toy transformer -> regression onto beliefs -> report."""
        from interplab.report.belief import render_belief_report
        from interplab.studies.belief import BeliefStudyConfig, run_belief_study

        cfg = BeliefStudyConfig(
            process=process,
            process_params=_parse_params(param),
            context_length=context,
            n_layers=layers,
            d_model=d_model,
            n_heads=heads,
            d_mlp=d_mlp,
            n_steps=steps,
            stop_loss_ratio=stop_loss_ratio,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            device=device,
            num_threads=threads,
            checkpoint_every=checkpoint_every,
        )
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
