"""The study spine: layering, settings with one home, results that re-run."""

from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

import interplab
from interplab.errors import InterplabError
from interplab.study.settings import ProbeConfig, RunConfig, SplitConfig

SRC = Path(interplab.__file__).parent
STUDIES = SRC / "studies"


def _study_modules() -> dict[str, Path]:
    """Each study by name: a module ``studies/x.py`` or a package ``studies/x/``."""
    out = {}
    for p in STUDIES.iterdir():
        if p.name.startswith("_") or p.name in ("registry.py", "__pycache__"):
            continue
        if p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").is_file()):
            out[p.stem] = p
    return out


def _imports(path: Path) -> set[str]:
    files = [path] if path.is_file() else list(path.rglob("*.py"))
    found = set()
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
    return found


def test_no_study_imports_another_study():
    studies = _study_modules()
    assert {"truth", "causal", "xor", "erasure", "nulls", "weights", "belief", "sae"} <= set(studies)
    for name, path in studies.items():
        others = {f"interplab.studies.{o}" for o in studies if o != name}
        bad = {m for m in _imports(path) if any(m == o or m.startswith(o + ".") for o in others)}
        assert not bad, f"the {name} study imports another study: {sorted(bad)}"


def test_lower_layers_never_import_studies_or_the_cli():
    upper = ("interplab.studies", "interplab.cli", "interplab.report")
    for package in ("models", "activations", "datasets", "probes", "sae", "interventions",
                    "erasure", "weights", "compmech", "controls", "distributed", "study"):
        bad = {m for m in _imports(SRC / package) if m.startswith(upper)}
        assert not bad, f"interplab.{package} imports {sorted(bad)}"
    # the statistics stay pure: nothing in controls runs a model
    assert not {m for m in _imports(SRC / "controls")
                if m.startswith(("interplab.models", "interplab.activations"))}


# A study imports what it uses at the top of its module. The exceptions, each with its reason:
# a config module the CLI reads to build --help must not load torch or scikit-learn, so its
# validation imports the registry it checks names against only when it runs.
_LOADS_TORCH = "a torch-free config module (the CLI reads it for --help); this import loads torch"
LATE_IMPORTS = {
    ("causal/config.py", "CausalConfig.validate"): _LOADS_TORCH,
    ("nulls/config.py", "NullsConfig.validate"): _LOADS_TORCH,
    ("erasure/config.py", "ErasureConfig.validate"): _LOADS_TORCH,
    ("truth/config.py", "is_pair_probe"): _LOADS_TORCH,
    ("sae/config.py", "SaeStudyConfig.validate"): _LOADS_TORCH,
}


