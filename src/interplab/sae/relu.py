"""ReLU SAEs with the decoder bias subtracted from the input.

Two variants of the same encoder ``f = ReLU((x − b_dec) W_enc + b_enc)``:

- ``relu``: decoder rows constrained to unit norm (the gradient component parallel to each row
  is removed before the step, rows re-normalised after it); loss ``‖x − x̂‖² + λ Σ_i f_i``.
- ``relu_decnorm``: unconstrained decoder, L1 weighted by decoder norms (Anthropic, April 2024
  update); loss ``‖x − x̂‖² + λ Σ_i f_i ‖W_dec[i]‖``.

Dead features are handled by resampling (:func:`resample_dead_features`, called by the trainer).
"""

from __future__ import annotations

import torch

from interplab.sae.base import SparseAutoencoder, TrainingLoss, Workspace, register

__all__ = ["ReLUSAE", "ReLUDecoderNormSAE", "resample_dead_features"]


@register("relu")
class ReLUSAE(SparseAutoencoder):
    """ReLU SAE, unit-norm decoder rows, plain L1 penalty."""

    resample_dead = True

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.pre_activations(x))

    def l1_weights(self) -> torch.Tensor | None:
        """Per-feature weights of the L1 penalty (None: every feature weighs 1)."""
        return None

    def training_loss(self, x, sparsity_scale, dead_mask):
        mse, l1, x_hat, feats, col = _FusedReLULoss.apply(
            x, self.W_enc, self.b_enc, self.W_dec, self.b_dec, self.l1_weights(), self.matmul_dtype,
            self.workspace)
        lam = self.config.sparsity_coefficient * sparsity_scale
        return TrainingLoss(mse + lam * l1, x_hat, feats, {"mse": mse, "l1": l1}, fired=col > 0)


@register("relu_decnorm")
class ReLUDecoderNormSAE(ReLUSAE):
    """ReLU SAE, free decoder norms, L1 weighted by ‖W_dec[i]‖."""

    unit_norm_decoder = False

    def l1_weights(self) -> torch.Tensor:
        return self.W_dec.norm(dim=-1)


def _empty(ws: Workspace | None, name: str, shape, like: torch.Tensor, dtype) -> torch.Tensor:
    if ws is None:
        return torch.empty(shape, dtype=dtype, device=like.device)
    return ws.get(name, tuple(shape), like, dtype)


