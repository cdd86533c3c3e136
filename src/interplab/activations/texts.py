"""Reading texts to harvest from .txt (one per line), .jsonl or .csv files.

Lines end at ``\\n`` (or ``\\r\\n``) only, as in the CSV dataset loader: other characters that
Python's ``str.splitlines`` treats as line breaks (U+2028, U+0085, form feed, ...) are part of a
text. A quoted CSV field keeps its newlines. JSON Lines texts must be JSON strings.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from interplab.errors import InterplabError

FORMATS = ".txt (one text per line), .jsonl (one JSON object per line) or .csv"


def _lines(raw: str) -> list[str]:
    """``raw`` split at ``\\n`` only, a ``\\r`` before it dropped (Windows line ends)."""
    return [line.removesuffix("\r") for line in raw.split("\n")]


def read_texts(path: str | Path, column: str = "text") -> list[str]:
    """Texts from ``path``: ``.txt`` one per non-empty line; ``.jsonl`` / ``.csv`` the ``column``."""
    p = Path(path)
    if p.is_dir():
        raise InterplabError(f"--texts {p} is a folder; give one text file: {FORMATS}")
    if not p.is_file():
        raise InterplabError(f"text file {p} does not exist; give one text file: {FORMATS}")
    try:
        raw = p.read_bytes().decode("utf-8")  # no newline translation: a lone \r stays in
    except UnicodeDecodeError as exc:
        raise InterplabError(
            f"{p} is not valid UTF-8 (byte {exc.start}: {exc.reason}); re-save it as UTF-8"
        ) from None
    suffix = p.suffix.lower()
    if suffix == ".jsonl":
        texts = _jsonl_texts(p, raw, column)
    elif suffix == ".csv":
        reader = csv.DictReader(io.StringIO(raw, newline=""))
        if reader.fieldnames is None or column not in reader.fieldnames:
            raise InterplabError(
                f"{p} has no column {column!r} (columns: {reader.fieldnames}); pass --column NAME"
            )
        try:
            texts = [row[column] for row in reader]
        except csv.Error as exc:
            raise InterplabError(f"{p}: line {reader.line_num}: not valid CSV ({exc}); check "
                                 "the quoting") from None
        missing = next((i for i, t in enumerate(texts) if t is None), None)
        if missing is not None:
            raise InterplabError(f"{p}: record {missing + 1} has no {column!r} field (fewer "
                                 "cells than the header); check the quoting")
    else:
        texts = [line for line in _lines(raw) if line.strip()]
    if not texts:
        raise InterplabError(f"{p} holds no texts")
    return texts


def _jsonl_texts(p: Path, raw: str, column: str) -> list[str]:
    texts = []
    for n, line in enumerate(_lines(raw), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InterplabError(f"{p}:{n} is not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict) or column not in obj:
            raise InterplabError(f"{p}:{n} has no field {column!r}; pass --column NAME")
        text = obj[column]
        if not isinstance(text, str):
            raise InterplabError(
                f"{p}:{n}: field {column!r} holds {json.dumps(text)[:40]} (a JSON "
                f"{_json_type(text)}), not a string; every text must be a JSON string")
        texts.append(text)
    return texts


def _json_type(value: object) -> str:
    return {type(None): "null", bool: "boolean", int: "number", float: "number",
            list: "array", dict: "object"}.get(type(value), type(value).__name__)
