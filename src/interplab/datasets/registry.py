"""Dataset names → generators: :func:`load_dataset` and :func:`available_datasets`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from interplab.datasets import capitals, chemistry, cities, logic, numbers, translations, xor
from interplab.datasets.csv import load_csv
from interplab.datasets.statements import StatementDataset
from interplab.errors import InterplabError

_GENERATORS: dict[str, Callable[[int], StatementDataset]] = {
    "cities": cities.cities,
    "neg_cities": cities.neg_cities,
    "sp_en_trans": translations.sp_en_trans,
    "neg_sp_en_trans": translations.neg_sp_en_trans,
    "larger_than": numbers.larger_than,
    "smaller_than": numbers.smaller_than,
    "cities_conj": logic.cities_conj,
    "cities_disj": logic.cities_disj,
    "chem_symbols": chemistry.chem_symbols,
    "neg_chem_symbols": chemistry.neg_chem_symbols,
    "capitals": capitals.capitals,
    "neg_capitals": capitals.neg_capitals,
    # Need Debian's dict-freedict-spa-eng at run time (GPL data, not shipped).
    "sp_en_trans_freedict": translations.sp_en_trans_freedict,
    "neg_sp_en_trans_freedict": translations.neg_sp_en_trans_freedict,
    # XOR study: fully crossed extra features; subsampled by whole groups to keep the balance.
    **xor.GENERATORS,
}

# Twin datasets: the same claims, the second one negated (or converse), labels flipped row by row.
NEGATION_TWINS: dict[str, str] = {
    "cities": "neg_cities",
    "sp_en_trans": "neg_sp_en_trans",
    "larger_than": "smaller_than",
    "chem_symbols": "neg_chem_symbols",
    "capitals": "neg_capitals",
    "sp_en_trans_freedict": "neg_sp_en_trans_freedict",
}


def available_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset` (the ``*_freedict`` ones need Debian's dictionary)."""
    return list(_GENERATORS)


def load_dataset(name: str, seed: int = 0, max_size: int | None = None) -> StatementDataset:
    """Generate the dataset ``name`` (or read a ``.csv`` path with :func:`load_csv`).

    Args:
        name: one of :func:`available_datasets`, or a path ending in ``.csv``.
        seed: seed for wrong answers, sampling and order; the same seed gives the same dataset.
            Twins (``cities``/``neg_cities``) built with the same seed are aligned row by row.
        max_size: if given, a balanced deterministic subsample of at most this many rows (rounded
            down to an even number); twins subsampled with the same seed stay aligned. The XOR
            study's datasets keep whole groups instead, so all their features stay balanced.

    Raises:
        InterplabError: unknown name (the message lists the known ones), bad ``max_size``.
    """
    if max_size is not None and max_size < 2:
        raise InterplabError(f"max_size must be at least 2 (one row per class), got {max_size}")
    if name.lower().endswith(".csv"):
        dataset = load_csv(Path(name))
    elif name in _GENERATORS:
        dataset = _GENERATORS[name](seed)
    else:
        raise InterplabError(
            f"unknown dataset {name!r}; choose one of {', '.join(available_datasets())}, "
            "or give the path of a .csv file with 'statement' and 'label' columns"
        )
    if max_size is not None and max_size < len(dataset):
        if name in xor.GENERATORS:
            dataset = xor.subsample_groups(dataset, max_size, seed=seed)
        else:
            dataset = dataset.balanced_subsample(max_size, seed=seed)
    return dataset
