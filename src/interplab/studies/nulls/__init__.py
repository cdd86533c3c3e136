"""Null-battery study: run the probe and SAE code paths on real activations and on every null
source (:mod:`interplab.controls.nulls`), and report method − null with an interval.

Probes: statements of a dataset (entity split), last token at ``layer``; for each source and
probe, held-out accuracy with a bootstrap interval and the paired difference real − null; for the
real probe, the accuracies of ``n_random_directions`` norm-matched random directions as a
distribution. SAEs: packed neutral text at the same hook (position 0 and massive-norm tokens left
out, as the SAE study does); for each source a
TopK SAE is trained on the rows of some sequences and evaluated on the rows of the others:
fraction of variance explained on train and held-out rows, L0 and the features used on held-out
rows (an SAE that memorises noise can use many sparse features and still fail held out),
and the model's SAE minus each null's on each of these, with bootstrap intervals over rows.

Every p-value the battery emits (model − null per probe and source, the probe against its random
directions, model − null per SAE metric and source) is one family, corrected with
Benjamini–Hochberg (:func:`nulls_statistics`); the verdicts read the corrected q-values.
"""

from interplab.studies.nulls.config import N_RANDOM_DIRECTIONS, NullsConfig, NullsResult

__all__ = ["N_RANDOM_DIRECTIONS", "NullsConfig", "NullsResult", "run_nulls"]


def __getattr__(name: str) -> object:
    if name == "run_nulls":  # loads torch and the models: only when a run is asked for
        from interplab.studies.nulls.run import run_nulls

        return run_nulls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
