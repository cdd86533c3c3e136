"""A harvest into an activation store, as a typed config and one function.

Modules: ``config`` (config and result; no torch, the CLI reads it for ``--help``), ``run``
(the study; its docstring describes the data flow).
"""

from __future__ import annotations

import importlib

from interplab.studies.harvest.config import FOR_SAE_HELP, HarvestConfig

__all__ = ["FOR_SAE_HELP", "HarvestConfig", "run_harvest"]


def __getattr__(name: str) -> object:
    # the run code loads torch and the models: imported only when it is asked for
    if name.startswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module("interplab.studies.harvest.run"), name)
