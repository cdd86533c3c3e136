"""Fitted erasers: cheap to apply, frozen, separate from the statistics that produced them.

Two kinds:

* :class:`LinearEraser` — an affine edit ``x' = x − ((x − bias) @ right.T) @ left.T`` of rank
  ``k`` (LEACE, its orthogonal variant, mean-difference projection, INLP, a random subspace).
  It needs no labels, so it can run inside a model's forward pass.
* :class:`LabelledEraser` — an edit that needs each row's concept label at apply time (oracle
  LEACE, quadratic LEACE, mean matching, median matching). These answer "what is left once the
  label is known", not "can the model work without the concept"; they cannot run inside the model
  on unlabelled text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from interplab.errors import InterplabError

# Columns of an edit whose norm is below this fraction of the largest are dropped: LEACE keeps
# its zeroed singular directions as zero columns, and a [d, d] product costs d/k times a [d, k] one.
_RANK_TOL = 1e-9


def as_tensor64(X: Any) -> torch.Tensor:
    """``X`` (array or tensor) as a float64 CPU tensor ``[n, d]``; non-finite or ragged input is
    refused with one clear error."""
    t = X.detach().cpu() if isinstance(X, torch.Tensor) else torch.from_numpy(np.asarray(X))
    t = t.to(torch.float64)
    if t.ndim != 2 or t.shape[0] == 0:
        raise InterplabError(f"activations must be a non-empty 2-D [n_rows, d_model] array, got "
                             f"shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise InterplabError("activations contain NaN or infinite values; remove those rows first")
    return t


def as_labels(y: Any, n: int) -> torch.Tensor:
    """Integer class labels ``[n]`` (0..k−1) as an int64 tensor, checked against ``n`` rows."""
    arr = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y).reshape(-1)
    if arr.size != n:
        raise InterplabError(f"got {arr.size} labels for {n} rows; pass one integer label per row")
    numeric = np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
    if not numeric or (arr.size and not np.all(np.mod(arr, 1) == 0)):
        raise InterplabError("labels must be integers 0..k−1 (e.g. 0 = false, 1 = true)")
    arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise InterplabError("labels must be integers 0..k−1; found a negative label")
    return torch.from_numpy(arr)


def one_hot(y: torch.Tensor, n_classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(y, n_classes).to(torch.float64)


@dataclass(frozen=True)
class LinearEraser:
    """``x' = x − ((x − bias) @ right.T) @ left.T``; ``left``/``right`` are ``[d, k]``/``[k, d]``.

    ``method`` names how it was fitted. Applying it keeps ``x``'s dtype (the edit is cast once
    with :meth:`to`, e.g. to the model's float32, before it runs inside a forward pass).
    """

    method: str
    left: torch.Tensor  # [d, k]
    right: torch.Tensor  # [k, d]
    bias: torch.Tensor | None  # [d]
    needs_labels: ClassVar[bool] = False

    @classmethod
    def trimmed(cls, method: str, left: torch.Tensor, right: torch.Tensor,
                bias: torch.Tensor | None) -> LinearEraser:
        """An eraser without the (numerically) zero columns of ``left @ right``."""
        weight = left.norm(dim=0) * right.norm(dim=1)  # [k]
        keep = weight > _RANK_TOL * max(float(weight.max()), 1e-300) if weight.numel() else weight > 0
        return cls(method, left[:, keep].contiguous(), right[keep].contiguous(), bias)

    @property
    def d_model(self) -> int:
        return int(self.left.shape[0])

    @property
    def rank(self) -> int:
        """Rank of the edit (columns kept); the random-subspace control uses the same rank."""
        return int(self.left.shape[1])

    @property
    def control_rank(self) -> int:
        """Rank of the random-subspace control: the same as the edit's."""
        return self.rank

    @property
    def matrix(self) -> torch.Tensor:
        """The ``[d, d]`` linear part ``I − left @ right`` (for inspection; not used to apply)."""
        eye = torch.eye(self.d_model, dtype=self.left.dtype)
        return eye - self.left @ self.right

    def to(self, dtype: torch.dtype, device: str | torch.device | None = None) -> LinearEraser:
        def cast(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(dtype=dtype, device=device)

        return LinearEraser(self.method, cast(self.left), cast(self.right), cast(self.bias))  # type: ignore[arg-type]

    def __call__(self, x: torch.Tensor, y: Any = None) -> torch.Tensor:
        """Erase from ``x`` ``[..., d]`` (``y`` is ignored; accepted so every eraser is called
        alike)."""
        if x.shape[-1] != self.d_model:
            raise InterplabError(f"this eraser was fitted on d_model={self.d_model}; the "
                                 f"activations have {x.shape[-1]} features")
        left, right, bias = self.left, self.right, self.bias
        if left.dtype != x.dtype or left.device != x.device:
            cast = self.to(x.dtype, x.device)
            left, right, bias = cast.left, cast.right, cast.bias
        delta = x - bias if bias is not None else x
        return x - (delta @ right.T) @ left.T

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "rank": self.rank, "d_model": self.d_model,
                "affine": self.bias is not None}


@dataclass(frozen=True)
class LabelledEraser:
    """An edit that needs each row's label: ``fn(x [n, d] float64, y [n] int64) -> x'``.

    ``control_rank`` is the dimension of the span the edit moves rows along (``n_classes − 1`` for
    the class-shift edits); the random-subspace control erases that many random directions.
    """

    method: str
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    d_model: int
    n_classes: int
    needs_labels: ClassVar[bool] = True

    @property
    def control_rank(self) -> int:
        return max(1, self.n_classes - 1)

    def __call__(self, x: torch.Tensor, y: Any = None) -> torch.Tensor:
        if y is None:
            raise InterplabError(f"the {self.method} eraser needs each row's label at apply time "
                                 "(it is an oracle edit); pass y, or use a linear method such as "
                                 "leace to erase without labels")
        if x.ndim != 2 or x.shape[-1] != self.d_model:
            raise InterplabError(f"this eraser expects [n_rows, {self.d_model}] activations, got "
                                 f"{tuple(x.shape)}")
        labels = as_labels(y, x.shape[0])
        if labels.numel() and int(labels.max()) >= self.n_classes:
            raise InterplabError(f"label {int(labels.max())} was not seen when fitting "
                                 f"({self.n_classes} classes)")
        return self.fn(x.to(torch.float64), labels).to(x.dtype)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "rank": None, "control_rank": self.control_rank,
                "d_model": self.d_model, "n_classes": self.n_classes}


def shift_eraser(method: str, shifts: torch.Tensor) -> LabelledEraser:
    """``x' = x − shifts[y]`` (``shifts`` ``[k, d]``): mean or median matching."""

    def fn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x - shifts[y]

    return LabelledEraser(method, fn, int(shifts.shape[1]), int(shifts.shape[0]))


Eraser = LinearEraser | LabelledEraser
