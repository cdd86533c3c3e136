"""The TopK-family fused loss (sparse hand-written backward) against autograd of the textbook
expressions: losses, reconstructions, gradients and weights after training steps."""

from __future__ import annotations

import copy

import pytest
import torch

from interplab.sae import SAEConfig, SAETrainer, TrainerConfig, create_sae
from interplab.sae.topk_loss import batch_topk_pairs, topk_pairs

ARCHS = ["topk", "batchtopk"]


def _pair(arch: str, dtype=torch.float64, **cfg):
    torch.manual_seed(0)
    sae = create_sae(SAEConfig(arch, 12, 40, k=3, aux_k=5, **cfg)).to(dtype)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.3)
        sae.b_dec.normal_(0, 0.5)
        sae.W_dec.mul_(torch.rand(40, 1, dtype=dtype) + 0.5)  # the loss must not assume unit rows
    ref = copy.deepcopy(sae)
    ref.fused_loss = False
    return sae, ref


def _grads(sae, x, dead):
    out = sae.training_loss(x, 1.0, dead)
    return out, torch.autograd.grad(out.loss, [x, *sae.parameters()])


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dead", ["none given", "none dead", "some dead", "all dead"])
def test_fused_loss_and_gradients_equal_autograd(arch, dead):
    sae, ref = _pair(arch)
    x = torch.randn(33, 12, dtype=torch.float64, requires_grad=True)
    mask = {"none given": None, "none dead": torch.zeros(40, dtype=torch.bool),
            "some dead": torch.arange(40) % 3 == 0,
            "all dead": torch.ones(40, dtype=torch.bool)}[dead]
    out, fused = _grads(sae, x, mask)
    want, plain = _grads(ref, x, mask)
    assert out.feats is None  # only the kept pairs are held; the dense matrix on request
    assert torch.allclose(out.loss, want.loss, rtol=1e-12)
    for part in ("mse", "aux"):
        assert torch.allclose(out.parts[part], want.parts[part], rtol=1e-12, atol=1e-14)
    assert torch.allclose(out.x_hat, want.x_hat, rtol=1e-12, atol=1e-12)
    assert torch.allclose(out.features(), want.feats, rtol=1e-12, atol=1e-12)
    assert torch.equal(out.fired, (want.feats != 0).any(0))
    for a, b in zip(fused, plain, strict=True):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    if mask is not None and bool(mask.any()):
        assert float(out.parts["aux"].detach()) > 0
    else:
        assert float(out.parts["aux"].detach()) == 0.0


@pytest.mark.parametrize("arch", ARCHS)
def test_aux_loss_is_skipped_without_dead_latents_and_reaches_only_dead_ones(arch):
    sae, _ = _pair(arch)
    x = torch.randn(33, 12, dtype=torch.float64, requires_grad=True)
    _, none = _grads(sae, x, None)
    _, alive = _grads(sae, x, torch.zeros(40, dtype=torch.bool))
    assert all(torch.equal(a, b) for a, b in zip(none, alive, strict=True))
    dead = torch.zeros(40, dtype=torch.bool)
    dead[[1, 7, 30]] = True
    out = sae.training_loss(x, 1.0, dead)
    aux_grads = torch.autograd.grad(out.parts["aux"], [sae.W_enc, sae.b_enc, sae.W_dec])
    touched = (aux_grads[1] != 0) | (aux_grads[2] != 0).any(-1) | (aux_grads[0] != 0).any(0)
    assert bool(touched.any()) and not bool(touched[~dead].any())


def _train64(sae, data, window):
    """Adam steps as the trainer takes them (decoder projection, dead-latent bookkeeping), in
    float64 so that both paths' rounding stays far below the tolerance (Adam's first step,
    g / (|g| + ε), turns float32 rounding of a near-zero gradient into a visible step)."""
    opt = torch.optim.Adam(sae.parameters(), lr=1e-2)
    since = torch.zeros(sae.d_sae, dtype=torch.int64)
    aux = []
    for x in data:
        out = sae.training_loss(x, 1.0, since >= window)
        opt.zero_grad()
        out.loss.backward()
        sae.before_optimizer_step()
        opt.step()
        sae.after_optimizer_step()
        fired = out.fired if out.fired is not None else (out.feats != 0).any(0)
        since += x.shape[0]
        since[fired] = 0
        aux.append(float(out.parts["aux"].detach()))
    return aux


