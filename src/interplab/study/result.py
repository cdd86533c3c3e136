"""Results save and load one way; configs come back from their JSON form.

A study's result is a dataclass that derives from :class:`StudyResult`: its file carries the
study's name, the full config that produced it and the library versions, so
``interplab rerun result.json`` can run the same study again (:mod:`interplab.studies.registry`).
"""

from __future__ import annotations

import dataclasses
import json
import platform
import typing
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import interplab
from interplab.errors import InterplabError
from interplab.fileio import atomic_write_text

T = TypeVar("T")
R = TypeVar("R", bound="StudyResult")


def versions() -> dict[str, str]:
    """Versions of interplab, Python and the numerical libraries a result depends on (those
    installed; nothing is imported for this)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"interplab": interplab.__version__, "python": platform.python_version()}
    for package in ("torch", "transformers", "scikit-learn", "numpy", "scipy"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:  # pragma: no cover - every one is a dependency
            continue
    return out


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
        tp = _dataclass_of(hints[name])
        if tp is not None and isinstance(value, dict):
            kwargs[name] = config_from_dict(tp, value, f"{where}.{name}")
        elif isinstance(value, list):
            inner = _list_item_dataclass(hints[name])
            if inner is not None:
                kwargs[name] = [config_from_dict(inner, v, f"{where}.{name}[{i}]")
                                if isinstance(v, dict) else v for i, v in enumerate(value)]
    return cls(**kwargs)


def _dataclass_of(tp: Any) -> type | None:
    """The dataclass type of a field typed ``X`` or ``X | None``, else None."""
    args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    if len(args) == 1 and isinstance(args[0], type) and dataclasses.is_dataclass(args[0]):
        return args[0]
    return None


def _list_item_dataclass(tp: Any) -> type | None:
    if typing.get_origin(tp) is list:
        (item,) = typing.get_args(tp) or (None,)
        return _dataclass_of(item)
    return None


class StudyResult:
    """Mixin for a study's result dataclass. Subclasses set ``study`` (the registry name) and have
    ``config`` (the config as a dict) and ``versions`` fields; ``to_json``/``from_json`` are the
    one way results are saved and read."""

    study: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def to_json(self, path: str | Path) -> Path:
        """Write the result atomically as ``{"study": ..., <fields>}``."""
        body = {"study": self.study, **self.to_dict()}
        return atomic_write_text(path, json.dumps(body, indent=1, allow_nan=True,
                                                  ensure_ascii=False, default=str))

    @classmethod
    def from_dict(cls: type[R], data: dict[str, Any]) -> R:
        data = dict(data)
        study = data.pop("study", cls.study)
        if study != cls.study:
            raise InterplabError(f"this is a {study!r} result, not a {cls.study!r} one")
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        required = {f.name for f in dataclasses.fields(cls)  # type: ignore[arg-type]
                    if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING}
        if set(data) - names or required - set(data):
            raise InterplabError(
                f"this {cls.study} result was written by a different interplab version (its "
                f"fields differ: unknown {sorted(set(data) - names)}, missing "
                f"{sorted(required - set(data))}); run the study again to get a current file")
        return config_from_dict(cls, data, cls.__name__)

    @classmethod
    def from_json(cls: type[R], path: str | Path) -> R:
        return cls.from_dict(read_result(path))


def read_result(path: str | Path) -> dict[str, Any]:
    """A result file's JSON object, with a clear error for a file that is not one."""
    p = Path(path)
    if not p.is_file():
        raise InterplabError(f"result file {p} does not exist")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InterplabError(f"{p} is not a result file (not JSON: {exc})") from None
    if not isinstance(data, dict) or "config" not in data:
        raise InterplabError(f"{p} is not an interplab result file (no 'config' in it)")
    return data


# Fields that record how a run went, not what it found: never compared between runs.
RUN_RECORD = ("timings", "versions")


def differences(old: Any, new: Any, path: str = "", *, limit: int = 20) -> list[str]:
    """Where two results' JSON objects differ (``RUN_RECORD`` fields aside): one line per
    differing leaf, numbers with their absolute difference; at most ``limit`` lines, then a
    count of the rest."""
    found: list[str] = []
    _diff(old, new, path, found)
    return _limited(found, limit)


def _limited(found: list[str], limit: int) -> list[str]:
    if len(found) > limit:
        return [*found[:limit], f"... and {len(found) - limit} more"]
    return found


def _diff(a: Any, b: Any, path: str, found: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if not path and key in RUN_RECORD:
                continue
            where = f"{path}.{key}" if path else str(key)
            if key not in a or key not in b:
                found.append(f"{where}: only in the {'new' if key in b else 'old'} result")
            else:
                _diff(a[key], b[key], where, found)
        return
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            found.append(f"{path}: {len(a)} items before, {len(b)} now")
            return
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _diff(x, y, f"{path}[{i}]", found)
        return
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:  # both NaN
        return
    if a != b:
        if _is_number(a) and _is_number(b):
            found.append(f"{path}: {a!r} → {b!r} (|Δ| {abs(a - b):.3g})")
        else:
            found.append(f"{path}: {str(a)[:60]!r} → {str(b)[:60]!r}")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


# Floating-point sums taken in another order (more threads split them differently) move a result
# by a few units in its last digits: a relative change this small is that, nothing more.
LAST_DIGITS = 1e-6


def rerun_comparison(old: dict[str, Any], new: dict[str, Any], threads: int | None,
                     *, thread_setting: bool = True, limit: int = 20) -> dict[str, Any]:
    """What ``interplab rerun`` reports: the differences between a result and its re-run, how
    many of them are last-digit changes of a number (relative |Δ| ≤ ``LAST_DIGITS``, what
    summing in another order gives), and a note saying which numbers vary with the thread count
    and that only a run at one thread repeats bit for bit. ``thread_setting``: whether the
    study has a thread count to set (the SAE sweep runs at torch's own)."""
    lines: list[str] = []
    _diff(old, new, "", lines)
    pairs: list[tuple[float, float]] = []
    _numbers(old, new, "", pairs)
    small = sum(abs(a - b) <= LAST_DIGITS * max(abs(a), abs(b)) for a, b in pairs)
    if threads == 1:
        note = ("The run used --threads 1: a re-run repeats it bit for bit, so any difference is "
                "a change of code, library versions or data, not of summation order.")
    else:
        used = ("torch's own thread count" if not thread_setting else
                "the automatic thread count" if threads is None else f"{threads} threads")
        note = (f"The run used {used}: only a run at --threads 1 repeats bit for bit. With more "
                "threads the order of floating-point sums changes (the model's matrix products "
                "in the harvest, the probe and SAE fits, the bootstrap's means), so "
                "activations, accuracies, losses, intervals and p-values may move in their last "
                f"digits; {small} of the {len(lines)} difference(s) are that small (relative "
                f"|Δ| ≤ {LAST_DIGITS:g})."
                + (" `interplab rerun --threads 1` runs it at one thread." if thread_setting
                   else ""))
    return {"identical": not lines, "n_differences": len(lines), "n_last_digits": small,
            "threads": threads, "differences": _limited(lines, limit), "note": note}


def _numbers(a: Any, b: Any, path: str, out: list[tuple[float, float]]) -> None:
    """The differing numeric leaves of two JSON objects, as (old, new) pairs."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in set(a) & set(b):
            if not (not path and key in RUN_RECORD):
                _numbers(a[key], b[key], f"{path}.{key}", out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for x, y in zip(a, b, strict=True):
            _numbers(x, y, path, out)
    elif _is_number(a) and _is_number(b) and a != b and not (a != a and b != b):
        out.append((float(a), float(b)))
