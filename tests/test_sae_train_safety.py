"""What the SAE trainer refuses and keeps: non-finite data, losses and weights never reach a
checkpoint; resume refuses changed settings (naming them); SIGINT/SIGTERM checkpoint; a resumed
log never repeats a step; runs too small to mean anything are flagged."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from interplab.errors import InterplabError
from interplab.sae import SAEConfig, SAETrainer, TrainerConfig
from interplab.sae.trainer import (
    CHECKPOINT_FILE,
    NonFiniteTrainingError,
    read_checkpoint_meta,
    run_size_warnings,
)

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _batches(n: int = 60, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(64, 16, generator=g) * torch.linspace(0.1, 3, 16) + 1.0 for _ in range(n)]


def _configs():
    return [SAEConfig("topk", 16, 64, k=4, seed=1),
            SAEConfig("relu", 16, 64, sparsity_coefficient=0.5, seed=2)]


def _tconfig(ckpt, **kw) -> TrainerConfig:
    base = dict(total_steps=60, lr=1e-2, lr_warmup_steps=5, sparsity_warmup_steps=5,
                dead_window_tokens=512, resample_every_steps=20, checkpoint_dir=str(ckpt),
                checkpoint_every_steps=5, log_every_steps=1)
    return TrainerConfig(**{**base, **kw})


def _checkpoint_step(ckpt: Path) -> int:
    return int(read_checkpoint_meta(ckpt)["step"])


def _assert_checkpoint_finite(ckpt: Path) -> None:
    tensors = load_file(str(ckpt / CHECKPOINT_FILE))
    for name, t in tensors.items():
        if t.is_floating_point():
            assert torch.isfinite(t).all(), name


# -- non-finite values --------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_batch_stops_training_and_keeps_the_last_checkpoint(tmp_path, bad):
    batches = _batches()
    batches[11][3, 7] = bad  # step 12's batch
    trainer = SAETrainer(_configs(), _tconfig(tmp_path / "ckpt"))
    with pytest.raises(NonFiniteTrainingError, match=r"batch 12 holds 1 of 64 rows with NaN/inf"):
        trainer.fit(batches)
    assert _checkpoint_step(tmp_path / "ckpt") == 10  # the periodic checkpoint, untouched
    _assert_checkpoint_finite(tmp_path / "ckpt")


def test_diverging_loss_stops_training_and_keeps_the_last_finite_checkpoint(tmp_path):
    def blow_up(t: SAETrainer) -> None:
        if t.step == 12:  # from step 13 on, a learning rate no SAE survives
            t.config.lr = 1e30

    trainer = SAETrainer(_configs(), _tconfig(tmp_path / "ckpt"))
    with pytest.raises(NonFiniteTrainingError, match=r"step 1[34].*(NaN|nan|inf).*step 10"):
        trainer.fit(_batches(), callback=blow_up)
    assert _checkpoint_step(tmp_path / "ckpt") == 10
    _assert_checkpoint_finite(tmp_path / "ckpt")
    # Control: the same run without the blow-up trains to the end.
    ok = SAETrainer(_configs(), _tconfig(tmp_path / "ok")).fit(_batches())
    assert ok.step == 60 and all(torch.isfinite(p).all() for s in ok.saes for p in s.parameters())


# -- resume refuses other settings ----------------------------------------------------------------

@pytest.mark.parametrize("change, named", [
    (dict(sae=SAEConfig("topk", 16, 64, k=8, seed=1)), "SAE 0 k: 4 in the checkpoint, 8 now"),
    (dict(sae=SAEConfig("topk", 16, 64, k=4, seed=5)), "SAE 0 seed: 1 in the checkpoint, 5 now"),
    (dict(lr=3e-3), "lr: 0.01 in the checkpoint, 0.003 now"),
    (dict(total_steps=80), "total_steps: 60 in the checkpoint, 80 now"),
    (dict(seed=3), "seed: 0 in the checkpoint, 3 now"),
    (dict(mixed_precision="bf16"), "mixed_precision: 'fp32'"),
    (dict(data_identity={"store": "other"}), "data_identity.store: 'abc' in the checkpoint"),
])
def test_resume_refuses_any_changed_setting_naming_it(tmp_path, change, named):
    ckpt = tmp_path / "ckpt"
    SAETrainer(_configs(), _tconfig(ckpt, total_steps=60, data_identity={"store": "abc"})).fit(
        _batches()[:20])  # stream ends at step 20: an interrupted run
    sae = change.pop("sae", None)
    configs = [sae, _configs()[1]] if sae else _configs()
    kw = {"total_steps": 60, "data_identity": {"store": "abc"}, **change}
    with pytest.raises(InterplabError, match="different settings") as err:
        SAETrainer(configs, _tconfig(ckpt, **kw)).fit(_batches())
    assert named in str(err.value)
    # Settings that do not change the weights may differ.
    again = SAETrainer(_configs(), _tconfig(ckpt, total_steps=60, data_identity={"store": "abc"},
                                            log_every_steps=7, checkpoint_every_steps=3))
    assert again.fit(_batches()).step == 60


def test_extend_steps_continues_a_finished_run_and_records_it(tmp_path):
    ckpt = tmp_path / "ckpt"
    SAETrainer(_configs(), _tconfig(ckpt, total_steps=30)).fit(_batches())
    with pytest.raises(InterplabError, match="total_steps: 30 in the checkpoint, 50 now"):
        SAETrainer(_configs(), _tconfig(ckpt, total_steps=50)).fit(_batches())
    with pytest.raises(InterplabError, match="total_steps: 30 in the checkpoint, 20 now"):
        SAETrainer(_configs(), _tconfig(ckpt, total_steps=20)).fit(_batches(), extend_steps=True)
    longer = SAETrainer(_configs(), _tconfig(ckpt, total_steps=50)).fit(_batches(),
                                                                        extend_steps=True)
    assert longer.step == 50
    assert longer.finalized_saes()[0].config.extra["extended_from_steps"] == [30]
    assert read_checkpoint_meta(ckpt)["extended_from"] == [30]


# -- the training log after a resume --------------------------------------------------------------

def test_resumed_log_does_not_repeat_steps_after_the_checkpoint(tmp_path):
    log = tmp_path / "log.jsonl"

    def crash(t: SAETrainer) -> None:
        if t.step == 13:  # dies three steps after the step-10 checkpoint
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        SAETrainer(_configs(), _tconfig(tmp_path / "ckpt", log_path=str(log))).fit(
            _batches(), callback=crash)
    with open(log, "a") as fh:
        fh.write('{"step": 14, "tok')  # a line torn by kill -9
    SAETrainer(_configs(), _tconfig(tmp_path / "ckpt", log_path=str(log))).fit(_batches())
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps == list(range(1, 61))


# -- SIGINT / SIGTERM -----------------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import sys, time, torch
    torch.set_num_threads(1)
    from interplab.sae import SAEConfig, SAETrainer, TrainerConfig
    from interplab.sae.trainer import TrainingInterrupted
    sys.path.insert(0, {tests!r})
    from test_sae_train_safety import _batches, _configs, _tconfig

    trainer = SAETrainer(_configs(), _tconfig({ckpt!r}, total_steps=300, checkpoint_every_steps=0,
                                              log_path={log!r}))
    try:
        trainer.fit(_batches(300), callback=lambda t: time.sleep(0.02))
    except TrainingInterrupted as exc:
        print("interrupted", exc.step, exc.checkpoint, flush=True)
        sys.exit(3)
""")


