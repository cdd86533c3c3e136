"""How a worker process gets the model: a small, picklable description it loads itself."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ModelSpec"]


@dataclass(frozen=True)
class ModelSpec:
    """The arguments of :func:`interplab.models.load`, sent to workers instead of the weights.

    Every node loads the model from its own files (the embedded package, an HF folder or a
    ``.gguf`` on shared storage), so nothing the size of the model crosses the network; the
    harvest checks that each worker's weights hash to the driver's.
    """

    spec: str
    device: str | None = None
    dtype: str = "float32"
    seed: int = 0  # for the tiny in-process test models

    def load(self):
        import torch

        from interplab.models import load

        return load(self.spec, device=self.device, dtype=getattr(torch, self.dtype),
                    seed=self.seed)

    def __str__(self) -> str:
        return self.spec
