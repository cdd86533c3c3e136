"""The causal truth study: do the truth probes' directions *change* what the model says, on a
task the model solves?

Data flow: cities + neg_cities, split by entity → last-token residual stream at every layer
(cached) → probes (mass-mean, logistic, LDA) fitted on the training split, each steering window
chosen on validation (each probe's own by default) → prompt formats scored unsteered on
validation statements, the one with the largest standardised true − false gap used → the
model's behaviour on held-out statements (the gap with its interval: the gate for any claim
about truth) → each direction added at the statement's final tokens over a dose series, beside
norm-matched random directions, the same push on prompts with no statement, and statements of
other datasets → clean → corrupted patching, localised only when its gap is not zero, its
nodes chosen on one half of the pairs and tested on the other → attribution patching and
integrated gradients against exact patching → every p-value corrected as one family → a
JSON-serialisable :class:`CausalResult` (the report draws it).

Modules, by job: ``config`` (config and result; no torch, the CLI reads it), ``tasks`` (prompt
formats, metrics, the behavioural baseline), ``run`` (the stages), ``patching`` (patching and
attribution), ``findings`` (statistics, gates and words).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from interplab.studies.causal.config import (
    CAUSAL_PROBES,
    DATASETS,
    FORMAT_NAMES,
    PROBE_LABELS,
    CausalConfig,
    CausalResult,
)

if TYPE_CHECKING:
    from interplab.studies.causal.run import run_causal

__all__ = ["CAUSAL_PROBES", "DATASETS", "FORMAT_NAMES", "PROBE_LABELS", "CausalConfig",
           "CausalResult", "run_causal"]


def __getattr__(name: str) -> object:
    if name == "run_causal":  # loads the run stages only when a run is asked for
        from interplab.studies.causal.run import run_causal

        return run_causal
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
