"""Architectures and the shared trainer: ground-truth recovery, false-positive baseline,
exact checkpoint/resume after kill -9, normalisation folding, decoder constraints, STE gradients."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from interplab.errors import InterplabError
from interplab.sae import SAEConfig, SAETrainer, TrainerConfig, create_sae, evaluate_reconstruction
from interplab.sae.base import Workspace
from interplab.sae.geometric_median import geometric_median
from interplab.sae.jumprelu import jumprelu, step
from interplab.sae.synthetic import (
    false_positive_baseline,
    feature_recovery,
    random_dictionary,
    sparse_dictionary_batches,
    uniform_cube,
)

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.mark.slow
def test_every_architecture_recovers_a_known_sparse_dictionary():
    """128 unit features in 32 dims (4x overcomplete), ~4 active per sample; all six
    architectures in one pass. (512 in 64 dims recovered the same way at 8x the cost; at this
    size every architecture clears each bound with room: recovery >= 0.95, FVE >= 0.80.)"""
    d, n_true = 32, 128
    dictionary = random_dictionary(n_true, d, seed=0)
    configs = [
        SAEConfig("topk", d, n_true, k=4),
        SAEConfig("batchtopk", d, n_true, k=4),
        SAEConfig("relu", d, n_true, sparsity_coefficient=1.0),
        SAEConfig("relu_decnorm", d, n_true, sparsity_coefficient=1.0),
        SAEConfig("gated", d, n_true, sparsity_coefficient=1.0),
        SAEConfig("jumprelu", d, n_true, sparsity_coefficient=1.0, jumprelu_init_threshold=0.5,
                  jumprelu_bandwidth=0.1),
    ]
    steps = 600
    trainer = SAETrainer(configs, TrainerConfig(
        total_steps=steps, lr=3e-3, log_every_steps=0, dead_window_tokens=20_000,
        resample_every_steps=200, sparsity_warmup_steps=steps // 10))
    trainer.fit(sparse_dictionary_batches(dictionary, 1024, steps, seed=1))
    held_out = list(sparse_dictionary_batches(dictionary, 1024, 4, seed=9))
    for sae in trainer.finalized_saes():
        rec = feature_recovery(dictionary, sae.W_dec)
        m = evaluate_reconstruction(sae, held_out)
        assert rec >= 0.9, (sae.config.architecture, rec)
        assert m.fraction_of_variance_explained > 0.7, (sae.config.architecture, m)
        assert m.l0 < 0.3 * n_true, (sae.config.architecture, m.l0)
    # Control: an untrained SAE of the same width does not "recover" the dictionary.
    untrained = create_sae(SAEConfig("relu", d, n_true, seed=123)).W_dec
    assert feature_recovery(dictionary, untrained) < 0.6


@pytest.mark.slow
def test_false_positive_baseline_shows_a_train_heldout_gap_on_unstructured_data():
    d = 32
    cfg = SAEConfig("topk", d, 128, k=4)
    tcfg = TrainerConfig(total_steps=400, lr=3e-3, log_every_steps=0)
    cube = uniform_cube(4000, d)
    dictionary = random_dictionary(64, d, seed=3)
    sparse = torch.cat(list(sparse_dictionary_batches(dictionary, 1000, 4, 3.0)))
    noise = false_positive_baseline(cube[:2000], cube[2000:], cfg, tcfg, batch_size=250)
    real = false_positive_baseline(sparse[:2000], sparse[2000:], cfg, tcfg, batch_size=250)
    assert noise.fve_gap > 0.08  # fits its training points, not structure
    assert real.fve_gap < 0.6 * noise.fve_gap  # control: real sparse structure generalises
    assert real.held_out.fraction_of_variance_explained > noise.held_out.fraction_of_variance_explained
    assert noise.to_dict()["n_train"] == 2000


# -- checkpoint / resume after kill -9 ----------------------------------------------------------

RUN = textwrap.dedent("""
    import sys, time, torch
    torch.set_num_threads(1)
    from interplab.sae import SAEConfig, SAETrainer, TrainerConfig

    def configs():
        return [SAEConfig("relu", 16, 64, sparsity_coefficient=0.5, seed=1),
                SAEConfig("topk", 16, 64, k=3, seed=2),
                SAEConfig("batchtopk", 16, 64, k=3, seed=3),
                SAEConfig("jumprelu", 16, 64, sparsity_coefficient=0.1, seed=4)]

    def tconfig(ckpt):
        return TrainerConfig(total_steps=240, lr=1e-2, lr_warmup_steps=10,
                             sparsity_warmup_steps=20, dead_window_tokens=512,
                             resample_every_steps=50, checkpoint_dir=ckpt,
                             checkpoint_every_steps=7, log_every_steps=0)

    def batches():
        g = torch.Generator().manual_seed(123)
        for _ in range(240):
            yield torch.randn(64, 16, generator=g) * torch.linspace(0.1, 3, 16) + 1.0
