"""The SHIFT study: does ablating the SAE latents tied to a spurious cue make a probe generalise?

Modules: ``config`` (config and result; no torch, the CLI reads it for ``--help``), ``run``
(the study; its docstring describes the data flow).
"""

from __future__ import annotations

import importlib

from interplab.studies.shift.config import (
    CONDITION_WORDS,
    CONDITIONS,
    CUE_WORDS,
    DATASETS,
    ShiftConfig,
    ShiftResult,
    format_p,
)

__all__ = ["CONDITIONS", "CONDITION_WORDS", "CUE_WORDS", "DATASETS", "ShiftConfig", "ShiftResult", "format_p", "run_shift_study"]


def __getattr__(name: str) -> object:
    # the run code loads torch and the models: imported only when it is asked for
    if name.startswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module("interplab.studies.shift.run"), name)
