"""Statement datasets for truth probing, generated from fact tables that ship in packages.

>>> from interplab.datasets import load_dataset, paired
>>> cities = load_dataset("cities", seed=0, max_size=400)
>>> neg = load_dataset("neg_cities", seed=0, max_size=400)
>>> idx_a, idx_b = paired(cities, neg)   # the same claim, affirmed and negated
>>> split = entity_split(cities, (0.6, 0.2, 0.2), seed=0)   # no city on two sides

See ``docs/datasets.md`` for the families, their sources and licenses.
"""

from interplab.datasets.csv import load_csv
from interplab.datasets.registry import NEGATION_TWINS, available_datasets, load_dataset
from interplab.datasets.splits import MIN_PER_CLASS, Split, check_split_sizes, entity_split
from interplab.datasets.statements import StatementDataset, content_hash, paired

__all__ = [
    "MIN_PER_CLASS",
    "NEGATION_TWINS",
    "Split",
    "StatementDataset",
    "available_datasets",
    "check_split_sizes",
    "content_hash",
    "entity_split",
    "load_csv",
    "load_dataset",
    "paired",
]
