"""Controls that every result carries: shuffled labels, random directions, bootstrap intervals,
null p-values and their correction for multiple comparisons, null data sources.

The weight-permuted "reset" network lives in :func:`interplab.models.reset_copy`.
"""

from interplab.controls.baselines import (
    distribution_summary,
    random_direction_accuracies,
    random_direction_like,
    shuffled_accuracy_interval,
    shuffled_labels,
)
from interplab.controls.bootstrap import (
    bootstrap_mean,
    bootstrap_p_value,
    bootstrap_statistic,
    bootstrap_test,
)
from interplab.controls.multiple import FDR_LEVEL, FamilyTest, correct_family
from interplab.controls.nulls import DATA_NULLS, MODEL_NULLS, NULLS, data_null
from interplab.controls.pvalues import NullTest, format_p, null_p_value

__all__ = [
    "DATA_NULLS",
    "FDR_LEVEL",
    "MODEL_NULLS",
    "NULLS",
    "FamilyTest",
    "NullTest",
    "bootstrap_mean",
    "bootstrap_p_value",
    "bootstrap_statistic",
    "bootstrap_test",
    "correct_family",
    "data_null",
    "distribution_summary",
    "format_p",
    "null_p_value",
    "random_direction_accuracies",
    "random_direction_like",
    "shuffled_accuracy_interval",
    "shuffled_labels",
]
