"""Concept erasure with the checks that expose a failed one.

>>> from interplab.erasure import fit_eraser, verify_erasure
>>> eraser = fit_eraser("leace", X_train, y_train)          # float64 statistics
>>> check = verify_erasure(eraser, X_train, y_train, X_test, y_test)
>>> check.accuracy["linear"]["erased"], check.accuracy["linear"]["random"], check.majority

Methods (``fit.METHODS``): LEACE and its orthogonal, oracle and quadratic variants (through the
``concept-erasure`` package), mean-difference projection, mean and median matching, INLP.
:func:`fit_eraser_from_store` streams the fit over an activation store of any size.
"""

from interplab.erasure.behaviour import behaviour_summary, truth_behaviour
from interplab.erasure.erasers import Eraser, LabelledEraser, LinearEraser
from interplab.erasure.fit import (
    METHODS,
    STREAMING_METHODS,
    StreamingFit,
    fit_eraser,
    fit_eraser_from_store,
    row_labels,
)
from interplab.erasure.in_model import erasure_cost, erasure_costs, neutral_tokens
from interplab.erasure.inlp import INLPResult, directions_curve, inlp
from interplab.erasure.random_subspace import random_subspace_eraser
from interplab.erasure.verify import ErasureCheck, verify_erasure

__all__ = [
    "METHODS",
    "STREAMING_METHODS",
    "Eraser",
    "ErasureCheck",
    "INLPResult",
    "LabelledEraser",
    "LinearEraser",
    "StreamingFit",
    "behaviour_summary",
    "directions_curve",
    "erasure_cost",
    "erasure_costs",
    "fit_eraser",
    "fit_eraser_from_store",
    "inlp",
    "neutral_tokens",
    "random_subspace_eraser",
    "row_labels",
    "truth_behaviour",
    "verify_erasure",
]
