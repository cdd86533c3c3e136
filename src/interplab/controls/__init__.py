"""Controls that every result carries: shuffled labels, random directions, bootstrap intervals.

The weight-permuted "reset" network lives in :func:`interplab.models.reset_copy`.
"""

from interplab.controls.baselines import (
    random_direction_like,
    shuffled_accuracy_interval,
    shuffled_labels,
)
from interplab.controls.bootstrap import bootstrap_accuracy, bootstrap_statistic

__all__ = [
    "bootstrap_accuracy",
    "bootstrap_statistic",
    "random_direction_like",
    "shuffled_accuracy_interval",
    "shuffled_labels",
]
