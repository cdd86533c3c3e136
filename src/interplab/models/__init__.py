"""Loading language models and naming their hook points."""

from interplab.models.hooks import HOOK_KINDS, HookPoint, attach, edit_hooks, parse_hook
from interplab.models.language_model import LanguageModel
from interplab.models.loading import DEFAULT_MODEL, embedded_path, known_models, load
from interplab.models.reset import reset_copy

__all__ = [
    "DEFAULT_MODEL",
    "HOOK_KINDS",
    "HookPoint",
    "LanguageModel",
    "attach",
    "edit_hooks",
    "embedded_path",
    "known_models",
    "load",
    "parse_hook",
    "reset_copy",
]
