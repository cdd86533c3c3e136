"""Controls that every result carries: shuffled labels, random directions, bootstrap intervals,
null data sources.

The weight-permuted "reset" network lives in :func:`interplab.models.reset_copy`.
"""

from interplab.controls.baselines import (
    distribution_summary,
    random_direction_accuracies,
    random_direction_like,
    shuffled_accuracy_interval,
    shuffled_labels,
)
from interplab.controls.bootstrap import bootstrap_accuracy, bootstrap_statistic
from interplab.controls.nulls import DATA_NULLS, MODEL_NULLS, NULLS, data_null, model_null

bootstrap_mean = bootstrap_accuracy

__all__ = [
    "DATA_NULLS",
    "MODEL_NULLS",
    "NULLS",
    "data_null",
    "distribution_summary",
    "random_direction_accuracies",
    "model_null",
    "bootstrap_accuracy",
    "bootstrap_statistic",
    "random_direction_like",
    "shuffled_accuracy_interval",
    "shuffled_labels",
]
