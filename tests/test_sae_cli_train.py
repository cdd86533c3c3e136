"""`interplab sae train` on a tiny model's store: a folder name never claims settings its weights
were not trained with, resume refuses changed settings, `--extend-steps`, Ctrl-C/SIGTERM write a
checkpoint and print the resume command, small runs are flagged, damaged SAE files give one line."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from interplab.cli.main import main  # noqa: E402
from interplab.datasets.corpus import load_corpus  # noqa: E402

HOOK = "blocks.1.hook_resid_post"
SRC = str(Path(__file__).resolve().parents[1] / "src")
TRAIN = ["--hook", HOOK, "--arch", "topk", "--width", "128", "--steps", "30", "--batch-size", "64",
         "--lr-warmup", "5", "--sparsity-warmup", "5", "--log-every", "10",
         "--checkpoint-every", "10"]


def _harvest(out: Path, n_texts: int) -> Path:
    from interplab.activations import harvest_to_store
    from interplab.models import load

    texts = [d[:150] for d in load_corpus("python-docs").documents[:n_texts]]
    harvest_to_store(load("tiny-llama", seed=0), texts, [HOOK], out, "all", batch_size=8)
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return _harvest(tmp_path_factory.mktemp("store") / "acts", 40)


def _train(store: Path, out: Path, *args: str) -> int:
    return main(["sae", "train", "--store", str(store), "--out", str(out), *TRAIN, *args])


def test_second_sweep_into_the_same_out_never_copies_the_first_ones_weights(tmp_path, store,
                                                                           capsys):
    out = tmp_path / "saes"
    assert _train(store, out, "--k", "8") == 0
    capsys.readouterr()
    assert _train(store, out, "--k", "4") == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "SAE 0 k: 8 in the checkpoint, 4 now" in err
    assert not (out / "topk_w128_k4").exists()  # no folder claiming k=4 for k=8 weights
    # In a fresh folder the k=4 run trains k=4 weights (different from the k=8 ones).
    assert _train(store, tmp_path / "k4", "--k", "4") == 0
    k8 = (out / "topk_w128_k8" / "weights.safetensors").read_bytes()
    k4 = (tmp_path / "k4" / "topk_w128_k4" / "weights.safetensors").read_bytes()
    assert k8 != k4
    assert json.loads((tmp_path / "k4" / "topk_w128_k4" / "config.json").read_text())["k"] == 4


@pytest.mark.parametrize("args, named", [
    (["--lr", "1e-3"], "lr: 0.0003 in the checkpoint, 0.001 now"),
    (["--batch-size", "32"], "data_identity.batch_size: 64 in the checkpoint, 32 now"),
    (["--seed", "1"], "seed: 0 in the checkpoint, 1 now"),
])
def test_resume_with_changed_settings_is_refused_naming_them(tmp_path, store, capsys, args,
                                                             named):
    out = tmp_path / "saes"
    assert _train(store, out, "--k", "8") == 0
    capsys.readouterr()
    assert _train(store, out, "--k", "8", *args) == 2
    assert named in " ".join(capsys.readouterr().err.split())


def test_resume_from_a_different_store_is_refused(tmp_path, store, capsys):
    other = _harvest(tmp_path / "other", 41)
    out = tmp_path / "saes"
    assert _train(store, out, "--k", "8") == 0
    capsys.readouterr()
    assert _train(other, out, "--k", "8") == 2
    assert "data_identity.store:" in " ".join(capsys.readouterr().err.split())


def test_extend_steps(tmp_path, store, capsys):
    out = tmp_path / "saes"
    assert _train(store, out, "--k", "8") == 0
    assert _train(store, out, "--k", "8", "--steps", "50") == 2
    assert "--extend-steps" in " ".join(capsys.readouterr().err.split())
    assert _train(store, out, "--k", "8", "--steps", "50", "--extend-steps") == 0
    cfg = json.loads((out / "topk_w128_k8" / "config.json").read_text())
    assert cfg["extra"]["extended_from_steps"] == [30]
    steps = [json.loads(x)["step"] for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == [10, 20, 30, 40, 50]
    assert _train(store, tmp_path / "new", "--k", "8", "--extend-steps") == 2  # nothing to extend


def test_small_store_and_short_run_are_flagged(tmp_path, store, capsys):
    assert _train(store, tmp_path / "s", "--k", "8", "--steps", "3", "--width", "1024") == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "rows for a width of 1024" in err and "ends during warm-up" in err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_writes_a_checkpoint_and_prints_the_resume_command(tmp_path, store, sig):
    out = tmp_path / "saes"
    cmd = [sys.executable, "-m", "interplab.cli.main", "sae", "train", "--store", str(store),
           "--out", str(out), "--hook", HOOK, "--arch", "topk", "--k", "8", "--width", "2048",
           "--steps", "100000", "--batch-size", "256", "--log-every", "1",
           "--checkpoint-every", "0"]
    env = {**os.environ, "PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1", "COLUMNS": "1000"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    log = out / "train_log.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and log.read_text().count("\n") >= 3:
            break
        time.sleep(0.1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 128 + sig, err
    err = " ".join(err.split())
    from interplab.sae.trainer import read_checkpoint_meta

    step = read_checkpoint_meta(out / "checkpoint")["step"]  # written on the signal
    assert step >= 3
    assert f"{signal.Signals(sig).name} at step {step} of 100000" in err
    assert "Resume with: interplab sae train --store" in err and "--steps 100000" in err
    # The command is generated from the config: run again, it builds the same config and --out.
    resume = shlex.split(err.split("Resume with: ", 1)[1].strip())
    assert resume[:3] == ["interplab", "sae", "train"]
    assert _config_of(resume[1:]) == _config_of(cmd[3:])


def _config_of(argv: list[str]):
    """The (SaeStudyConfig, out) that `interplab <argv>` would train, without training."""
    import typer
    from typer.testing import CliRunner

    from interplab.cli import sae as sae_cli
    from interplab.studies.sae import run as study  # where `sae train` looks the function up

    seen = []
    original = study.run_sae_study
    study.run_sae_study = lambda cfg, out, **kw: seen.append((cfg, Path(out))) or 1 / 0
    try:
        app = typer.Typer()
        sae_cli.register(app)
        app.callback()(lambda: None)
        CliRunner().invoke(app, argv)
    finally:
        study.run_sae_study = original
    (found,) = seen  # nothing trained: the command reached the study with its config
    return found


# -- damaged SAE folders --------------------------------------------------------------------------

@pytest.fixture()
def saved_sae(tmp_path, store):
    out = tmp_path / "saes"
    assert _train(store, out, "--k", "8", "--steps", "5") == 0
    return out / "topk_w128_k8"


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "config.json").write_text('{"format": "interplab-sae", "archit'),
     "config.json is not valid JSON"),
    (lambda d: (d / "config.json").write_text(json.dumps(
        {k: v for k, v in json.loads((d / "config.json").read_text()).items() if k != "d_sae"})),
     "lacks ['d_sae']"),
    (lambda d: (d / "weights.safetensors").write_bytes(
        (d / "weights.safetensors").read_bytes()[:200]), "is not a readable safetensors file"),
    (lambda d: (d / "weights.safetensors").write_bytes(b"\xff" * 64),
     "is not a readable safetensors file"),
])
def test_damaged_sae_folder_gives_one_clear_line(saved_sae, store, capsys, damage, message):
    damage(saved_sae)
    capsys.readouterr()
    rc = main(["sae", "eval", "--sae", str(saved_sae), "--store", str(store)])
    err = capsys.readouterr().err
    assert rc == 2 and message in " ".join(err.split())
    assert "Traceback" not in err


def test_readme_sae_example_is_not_flagged_as_too_small():
    """The README's `sae train` line, on the 58k-token texts.txt it describes, passes the checks."""
    import re

    from interplab.sae import SAEConfig, TrainerConfig
    from interplab.sae.trainer import run_size_warnings

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    line = re.search(r"interplab sae train --store .*", readme).group(0)
    width = int(re.search(r"--width (\d+)", line).group(1))
    steps = int(re.search(r"--steps (\d+)", line).group(1))
    rows = int(re.search(r"`texts.txt` of ([\d,]+) SmolLM2 tokens", readme).group(1)
               .replace(",", ""))
    tcfg = TrainerConfig(total_steps=steps, lr_warmup_steps=100)
    assert run_size_warnings(rows, [SAEConfig("topk", 576, width, k=32)], tcfg) == []


