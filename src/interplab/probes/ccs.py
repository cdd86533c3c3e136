"""Contrast-consistent search (CCS): an unsupervised probe trained on statement/negation pairs."""

from __future__ import annotations

import numpy as np
import torch

from interplab.errors import InterplabError
from interplab.probes.base import PairProbe, as_array, as_groups
from interplab.threads import limit_threads


def side_stats(X: np.ndarray) -> tuple[np.ndarray, float]:
    """Mean ``[d]`` and scale (mean row norm of the centred rows / √d) of one side of the pairs."""
    mean = X.mean(axis=0)
    scale = float(np.linalg.norm(X - mean, axis=1).mean() / np.sqrt(X.shape[1]))
    return mean, (scale if scale > 0 else 1.0)


class CCSProbe(PairProbe):
    """CCS: find ``p(x) = σ(w·x̂ + b)`` with ``p(x⁺) ≈ 1 − p(x⁻)`` and confident answers.

    ``fit_pairs(X, X_neg, y=None)`` (or ``fit(X, y, X_neg=...)``): row i of ``X`` is a statement and row i of ``X_neg`` its
    negation. Each side is normalised by *its own* mean and scale (``x̂ = (x − μ_side) / s_side``,
    ``s`` the mean norm of the centred rows / √d), otherwise "is negated" solves the objective
    trivially. The loss is ``mean((p⁺ − (1 − p⁻))²) + mean(min(p⁺, p⁻)²)``, minimised from
    ``n_restarts`` random starts (all at once, L-BFGS, a small L2 penalty); the lowest loss wins.
    CCS's sign is arbitrary: with labels ``y`` for ``X`` it is fixed so that true statements score
    high; without, it stays arbitrary (the honest answer).

    Scoring normalises exactly as training did, side by side:

    * ``centering="train"`` (and ``"none"``, which CCS cannot honour: unnormalised pairs are
      separated by the negation itself): the statistics stored per side at fit time,
      ``mean_``/``norm_`` for affirmations and ``mean_neg_``/``norm_neg_`` for negations. Pass
      ``negated=True`` when scoring negated statements on their own.
    * ``"per-dataset"``: every scored batch by its own mean and scale, as the reference CCS
      implementation normalises each side of its test set. With ``groups`` at fit time each
      training component (e.g. cities and sp_en_trans pairs) is normalised by its own statistics.

    ``direction_`` is ``w / norm_`` (raw affirmation units), ``threshold_`` is ``−b``.
    """

    name = "ccs"

    def __init__(self, centering: str = "train", n_restarts: int = 6, max_iter: int = 60,
                 weight_decay: float = 1e-3, seed: int = 0) -> None:
        self.centering = centering
        self.n_restarts, self.max_iter = n_restarts, max_iter
        self.weight_decay, self.seed = weight_decay, seed

    def _check_params(self) -> None:
        super()._check_params()
        if not (isinstance(self.n_restarts, int) and self.n_restarts >= 1):
            raise InterplabError(f"n_restarts must be a positive integer, not {self.n_restarts!r}")

    def fit_pairs(self, X: object, X_neg: object, y: object = None,
                  groups: object = None) -> CCSProbe:
        """Fit on statements ``X`` ``[n, d]`` and their negations ``X_neg`` ``[n, d]``; labels
        ``y`` of ``X`` (optional) only fix the sign, ``groups`` as in ``fit``."""
        self._check_params()
        Xp, Xn = self._validate_X(X, reset=True), as_array(X_neg)
        if Xp.shape != Xn.shape:
            raise InterplabError(f"X and X_neg must have the same shape, got {Xp.shape} and {Xn.shape}")
        d = Xp.shape[1]
        self.mean_, self.norm_ = side_stats(Xp)
        self.mean_neg_, self.norm_neg_ = side_stats(Xn)
        g = as_groups(groups, Xp.shape[0])
        zp, zn = self._normalise_training(Xp, g, False), self._normalise_training(Xn, g, True)
        with limit_threads(1):  # these matrices are small: one thread avoids contention
            wv, bv = self._optimise(zp, zn, d)
        self.sign_fixed_ = y is not None
        if y is not None:
            yv = self._encode_labels(y, Xp.shape[0])
            pp = 1 / (1 + np.exp(-(zp @ wv + bv)))
            pn = 1 / (1 + np.exp(-(zn @ wv + bv)))
            if ((0.5 * (pp + 1 - pn) > 0.5) == yv).mean() < 0.5:
                wv, bv = -wv, -bv
        else:
            self.classes_ = np.array([0, 1])
        self.direction_ = wv / self.norm_
        self.threshold_ = -bv
        self.scale_ = 1.0
        return self

    def _normalise_training(self, X: np.ndarray, groups: np.ndarray | None,
                            negated: bool) -> np.ndarray:
        if self.centering != "per-dataset" or groups is None:
            return self._normalise(X, negated)
        out = np.empty_like(X)
        for g in np.unique(groups):
            mean, scale = side_stats(X[groups == g])
            out[groups == g] = (X[groups == g] - mean) / scale
        return out

    def _normalise(self, X: np.ndarray, negated: bool) -> np.ndarray:
        """``x̂`` for one side: the batch's own statistics (per-dataset) or the stored ones."""
        if self.centering == "per-dataset":
            mean, scale = side_stats(X)
        elif negated:
            mean, scale = self.mean_neg_, self.norm_neg_
        else:
            mean, scale = self.mean_, self.norm_
        return (X - mean) / scale

    def _center_groups(self, X: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
        return self._normalise_training(X, groups, False) * self.norm_

    def _center(self, X: np.ndarray) -> np.ndarray:
        # In raw affirmation units, so that ``direction_`` (= w / norm_) applies; used by the
        # base class for affirmations (and by ``with_direction``'s threshold refit).
        return self._normalise(X, False) * self.norm_

    def decision_function(self, X: object, negated: bool = False) -> np.ndarray:
        """``w·x̂ + b`` for ``X`` ``[n, d]``, normalised as the side it belongs to was in training."""
        self._check_fitted()
        X = self._validate_X(X, reset=False)
        return self._scoring_input(X, negated) @ self.direction_ - self.threshold_

    def _scoring_input(self, X: np.ndarray, negated: bool = False) -> np.ndarray:
        return self._normalise(X, negated) * self.norm_

    def _scoring_frame(self) -> tuple:
        stored = (None if self.centering == "per-dataset"
                  else (self.mean_, self.mean_neg_, self.norm_neg_))
        return (type(self), self.centering, self.norm_, *(stored or (None,)))

    def _optimise(self, zp_np: np.ndarray, zn_np: np.ndarray, d: int) -> tuple[np.ndarray, float]:
        zp = torch.tensor(zp_np, dtype=torch.float32)
        zn = torch.tensor(zn_np, dtype=torch.float32)
        gen = torch.Generator().manual_seed(self.seed)
        w = torch.randn(self.n_restarts, d, generator=gen) / np.sqrt(d)
        b = torch.zeros(self.n_restarts)
        # The restarts are independent, so minimising their summed loss minimises each one.
        opt = torch.optim.LBFGS([w, b], max_iter=self.max_iter, line_search_fn="strong_wolfe",
                                tolerance_grad=1e-6, tolerance_change=1e-9)

        def closure() -> torch.Tensor:
            loss, w.grad, b.grad = self._loss_and_grad(zp, zn, w, b)
            return loss

        opt.step(closure)
        with torch.no_grad():
            final = self._loss(zp, zn, w, b)
            best = int(torch.argmin(final))
        self.loss_ = float(final[best])
        return w[best].detach().double().numpy(), float(b.detach()[best])

    def _loss_and_grad(self, zp: torch.Tensor, zn: torch.Tensor, w: torch.Tensor,
                       b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The summed loss of all restarts plus the L2 penalty, and its gradient in ``w`` and
        ``b``, written out (the gradient autograd would give, without its per-step overhead)."""
        n = zp.shape[0]
        pp = torch.sigmoid(torch.addmm(b, zp, w.T))  # [n, restarts]
        pn = torch.sigmoid(torch.addmm(b, zn, w.T))
        gap, low = pp + pn - 1, torch.minimum(pp, pn)
        loss = ((gap**2).sum() + (low**2).sum()) / n + self.weight_decay * (w**2).sum()
        share = torch.where(pp < pn, 1.0, torch.where(pp > pn, 0.0, 0.5))  # min's gradient at a tie
        gp = 2 / n * (gap + low * share) * pp * (1 - pp)
        gn = 2 / n * (gap + low * (1 - share)) * pn * (1 - pn)
        return loss, gp.T @ zp + gn.T @ zn + 2 * self.weight_decay * w, (gp + gn).sum(0)

    @staticmethod
    def _loss(zp: torch.Tensor, zn: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        pp = torch.sigmoid(zp @ w.T + b)  # [n, restarts]
        pn = torch.sigmoid(zn @ w.T + b)
        consistency = ((pp - (1 - pn)) ** 2).mean(0)
        confidence = (torch.minimum(pp, pn) ** 2).mean(0)
        return consistency + confidence
