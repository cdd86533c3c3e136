"""Contrast-consistent search (CCS): an unsupervised probe trained on statement/negation pairs."""

from __future__ import annotations

import numpy as np
import torch

from interplab.errors import InterplabError
from interplab.probes.base import LinearProbe, as_array


class CCSProbe(LinearProbe):
    """CCS: find ``p(x) = σ(w·x̂ + b)`` with ``p(x⁺) ≈ 1 − p(x⁻)`` and confident answers.

    ``fit(X, y=None, X_neg=...)``: row i of ``X`` is a statement and row i of ``X_neg`` its
    negation. Each set is centred by its own mean and scaled to unit mean norm × √d before fitting
    (otherwise "is negated" solves the objective trivially). The loss is
    ``mean((p⁺ − (1 − p⁻))²) + mean(min(p⁺, p⁻)²)``, minimised from ``n_restarts`` random starts
    (all at once, L-BFGS, a small L2 penalty); the lowest loss wins. CCS's sign is arbitrary: with labels ``y`` for ``X`` it is
    fixed so that true statements score high; without, it stays arbitrary (the honest answer).

    Single statements are scored as ``σ(w·(x − mean_) / norm_ + b)`` with the training
    statements' mean and scale (``centering="train"``) or the batch's own (``"per-dataset"``).
    """

    name = "ccs"

    def __init__(self, centering: str = "train", n_restarts: int = 6, max_iter: int = 60,
                 weight_decay: float = 1e-3, seed: int = 0) -> None:
        super().__init__(centering)
        self.n_restarts, self.max_iter = n_restarts, max_iter
        self.weight_decay, self.seed = weight_decay, seed

    def fit(self, X: object, y: object = None, X_neg: object = None) -> CCSProbe:  # type: ignore[override]
        if X_neg is None:
            raise InterplabError("CCS trains on pairs: pass X_neg, the activations of the negations")
        Xp, Xn = as_array(X), as_array(X_neg)
        if Xp.shape != Xn.shape:
            raise InterplabError(f"X and X_neg must have the same shape, got {Xp.shape} and {Xn.shape}")
        d = Xp.shape[1]
        self.mean_ = Xp.mean(axis=0)
        mean_neg = Xn.mean(axis=0)
        self.norm_ = float(np.linalg.norm(Xp - self.mean_, axis=1).mean() / np.sqrt(d)) or 1.0
        norm_neg = float(np.linalg.norm(Xn - mean_neg, axis=1).mean() / np.sqrt(d)) or 1.0
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # these matrices are small: one thread avoids contention
        try:
            wv, bv = self._optimise(Xp, Xn, mean_neg, norm_neg, d)
        finally:
            torch.set_num_threads(threads)
        if y is not None:
            yv = np.asarray(y).reshape(-1)
            zp = (Xp - self.mean_) / self.norm_
            zn = (Xn - mean_neg) / norm_neg
            pp = 1 / (1 + np.exp(-(zp @ wv + bv)))
            pn = 1 / (1 + np.exp(-(zn @ wv + bv)))
            if ((0.5 * (pp + 1 - pn) > 0.5) == yv).mean() < 0.5:
                wv, bv = -wv, -bv
            self.sign_fixed_ = True
        else:
            self.sign_fixed_ = False
        self.direction_ = wv / self.norm_
        self.threshold_ = -bv
        self.scale_ = 1.0
        self.n_features_in_ = d
        return self

    def _optimise(self, Xp: np.ndarray, Xn: np.ndarray, mean_neg: np.ndarray, norm_neg: float,
                  d: int) -> tuple[np.ndarray, float]:
        zp = torch.tensor((Xp - self.mean_) / self.norm_, dtype=torch.float32)
        zn = torch.tensor((Xn - mean_neg) / norm_neg, dtype=torch.float32)
        gen = torch.Generator().manual_seed(self.seed)
        w = (torch.randn(self.n_restarts, d, generator=gen) / np.sqrt(d)).requires_grad_()
        b = torch.zeros(self.n_restarts, requires_grad=True)
        # The restarts are independent, so minimising their summed loss minimises each one.
        opt = torch.optim.LBFGS([w, b], max_iter=self.max_iter, line_search_fn="strong_wolfe",
                                tolerance_grad=1e-6, tolerance_change=1e-9)

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = self._loss(zp, zn, w, b).sum() + self.weight_decay * (w**2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            final = self._loss(zp, zn, w, b)
            best = int(torch.argmin(final))
        self.loss_ = float(final[best])
        return w[best].detach().double().numpy(), float(b.detach()[best])

    @staticmethod
    def _loss(zp: torch.Tensor, zn: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        pp = torch.sigmoid(zp @ w.T + b)  # [n, restarts]
        pn = torch.sigmoid(zn @ w.T + b)
        consistency = ((pp - (1 - pn)) ** 2).mean(0)
        confidence = (torch.minimum(pp, pn) ** 2).mean(0)
        return consistency + confidence

    def predict_pairs(self, X: object, X_neg: object) -> np.ndarray:
        """Predict from (statement, negation) pairs: ``(p⁺ + 1 − p⁻) / 2 > 0.5``."""
        pp = self.predict_proba(X)[:, 1]
        pn = self.predict_proba(X_neg)[:, 1]
        return (0.5 * (pp + 1 - pn) > 0.5).astype(np.int64)

    def get_params(self, deep: bool = True) -> dict:
        return {"centering": self.centering, "n_restarts": self.n_restarts,
                "max_iter": self.max_iter, "weight_decay": self.weight_decay, "seed": self.seed}