def test_the_result_saves_one_way_and_reruns(tmp_path, store, capsys):
    """`sae train` writes its result as every study does (study name, config, versions), and
    `interplab rerun` trains the same sweep again from it and compares."""
    from interplab.studies.sae import SaeStudyConfig, SaeStudyResult
    from interplab.study.result import config_from_dict

    out = tmp_path / "saes"
    assert _train(store, out, "--k", "8") == 0
    assert "rerun" in " ".join(capsys.readouterr().err.split())
    saved = json.loads((out / "sae.json").read_text())
    assert saved["study"] == "sae" and saved["versions"]["interplab"]
    result = SaeStudyResult.from_json(out / "sae.json")
    assert result.runs[0].name == "topk_w128_k8" and (out / result.runs[0].path).is_dir()
    assert config_from_dict(SaeStudyConfig, saved["config"]).k == [8]
    assert main(["rerun", str(out / "sae.json"), "--out", str(tmp_path / "again")]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "re-running the sae study" in printed
    assert (tmp_path / "again" / "topk_w128_k8" / "weights.safetensors").is_file()
    again = json.loads((tmp_path / "again" / "sae.json").read_text())
    assert again["config"] == saved["config"] and again["runs"][0]["path"] == "topk_w128_k8"
    # the comparison names what changed when something did
    saved["steps"] += 1
    (tmp_path / "edited.json").write_text(json.dumps(saved))
    assert main(["rerun", str(tmp_path / "edited.json"), "--out", str(tmp_path / "third")]) == 0
    assert "steps: " in " ".join(capsys.readouterr().out.split())
