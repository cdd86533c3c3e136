"""Study configs from their JSON form (nested dataclasses, unknown keys refused), and the JSON
round trip every study result shares."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, TypeVar

from interplab.errors import InterplabError

T = TypeVar("T")


def config_from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """``cls(**data)`` where nested dataclass fields may be given as dicts (as ``asdict`` wrote
    them); a key that is not a field is one clear error naming it."""
    where = where or cls.__name__
    if not isinstance(data, dict):
        raise InterplabError(f"{where}: expected a JSON object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - names
    if unknown:
        raise InterplabError(f"unknown {where} keys: {sorted(unknown)}")
    kwargs = dict(data)
    for name, value in data.items():
        tp = hints[name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp) and isinstance(value, dict):
            kwargs[name] = config_from_dict(tp, value, f"{where}.{name}")
    return cls(**kwargs)


class JsonResult:
    """Mixin for a study's result dataclass: ``to_json(path)`` writes ``asdict(self)`` atomically
    (:func:`interplab.fileio.atomic_write_json`) and ``from_json(path)`` reads it back."""

    def to_json(self, path: str | Path) -> Path:
        from interplab.fileio import atomic_write_json

        return atomic_write_json(path, dataclasses.asdict(self))  # type: ignore[call-overload]

    @classmethod
    def from_json(cls: type[T], path: str | Path) -> T:
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))
