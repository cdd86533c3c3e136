"""SAE training study: one SAE or a sweep trained in one pass over an activation store, or over a
model's activations streamed from a packaged corpus.

Modules: ``config`` (config and result; no torch, `interplab sae train` reads it for its
options), ``run`` (data sources, the sweep, executors, the null control; its docstring
describes the study).
"""

from __future__ import annotations

import importlib

from interplab.studies.sae.config import (
    NULL_HELDOUT_FRACTION,
    NULL_MIN_ROWS,
    NULL_SAMPLE_ROWS,
    TOPK_FAMILY,
    SaeRun,
    SaeStudyConfig,
    SaeStudyResult,
)

__all__ = ["NULL_HELDOUT_FRACTION", "NULL_MIN_ROWS", "NULL_SAMPLE_ROWS", "TOPK_FAMILY", "SaeRun",
           "SaeStudyConfig", "SaeStudyResult", "run_sae_study", "train_sweep"]


def __getattr__(name: str) -> object:
    # the run code loads torch and the models: imported only when it is asked for
    if name.startswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module("interplab.studies.sae.run"), name)
