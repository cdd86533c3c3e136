"""Controls that every result carries: shuffled labels, random directions, bootstrap intervals.

The weight-permuted "reset" network lives in :func:`interplab.models.reset_copy`.
"""

from interplab.controls.baselines import (
    random_direction_like,
    shuffled_accuracy_interval,
    shuffled_labels,
)
from interplab.controls.bootstrap import bootstrap_accuracy

__all__ = [
    "bootstrap_accuracy",
    "random_direction_like",
    "shuffled_accuracy_interval",
    "shuffled_labels",
]