""")


def _run_in_process(ckpt):
    ns: dict = {}
    exec(RUN, ns)
    threads = torch.get_num_threads()
    try:
        trainer = SAETrainer(ns["configs"](), ns["tconfig"](ckpt))
        trainer.fit(ns["batches"]())
    finally:
        torch.set_num_threads(threads)
    return trainer


def test_run_killed_with_sigkill_resumes_to_identical_weights(tmp_path):
    ckpt = tmp_path / "ckpt"
    child = RUN + textwrap.dedent(f"""
        trainer = SAETrainer(configs(), tconfig({str(ckpt)!r}))
        trainer.fit(batches(), callback=lambda t: time.sleep(0.02))
    """)
    env = {**os.environ, "PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", child], env=env)
    from safetensors import safe_open

    killed_at = None
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        f = ckpt / "checkpoint.safetensors"
        if f.exists():
            try:
                with safe_open(str(f), framework="pt") as fh:
                    step_ = json.loads(fh.metadata()["state"])["step"]
            except Exception:  # replaced between exists() and open(): read again
                continue
            if step_ >= 60:
                os.kill(proc.pid, signal.SIGKILL)
                killed_at = step_
                break
        time.sleep(0.05)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the child must really have been killed mid-run"
    assert killed_at is not None and killed_at < 240

    import shutil

    shutil.copytree(ckpt, tmp_path / "ckpt_copy")
    resumed = _run_in_process(str(ckpt))  # picks up the checkpoint, skips consumed batches
    reference = _run_in_process(str(tmp_path / "fresh"))
    assert resumed.step == reference.step == 240
    for a, b in zip(resumed.saes, reference.saes, strict=True):
        for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
            assert torch.allclose(pa, pb, atol=1e-6, rtol=0), (a.config.architecture, name)
    # Control (the classic resume bug): restarting the data stream from its first batch instead
    # of skipping the consumed ones gives different weights — so the check above can fail.
    ns: dict = {}
    exec(RUN, ns)

    def restarted_stream():
        yield from [torch.zeros(64, 16)] * killed_at  # these are skipped by the trainer
        yield from ns["batches"]()

    wrong = SAETrainer(ns["configs"](), ns["tconfig"](str(tmp_path / "ckpt_copy")))
    wrong.fit(restarted_stream())
    assert wrong.step == 240
    assert not torch.allclose(wrong.saes[0].W_dec, reference.saes[0].W_dec, atol=1e-4)


# -- smaller properties --------------------------------------------------------------------------

def test_normalisation_is_folded_back_into_saved_weights():
    g = torch.Generator().manual_seed(0)
    data = [torch.randn(256, 8, generator=g) * 40 + 5 for _ in range(30)]
    for arch, kw in [("relu", {"sparsity_coefficient": 0.1}), ("topk", {"k": 2}),
                     ("gated", {"sparsity_coefficient": 0.1}),
                     ("jumprelu", {"sparsity_coefficient": 0.1})]:
        trainer = SAETrainer([SAEConfig(arch, 8, 32, **kw)], TrainerConfig(total_steps=30))
        trainer.fit(data)
        s = trainer.scale
        # Estimated on every row of the first scale_estimation_tokens (here: all 7,680 rows).
        all_rows = torch.cat(data)
        assert s == pytest.approx(math.sqrt(8 / float(all_rows.pow(2).sum(-1).mean())), rel=1e-5)
        trained = trainer.saes[0].eval()
        final = trainer.finalized_saes()[0]
        x = data[3]
        with torch.no_grad():
            assert torch.allclose(final.encode(x), trained.encode(x * s), atol=1e-4, rtol=1e-4)
            assert torch.allclose(final(x), trained(x * s) / s, atol=1e-3, rtol=1e-4)
        assert final.config.normalisation_scale == pytest.approx(s)
        assert final.config.training_tokens == 30 * 256


def test_unit_norm_decoder_and_parallel_gradient_removed():
    sae = create_sae(SAEConfig("relu", 8, 16, sparsity_coefficient=0.1))
    out = sae.training_loss(torch.randn(32, 8), 1.0, None)
    out.loss.backward()
    sae.before_optimizer_step()
    parallel = (sae.W_dec.grad * sae.W_dec).sum(-1)
    assert torch.allclose(parallel, torch.zeros(16), atol=1e-6)
    with torch.no_grad():
        sae.W_dec.mul_(3.0)
    sae.after_optimizer_step()
    assert torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(16), atol=1e-6)
    # Control: the decoder-norm-weighted variant keeps its norms free.
    free = create_sae(SAEConfig("relu_decnorm", 8, 16))
    with torch.no_grad():
        free.W_dec.mul_(3.0)
    free.after_optimizer_step()
    assert torch.allclose(free.W_dec.norm(dim=-1), torch.full((16,), 3.0), atol=1e-5)


def test_jumprelu_straight_through_gradients_match_the_paper():
    z = torch.tensor([[0.30, 0.52, 0.49, 2.0]], requires_grad=True)
    theta = torch.full((4,), 0.5, requires_grad=True)
    eps = 0.1
    jumprelu(z, theta, eps).sum().backward()
    # ∂/∂z = H(z − θ); ∂/∂θ = −(θ/ε)·K((z − θ)/ε), K the unit rectangle.
    assert torch.equal(z.grad, torch.tensor([[0.0, 1.0, 0.0, 1.0]]))
    assert torch.allclose(theta.grad, torch.tensor([0.0, -5.0, -5.0, 0.0]))
    z.grad = None
    theta.grad = None
    step(z, theta, eps).sum().backward()
    assert torch.equal(z.grad, torch.zeros_like(z))  # the L0 term does not push z
    assert torch.allclose(theta.grad, torch.tensor([0.0, -10.0, -10.0, 0.0]))


def test_topk_sparse_decoder_matches_dense():
    sae = create_sae(SAEConfig("topk", 32, 256, k=5))
    x = torch.randn(64, 32)
    pre = sae.pre_activations(x)
    vals, idx = torch.relu(pre).topk(5, dim=-1)
    dense = sae.decode(torch.zeros_like(pre).scatter(-1, idx, vals))
    assert torch.allclose(sae.decode_sparse(vals, idx), dense, atol=1e-5)
    assert ((sae.encode(x) != 0).sum(-1) <= 5).all()


def test_batchtopk_learns_a_threshold_used_at_inference():
    g = torch.Generator().manual_seed(0)
    data = [torch.randn(128, 8, generator=g) for _ in range(40)]
    trainer = SAETrainer([SAEConfig("batchtopk", 8, 32, k=3)], TrainerConfig(total_steps=40))
    trainer.fit(data)
    sae = trainer.finalized_saes()[0]
    assert float(sae.threshold) > 0
    x = data[0]
    one = sae.encode(x[:1])
    assert torch.allclose(one, sae.encode(x)[:1], atol=1e-6)  # no dependence on the batch
    assert 1.0 < float((sae.encode(x) != 0).sum(-1).float().mean()) < 8.0


def test_geometric_median_is_robust_where_the_mean_is_not():
    pts = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1000.0, 1000.0]])
    m = geometric_median(pts)
    assert torch.allclose(m, torch.tensor([0.5, 0.5]) + (m - 0.5).clamp(0, 0.5), atol=0.6)
    assert float(m.norm()) < 2 < float(pts.mean(0).norm())
    square = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]]) + 3
    assert torch.allclose(geometric_median(square), torch.tensor([3.0, 3.0]), atol=1e-5)


def test_training_log_is_jsonl_with_token_counts(tmp_path):
    log = tmp_path / "log.jsonl"
    data = [torch.randn(100, 8) for _ in range(10)]
    SAETrainer([SAEConfig("topk", 8, 16, k=2), SAEConfig("relu", 8, 16)],
               TrainerConfig(total_steps=10, log_every_steps=4, log_path=str(log))).fit(data)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in rows] == [4, 8, 10]
    for r in rows:
        assert len(r["saes"]) == 2
        for m in r["saes"]:
            assert m["n_tokens"] == 100 and 0 <= m["l0"] <= 16
            assert {"mse", "fraction_of_variance_explained", "loss"} <= set(m)


def test_bf16_matmul_path_trains():
    g = torch.Generator().manual_seed(0)
    data = [torch.randn(256, 16, generator=g) for _ in range(40)]
    fve = {}
    for mp in ("fp32", "bf16"):
        trainer = SAETrainer([SAEConfig("topk", 16, 64, k=4)],
                             TrainerConfig(total_steps=40, lr=3e-3, mixed_precision=mp))
        trainer.fit(data)
        assert trainer.saes[0].W_enc.dtype == torch.float32  # fp32 master weights
        fve[mp] = evaluate_reconstruction(trainer.finalized_saes()[0], data[:4])
    assert abs(fve["fp32"].fraction_of_variance_explained
               - fve["bf16"].fraction_of_variance_explained) < 0.02


@pytest.mark.parametrize("arch", ["relu", "relu_decnorm"])
def test_relu_hand_written_backward_matches_autograd(arch):
    """The fused ReLU loss (its own backward) against autograd of the textbook expressions."""
    torch.manual_seed(0)
    sae = create_sae(SAEConfig(arch, 12, 40, sparsity_coefficient=0.7)).double()
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.3)
        sae.b_enc[:5] = -100.0  # dead on this batch
        sae.b_dec.normal_(0, 0.5)
        sae.W_dec.mul_(torch.rand(40, 1, dtype=torch.float64) + 0.5)  # non-unit decoder norms
    x = torch.randn(33, 12, dtype=torch.float64, requires_grad=True)

    out = sae.training_loss(x, sparsity_scale=0.5, dead_mask=None)
    fused = torch.autograd.grad(out.loss, [x, *sae.parameters()])

    f = torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc)
    x_hat = f @ sae.W_dec + sae.b_dec
    w = sae.W_dec.norm(dim=-1) if arch == "relu_decnorm" else torch.ones(40, dtype=torch.float64)
    ref_loss = (x_hat - x).pow(2).sum(-1).mean() + 0.35 * (f * w).sum(-1).mean()
    ref = torch.autograd.grad(ref_loss, [x, *sae.parameters()])

    assert torch.allclose(out.loss, ref_loss, rtol=1e-12)
    # Two different kernels for the same math: equal to float64 rounding, not bitwise.
    assert torch.allclose(out.x_hat, x_hat, rtol=1e-12, atol=1e-12)
    assert torch.allclose(out.feats, f.detach(), rtol=1e-12, atol=1e-12)
    assert torch.equal(out.fired, (f != 0).any(0)) and 0 < int(out.fired.sum()) < 40
    for a, b in zip(fused, ref, strict=True):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    # With reused scratch blocks (as in the trainer): same gradients, and a stale graph whose
    # saved features were overwritten by a later step fails loudly instead of being wrong.
    sae.workspace = Workspace()
    first = sae.training_loss(x, 0.5, None)
    again = torch.autograd.grad(first.loss, [x, *sae.parameters()])
    assert all(torch.allclose(a, b, rtol=1e-10, atol=1e-12) for a, b in zip(again, ref, strict=True))
    stale = sae.training_loss(x, 0.5, None)
    sae.training_loss(x * 2, 0.5, None)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        stale.loss.backward()
    # Same at bf16 products: the training path's answer stays close to the fp32 gradient.
    sae32 = sae.float()
    sae32.matmul_dtype = torch.bfloat16
    out16 = sae32.training_loss(x.detach().float(), 0.5, None)
    g16 = torch.autograd.grad(out16.loss, list(sae32.parameters()))
    for a, b in zip(g16, ref[1:], strict=True):
        assert float((a.double() - b).norm() / b.norm()) < 0.03


def test_sweep_trains_each_sae_as_if_alone():
    """One pass, several SAEs sharing the trainer's scratch blocks: each ends exactly where a
    trainer of that SAE alone ends (same batches, same seed)."""
    g = torch.Generator().manual_seed(3)
    data = [torch.randn(64, 12, generator=g) for _ in range(12)]
    cfgs = [SAEConfig("relu", 12, 48, sparsity_coefficient=0.1),
            SAEConfig("relu_decnorm", 12, 48, sparsity_coefficient=0.3),
            SAEConfig("relu", 12, 24, sparsity_coefficient=0.2),
            SAEConfig("topk", 12, 48, k=3)]
    tc = dict(total_steps=12, log_every_steps=5, lr=1e-2)
    swept = SAETrainer(cfgs, TrainerConfig(**tc)).fit(data)
    for i, c in enumerate(cfgs):
        alone = SAETrainer([c], TrainerConfig(**tc)).fit(data)
        for (name, a), b in zip(swept.saes[i].named_parameters(), alone.saes[0].parameters(),
                                strict=True):
            assert torch.equal(a, b), (c.architecture, name)
        assert swept.log_history[-1]["saes"][i] == alone.log_history[-1]["saes"][0]


def test_clear_errors():
    with pytest.raises(InterplabError, match="unknown SAE architecture"):
        create_sae(SAEConfig("relux", 8, 16))
    with pytest.raises(InterplabError, match="larger than the SAE width"):
        create_sae(SAEConfig("topk", 8, 16, k=32))
    trainer = SAETrainer([SAEConfig("relu", 8, 16)], TrainerConfig(total_steps=2))
    with pytest.raises(InterplabError, match="d_in=8"):
        trainer.fit([torch.randn(4, 9)])
