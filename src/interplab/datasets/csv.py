"""Read a user's statements from a CSV file, with validation that names each problem."""

from __future__ import annotations

import csv
import hashlib
import warnings
from pathlib import Path

import numpy as np

from interplab.datasets.statements import StatementDataset
from interplab.errors import InterplabError

_TRUE = {"1", "true", "t", "yes", "1.0"}
_FALSE = {"0", "false", "f", "no", "0.0"}
PAIR_COL = "pair_id"
GROUP_COL = "group"


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
    pair_col: str | None = PAIR_COL,
    group_col: str | None = GROUP_COL,
    on_conflict: str = "error",
) -> StatementDataset:
    """Read statements and binary labels from a UTF-8 CSV file with a header row.

    Labels may be ``1``/``0`` or ``true``/``false`` (any case; also ``yes``/``no``). The
    ``pair_col`` column (default ``pair_id``) becomes the dataset's pair ids and the
    ``group_col`` column (default ``group``) its groups (the entity each row is about, used by
    :func:`interplab.datasets.entity_split`); with the default names a missing column just means
    none, a name passed explicitly must exist, and ``None`` ignores the column. Other columns are
    kept as metadata. The dataset is named after the file's stem; its provenance records the
    path and the file's sha256.

    The file is parsed as CSV as a whole: a quoted statement may span lines (or contain U+2028),
    and messages give the file line where the row starts. Rows repeating an earlier row's
    statement and label are dropped with a warning that counts them (the first is kept). A
    statement given with both labels is an error naming both lines; ``on_conflict="drop"``
    drops every row of such statements instead, with a warning.

    Raises:
        InterplabError: the file is missing, not UTF-8, not valid CSV, or empty; a named column
            is missing; a row has more fields than the header; a statement or group is empty; a
            label is not binary; only one class is present; a statement has both labels.
    """
    if on_conflict not in ("error", "drop"):
        raise InterplabError(f"on_conflict must be 'error' or 'drop', got {on_conflict!r}")
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
    header, records = _read_records(path)
    pair_col = _optional_column(path, header, pair_col, PAIR_COL)
    group_col = _optional_column(path, header, group_col, GROUP_COL)
    missing = [c for c in (statement_col, label_col) if c not in header]
    if missing:
        raise InterplabError(
            f"{path}: missing column(s) {', '.join(repr(c) for c in missing)}; the header has "
            f"{', '.join(repr(c) for c in header)}; rename the columns or pass "
            "statement_col=/label_col="
        )
    if not records:
        raise InterplabError(f"{path} has a header but no rows; add statements")
    rows = []
    for line, row in records:
        statement = row.get(statement_col, "").strip()
        if not statement:
            raise InterplabError(f"{path}: line {line}: empty statement; remove the row")
        if group_col is not None and not row.get(group_col, "").strip():
            raise InterplabError(
                f"{path}: line {line}: empty group in column {group_col!r}; give every row "
                "its entity, or pass group_col=None"
            )
        label = _parse_label(row.get(label_col, ""), line, path, label_col)
        rows.append((line, statement, label, row))
    rows = _drop_duplicates(path, rows, on_conflict)
    labels = [label for _, _, label, _ in rows]
    if len(set(labels)) < 2:
        only = "true (1)" if labels[0] == 1 else "false (0)"
        raise InterplabError(
            f"{path}: every label is {only}; a truth dataset needs both true and false statements"
        )
    extra = [c for c in header if c not in (statement_col, label_col, pair_col, group_col)]
    return StatementDataset(
        name=path.stem,
        statements=[statement for _, statement, _, _ in rows],
        labels=np.array(labels, dtype=np.int64),
        provenance={"file": str(path), "file_sha256": hashlib.sha256(raw).hexdigest()},
        seed=None,
        pair_ids=_column(rows, pair_col),
        metadata={c: [row.get(c, "") for *_, row in rows] for c in extra},
        groups=_column(rows, group_col),
        group_by=group_col,
    )


def _optional_column(path: Path, header: list[str], name: str | None, default: str) -> str | None:
    """``name`` if the header has it; ``None`` if it is absent and was not asked for by name."""
    if name is None or name in header:
        return name
    if name == default:
        return None
    raise InterplabError(
        f"{path}: no column {name!r}; the header has {', '.join(repr(c) for c in header)}"
    )


def _column(rows: list[tuple[int, str, int, dict[str, str]]], name: str | None) -> np.ndarray | None:
    return None if name is None else np.array([row.get(name, "").strip() for *_, row in rows])


def _read_records(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The header and ``(first file line, {column: cell})`` of every non-blank record."""
    records = []
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader, [])]
            start = reader.line_num + 1
            for cells in reader:
                if any(c.strip() for c in cells):
                    if len(cells) > len(header):
                        raise InterplabError(
                            f"{path}: line {start}: {len(cells)} fields but the header has "
                            f"{len(header)}; quote statements that contain commas"
                        )
                    if len(cells) < len(header) and reader.line_num > start:
                        raise InterplabError(
                            f"{path}: line {start}: a quoted field opened here runs to line "
                            f"{reader.line_num}, leaving {len(cells)} of the header's "
                            f"{len(header)} fields; close the quote"
                        )
                    records.append((start, dict(zip(header, cells, strict=False))))
                start = reader.line_num + 1
        except csv.Error as err:
            raise InterplabError(
                f"{path}: line {reader.line_num}: not valid CSV ({err}); check the quoting"
            ) from None
    return header, records


def _drop_duplicates(
    path: Path, rows: list[tuple[int, str, int, dict[str, str]]], on_conflict: str
) -> list[tuple[int, str, int, dict[str, str]]]:
    """Rows without exact repeats (warned) and, if ``on_conflict="drop"``, contradictions."""
    first: dict[str, tuple[int, int]] = {}
    rows_by_line = {line: statement for line, statement, _, _ in rows}
    kept, repeats, conflicts = [], [], {}
    for line, statement, label, row in rows:
        if statement not in first:
            first[statement] = (line, label)
            kept.append((line, statement, label, row))
            continue
        other_line, other_label = first[statement]
        if other_label == label:
            repeats.append((line, other_line))
            continue
        if on_conflict == "error":
            raise InterplabError(
                f"{path}: lines {other_line} and {line} give the same statement both labels: "
                f"{statement!r}; fix the label or remove one row (or pass on_conflict='drop')"
            )
        conflicts.setdefault(statement, (other_line, line))
    if conflicts:
        n_rows = sum(1 for r in rows if r[1] in conflicts)
        repeats = [r for r in repeats if rows_by_line[r[0]] not in conflicts]
        kept = [r for r in kept if r[1] not in conflicts]
        a, b = next(iter(conflicts.values()))
        warnings.warn(
            f"{path}: dropped all {n_rows} rows of {len(conflicts)} statement(s) given both "
            f"labels; e.g. lines {a} and {b}",
            stacklevel=3,
        )
    if repeats:
        line, other_line = repeats[0]
        warnings.warn(
            f"{path}: dropped {len(repeats)} exact duplicate row(s) (same statement and label), "
            f"keeping the first of each; e.g. line {line} repeats line {other_line}",
            stacklevel=3,
        )
    return kept
