"""CLI options derived from config dataclasses: types, nesting, help text, and no drift between
`--help` defaults and the dataclass defaults of every converted command."""

from __future__ import annotations

import dataclasses
import enum
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import typer
from typer.testing import CliRunner

from interplab.cli.options import config_fields, derive_options, from_config
from interplab.errors import InterplabError


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True)
class Inner:
    width: int = field(default=8, metadata={"help": "Inner width."})
    dropout: float = 0.1


@dataclass
class Example:
    name: str = field(default="run", metadata={"help": "A name."})
    batch_size: int = field(default=64, metadata={"help": "Rows per batch."})
    lr: float = 1e-3
    folder: Path = Path("runs/x")
    verbose: bool = False
    fused: bool = True
    mode: Literal["fast", "exact"] = "exact"
    colour: Colour = Colour.RED
    ks: list[int] = field(default_factory=lambda: [16, 32])
    tags: tuple[str, ...] = ()
    groups: list[list[str]] = field(default_factory=lambda: [["a", "b"], ["c"]])
    params: dict[str, float] = field(default_factory=dict)
    limit: int | None = 600
    device: str | None = None
    layers: list[int] | None = None
    inner: Inner = field(default_factory=lambda: Inner(width=16))  # overrides Inner's default


def _app(**kw) -> tuple[typer.Typer, list]:
    seen: list = []
    app = typer.Typer()

    @app.command("go")
    @from_config(Example, **kw)
    def go(cfg: Example, out: Path = typer.Option(Path("o"), help="Output.")) -> None:
        seen.append((cfg, out))

    @app.callback()
    def _root() -> None:
        pass

    return app, seen


def _run(args: list[str], **kw) -> Example:
    app, seen = _app(**kw)
    res = CliRunner().invoke(app, ["go", *args])
    assert res.exit_code == 0, res.output
    return seen[0][0]


def test_defaults_come_from_the_dataclass():
    cfg = _run([])
    assert cfg == Example()
    assert cfg.inner == Inner(width=16)  # the parent's default instance, not Inner()


def test_every_type_parses():
    cfg = _run(["--name", "a", "--batch-size", "8", "--lr", "0.5", "--folder", "f",
                "--verbose", "--no-fused", "--mode", "fast", "--colour", "blue",
                "--ks", "1,2", "--ks", "3", "--tags", "x,y", "--groups", "p+q", "--groups", "r",
                "--params", "alpha=0.5", "--params", "x=2", "--limit", "none",
                "--device", "cpu", "--layers", "0,3", "--width", "4", "--dropout", "0"])
    assert cfg == Example(
        name="a", batch_size=8, lr=0.5, folder=Path("f"), verbose=True, fused=False, mode="fast",
        colour=Colour.BLUE, ks=[1, 2, 3], tags=("x", "y"), groups=[["p", "q"], ["r"]],
        params={"alpha": 0.5, "x": 2.0}, limit=None, device="cpu", layers=[0, 3],
        inner=Inner(width=4, dropout=0.0))
    assert _run(["--ks", "none"]).ks == [] and _run(["--limit", "7"]).limit == 7


def test_rename_exclude_and_help():
    app, _ = _app(rename={"inner.width": "inner-width", "batch_size": "bs"}, exclude={"lr"})
    res = CliRunner().invoke(app, ["go", "--help"], env={"COLUMNS": "250"})
    assert res.exit_code == 0
    out = _plain(res.output)
    assert "--inner-width" in out and "--bs" in out and "--lr" not in out
    assert "Rows per batch." in out and "[default: 64]" in out and "[default: 16]" in out
    assert "--fused" in out and "--no-fused" in out and "fast|exact" in out
    assert _run(["--inner-width", "3"], rename={"inner.width": "inner-width"}).inner.width == 3


