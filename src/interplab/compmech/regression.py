"""Weighted affine regression from activations onto belief vectors, with R² and RMSE.

:class:`BeliefRegression` is a scikit-learn-style estimator: ``fit(X, Y, sample_weight)`` returns
``self``; ``coef_ [d, S]`` and ``intercept_ [S]`` are the learned state. Metrics pool all belief
coordinates:

* ``R² = 1 - sum_n w_n ||y_n - yhat_n||² / sum_n w_n ||y_n - ybar_w||²`` (``ybar_w`` the weighted
  mean of the evaluated rows), so 1 is perfect and 0 is "no better than predicting the mean";
* ``RMSE = sqrt(sum_n w_n ||y_n - yhat_n||² / (S sum_n w_n))``, in probability units.

The fit solves the weighted normal equations on centred data in float64, with the minimum-norm
solution (pseudo-inverse) so that rank-deficient inputs (e.g. a belief embedding in fewer
dimensions than ``d``, or concatenated layers) are fine. A small ridge can be set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from interplab.compmech.beliefs import all_sequences, belief_states
from interplab.compmech.process import HiddenMarkovProcess
from interplab.errors import InterplabError


def _as_2d(a: Any, name: str) -> np.ndarray:
    arr = np.asarray(a.detach().cpu().numpy() if hasattr(a, "detach") else a)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise InterplabError(f"{name} must be 2-D [n_rows, dim]; got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
        raise InterplabError(f"{name} must be numeric")
    return arr


def _weights(sample_weight: Any, n: int) -> np.ndarray:
    if sample_weight is None:
        return np.full(n, 1.0 / max(n, 1))
    w = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
    if w.shape != (n,):
        raise InterplabError(f"sample_weight must have one entry per row ({n}); got {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise InterplabError("sample_weight must be finite, non-negative and not all zero")
    return w


class BeliefRegression:
    """Affine map ``X @ coef_ + intercept_`` fitted by weighted least squares.

    Args:
        ridge: L2 penalty on ``coef_``, relative to the mean weighted variance of ``X``'s columns
            (0 = ordinary least squares with minimum-norm solution).
        chunk_size: rows per block when accumulating ``X^T W X`` (bounds float64 memory).
    """

    def __init__(self, ridge: float = 0.0, chunk_size: int = 65536) -> None:
        self.ridge = ridge
        self.chunk_size = chunk_size

    def fit(self, X: Any, Y: Any, sample_weight: Any = None) -> BeliefRegression:
        """Fit on ``X [n, d]`` (activations) and ``Y [n, S]`` (beliefs); returns ``self``."""
        x, y = _as_2d(X, "X"), _as_2d(Y, "Y").astype(np.float64)
        if x.shape[0] != y.shape[0]:
            raise InterplabError(f"X has {x.shape[0]} rows but Y has {y.shape[0]}")
        if x.shape[0] < 2:
            raise InterplabError("need at least 2 rows to fit a regression")
        if self.ridge < 0:
            raise InterplabError("ridge must be >= 0")
        w = _weights(sample_weight, x.shape[0])
        w = w / w.sum()
        x_mean = np.zeros(x.shape[1])
        for s in range(0, x.shape[0], self.chunk_size):
            x_mean += w[s : s + self.chunk_size] @ x[s : s + self.chunk_size].astype(np.float64)
        y_mean = w @ y
        gram = np.zeros((x.shape[1], x.shape[1]))
        cross = np.zeros((x.shape[1], y.shape[1]))
        for s in range(0, x.shape[0], self.chunk_size):
            xc = x[s : s + self.chunk_size].astype(np.float64) - x_mean
            wx = xc * w[s : s + self.chunk_size, None]
            gram += wx.T @ xc
            cross += wx.T @ (y[s : s + self.chunk_size] - y_mean)
        if self.ridge > 0:
            gram += np.eye(len(gram)) * self.ridge * max(np.trace(gram) / len(gram), 1e-300)
        # Minimum-norm least squares; rcond relative to the largest eigenvalue of the Gram.
        self.coef_ = np.linalg.pinv(gram, rcond=1e-10, hermitian=True) @ cross
        self.intercept_ = y_mean - x_mean @ self.coef_
        self.n_features_in_ = x.shape[1]
        return self

    def predict(self, X: Any) -> np.ndarray:
        """``[n, S]`` predicted beliefs for ``X [n, d]``."""
        if not hasattr(self, "coef_"):
            raise InterplabError("BeliefRegression is not fitted yet; call fit(X, Y) first")
        x = _as_2d(X, "X")
        if x.shape[1] != self.n_features_in_:
            raise InterplabError(f"X has {x.shape[1]} columns; the fit used {self.n_features_in_}")
        out = np.empty((x.shape[0], self.coef_.shape[1]))
        for s in range(0, x.shape[0], self.chunk_size):
            out[s : s + self.chunk_size] = (
                x[s : s + self.chunk_size].astype(np.float64) @ self.coef_ + self.intercept_
            )
        return out

    def score(self, X: Any, Y: Any, sample_weight: Any = None) -> float:
        """Weighted R² of the predictions for ``X`` against ``Y`` (see module docstring)."""
        return r2_rmse(Y, self.predict(X), sample_weight)[0]


def r2_rmse(Y: Any, Y_pred: Any, sample_weight: Any = None) -> tuple[float, float]:
    """Weighted (R², RMSE) of ``Y_pred [n, S]`` against ``Y [n, S]``, pooled over coordinates."""
    y, yp = _as_2d(Y, "Y").astype(np.float64), _as_2d(Y_pred, "Y_pred").astype(np.float64)
    if y.shape != yp.shape:
        raise InterplabError(f"Y {y.shape} and Y_pred {yp.shape} differ in shape")
    w = _weights(sample_weight, y.shape[0])
    w = w / w.sum()
    sse = float(w @ ((y - yp) ** 2).sum(axis=1))
    sst = float(w @ ((y - w @ y) ** 2).sum(axis=1))
    r2 = 1.0 - sse / sst if sst > 0 else float("nan")
    return r2, float(np.sqrt(sse / y.shape[1]))


def shuffled_pairs(
    weights: np.ndarray, n_pairs: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(x_rows, y_rows)``, each ``[n_pairs]``, for the shuffled-belief control.

    The regression's rows are weighted (sequence, position) samples merged into distinct
    prefixes, so a few short prefixes carry most of the weight. Permuting distinct rows would keep
    those heavy rows intact and let the fit memorise them; shuffling at the level of the samples
    themselves pairs activations and beliefs drawn independently from the same weighted
    distribution. That is what this draws: ``x_rows`` and ``y_rows`` independently, with
    replacement, with probabilities ``weights``. Fit unweighted on ``(X[x_rows], Y[y_rows])``.
    """
    w = np.asarray(weights, dtype=np.float64)
    if n_pairs < 1 or w.ndim != 1 or (w < 0).any() or w.sum() <= 0:
        raise InterplabError("shuffled_pairs needs n_pairs >= 1 and non-negative weights")
    rng = np.random.default_rng(seed)
    p = w / w.sum()
    return rng.choice(len(w), n_pairs, p=p), rng.choice(len(w), n_pairs, p=p)


