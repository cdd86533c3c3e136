"""Read a user's statements from a CSV file, with validation that names each problem."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np

from interplab.datasets.statements import StatementDataset
from interplab.errors import InterplabError

_TRUE = {"1", "true", "t", "yes", "1.0"}
_FALSE = {"0", "false", "f", "no", "0.0"}


def _parse_label(raw: str, line: int, path: Path, label_col: str) -> int:
    value = raw.strip().lower()
    if value in _TRUE:
        return 1
    if value in _FALSE:
        return 0
    raise InterplabError(
        f"{path}: line {line}: label {raw!r} in column {label_col!r} is not binary; "
        "use 1/0 or true/false"
    )


def load_csv(
    path: str | Path,
    statement_col: str = "statement",
    label_col: str = "label",
    pair_col: str = "pair_id",
) -> StatementDataset:
    """Read statements and binary labels from a UTF-8 CSV file with a header row.

    Labels may be ``1``/``0`` or ``true``/``false`` (any case; also ``yes``/``no``). A
    ``pair_col`` column, when present, becomes the dataset's pair ids; other columns are kept as
    metadata. The dataset is named after the file's stem; its provenance records the path and
    the file's sha256.

    Raises:
        InterplabError: the file is missing, not UTF-8, or empty; a named column is missing; a
            statement is empty; a label is not binary; only one class is present; or rows repeat.
    """
    path = Path(path)
    if not path.is_file():
        raise InterplabError(f"CSV file not found: {path}; check the path")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InterplabError(
            f"{path} is not UTF-8 text (byte {err.start} cannot be decoded); save it as UTF-8"
        ) from None
    if not text.strip():
        raise InterplabError(f"{path} is empty; it needs a header row and at least two rows")
    reader = csv.DictReader(text.splitlines())
    header = reader.fieldnames or []
    missing = [c for c in (statement_col, label_col) if c not in header]
    if missing:
        raise InterplabError(
            f"{path}: missing column(s) {', '.join(repr(c) for c in missing)}; the header has "
            f"{', '.join(repr(c) for c in header)}; rename the columns or pass "
            "statement_col=/label_col="
        )
    statements: list[str] = []
    labels: list[int] = []
    rows = list(reader)
    if not rows:
        raise InterplabError(f"{path} has a header but no rows; add statements")
    first_line: dict[str, tuple[int, int]] = {}
    for k, row in enumerate(rows):
        line = k + 2  # 1-based, after the header
        statement = (row.get(statement_col) or "").strip()
        if not statement:
            raise InterplabError(f"{path}: line {line}: empty statement; remove the row")
        label = _parse_label(row.get(label_col) or "", line, path, label_col)
        if statement in first_line:
            other_line, other_label = first_line[statement]
            kind = "duplicate row" if other_label == label else "the same statement with"
            detail = "" if other_label == label else " both labels"
            raise InterplabError(
                f"{path}: line {line}: {kind}{detail} (first at line {other_line}): "
                f"{statement!r}; remove duplicates so each statement appears once"
            )
        first_line[statement] = (line, label)
        statements.append(statement)
        labels.append(label)
    if len(set(labels)) < 2:
        only = "true (1)" if labels[0] == 1 else "false (0)"
        raise InterplabError(
            f"{path}: every label is {only}; a truth dataset needs both true and false statements"
        )
    pair_ids = None
    if pair_col in header:
        pair_ids = np.array([(row.get(pair_col) or "").strip() for row in rows])
    extra = [c for c in header if c not in (statement_col, label_col, pair_col)]
    return StatementDataset(
        name=path.stem,
        statements=statements,
        labels=np.array(labels, dtype=np.int64),
        provenance={"file": str(path), "file_sha256": hashlib.sha256(raw).hexdigest()},
        seed=None,
        pair_ids=pair_ids,
        metadata={c: [row.get(c) or "" for row in rows] for c in extra},
    )
