"""The rerouting study: is representation rerouting (RR) better than a harmfulness probe only
because it trains more parameters? RR against the same LoRA adapters with a linear head
(LoRA + probe) and against a probe on frozen activations (HP), with attacks and retain costs.

``config`` (torch-free) holds :class:`RerouteConfig` and :class:`RerouteResult`; ``run`` runs it
(:func:`run_reroute`); ``stats`` turns the per-seed numbers into estimates, comparisons and words.
See ``docs/reroute.md``.
"""

from __future__ import annotations

import importlib

from interplab.studies.reroute.config import RerouteConfig, RerouteResult

__all__ = ["RerouteConfig", "RerouteResult", "run_reroute"]


def __getattr__(name: str) -> object:
    # the run code loads torch and the models: imported only when it is asked for
    if name.startswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module("interplab.studies.reroute.run"), name)
