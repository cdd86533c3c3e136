"""The narrow seam every SAE architecture implements, its config, and the architecture registry.

An architecture is a small ``nn.Module`` subclass of :class:`SparseAutoencoder` that overrides
``encode`` (features from inputs) and ``training_loss`` (reconstruction + sparsity + auxiliary
terms). The shared trainer only calls ``training_loss``, ``before_optimizer_step`` and
``after_optimizer_step``; it never branches on the architecture name.

Parameter layout (the SAELens convention, so exports are plain copies):
``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae, d_in]``, ``b_dec [d_in]``; a decoder
*column* in the issue's language is a row ``W_dec[i]`` here (the direction of feature ``i``).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from interplab.errors import InterplabError
from interplab.sae.config import (  # noqa: F401 - re-exported (their old home)
    RETIRED_CONFIG_FIELDS,
    SAEConfig,
    without_retired,
)

__all__ = [
    "SAEConfig",
    "SparseAutoencoder",
    "TrainingLoss",
    "Workspace",
    "REGISTRY",
    "register",
    "create_sae",
    "architectures",
]


@dataclass
class TrainingLoss:
    """What ``training_loss`` returns: the total to minimise and its parts (for the log).

    ``feats [batch, d_sae]`` may be left None by a loss that keeps only the active pairs
    (``active``, an :class:`~interplab.sae.topk_loss.ActivePairs`); :meth:`features` builds the
    dense matrix from them when it is needed (the log, every ``log_every_steps``).
    """

    loss: torch.Tensor
    x_hat: torch.Tensor  # [batch, d_in]
    feats: torch.Tensor | None  # [batch, d_sae]
    parts: dict[str, torch.Tensor]
    # [d_sae] bool, features that fired in this batch; None: the trainer reads ``feats != 0``.
    fired: torch.Tensor | None = None
    active: Any = None  # ActivePairs of the kept (token, latent) pairs, when feats is None

    def features(self) -> torch.Tensor:
        """The ``[batch, d_sae]`` feature matrix (built from ``active`` if not kept)."""
        if self.feats is None:
            self.feats = self.active.dense()
        return self.feats


class Workspace:
    """Scratch tensors reused from one training step to the next.

    A ``[batch, d_sae]`` tensor is tens of megabytes; the C allocator hands such blocks back to
    the operating system when freed, so a fresh one costs a page fault per 4 KiB on first touch —
    as much time as a bf16 matrix product of the same size. Reusing the block avoids that.
    Writing into a reused block bumps its autograd version counter, so a graph that still needs
    the old contents fails loudly on ``backward`` instead of computing wrong gradients.
    """

    def __init__(self) -> None:
        self._tensors: dict[tuple, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], like: torch.Tensor,
            dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised block ``name`` of this shape and dtype on ``like``'s device, reused
        across calls (one block per distinct name, shape, dtype and device)."""
        key = (name, tuple(shape), dtype, like.device)
        t = self._tensors.get(key)
        if t is None:
            t = self._tensors[key] = torch.empty(shape, dtype=dtype, device=like.device)
        return t

    def __deepcopy__(self, memo) -> Workspace:
        return Workspace()  # scratch contents are never state worth copying


REGISTRY: dict[str, type[SparseAutoencoder]] = {}


def register(name: str):
    """Class decorator adding an architecture to :data:`REGISTRY` under ``name``."""

    def deco(cls):
        cls.architecture = name
        REGISTRY[name] = cls
        return cls

    return deco


def architectures() -> list[str]:
    """Names of the registered architectures."""
    _import_all()
    return sorted(REGISTRY)


def _import_all() -> None:
    from interplab.sae import gated, jumprelu, relu, topk  # noqa: F401  (registration side effect)


def create_sae(config: SAEConfig, device: str | torch.device | None = None) -> SparseAutoencoder:
    """Instantiate the architecture named by ``config.architecture`` (validated); its initial
    weights depend on ``config.seed`` only (the global torch generator is not touched)."""
    _import_all()
    if config.architecture not in REGISTRY:
        raise InterplabError(
            f"unknown SAE architecture {config.architecture!r}; choose one of {sorted(REGISTRY)}"
        )
    if config.d_in <= 0 or config.d_sae <= 0:
        raise InterplabError(f"SAE dims must be positive, got d_in={config.d_in}, d_sae={config.d_sae}")
    sae = REGISTRY[config.architecture](config)
    if device is not None:
        sae.to(device)
    return sae


