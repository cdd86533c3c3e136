"""The circuit study: a sparse feature circuit for city → country recall, and how far attribution
patching and integrated gradients agree with exact patching across SAE architectures.

Modules: ``config`` (config and result; no torch, the CLI reads it for ``--help``), ``run``
(the study; its docstring describes the data flow).
"""

from __future__ import annotations

import importlib

from interplab.studies.circuit.config import METHODS, CircuitConfig, CircuitResult

__all__ = ["METHODS", "CircuitConfig", "CircuitResult", "run_circuit"]


def __getattr__(name: str) -> object:
    # the run code loads torch and the models: imported only when it is asked for
    if name.startswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module("interplab.studies.circuit.run"), name)
