"""Per block: the spectrum of each weight matrix against the random-matrix null, and what its top
singular directions read from or write to, in tokens.

A writing matrix's left singular vector ``u`` (in ``d_model``) is read out through the final
norm's gain and the unembedding: ``W_U (γ_final ⊙ u)`` are its direct logit contributions. A
reading matrix's right singular vector ``v`` is carried back through the pre-MLP norm's gain
(``γ ⊙ v`` is what it reads from the residual stream) and compared with every token's input
embedding (rows scaled to unit RMS, as the norm would). Singular vectors have no sign, so both
ends are listed. These are direct paths only: what later blocks do with a direction is not seen.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from interplab.weights.matrices import WRITES, BlockMatrix, block_matrices
from interplab.weights.spectrum import entry_std, mp_edges, mp_threshold, shuffled_top


def _vocab_maps(lm: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(unembed·γ_final [V, d], embed / rms [V, d])`` in float64."""
    unembed = lm.unembed.detach().to(torch.float64)
    gain = getattr(lm.final_norm, "weight", None)
    if gain is not None:
        unembed = unembed * gain.detach().to(torch.float64)
    embed = lm.embed.weight.detach().to(torch.float64)
    embed = embed / embed.pow(2).mean(1, keepdim=True).sqrt().clamp_min(1e-12)
    return unembed, embed


def _tokens(lm: Any, scores: torch.Tensor, k: int) -> tuple[list[str], list[str]]:
    top = torch.topk(scores, k).indices.tolist()
    bottom = torch.topk(-scores, k).indices.tolist()
    decode = lm.tokenizer.decode
    return [decode([i]) for i in top], [decode([i]) for i in bottom]


def analyse_matrix(lm: Any, bm: BlockMatrix, vocab: tuple[torch.Tensor, torch.Tensor], *,
                   top_directions: int, top_tokens: int, seed: int) -> dict[str, Any]:
    """The spectrum of one matrix, its null and its top directions in tokens."""
    w = bm.weight
    m, n = w.shape
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    sigma = entry_std(w)
    lower, upper = mp_edges(m, n, sigma)
    threshold = mp_threshold(m, n, sigma)
    sv = s.numpy()
    directions = []
    for i in range(min(top_directions, len(sv))):
        if bm.kind in WRITES:
            scores = vocab[0] @ u[:, i]
        else:
            read = vh[i] * bm.read_scale if bm.read_scale is not None else vh[i]
            scores = vocab[1] @ read
        plus, minus = _tokens(lm, scores, top_tokens)
        directions.append({"index": i, "s": float(sv[i]), "above": bool(sv[i] > threshold),
                           "plus": plus, "minus": minus})
    shuffled = shuffled_top(w, seed)
    return {"block": bm.block, "kind": bm.kind, "shape": [m, n], "sigma": sigma,
            "mp_lower": lower, "mp_upper": upper, "threshold": threshold,
            "n_above": int((sv > threshold).sum()), "n_singular": int(len(sv)),
            # Heavy-tailed entries can push a shuffled matrix past the edge; this count needs both.
            "n_above_both": int((sv > max(threshold, shuffled)).sum()),
            "singular_values": sv.tolist(), "shuffled_top": shuffled,
            "space": "unembedding" if bm.kind in WRITES else "embedding",
            "directions": directions}


def analyse_weights(lm: Any, *, top_directions: int = 3, top_tokens: int = 8,
                    seed: int = 0) -> list[dict[str, Any]]:
    """:func:`analyse_matrix` for every block matrix of ``lm`` (see :mod:`.matrices`)."""
    vocab = _vocab_maps(lm)
    with torch.no_grad():
        return [analyse_matrix(lm, bm, vocab, top_directions=top_directions,
                               top_tokens=top_tokens, seed=seed) for bm in block_matrices(lm)]


def spectrum_difference(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> float:
    """Largest relative difference between matching spectra of two analyses (0 when the
    singular values are identical, as for a network whose matrices were column-permuted)."""
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        sx, sy = np.asarray(x["singular_values"]), np.asarray(y["singular_values"])
        worst = max(worst, float(np.max(np.abs(sx - sy)) / max(sx.max(), 1e-300)))
    return worst