def _late_imports(tree: ast.AST) -> list[tuple[str, str]]:
    """``(function, module)`` for every ``interplab`` import made inside a function, bar a
    package's ``__getattr__`` (which loads a study's run code when it is first asked for, so
    that the package's config stays light)."""
    found = []

    def visit(node: ast.AST, owner: str, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{owner}.{child.name}" if owner else child.name
                is_function = not isinstance(child, ast.ClassDef)
                visit(child, name, name if is_function else function)
                continue
            if function is not None and function != "__getattr__":
                modules = ([child.module or ""] if isinstance(child, ast.ImportFrom)
                           else [a.name for a in child.names] if isinstance(child, ast.Import)
                           else [])
                found.extend((function, m) for m in modules if m.split(".")[0] == "interplab")
            visit(child, owner, function)

    visit(tree, "", None)
    return found


def test_studies_import_at_the_top_of_their_modules():
    found = {}
    for f in sorted(STUDIES.rglob("*.py")):
        rel = f.relative_to(STUDIES).as_posix()
        if rel == "registry.py":  # names each study's code by "module:attribute", read lazily
            continue
        for function, module in _late_imports(ast.parse(f.read_text(encoding="utf-8"))):
            found.setdefault((rel, function), []).append(module)
    late = {k: v for k, v in found.items() if k not in LATE_IMPORTS}
    assert not late, f"imports inside functions (move them to the module top): {late}"
    stale = sorted(set(LATE_IMPORTS) - set(found))
    assert not stale, f"allow-listed late imports no longer exist: {stale}"


def test_the_import_check_fails_on_a_late_import():
    code = ("import interplab.x\n"
            "def f():\n    from interplab.models import load\n    import numpy\n"
            "class C:\n    def g(self):\n        import interplab.y\n"
            "def __getattr__(name):\n    from interplab.z import run\n")
    assert _late_imports(ast.parse(code)) == [("f", "interplab.models"), ("C.g", "interplab.y")]


def test_config_modules_stay_light():
    """What the CLI reads to build --help (every registered config) loads neither torch nor
    scikit-learn."""
    code = ("import sys\nfrom interplab.studies.registry import STUDIES\n"
            "import interplab.studies.sae, interplab.studies.harvest\n"
            "[s.config_class() for s in STUDIES.values()]\n"
            "print(sorted({'torch', 'sklearn'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _shared_fields() -> dict[str, type]:
    return {f.name: cls for cls in (RunConfig, SplitConfig, ProbeConfig)
            for f in dataclasses.fields(cls)}


def _study_configs() -> list[type]:
    from interplab.studies.registry import STUDIES

    return [s.config_class() for s in STUDIES.values()]


def test_study_configs_nest_the_shared_settings_instead_of_redeclaring_them():
    shared = _shared_fields()
    configs = _study_configs()
    assert len(configs) >= 4
    for cls in configs:
        if cls.__name__ == "BeliefStudyConfig":  # a toy GPT trained in the study: no LM, no probes
            continue
        if cls.__name__ == "SaeStudyConfig":
            # an SAE sweep: `model` is an optional data source beside `--store`, `batch_size`
            # counts activation rows per optimizer step; seed and device are TrainerConfig's
            assert {f.name for f in dataclasses.fields(cls)} & set(shared) == {"model",
                                                                             "batch_size"}
            continue
        own = {f.name for f in dataclasses.fields(cls)}
        redeclared = own & set(shared)
        assert not redeclared, f"{cls.__name__} re-declares {sorted(redeclared)}"
        default = cls()
        # run settings and the split convention are never overridden by a study
        if hasattr(default, "run"):
            assert default.run == RunConfig(), cls.__name__
        if hasattr(default, "data"):
            assert default.data.split == SplitConfig().split, cls.__name__
        if hasattr(default, "probe"):
            assert default.probe.centering == ProbeConfig().centering, cls.__name__


def test_the_check_fails_on_a_config_that_redeclares_a_default():
    @dataclasses.dataclass
    class Drifting:
        run: RunConfig = dataclasses.field(default_factory=RunConfig)
        batch_size: int = 32

    assert {f.name for f in dataclasses.fields(Drifting)} & set(_shared_fields()) == {"batch_size"}


def test_default_model_is_written_once():
    hits = []
    for f in SRC.rglob("*.py"):
        text = f.read_text(encoding="utf-8")
        if '"smollm2-135m"' in text:
            hits.append(f.relative_to(SRC).as_posix())
    # the registry of embedded files names it as a key; the default itself lives in defaults.py
    assert sorted(hits) == ["defaults.py", "models/loading.py"], hits


# Settings of these names default to a constant of interplab.defaults wherever they are written.
DEFAULTED = ("batch_size", "n_boot")
# A literal default is allowed only where the same name means another quantity, with the reason.
OTHER_QUANTITIES = {
    ("erasure/fit.py", "fit_eraser_from_store", "batch_size"):
        "activation rows per read of a store, not texts per forward pass",
    ("compmech/config.py", "TrainConfig", "batch_size"):
        "sequences per step of the toy GPT trained in the belief study",
    ("compmech/regression.py", "residual_rows", "batch_size"):
        "toy-GPT sequences per pass (a model of a few thousand parameters)",
    ("compmech/transformer.py", "GPT.residuals", "batch_size"): "toy-GPT sequences per pass",
    ("compmech/train.py", "evaluate", "batch_size"): "toy-GPT sequences per pass",
    ("sae/synthetic.py", "false_positive_baseline", "batch_size"):
        "synthetic rows per SAE training step",
    ("studies/sae/config.py", "SaeStudyConfig", "batch_size"):
        "activation rows per SAE optimizer step",
    ("sae/nulls.py", "SaeNullConfig", "sae_batch_size"):
        "rows per training step of the small SAEs compared with a null",
    ("circuits/config.py", "StudySaeConfig", "sae_batch_size"):
        "rows per training step of the circuit study's SAEs",
}


def _literal_defaults(tree: ast.AST, names: tuple[str, ...]):
    """``(owner, name, value)`` for every parameter or dataclass field called one of ``names``
    (or ending in ``_<name>``) whose default is written as a number."""

    def wanted(name: str) -> bool:
        return any(name == n or name.endswith("_" + n) for n in names)

    def literal(node: ast.expr | None):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "field":
            node = next((k.value for k in node.keywords if k.arg == "default"), None)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not \
                isinstance(node.value, bool):
            return node.value
        return None

    def visit(node: ast.AST, owner: str):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = child.args
                positional = a.posonlyargs + a.args
                with_default = positional[len(positional) - len(a.defaults):]
                pairs = list(zip(with_default, a.defaults, strict=True))
                pairs += [(x, d) for x, d in zip(a.kwonlyargs, a.kw_defaults, strict=True)
                          if d is not None]
                name = f"{owner}.{child.name}" if owner else child.name
                for arg, default in pairs:
                    if wanted(arg.arg) and literal(default) is not None:
                        yield name, arg.arg, literal(default)
                yield from visit(child, name)
            elif isinstance(child, ast.ClassDef):
                name = f"{owner}.{child.name}" if owner else child.name
                for stmt in child.body:
                    if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                            and wanted(stmt.target.id) and literal(stmt.value) is not None):
                        yield name, stmt.target.id, literal(stmt.value)
                yield from visit(child, name)

    yield from visit(tree, "")


def test_each_shared_default_is_written_once():
    """No signature or config field writes ``batch_size=32`` or ``n_boot=1000`` by hand: they read
    ``interplab.defaults``, so a changed default changes everywhere at once."""
    found = {}
    for f in sorted(SRC.rglob("*.py")):
        rel = f.relative_to(SRC).as_posix()
        if rel == "defaults.py":
            continue
        for owner, name, value in _literal_defaults(ast.parse(f.read_text(encoding="utf-8")),
                                                    DEFAULTED):
            found[(rel, owner, name)] = value
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):  # a literal passed where the default belongs
                found.update({(rel, f"call at line {node.lineno}", k.arg): k.value.value
                              for k in node.keywords if k.arg in DEFAULTED
                              and isinstance(k.value, ast.Constant)})
    written = sorted(k for k in found if k not in OTHER_QUANTITIES)
    assert not written, (f"literal defaults {written}: use interplab.defaults (DEFAULT_BATCH_SIZE, "
                         "DEFAULT_N_BOOT, ...) or allow-list a different quantity with its reason")
    stale = sorted(set(OTHER_QUANTITIES) - set(found))
    assert not stale, f"allow-listed literal defaults no longer exist: {stale}"