def _wait_for_log_step(log: Path, proc: subprocess.Popen, step: int) -> None:
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and log.read_text().count("\n") >= step:
            return
        time.sleep(0.05)
    raise AssertionError(f"the child never reached step {step}")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_writes_a_checkpoint_that_resumes_exactly(tmp_path, sig):
    ckpt, log = tmp_path / "ckpt", tmp_path / "log.jsonl"
    child = CHILD.format(tests=str(Path(__file__).parent), ckpt=str(ckpt), log=str(log))
    env = {**os.environ, "PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", child], env=env, stdout=subprocess.PIPE,
                            text=True)
    _wait_for_log_step(log, proc, 20)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 3, out
    step = _checkpoint_step(ckpt)  # no periodic checkpoints: this one was written on the signal
    assert 20 <= step < 300 and out.split()[:2] == ["interrupted", str(step)]
    assert [json.loads(x)["step"] for x in log.read_text().splitlines()] == list(
        range(1, step + 1))

    resumed = SAETrainer(_configs(), _tconfig(ckpt, total_steps=300, checkpoint_every_steps=0,
                                              log_path=str(log))).fit(_batches(300))
    reference = SAETrainer(_configs(), _tconfig(tmp_path / "fresh", total_steps=300,
                                                checkpoint_every_steps=0)).fit(_batches(300))
    for a, b in zip(resumed.saes, reference.saes, strict=True):
        for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(),
                                       strict=True):
            assert torch.allclose(pa, pb, atol=1e-6, rtol=0), (a.config.architecture, name)
    assert [json.loads(x)["step"] for x in log.read_text().splitlines()] == list(range(1, 301))