class SparseAutoencoder(nn.Module):
    """Base class: parameters, decode, and the seam (``encode``, ``training_loss``)."""

    architecture: ClassVar[str] = "base"
    unit_norm_decoder: ClassVar[bool] = True  # keep ‖W_dec[i]‖ = 1 during training

    def __init__(self, config: SAEConfig):
        super().__init__()
        self.config = config
        d_in, d_sae = config.d_in, config.d_sae
        # Decoder rows random unit vectors; encoder initialised as the transpose (common practice).
        # Drawn from a generator of its own: the weights follow config.seed alone, and the global
        # torch generator (a user's own stream) is left as it was.
        w_dec = torch.randn(d_sae, d_in, generator=torch.Generator().manual_seed(config.seed))
        w_dec = w_dec / w_dec.norm(dim=-1, keepdim=True)
        self.W_dec = nn.Parameter(w_dec)
        self.W_enc = nn.Parameter(w_dec.t().clone())
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        # bf16 autocast for the matrix products (fp32 master weights stay in the parameters).
        self.matmul_dtype: torch.dtype | None = None
        # Scratch blocks reused between training steps (set by the trainer):
        # tensors a step returns may then be overwritten by the next step.
        self.workspace: Workspace | None = None

    # -- the seam ---------------------------------------------------------------------------
    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """``(x − b_dec) W_enc + b_enc``: ``[batch, d_in] → [batch, d_sae]``.

        With ``matmul_dtype`` set, the result stays in that dtype: the ``[batch, d_sae]`` feature
        tensor is the largest in a step, and element-wise work on it in fp32 would cost more than
        the bf16 products save. Reductions over it (penalties, metrics) accumulate in fp32+.
        """
        if self.matmul_dtype is None:
            return (x - self.b_dec) @ self.W_enc + self.b_enc
        lo = self.matmul_dtype
        return (x - self.b_dec).to(lo) @ self.W_enc.to(lo) + self.b_enc.to(lo)

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Features ``[batch, d_sae]`` (non-negative) for inputs ``[batch, d_in]``."""
        raise NotImplementedError

    def training_loss(
        self, x: torch.Tensor, sparsity_scale: float, dead_mask: torch.Tensor | None
    ) -> TrainingLoss:  # pragma: no cover - abstract
        """Loss on one batch. ``sparsity_scale`` ∈ [0, 1] is the warm-up factor on λ;
        ``dead_mask [d_sae]`` flags features that have not fired recently (for aux losses)."""
        raise NotImplementedError

    # -- shared pieces ----------------------------------------------------------------------
    def _mm(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.matmul_dtype is None:
            return a @ b
        return (a.to(self.matmul_dtype) @ b.to(self.matmul_dtype)).to(a.dtype)

    def decode(self, feats: torch.Tensor) -> torch.Tensor:
        """``feats W_dec + b_dec``: ``[batch, d_sae] → [batch, d_in]``."""
        return self._mm(feats, self.W_dec) + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``x̂`` of ``x`` (any leading shape, last dim ``d_in``)."""
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        return self.decode(self.encode(flat)).reshape(shape)

    def reconstruction_error(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        """Σ_d (x − x̂)² averaged over the batch (the training MSE, same definition as metrics)."""
        return (x_hat - x).pow(2).sum(-1).mean()

    def update_threads(self) -> AbstractContextManager:
        """The CPU threads the trainer's update (decoder projection, Adam, bookkeeping) runs
        with: torch's setting here; an architecture whose update is mostly small operations may
        run it on one thread (see :mod:`interplab.sae.topk_loss`)."""
        return nullcontext()

    @torch.no_grad()
    def before_optimizer_step(self) -> None:
        """Remove the gradient component parallel to each decoder row (unit-norm variants)."""
        if self.unit_norm_decoder and self.W_dec.grad is not None:
            w = self.W_dec / self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            parallel = (self.W_dec.grad * w).sum(-1, keepdim=True)
            self.W_dec.grad -= parallel * w

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """Project decoder rows back to unit norm (unit-norm variants)."""
        if self.unit_norm_decoder:
            self.W_dec /= self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    @torch.no_grad()
    def fold_input_scale(self, scale: float) -> None:
        """Make an SAE trained on ``x·scale`` act on raw ``x``: same features, raw-scale output.

        With ``x' = scale·x`` the trained map is ``x̂' = D(E(x'))``. We rescale so that
        ``encode(x)`` equals the old ``encode(scale·x)`` and ``decode`` returns ``x̂'/scale``.
        """
        self.W_enc *= scale
        self.b_dec /= scale
        self.W_dec /= scale
        self._fold_extra(scale)

    def _fold_extra(self, scale: float) -> None:
        """Architecture-specific parameters touched by :meth:`fold_input_scale`."""

    def extra_state_tensors(self) -> dict[str, torch.Tensor]:
        """Buffers beyond the parameters that define the SAE (e.g. a learned threshold)."""
        return {}

    @property
    def d_in(self) -> int:
        return self.config.d_in

    @property
    def d_sae(self) -> int:
        return self.config.d_sae
