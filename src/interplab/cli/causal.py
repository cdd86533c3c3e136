"""`interplab causal`: is the truth direction causal? Steering, patching and attribution."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import typer
from rich.console import Console

from interplab.studies.causal import CausalConfig

console = Console()
_DEFAULTS = {f.name: (f.default_factory() if callable(f.default_factory) else f.default)
             for f in fields(CausalConfig)}


def _floats(value: str, option: str) -> list[float]:
    from interplab.errors import InterplabError

    try:
        return [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise InterplabError(f"{option} {value!r} is not a comma-separated list of numbers; "
                             f"e.g. {option} -2,-1,0,1,2") from None


def causal_cmd(
    model: str = typer.Option(_DEFAULTS["model"], "--model", help="registry name, HF folder or .gguf"),
    probes: str = typer.Option(",".join(_DEFAULTS["probes"]), "--probes"),
    layers: str = typer.Option("", "--layers",
                               help="steered layers, comma-separated (default: a window of "
                                    "--n-layers around the best validation layer)"),
    n_layers: int = typer.Option(_DEFAULTS["n_steer_layers"], "--n-layers"),
    doses: str = typer.Option(",".join(f"{d:g}" for d in _DEFAULTS["doses"]), "--doses"),
    n_prompts: int = typer.Option(_DEFAULTS["n_prompts"], "--n-prompts"),
    n_null: int = typer.Option(_DEFAULTS["n_null"], "--n-null"),
    patch_pairs: int = typer.Option(_DEFAULTS["patch_pairs"], "--patch-pairs"),
    max_per_dataset: int = typer.Option(_DEFAULTS["max_per_dataset"], "--max-per-dataset"),
    answer_true: str = typer.Option(",".join(_DEFAULTS["answer_true"]), "--answer-true",
                                    help="candidate spellings; the first single token is used"),
    answer_false: str = typer.Option(",".join(_DEFAULTS["answer_false"]), "--answer-false"),
    seed: int = typer.Option(_DEFAULTS["seed"], "--seed"),
    batch_size: int = typer.Option(_DEFAULTS["batch_size"], "--batch-size"),
    device: str = typer.Option("", "--device"),
    out: Path = typer.Option(Path("runs/causal"), "--out", help="folder for causal.json + report.html"),
) -> None:
    """Is the truth direction causal? Steer with probe directions (with a random-direction
    null), patch true into false city statements, and compare attribution methods."""
    from interplab.report.causal import write_causal_report
    from interplab.studies.causal import run_causal

    config = CausalConfig(
        model=model, probes=[p.strip() for p in probes.split(",") if p.strip()],
        steer_layers=[int(v) for v in _floats(layers, "--layers")] or None,
        n_steer_layers=n_layers, doses=_floats(doses, "--doses"), n_prompts=n_prompts,
        n_null=n_null, patch_pairs=patch_pairs, max_per_dataset=max_per_dataset, seed=seed,
        answer_true=answer_true.split(","), answer_false=answer_false.split(","),
        batch_size=batch_size, device=device or None)
    out.mkdir(parents=True, exist_ok=True)
    result = run_causal(config)
    json_path = result.to_json(out / "causal.json")
    html_path = write_causal_report(result, out / "report.html")
    for line in result.findings:
        console.print(f"• {line}", highlight=False)
    console.print(f"results: [bold]{json_path}[/]")
    console.print(f"report:  [bold]{html_path}[/]")


def register(app: typer.Typer) -> None:
    app.command("causal")(causal_cmd)
