"""Named hook points on Hugging Face decoder models.

We expose the community names (``blocks.{i}.hook_resid_pre``, ``hook_resid_post``, ``hook_attn_out``,
``hook_mlp_out``) and attach PyTorch hooks to the matching Hugging Face modules underneath:

==================  ==========================================================================
``hook_resid_pre``  input of decoder block i (for block 0: token + position embeddings)
``hook_resid_post`` output of decoder block i, *before* the model's final norm
``hook_attn_out``   what block i adds to the residual stream from attention
``hook_mlp_out``    what block i adds to the residual stream from its MLP
==================  ==========================================================================

One more hook point is per attention head: ``blocks.{i}.attn.hook_z``, the input of block i's
attention output projection (``o_proj``, GPT-2's ``c_proj``, NeoX's ``dense``), i.e. every head's
output concatenated, ``[batch, seq, n_heads * d_head]``; head h is features
``h * d_head : (h + 1) * d_head``.

For models with "sandwich" norms (Gemma 2/3), ``attn_out``/``mlp_out`` are read after the
post-attention / post-feed-forward norms, since that is what is added to the residual stream; so
``resid_post == resid_pre + attn_out + mlp_out`` holds for every supported layout (NeoX's parallel
residual included).

A name is parsed once, where it enters (the CLI, a study config, a public function), into a
:class:`HookPoint`; everything below passes that object on. :func:`resolve_hooks` is the one
validation of a list of hook points against a model.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import total_ordering
from typing import TYPE_CHECKING

import torch
from torch import nn

from interplab.errors import InterplabError

if TYPE_CHECKING:
    from interplab.models.language_model import LanguageModel

# The residual-stream kinds (d_model wide) in the order they fire within a block.
KINDS = ("resid_pre", "attn_out", "mlp_out", "resid_post")
HOOK_KINDS = tuple(f"hook_{k}" for k in KINDS)
# Per-head kinds, named blocks.<layer>.attn.hook_<kind>.
HEAD_KINDS = ("z",)
_ORDER = ("resid_pre", "z", "attn_out", "mlp_out", "resid_post")  # firing order within a block
_HOOK_RE = re.compile(r"^blocks\.(\d+)\.(attn\.)?hook_(\w+)$")
_FORMS = ("'blocks.<layer>.hook_<kind>' with <kind> one of "
          + ", ".join(KINDS) + " (e.g. 'blocks.0.hook_resid_post'), or 'blocks.<layer>.attn.hook_z' "
          "(per-head attention outputs)")


class HookNameError(InterplabError):
    """A hook name that does not parse, or names a block the model does not have."""


@total_ordering
@dataclass(frozen=True)
class HookPoint:
    """A hook point: block index ``layer`` and ``kind`` (``resid_pre``, ``attn_out``,
    ``mlp_out``, ``resid_post``).

    Hook points sort in forward order: by layer, then by the order the kinds fire within a block.
    ``HookPoint.parse("blocks.3.hook_mlp_out") == HookPoint.mlp_out(3)``; ``.name`` gives the
    name back.
    """

    layer: int
    kind: str

    def __post_init__(self) -> None:
        if isinstance(self.layer, bool) or not isinstance(self.layer, int) or self.layer < 0:
            raise HookNameError(f"a hook point's layer must be a non-negative integer, not "
                                f"{self.layer!r}")
        if self.kind not in _ORDER:
            raise HookNameError(f"unknown hook kind {self.kind!r}; the kinds are {', '.join(_ORDER)}")

    @classmethod
    def parse(cls, name: str | HookPoint) -> HookPoint:
        """``blocks.<layer>.hook_<kind>`` (surrounding spaces ignored) → ``HookPoint``.

        A ``HookPoint`` is returned as is. Whether the layer exists depends on the model: see
        :func:`resolve_hooks`.
        """
        if isinstance(name, HookPoint):
            return name
        if not isinstance(name, str):
            raise HookNameError(f"a hook point is a name such as 'blocks.0.hook_resid_post' or a "
                                f"HookPoint, not a {type(name).__name__} ({name!r})")
        m = _HOOK_RE.match(name.strip())
        if m is None or m.group(3) not in (HEAD_KINDS if m.group(2) else KINDS):
            raise HookNameError(f"unknown hook point {name!r}; hook names look like {_FORMS}")
        return cls(int(m.group(1)), m.group(3))

    @classmethod
    def resid_pre(cls, layer: int) -> HookPoint:
        """The input of block ``layer``."""
        return cls(layer, "resid_pre")

    @classmethod
    def attn_out(cls, layer: int) -> HookPoint:
        """What block ``layer`` adds to the residual stream from attention."""
        return cls(layer, "attn_out")

    @classmethod
    def mlp_out(cls, layer: int) -> HookPoint:
        """What block ``layer`` adds to the residual stream from its MLP."""
        return cls(layer, "mlp_out")

    @classmethod
    def resid_post(cls, layer: int) -> HookPoint:
        """The output of block ``layer`` (before the model's final norm)."""
        return cls(layer, "resid_post")

    @classmethod
    def z(cls, layer: int) -> HookPoint:
        """Every attention head's output of block ``layer``, before the output projection."""
        return cls(layer, "z")

    @property
    def per_head(self) -> bool:
        """Whether the activation is split into heads (``[..., n_heads * d_head]``)."""
        return self.kind in HEAD_KINDS

    @property
    def name(self) -> str:
        """The TransformerLens-style name, ``blocks.{layer}.hook_{kind}`` (per-head kinds:
        ``blocks.{layer}.attn.hook_{kind}``)."""
        if self.per_head:
            return f"blocks.{self.layer}.attn.hook_{self.kind}"
        return f"blocks.{self.layer}.hook_{self.kind}"

    def __str__(self) -> str:
        return self.name

    def _key(self) -> tuple[int, int]:
        return self.layer, _ORDER.index(self.kind)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, HookPoint):
            return NotImplemented
        return self._key() < other._key()


