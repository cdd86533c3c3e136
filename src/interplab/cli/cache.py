"""`interplab cache info|verify|clear`: the converted-model cache (:mod:`interplab.models.cache`)."""

from __future__ import annotations

import time

import typer
from rich.console import Console

console = Console()
cache_app = typer.Typer(
    help="The converted-model cache: GGUF files (the embedded model is one) converted once to "
         "safetensors, in $INTERPLAB_CACHE/models or ~/.cache/interplab/models.",
    no_args_is_help=True)


def _cache():
    from interplab.models.cache import ModelCache

    return ModelCache()


@cache_app.command("info")
def cache_info() -> None:
    """Print where the model cache is, its size limit, and each entry: the GGUF it was converted
    from, its size, dtype, the transformers version and when it was last used."""
    cache = _cache()
    entries = cache.entries()
    total = sum(e.bytes for e in entries)
    console.print(f"model cache: {cache.root}", highlight=False, soft_wrap=True)
    console.print(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, {total / 1e9:.2f} GB "
                  f"of a {cache.limit_bytes / 1e9:.2f} GB limit (INTERPLAB_MODEL_CACHE_GB); turn "
                  "it off with INTERPLAB_MODEL_CACHE=0", highlight=False, soft_wrap=True)
    if not entries:
        return
    for e in reversed(entries):  # most recently used first
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used))
        console.print(f"{e.path.name}: {e.bytes / 1e9:.2f} GB, {e.key.get('dtype')}, "
                      f"transformers {e.key.get('transformers')}, last used {used}, converted "
                      f"from {e.source}", highlight=False, soft_wrap=True)


@cache_app.command("verify")
def cache_verify() -> None:
    """Re-hash every file of every entry against the sha256 recorded when it was written; exit 1
    on any problem (a load deletes and re-converts such an entry by itself)."""
    cache = _cache()
    bad = 0
    for e in cache.entries():
        problems = cache.problems(e)
        bad += bool(problems)
        for p in problems:
            console.print(f"[red]problem[/]: {e.path.name}: {p}", highlight=False, soft_wrap=True)
    n = len(cache.entries())
    if bad:
        console.print(f"{bad} of {n} entries are corrupt; `interplab cache clear` deletes them "
                      "(the next load converts again)", highlight=False)
        raise typer.Exit(1)
    console.print(f"[green]ok[/]: {n} entr{'y' if n == 1 else 'ies'} verified in {cache.root}",
                  highlight=False, soft_wrap=True)


@cache_app.command("clear")
def cache_clear() -> None:
    """Delete every entry of the model cache (the next load of a GGUF converts it again)."""
    cache = _cache()
    n, freed = cache.clear()
    console.print(f"deleted {n} entr{'y' if n == 1 else 'ies'} ({freed / 1e9:.2f} GB) from "
                  f"{cache.root}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app, name="cache")
