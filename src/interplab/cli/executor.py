"""The ``--executor``, ``--ray-address`` and ``--workers`` options shared by the commands that can
run their tasks on Ray (``harvest``: one task per shard; ``sae train``: one task per SAE)."""

from __future__ import annotations

import typer


def executor_option(local: str, ray: str) -> typer.models.OptionInfo:
    """``--executor local|ray``; ``local`` and ``ray`` say what each backend does for this command."""
    return typer.Option("local", "--executor", help=f"local ({local}) | ray ({ray})")


def ray_address_option() -> typer.models.OptionInfo:
    return typer.Option("", "--ray-address", help="with --executor ray: an existing cluster "
                        "(e.g. auto); default: a local cluster")


def workers_option(unit: str) -> typer.models.OptionInfo:
    return typer.Option(0, "--workers", help=f"with --executor ray: {unit} at once (0: as many "
                        "as the cluster has CPUs)")
