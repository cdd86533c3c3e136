"""`LanguageModel`: a Hugging Face causal LM, its tokenizer and its named hook points."""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from interplab.errors import InterplabError
from interplab.models.hooks import (
    HookLike,
    HookPoint,
    find_layout,
    hook_names,
    hook_points,
    resolve_hooks,
)

_VOLATILE_CONFIG_KEYS = {"_name_or_path", "transformers_version", "dtype", "torch_dtype",
                         "quantization_config", "_attn_implementation_autoset", "architectures"}


@dataclass
class LanguageModel:
    """A causal LM ready for harvesting and interventions.

    ``hf`` is the transformers model (in eval mode), ``tokenizer`` its tokenizer with a pad token
    set. ``name`` identifies the weights (registry name or path); ``variant`` marks derived copies
    such as weight-permuted controls.
    """

    hf: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    source: str = ""
    variant: str = "original"
    extra_identity: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.hf.eval()
        if self.tokenizer.pad_token_id is None:
            # Padding is always masked, so any existing token serves; EOS is the convention.
            if self.tokenizer.eos_token is not None:
                self.tokenizer.pad_token = self.tokenizer.eos_token
            else:
                self.tokenizer.add_special_tokens({"pad_token": "<pad>"})
        self.family, self.base, self.blocks, self.final_norm = find_layout(self.hf)

    # ------------------------------------------------------------------ shape facts
    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    @property
    def d_model(self) -> int:
        cfg = self.hf.config
        return int(getattr(cfg, "hidden_size", None) or cfg.n_embd)

    @property
    def n_heads(self) -> int:
        """Attention heads per block (query heads)."""
        cfg = self.hf.config
        return int(getattr(cfg, "num_attention_heads", None) or cfg.n_head)

    @property
    def n_ctx(self) -> int:
        """Longest sequence (in tokens) the model's position scheme supports."""
        cfg = self.hf.config
        return int(getattr(cfg, "max_position_embeddings", None) or cfg.n_positions)

    @property
    def device(self) -> torch.device:
        return next(self.hf.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf.parameters()).dtype

    @property
    def unembed(self) -> torch.Tensor:
        """The output projection, ``[vocab, d_model]``."""
        return self.hf.get_output_embeddings().weight

    @property
    def embed(self) -> nn.Embedding:
        return self.hf.get_input_embeddings()

    @cached_property
    def bos_token_id(self) -> int | None:
        """The BOS id if the tokenizer prepends one to every text, else None."""
        bos = self.tokenizer.bos_token_id
        if bos is None:
            return None
        ids = self.tokenizer("a")["input_ids"]
        return bos if ids and ids[0] == bos else None

    # ------------------------------------------------------------------ hook points
    @property
    def hook_names(self) -> list[str]:
        return hook_names(self.n_layers)

    @property
    def hook_points(self) -> list[HookPoint]:
        """Every hook point of this model, in forward order."""
        return hook_points(self.n_layers)

    def parse_hook(self, hook: HookLike) -> HookPoint:
        """Parse and validate one hook; an unknown one raises an error listing the valid ones."""
        return resolve_hooks([hook], self.n_layers, self.name)[0]

    def resolve_hooks(self, hooks: HookLike | Iterable[HookLike]) -> list[HookPoint]:
        """Hook names or points for this model: parsed, checked, de-duplicated, in forward order
        (:func:`interplab.models.hooks.resolve_hooks`)."""
        return resolve_hooks(hooks, self.n_layers, self.name)

    # ------------------------------------------------------------------ identity
    def identity(self) -> dict[str, Any]:
        """What makes activations from this model comparable: name, variant, config hash."""
        cfg = {k: v for k, v in self.hf.config.to_dict().items() if k not in _VOLATILE_CONFIG_KEYS}
        blob = json.dumps(cfg, sort_keys=True, default=str).encode()
        return {
            "name": self.name,
            "variant": self.variant,
            "architecture": type(self.hf).__name__,
            "n_layers": self.n_layers,
            "d_model": self.d_model,
            "config_sha256": hashlib.sha256(blob).hexdigest(),
            **self.extra_identity,
        }

    # ------------------------------------------------------------------ tokenisation
    def tokenize(
        self,
        texts: list[str],
        *,
        max_length: int | None = None,
        truncation: str = "warn",
    ) -> list[list[int]]:
        """Token ids per text (with BOS if the tokenizer adds one), truncated to the context.

        ``truncation`` is ``"warn"`` (keep the first ``max_length`` tokens and warn) or ``"error"``.
        """
        if truncation not in ("warn", "error"):
            raise InterplabError(f"truncation must be 'warn' or 'error', not {truncation!r}")
        limit = min(max_length or self.n_ctx, self.n_ctx)
        ids = self.tokenizer(list(texts), add_special_tokens=True)["input_ids"]
        too_long = [i for i, t in enumerate(ids) if len(t) > limit]
        if too_long:
            msg = (
                f"{len(too_long)} text(s) exceed {limit} tokens (first: text {too_long[0]} with "
                f"{len(ids[too_long[0]])} tokens)"
            )
            if truncation == "error":
                raise InterplabError(msg + "; shorten them or allow truncation")
            warnings.warn(msg + f"; keeping their first {limit} tokens", stacklevel=2)
            ids = [t[:limit] for t in ids]
        empty = [i for i, t in enumerate(ids) if len(t) == 0]
        if empty:
            raise InterplabError(
                f"text {empty[0]} tokenises to no tokens ({len(empty)} such texts); remove empty texts"
            )
        return ids

    def to(self, device: str | torch.device) -> LanguageModel:
        self.hf.to(device)
        return self

    def __repr__(self) -> str:
        return (
            f"LanguageModel({self.name!r}, {type(self.hf).__name__}, n_layers={self.n_layers}, "
            f"d_model={self.d_model}, device={self.device}, variant={self.variant!r})"
        )
