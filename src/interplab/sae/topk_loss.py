"""The TopK-family training loss as one autograd function with a hand-written sparse backward.

A TopK (or BatchTopK) SAE step touches only the few latents each token keeps, yet autograd of the
textbook expressions pays for the whole ``[batch, d_sae]`` pre-activation matrix three more times:
a dense decoder product, the dense gradient of the features and the dense encoder-weight product
``(x − b_dec)ᵀ ∂L/∂pre``. Here only the encoder's forward product is dense. Every other term is a
sum over the kept (token, latent) pairs, which are listed once as flat arrays sorted by token:

- the reconstruction ``x̂ = Σ_j v_j W_dec[c_j] + b_dec`` and the aux-k reconstruction ``ê`` are
  ``embedding_bag`` sums over the kept rows of ``W_dec`` (one bag per token, ``2·batch`` bags
  with the auxiliary loss);
- ``∂L/∂v_j = g[bag_j] · W_dec[c_j]`` (the per-sample-weight gradient of the same bag sum);
- the weight gradients group the pairs by latent (one stable sort) and sum again with
  ``embedding_bag``: ``∂L/∂W_dec[c] = Σ_{j: c_j = c} v_j g[bag_j]`` and
  ``∂L/∂W_encᵀ[c] = Σ_{j: c_j = c} ∂L/∂pre_j (x − b_dec)[token_j]``;
- ``∂L/∂b_enc`` is a scatter-add over the pairs and ``∂L/∂b_dec`` takes the encoder part as one
  matrix-vector product, as in the fused ReLU loss.

So a step costs one ``[batch, d_in] × [d_in, d_sae]`` product, the selection, and
O(pairs · d_in) gathers and sums. The selection runs on the product's output in the matrix-product
dtype; the kept values are then recomputed in the master dtype from the same pairs (a dot product
each), so under bf16 products only *which* latents are kept can differ from fp32 — the values,
the reconstruction, the losses and every gradient are computed in fp32.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from interplab.sae.base import Workspace

__all__ = ["ActivePairs", "sparse_topk_loss", "topk_pairs", "batch_topk_pairs", "sparse_threads"]


# CPU threads for the sparse part of the step (None: torch's setting). Its operations are many
# and small: with two threads each ends at a barrier where, on a shared machine, one thread
# waits for the other to be scheduled again; one thread makes them cheaper there (measured in
# docs/benchmarks.md, section 2b). torch's thread count is process-wide: it is lowered for the
# block and restored after it.
SPARSE_THREADS: int | None = 1


@contextmanager
def sparse_threads(device: torch.device) -> Iterator[None]:
    """Run the block on :data:`SPARSE_THREADS` CPU threads (restored after; no-op off CPU)."""
    n = torch.get_num_threads()
    if device.type != "cpu" or SPARSE_THREADS is None or n <= SPARSE_THREADS:
        yield
        return
    torch.set_num_threads(SPARSE_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _argsort_small(cols: torch.Tensor, bound: int) -> torch.Tensor:
    """Stable argsort of indices in ``[0, bound)``, sorted as the narrowest integer type that
    holds them (on CPU, sorting int16 keys is about ten times faster than int64)."""
    if bound <= torch.iinfo(torch.int16).max:
        cols = cols.to(torch.int16)
    elif bound <= torch.iinfo(torch.int32).max:
        cols = cols.to(torch.int32)
    return torch.sort(cols, stable=True).indices


@dataclass
class ActivePairs:
    """The kept (token, latent) pairs of one batch, sorted by token.

    ``cols [n]`` latent index of each pair, ``rows [n]`` its token, ``offsets [batch]`` where
    each token's pairs start in ``cols``, ``shape`` = (batch, d_sae), ``vals [n]`` the values:
    pre-activations as a selection returns them, kept activations (after ReLU) as
    :func:`sparse_topk_loss` returns them (a pair whose pre-activation is ≤ 0 carries 0 and gets
    no gradient).
    """

    cols: torch.Tensor
    rows: torch.Tensor
    offsets: torch.Tensor
    shape: tuple[int, int]
    vals: torch.Tensor | None = None

    def dense(self) -> torch.Tensor:
        """The ``[batch, d_sae]`` feature matrix these pairs describe."""
        out = torch.zeros(self.shape, dtype=self.vals.dtype, device=self.vals.device)
        return out.index_put_((self.rows, self.cols), self.vals, accumulate=True)


def topk_pairs(pre: torch.Tensor, k: int) -> ActivePairs:
    """Per-token TopK of ``ReLU(pre)``: the ``k`` largest entries of each row of ``pre``.

    ReLU is monotone, so the top ``k`` of ``ReLU(pre)`` are the top ``k`` of ``pre`` (a row with
    fewer than ``k`` positive entries keeps some non-positive ones, which carry 0)."""
    n = pre.shape[0]
    vals, idx = pre.topk(k, dim=-1, sorted=False)
    rows = torch.arange(n, device=pre.device).repeat_interleave(k)
    offsets = torch.arange(0, n * k, k, device=pre.device)
    return ActivePairs(idx.reshape(-1), rows, offsets, (n, pre.shape[1]), vals.reshape(-1))


# BatchTopK first takes this many candidates per token (× k), then the batch's best among them.
BATCH_TOPK_CANDIDATES = 4


def batch_topk_pairs(pre: torch.Tensor, k: int, candidates: int = BATCH_TOPK_CANDIDATES
                     ) -> ActivePairs:
    """BatchTopK of ``ReLU(pre)``: the ``k · batch`` largest entries of the whole batch.

    A flat top-k over ``batch · d_sae`` entries runs on one core; instead each row offers its
    ``candidates · k`` largest entries (in parallel over rows) and the batch's largest are chosen
    among those. A row that had a candidate left out holds nothing larger outside its
    candidates, so its part of the choice is exact. A row whose every candidate was chosen
    (saturated) may hold more: the smallest chosen candidate θ is at most the batch's threshold
    (the candidates are a subset of the batch), so its entries ≥ θ join the other rows' chosen
    candidates and a top-k over that pool decides. Non-positive entries are dropped (their
    activation is 0 either way)."""
    n, d_sae = pre.shape
    n_keep = min(k * n, pre.numel())
    m = min(d_sae, candidates * k)
    cand_vals, cand_idx = pre.topk(m, dim=-1, sorted=False)  # [n, m]
    best = cand_vals.reshape(-1).topk(n_keep, sorted=False)
    keep = torch.zeros(n * m, dtype=torch.bool, device=pre.device)
    keep[best.indices] = True
    keep = keep.view(n, m)
    saturated = keep.all(-1).nonzero().squeeze(-1) if m < d_sae else keep.new_zeros(0)
    if saturated.numel() == 0:
        keep &= cand_vals > 0
        r, j = keep.nonzero(as_tuple=True)  # row-major: sorted by token
        rows, cols, vals = r, cand_idx[r, j], cand_vals[r, j]
    else:
        keep[saturated] = False
        r, j = keep.nonzero(as_tuple=True)
        sub = pre.index_select(0, saturated)  # [n_saturated, d_sae]
        sr, sc = (sub >= best.values.min()).nonzero(as_tuple=True)
        rows = torch.cat([r, saturated[sr]])
        cols = torch.cat([cand_idx[r, j], sc])
        vals = torch.cat([cand_vals[r, j], sub[sr, sc]])
        chosen = vals.topk(min(n_keep, vals.numel()), sorted=False).indices
        chosen = chosen[vals[chosen] > 0]
        chosen = chosen[_argsort_small(rows[chosen], n)]  # sorted by token
        rows, cols, vals = rows[chosen], cols[chosen], vals[chosen]
    counts = torch.bincount(rows, minlength=n)
    return ActivePairs(cols, rows, counts.cumsum(0) - counts, (n, d_sae), vals)


def _pair_dots(a: torch.Tensor, b: torch.Tensor, cols: torch.Tensor, rows: torch.Tensor
               ) -> torch.Tensor:
    """``[n]``: ``a[rows_j] · b[cols_j]`` for every pair ``j``, without an ``[n, d]`` gather
    (the kernel of ``embedding_bag``'s per-sample-weight gradient, which reads bags from
    ``rows``; its offsets argument is then unused)."""
    return torch.ops.aten._embedding_bag_per_sample_weights_backward(
        a, b, cols, rows, rows, 0, -1)


def _aux_pairs(pre: torch.Tensor, dead_mask: torch.Tensor | None, aux_k: int
               ) -> ActivePairs | None:
    """The aux-k pairs: per token the ``aux_k`` largest pre-activations among dead latents
    (None when no latent is dead: the auxiliary loss is then exactly 0 and is skipped)."""
    if dead_mask is None:
        return None
    dead = dead_mask.nonzero().squeeze(-1)
    if dead.numel() == 0:
        return None
    aux_k = min(aux_k, int(dead.numel()))
    dead_pre = pre if dead.numel() == pre.shape[1] else pre.index_select(1, dead)
    p = topk_pairs(dead_pre, aux_k)
    p.cols = dead[p.cols]
    return p


class _SparseTopKLoss(torch.autograd.Function):
    """Forward and hand-written backward of ``mse`` and the aux-k loss (see the module doc).

    Inputs ``x [B, d]``, ``W_enc``, ``b_enc``, ``W_dec``, ``b_dec``, then (not differentiable) the
    selection ``select(pre) → ActivePairs``, the dead mask, ``aux_k``, the aux coefficient, the
    matrix-product dtype (None: the master dtype) and an optional :class:`Workspace`. Outputs
    ``mse = Σ_d (x̂ − x)² / B``, ``aux = α Σ_d (ê − e)² / B`` with ``e = x − x̂`` held constant
    (0 without dead latents), and, not differentiable, ``x̂``, the main pairs (values, latents,
    tokens, offsets) and the latents that fired.
    """

    @staticmethod
    def forward(ctx, x, W_enc, b_enc, W_dec, b_dec, select, dead_mask, aux_k, aux_coef, lo, ws):
        master = W_enc.dtype
        lo = lo or master
        n, d_sae = x.shape[0], W_enc.shape[1]
        xc = x - b_dec
        shape = (n, d_sae)
        pre = (torch.empty(shape, dtype=lo, device=x.device) if ws is None
               else ws.get("pre", shape, x, lo))
        torch.addmm(b_enc.to(lo), xc.to(lo), W_enc.to(lo), out=pre)
        main = select(pre)
        aux = _aux_pairs(pre, dead_mask, aux_k)
        with sparse_threads(x.device):
            n_main = main.cols.numel()
            # All pairs, main then aux: one bag per token for x̂ − b_dec, then one per token for ê.
            if aux is None:
                cols, rows, offsets, bags = main.cols, main.rows, main.offsets, main.rows
            else:
                cols = torch.cat([main.cols, aux.cols])
                rows = torch.cat([main.rows, aux.rows])
                offsets = torch.cat([main.offsets, aux.offsets + n_main])
                bags = torch.cat([main.rows, aux.rows + n])
            if lo == master:  # the selection's own values
                vals = (main.vals if aux is None else torch.cat([main.vals, aux.vals])).relu()
            else:  # recomputed in the master dtype: (x − b_dec)[row] · W_enc[:, col] + b_enc[col]
                W_enc_t = W_enc.t().contiguous()  # [d_sae, d]: the rows the pairs read
                vals = (_pair_dots(xc, W_enc_t, cols, rows) + b_enc[cols]).relu_()
            out = F.embedding_bag(cols, W_dec, offsets, per_sample_weights=vals, mode="sum")
            x_hat = out[:n] + b_dec
            err = x_hat - x
            mse = err.pow(2).sum() / n
            if aux is None:
                aux_err = None
                aux_loss = torch.zeros((), dtype=master, device=x.device)
            else:
                aux_err = out[n:] + err  # ê − e with e = x − x̂ (held constant)
                aux_loss = aux_coef * aux_err.pow(2).sum() / n
            main_vals = vals[:n_main]
            fired = torch.bincount(main.cols[main_vals > 0], minlength=d_sae) > 0
        ctx.save_for_backward(xc, W_enc, W_dec, err, aux_err, cols, bags, offsets, vals)
        ctx.aux_coef, ctx.d_sae = aux_coef, d_sae
        ctx.set_materialize_grads(False)
        ctx.mark_non_differentiable(x_hat, main_vals, main.cols, main.rows, main.offsets, fired)
        return mse, aux_loss, x_hat, main_vals, main.cols, main.rows, main.offsets, fired

    @staticmethod
    def backward(ctx, g_mse, g_aux, *_):
        xc, W_enc, W_dec, err, aux_err, cols, bags, offsets, vals = ctx.saved_tensors
        with sparse_threads(xc.device):
            return _sparse_backward(ctx, g_mse, g_aux, xc, W_enc, W_dec, err, aux_err, cols, bags,
                                    offsets, vals)


def _sparse_backward(ctx, g_mse, g_aux, xc, W_enc, W_dec, err, aux_err, cols, bags, offsets,
                     vals):
    """The gradients of :class:`_SparseTopKLoss` (see the module doc for each term)."""
    n, d_sae = xc.shape[0], ctx.d_sae
    zero = torch.zeros((), dtype=xc.dtype, device=xc.device)
    g_mse = zero if g_mse is None else g_mse
    g = [err * (2 * g_mse / n)]  # ∂L/∂x̂, [B, d]
    if aux_err is not None:
        g_aux = zero if g_aux is None else g_aux
        g.append(aux_err * (2 * g_aux * ctx.aux_coef / n))  # ∂L/∂ê
    g_bags = torch.cat(g) if len(g) > 1 else g[0]  # [bags, d]
    # ∂L/∂v_j, then through the ReLU: ∂L/∂pre_j (0 where the kept value is 0).
    g_pre = _pair_dots(g_bags, W_dec, cols, bags) * (vals > 0)
    # Group the pairs by latent: one bag per latent, summing over its tokens.
    order = _argsort_small(cols, d_sae)
    counts = torch.bincount(cols, minlength=d_sae)
    by_latent = counts.cumsum(0) - counts
    c_bags = bags[order]
    grad_W_dec = F.embedding_bag(c_bags, g_bags, by_latent, per_sample_weights=vals[order],
                                 mode="sum")
    grad_W_enc = F.embedding_bag(c_bags % n, xc, by_latent, per_sample_weights=g_pre[order],
                                 mode="sum").t().contiguous()  # the parameter's layout
    grad_b_enc = torch.zeros(d_sae, dtype=xc.dtype, device=xc.device).index_add_(0, cols, g_pre)
    grad_b_dec = g[0].sum(0) - W_enc @ grad_b_enc
    grad_x = None
    if ctx.needs_input_grad[0]:
        gx = F.embedding_bag(cols, W_enc.t().contiguous(), offsets, per_sample_weights=g_pre,
                             mode="sum")
        grad_x = gx[:n] + (gx[n:] if gx.shape[0] > n else 0) - g[0]
    return (grad_x, grad_W_enc, grad_b_enc, grad_W_dec, grad_b_dec,
            None, None, None, None, None, None)


def sparse_topk_loss(
    x: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor,
    b_dec: torch.Tensor, select: Callable[[torch.Tensor], ActivePairs], *,
    dead_mask: torch.Tensor | None, aux_k: int, aux_coefficient: float,
    matmul_dtype: torch.dtype | None = None, workspace: Workspace | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, ActivePairs]:
    """``(mse, aux, x̂, pairs, fired)`` of a TopK-family SAE on ``x [B, d_in]``.

    ``select(pre [B, d_sae]) → ActivePairs`` picks the kept pairs (:func:`topk_pairs`,
    :func:`batch_topk_pairs`); ``dead_mask [d_sae]`` flags the latents the aux-k loss uses
    (``aux_k`` per token, weight ``aux_coefficient``); ``pairs.vals`` holds the kept activations,
    ``fired [d_sae]`` flags the latents active on at least one token.
    ``mse`` and ``aux`` are differentiable with respect to ``x`` and the four parameters.
    """
    mse, aux, x_hat, vals, cols, rows, offsets, fired = _SparseTopKLoss.apply(
        x, W_enc, b_enc, W_dec, b_dec, select, dead_mask, aux_k, aux_coefficient, matmul_dtype,
        workspace)
    pairs = ActivePairs(cols, rows, offsets, (x.shape[0], W_enc.shape[1]), vals)
    return mse, aux, x_hat, pairs, fired
