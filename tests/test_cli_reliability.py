"""Hostile input on the command line, on a tiny model's store: altered shards are refused, one
pass reads each row once, stores that would hold no row are refused, out-of-range training
numbers, full disks and Ctrl-C each give one clear line (and the command that resumes)."""

from __future__ import annotations

import errno
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from interplab.cli.main import main  # noqa: E402

HOOK = "blocks.1.hook_resid_post"
SRC = str(Path(__file__).resolve().parents[1] / "src")
TRAIN = ["--hook", HOOK, "--arch", "topk", "--k", "4", "--width", "64", "--batch-size", "32",
         "--lr-warmup", "2", "--sparsity-warmup", "2", "--log-every", "1"]


def _texts(tmp_path: Path, n: int = 24) -> Path:
    f = tmp_path / "t.txt"
    f.write_text("\n".join(f"Text number {i} is about rivers, bees and the mill by the water."
                           for i in range(n)) + "\n", encoding="utf-8")
    return f


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("store")
    out = d / "acts"
    assert main(["harvest", "--model", "tiny-llama", "--texts", str(_texts(d)), "--hooks", HOOK,
                 "--positions", "all", "--out", str(out), "--batch-size", "2",
                 "--rows-per-shard", "100"]) == 0
    return out


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def _one_line(capsys) -> str:
    err = _err(capsys).replace("\r", "\n")  # a progress bar may share the error's line
    lines = re.findall(r"error: [^\n]*", err)
    assert len(lines) == 1, err
    return lines[0]


# -- silent wrong results -------------------------------------------------------------------------

def test_training_refuses_a_shard_altered_after_the_harvest(store, tmp_path, capsys):
    from interplab.activations import ActivationStore

    copy = tmp_path / "acts"
    shutil.copytree(store, copy)
    loc = ActivationStore(copy)._header(1)[HOOK]
    shard = copy / "shard-00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[loc.offset + 10] ^= 0x01  # one float changed; the file stays valid
    shard.write_bytes(bytes(data))
    capsys.readouterr()
    out = tmp_path / "saes"
    assert main(["sae", "train", "--store", str(copy), "--out", str(out), *TRAIN,
                 "--steps", "5"]) == 2
    line = _one_line(capsys)
    assert "shard-00001.safetensors" in line and "fails its sha256 check" in line
    assert f"interplab store verify {copy}" in line
    assert not list(out.glob("topk_*"))