def test_bad_values_give_one_clear_error():
    app, _ = _app()
    res = CliRunner().invoke(app, ["go", "--ks", "1,x"])
    assert isinstance(res.exception, InterplabError)
    assert "--ks '1,x' is not a comma-separated list of int values" in str(res.exception)
    res = CliRunner().invoke(app, ["go", "--params", "alpha"])
    assert "NAME=VALUE" in str(res.exception)
    res = CliRunner().invoke(app, ["go", "--mode", "slow"])
    assert res.exit_code == 2 and "slow" in res.output


def test_definition_errors():
    @dataclass
    class Clash:
        seed: int = 0
        inner: Inner = field(default_factory=Inner)
        width: int = 3

    with pytest.raises(TypeError, match="inner.width and width both become --width"):
        derive_options(Clash)
    flags = [o.flag for o in derive_options(Clash, rename={"inner.width": "inner-width"})]
    assert flags == ["--seed", "--inner-width", "--dropout", "--width"]
    with pytest.raises(TypeError, match="no field"):
        derive_options(Example, exclude={"nope"})

    @dataclass
    class Odd:
        x: set[int] = field(default_factory=set)

    with pytest.raises(TypeError, match="no command-line form"):
        derive_options(Odd)
    with pytest.raises(TypeError, match="clashes"):
        from_config(Example)(lambda cfg, lr=typer.Option(1.0): None)


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


# Commands with no config to derive options from: each takes only a store folder argument.
# Commands with no settings of their own to derive: the store commands take only a folder,
# `rerun` takes a result file whose saved config is the run's config, and the model-cache
# commands take nothing (the cache folder and limit come from the environment).
NON_CONFIG_COMMANDS = {"store info", "store verify", "rerun", "cache info", "cache verify",
                       "cache clear"}


def _all_commands() -> list:
    """(name, click command) of every leaf command registered on the app, e.g. "sae eval"."""
    from interplab.cli.main import app

    out = []

    def walk(prefix: str, cmd) -> None:
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(f"{prefix} {name}".strip(), sub)
        else:
            out.append((prefix, cmd))

    walk("", typer.main.get_command(app))
    return out


def _converted_commands() -> list:
    return [(name, cmd) for name, cmd in _all_commands() if config_fields(cmd.callback)]


def test_every_command_is_derived_from_a_config():
    """Not a hand-kept list: every registered command and subcommand is built by from_config,
    except the explicit few that have no settings to derive."""
    names = {name for name, _ in _all_commands()}
    assert {"harvest", "sae eval", "sae dashboard", "sae train", "truth", "belief"} <= names
    assert names >= NON_CONFIG_COMMANDS  # the exemptions are real commands, not stale names
    hand_written = {name for name, cmd in _all_commands() if config_fields(cmd.callback) is None}
    assert hand_written == NON_CONFIG_COMMANDS


def test_every_registered_study_has_a_command_derived_from_its_config():
    """Each registry entry is a command whose options come from the entry's config class: the
    generated ones under the study's name, the rest (``sae train``) under their own command."""
    from interplab.studies.registry import STUDIES

    commands = dict(_all_commands())
    for study in STUDIES.values():
        name = study.own_command or study.name
        assert name in commands, name
        cls, _ = config_fields(commands[name].callback)
        assert cls is study.config_class(), (name, cls)
    assert STUDIES["sae"].own_command == "sae train" and "sae" not in commands


def test_converted_commands_cannot_drift_from_their_dataclass():
    """Every option of every command built from a config: its click default, parsed as the
    command parses it, equals the dataclass default (a field without one is a required option);
    and every field not excluded has an option."""
    commands = _converted_commands()
    assert len(commands) == len(_all_commands()) - len(NON_CONFIG_COMMANDS)
    checked = 0
    for name, cmd in commands:
        cls, opts = config_fields(cmd.callback)
        by_param = {p.name: p for p in cmd.params}
        for o in opts:
            p = by_param[o.param]
            assert o.flag in p.opts, (name, o.flag, p.opts)
            value = _default_at(cls, o.path)
            assert o.default == value, (name, o.path)
            if value is dataclasses.MISSING:
                assert p.required, (name, o.flag)
            else:
                assert not p.required and o.parse(p.default) == value, (name, o.path)
            checked += 1
    assert checked > 150


