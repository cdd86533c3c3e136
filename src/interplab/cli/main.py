"""Entry point of the `interplab` command.

Each sub-module registers its commands on the shared Typer app; heavy imports happen inside the
commands so that `interplab --help` stays fast.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from interplab.errors import InterplabError

app = typer.Typer(
    name="interplab",
    help="Empirical science of language-model internals, with controls built in.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True)


@app.callback()
def _root() -> None:
    """interplab: harvest activations, fit probes, train SAEs, and run studies with controls."""


def _register_commands() -> None:
    from interplab.cli import erasure, harvest, sae, studies, truth

    for module in (studies, truth, harvest, sae, erasure):
        module.register(app)
    _reflow_help(app)


def _reflow_help(typer_app: typer.Typer) -> None:
    """Each command's help from its docstring with every paragraph on one line (the terminal
    wraps it), and its summary in the command list the whole first paragraph: rich help would
    otherwise keep the docstring's line breaks and cut a sentence in the middle."""
    import inspect

    for info in typer_app.registered_commands:
        doc = info.help or (info.callback.__doc__ if info.callback else None)
        if not doc:
            continue
        paragraphs = [" ".join(p.split()) for p in inspect.cleandoc(doc).split("\n\n")]
        info.help = "\n\n".join(p for p in paragraphs if p)
        if info.short_help is None:
            info.short_help = paragraphs[0]
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _reflow_help(group.typer_instance)


_register_commands()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors print a one-line message and exit with status 2."""
    try:
        rv = app(args=argv, standalone_mode=False)
        if isinstance(rv, int):  # click returns an Exit's code in non-standalone mode
            return rv
    except InterplabError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 2
    except OSError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted; re-run the same command to resume where supported")
        return 130
    except SystemExit as exc:  # typer/click exit paths
        return int(exc.code or 0)
    except Exception as exc:  # click usage errors arrive here with standalone_mode=False
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            return exc.exit_code
        if isinstance(exc, click.exceptions.Abort):
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
