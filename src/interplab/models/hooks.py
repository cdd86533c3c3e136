"""Named hook points on Hugging Face decoder models.

We expose the community names (``blocks.{i}.hook_resid_pre``, ``hook_resid_post``, ``hook_attn_out``,
``hook_mlp_out``) and attach PyTorch hooks to the matching Hugging Face modules underneath:

==================  ==========================================================================
``hook_resid_pre``  input of decoder block i (for block 0: token + position embeddings)
``hook_resid_post`` output of decoder block i, *before* the model's final norm
``hook_attn_out``   what block i adds to the residual stream from attention
``hook_mlp_out``    what block i adds to the residual stream from its MLP
==================  ==========================================================================

For models with "sandwich" norms (Gemma 2/3), ``attn_out``/``mlp_out`` are read after the
post-attention / post-feed-forward norms, since that is what is added to the residual stream; so
``resid_post == resid_pre + attn_out + mlp_out`` holds for every supported layout (NeoX's parallel
residual included).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from interplab.errors import InterplabError

if TYPE_CHECKING:
    from interplab.models.language_model import LanguageModel

HOOK_KINDS = ("hook_resid_pre", "hook_resid_post", "hook_attn_out", "hook_mlp_out")
_HOOK_RE = re.compile(r"^blocks\.(\d+)\.(hook_resid_pre|hook_resid_post|hook_attn_out|hook_mlp_out)$")


@dataclass(frozen=True)
class HookPoint:
    """A parsed hook name: block index and kind."""

    layer: int
    kind: str

    @property
    def name(self) -> str:
        return f"blocks.{self.layer}.{self.kind}"


def parse_hook(name: str, n_layers: int) -> HookPoint:
    """Parse and validate a hook name such as ``blocks.15.hook_resid_post``."""
    m = _HOOK_RE.match(name.strip()) if isinstance(name, str) else None
    if m is None:
        raise InterplabError(
            f"unknown hook point {name!r}; hook names look like 'blocks.<layer>.<kind>' with kind one "
            f"of {', '.join(HOOK_KINDS)} and layer in 0..{n_layers - 1} (e.g. 'blocks.0.hook_resid_post')"
        )
    layer = int(m.group(1))
    if not 0 <= layer < n_layers:
        raise InterplabError(
            f"layer {layer} in hook {name!r} is out of range: this model has {n_layers} blocks, "
            f"so layers run from 0 to {n_layers - 1}"
        )
    return HookPoint(layer, m.group(2))


def hook_names(n_layers: int) -> list[str]:
    return [f"blocks.{i}.{k}" for i in range(n_layers) for k in HOOK_KINDS]


# ---------------------------------------------------------------------------- module lookup


def find_layout(hf: nn.Module) -> tuple[str, nn.Module, nn.ModuleList, nn.Module]:
    """Return (architecture family, base model, decoder blocks, final norm) of a causal LM."""
    for attr, family in (("model", "llama"), ("transformer", "gpt2"), ("gpt_neox", "neox")):
        base = getattr(hf, attr, None)
        if base is None:
            continue
        blocks = getattr(base, "layers", None) or getattr(base, "h", None)
        norm = (
            getattr(base, "norm", None)
            or getattr(base, "ln_f", None)
            or getattr(base, "final_layer_norm", None)
        )
        if isinstance(blocks, nn.ModuleList) and norm is not None:
            return family, base, blocks, norm
    raise InterplabError(
        f"unsupported model layout {type(hf).__name__}: interplab names hook points on LLaMA-family "
        "(LLaMA, Qwen2, Gemma, Mistral), GPT-2 and GPT-NeoX layouts"
    )


def _attn_module(block: nn.Module) -> nn.Module:
    # Sandwich-norm blocks (Gemma 2/3) normalise the attention output before adding it.
    if hasattr(block, "post_feedforward_layernorm") and hasattr(block, "post_attention_layernorm"):
        return block.post_attention_layernorm
    for attr in ("self_attn", "attn", "attention"):
        if hasattr(block, attr):
            return getattr(block, attr)
    raise InterplabError(f"cannot find the attention module of block {type(block).__name__}")


def _mlp_module(block: nn.Module) -> nn.Module:
    if hasattr(block, "post_feedforward_layernorm"):
        return block.post_feedforward_layernorm
    if hasattr(block, "mlp"):
        return block.mlp
    raise InterplabError(f"cannot find the MLP module of block {type(block).__name__}")


def _first(output: object) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output  # type: ignore[return-value]


def _replace_first(output: object, new: torch.Tensor) -> object:
    if isinstance(output, tuple):
        return (new, *output[1:])
    return new


# An ``ActFn`` receives the activation ``[batch, seq, d_model]``; it returns None to leave it
# unchanged (read-only hooks) or a tensor of the same shape to replace it.
ActFn = Callable[[torch.Tensor], "torch.Tensor | None"]


def attach(lm: LanguageModel, name: str, fn: ActFn) -> torch.utils.hooks.RemovableHandle:
    """Attach ``fn`` at hook point ``name``; returns the handle that removes it."""
    hp = parse_hook(name, lm.n_layers)
    block = lm.blocks[hp.layer]
    if hp.kind == "hook_resid_pre":

        def pre(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
            if args:
                new = fn(args[0])
                return None if new is None else ((new, *args[1:]), kwargs)
            new = fn(kwargs["hidden_states"])
            if new is None:
                return None
            return args, {**kwargs, "hidden_states": new}

        return block.register_forward_pre_hook(pre, with_kwargs=True)

    module = {
        "hook_resid_post": block,
        "hook_attn_out": _attn_module(block),
        "hook_mlp_out": _mlp_module(block),
    }[hp.kind]

    def post(module: nn.Module, args: tuple, output: object) -> object:
        new = fn(_first(output))
        return None if new is None else _replace_first(output, new)

    return module.register_forward_hook(post)


@contextmanager
def edit_hooks(lm: LanguageModel, edits: Mapping[str, ActFn]) -> Iterator[None]:
    """Within the block, replace the activation at each named hook by ``fn(act)``.

    ``act`` is ``[batch, seq, d_model]``; ``fn`` returns a tensor of the same shape (or None to
    leave it unchanged). Hooks are removed on exit, also when the body raises.
    """
    for name in edits:
        parse_hook(name, lm.n_layers)
    handles = []
    try:
        for name, fn in edits.items():
            handles.append(attach(lm, name, fn))
        yield
    finally:
        for h in handles:
            h.remove()
