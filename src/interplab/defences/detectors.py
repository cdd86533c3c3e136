"""The defences as detectors behind one interface: a differentiable score per text, higher =
more likely unwanted.

- :class:`ProbeDetector` (HP): an affine probe on the frozen model's residual stream at one
  layer, pooled over the text (mean over scored tokens, or the last token).
- :class:`MLPDetector` (HP at matched parameter count): a one-hidden-layer MLP on the same
  frozen, pooled activations.
- :class:`RerouteDetector` (RR): how far the adapted model's representations moved from the
  unmodified model's, ``1 − cos(h, h_orig)`` averaged over the target layers and scored tokens.
- :class:`LoraProbeDetector` (LoRA + probe): a linear head on the adapted model's pooled
  residual stream at the head layer.

:func:`score_texts` scores many texts for several detectors with one unmodified pass and one pass
per adapter; :func:`score_inputs` is the differentiable path the attacks use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from interplab.defaults import DEFAULT_BATCH_SIZE
from interplab.defences.inputs import Inputs, chunks, pack, pool, residuals

__all__ = ["Detector", "LoraProbeDetector", "MLPDetector", "ProbeDetector", "RerouteDetector",
           "affine_of", "score_inputs", "score_texts"]


@dataclass
class Detector:
    """Base: ``name``, the adapter it runs with (None: the unmodified model), the layers it
    reads and whether it also needs the unmodified model's activations."""

    name: str
    adapter: str | None = None
    layers: list[int] = field(default_factory=list)
    needs_base: bool = False

    def score(self, reps: dict[int, torch.Tensor], base: dict[int, torch.Tensor] | None,
              inputs: Inputs) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def n_parameters(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError


def affine_of(decision, d: int) -> tuple[np.ndarray, float]:
    """``(w, b)`` with ``decision(X) == X @ w + b`` for an affine ``decision`` on ``[n, d]``."""
    at = decision(np.vstack([np.zeros((1, d)), np.eye(d)]))
    return np.asarray(at[1:] - at[0], dtype=np.float64), float(at[0])


@dataclass
class ProbeDetector(Detector):
    """``pool(h_layer) · w + b`` on the unmodified model."""

    layer: int = 0
    pooling: str = "mean"
    w: torch.Tensor | None = None
    b: float = 0.0

    def __post_init__(self) -> None:
        self.layers = [self.layer]

    def score(self, reps, base, inputs):
        x = pool(reps[self.layer], inputs, self.pooling)
        return x @ self.w.to(x) + self.b

    @property
    def n_parameters(self) -> int:
        return int(self.w.numel()) + 1


@dataclass
class MLPDetector(Detector):
    """``relu(((pool(h) − μ) / σ) W1 + b1) w2 + b2`` on the unmodified model."""

    layer: int = 0
    pooling: str = "mean"
    mu: torch.Tensor | None = None
    sigma: torch.Tensor | None = None
    W1: torch.Tensor | None = None
    b1: torch.Tensor | None = None
    w2: torch.Tensor | None = None
    b2: float = 0.0

    def __post_init__(self) -> None:
        self.layers = [self.layer]

    def score(self, reps, base, inputs):
        x = pool(reps[self.layer], inputs, self.pooling)
        z = (x - self.mu.to(x)) / self.sigma.to(x)
        return torch.relu(z @ self.W1.to(x) + self.b1.to(x)) @ self.w2.to(x) + self.b2

    @property
    def n_parameters(self) -> int:
        return int(self.W1.numel() + self.b1.numel() + self.w2.numel()) + 1


@dataclass
class RerouteDetector(Detector):
    """Mean over ``layers`` and scored tokens of ``1 − cos(h_adapted, h_orig)``."""

    n_adapter_parameters: int = 0

    def __post_init__(self) -> None:
        self.needs_base = True

    def score(self, reps, base, inputs):
        w = inputs.scored.to(reps[self.layers[0]].dtype)
        per_layer = []
        for layer in self.layers:
            cos = torch.nn.functional.cosine_similarity(reps[layer], base[layer], dim=-1)
            per_layer.append(((1 - cos) * w).sum(1) / w.sum(1).clamp(min=1.0))
        return torch.stack(per_layer).mean(0)

    @property
    def n_parameters(self) -> int:
        return self.n_adapter_parameters


@dataclass
class LoraProbeDetector(Detector):
    """``pool(h_adapted, layer) / scale · w + b``."""

    layer: int = 0
    pooling: str = "mean"
    scale: float = 1.0
    w: torch.Tensor | None = None
    b: torch.Tensor | None = None
    n_adapter_parameters: int = 0

    def __post_init__(self) -> None:
        self.layers = [self.layer]

    def score(self, reps, base, inputs):
        x = pool(reps[self.layer], inputs, self.pooling) / self.scale
        return x @ self.w.to(x) + self.b.to(x)

    @property
    def n_parameters(self) -> int:
        return self.n_adapter_parameters + int(self.w.numel()) + 1


def score_inputs(host, det: Detector, inputs: Inputs, embeds: torch.Tensor | None = None,
                 *, differentiated: bool = False) -> torch.Tensor:
    """``[b]`` scores of one batch under the caller's grad mode (differentiable in ``embeds``)."""
    lm = host.lm
    base = None
    if det.adapter is None:
        with host.disabled():
            reps = residuals(lm, inputs, det.layers, embeds, differentiated=differentiated)
    else:
        with host.active(det.adapter):
            reps = residuals(lm, inputs, det.layers, embeds, differentiated=differentiated)
    if det.needs_base:
        with host.disabled():
            base = residuals(lm, inputs, det.layers, embeds, differentiated=differentiated)
    return det.score(reps, base, inputs)


@torch.no_grad()
def score_texts(host, detectors: Sequence[Detector], token_lists: Sequence[Sequence[int]],
                batch_size: int = DEFAULT_BATCH_SIZE) -> dict[str, np.ndarray]:
    """Scores ``{detector name: [n]}``: one unmodified pass for all detectors that need one (at
    the union of their layers), one pass per adapter."""
    lm = host.lm
    base_layers = sorted({layer for d in detectors if d.adapter is None or d.needs_base
                          for layer in d.layers})
    adapters = {}
    for d in detectors:
        if d.adapter is not None:
            adapters.setdefault(d.adapter, set()).update(d.layers)
    out: dict[str, list[np.ndarray]] = {d.name: [] for d in detectors}
    for sl in chunks(len(token_lists), batch_size):
        inputs = pack(lm, token_lists[sl])
        base = None
        if base_layers:
            with host.disabled():
                base = residuals(lm, inputs, base_layers)
        adapted = {}
        for name, layers in adapters.items():
            with host.active(name):
                adapted[name] = residuals(lm, inputs, sorted(layers))
        for d in detectors:
            reps = base if d.adapter is None else adapted[d.adapter]
            out[d.name].append(d.score(reps, base, inputs).double().cpu().numpy())
    return {k: np.concatenate(v) for k, v in out.items()}
