"""Belief-state geometry study: process → toy transformer → regression onto exact beliefs.

Modules: ``config`` (config, result and the verdict's targets; no torch, the CLI reads it for
``--help``), ``run`` (the process, training and regression stages; its docstring describes the
study).
"""

from __future__ import annotations

import importlib

from interplab.studies.belief.config import (
    CONCAT,
    PROJECTED,
    TARGET_LOSS_RATIO,
    TARGET_R2,
    TARGET_RMSE_RATIO,
    TARGET_SHUFFLED_R2,
    TARGET_SITE,
    BeliefStudyConfig,
    BeliefStudyResult,
    LayerScore,
)

__all__ = ["CONCAT", "PROJECTED", "TARGET_LOSS_RATIO", "TARGET_R2", "TARGET_RMSE_RATIO",
           "TARGET_SHUFFLED_R2", "TARGET_SITE", "BeliefStudyConfig", "BeliefStudyResult",
           "LayerScore", "run_belief_study"]


def __getattr__(name: str) -> object:
    # the run code loads torch: imported only when it is asked for
    if name.startswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module("interplab.studies.belief.run"), name)