@pytest.mark.parametrize("arch", ARCHS)
def test_weights_after_training_steps_equal_autograd(arch):
    """Eight steps with the fused loss and with autograd end at the same weights; latents die
    after the first steps, so the aux-k loss runs in the later ones."""
    g = torch.Generator().manual_seed(1)
    data = [torch.randn(64, 12, generator=g, dtype=torch.float64) for _ in range(8)]
    fused = create_sae(SAEConfig(arch, 12, 96, k=2)).double()
    plain = copy.deepcopy(fused)
    plain.fused_loss = False
    aux = _train64(fused, data, window=64)
    assert aux == pytest.approx(_train64(plain, data, window=64), rel=1e-9)
    assert aux[0] == 0 and min(aux[1:]) > 0  # none dead at first, then aux-k in every step
    for (name, a), b in zip(fused.named_parameters(), plain.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-11), name
    if arch == "batchtopk":
        assert torch.allclose(fused.threshold, plain.threshold, rtol=1e-12)


@pytest.mark.parametrize("arch", ARCHS)
def test_trainer_with_the_fused_loss_ends_near_autograd(arch):
    """The trainer's own loop (float32, logging from the kept pairs): the same run within
    float32 rounding as amplified by Adam (a few % of one lr = 1e-2 step)."""
    g = torch.Generator().manual_seed(1)
    data = [torch.randn(64, 12, generator=g) for _ in range(8)]
    tc = TrainerConfig(total_steps=8, lr=1e-2, log_every_steps=1, dead_window_tokens=64)
    fused = SAETrainer([SAEConfig(arch, 12, 96, k=2)], tc)
    plain = SAETrainer([SAEConfig(arch, 12, 96, k=2)], tc)
    plain.saes[0].fused_loss = False
    fused.fit(data)
    plain.fit(data)
    for (name, a), b in zip(fused.saes[0].named_parameters(), plain.saes[0].parameters(),
                            strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=5e-4), name
    assert torch.equal(fused.tokens_since_fired[0], plain.tokens_since_fired[0])
    for key in ("mse", "aux", "l0", "fraction_of_variance_explained"):
        assert fused.log_history[-1]["saes"][0][key] == pytest.approx(
            plain.log_history[-1]["saes"][0][key], rel=1e-3)


def test_batch_topk_candidates_fall_back_when_one_row_holds_more():
    """Each row offers 2·k candidates; a row holding most of the batch's largest entries makes
    the candidate-only choice wrong, so the flat top-k decides — equal to it in both cases."""
    torch.manual_seed(0)
    pre = torch.randn(16, 64)
    k = 3

    def flat_choice(p):
        idx = p.flatten().topk(k * p.shape[0]).indices
        idx = idx[p.flatten()[idx] > 0]
        return set(zip((idx // 64).tolist(), (idx % 64).tolist(), strict=True))

    for crowded in (False, True):
        p = pre.clone()
        if crowded:
            p[5] += 10.0  # row 5 alone holds the 48 largest entries
        pairs = batch_topk_pairs(p, k, candidates=2)
        got = set(zip(pairs.rows.tolist(), pairs.cols.tolist(), strict=True))
        assert got == flat_choice(p)
        per_row = torch.bincount(pairs.rows, minlength=16)
        assert (int(per_row.max()) > 2 * k) == crowded  # more than the candidates: fallback used
        assert torch.equal(pairs.offsets, per_row.cumsum(0) - per_row)
        assert bool((pairs.rows[1:] >= pairs.rows[:-1]).all())  # sorted by token


def test_topk_pairs_keep_k_per_row_and_relu_zeroes():
    pre = torch.tensor([[3.0, -1.0, 2.0, -2.0], [-1.0, -3.0, -2.0, 0.5]])
    p = topk_pairs(pre, 2)
    assert p.rows.tolist() == [0, 0, 1, 1] and p.offsets.tolist() == [0, 2]
    assert sorted(p.cols[:2].tolist()) == [0, 2] and sorted(p.cols[2:].tolist()) == [0, 3]


@pytest.mark.parametrize("arch", ARCHS)
def test_bf16_products_choose_the_latents_but_values_and_gradients_are_fp32(arch):
    """Under bf16 products only the selection uses the rounded pre-activations; the kept values
    are the fp32 dot products, so where bf16 keeps the same pairs the loss equals fp32's."""
    sae, _ = _pair(arch, dtype=torch.float32)
    x = torch.randn(64, 12)
    out32 = sae.training_loss(x, 1.0, None)
    sae.matmul_dtype = torch.bfloat16
    out16 = sae.training_loss(x, 1.0, None)
    assert out16.active.vals.dtype == torch.float32
    with torch.no_grad():
        exact = torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc)
    kept = exact[out16.active.rows, out16.active.cols]
    assert torch.allclose(out16.active.vals, kept, rtol=1e-5, atol=1e-6)
    same = torch.equal(out16.features() != 0, out32.features() != 0)
    if same:
        assert torch.allclose(out16.loss, out32.loss, rtol=1e-5)
    assert float(out16.loss) == pytest.approx(float(out32.loss), rel=0.05)
