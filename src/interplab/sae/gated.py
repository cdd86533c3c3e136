"""Gated SAE (Rajamanoharan et al., 2024, "Improving dictionary learning with gated SAEs").

A gate decides *which* features fire, a magnitude path *how much*, with tied weights:
``π_gate = (x − b_dec) W_enc + b_gate``, ``W_mag = W_enc ⊙ exp(r_mag)``,
``f = 1[π_gate > 0] ⊙ ReLU((x − b_dec) W_mag + b_mag)``.
Loss: ``‖x − x̂‖² + λ ‖ReLU(π_gate) ⊙ ‖W_dec‖‖₁ + ‖x − x̂_frozen(ReLU(π_gate))‖²`` where the last
(auxiliary) term decodes the gate activations through a gradient-stopped copy of the decoder.
The decoder rows are kept at unit norm.
"""

from __future__ import annotations

import torch
from torch import nn

from interplab.sae.base import SparseAutoencoder, TrainingLoss, register

__all__ = ["GatedSAE"]


@register("gated")
class GatedSAE(SparseAutoencoder):
    """Gated SAE; ``b_enc`` is unused (kept zero), the gate bias is ``b_gate``."""

    def __init__(self, config):
        super().__init__(config)
        self.b_gate = nn.Parameter(torch.zeros(config.d_sae))
        self.r_mag = nn.Parameter(torch.zeros(config.d_sae))
        self.b_mag = nn.Parameter(torch.zeros(config.d_sae))
        self.b_enc.requires_grad_(False)

    def _paths(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xc = x - self.b_dec
        pi_gate = self._mm(xc, self.W_enc) + self.b_gate
        pi_mag = self._mm(xc, self.W_enc * torch.exp(self.r_mag)) + self.b_mag
        return pi_gate, pi_mag

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pi_gate, pi_mag = self._paths(x)
        return (pi_gate > 0).to(pi_mag.dtype) * torch.relu(pi_mag)

    def training_loss(self, x, sparsity_scale, dead_mask):
        pi_gate, pi_mag = self._paths(x)
        feats = (pi_gate > 0).to(pi_mag.dtype) * torch.relu(pi_mag)
        x_hat = self.decode(feats)
        mse = self.reconstruction_error(x, x_hat)
        gate_acts = torch.relu(pi_gate)
        sparsity = (gate_acts * self.W_dec.norm(dim=-1)).sum(-1).mean()
        x_hat_gate = self._mm(gate_acts, self.W_dec.detach()) + self.b_dec.detach()
        aux = self.reconstruction_error(x, x_hat_gate)
        lam = self.config.sparsity_coefficient * sparsity_scale
        return TrainingLoss(mse + lam * sparsity + aux, x_hat, feats,
                            {"mse": mse, "l1": sparsity, "aux": aux})

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        return self._paths(x)[0]