def _default_at(cls: type, path: str):
    """The default of the field at ``path`` (MISSING for a field without one)."""
    head, _, rest = path.partition(".")
    f = {f.name: f for f in dataclasses.fields(cls)}[head]
    if not rest:
        if f.default is not dataclasses.MISSING:
            return f.default
        if f.default_factory is not dataclasses.MISSING:
            return f.default_factory()
        return dataclasses.MISSING
    obj = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    for part in rest.split("."):
        obj = getattr(obj, part)
    return obj


def test_belief_help_shows_the_study_defaults():
    from interplab.cli.main import app
    from interplab.studies.belief import BeliefStudyConfig

    d = BeliefStudyConfig()
    res = CliRunner().invoke(app, ["belief", "--help"], env={"COLUMNS": "250"})
    out = _plain(res.output)
    lines = {ln.split()[1]: ln for ln in out.splitlines() if ln.strip().startswith("│ --")}
    assert f"[default: {d.train.n_steps}]" in lines["--steps"]  # the study's 1500, not 3000
    assert f"[default: {d.model.n_layers}]" in lines["--layers"]
    assert f"[default: {d.train.lr}]" in lines["--lr"]
    assert f"[default: {d.seed}]" in lines["--seed"]
    assert "--vocab-size" not in out  # set from the process


def test_belief_options_build_the_nested_config(monkeypatch, tmp_path):
    from interplab.cli import studies as belief_cli
    from interplab.studies import belief as study

    seen = []
    monkeypatch.setattr(study, "run_belief_study", lambda cfg, **kw: seen.append(cfg) or 1 / 0)
    app = typer.Typer()
    belief_cli.register(app)
    app.callback()(lambda: None)
    CliRunner().invoke(app, ["belief", "--steps", "7", "--layers", "2", "--context", "5",
                             "--param", "x=0.1", "--seed", "3", "--threads", "2",
                             "--out", str(tmp_path / "belief")])  # not runs/ of the checkout
    (cfg,) = seen
    assert cfg.train.n_steps == 7 and cfg.model.n_layers == 2 and cfg.model.context_length == 5
    assert cfg.process_params == {"x": 0.1} and cfg.num_threads == 2
    assert cfg.seed == cfg.train.seed == 3
    assert dataclasses.replace(cfg.train, n_steps=1500, seed=0) == study.BeliefStudyConfig().train


def test_cli_import_stays_light():
    code = "import sys, interplab.cli.main; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_every_converted_help_shows_the_dataclass_defaults():
    from interplab.cli.main import app

    checked = 0
    for name, cmd in _converted_commands():
        res = CliRunner().invoke(app, [*name.split(), "--help"], env={"COLUMNS": "400"})
        assert res.exit_code == 0, res.output
        lines = {ln.split()[1]: ln for ln in _plain(res.output).splitlines()
                 if ln.strip().startswith("│") and len(ln.split()) > 1}
        for o in config_fields(cmd.callback)[1]:
            if type(o.default) in (int, float, str):
                assert f"[default: {o.default}]" in lines[o.flag], (name, o.flag)
                checked += 1
    assert checked > 40