# -- damaged checkpoints --------------------------------------------------------------------------

def test_damaged_checkpoint_is_a_clear_error(tmp_path):
    ckpt = tmp_path / "ckpt"
    SAETrainer(_configs(), _tconfig(ckpt, total_steps=10)).fit(_batches())
    f = ckpt / CHECKPOINT_FILE
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(InterplabError, match="damaged"):
        SAETrainer(_configs(), _tconfig(ckpt, total_steps=10)).fit(_batches())


# -- runs too small to mean anything --------------------------------------------------------------

def test_run_size_warnings():
    width = [SAEConfig("topk", 576, 4608, k=32)]
    small = run_size_warnings(619, width, TrainerConfig(total_steps=1, lr_warmup_steps=100))
    assert any("619 rows for a width of 4608" in w for w in small)
    assert any("ends during warm-up" in w for w in small)
    assert any("too few" in w for w in run_size_warnings(
        200_000, width, TrainerConfig(total_steps=300, lr_warmup_steps=100)))
    # λ warm-up only matters to SAEs with a λ.
    relu = [SAEConfig("relu", 576, 4608)]
    tcfg = TrainerConfig(total_steps=600, lr_warmup_steps=100, sparsity_warmup_steps=1000)
    assert run_size_warnings(20 * 4608, width, tcfg) == []
    assert "λ warm-up 1000" in run_size_warnings(20 * 4608, relu, tcfg)[0]
    # Control: a store of 20 rows per feature and 2,000 steps is not flagged.
    assert run_size_warnings(20 * 4608, width, TrainerConfig(total_steps=2000,
                                                              lr_warmup_steps=100)) == []



