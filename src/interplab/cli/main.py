"""Entry point of the `interplab` command.

Each sub-module registers its commands on the shared Typer app; heavy imports happen inside the
commands so that `interplab --help` stays fast.

Errors reach the user as one line: an :class:`InterplabError` prints its message (exit 2; a
:class:`ResumableError` adds the command that resumes the run), a failed write names the file
(a full disk adds the command to run again), and Ctrl-C prints what was kept and the command to
run again (exit 130). Typer turns a KeyboardInterrupt into a silent exit 130, so each command's
callback is wrapped to carry the interrupt past it (:func:`_carry_interrupts`).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import signal
import sys
from typing import Any

import typer
import typer.core
from rich.console import Console
from rich.markup import escape
from typer.models import DefaultPlaceholder

from interplab import cli
from interplab.cli import command_line
from interplab.errors import InterplabError, ResumableError

app = typer.Typer(
    name="interplab",
    help="Empirical science of language-model internals, with controls built in.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True)
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_INTERRUPTED = (128 + signal.SIGINT, 128 + signal.SIGTERM)  # exit codes after a signal
_PROCESS = [False]  # whether main() runs as the process's command (it read sys.argv)


@app.callback()
def _root() -> None:
    """interplab: harvest activations, fit probes, train SAEs, and run studies with controls."""


def _register_commands() -> None:
    from interplab.cli import cache, harvest, sae, studies, truth

    for module in (studies, truth, harvest, sae, cache):
        module.register(app)
    _reflow_help(app)


class _Command(typer.core.TyperCommand):
    """A command whose ``--help`` reads as the flag it is (typer labels it ``<bool>``)."""

    def get_help_option(self, ctx: Any) -> Any:
        return _plain_flag(super().get_help_option(ctx))


class _Group(typer.core.TyperGroup):
    def get_help_option(self, ctx: Any) -> Any:
        return _plain_flag(super().get_help_option(ctx))


def _plain_flag(option: Any) -> Any:
    if option is not None and option.metavar is None:
        option.metavar = ""
    return option


def _reflow_help(typer_app: typer.Typer) -> None:
    """Each command's help from its docstring with every paragraph on one line (the terminal
    wraps it), and its summary in the command list the whole first paragraph: rich help would
    otherwise keep the docstring's line breaks and cut a sentence in the middle. Every command
    and group shows ``--help`` as a plain flag."""
    import inspect

    if typer_app.info.cls in (None, typer.core.TyperGroup) or isinstance(
            typer_app.info.cls, DefaultPlaceholder):
        typer_app.info.cls = _Group
    for info in typer_app.registered_commands:
        if info.cls in (None, typer.core.TyperCommand):
            info.cls = _Command
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


class _Interrupted(Exception):  # noqa: N818 - a carrier, not an error
    """A KeyboardInterrupt (``__cause__``) carried out of a command past typer."""


def _carry_interrupts(command: Any) -> None:
    """Wrap the callback of ``command`` and of every sub-command so that a KeyboardInterrupt
    leaves as :class:`_Interrupted` (typer would turn it into a silent exit 130)."""
    callback = command.callback
    if callback is not None and not getattr(callback, "_carries_interrupts", False):
        @functools.wraps(callback)
        def carrying(*args, **kwargs):
            try:
                return callback(*args, **kwargs)
            except KeyboardInterrupt as exc:
                _quiet_shutdown()
                raise _Interrupted() from exc
            except typer.Exit as exc:  # a command that reported its own interrupt
                if exc.exit_code in _INTERRUPTED:
                    _quiet_shutdown()
                raise

        carrying._carries_interrupts = True  # type: ignore[attr-defined]
        command.callback = carrying
    for sub in getattr(command, "commands", {}).values():
        _carry_interrupts(sub)


def _report_interrupt(interrupt: BaseException | None) -> int:
    signum = getattr(interrupt, "signum", signal.SIGINT)
    name = signal.Signals(signum).name
    detail = f"{interrupt}; " if str(interrupt or "") else ""
    err_console.print(
        f"interrupted ({name}): {detail}files the command had finished writing are kept. Run "
        "the same command again to resume from them (harvest, sae train and truth do; others "
        f"start over): {command_line()}",
        highlight=False, soft_wrap=True, markup=False)
    return 128 + signum


def _print_error(message: str) -> None:
    # The message may hold user text (paths, names) with brackets: never read it as markup.
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _quiet_shutdown() -> None:
    """After an interrupt, when this process is the command (``main()`` read ``sys.argv``),
    ignore further Ctrl-C while it reports and shuts down, so an impatient second Ctrl-C cannot
    print a traceback from an exit handler."""
    if _PROCESS[0]:
        with contextlib.suppress(ValueError):  # ValueError: not the main thread
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors print a one-line message and exit with status 2."""
    cli.ARGS[:] = sys.argv[1:] if argv is None else argv  # for "run it again" messages
    _PROCESS[0] = argv is None
    code = _run(cli.ARGS)
    if code in _INTERRUPTED:
        _quiet_shutdown()
    return code


def _run(args: list[str]) -> int:
    try:
        command = typer.main.get_command(app)
        _carry_interrupts(command)
        rv = command.main(args=args, standalone_mode=False)
        if isinstance(rv, int):  # click returns an Exit's code in non-standalone mode
            return rv
    except _Interrupted as exc:
        return _report_interrupt(exc.__cause__)
    except KeyboardInterrupt as exc:  # outside any command (e.g. while options are parsed)
        _quiet_shutdown()
        return _report_interrupt(exc)
    except InterplabError as exc:
        message = str(exc)
        if isinstance(exc, ResumableError):
            message += f" Resume with: {command_line()}"
        _print_error(message)
        return 2
    except OSError as exc:
        message = str(exc)
        if exc.errno in _DISK_FULL:
            message = (f"could not write {exc.filename or 'a file'} ({exc.strerror}); free disk "
                       "space, then run the same command again (a harvest or SAE run resumes "
                       f"from what it kept): {command_line()}")
        _print_error(message)
        return 2
    except SystemExit as exc:  # typer/click exit paths
        return int(exc.code or 0)
    except typer.Abort:
        return 1
    except Exception as exc:  # usage errors arrive here with standalone_mode=False
        # click's ClickException, or the same class in the copy of click newer typers carry
        if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None),
                                                               int):
            exc.show()
            return exc.exit_code
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
