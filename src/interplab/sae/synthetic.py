"""Synthetic activations with and without sparse structure, and the false-positive baseline.

- :func:`sparse_dictionary_batches`: ``x = Σ_i c_i d_i`` over a few active features of a known
  dictionary ``D [n_features, d]`` of unit vectors — ground truth an SAE should recover.
- :func:`gaussian_mixture` and :func:`uniform_cube`: data with *no* sparse structure.
- :func:`false_positive_baseline`: train an SAE on a finite training set and report the training
  and held-out reconstruction side by side; an SAE that "finds features" in noise only memorises
  its training points, which shows up as a train/held-out gap.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from interplab.sae.base import SAEConfig
from interplab.sae.evaluate import evaluate_reconstruction
from interplab.sae.metrics import ReconstructionMetrics
from interplab.sae.trainer import SAETrainer, TrainerConfig

__all__ = [
    "random_dictionary",
    "sparse_dictionary_batches",
    "gaussian_mixture",
    "uniform_cube",
    "feature_recovery",
    "false_positive_baseline",
    "FalsePositiveBaseline",
]


def random_dictionary(n_features: int, d: int, seed: int = 0) -> torch.Tensor:
    """``[n_features, d]`` random unit vectors."""
    g = torch.Generator().manual_seed(seed)
    dic = torch.randn(n_features, d, generator=g)
    return dic / dic.norm(dim=-1, keepdim=True)


def sparse_dictionary_batches(
    dictionary: torch.Tensor, batch_size: int, n_batches: int, mean_active: float = 4.0,
    seed: int = 1,
) -> Iterator[torch.Tensor]:
    """Batches ``[batch_size, d]`` of sparse combinations: each feature is active independently
    with probability ``mean_active / n_features`` with a coefficient uniform in [0.5, 1.5]."""
    n_features = dictionary.shape[0]
    g = torch.Generator().manual_seed(seed)
    for _ in range(n_batches):
        active = torch.rand(batch_size, n_features, generator=g) < mean_active / n_features
        coef = (0.5 + torch.rand(batch_size, n_features, generator=g)) * active
        yield coef @ dictionary


def gaussian_mixture(n: int, d: int, n_components: int = 12, seed: int = 0) -> torch.Tensor:
    """``[n, d]`` points from a mixture of ``n_components`` isotropic Gaussians (unit spread,
    centres of norm ~3)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_components, d, generator=g)
    centres = 3 * centres / centres.norm(dim=-1, keepdim=True)
    comp = torch.randint(n_components, (n,), generator=g)
    return centres[comp] + torch.randn(n, d, generator=g) / d**0.5


def uniform_cube(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """``[n, d]`` points uniform in the cube [−1, 1]^d."""
    g = torch.Generator().manual_seed(seed)
    return 2 * torch.rand(n, d, generator=g) - 1


@torch.no_grad()
def feature_recovery(dictionary: torch.Tensor, W_dec: torch.Tensor) -> float:
    """Mean over true features of the max cosine similarity with a learned decoder row."""
    learned = W_dec / W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    true = dictionary / dictionary.norm(dim=-1, keepdim=True)
    return float((true @ learned.t()).max(1).values.mean())


@dataclass
class FalsePositiveBaseline:
    """Train and held-out reconstruction of one SAE, side by side."""

    train: ReconstructionMetrics
    held_out: ReconstructionMetrics
    n_train: int
    n_held_out: int

    @property
    def fve_gap(self) -> float:
        """Train FVE minus held-out FVE (large: the SAE fits its samples, not structure)."""
        return (self.train.fraction_of_variance_explained
                - self.held_out.fraction_of_variance_explained)

    def to_dict(self) -> dict:
        return {"train": self.train.to_dict(), "held_out": self.held_out.to_dict(),
                "n_train": self.n_train, "n_held_out": self.n_held_out, "fve_gap": self.fve_gap}


def false_positive_baseline(
    train: torch.Tensor, held_out: torch.Tensor, sae_config: SAEConfig,
    trainer_config: TrainerConfig, batch_size: int = 256,
) -> FalsePositiveBaseline:
    """Train ``sae_config`` for ``trainer_config.total_steps`` steps on epochs of ``train [n, d]``
    and evaluate it on ``train`` and ``held_out`` with the one metrics module."""

    def epochs() -> Iterator[torch.Tensor]:
        g = torch.Generator().manual_seed(trainer_config.seed)
        while True:
            perm = torch.randperm(train.shape[0], generator=g)
            yield from (train[idx] for idx in perm.split(batch_size))

    sae = SAETrainer([sae_config], trainer_config).fit(epochs()).finalized_saes()[0]
    return FalsePositiveBaseline(
        train=evaluate_reconstruction(sae, train.split(4096)),
        held_out=evaluate_reconstruction(sae, held_out.split(4096)),
        n_train=train.shape[0], n_held_out=held_out.shape[0],
    )