def test_the_defaults_check_fails_on_a_literal():
    code = ("def f(x, *, batch_size: int = 32, seed=0): pass\n"
            "class C:\n    n_boot: int = field(default=1000)\n    sae_batch_size: int = 256\n"
            "    def g(self, batch_size=DEFAULT_BATCH_SIZE): pass\n")
    assert sorted(_literal_defaults(ast.parse(code), DEFAULTED)) == [
        ("C", "n_boot", 1000), ("C", "sae_batch_size", 256), ("f", "batch_size", 32)]


def test_run_config_reads_the_shared_defaults():
    from interplab import defaults

    assert RunConfig().n_boot == defaults.DEFAULT_N_BOOT
    assert RunConfig().batch_size == defaults.DEFAULT_BATCH_SIZE
    assert RunConfig().model == defaults.DEFAULT_MODEL


def test_run_settings_are_checked():
    for bad, match in ((RunConfig(n_boot=5), "at least 100"), (RunConfig(batch_size=0), "batch"),
                       (RunConfig(threads=0), "threads"), (RunConfig(device="gpu"), "device"),
                       (SplitConfig(split=[0.5, 0.5, 0.0]), "three positive")):
        with pytest.raises(InterplabError, match=match):
            bad.validate()
    cfg = RunConfig(device="CUDA:1")
    cfg.validate()
    assert cfg.device == "cuda:1"


