"""The p-value of an observed value against draws of the same quantity under a null, and how a
p-value is printed.

A null made of ``k`` draws (norm-matched random directions, random subspaces, ...) gives the
Monte-Carlo p-value ``(1 + #draws at least as extreme) / (k + 1)``: never 0, and at its floor
``1 / (k + 1)`` when no draw is as extreme. A p-value at its floor is an upper bound (more draws
could give a smaller one), so it is printed as "p ≤ 1/(k+1)", never as an exact value.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from interplab.errors import InterplabError

ALTERNATIVES = ("two-sided", "greater", "less")


@dataclass(frozen=True)
class NullTest:
    """``p`` of an observed value among ``k`` null draws, its ``z``-score against them (None when
    the draws have no spread or there are fewer than 2) and whether ``p`` is at its floor
    ``1 / (k + 1)``. ``to_dict`` gives the JSON keys ``p``, ``k``, ``z``, ``at_floor``."""

    p: float
    k: int
    z: float | None
    at_floor: bool

    @property
    def floor(self) -> float:
        return 1.0 / (self.k + 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        """"p = 0.143", or at the floor "p ≤ 0.048 (floor, k = 20)"."""
        return format_p(self.p, at_floor=self.at_floor, k=self.k)


def null_p_value(observed: float, null_draws: Any, *, alternative: str = "two-sided",
                 center: float = 0.0) -> NullTest:
    """Where ``observed`` falls among ``null_draws`` (``[k]``, the same statistic under the null).

    ``p = (1 + #draws at least as extreme as observed) / (k + 1)``, ties counting as at least as
    extreme. "At least as extreme": ``|draw − center| ≥ |observed − center|`` for
    ``alternative="two-sided"`` (``center`` 0: a random direction's effect is as likely to be
    negative as positive), ``draw ≥ observed`` for ``"greater"``, ``draw ≤ observed`` for
    ``"less"``. ``z = (observed − mean) / sd`` of the draws (``ddof=1``).
    """
    if alternative not in ALTERNATIVES:
        raise InterplabError(f"alternative must be one of {', '.join(ALTERNATIVES)}, not "
                             f"{alternative!r}")
    null = np.asarray(null_draws, dtype=np.float64).reshape(-1)
    k = int(null.size)
    if k == 0 or not np.isfinite(null).all() or not math.isfinite(float(observed)):
        raise InterplabError(f"a null p-value needs at least one finite null draw and a finite "
                             f"observed value; got {k} draw(s), observed {observed}")
    observed = float(observed)
    if alternative == "two-sided":
        exceed = int(np.sum(np.abs(null - center) >= abs(observed - center)))
    elif alternative == "greater":
        exceed = int(np.sum(null >= observed))
    else:
        exceed = int(np.sum(null <= observed))
    sd = float(null.std(ddof=1)) if k > 1 else 0.0
    z = (observed - float(null.mean())) / sd if sd > 0 else None
    return NullTest(p=(1 + exceed) / (k + 1), k=k, z=z, at_floor=exceed == 0)


def _number(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def format_p(p: float | None, *, at_floor: bool = False, k: int | None = None, name: str = "p",
             draws: str = "k") -> str:
    """A p- (or q-) value for people: ``"p = 0.143"``; at its floor an upper bound,
    ``"p ≤ 0.048 (floor, k = 20)"`` (``draws`` names the count, e.g. ``"B"`` for bootstrap
    resamples; without ``k``: ``"q ≤ 0.048"``); ``"p n/a"`` for a missing value."""
    if p is None or p != p:
        return f"{name} n/a"
    if not at_floor:
        return f"{name} = {_number(p)}"
    return f"{name} ≤ {_number(p)}" + (f" (floor, {draws} = {k})" if k is not None else "")
