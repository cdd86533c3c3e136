"""The truth study: do activations linearly represent whether a statement is true?

Data flow: statement datasets → checks that every split can support the study (before any model
is run) → last-token residual stream at every layer (+ each statement's log-probability, same
pass) for the model and for its weight-permuted reset copy, cached on disk → per training set,
layer and probe: a fit on the train split, the layer chosen on the validation split, accuracy on
the test split and on every other dataset with bootstrap CIs, beside the shuffled-label,
random-direction and reset-network controls and a log-probability baseline → graded verdicts
(binomial tests, Benjamini–Hochberg) and a summary → a JSON-serialisable :class:`TruthResult`
(the report draws it).

Splits are by entity (the city, the word, the number pair) so no subject is on both sides. A
dataset outside a training set is scored on all its rows, except the negation twins of that
training set's training rows (they restate a training claim).

Modules, by job: ``config`` (config and result; no torch, the CLI reads it), ``run`` (the
stages), ``fits`` (probes and intervals), ``analysis`` (likelihood and PCA views), ``wording``
(method, verdicts, control comments, summary), ``erasure_nulls`` (the optional section).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from interplab.studies.truth.config import (
    CONTROLS,
    DEFAULT_DATASETS,
    DEFAULT_PCA_PAIRS,
    DEFAULT_TRAIN_SETS,
    PROBE_LABELS,
    TOKENS,
    TruthConfig,
    TruthResult,
    is_pair_probe,
)

if TYPE_CHECKING:
    from interplab.studies.truth.run import run_truth

__all__ = ["CONTROLS", "DEFAULT_DATASETS", "DEFAULT_PCA_PAIRS", "DEFAULT_TRAIN_SETS",
           "PROBE_LABELS", "TOKENS", "TruthConfig", "TruthResult", "is_pair_probe", "run_truth"]


def __getattr__(name: str) -> object:
    if name == "run_truth":  # loads torch and the models: only when a run is asked for
        from interplab.studies.truth.run import run_truth

        return run_truth
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