def test_flat_construction_routes_each_setting_to_its_nested_config():
    from interplab.studies.truth import TruthConfig

    cfg = TruthConfig.make(model="tiny-llama", seed=3, probes=["diffmean"], split=[0.5, 0.25, 0.25],
                           datasets=["cities"])
    assert cfg.run.model == "tiny-llama" and cfg.run.seed == 3
    assert cfg.probe.probes == ["diffmean"] and cfg.data.split == [0.5, 0.25, 0.25]
    assert cfg.datasets == ["cities"]
    with pytest.raises(TypeError):
        TruthConfig.make(no_such_setting=1)


def test_dataset_name_clashes_are_refused(tmp_path):
    from interplab.study.data import load_statements

    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "mine.csv").write_text("statement,label\nx is y.,1\nx is z.,0\n")
    (tmp_path / "cities.csv").write_text("statement,label\nx is y.,1\nx is z.,0\n")
    with pytest.raises(InterplabError, match=r"both be called 'mine'.*a/mine\.csv.*b/mine\.csv"):
        load_statements([str(tmp_path / "a" / "mine.csv"), str(tmp_path / "b" / "mine.csv")],
                        SplitConfig(), 0)
    with pytest.raises(InterplabError, match="both be called 'cities'"):
        load_statements([str(tmp_path / "cities.csv"), "cities"], SplitConfig(), 0)


def test_layer_rule_chooses_on_validation():
    import numpy as np

    from interplab.study.layers import choose_layer, fixed_layer

    choice = choose_layer([3, 7, 9], np.array([0.6, 0.9, 0.9]))
    assert choice.layer == 7 and "validation" in choice.rule  # first of the tied best
    with pytest.raises(InterplabError, match="does not exist"):
        fixed_layer(12, 4)


def test_result_differences_name_what_changed():
    from interplab.study.result import differences

    old = {"a": [1.0, 2.0], "b": {"c": "x"}, "timings": {"t": 1.0}, "n": float("nan")}
    assert differences(old, json.loads(json.dumps(old))) == []
    new = {"a": [1.0, 2.5], "b": {"c": "y"}, "timings": {"t": 9.0}, "n": float("nan")}
    diff = differences(old, new)
    assert diff == ["a[1]: 2.0 → 2.5 (|Δ| 0.5)", "b.c: 'x' → 'y'"]


def test_rerun_comparison_says_which_numbers_vary_with_threads():
    from interplab.study.result import rerun_comparison

    old = {"acc": [0.75, 0.5], "p": 0.01, "name": "x", "timings": {"t": 1.0}}
    new = {"acc": [0.75 * (1 + 1e-12), 0.625], "p": 0.01, "name": "x", "timings": {"t": 2.0}}
    c = rerun_comparison(old, new, threads=None)
    assert not c["identical"] and c["n_differences"] == 2 and c["n_last_digits"] == 1
    assert "only a run at --threads 1 repeats bit for bit" in c["note"]
    assert "1 of the 2 difference(s) are that small" in c["note"]
    assert [d.split(":")[0] for d in c["differences"]] == ["acc[0]", "acc[1]"]
    at_one = rerun_comparison(old, old, threads=1)
    assert at_one["identical"] and "bit for bit" in at_one["note"]
    assert "4 threads" in rerun_comparison(old, new, threads=4)["note"]
    no_setting = rerun_comparison(old, new, threads=None, thread_setting=False)["note"]
    assert "torch's own thread count" in no_setting and "rerun --threads 1" not in no_setting