def test_boolean_flags_show_no_type_label():
    app, _ = _app()
    out = _plain(CliRunner().invoke(app, ["go", "--help"], env={"COLUMNS": "250"}).output)
    line = next(ln for ln in out.splitlines() if "--no-fused" in ln)
    assert "<bool>" not in line and "--fused" in line
    assert "<int>" in next(ln for ln in out.splitlines() if "--batch-size" in ln)  # control
    from interplab.cli.main import app as real

    for name in ("harvest", "sae eval", "sae train"):
        out = _plain(CliRunner().invoke(real, [*name.split(), "--help"],
                                        env={"COLUMNS": "250"}).output)
        flags = [ln for ln in out.splitlines() if re.search(r"--no-[a-z]", ln)]
        assert flags and not [ln for ln in flags if "<bool>" in ln], name
    # flags declared outside a config (--quiet) and typer's own --help, in every command
    for name in ("", "causal", "truth", "demo", "rerun", "sae", "sae dashboard", "store",
                 "store info"):
        out = _plain(CliRunner().invoke(real, [*name.split(), "--help"],
                                        env={"COLUMNS": "250"}).output)
        assert "--help" in out and "<bool>" not in out, (name, out)
        assert "<int>" in out or name in ("", "sae", "store", "store info", "rerun", "demo")


def test_command_summaries_are_whole_first_paragraphs():
    """`interplab --help` lists each command with the whole first paragraph of its docstring
    on one line, not cut where the docstring's source line ends."""
    import inspect

    from interplab.cli.main import app

    checked = 0
    root = typer.main.get_command(app)
    for prefix, group in [([], root), *(([n], g) for n, g in root.commands.items()
                                        if hasattr(g, "commands"))]:
        res = CliRunner().invoke(app, [*prefix, "--help"], env={"COLUMNS": "400"})
        out = _plain(res.output)
        for name, cmd in group.commands.items():
            doc = cmd.callback.__doc__ if cmd.callback and cmd.callback.__doc__ else cmd.help
            first = " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())
            line = next(ln for ln in out.splitlines() if ln.strip("│ ").startswith(name + " "))
            assert first in line, (name, first, line)
            checked += 1
    assert checked >= 16


def test_a_parent_config_overrides_a_nested_help_text():
    @dataclass
    class Parent:
        inner: Inner = field(default_factory=Inner, metadata={"help": {"width": "Wider."}})

    helps = {o.flag: o.help for o in derive_options(Parent)}
    assert helps["--width"] == "Wider." and helps["--dropout"] == ""
    assert derive_options(Example, only={"inner"})[0].help == "Inner width."  # control


@pytest.mark.parametrize("args", [
    [],
    ["--name", "a b", "--batch-size", "8", "--lr", "0.25", "--folder", "f/g", "--verbose",
     "--no-fused", "--mode", "fast", "--colour", "blue", "--ks", "1,2,3", "--tags", "x,y",
     "--groups", "p+q", "--groups", "r", "--params", "alpha=0.5", "--limit", "none",
     "--device", "cpu", "--layers", "0,3", "--width", "4", "--dropout", "0"],
    ["--ks", "none", "--limit", "7", "--groups", "z", "--inner-width", "2"],
])
def test_command_line_round_trips_to_the_same_config(args):
    from interplab.cli.options import command_line

    rename = {"inner.width": "inner-width"} if "--inner-width" in args else None
    app, seen = _app(rename=rename)
    assert CliRunner().invoke(app, ["go", *args]).exit_code == 0
    cfg = seen[-1][0]
    go = typer.main.get_command(app).commands["go"].callback
    for include_defaults in (False, True):
        line = command_line("prog go", go, cfg, include_defaults=include_defaults)
        argv = shlex.split(line)
        assert argv[:2] == ["prog", "go"]
        res = CliRunner().invoke(app, argv[1:])
        assert res.exit_code == 0, (line, res.output)
        assert seen[-1][0] == cfg, line
    assert command_line("prog go", go, Example()) == "prog go"  # defaults are left out


def test_command_line_refuses_what_no_option_can_say():
    from interplab.cli.options import command_line

    app, _ = _app(exclude={"lr"})
    go = typer.main.get_command(app).commands["go"].callback
    with pytest.raises(ValueError, match="lr"):
        command_line("prog go", go, Example(lr=0.5))
    with pytest.raises(ValueError, match="--tags"):
        command_line("prog go", go, Example(tags=("a,b",)))
