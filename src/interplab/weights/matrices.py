"""The weight matrices of each block, in ``y = W x`` orientation, with the norm scales that act
on their inputs or outputs.

=============  ===================================  ==========================================
kind           LLaMA family / GPT-2 / GPT-NeoX      reads from / writes to
=============  ===================================  ==========================================
``attn_out``   ``o_proj`` / ``attn.c_proj`` /       writes ``d_model`` (left singular vectors)
               ``attention.dense``
``mlp_in``     ``up_proj`` / ``c_fc`` /              reads ``d_model`` (right singular vectors)
               ``dense_h_to_4h``
``mlp_gate``   ``gate_proj`` (gated MLPs only)      reads ``d_model``
``mlp_out``    ``down_proj`` / ``mlp.c_proj`` /     writes ``d_model``
               ``dense_4h_to_h``
=============  ===================================  ==========================================

GPT-2's ``Conv1D`` stores ``[in, out]``; it is transposed here so every matrix is ``[out, in]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from interplab.errors import InterplabError

KINDS = ("attn_out", "mlp_in", "mlp_gate", "mlp_out")
WRITES = {"attn_out", "mlp_out"}  # the others read from the residual stream

_NAMES = {
    "attn_out": ("self_attn.o_proj", "attn.c_proj", "attention.dense"),
    "mlp_in": ("mlp.up_proj", "mlp.c_fc", "mlp.dense_h_to_4h"),
    "mlp_gate": ("mlp.gate_proj",),
    "mlp_out": ("mlp.down_proj", "mlp.c_proj", "mlp.dense_4h_to_h"),
}
_PRE_MLP_NORM = ("pre_feedforward_layernorm", "post_attention_layernorm", "ln_2")


@dataclass
class BlockMatrix:
    block: int
    kind: str
    weight: torch.Tensor  # [out, in], float64
    read_scale: torch.Tensor | None  # [d_model] norm gain applied to the residual before reading


def _get(module: nn.Module, dotted: str) -> nn.Module | None:
    for part in dotted.split("."):
        module = getattr(module, part, None)  # type: ignore[assignment]
        if module is None:
            return None
    return module


def _oriented(module: nn.Module) -> torch.Tensor:
    w = module.weight.detach().to(torch.float64)
    return w.T.contiguous() if type(module).__name__ == "Conv1D" else w


def _gain(block: nn.Module) -> torch.Tensor | None:
    for name in _PRE_MLP_NORM:
        norm = getattr(block, name, None)
        if norm is not None and getattr(norm, "weight", None) is not None:
            return norm.weight.detach().to(torch.float64)
    return None


def block_matrices(lm: Any) -> list[BlockMatrix]:
    """Every block's ``attn_out``, ``mlp_in``, ``mlp_gate`` (if gated) and ``mlp_out`` matrix."""
    out = []
    for i, block in enumerate(lm.blocks):
        for kind in KINDS:
            module = next((m for n in _NAMES[kind] if (m := _get(block, n)) is not None), None)
            if module is None:
                if kind == "mlp_gate":
                    continue
                raise InterplabError(f"cannot find the {kind} matrix of block {i} "
                                     f"({type(block).__name__}); supported layouts: LLaMA family, "
                                     "GPT-2, GPT-NeoX")
            scale = _gain(block) if kind in ("mlp_in", "mlp_gate") else None
            out.append(BlockMatrix(i, kind, _oriented(module), scale))
    return out
