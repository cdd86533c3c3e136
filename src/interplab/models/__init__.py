"""Loading language models and naming their hook points.

Hook points (``hooks.py``, torch only) load eagerly; the model classes, loaders and controls load
on first use, so code that only names hook points (the toy GPT of ``interplab.compmech``) never
imports transformers.
"""

import importlib
from typing import TYPE_CHECKING

from interplab.models.hooks import (
    HOOK_KINDS,
    KINDS,
    HookLike,
    HookNameError,
    HookPoint,
    attach,
    edit_hooks,
    parse_hook,
    resolve_hooks,
)

if TYPE_CHECKING:
    from interplab.models.language_model import LanguageModel
    from interplab.models.loading import DEFAULT_MODEL, embedded_path, known_models, load
    from interplab.models.reset import random_init_copy, reset_copy

_LAZY = {
    "LanguageModel": "language_model",
    "DEFAULT_MODEL": "loading",
    "embedded_path": "loading",
    "known_models": "loading",
    "load": "loading",
    "random_init_copy": "reset",
    "reset_copy": "reset",
}


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

__all__ = [
    "DEFAULT_MODEL",
    "HOOK_KINDS",
    "KINDS",
    "HookLike",
    "HookNameError",
    "HookPoint",
    "LanguageModel",
    "attach",
    "edit_hooks",
    "embedded_path",
    "known_models",
    "load",
    "parse_hook",
    "random_init_copy",
    "reset_copy",
    "resolve_hooks",
]