class _FusedReLULoss(torch.autograd.Function):
    """Forward and hand-written backward of the ReLU SAE loss terms, for speed.

    Inputs ``x [B, d]``, ``W_enc``, ``b_enc``, ``W_dec``, ``b_dec``, per-feature L1 weights
    ``w [d_sae]`` (or None for plain L1), the matrix-product dtype (None: the master dtype) and
    an optional :class:`Workspace`. Outputs the two differentiable loss terms
    ``mse = Σ_d (x̂ − x)² averaged over the batch`` and ``l1 = Σ_i w_i f_i averaged over the
    batch``, plus (not differentiable) ``x̂``, ``f`` and the per-feature activation sums (``> 0``
    where a feature fired in the batch). With a workspace, ``f`` lives in a reused block and is
    valid until the next call.

    Against autograd of the same expressions this saves one of the six ``[B, d_sae]``-sized matrix
    products — the ``b_dec`` gradient through the encoder is ``−W_enc · Σ_b ∂L/∂pre`` (a
    matrix-vector product) rather than a full ``[B, d]`` gradient summed afterwards — and most
    passes over the ``[B, d_sae]`` tensors: the encoder bias is added inside the product, ReLU and
    the ReLU mask of the gradient run in place, firing is read off the column sums the L1 term
    needs anyway, and the two big scratch tensors are reused between steps.
    """

    @staticmethod
    def forward(ctx, x, W_enc, b_enc, W_dec, b_dec, l1_weight, lo, ws):
        master = W_enc.dtype
        lo = lo or master
        n, d_sae = x.shape[0], W_enc.shape[1]
        xc = (x - b_dec).to(lo)
        W_enc_lo, W_dec_lo = W_enc.to(lo), W_dec.to(lo)
        f = _empty(ws, "f", (n, d_sae), x, lo)
        torch.addmm(b_enc.to(lo), xc, W_enc_lo, out=f).relu_()
        x_hat = (f @ W_dec_lo).to(master).add_(b_dec)
        err = x_hat - x
        mse = err.pow(2).sum() / n
        col = f.sum(0).to(master)  # accumulated in fp32 inside; rounded to lo only under bf16
        l1 = (col.sum() if l1_weight is None else col @ l1_weight) / n
        ctx.save_for_backward(xc, f, err, W_enc, W_enc_lo, W_dec_lo, col, l1_weight)
        ctx.workspace = ws
        ctx.set_materialize_grads(False)  # no zero [B, d_sae] gradient for the feature output
        ctx.mark_non_differentiable(x_hat, f, col)
        return mse, l1, x_hat, f, col

    @staticmethod
    def backward(ctx, g_mse, g_l1, _g_xhat, _g_f, _g_col):
        xc, f, err, W_enc, W_enc_lo, W_dec, col, l1_weight = ctx.saved_tensors
        n, lo, master = xc.shape[0], f.dtype, W_enc.dtype
        g_mse = torch.zeros((), dtype=master, device=xc.device) if g_mse is None else g_mse
        g_l1 = torch.zeros((), dtype=master, device=xc.device) if g_l1 is None else g_l1
        g_xhat = err * (2 * g_mse / n)  # ∂L/∂x̂, [B, d], master dtype
        g_xhat_lo = g_xhat.to(lo)
        # Weight gradients as [d, B] @ [B, d_sae]. The reduced-precision kernels run faster
        # with a contiguous left factor (worth its transpose copy); fp32 ones do not.
        if lo == master:
            grad_W_dec = (f.t() @ g_xhat_lo).to(master)
        else:
            grad_W_dec = (g_xhat_lo.t().contiguous() @ f).t().to(master)
        grad_b_dec = g_xhat.sum(0)
        # ∂L/∂f = g_x̂ W_decᵀ + (L1 term: g_l1·w/n, added inside the product), then the ReLU mask.
        c = g_l1 / n
        c = (c if l1_weight is None else c * l1_weight).to(lo).expand(f.shape[1])
        g_pre = _empty(ctx.workspace, "g_pre", f.shape, f, lo)
        torch.addmm(c, g_xhat_lo, W_dec.t(), out=g_pre)
        torch.ops.aten.threshold_backward.grad_input(g_pre, f, 0, grad_input=g_pre)
        xc_t = xc.t() if lo == master else xc.t().contiguous()
        grad_W_enc = (xc_t @ g_pre).to(master)
        grad_b_enc = g_pre.sum(0).to(master)
        grad_b_dec = grad_b_dec - W_enc @ grad_b_enc
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = (g_pre @ W_enc_lo.t()).to(master) - g_xhat
        grad_w = (g_l1 / n) * col if ctx.needs_input_grad[5] else None
        return grad_x, grad_W_enc, grad_b_enc, grad_W_dec, grad_b_dec, grad_w, None, None


@torch.no_grad()
def resample_dead_features(
    sae: SparseAutoencoder,
    x: torch.Tensor,
    dead_mask: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator | None = None,
    encoder_scale: float = 0.2,
) -> int:
    """Re-initialise dead features from poorly reconstructed inputs (Anthropic, 2023).

    Inputs ``x [batch, d_in]`` are sampled with probability ∝ ‖x − x̂‖²; a dead feature's decoder
    row becomes the (centred, unit-norm) sample, its encoder column the same direction scaled to
    ``encoder_scale`` × the mean alive encoder norm, its bias 0, and its Adam moments are zeroed.
    Returns the number of resampled features.
    """
    dead = dead_mask.nonzero().flatten()
    n_dead = int(dead.numel())
    if n_dead == 0:
        return 0
    x_hat = sae(x)
    err = (x - x_hat).pow(2).sum(-1)
    if float(err.sum()) <= 0:
        return 0
    idx = torch.multinomial(err / err.sum(), n_dead, replacement=n_dead > x.shape[0],
                            generator=generator)
    dirs = x[idx] - sae.b_dec
    dirs = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    alive = ~dead_mask
    alive_norm = sae.W_enc[:, alive].norm(dim=0).mean() if bool(alive.any()) else 1.0
    sae.W_dec[dead] = dirs
    sae.W_enc[:, dead] = dirs.t() * alive_norm * encoder_scale
    sae.b_enc[dead] = 0.0
    for p, rows, dim in ((sae.W_dec, dead, 0), (sae.W_enc, dead, 1), (sae.b_enc, dead, 0)):
        state = optimizer.state.get(p, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                state[key].index_fill_(dim, rows, 0.0)
    return n_dead
