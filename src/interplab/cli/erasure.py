"""`interplab erase` and `interplab nulls`: thin shells over :mod:`interplab.studies.erasure` and
:mod:`interplab.studies.nulls`; options are derived from their config dataclasses."""

from __future__ import annotations

from pathlib import Path

import typer

from interplab.cli.options import from_config
from interplab.studies.erasure import ErasureConfig
from interplab.studies.nulls import NullsConfig


def _written(json_path: Path, html_path: Path) -> None:
    typer.echo(f"results: {json_path}")
    typer.echo(f"report:  {html_path}")


def erase(cfg: ErasureConfig,
          out: Path = typer.Option(Path("runs/erase"), help="Folder for erasure.json and report.html.")
          ) -> None:
    """Erase a concept at one layer with every method; held-out checks with a random-subspace
    control, in-model ΔCE/KL, and how many linear directions carry it."""
    from interplab.controls import format_p
    from interplab.report.erasure import write_erasure_report
    from interplab.studies.erasure import run_erasure

    result = run_erasure(cfg)
    out.mkdir(parents=True, exist_ok=True)
    for m, c in result.checks.items():
        lin = c["accuracy"]["linear"]
        typer.echo(f"{m:13s} linear {lin['before']['value']:.2f} → {lin['erased']['value']:.2f} "
                   f"(random subspace {lin['random']['value']:.2f}, chance {c['majority']:.2f})")
    if result.behaviour:
        b = result.behaviour
        typer.echo(f"model's true/false separation {b['plain']['separation']['value']:+.3f}")
        for m, e in b["erasers"].items():
            c, rnd = e["separation_change"], b["random"][str(e["rank"])]["separation_change"]
            t = e["vs_random"]
            typer.echo(f"{m:13s} Δ separation {c['value']:+.3f} [{c['lo']:+.3f}, {c['hi']:+.3f}] "
                       f"(random subspace {rnd['value']:+.3f}; vs random subspaces: "
                       f"{t['verdict']}, {format_p(t['q'], at_floor=t['q_bound'], name='q')})")
    if result.directions:
        d = result.directions
        typer.echo(f"directions to chance: {d['labels']['rounds_to_chance']} "
                   f"(shuffled labels: {d['shuffled']['rounds_to_chance']})")
    _written(result.to_json(out / "erasure.json"), write_erasure_report(result, out / "report.html"))


def nulls(cfg: NullsConfig,
          out: Path = typer.Option(Path("runs/nulls"), help="Folder for nulls.json and report.html.")
          ) -> None:
    """Run probes and SAEs on real activations and on every null source; report method − null."""
    from interplab.report.nulls import write_nulls_report
    from interplab.studies.nulls import run_nulls

    result = run_nulls(cfg)
    out.mkdir(parents=True, exist_ok=True)
    for source, cells in result.probes.items():
        line = ", ".join(f"{p} {c['value']:.2f}" for p, c in cells.items())
        sae = result.saes.get(source)
        extra = (f"; SAE FVE train {sae['train']['fve']:.3f} / held-out {sae['heldout']['fve']:.3f}"
                 if sae else "")
        typer.echo(f"{source:16s} {line}{extra}")
    _written(result.to_json(out / "nulls.json"), write_nulls_report(result, out / "report.html"))


def register(app: typer.Typer) -> None:
    """Add ``erase`` and ``nulls`` to ``app``."""
    app.command("erase")(from_config(ErasureConfig)(erase))
    app.command("nulls")(from_config(NullsConfig)(nulls))
