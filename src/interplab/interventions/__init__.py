"""Causal interventions with statistics: steer, patch, ablate, attribute.

Every call runs many examples in batched forward passes and returns an
:class:`InterventionResult` (per-example effects, bootstrap intervals, dose–response slope, a
random-direction null, side effects, and proof that each hook fired and changed activations).
"""

from interplab.interventions.ablate import ablate
from interplab.interventions.attribute import AttributionResult, attribute
from interplab.interventions.errors import (
    HookNeverFiredError,
    InterventionNoOpError,
    InterventionNotAppliedError,
)
from interplab.interventions.metrics import LogitDiff, ProbDiff, TargetLogProb, single_token
from interplab.interventions.patch import patch
from interplab.interventions.prompts import Prompts, encode
from interplab.interventions.result import InterventionResult
from interplab.interventions.steer import steer, steer_many

__all__ = [
    "AttributionResult",
    "HookNeverFiredError",
    "InterventionNoOpError",
    "InterventionNotAppliedError",
    "InterventionResult",
    "LogitDiff",
    "ProbDiff",
    "Prompts",
    "ablate",
    "attribute",
    "patch",
    "TargetLogProb",
    "encode",
    "single_token",
    "steer",
    "steer_many",
]