def test_one_pass_reads_every_row_once(tmp_path, capsys):
    from interplab.activations import ActivationStore

    acts = tmp_path / "small"
    assert main(["harvest", "--model", "tiny-llama", "--texts", str(_texts(tmp_path, 1)),
                 "--hooks", HOOK, "--out", str(acts)]) == 0
    n = ActivationStore(acts).n_rows
    capsys.readouterr()
    args = ["sae", "train", "--store", str(acts), "--k", "4", "--width", "64", "--steps", "0"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 2  # default batch 4096 > n rows
    assert not (tmp_path / "a").exists()  # refused before any folder is made
    line = _one_line(capsys)
    assert f"batch size 4096 is larger than the store {acts}, which holds {n} rows" in line
    assert f"use a batch size of at most {n} (--batch-size)" in line
    assert main([*args, "--batch-size", str(n), "--out", str(tmp_path / "b")]) == 0
    cfg = json.loads((tmp_path / "b" / "topk_w64_k4" / "config.json").read_text())
    assert 0 < cfg["training_tokens"] <= n  # distinct rows: position 0 is left out


def test_harvest_whose_every_row_is_excluded_is_refused(tmp_path, capsys):
    out = tmp_path / "acts"
    assert main(["harvest", "--model", "tiny-llama", "--texts", str(_texts(tmp_path)),
                 "--hooks", HOOK, "--positions", "index:0", "--for-sae", "--out", str(out)]) == 2
    line = _one_line(capsys)
    assert "every row would be left out" in line and "position 0" in line and "--for-sae" in line
    assert not out.exists()


def test_sae_commands_refuse_a_store_without_rows(store, tmp_path, capsys):
    from interplab.sae import SAEConfig, create_sae, save_sae

    empty = tmp_path / "empty"
    shutil.copytree(store, empty)
    m = json.loads((empty / "manifest.json").read_text())
    for shard in m["shards"]:
        (empty / shard["file"]).unlink()
    (empty / "manifest.json").write_text(json.dumps({**m, "shards": [], "n_rows": 0}))
    save_sae(create_sae(SAEConfig("topk", m["d_model"], 64, k=4, hook=HOOK)), tmp_path / "sae")
    capsys.readouterr()
    for args in (["sae", "train", "--store", str(empty), "--out", str(tmp_path / "o"), *TRAIN],
                 ["sae", "eval", "--sae", str(tmp_path / "sae"), "--store", str(empty)]):
        assert main(args) == 2
        assert f"the store {empty} holds no rows" in _one_line(capsys)


# -- one clear line instead of a traceback ----------------------------------------------------------

@pytest.mark.parametrize("flag, value, problem", [
    ("--lr", "nan", "--lr must be a positive finite number, not nan"),
    ("--lr", "-0.01", "--lr must be a positive finite number, not -0.01"),
    ("--adam-betas", "1.5,0.9", "--adam-betas must be two numbers in [0, 1) (beta1,beta2)"),
    ("--seed", "-1", "--seed must be a whole number ≥ 0, not -1"),
    ("--lr-warmup", "-5", "--lr-warmup must be a whole number ≥ 0, not -5"),
    ("--device", "gpu0", "--device must be cpu, cuda, cuda:N"),
])
def test_training_numbers_out_of_range_are_one_line(store, tmp_path, capsys, flag, value,
                                                    problem):
    out = tmp_path / "saes"
    assert main(["sae", "train", "--store", str(store), "--out", str(out), *TRAIN,
                 "--steps", "5", flag, value]) == 2
    assert problem in _one_line(capsys)
    assert not out.exists()  # refused before anything was created


def _train_args(store: Path, out: Path) -> list[str]:
    return ["sae", "train", "--store", str(store), "--out", str(out), *TRAIN, "--steps", "20",
            "--checkpoint-every", "5"]


def test_full_disk_keeps_the_last_checkpoint_and_prints_the_resume_command(store, tmp_path,
                                                                           capsys, monkeypatch):
    from interplab.sae import trainer

    real = trainer.atomic_write_safetensors
    calls = []

    def full_disk(path, tensors, metadata=None):
        calls.append(path)
        if len(calls) == 2:  # the checkpoint of step 10
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, tensors, metadata)

    monkeypatch.setattr(trainer, "atomic_write_safetensors", full_disk)
    out = tmp_path / "saes"
    args = _train_args(store, out)
    capsys.readouterr()
    assert main(args) == 2
    line = " ".join(_one_line(capsys).split())
    ckpt = out / "checkpoint" / "checkpoint.safetensors"
    assert f"could not write {ckpt} (No space left on device) at step 10 of 20" in line
    assert f"the last checkpoint, {ckpt} (step 5), is kept as it was" in line
    command = line.split("Resume with: ", 1)[1]
    assert command == "interplab " + shlex.join(args)
    assert trainer.read_checkpoint_meta(out / "checkpoint")["step"] == 5
    monkeypatch.setattr(trainer, "atomic_write_safetensors", real)
    assert main(shlex.split(command)[1:]) == 0  # the printed command resumes ...
    assert main(_train_args(store, tmp_path / "fresh")) == 0  # ... to an uninterrupted run's end
    name = "topk_w64_k4/weights.safetensors"
    assert (out / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes()


def test_full_disk_while_saving_the_sae_names_the_file(store, tmp_path, capsys, monkeypatch):
    from interplab.sae import formats

    real = formats.atomic_write_safetensors

    def full_disk(path, tensors, metadata=None):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(formats, "atomic_write_safetensors", full_disk)
    out = tmp_path / "saes"
    args = _train_args(store, out)
    capsys.readouterr()
    assert main(args) == 2
    line = " ".join(_one_line(capsys).split())
    assert f"could not write {out / 'topk_w64_k4' / 'weights.safetensors'} (No space left" in line
    assert line.endswith(": interplab " + shlex.join(args))
    monkeypatch.setattr(formats, "atomic_write_safetensors", real)
    assert main(args) == 0 and (out / "topk_w64_k4" / "weights.safetensors").is_file()


def test_ctrl_c_in_truth_reports_what_was_kept(tmp_path, capsys, monkeypatch):
    import interplab.studies.truth.run as truth

    def harvest_one_then_interrupt(config, progress, cache_dir):
        Path(cache_dir).mkdir(parents=True)
        (Path(cache_dir) / "cities-0123.safetensors").write_bytes(b"kept")
        raise KeyboardInterrupt

    monkeypatch.setattr(truth, "run_truth", harvest_one_then_interrupt)
    args = ["truth", "--model", "tiny-llama", "--datasets", "cities", "--train", "cities",
            "--layers", "1", "--out", str(tmp_path / "t")]
    capsys.readouterr()
    assert main(args) == 130
    err = " ".join(_err(capsys).split())
    assert f"1 file(s) (0.0 MiB) are kept in {tmp_path / 't'}, e.g. harvested activations" in err
    assert err.endswith("interplab " + shlex.join(args))


def test_ctrl_c_in_any_command_says_how_to_run_it_again(store, capsys, monkeypatch):
    from interplab.activations import ActivationStore

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(ActivationStore, "info", interrupted)
    capsys.readouterr()
    assert main(["store", "info", str(store)]) == 130
    err = " ".join(_err(capsys).split())
    assert err.startswith("interrupted (SIGINT)") and err.endswith(f"interplab store info {store}")


def test_error_text_is_never_read_as_markup(tmp_path, capsys):
    odd = tmp_path / "[bold]acts"
    odd.mkdir()
    assert main(["store", "info", str(odd)]) == 2
    assert f"{odd} is not an activation store" in _one_line(capsys)


def test_double_ctrl_c_during_training_prints_no_traceback(store, tmp_path):
    out = tmp_path / "saes"
    cmd = [sys.executable, "-m", "interplab.cli.main", "sae", "train", "--store", str(store),
           "--out", str(out), *TRAIN, "--width", "1024", "--steps", "100000",
           "--checkpoint-every", "0"]
    env = {**os.environ, "PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    log = out / "train_log.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and log.read_text().count("\n") >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Exception ignored" not in err
    err = " ".join(err.split())
    # Where the signals land depends on timing (a busy machine may deliver both before the
    # trainer installs its handler): either the trainer reports the step and its checkpoint, or
    # the command line reports the interrupt; both say how to run it again, neither a traceback.
    if "interrupted: SIGINT at step" in err:
        assert "Resume with: interplab sae train" in err
        assert "checkpoint written to" in err or "a second SIGINT stopped it at once" in err
    else:
        assert "interrupted (SIGINT)" in err and "interplab sae train" in err


def test_usage_errors_are_click_messages_not_tracebacks(capsys):
    assert main(["sae", "train", "--bogus"]) == 2
    err = _err(capsys)
    assert "No such option: --bogus" in err
    assert main(["store", "info"]) == 2
    assert "Missing argument" in _err(capsys)
