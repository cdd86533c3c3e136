"""Loading language models and naming their hook points."""

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
from interplab.models.language_model import LanguageModel
from interplab.models.loading import DEFAULT_MODEL, embedded_path, known_models, load
from interplab.models.reset import random_init_copy, reset_copy

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
