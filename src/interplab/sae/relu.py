"""ReLU SAEs with the decoder bias subtracted from the input.

Two variants of the same encoder ``f = ReLU((x − b_dec) W_enc + b_enc)``:

- ``relu``: decoder rows constrained to unit norm (the gradient component parallel to each row
  is removed before the step, rows re-normalised after it); loss ``‖x − x̂‖² + λ Σ_i f_i``.
- ``relu_decnorm``: unconstrained decoder, L1 weighted by decoder norms (Anthropic, April 2024
  update); loss ``‖x − x̂‖² + λ Σ_i f_i ‖W_dec[i]‖``.

Dead features are handled by resampling (:func:`resample_dead_features`, called by the trainer).
"""

from __future__ import annotations

import torch

from interplab.sae.base import SparseAutoencoder, TrainingLoss, register

__all__ = ["ReLUSAE", "ReLUDecoderNormSAE", "resample_dead_features"]


@register("relu")
class ReLUSAE(SparseAutoencoder):
    """ReLU SAE, unit-norm decoder rows, plain L1 penalty."""

    resample_dead = True

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.pre_activations(x))

    def sparsity_penalty(self, feats: torch.Tensor) -> torch.Tensor:
        return feats.sum(-1, dtype=torch.float32).mean()

    def training_loss(self, x, sparsity_scale, dead_mask):
        feats = self.encode(x)
        x_hat = self.decode(feats)
        mse = self.reconstruction_error(x, x_hat)
        sparsity = self.sparsity_penalty(feats)
        lam = self.config.sparsity_coefficient * sparsity_scale
        return TrainingLoss(mse + lam * sparsity, x_hat, feats, {"mse": mse, "l1": sparsity})


@register("relu_decnorm")
class ReLUDecoderNormSAE(ReLUSAE):
    """ReLU SAE, free decoder norms, L1 weighted by ‖W_dec[i]‖."""

    unit_norm_decoder = False

    def sparsity_penalty(self, feats: torch.Tensor) -> torch.Tensor:
        return (feats * self.W_dec.norm(dim=-1).to(feats.dtype)).sum(-1, dtype=torch.float32).mean()


@torch.no_grad()
def resample_dead_features(
    sae: SparseAutoencoder,
    x: torch.Tensor,
    dead_mask: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator | None = None,
    encoder_scale: float = 0.2,
) -> int:
    """Re-initialise dead features from poorly reconstructed inputs (Anthropic, 2023).

    Inputs ``x [batch, d_in]`` are sampled with probability ∝ ‖x − x̂‖²; a dead feature's decoder
    row becomes the (centred, unit-norm) sample, its encoder column the same direction scaled to
    ``encoder_scale`` × the mean alive encoder norm, its bias 0, and its Adam moments are zeroed.
    Returns the number of resampled features.
    """
    dead = dead_mask.nonzero().flatten()
    n_dead = int(dead.numel())
    if n_dead == 0:
        return 0
    x_hat = sae(x)
    err = (x - x_hat).pow(2).sum(-1)
    if float(err.sum()) <= 0:
        return 0
    idx = torch.multinomial(err / err.sum(), n_dead, replacement=n_dead > x.shape[0],
                            generator=generator)
    dirs = x[idx] - sae.b_dec
    dirs = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    alive = ~dead_mask
    alive_norm = sae.W_enc[:, alive].norm(dim=0).mean() if bool(alive.any()) else 1.0
    sae.W_dec[dead] = dirs
    sae.W_enc[:, dead] = dirs.t() * alive_norm * encoder_scale
    sae.b_enc[dead] = 0.0
    for p, rows, dim in ((sae.W_dec, dead, 0), (sae.W_enc, dead, 1), (sae.b_enc, dead, 0)):
        state = optimizer.state.get(p, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                state[key].index_fill_(dim, rows, 0.0)
    return n_dead