# ---------------------------------------------------------------------------- the data to regress


@dataclass(frozen=True, eq=False)
class BeliefDataset:
    """Distinct prefixes of a set of sequences, each with its exact belief and its probability.

    A causal model's residual stream at position ``t`` depends only on the prefix
    ``x_0..x_t``, so each distinct prefix is one row. Weighting row ``(prefix)`` by ``P(prefix)``
    is the same as weighting every (sequence, position) pair by ``P(sequence)`` and merging
    identical rows; it also keeps a prefix from appearing on both sides of a train/test split.

    Attributes:
        sequences: ``[n_seq, L]`` the distinct sequences to feed the model.
        seq_index, position: ``[n_rows]`` row ``r`` is the residual at ``position[r]`` of
            ``sequences[seq_index[r]]`` (it has read ``position + 1`` symbols); rows are sorted by
            ``(seq_index, position)``.
        beliefs: ``[n_rows, n_states]`` exact beliefs after reading the prefix.
        weights: ``[n_rows]`` ``P(prefix) / L`` (exact) or ``count / (n_sampled * L)`` (sampled);
            they sum to 1.
        exact: True if every sequence of length ``L`` was enumerated with its exact probability.
        sequence_weights: ``[n_seq]`` probability (or sampled frequency) of each sequence.
        row_of: ``[n_seq, L]`` the row holding each sequence's prefix of length ``t + 1``.
    """

    sequences: np.ndarray
    seq_index: np.ndarray
    position: np.ndarray
    beliefs: np.ndarray
    weights: np.ndarray
    exact: bool
    sequence_weights: np.ndarray
    row_of: np.ndarray

    @property
    def n_rows(self) -> int:
        return int(self.weights.shape[0])

    def weights_for(self, sequence_mask: np.ndarray) -> np.ndarray:
        """``[n_rows]`` row weights induced by a subset of the sequences: each (sequence, position)
        pair of the subset adds its sequence's weight to its prefix's row. Rows no sequence of the
        subset passes through get 0. Normalised to sum 1."""
        mask = np.asarray(sequence_mask, dtype=bool)
        if mask.shape != (len(self.sequences),) or not mask.any():
            raise InterplabError("sequence_mask must be a non-empty boolean mask over sequences")
        rows = self.row_of[mask]  # [m, L]
        w = np.repeat(self.sequence_weights[mask], rows.shape[1])
        out = np.bincount(rows.ravel(), weights=w, minlength=self.n_rows)
        return out / out.sum()


