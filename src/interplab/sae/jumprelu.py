"""JumpReLU SAE (Rajamanoharan et al., 2024, "Jumping ahead: improving reconstruction fidelity
with JumpReLU sparse autoencoders").

``f = z ⊙ H(z − θ)`` with ``z = (x − b_dec) W_enc + b_enc`` and a learned per-feature threshold
``θ = exp(log_threshold)``. The loss is ``‖x − x̂‖² + λ Σ_i H(z_i − θ_i)`` (an L0 penalty). The
Heaviside step has no useful gradient, so θ is trained with the paper's straight-through
estimator, a rectangle kernel ``K(u) = 1[|u| < ½]`` of bandwidth ε on the pre-activation:

- JumpReLU: ``∂f/∂z = H(z − θ)``, ``∂f/∂θ = −(θ/ε) K((z − θ)/ε)``;
- Step (the L0 term): ``∂H/∂z = 0``, ``∂H/∂θ = −(1/ε) K((z − θ)/ε)``.

Decoder rows are kept at unit norm.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from interplab.sae.base import SparseAutoencoder, TrainingLoss, register

__all__ = ["JumpReLUSAE", "jumprelu", "step"]


def _rectangle(u: torch.Tensor) -> torch.Tensor:
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, threshold, bandwidth):
        ctx.save_for_backward(z, threshold)
        ctx.bandwidth = bandwidth
        return z * (z > threshold).to(z.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        z, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_z = (z > threshold).to(z.dtype) * grad_out
        grad_t = -(threshold / eps) * _rectangle((z - threshold) / eps) * grad_out
        return grad_z, grad_t.sum(0), None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, threshold, bandwidth):
        ctx.save_for_backward(z, threshold)
        ctx.bandwidth = bandwidth
        return (z > threshold).to(z.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        z, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_t = -(1.0 / eps) * _rectangle((z - threshold) / eps) * grad_out
        return torch.zeros_like(z), grad_t.sum(0), None


def jumprelu(z: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """JumpReLU with the straight-through threshold gradient; ``z [batch, d_sae]``."""
    return _JumpReLU.apply(z, threshold, bandwidth)


def step(z: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """Heaviside ``H(z − θ)`` with the straight-through threshold gradient."""
    return _Step.apply(z, threshold, bandwidth)


@register("jumprelu")
class JumpReLUSAE(SparseAutoencoder):
    """JumpReLU SAE with an L0 penalty."""

    def __init__(self, config):
        super().__init__(config)
        self.log_threshold = nn.Parameter(
            torch.full((config.d_sae,), math.log(config.jumprelu_init_threshold))
        )

    @property
    def threshold(self) -> torch.Tensor:
        return self.log_threshold.exp()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        z = self.pre_activations(x)
        return torch.where(z > self.threshold, z, torch.zeros_like(z))

    def training_loss(self, x, sparsity_scale, dead_mask):
        z = self.pre_activations(x)
        theta = self.threshold
        eps = self.config.jumprelu_bandwidth
        feats = jumprelu(z, theta, eps)
        x_hat = self.decode(feats)
        mse = self.reconstruction_error(x, x_hat)
        l0 = step(z, theta, eps).sum(-1).mean()
        lam = self.config.sparsity_coefficient * sparsity_scale
        return TrainingLoss(mse + lam * l0, x_hat, feats, {"mse": mse, "l0": l0})
