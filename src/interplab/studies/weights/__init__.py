"""Weight-SVD study: every block matrix's spectrum against the Marchenko–Pastur null, its top
directions as tokens, and the same spectra for the control networks.

Modules: ``config`` (config and result; no torch, the CLI reads it for ``--help``), ``run``
(the analysis and the summary).
"""

from __future__ import annotations

import importlib

from interplab.studies.weights.config import RESET_NOTE, WeightsConfig, WeightsResult

__all__ = ["RESET_NOTE", "WeightsConfig", "WeightsResult", "run_weights", "summary"]


def __getattr__(name: str) -> object:
    # the run code loads torch and the models: imported only when it is asked for
    if name.startswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module("interplab.studies.weights.run"), name)
