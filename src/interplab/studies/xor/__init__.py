"""The XOR study: can a linear probe read XORs of arbitrary features, and what does it cost?

Modules: ``config`` (config, result and the words the report uses; no torch, the CLI reads it
for ``--help``), ``run`` (the harvest, the curves with their controls, the readings and the
generalization experiment).
"""

from __future__ import annotations

import importlib

from interplab.studies.xor.config import (
    CONTROL_WORDS,
    CONTROLS,
    DEFAULT_DATASETS,
    NETWORK_WORDS,
    NETWORKS,
    TOKEN_MODES,
    TOKEN_WORDS,
    XorConfig,
    XorResult,
)

__all__ = ["CONTROL_WORDS", "CONTROLS", "DEFAULT_DATASETS", "NETWORK_WORDS", "NETWORKS",
           "TOKEN_MODES", "TOKEN_WORDS", "XorConfig", "XorResult", "run_xor"]


def __getattr__(name: str) -> object:
    # the run code loads torch and the models: imported only when it is asked for
    if name.startswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module("interplab.studies.xor.run"), name)
