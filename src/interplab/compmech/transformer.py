"""A small GPT in plain PyTorch, for next-symbol prediction on sequences from a process.

Pre-LayerNorm blocks (attention, then MLP, each added to the residual stream), learned token and
position embeddings, a final LayerNorm and an untied unembedding. ``forward(tokens,
return_residuals=True)`` also returns the residual stream after the embedding and after every block,
named with the TransformerLens convention (``blocks.0.hook_resid_pre``,
``blocks.{i}.hook_resid_post``).

Saved as ``model.safetensors`` + ``config.json`` (never pickle): see :func:`save_model` and
:func:`load_model`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from interplab.compmech.config import GPTConfig
from interplab.errors import InterplabError
from interplab.fileio import atomic_write_safetensors, atomic_write_text


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, T, d]
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        # [B, heads, T, d_head]
        q, k, v = (z.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.up = nn.Linear(cfg.d_model, cfg.d_mlp)
        self.down = nn.Linear(cfg.d_mlp, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        norm = nn.LayerNorm if cfg.layer_norm else nn.Identity
        self.ln1, self.ln2 = norm(cfg.d_model), norm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Decoder-only transformer; ``forward(tokens [B, T]) -> logits [B, T, vocab]``."""

    def __init__(self, cfg: GPTConfig, seed: int | None = None) -> None:
        """``seed``: initial weights as drawn after ``torch.manual_seed(seed)``, with the global
        torch generator restored afterwards (a caller's own stream is not disturbed); ``None``:
        drawn from the global generator, as any torch module is."""
        super().__init__()
        self.cfg = cfg
        if seed is None:
            self._build(cfg)
            return
        with torch.random.fork_rng(devices=[]):  # module constructors draw from the global one
            torch.manual_seed(seed)
            self._build(cfg)

    def _build(self, cfg: GPTConfig) -> None:
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model) if cfg.layer_norm else nn.Identity()
        self.unembed = nn.Linear(cfg.d_model, cfg.vocab_size, bias=True)
        self.apply(self._init_weights)
        # GPT-2 scaling: residual-writing projections shrink with depth.
        for name, p in self.named_parameters():
            if name.endswith(("attn.out.weight", "mlp.down.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    @property
    def device(self) -> torch.device:
        return self.tok_emb.weight.device

    def forward(
        self, tokens: torch.Tensor, return_residuals: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits ``[B, T, vocab]``; with ``return_residuals`` also a list of ``n_layers + 1``
        residual-stream tensors ``[B, T, d_model]`` (after the embedding, then after each block)."""
        if tokens.ndim != 2:
            raise InterplabError(f"tokens must be [batch, positions]; got shape {tuple(tokens.shape)}")
        t = tokens.shape[1]
        if t > self.cfg.context_length:
            raise InterplabError(
                f"{t} positions exceed the model's context_length {self.cfg.context_length}"
            )
        pos = torch.arange(t, device=tokens.device)
        x = self.tok_emb(tokens) + self.pos_emb(pos)
        resid = [x] if return_residuals else []
        for block in self.blocks:
            x = block(x)
            if return_residuals:
                resid.append(x)
        logits = self.unembed(self.ln_f(x))
        return (logits, resid) if return_residuals else logits

    @torch.no_grad()
    def residuals(self, tokens: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        """``[n_layers + 1, B, T, d_model]`` float32 residual stream on CPU, computed in batches."""
        was_training = self.training
        self.eval()
        out = []
        for s in range(0, tokens.shape[0], batch_size):
            _, res = self(tokens[s : s + batch_size].to(self.device), return_residuals=True)
            out.append(torch.stack(res).float().cpu())
        self.train(was_training)
        return torch.cat(out, dim=1)


def save_model(model: GPT, folder: str | Path, extra: dict | None = None) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (plus ``extra`` metadata) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_safetensors(folder / "model.safetensors", state)  # never half a checkpoint
    meta = {"gpt_config": asdict(model.cfg), **(extra or {})}
    atomic_write_text(folder / "config.json", json.dumps(meta, indent=2))
    return folder


def load_model(folder: str | Path, device: str | torch.device = "cpu") -> GPT:
    """Load a model written by :func:`save_model`."""
    folder = Path(folder)
    if not (folder / "model.safetensors").is_file() or not (folder / "config.json").is_file():
        raise InterplabError(
            f"{str(folder)!r} is not a saved model folder (needs model.safetensors and config.json)"
        )
    meta = json.loads((folder / "config.json").read_text())
    names = {f.name for f in fields(GPTConfig)}
    cfg = GPTConfig(**{k: v for k, v in meta["gpt_config"].items() if k in names})
    model = GPT(cfg)
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    return model.to(device)
