"""Command-line options derived from a config dataclass, so its defaults are written only there.

Usage: write each setting once, as a field of the study's config dataclass, with its help text in
the field's metadata, then let :func:`from_config` turn the fields into options::

    @dataclass
    class FooConfig:
        batch_size: int = field(default=64, metadata={"help": "Sequences per step."})
        model: GPTConfig = field(default_factory=GPTConfig)  # nested: its fields are flattened

    @app.command("foo")
    @from_config(FooConfig, rename={"model.n_layers": "layers"}, exclude={"model.vocab_size"})
    def foo(cfg: FooConfig, out: Path = typer.Option(Path("runs/foo"), help="...")) -> None:
        result = run_foo(cfg)

The decorated function's first parameter receives the built config; its other parameters (here
``out``) stay ordinary typer options. Each field becomes ``--field-name``; ``rename`` maps a dotted
field path to another option name, ``exclude`` leaves fields at their dataclass default and
``only`` exposes just the fields named. The default is read from the dataclass (a nested field's
from its parent's default instance, so a study overrides a shared config's default in one place),
the help from ``metadata["help"]``. Keep the module that defines the config free of module-level
torch imports: the CLI imports it to build ``interplab --help``. Types:

* ``int``, ``float``, ``str``, ``Path``, ``X | None`` (``none`` on the command line gives None
  when the default is not None), ``bool`` (``--x/--no-x``), ``Enum`` and ``Literal`` (choices);
* ``list[X]`` / ``tuple[X, ...]``: comma-separated and/or repeated (``--k 16,32`` = ``--k 16 --k
  32``; ``none`` gives an empty list); ``list[list[X]]``: one inner list per occurrence, its
  items joined with ``+`` (``--train cities+neg_cities``); ``dict[str, X]``: repeated
  ``NAME=VALUE``;
* nested dataclasses: flattened under their own field names; two fields that would get the same
  option name are a definition error that asks for a ``rename``. A parent config whose meaning of
  a nested field differs (e.g. ``0`` steps = one pass) gives the nested field's help text in its
  own field's metadata: ``metadata={"help": {"total_steps": "... (0: one pass)"}}``.

:func:`config_fields` lists, for a command built this way, which option comes from which field,
so a test can check that every ``--help`` default equals the dataclass default.
:func:`command_line` turns a config back into the command line that builds it (e.g. the command
that resumes a harvest), so no command lists its flags a second time.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import shlex
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import typer

from interplab.errors import ConfigFieldError, InterplabError

_SCALARS = (int, float, str, Path)


@dataclasses.dataclass(frozen=True)
class ConfigOption:
    """One option derived from one (possibly nested) config field."""

    path: str  # dotted field path, e.g. "train.n_steps"
    param: str  # the Python parameter name typer sees, e.g. "train__n_steps"
    flag: str  # "--n-steps"
    tp: Any  # the field's resolved type
    default: Any  # the dataclass default (from the parent's default instance)
    help: str

    def parse(self, raw: Any) -> Any:
        """The config value for what click passed (``raw``), converted to the field's type."""
        return _parse(self.tp, raw, self.flag, self.default)


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (tp, False)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _kind(tp: Any) -> str:
    tp, _ = _strip_optional(tp)
    origin = typing.get_origin(tp)
    if tp is bool:
        return "bool"
    if origin in (list, tuple):
        return "list"
    if origin is dict:
        return "dict"
    if origin is typing.Literal:
        return "literal"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "enum"
    if tp in _SCALARS:
        return "scalar"
    raise TypeError(f"options.from_config: no command-line form for type {tp!r}; exclude the "
                    "field or give it a supported type")


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _walk(cls: type, base: Any, prefix: str = "",
          helps: Mapping[str, str] | None = None) -> Iterable[tuple]:
    """(path, field, type, default, help) of every leaf field; nested dataclasses are descended
    into, with defaults read from ``base`` (the parent's default instance) when there is one and
    help texts overridden by the parent field's ``metadata["help"]`` when that is a dict."""
    hints = _hints(cls)
    helps = helps or {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        default = getattr(base, f.name) if base is not None else _field_default(f)
        if _is_dataclass_type(tp):
            sub = default if default is not dataclasses.MISSING else None
            own = f.metadata.get("help")
            yield from _walk(tp, sub, f"{prefix}{f.name}.", own if isinstance(own, dict) else {})
        else:
            yield (f"{prefix}{f.name}", f, tp, default,
                   helps.get(f.name) or f.metadata.get("help", ""))


def _default_instance(cls: type) -> Any:
    """``cls()`` when every field has a default, else None (defaults then come field by field)."""
    try:
        return cls()
    except (TypeError, InterplabError):
        return None


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def derive_options(cls: type, rename: Mapping[str, str] | None = None,
                   exclude: Iterable[str] = (), only: Iterable[str] | None = None
                   ) -> list[ConfigOption]:
    """The options :func:`from_config` builds for ``cls`` (see the module docstring)."""
    rename = dict(rename or {})
    excluded = set(exclude)
    paths = {p for p, *_ in _walk(cls, None)}
    prefixes = {p.rsplit(".", 1)[0] for p in paths if "." in p}
    if only is not None:
        keep = set(only)
        excluded |= {p for p in paths if p not in keep and not any(
            p.startswith(k + ".") for k in keep)}
        excluded -= keep
    unknown = (set(rename) | excluded | set(only or ())) - paths - prefixes
    if unknown:
        raise TypeError(f"options.from_config({cls.__name__}): no field(s) {sorted(unknown)}")
    out: list[ConfigOption] = []
    seen: dict[str, str] = {}
    for path, f, tp, default, help_text in _walk(cls, _default_instance(cls)):
        if path in excluded or any(path.startswith(e + ".") for e in excluded):
            continue
        _kind(tp)  # unsupported types fail here, at definition time
        name = rename.get(path) or f.metadata.get("cli") or f.name
        flag = "--" + name.replace("_", "-")
        if flag in seen:
            raise TypeError(f"options.from_config({cls.__name__}): {seen[flag]} and {path} both "
                            f"become {flag}; pass rename={{{path!r}: 'other-name'}} or exclude one")
        seen[flag] = path
        out.append(ConfigOption(path, path.replace(".", "__"), flag, tp, default, help_text))
    return out


def _shown(value: Any) -> Any:
    """A default as click shows and parses it."""
    if isinstance(value, enum.Enum):
        return value
    if isinstance(value, (list, tuple)):
        return [_shown_item(v) for v in value]
    if isinstance(value, dict):
        return [f"{k}={v}" for k, v in value.items()]
    return value


def _shown_item(v: Any) -> str:
    return "+".join(str(x) for x in v) if isinstance(v, (list, tuple)) else str(v)


def _or_none(inner: type) -> Callable[[str], Any]:
    """Parser of a scalar that may also be ``none`` (``X | None`` fields whose default is not
    None)."""

    def parse(value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
            return None
        if isinstance(value, inner):
            return value
        try:
            return inner(value)
        except (TypeError, ValueError):
            raise typer.BadParameter(f"{value!r} is not a {inner.__name__} (or 'none')") from None

    return parse


def _list_metavar(tp: Any) -> str:
    if typing.get_origin(tp) is dict:
        return "NAME=VALUE"
    item = typing.get_args(tp)[0]
    if typing.get_origin(item) in (list, tuple):
        return f"{_type_name(typing.get_args(item)[0])}+…"
    return f"{_type_name(item)},…"


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is typing.Literal:
        return "|".join(str(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp)).upper()


def _typer_param(opt: ConfigOption) -> inspect.Parameter:
    """The ``inspect.Parameter`` (annotation + ``typer.Option``) that typer turns into the option."""
    kind = _kind(opt.tp)
    inner, optional = _strip_optional(opt.tp)
    default = None if opt.default is dataclasses.MISSING else _shown(opt.default)
    decls = [opt.flag]
    extra: dict[str, Any] = {}
    annotation: Any = opt.tp
    if kind == "bool":
        decls = [f"{opt.flag}/--no-{opt.flag[2:]}"]
        annotation = bool
        extra["metavar"] = ""  # the --x/--no-x pair says it all; no "<bool>" label
    elif kind in ("list", "dict"):
        annotation = list[str]
        default = default if default is not None else []
        extra["metavar"] = _list_metavar(inner)
    elif kind == "scalar" and optional and opt.default is not None:
        annotation = typing.Optional[inner]  # noqa: UP045 - typer wants the typing form
        extra["parser"] = _or_none(inner)
        extra["metavar"] = f"{_type_name(inner)}|none"
    required = opt.default is dataclasses.MISSING
    info = typer.Option(... if required else default, *decls, help=opt.help, **extra)
    return inspect.Parameter(opt.param, inspect.Parameter.KEYWORD_ONLY, default=info,
                             annotation=annotation)


def _split(raw: str, sep: str) -> list[str]:
    return [v.strip() for v in raw.split(sep) if v.strip()]


def _convert(tp: Any, item: str, flag: str, raw: str) -> Any:
    """One list item ``item`` (from the option value ``raw``) as ``tp``, or one clear error."""
    if typing.get_origin(tp) is typing.Literal:
        if item in typing.get_args(tp):
            return item
        raise InterplabError(f"{flag} {raw!r}: {item!r} is not one of {list(typing.get_args(tp))}")
    try:
        return tp(item)
    except (TypeError, ValueError):
        name = getattr(tp, "__name__", str(tp))
        example = "1,2" if tp in (int, float) else "a,b"
        raise InterplabError(f"{flag} {raw!r} is not a comma-separated list of {name} values; "
                             f"e.g. {flag} {example}") from None


def _parse(tp: Any, raw: Any, flag: str, default: Any) -> Any:
    inner, optional = _strip_optional(tp)
    kind = _kind(tp)
    if kind in ("scalar", "bool", "enum", "literal"):
        if kind == "enum" and isinstance(raw, str):
            return inner(raw)
        return raw
    values = list(raw or ())
    if not values:  # nothing given on the command line: the dataclass default
        return default
    if kind == "dict":
        key_tp, val_tp = typing.get_args(inner)
        out = {}
        for item in values:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise InterplabError(f"{flag} {item!r}: write NAME=VALUE, e.g. {flag} alpha=0.85")
            try:
                out[key_tp(key.strip())] = val_tp(value)
            except ValueError:
                raise InterplabError(f"{flag} {item!r}: {value!r} is not a "
                                     f"{val_tp.__name__}") from None
        return out
    if len(values) == 1 and values[0].strip().lower() in ("none", ""):
        return type(default)() if isinstance(default, (list, tuple)) else []
    args = typing.get_args(inner)
    item_tp = args[0]
    if typing.get_origin(item_tp) in (list, tuple):  # list[list[X]]: one inner list per value
        sub = typing.get_args(item_tp)[0]
        items: list = [[_convert(sub, v, flag, raw_v) for v in _split(raw_v, "+")]
                       for raw_v in values]
    else:
        items = [_convert(item_tp, v, flag, raw_v) for raw_v in values for v in _split(raw_v, ",")]
    if typing.get_origin(inner) is not tuple:
        return items
    if Ellipsis not in args and len(items) != len(args):
        raise InterplabError(f"{flag} {','.join(values)!r}: give {len(args)} comma-separated "
                             f"values, e.g. {flag} {','.join(str(v) for v in default)}")
    return tuple(items)


def _build(cls: type, base: Any, values: dict[str, Any], prefix: str = "") -> Any:
    """An instance of ``cls`` from ``values`` (dotted path -> value); nested dataclasses start from
    ``base``'s (the parent default's) instance, so fields not on the command line keep defaults."""
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        if _is_dataclass_type(hints[f.name]):
            sub_base = getattr(base, f.name) if base is not None else _field_default(f)
            if any(p.startswith(path + ".") for p in values):
                kwargs[f.name] = _build(hints[f.name], sub_base, values, path + ".")
        elif path in values:
            kwargs[f.name] = values[path]
    try:
        if base is not None and base is not dataclasses.MISSING:
            return dataclasses.replace(base, **kwargs)
        return cls(**kwargs)
    except ConfigFieldError as exc:  # a field out of range: name it by its path from the root
        raise exc.under(prefix) from None


def from_config(cls: type, *, rename: Mapping[str, str] | None = None,
                exclude: Iterable[str] = (), only: Iterable[str] | None = None
                ) -> Callable[[Callable], Callable]:
    """Decorator: the command's first parameter becomes ``cls``, built from options derived from
    its fields (see the module docstring). Apply it under ``@app.command(...)``. ``only`` (field
    paths, a nested field's path taking all of its fields) exposes just those fields."""
    opts = derive_options(cls, rename, exclude, only)

    def decorate(func: Callable) -> Callable:
        sig = inspect.signature(func)
        first, *rest = sig.parameters.values()
        taken = {o.param for o in opts} | {o.flag for o in opts}
        for p in rest:
            decls = set(getattr(p.default, "param_decls", None) or ())
            if ({p.name, f"--{p.name.replace('_', '-')}"} | decls) & taken:
                raise TypeError(f"options.from_config({cls.__name__}): {func.__name__} parameter "
                                f"{p.name!r} clashes with a config option; rename one")

        def command(**kwargs: Any) -> Any:
            values = {o.path: o.parse(kwargs.pop(o.param)) for o in opts}
            try:
                cfg = _build(cls, None, values)
            except ConfigFieldError as exc:  # name the option the user typed
                flag = next((o.flag for o in opts if o.path == exc.field), None)
                raise (exc.with_flag(flag) if flag else exc) from None
            return func(cfg, **kwargs)

        params = [*(p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in rest),
                  *(_typer_param(o) for o in opts)]
        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        command.__name__ = func.__name__
        command.__qualname__ = func.__qualname__
        command.__doc__ = func.__doc__
        command.__module__ = func.__module__
        command.__config_options__ = (cls, opts)  # type: ignore[attr-defined]
        return command

    return decorate


def config_fields(command: Callable) -> tuple[type, list[ConfigOption]] | None:
    """The config class and derived options of a command built with :func:`from_config`."""
    return getattr(command, "__config_options__", None)


def _value_at(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _words(opt: ConfigOption, value: Any) -> list[str]:
    """The command-line words that give ``opt`` the config value ``value`` (the inverse of
    :meth:`ConfigOption.parse`)."""
    kind = _kind(opt.tp)
    flag = opt.flag
    if kind == "bool":
        return [flag if value else f"--no-{flag[2:]}"]
    if value is None:
        return [] if opt.default is None else [flag, "none"]
    if kind == "enum":
        return [flag, str(value.value)]
    if kind in ("scalar", "literal"):
        return [flag, str(value)]
    if kind == "dict":
        if not value and opt.default:
            raise ValueError(f"{opt.flag}: an empty mapping cannot be written on the command "
                             "line when the default is not empty")
        return [w for k, v in value.items() for w in (flag, f"{k}={v}")]
    if not value:
        return [flag, "none"]
    item_tp = typing.get_args(_strip_optional(opt.tp)[0])[0]
    if typing.get_origin(item_tp) in (list, tuple):
        return [w for inner in value for w in (flag, _joined(opt, inner, "+"))]
    return [flag, _joined(opt, value, ",")]


def _joined(opt: ConfigOption, items: Iterable[Any], sep: str) -> str:
    words = [str(v.value if isinstance(v, enum.Enum) else v) for v in items]
    bad = [w for w in words if sep in w or w.strip() != w or not w]
    if bad:
        raise ValueError(f"{opt.flag}: the item(s) {bad} cannot be written as a {sep!r}-separated "
                         "list on the command line")
    return sep.join(words)


def config_argv(command: Callable, cfg: Any, *, include_defaults: bool = False) -> list[str]:
    """The options (a list of words) that make ``command`` (built with :func:`from_config`) build
    ``cfg``: every option whose value differs from its default, or every option with
    ``include_defaults``. A field the command does not expose must hold its default (else
    ``ValueError``: no command line builds that config)."""
    found = config_fields(command)
    if found is None:
        raise TypeError(f"{getattr(command, '__name__', command)!r} was not built by from_config")
    cls, opts = found
    if not isinstance(cfg, cls):
        raise TypeError(f"expected a {cls.__name__}, got a {type(cfg).__name__}")
    exposed = {o.path for o in opts}
    for path, _f, _tp, default, _help in _walk(cls, _default_instance(cls)):
        if path not in exposed and _value_at(cfg, path) != default:
            raise ValueError(f"{cls.__name__}.{path} = {_value_at(cfg, path)!r} is not its "
                             f"default ({default!r}) and has no option; no command line builds "
                             "this config")
    argv: list[str] = []
    for o in opts:
        value = _value_at(cfg, o.path)
        if include_defaults or o.default is dataclasses.MISSING or value != o.default:
            argv += _words(o, value)
    return argv


def command_line(name: str, command: Callable, cfg: Any, *, include_defaults: bool = False) -> str:
    """``name`` (e.g. ``"interplab harvest"``) followed by :func:`config_argv`, shell-quoted: the
    command line that runs ``command`` with the config ``cfg``."""
    return shlex.join([*name.split(), *config_argv(command, cfg,
                                                   include_defaults=include_defaults)])
