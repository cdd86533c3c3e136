"""Fitting erasers, in memory or streamed from an :class:`~interplab.activations.ActivationStore`.

Every streamable method keeps only running statistics in float64 (means, ``[d, d]`` covariances,
``[d, k]`` cross-covariances, class means), updated batch by batch with Welford-style merges, so
memory is bounded by the ``d × d`` statistics, not by the rows. The LEACE family goes through the
``concept-erasure`` package's own fitters (``LeaceFitter``, ``OracleFitter``, ``QuadraticFitter``);
their ``update`` takes the concept as a ``[n, k]`` one-hot matrix (LEACE, oracle) or as integer
labels (quadratic).

Methods:

==============  ==========================================================================
``leace``       LEACE (least-squares concept erasure): the smallest edit, in the covariance
                metric, after which no linear classifier beats a constant; labels not needed
                to apply. Options: ``shrinkage`` (default True), ``svd_tol`` (0.01),
                ``constrain_cov_trace`` (True).
``orth``        LEACE's orthogonal variant (projects out the span of the cross-covariance)
``oracle``      oracle LEACE: subtracts the least-squares prediction of ``x`` from the label
                (needs labels to apply)
``quadratic``   quadratic LEACE: transports each class onto the classes' Wasserstein barycentre,
                matching means *and* covariances (needs labels to apply)
``mean-diff``   orthogonal projection off the span of the class-mean differences
``mean-match``  translates each class so its mean is the overall mean (needs labels)
``median-match`` translates each class so its coordinate-wise median is the overall median
                (needs labels; in memory only — a median cannot be streamed exactly)
``inlp``        iterative nullspace projection (in memory only; see :mod:`.inlp`)
==============  ==========================================================================
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from interplab.erasure.erasers import (
    Eraser,
    LabelledEraser,
    LinearEraser,
    as_labels,
    as_tensor64,
    one_hot,
    shift_eraser,
)
from interplab.errors import InterplabError

STREAMING_METHODS = ("leace", "orth", "oracle", "quadratic", "mean-diff", "mean-match")
METHODS = (*STREAMING_METHODS, "median-match", "inlp")
_LEACE_OPTIONS = {"shrinkage", "svd_tol", "constrain_cov_trace"}


class ClassMeans:
    """Running per-class sums and counts in float64 (``[k, d]``)."""

    def __init__(self, d: int, n_classes: int) -> None:
        self.sums = torch.zeros(n_classes, d, dtype=torch.float64)
        self.counts = torch.zeros(n_classes, dtype=torch.float64)

    def update(self, x: torch.Tensor, y: torch.Tensor) -> ClassMeans:
        self.sums.index_add_(0, y, x.to(torch.float64))
        self.counts += torch.bincount(y, minlength=self.counts.numel()).to(torch.float64)
        return self

    def means(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Class means ``[k, d]`` and the overall mean ``[d]``."""
        if (self.counts == 0).any():
            missing = torch.nonzero(self.counts == 0).reshape(-1).tolist()
            raise InterplabError(f"class(es) {missing} have no rows; every class 0..k−1 needs rows")
        return self.sums / self.counts[:, None], self.sums.sum(0) / self.counts.sum()


def _check_options(method: str, options: dict[str, Any]) -> None:
    allowed = _LEACE_OPTIONS if method in ("leace", "orth") else {"shrinkage", "svd_tol"} \
        if method == "oracle" else {"shrinkage"} if method == "quadratic" else set()
    unknown = set(options) - allowed
    if unknown:
        raise InterplabError(f"method {method!r} takes no option(s) {sorted(unknown)}; it takes "
                             f"{sorted(allowed) or 'none'}")


class StreamingFit:
    """The statistics of one streamable method; ``update(x, y)`` per batch, ``eraser()`` at the end."""

    def __init__(self, method: str, d: int, n_classes: int, **options: Any) -> None:
        if method not in STREAMING_METHODS:
            hint = " (fit it in memory with fit_eraser)" if method in METHODS else ""
            raise InterplabError(f"method {method!r} cannot be fitted streaming{hint}; streaming "
                                 f"methods are {', '.join(STREAMING_METHODS)}")
        if n_classes < 2:
            raise InterplabError(f"erasing a concept needs at least 2 classes, got {n_classes}")
        _check_options(method, options)
        from concept_erasure import LeaceFitter, OracleFitter, QuadraticFitter

        self.method, self.d, self.n_classes = method, d, n_classes
        self.fitter: Any
        if method in ("leace", "orth"):
            self.fitter = LeaceFitter(d, n_classes, method, dtype=torch.float64, **options)
        elif method == "oracle":
            self.fitter = OracleFitter(d, n_classes, dtype=torch.float64, **options)
        elif method == "quadratic":
            self.fitter = QuadraticFitter(d, n_classes, dtype=torch.float64, **options)
        else:
            self.fitter = ClassMeans(d, n_classes)

    def update(self, x: torch.Tensor, y: torch.Tensor) -> StreamingFit:
        """Add a batch: ``x`` ``[n, d]`` (any float dtype; accumulated in float64), ``y`` ``[n]``."""
        if y.numel() and int(y.max()) >= self.n_classes:
            raise InterplabError(f"label {int(y.max())} is out of range for {self.n_classes} classes")
        x = x.to(torch.float64)
        if self.method == "quadratic" or isinstance(self.fitter, ClassMeans):
            self.fitter.update(x, y)
        else:
            self.fitter.update(x, one_hot(y, self.n_classes))
        return self

    def eraser(self) -> Eraser:
        if self.method in ("leace", "orth"):
            e = self.fitter.eraser
            return LinearEraser.trimmed(self.method, e.proj_left, e.proj_right, e.bias)
        if self.method == "oracle":  # fitted on one-hot labels, so applied to them too
            e, k = self.fitter.eraser, self.n_classes
            return LabelledEraser("oracle", lambda x, y: e(x, one_hot(y, k)), self.d, k)
        if self.method == "quadratic":  # takes integer labels
            e = self.fitter.eraser
            return LabelledEraser("quadratic", lambda x, y: e(x, y), self.d, self.n_classes)
        means, overall = self.fitter.means()
        if self.method == "mean-match":
            return shift_eraser("mean-match", means - overall)
        return mean_difference_eraser(means, overall)


