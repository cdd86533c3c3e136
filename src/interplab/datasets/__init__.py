"""Statement datasets for truth probing, generated from fact tables that ship in packages.

>>> from interplab.datasets import load_dataset, paired
>>> cities = load_dataset("cities", seed=0, max_size=400)
>>> neg = load_dataset("neg_cities", seed=0, max_size=400)
>>> idx_a, idx_b = paired(cities, neg)   # the same claim, affirmed and negated

See ``docs/datasets.md`` for the families, their sources and licenses.
"""

from interplab.datasets.csv import load_csv
from interplab.datasets.registry import NEGATION_TWINS, available_datasets, load_dataset
from interplab.datasets.statements import StatementDataset, content_hash, paired

__all__ = [
    "NEGATION_TWINS",
    "StatementDataset",
    "available_datasets",
    "content_hash",
    "load_csv",
    "load_dataset",
    "paired",
]
