"""Property tests of the one SAE metrics module: each would have caught a known anchor bug."""

from __future__ import annotations

import math

import pytest
import torch

from interplab.errors import InterplabError
from interplab.sae import SAEConfig, create_sae, evaluate_reconstruction
from interplab.sae.metrics import ReconstructionAccumulator, reconstruction_metrics
from tests.conftest import identity_sae


@pytest.fixture
def acts():
    g = torch.Generator().manual_seed(0)
    # A large common offset: variance "around zero" would be wildly different from around the mean.
    return torch.randn(3000, 16, generator=g) * 0.5 + 7.0


def test_identity_sae_is_perfect(acts):
    sae = identity_sae(16)
    m = evaluate_reconstruction(sae, acts.split(500))
    assert m.mse == 0.0
    assert m.fraction_of_variance_explained == 1.0
    assert m.relative_reconstruction_bias == pytest.approx(1.0, abs=1e-12)
    assert m.cosine_similarity == pytest.approx(1.0, abs=1e-12)
    assert m.n_tokens == 3000


def test_predicting_the_mean_gives_zero_fve(acts):
    x_hat = acts.mean(0, keepdim=True).expand_as(acts)
    m = reconstruction_metrics(acts, x_hat)
    assert m.fraction_of_variance_explained == pytest.approx(0.0, abs=1e-9)
    # Control: variance measured around zero (the anchor bug) would call this an excellent fit.
    around_zero = 1 - ((acts - x_hat) ** 2).sum() / (acts**2).sum()
    assert float(around_zero) > 0.99


def test_mean_is_over_all_tokens_not_per_batch(acts):
    # Two batches with different means: per-batch centring would under-count the variance.
    x = torch.cat([acts[:1500] - 3.0, acts[1500:] + 3.0])
    x_hat = x.mean(0, keepdim=True).expand_as(x)
    acc = ReconstructionAccumulator(16)
    for chunk in x.split(1500):
        acc.update(chunk, x_hat[: len(chunk)])
    assert acc.compute().fraction_of_variance_explained == pytest.approx(0.0, abs=1e-9)


def test_mse_sums_over_dim_and_averages_over_tokens(acts):
    x_hat = acts + 0.1  # error 0.1 in each of 16 dims → Σ_d = 16 · 0.01
    m = reconstruction_metrics(acts, x_hat)
    assert m.mse == pytest.approx(16 * 0.01, rel=1e-5)


@pytest.mark.parametrize("batch_size", [1, 7, 128, 3000])
def test_metrics_do_not_depend_on_eval_batch_size(acts, batch_size):
    sae = create_sae(SAEConfig("topk", 16, 64, k=4, seed=3)).eval()
    with torch.no_grad():
        feats = sae.encode(acts)
        x_hat = sae.decode(feats)
    ref = reconstruction_metrics(acts, x_hat, feats)
    acc = ReconstructionAccumulator(16, 64)
    for x, xh, f in zip(acts.split(batch_size), x_hat.split(batch_size), feats.split(batch_size),
                        strict=True):
        acc.update(x, xh, f)
    m = acc.compute()
    names = ("mse", "fraction_of_variance_explained", "l0", "l1", "fraction_alive",
             "relative_reconstruction_bias", "cosine_similarity")
    for name in names:
        assert getattr(m, name) == pytest.approx(getattr(ref, name), rel=1e-10, abs=1e-12), name
    assert m.n_tokens == ref.n_tokens == 3000
    # End to end through the SAE: only float32 matmul blocking differs between batch sizes.
    e2e = evaluate_reconstruction(sae, acts.split(batch_size))
    for name in names:
        assert getattr(e2e, name) == pytest.approx(getattr(ref, name), rel=1e-5), name


@pytest.mark.parametrize("c", [0.5, 0.9, 2.0])
def test_relative_reconstruction_bias_of_a_scaled_reconstruction(acts, c):
    # γ = E‖x̂‖²/E⟨x, x̂⟩ = argmin_γ E‖x̂/γ − x‖². For x̂ = c·x this is c (shrinkage c < 1 gives
    # γ < 1) and x̂/γ recovers x exactly; 1/γ is the factor that undoes the shrinkage.
    x = acts.double()
    m = reconstruction_metrics(x, c * x)
    gamma = m.relative_reconstruction_bias
    assert gamma == pytest.approx(c, rel=1e-12)
    assert torch.allclose((c * x) / gamma, x)
    # γ is the argmin: any other rescaling fits worse.
    err = lambda g: float(((c * x / g - x) ** 2).sum())  # noqa: E731
    assert err(gamma) < err(gamma * 1.01) and err(gamma) < err(gamma * 0.99)
    assert m.cosine_similarity == pytest.approx(1.0, abs=1e-12)


def test_mask_excludes_tokens(acts):
    x_hat = acts.clone()
    x_hat[::2] += 100.0  # corrupt the masked-out tokens only
    mask = torch.ones(len(acts), dtype=torch.bool)
    mask[::2] = False
    m = reconstruction_metrics(acts, x_hat, mask=mask)
    assert m.mse == 0.0 and m.n_tokens == 1500
    assert reconstruction_metrics(acts, x_hat).mse > 1000  # control: unmasked it is counted


def test_sparsity_metrics_closed_form():
    feats = torch.zeros(4, 5)
    feats[0, 0] = 2.0
    feats[1, 0] = -1.0
    feats[1, 3] = 0.5
    x = torch.randn(4, 3)
    m = reconstruction_metrics(x, x, feats)
    assert m.l0 == pytest.approx(3 / 4)
    assert m.l1 == pytest.approx(3.5 / 4)
    assert m.n_alive == 2 and m.fraction_alive == pytest.approx(2 / 5)
    h = m.density_histogram
    assert h["n_dead"] == 3 and sum(h["counts"]) == 2 and h["n_tokens"] == 4
    assert h["counts"][-1] == 2  # densities 1/4 and 2/4 fall in the (10^-1, 10^0] bin


def test_bad_input_is_a_clear_error():
    acc = ReconstructionAccumulator(8)
    with pytest.raises(InterplabError, match="d_in=8"):
        acc.update(torch.zeros(3, 4), torch.zeros(3, 4))
    with pytest.raises(InterplabError, match="no tokens"):
        acc.compute()
    assert math.isnan(reconstruction_metrics(torch.ones(3, 2), torch.ones(3, 2))
                      .fraction_of_variance_explained)  # zero variance: undefined, not 1