def test_resume_accepts_a_checkpoint_with_retired_config_fields(tmp_path):
    """Checkpoints of older versions record ``normalisation_folded`` in each SAE config; the
    field is gone, and it is not a changed setting."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    ckpt = tmp_path / "ckpt"
    SAETrainer(_configs(), _tconfig(ckpt)).fit(_batches()[:20])  # interrupted at step 20
    path = ckpt / CHECKPOINT_FILE
    with safe_open(str(path), framework="pt") as fh:
        meta = json.loads(fh.metadata()["state"])
    for c in meta["sae_configs"]:
        c["normalisation_folded"] = True
    save_file(load_file(str(path)), str(path), metadata={"state": json.dumps(meta)})
    assert SAETrainer(_configs(), _tconfig(ckpt)).fit(_batches()).step == 60


def test_checkpoint_goes_through_the_atomic_writer(tmp_path, atomic_writes):
    ckpt = tmp_path / "ckpt"
    SAETrainer(_configs(), _tconfig(ckpt, total_steps=10)).fit(_batches())
    assert CHECKPOINT_FILE in atomic_writes
    assert _checkpoint_step(ckpt) == 10 and not list(ckpt.glob("*.tmp"))
    _assert_checkpoint_finite(ckpt)


@pytest.mark.parametrize("field, value, problem", [
    ("lr", float("nan"), "must be a positive finite number"),
    ("lr", -0.01, "must be a positive finite number"),
    ("lr", 0.0, "must be a positive finite number"),
    ("adam_betas", (1.5, 0.9), "must be two numbers in [0, 1)"),
    ("adam_betas", (0.9,), "must be two numbers in [0, 1)"),
    ("lr_warmup_steps", -1, "must be a whole number ≥ 0"),
    ("lr_decay_fraction", 1.5, "must be a number in [0, 1]"),
    ("dead_window_tokens", 0, "must be a positive whole number"),
    ("init_sample_size", 2.5, "must be a positive whole number"),
    ("resample_every_steps", 0, "must be a positive whole number"),
    ("seed", -3, "must be a whole number ≥ 0"),
    ("total_steps", -1, "must be a whole number ≥ 0"),
    ("device", "gpu", "must be cpu, cuda"),
])
def test_trainer_config_refuses_values_out_of_range(field, value, problem):
    import re

    from interplab.errors import ConfigFieldError

    with pytest.raises(ConfigFieldError,
                       match=rf"^TrainerConfig\.{field} {re.escape(problem)}.*, not ") as e:
        TrainerConfig(**{"total_steps": 10, field: value})
    assert e.value.field == field
    TrainerConfig(total_steps=0)  # 0 steps: a study's "one pass"; the trainer asks for ≥ 1
    with pytest.raises(InterplabError, match="total_steps must be ≥ 1"):
        SAETrainer([SAEConfig("relu", 8, 16)], TrainerConfig(total_steps=0))


@pytest.mark.parametrize("kw, message", [
    ({"d_sae": -4}, r"the width d_sae \(--width\) must be a positive whole number, not -4"),
    ({"d_sae": 0}, r"the width d_sae \(--width\) must be a positive whole number"),
    ({"k": 0}, r"k \(--k\) must be a positive whole number, not 0"),
    ({"k": 40}, r"k=40 is larger than the SAE width d_sae=16"),
    ({"sparsity_coefficient": float("nan")}, r"λ \(--sparsity\) must be a finite number ≥ 0"),
    ({"jumprelu_bandwidth": 0.0}, r"jumprelu_bandwidth must be a positive finite number"),
    ({"batchtopk_threshold_momentum": 2.0}, r"momentum must be a number in \(0, 1\]"),
])
def test_sae_config_refuses_values_out_of_range(kw, message):
    with pytest.raises(InterplabError, match=message):
        SAEConfig(**{"architecture": "topk", "d_in": 8, "d_sae": 16, "k": 4, **kw})


def test_second_signal_stops_at_once_naming_the_last_checkpoint(tmp_path):
    from interplab.sae.trainer import TrainingInterrupted

    ckpt = tmp_path / "ckpt"
    trainer = SAETrainer(_configs(), _tconfig(ckpt, checkpoint_every_steps=2))

    def impatient(t):
        if t.step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # finish the step, then checkpoint ...
            os.kill(os.getpid(), signal.SIGINT)  # ... no: stop now

    with pytest.raises(KeyboardInterrupt) as e:
        trainer.fit(_batches(), callback=impatient)
    exc = e.value
    assert isinstance(exc, TrainingInterrupted), type(exc)
    assert exc.signum == signal.SIGINT and exc.checkpoint_step == 2
    assert exc.checkpoint == ckpt / CHECKPOINT_FILE and _checkpoint_step(ckpt) == 2
    assert "a second SIGINT stopped it at once" in str(exc) and "holds step 2" in str(exc)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
