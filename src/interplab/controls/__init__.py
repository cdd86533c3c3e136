"""Controls that every result carries: shuffled labels, random directions, bootstrap intervals.

The weight-permuted "reset" network lives in :func:`interplab.models.reset_copy`.
"""

from interplab.controls.baselines import (
    random_direction_like,
    shuffled_accuracy_interval,
    shuffled_labels,
)
from interplab.controls.bootstrap import accuracy_with_ci, bootstrap_ci

__all__ = [
    "accuracy_with_ci",
    "bootstrap_ci",
    "random_direction_like",
    "shuffled_accuracy_interval",
    "shuffled_labels",
]
