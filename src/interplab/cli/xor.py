"""`interplab xor`: can a linear probe read XORs of arbitrary features (a thin shell over
:mod:`interplab.studies.xor`; every default is read from :class:`XorConfig`)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from interplab.studies.xor import XorConfig

console = Console()
_D = XorConfig()


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _numbers(value: str, option: str, kind: type, example: str) -> list:
    from interplab.errors import InterplabError

    try:
        return [kind(x) for x in _csv(value)]
    except ValueError:
        raise InterplabError(f"{option} {value!r} is not a comma-separated list of "
                             f"{kind.__name__} values; e.g. {option} {example}") from None


def xor_cmd(
    model: str = typer.Option(_D.model, "--model", help="registry name, HF folder or .gguf"),
    datasets: str = typer.Option(",".join(_D.datasets), "--datasets",
                                 help="speaker_cities, distractor_cities, speaker_filler, "
                                      "distractor_filler (comma-separated)"),
    layers: str = typer.Option("", "--layers",
                               help="comma-separated blocks (default: every --layer-step-th "
                                    "block from 0, and the last)"),
    layer_step: int = typer.Option(_D.layer_step, "--layer-step"),
    tokens: str = typer.Option(",".join(_D.tokens), "--tokens",
                               help="last and/or mean (mean over the statement's own tokens)"),
    controls: str = typer.Option(",".join(_D.controls), "--controls",
                                 help="any of shuffled,reset,random_init (or 'none')"),
    max_per_dataset: int = typer.Option(_D.max_per_dataset or 0, "--max-per-dataset",
                                        help="rows per dataset, whole entity groups (0: all)"),
    split: str = typer.Option(",".join(f"{f:g}" for f in _D.split), "--split",
                              help="train,validation,test fractions (split by entity)"),
    generalization: bool = typer.Option(_D.generalization, "--generalization/--no-generalization",
                                        help="train with a feature held constant, test flipped"),
    seed: int = typer.Option(_D.seed, "--seed"),
    n_boot: int = typer.Option(_D.n_boot, "--n-boot", help="bootstrap draws per interval"),
    n_shuffles: int = typer.Option(_D.n_shuffles, "--n-shuffles"),
    batch_size: int = typer.Option(_D.batch_size, "--batch-size"),
    device: str = typer.Option(_D.device or "", "--device"),
    out: Path = typer.Option(Path("runs/xor"), "--out", help="folder for xor.json + report.html"),
) -> None:
    """XOR study: probes for features, their XORs, controls and the generalization cost."""
    from interplab.report.xor import write_xor_report
    from interplab.studies.xor import run_xor

    config = XorConfig(
        model=model, datasets=_csv(datasets),
        layers=_numbers(layers, "--layers", int, "0,6,12") or None, layer_step=layer_step,
        tokens=_csv(tokens), controls=[] if controls.strip() == "none" else _csv(controls),
        max_per_dataset=max_per_dataset or None,
        split=_numbers(split, "--split", float, "0.6,0.2,0.2"), generalization=generalization,
        seed=seed, n_boot=n_boot, n_shuffles=n_shuffles, batch_size=batch_size,
        device=device or None)
    config.validate()
    out.mkdir(parents=True, exist_ok=True)
    # Harvested activations stay in the output folder, so a re-run reuses them.
    result = run_xor(config, cache_dir=out / "activations")
    json_path = result.to_json(out / "xor.json")
    html_path = write_xor_report(result, out / "report.html")
    for sentence in result.summary:
        console.print(f"• {sentence}", highlight=False)
    console.print(f"results: [bold]{json_path}[/]")
    console.print(f"report:  [bold]{html_path}[/]")


def register(app: typer.Typer) -> None:
    app.command("xor")(xor_cmd)