def test_rerun_reproduces_a_truth_result_exactly_at_one_thread(tmp_path):
    from typer.testing import CliRunner

    from interplab.cli.main import app

    first = tmp_path / "first"
    args = ["truth", "--model", "tiny-llama", "--datasets", "cities,neg_cities",
            "--train", "cities", "--layers", "0,2", "--probes", "diffmean,logistic",
            "--max-per-dataset", "60", "--n-boot", "100", "--threads", "1", "--quiet",
            "--out", str(first)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    saved = json.loads((first / "truth.json").read_text())
    assert saved["study"] == "truth" and saved["config"]["run"]["threads"] == 1
    assert saved["versions"]["interplab"] == interplab.__version__
    res = CliRunner().invoke(app, ["rerun", str(first / "truth.json"), "--out",
                                   str(tmp_path / "again")])
    assert res.exit_code == 0, res.output
    assert "identical" in res.output
    assert "--threads 1: a re-run repeats it bit for bit" in " ".join(res.output.split())
    record = json.loads((tmp_path / "again" / "rerun.json").read_text())
    assert record["identical"] and record["threads"] == 1 and record["differences"] == []
    again = json.loads((tmp_path / "again" / "truth.json").read_text())
    for d in (saved, again):
        d.pop("timings")
    assert json.dumps(again) == json.dumps(saved)
    # and the comparison can fail: a changed number is listed
    saved["accuracy"]["cities"]["diffmean"]["probe"]["value"][0][0] += 0.25
    (tmp_path / "edited.json").write_text(json.dumps(saved))
    res = CliRunner().invoke(app, ["rerun", str(tmp_path / "edited.json"), "--out",
                                   str(tmp_path / "third")])
    assert res.exit_code == 0 and "differ" in res.output
    assert "accuracy.cities.diffmean.probe.value[0][0]" in res.output


def test_a_refused_run_leaves_no_folder_behind(tmp_path, monkeypatch):
    from interplab.cli.main import main
    from interplab.studies import registry

    out = tmp_path / "runs" / "truth"
    # refused by the config: nothing is created, not even the parent folder
    assert main(["truth", "--model", "tiny-llama", "--n-boot", "5", "--quiet",
                 "--out", str(out)]) == 2
    assert not (tmp_path / "runs").exists()

    # refused once running, before anything was written: the folders it made are removed
    def refuse(config, out, progress):
        (out / "activations").mkdir()
        raise InterplabError("no such statements")

    monkeypatch.setattr(registry, "run_truth_into", refuse)
    assert main(["truth", "--model", "tiny-llama", "--quiet", "--out", str(out)]) == 2
    assert not (tmp_path / "runs").exists()

    # what a run kept (a cache a re-run reuses) stays, and so does a folder that existed
    def keep_then_fail(config, out, progress):
        (out / "activations").mkdir()
        (out / "activations" / "kept.npy").write_bytes(b"x")
        raise InterplabError("failed after the harvest")

    monkeypatch.setattr(registry, "run_truth_into", keep_then_fail)
    assert main(["truth", "--model", "tiny-llama", "--quiet", "--out", str(out)]) == 2
    assert (out / "activations" / "kept.npy").is_file()
    mine = tmp_path / "mine"
    mine.mkdir()
    monkeypatch.setattr(registry, "run_truth_into", refuse)
    assert main(["truth", "--model", "tiny-llama", "--quiet", "--out", str(mine)]) == 2
    assert mine.is_dir() and not any(mine.iterdir())


def test_rerun_refuses_a_file_that_is_not_a_result(tmp_path):
    from interplab.cli.main import main

    (tmp_path / "x.json").write_text('{"config": {}, "study": "astrology"}')
    assert main(["rerun", str(tmp_path / "x.json"), "--out", str(tmp_path / "o")]) == 2
    (tmp_path / "y.json").write_text("not json")
    assert main(["rerun", str(tmp_path / "y.json"), "--out", str(tmp_path / "o")]) == 2


@pytest.mark.parametrize("centering", ["per-dataset", "train"])
def test_the_truth_null_section_uses_the_headlines_centring(centering, monkeypatch):
    """The erasure/null section fits its probes with the centring the headline used (it once
    fitted train-centred probes under a page saying "per-dataset")."""
    import interplab.studies.truth.erasure_nulls as section
    from interplab.studies.truth import TruthConfig, run_truth

    seen = []
    real = section.probe_scores

    def spy(probes, centering_used, *args, **kwargs):
        seen.append(centering_used)
        return real(probes, centering_used, *args, **kwargs)

    monkeypatch.setattr(section, "probe_scores", spy)
    config = TruthConfig.make(model="tiny-llama", datasets=["cities"], train_sets=[["cities"]],
                              layers=[0, 1], probes=["diffmean", "logistic"], controls=[],
                              max_per_dataset=80, n_boot=100, erasure_nulls=True,
                              nulls=["gaussian"], centering=centering)
    r = run_truth(config, progress=False)
    assert seen == [centering]
    assert r.method["centering"] == centering == r.erasure_nulls["centering"]
    assert r.erasure_nulls["nulls"]["config"]["centering"] == centering
    assert r.erasure_nulls["nulls"]["statistics"]["m"] >= 1  # its p-values corrected as a family