HookLike = str | HookPoint


def parse_hook(name: HookLike, n_layers: int) -> HookPoint:
    """Parse ``name`` and check that block ``layer`` exists in a model of ``n_layers`` blocks."""
    hp = HookPoint.parse(name)
    if hp.layer >= n_layers:
        raise HookNameError(
            f"layer {hp.layer} in hook {hp.name!r} is out of range: this model has {n_layers} "
            f"blocks, so layers run from 0 to {n_layers - 1}"
        )
    return hp


def resolve_hooks(hooks: HookLike | Iterable[HookLike], n_layers: int,
                  model: str = "this model") -> list[HookPoint]:
    """The one validation of requested hook points: each parsed and checked against a model of
    ``n_layers`` blocks, duplicates dropped, sorted in forward order.

    An empty list, a malformed name or a layer the model lacks raises :class:`HookNameError`
    naming the valid hook points of ``model``.
    """
    items = [hooks] if isinstance(hooks, (str, HookPoint)) else list(hooks)
    if not items:
        raise HookNameError("no hooks given; name at least one, e.g. 'blocks.0.hook_resid_post'")
    try:
        return sorted(set(parse_hook(h, n_layers) for h in items))
    except HookNameError as exc:
        raise HookNameError(
            f"{exc}. Valid hook points for {model}: blocks.0..{n_layers - 1}."
            "{" + ", ".join(HOOK_KINDS) + ", attn.hook_z}"
        ) from None


def hook_points(n_layers: int) -> list[HookPoint]:
    """Every residual-stream hook point of a model with ``n_layers`` blocks, in forward order
    (the per-head ``attn.hook_z`` points are not listed)."""
    return [HookPoint(i, k) for i in range(n_layers) for k in KINDS]


def hook_names(n_layers: int) -> list[str]:
    return [hp.name for hp in hook_points(n_layers)]


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


def _out_proj(block: nn.Module) -> nn.Module:
    """The attention output projection, whose input is every head's output."""
    for attr in ("self_attn", "attn", "attention"):
        attn = getattr(block, attr, None)
        for proj in ("o_proj", "c_proj", "dense"):
            if attn is not None and hasattr(attn, proj):
                return getattr(attn, proj)
    raise InterplabError(f"cannot find the attention output projection of block "
                         f"{type(block).__name__}; per-head hooks (attn.hook_z) need one")


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


def attach(lm: LanguageModel, hook: HookLike, fn: ActFn) -> torch.utils.hooks.RemovableHandle:
    """Attach ``fn`` at ``hook`` (a name or a :class:`HookPoint`); returns the handle that
    removes it."""
    hp = parse_hook(hook, lm.n_layers)
    block = lm.blocks[hp.layer]
    if hp.kind in ("resid_pre", "z"):
        target = block if hp.kind == "resid_pre" else _out_proj(block)

        def pre(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
            if args:
                new = fn(args[0])
                return None if new is None else ((new, *args[1:]), kwargs)
            new = fn(kwargs["hidden_states"])
            if new is None:
                return None
            return args, {**kwargs, "hidden_states": new}

        return target.register_forward_pre_hook(pre, with_kwargs=True)

    module = {
        "resid_post": block,
        "attn_out": _attn_module(block),
        "mlp_out": _mlp_module(block),
    }[hp.kind]

    def post(module: nn.Module, args: tuple, output: object) -> object:
        new = fn(_first(output))
        return None if new is None else _replace_first(output, new)

    return module.register_forward_hook(post)


@contextmanager
def edit_hooks(lm: LanguageModel, edits: Mapping[HookLike, ActFn]) -> Iterator[None]:
    """Within the block, replace the activation at each hook (name or :class:`HookPoint`) by
    ``fn(act)``.

    ``act`` is ``[batch, seq, d_model]``; ``fn`` returns a tensor of the same shape (or None to
    leave it unchanged). Hooks are removed on exit, also when the body raises.
    """
    points = [(lm.parse_hook(hook), fn) for hook, fn in edits.items()]  # all checked up front
    handles = []
    try:
        for hp, fn in points:
            handles.append(attach(lm, hp, fn))
        yield
    finally:
        for h in handles:
            h.remove()
