"""SAEs spliced into a model's forward pass, each with an error node, so the spliced model
computes exactly what the model computes.

At every spliced hook the activation ``x`` (``[batch, seq, d]``) is written as

    x = dec(f) + ε,   f = enc(x) (the SAE's latents),   ε = x − dec(f) (the error node),

and the hook passes ``dec(f) + ε`` on. Unedited, that is ``x`` up to float rounding, so
attributions and ablations describe the model itself, not the SAE's reconstruction of it.

Two conventions say what an edit upstream does to a hook downstream of it (``errors=``):

* ``"recompute"`` (default): every hook re-encodes its own input; the error node follows the
  input, so a hook passes its input on unchanged and the spliced model *is* the model under any
  upstream edit. Nothing discontinuous lies between a latent and the metric.
* ``"frozen"``: a downstream hook's error node keeps the value it had on the unedited prompt and
  only its latents follow the input (``dec(enc(x')) + ε``). This is the graph in which sparse
  feature circuits draw edges between latents: an upstream change reaches the metric through the
  downstream SAE's encoder, jumps (TopK, JumpReLU, gated) included.

Position 0 and massive-norm tokens (:class:`~interplab.activations.exclusion.ExclusionRule`) are
outside every SAE's domain (they were left out of its training): they are never nodes, never
ablated, and the ``frozen`` convention leaves them as the model computes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from interplab.activations.exclusion import ExclusionRule
from interplab.errors import InterplabError
from interplab.models import LanguageModel, edit_hooks
from interplab.sae.base import SparseAutoencoder

ERRORS = ("recompute", "frozen")


@dataclass
class SaeSet:
    """SAEs at hooks of one model, in forward order; ``exclusion`` names the tokens outside
    their domain. Build with :func:`sae_set`."""

    saes: dict[str, SparseAutoencoder]
    exclusion: ExclusionRule = field(default_factory=ExclusionRule)

    @property
    def hooks(self) -> list[str]:
        return list(self.saes)

    def __getitem__(self, hook: str) -> SparseAutoencoder:
        return self.saes[hook]

    def width(self, hook: str) -> int:
        return int(self.saes[hook].d_sae)

    def encode(self, hook: str, x: torch.Tensor) -> torch.Tensor:
        """Latents ``[..., d_sae]`` of ``x [..., d]`` (float32)."""
        sae = self.saes[hook]
        flat = x.reshape(-1, x.shape[-1]).to(sae.W_enc.dtype)
        return sae.encode(flat).reshape(*x.shape[:-1], sae.d_sae)

    def decode(self, hook: str, f: torch.Tensor) -> torch.Tensor:
        sae = self.saes[hook]
        flat = f.reshape(-1, f.shape[-1])
        return sae.decode(flat).reshape(*f.shape[:-1], sae.d_in)

    def split(self, hook: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f, ε)`` with ``x = dec(f) + ε``."""
        f = self.encode(hook, x)
        return f, x.float() - self.decode(hook, f)

    def keep_mask(self, x: torch.Tensor, lengths: torch.Tensor, start: torch.Tensor | None = None
                  ) -> torch.Tensor:
        """``[b, w]`` True at the ordinary tokens of each row of ``x [b, w, d]`` (its own tokens,
        not position 0, not massive-norm) — the tokens the SAEs act on."""
        b, w = x.shape[:2]
        col = torch.arange(w, device=x.device)[None].expand(b, w)
        st = torch.zeros(b, dtype=torch.long, device=x.device) if start is None else start.to(x.device)
        pos = col - st[:, None]
        real = (pos >= 0) & (pos < lengths.to(x.device)[:, None])
        return self.exclusion.keep_mask(x.detach(), pos.clamp_min(0), candidates=real)


def sae_set(lm: LanguageModel, saes: Mapping[str, SparseAutoencoder],
            exclusion: ExclusionRule | None = None) -> SaeSet:
    """Check ``saes`` (hook name → SAE) against ``lm`` and order them by the forward pass; the SAEs
    are put in eval mode (BatchTopK then uses its learned threshold, not the batch's top k)."""
    if not saes:
        raise InterplabError("no SAEs given; pass at least one hook → SAE")
    points = lm.resolve_hooks(list(saes))
    if len(points) != len(saes):
        raise InterplabError(f"two SAEs name the same hook ({list(saes)}); give one SAE per hook")
    by_name = {lm.parse_hook(h).name: s for h, s in saes.items()}
    out = {}
    for hp in points:
        sae = by_name[hp.name]
        if hp.kind not in ("resid_pre", "resid_post", "attn_out", "mlp_out"):
            raise InterplabError(f"an SAE at {hp.name} is not supported; splice SAEs at "
                                 "resid_pre, resid_post, attn_out or mlp_out hooks")
        if sae.d_in != lm.d_model:
            raise InterplabError(f"the SAE for {hp.name} takes d_in={sae.d_in} but {lm.name} has "
                                 f"d_model={lm.d_model}; use an SAE trained on this model")
        sae.eval()
        out[hp.name] = sae
    return SaeSet(out, exclusion if exclusion is not None else ExclusionRule())


def spliced_edits(saes: SaeSet) -> dict:
    """Hook edits that splice every SAE in with its error node and change nothing else:
    ``x → dec(enc(x)) + (x − dec(enc(x)))``."""

    def fn(hook: str):
        def splice(act: torch.Tensor) -> torch.Tensor:
            f, err = saes.split(hook, act)
            return (saes.decode(hook, f) + err).to(act.dtype)
        return splice

    return {h: fn(h) for h in saes.hooks}


def spliced(lm: LanguageModel, saes: SaeSet):
    """Context manager: ``lm`` runs with every SAE of ``saes`` spliced in (with error nodes)."""
    return edit_hooks(lm, spliced_edits(saes))
