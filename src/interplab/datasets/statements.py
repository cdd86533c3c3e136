"""The statement dataset: true and false sentences with their labels and where they came from.

A :class:`StatementDataset` is an immutable list of statements with binary labels (1 = true,
0 = false). It records its provenance (the packages its facts came from, with versions) and a
content hash, so a result can name exactly which sentences it was computed on.

Statements that are negated (or otherwise label-flipped) twins of each other share a *pair id*:
``cities`` and ``neg_cities`` built with the same seed are aligned row by row, and
:func:`paired` finds the matching rows of any two datasets whose pair ids overlap (as CCS needs).

Rows about the same entity (the same city, Spanish word, element, number pair) share a *group*;
:func:`interplab.datasets.entity_split` splits by group so no entity is on two sides.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from interplab.errors import InterplabError


def content_hash(statements: Sequence[str], labels: Sequence[int] | np.ndarray) -> str:
    """sha256 (hex) of the statements and labels, in order; independent of everything else."""
    payload = json.dumps(
        {"statements": list(statements), "labels": [int(x) for x in labels]},
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def package_versions(*packages: str) -> dict[str, str]:
    """``{package: installed version}`` for provenance records (``"unknown"`` if not installed)."""
    out = {}
    for name in packages:
        if name == "interplab":
            from interplab import __version__

            out[name] = __version__
            continue
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "unknown"
    return out


def _frozen_array(values: Any, dtype: Any) -> np.ndarray:
    arr = np.array(values, dtype=dtype)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class StatementDataset:
    """Statements with binary truth labels.

    Attributes:
        name: dataset name (``"cities"``, or a CSV file's stem).
        statements: the sentences, ``n`` of them.
        labels: ``[n]`` int64 array, 1 for a true statement and 0 for a false one.
        provenance: where the facts came from: ``{package or "file": version or path}``.
        seed: the seed the dataset was generated (or subsampled) with; ``None`` for user files.
        pair_ids: optional ``[n]`` str array; rows of two datasets with equal pair ids make the
            same claim in opposite forms (a statement and its negation), so their labels differ.
        groups: optional ``[n]`` str array: the entity each row is about (the city, the Spanish
            word, the element, the number pair, ...; in generated datasets the subjects that
            exchange wrong answers, e.g. ``"Lima & Oslo"``). Rows of one group must stay on one
            side of a train/test split; negated twins carry their affirmative twin's group.
        group_by: what a group is, for split descriptions (``"city pair"``, a CSV column's
            name); ``"group"`` if groups are given without it.
        metadata: optional per-row columns (e.g. ``{"city": [...], "country": [...]}``), each of
            length ``n``; kept by :meth:`subset` and written by :meth:`to_csv`.
        content_hash: sha256 of the statements and labels (computed, not passed). Pair ids,
            groups and metadata are not part of it: it names the sentences and labels a
            result was computed on, and the split rule is recorded beside it.
    """

    name: str
    statements: list[str]
    labels: np.ndarray
    provenance: dict[str, str]
    seed: int | None = None
    pair_ids: np.ndarray | None = None
    metadata: dict[str, list[Any]] = field(default_factory=dict)
    groups: np.ndarray | None = None
    group_by: str | None = None
    content_hash: str = field(init=False)

    def __post_init__(self) -> None:
        statements = [str(s) for s in self.statements]
        labels = np.asarray(self.labels)
        n = len(statements)
        if labels.shape != (n,):
            raise InterplabError(
                f"dataset {self.name!r}: {n} statements but labels of shape {labels.shape}; "
                "pass one label per statement"
            )
        if n and not np.isin(labels, (0, 1)).all():
            raise InterplabError(
                f"dataset {self.name!r}: labels must be 0 (false) or 1 (true), "
                f"got values {sorted(set(labels.tolist()))[:10]}"
            )
        object.__setattr__(self, "statements", statements)
        object.__setattr__(self, "labels", _frozen_array(labels, np.int64))
        if self.pair_ids is not None:
            if len(self.pair_ids) != n:
                raise InterplabError(
                    f"dataset {self.name!r}: {len(self.pair_ids)} pair ids for {n} statements"
                )
            object.__setattr__(self, "pair_ids", _frozen_array(self.pair_ids, np.str_))
        if self.groups is not None:
            if len(self.groups) != n:
                raise InterplabError(
                    f"dataset {self.name!r}: {len(self.groups)} groups for {n} statements"
                )
            object.__setattr__(self, "groups", _frozen_array(self.groups, np.str_))
            if self.group_by is None:
                object.__setattr__(self, "group_by", "group")
        metadata = {k: list(v) for k, v in self.metadata.items()}
        for key, column in metadata.items():
            if len(column) != n:
                raise InterplabError(
                    f"dataset {self.name!r}: metadata column {key!r} has {len(column)} rows, "
                    f"expected {n}"
                )
        object.__setattr__(self, "metadata", metadata)
        object.__setattr__(self, "provenance", dict(self.provenance))
        object.__setattr__(self, "content_hash", content_hash(statements, self.labels))

    def __len__(self) -> int:
        return len(self.statements)

    def __repr__(self) -> str:
        return (
            f"StatementDataset(name={self.name!r}, n={len(self)}, "
            f"n_true={int(self.labels.sum())}, hash={self.content_hash[:12]})"
        )

    @property
    def identity(self) -> dict[str, Any]:
        """JSON-serialisable identity for results: name, size, hash, seed, provenance."""
        return {
            "name": self.name,
            "n": len(self),
            "n_true": int(self.labels.sum()),
            "content_hash": self.content_hash,
            "seed": self.seed,
            "provenance": dict(self.provenance),
        }

    def subset(self, idx: Sequence[int] | np.ndarray, name: str | None = None) -> StatementDataset:
        """The rows ``idx`` (integer indices or a boolean mask of length ``n``), in that order."""
        idx = np.asarray(idx)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise InterplabError(f"boolean mask of shape {idx.shape} for {len(self)} rows")
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise InterplabError(f"subset indices out of range for {len(self)} rows")
        return StatementDataset(
            name=self.name if name is None else name,
            statements=[self.statements[i] for i in idx],
            labels=self.labels[idx],
            provenance=self.provenance,
            seed=self.seed,
            pair_ids=None if self.pair_ids is None else self.pair_ids[idx],
            metadata={k: [v[i] for i in idx] for k, v in self.metadata.items()},
            groups=None if self.groups is None else self.groups[idx],
            group_by=self.group_by,
        )

    def _class_order(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        # One seeded permutation of row positions, split by class. Two aligned datasets whose
        # labels are flipped (cities / neg_cities) see the same permutation, so equal quotas per
        # class select the same rows in both, keeping pairs together.
        perm = np.random.default_rng(seed).permutation(len(self))
        return perm[self.labels[perm] == 1], perm[self.labels[perm] == 0]

    def balanced_subsample(self, max_size: int, seed: int = 0) -> StatementDataset:
        """At most ``max_size`` rows, the same number of each class, deterministic for ``seed``.

        ``max_size`` is rounded down to an even number; rows keep their original order, so
        aligned twin datasets subsampled with the same seed stay aligned.
        """
        if max_size < 2:
            raise InterplabError(f"max_size must be at least 2 (one per class), got {max_size}")
        pos, neg = self._class_order(seed)
        k = min(max_size // 2, len(pos), len(neg))
        if k == 0:
            raise InterplabError(f"dataset {self.name!r} has a single class; cannot balance it")
        return self.subset(np.sort(np.concatenate([pos[:k], neg[:k]])))

    def train_test_split(
        self, test_fraction: float = 0.2, seed: int = 0
    ) -> tuple[StatementDataset, StatementDataset]:
        """Stratified split into (train, test); each class contributes ``test_fraction`` to test.

        Deterministic for ``seed``; rows keep their original order within each part. Aligned
        twin datasets with balanced classes (``cities``/``neg_cities``) split identically.
        This splits by row, so one entity can be on both sides; for held-out scores use
        :func:`interplab.datasets.entity_split`, which splits by :attr:`groups`.
        """
        if not 0.0 < test_fraction < 1.0:
            raise InterplabError(f"test_fraction must be in (0, 1), got {test_fraction}")
        test = []
        for members in self._class_order(seed):
            n_test = int(round(test_fraction * len(members)))
            if len(members) >= 2:
                n_test = min(max(n_test, 1), len(members) - 1)
            test.append(members[:n_test])
        test_idx = np.sort(np.concatenate(test))
        mask = np.zeros(len(self), dtype=bool)
        mask[test_idx] = True
        return self.subset(np.flatnonzero(~mask)), self.subset(test_idx)

    def to_csv(self, path: str | Path) -> Path:
        """Write ``statement,label[,pair_id][,group][,metadata...]`` as UTF-8 CSV; returns the path.

        :func:`interplab.datasets.load_csv` reads it back with the same content hash.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = ["statement", "label"]
        columns: list[Sequence[Any]] = [self.statements, self.labels.tolist()]
        if self.pair_ids is not None:
            header.append("pair_id")
            columns.append(self.pair_ids.tolist())
        if self.groups is not None:
            header.append("group")
            columns.append(self.groups.tolist())
        for key, column in self.metadata.items():
            if key not in header:
                header.append(key)
                columns.append(column)
        with path.open("w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(zip(*columns, strict=True))
        return path


def paired(ds_a: StatementDataset, ds_b: StatementDataset) -> tuple[np.ndarray, np.ndarray]:
    """Aligned row indices ``(idx_a, idx_b)`` of the statements the two datasets share a claim on.

    ``ds_a.statements[idx_a[k]]`` and ``ds_b.statements[idx_b[k]]`` have the same pair id (e.g. a
    statement and its negation), ordered by ``idx_a``. Raises :class:`InterplabError` if either
    dataset has no pair ids or they share none.
    """
    for ds in (ds_a, ds_b):
        if ds.pair_ids is None:
            raise InterplabError(
                f"dataset {ds.name!r} has no pair ids; pair datasets that have negated twins, "
                "e.g. cities with neg_cities, or give a CSV a 'pair_id' column"
            )
    assert ds_a.pair_ids is not None and ds_b.pair_ids is not None
    for ds in (ds_a, ds_b):
        if len(set(ds.pair_ids.tolist())) != len(ds):
            raise InterplabError(f"dataset {ds.name!r} repeats pair ids; each must be unique")
    where_b = {pid: i for i, pid in enumerate(ds_b.pair_ids.tolist())}
    idx_a = [i for i, pid in enumerate(ds_a.pair_ids.tolist()) if pid in where_b]
    if not idx_a:
        raise InterplabError(
            f"datasets {ds_a.name!r} and {ds_b.name!r} share no pair ids; build both with the "
            "same seed from the same family (e.g. cities and neg_cities)"
        )
    idx_b = [where_b[ds_a.pair_ids[i]] for i in idx_a]
    return np.array(idx_a, dtype=np.int64), np.array(idx_b, dtype=np.int64)
