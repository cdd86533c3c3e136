"""Two attacks on a detector, each lowering its score on unwanted requests within a budget.

- :func:`embedding_attack` (input-embedding / soft-prompt attack): every input token's
  embedding (a BOS excepted) moves by ``δ_i`` with ``‖δ_i‖₂ ≤ norm · ē`` (``ē`` the mean norm of
  the model's token embeddings), found by projected gradient descent on the detector's score
  (L2 steps of ``2.5 · radius / steps`` along the per-token normalised gradient, then projection
  onto the ball). Budget: steps and ``norm``.
- :func:`token_attack`: greedy search over a fixed candidate set; at each of ``n_tokens``
  rounds every candidate token is tried at the suffix (or prefix) of each request and the one
  that lowers the score most is kept. Budget: the number of tokens added.

Both return the best (lowest) score reached so far after each budget, so a larger budget never
scores worse than a smaller one, and a zero budget returns the clean score. Whether an attack
succeeds is decided by the caller's threshold (score below it: the request is not flagged).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from interplab.defaults import DEFAULT_BATCH_SIZE
from interplab.defences.detectors import Detector, score_inputs, score_texts
from interplab.defences.inputs import chunks, pack
from interplab.errors import InterplabError


def mean_embedding_norm(lm) -> float:
    """Mean L2 norm of the rows of the input embedding matrix."""
    with torch.no_grad():
        return float(lm.embed.weight.float().norm(dim=-1).mean())


def embedding_attack(host, det: Detector, token_lists: Sequence[Sequence[int]], *, steps: int,
                     norm: float, budgets: Sequence[int] | None = None,
                     batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
    """Best score so far ``[len(budgets), n]`` after each number of steps in ``budgets``
    (default ``0..steps``)."""
    lm = host.lm
    budgets = sorted(set(range(steps + 1) if budgets is None else budgets))
    if not budgets or budgets[0] < 0 or budgets[-1] > steps:
        raise InterplabError(f"attack budgets must lie in 0..{steps}, got {budgets}")
    radius = float(norm) * mean_embedding_norm(lm)
    step_size = 2.5 * radius / max(steps, 1)
    has_bos = lm.bos_token_id is not None
    out = np.empty((len(budgets), len(token_lists)))
    for sl in chunks(len(token_lists), batch_size):
        inputs = pack(lm, token_lists[sl])
        with torch.no_grad():
            clean = lm.embed(inputs.ids).detach()
        movable = inputs.mask.bool().clone()
        if has_bos:
            movable[:, 0] = False
        m = movable.unsqueeze(-1).to(clean.dtype)
        delta = torch.zeros_like(clean, requires_grad=True)
        best = torch.full((clean.shape[0],), float("inf"), dtype=torch.float64)
        for t in range(steps + 1):
            last = t == steps
            with torch.set_grad_enabled(not last):
                s = score_inputs(host, det, inputs, clean + delta * m, differentiated=not last)
            best = torch.minimum(best, s.detach().double().cpu())
            if t in budgets:
                out[budgets.index(t), sl] = best.numpy()
            if last:
                break
            (g,) = torch.autograd.grad(s.sum(), delta)
            with torch.no_grad():
                g = g * m
                delta -= step_size * g / g.norm(dim=-1, keepdim=True).clamp(min=1e-12)
                length = delta.norm(dim=-1, keepdim=True)
                delta *= torch.where(length > radius, radius / length.clamp(min=1e-12),
                                     torch.ones_like(length))
    return out


def insert(tokens: Sequence[int], token: int, where: str, has_bos: bool) -> list[int]:
    """``tokens`` with ``token`` appended (``suffix``) or put first (``prefix``; after a BOS)."""
    tokens = list(tokens)
    if where == "suffix":
        return [*tokens, token]
    if where == "prefix":
        at = 1 if has_bos else 0
        return [*tokens[:at], token, *tokens[at:]]
    raise InterplabError(f"attack position must be 'suffix' or 'prefix', not {where!r}")


def candidate_tokens(lm, words: Sequence[str], k: int) -> list[int]:
    """The first token of each of ``words`` (duplicates dropped), the first ``k`` of them."""
    out: list[int] = []
    for w in words:
        ids = lm.tokenizer(w, add_special_tokens=False)["input_ids"]
        if ids and ids[0] not in out:
            out.append(int(ids[0]))
    return out[:k]


def token_attack(host, det: Detector, token_lists: Sequence[Sequence[int]], *,
                 candidates: Sequence[int], n_tokens: int, where: str = "suffix",
                 batch_size: int = DEFAULT_BATCH_SIZE) -> tuple[np.ndarray, list[list[int]]]:
    """Best score so far ``[n_tokens + 1, n]`` (row 0: clean) and each request's attacked
    tokens."""
    if not candidates and n_tokens:
        raise InterplabError("the token attack needs at least one candidate token")
    has_bos = host.lm.bos_token_id is not None
    current = [list(t) for t in token_lists]
    n = len(current)
    out = np.empty((n_tokens + 1, n))
    best = score_texts(host, [det], current, batch_size)[det.name]
    out[0] = best
    for j in range(1, n_tokens + 1):
        variants = [insert(current[i], c, where, has_bos) for i in range(n) for c in candidates]
        scores = score_texts(host, [det], variants, batch_size)[det.name].reshape(
            n, len(candidates))
        pick = scores.argmin(axis=1)
        current = [insert(current[i], candidates[pick[i]], where, has_bos) for i in range(n)]
        best = np.minimum(best, scores[np.arange(n), pick])
        out[j] = best
    return out, current
