"""Reading texts to harvest from .txt (one per line), .jsonl or .csv files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from interplab.errors import InterplabError


def read_texts(path: str | Path, column: str = "text") -> list[str]:
    """Texts from ``path``: ``.txt`` one per non-empty line; ``.jsonl`` / ``.csv`` the ``column``."""
    p = Path(path)
    if not p.is_file():
        raise InterplabError(f"text file {p} does not exist")
    try:
        raw = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InterplabError(
            f"{p} is not valid UTF-8 (byte {exc.start}: {exc.reason}); re-save it as UTF-8"
        ) from None
    suffix = p.suffix.lower()
    if suffix == ".jsonl":
        texts = []
        for n, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InterplabError(f"{p}:{n} is not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict) or column not in obj:
                raise InterplabError(f"{p}:{n} has no field {column!r}; pass --column NAME")
            texts.append(str(obj[column]))
    elif suffix == ".csv":
        reader = csv.DictReader(raw.splitlines())
        if reader.fieldnames is None or column not in reader.fieldnames:
            raise InterplabError(
                f"{p} has no column {column!r} (columns: {reader.fieldnames}); pass --column NAME"
            )
        texts = [row[column] for row in reader]
    else:
        texts = [line for line in raw.splitlines() if line.strip()]
    if not texts:
        raise InterplabError(f"{p} holds no texts")
    return texts
