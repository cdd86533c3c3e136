"""LoRA adapters (``peft``) on a model's blocks 0..L: several named adapters, one active at a time.

RR and LoRA + probe get *the same* adapters: the same linear layers (every ``nn.Linear`` /
GPT-2 ``Conv1D`` inside blocks 0..L), rank, alpha and initialisation (``A`` drawn under the
training seed, ``B = 0``, so every adapter starts as the identity). ``peft`` wraps the model's
linear layers in place: with an adapter active every forward pass of ``lm`` (harvests and hooks
included) runs through it, and :meth:`AdapterHost.disabled` runs the unmodified model.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from interplab.errors import InterplabError


def adapted_modules(lm, layers: Sequence[int]) -> list[str]:
    """Full names of the linear layers inside blocks ``layers`` of ``lm``."""
    from transformers.pytorch_utils import Conv1D

    names = {id(m): n for n, m in lm.hf.named_modules()}
    out = []
    for layer in sorted(set(layers)):
        if not 0 <= layer < lm.n_layers:
            raise InterplabError(f"block {layer} does not exist: the model has blocks "
                                 f"0-{lm.n_layers - 1}")
        prefix = names[id(lm.blocks[layer])]
        for n, m in lm.blocks[layer].named_modules():
            parts = n.split(".")
            if any(p.startswith("lora_") or p == "base_layer" for p in parts):
                continue  # inside a layer an earlier host wrapped: the wrapper is the target
            if isinstance(m, nn.Linear | Conv1D) or _is_lora_layer(m):
                out.append(f"{prefix}.{n}")
    if not out:
        raise InterplabError("the adapted blocks hold no linear layers to put LoRA adapters on")
    return out


def _is_lora_layer(module: nn.Module) -> bool:
    from peft.tuners.lora import LoraLayer

    return isinstance(module, LoraLayer)


class AdapterHost:
    """Named LoRA adapters on blocks ``0..max(layers)`` of ``lm`` (modified in place)."""

    def __init__(self, lm, layers: Sequence[int], rank: int, lora_alpha: float) -> None:
        self.lm = lm
        self.layers = list(range(max(layers) + 1))
        self.targets = adapted_modules(lm, self.layers)
        self.rank, self.lora_alpha = int(rank), float(lora_alpha)
        self.model = None
        self.names: list[str] = []

    def _config(self):
        from peft import LoraConfig

        return LoraConfig(r=self.rank, lora_alpha=self.lora_alpha, lora_dropout=0.0,
                          target_modules=list(self.targets), bias="none")

    def add(self, name: str, seed: int) -> None:
        """Add adapter ``name`` initialised under ``seed`` (the same seed, the same weights)."""
        from peft import get_peft_model

        if not name or "." in name:
            raise InterplabError(f"adapter name {name!r} must be non-empty and without '.'")
        existing = getattr(getattr(self.lm, "_peft_model", None), "peft_config", {})
        if name in self.names or name in existing:
            raise InterplabError(f"adapter {name!r} exists already on this model")
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.manual_seed(int(seed))
            if self.model is None:
                # One peft wrapper per model: a second host on the same model adds to it.
                self.model = getattr(self.lm, "_peft_model", None)
            if self.model is None:
                self.model = get_peft_model(self.lm.hf, self._config(), adapter_name=name)
                self.lm._peft_model = self.model
            else:
                self.model.add_adapter(name, self._config())
        self.names.append(name)
        self.model.set_adapter(name)
        self.lm.hf.eval()

    def parameters(self, name: str) -> dict[str, nn.Parameter]:
        """Adapter ``name``'s parameters by a name that does not mention the adapter."""
        if name not in self.names:
            raise InterplabError(f"no adapter {name!r}")
        tag = f".{name}."
        return {n.replace(tag, "."): p for n, p in self.model.named_parameters()
                if tag in n and "lora_" in n}

    def n_parameters(self, name: str) -> int:
        return sum(p.numel() for p in self.parameters(name).values())

    @contextlib.contextmanager
    def active(self, name: str) -> Iterator[None]:
        """Run with adapter ``name`` (only its parameters require gradients)."""
        if name not in self.names:
            raise InterplabError(f"no adapter {name!r}")
        self.model.set_adapter(name)
        yield

    @contextlib.contextmanager
    def disabled(self) -> Iterator[None]:
        """Run the unmodified model."""
        model = self.model or getattr(self.lm, "_peft_model", None)
        if model is None:
            yield
            return
        with model.disable_adapter():
            yield

    @contextlib.contextmanager
    def merged(self, name: str) -> Iterator[None]:
        """Adapter ``name`` merged into the base weights (as it would ship), unmerged on exit."""
        with self.active(name):
            self.model.merge_adapter()
            try:
                yield
            finally:
                self.model.unmerge_adapter()

    def state(self, name: str) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.parameters(name).items()}

    def load_state(self, name: str, tensors: dict[str, torch.Tensor]) -> None:
        params = self.parameters(name)
        if set(params) != set(tensors):
            raise InterplabError(f"adapter {name!r}: a checkpoint holds other tensors than the "
                                 "adapter has; it was written for another configuration")
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(tensors[n])