def belief_dataset(
    process: HiddenMarkovProcess, length: int, max_sequences: int = 65536, seed: int = 0
) -> BeliefDataset:
    """All sequences of ``length`` with their exact probabilities if there are at most
    ``max_sequences`` of them; otherwise ``max_sequences`` sampled ones weighted by counts
    (a Monte Carlo estimate of the same weighting). Impossible sequences are dropped."""
    if length < 1 or max_sequences < 1:
        raise InterplabError("length and max_sequences must be positive")
    exact = process.n_symbols**length <= max_sequences
    if exact:
        seqs = all_sequences(process.n_symbols, length)
        beliefs, log_probs = belief_states(process, seqs, allow_impossible=True)
        keep = np.isfinite(log_probs[:, -1])
        seqs, beliefs, log_probs = seqs[keep], beliefs[keep], log_probs[keep]
        seq_weight = np.exp(log_probs[:, -1])
    else:
        sampled = process.sample(max_sequences, length, seed=np.random.default_rng([seed, 7]))
        seqs, counts = np.unique(sampled, axis=0, return_counts=True)
        beliefs, _ = belief_states(process, seqs)
        seq_weight = counts / counts.sum()
    seq_idx, pos, w = [], [], []
    row_of = np.empty((len(seqs), length), dtype=np.int64)
    offset = 0
    for t in range(length):
        # first sequence (in order) carrying each distinct prefix of length t + 1
        _, first, inverse = np.unique(seqs[:, : t + 1], axis=0, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        mass = np.bincount(inverse, weights=seq_weight, minlength=len(first))
        seq_idx.append(first)
        pos.append(np.full(len(first), t))
        w.append(mass)
        row_of[:, t] = inverse + offset
        offset += len(first)
    seq_index = np.concatenate(seq_idx)
    position = np.concatenate(pos)
    weights = np.concatenate(w)
    order = np.lexsort((position, seq_index))
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    seq_index, position, weights = seq_index[order], position[order], weights[order]
    return BeliefDataset(
        sequences=seqs,
        seq_index=seq_index,
        position=position,
        beliefs=beliefs[seq_index, position + 1],
        weights=weights / weights.sum(),
        exact=exact,
        sequence_weights=seq_weight / seq_weight.sum(),
        row_of=rank[row_of],
    )


def residual_rows(model: Any, data: BeliefDataset, batch_size: int = 2048) -> np.ndarray:
    """``[n_layers + 1, n_rows, d_model]`` float32 residual stream of ``model`` (a
    :class:`~interplab.compmech.transformer.GPT`) at each row of ``data``, computed batch by batch
    so only the rows needed are kept."""
    import torch

    tokens = torch.from_numpy(data.sequences)
    out = None
    bounds = np.searchsorted(data.seq_index, np.arange(0, len(tokens) + batch_size, batch_size))
    for b, s in enumerate(range(0, len(tokens), batch_size)):
        res = model.residuals(tokens[s : s + batch_size]).numpy()  # [layers, b, T, d]
        lo, hi = bounds[b], bounds[b + 1]
        rows = res[:, data.seq_index[lo:hi] - s, data.position[lo:hi]]
        if out is None:
            out = np.empty((res.shape[0], data.n_rows, res.shape[-1]), dtype=np.float32)
        out[:, lo:hi] = rows
    assert out is not None
    return out


@dataclass(frozen=True, eq=False)
class CrossValidatedFit:
    """Out-of-fold scores of a belief regression, pooled over folds of sequences.

    Each fold's held-out (sequence, position) samples are scored by the regression fitted on the
    other folds; pooling all of them uses the full weighted distribution once, which removes the
    large split-to-split noise a single split has when a few sequences carry much of the mass.

    Held-out sequences share their short prefixes with training sequences (every length-1
    prefix is in every fold), so most of the held-out weight sits on prefixes the fit has seen;
    only the "unseen" rows test generalisation to new prefixes.

    Attributes:
        r2, rmse: pooled over every held-out sample, including prefixes that training sequences
            also contain.
        r2_unseen, rmse_unseen: only rows whose prefix no training sequence of that fold contains
            (NaN if there are none).
        r2_train: mean over folds of the in-sample R².
        unseen_weight_fraction: share of the pooled held-out weight on unseen rows.
        unseen_predictions: ``[n_rows, S]`` out-of-fold predictions at unseen rows, NaN elsewhere.
    """

    r2: float
    rmse: float
    r2_unseen: float
    rmse_unseen: float
    r2_train: float
    unseen_weight_fraction: float
    unseen_predictions: np.ndarray


def cross_validated_fit(
    x: np.ndarray,
    data: BeliefDataset,
    folds: np.ndarray,
    ridge: float = 0.0,
    shuffled_pairs_per_fold: int = 0,
    seed: int = 0,
) -> CrossValidatedFit:
    """Fit ``x [n_rows, d] -> data.beliefs`` with cross-validation over sequence folds.

    Args:
        folds: ``[n_seq]`` fold id of each sequence (``0..k-1``).
        shuffled_pairs_per_fold: if > 0, the shuffled-belief control: each fold is fitted on this
            many (activation, belief) pairs drawn independently from its training rows
            (:func:`shuffled_pairs`) instead of on the true pairs.
    """
    folds = np.asarray(folds)
    if folds.shape != (len(data.sequences),):
        raise InterplabError("folds must hold one fold id per sequence")
    ys, ps, ws, unseen_mask = [], [], [], []
    train_r2 = []
    unseen_pred = np.full(data.beliefs.shape, np.nan)
    y = data.beliefs
    for k in np.unique(folds):
        held = folds == k
        if held.all():
            raise InterplabError("cross-validation needs at least two folds")
        w_tr = data.weights_for(~held)
        w_te = data.weights_for(held) * data.sequence_weights[held].sum()  # pooled: raw mass
        train, test = w_tr > 0, w_te > 0
        if shuffled_pairs_per_fold:
            xi, yi = shuffled_pairs(w_tr, shuffled_pairs_per_fold, seed=seed + int(k))
            x_fit, y_fit, w_fit = x[xi], y[yi], None
        else:
            x_fit, y_fit, w_fit = x[train], y[train], w_tr[train]
        reg = BeliefRegression(ridge=ridge).fit(x_fit, y_fit, w_fit)
        train_r2.append(r2_rmse(y_fit, reg.predict(x_fit), w_fit)[0])
        pred = reg.predict(x[test])
        new = test & ~train
        unseen_pred[new] = pred[new[test]]
        ys.append(y[test])
        ps.append(pred)
        ws.append(w_te[test])
        unseen_mask.append(new[test])
    y_all, p_all, w_all = np.concatenate(ys), np.concatenate(ps), np.concatenate(ws)
    m = np.concatenate(unseen_mask)
    r2, rmse = r2_rmse(y_all, p_all, w_all)
    r2_u, rmse_u = r2_rmse(y_all[m], p_all[m], w_all[m]) if m.any() else (np.nan, np.nan)
    return CrossValidatedFit(
        r2=r2,
        rmse=rmse,
        r2_unseen=float(r2_u),
        rmse_unseen=float(rmse_u),
        r2_train=float(np.mean(train_r2)),
        unseen_weight_fraction=float(w_all[m].sum() / w_all.sum()),
        unseen_predictions=unseen_pred,
    )