def mean_difference_eraser(means: torch.Tensor, overall: torch.Tensor) -> LinearEraser:
    """Orthogonal projection off the span of the class-mean deviations (rank ``k − 1``), centred at
    the overall mean, so every class mean lands on the overall mean's projection."""
    dev = (means - overall).T  # [d, k]
    u, s, _ = torch.linalg.svd(dev, full_matrices=False)
    q = u[:, s > 1e-12 * max(float(s.max()), 1e-300)]  # [d, r] orthonormal
    return LinearEraser("mean-diff", q, q.T.contiguous(), overall)


def _n_classes(y: torch.Tensor, n_classes: int | None) -> int:
    k = int(y.max()) + 1 if y.numel() else 0
    return max(k, n_classes or 0)


def fit_eraser(method: str, X: Any, y: Any, *, n_classes: int | None = None,
               seed: int = 0, **options: Any) -> Eraser:
    """Fit ``method`` (see the module docstring) on activations ``X`` ``[n, d]`` and integer labels
    ``y`` ``[n]`` (0..k−1), in float64. ``seed`` is used by ``inlp`` only."""
    if method not in METHODS:
        raise InterplabError(f"unknown erasure method {method!r}; choose one of {', '.join(METHODS)}")
    x = as_tensor64(X)
    labels = as_labels(y, x.shape[0])
    k = _n_classes(labels, n_classes)
    if method == "median-match":
        _check_options(method, options)
        return median_matching_eraser(x, labels, k)
    if method == "inlp":
        from interplab.erasure.inlp import inlp

        return inlp(x, labels, seed=seed, **options).eraser
    return StreamingFit(method, x.shape[1], k, **options).update(x, labels).eraser()


def median_matching_eraser(x: torch.Tensor, y: torch.Tensor, n_classes: int) -> LabelledEraser:
    """Translate each class so its coordinate-wise median is the overall median. Unlike the mean,
    the median ignores a few far-out rows, which carry weight in a mean but not in accuracy."""
    if torch.bincount(y, minlength=n_classes).min() == 0:
        raise InterplabError("every class 0..k−1 needs rows to match medians")
    xn = x.numpy()

    def median(rows: np.ndarray) -> torch.Tensor:  # numpy: torch.quantile caps its input size
        return torch.from_numpy(np.median(rows, axis=0))

    yn = y.numpy()
    shifts = torch.stack([median(xn[yn == c]) for c in range(n_classes)]) - median(xn)
    return shift_eraser("median-match", shifts)


def row_labels(store: Any, text_labels: Any) -> np.ndarray:
    """Per-row labels of ``store`` from one label per text (by each row's ``text_index``)."""
    text_labels = np.asarray(text_labels).reshape(-1)
    text_index = store.metadata()["text_index"]
    if text_index.size and text_index.max() >= text_labels.size:
        raise InterplabError(f"the store has rows of text {int(text_index.max())} but only "
                             f"{text_labels.size} text labels were given")
    return text_labels[text_index]


def fit_eraser_from_store(method: str, store: Any, labels: Any, *, hook: str | None = None,
                          batch_size: int = 8192, n_classes: int | None = None,
                          allow_incomplete: bool = False, **options: Any) -> Eraser:
    """Fit ``method`` streaming over every row of ``store`` (one ``hook``), in store order.

    ``labels`` holds one integer label per row (``[store.n_rows]``; :func:`row_labels` builds it
    from one label per text). Rows are read ``batch_size`` at a time and converted to float64 one
    batch at a time; memory is one shard, one batch and the method's statistics. An interrupted
    harvest is refused unless ``allow_incomplete`` (its rows are a biased prefix of the texts).
    """
    store.require_complete(allow_incomplete)
    y_all = as_labels(labels, store.n_rows)
    k = _n_classes(y_all, n_classes)
    fit = StreamingFit(method, store.d_model, k, **options)
    start = 0
    # One shard in the read buffer and float64 batches of ``batch_size`` rows: memory is the
    # shard, a few batch-sized temporaries (the fitter's centred copies) and the statistics.
    for batch in store.iter_batches(batch_size, hook, shuffle=False, shards_in_buffer=1,
                                    dtype=torch.float64):
        n = batch.shape[0]
        fit.update(batch, y_all[start:start + n])
        start += n
    return fit.eraser()
