"""Named processes from the computational-mechanics literature, and :func:`get_process`.

Every preset returns a :class:`HiddenMarkovProcess` in the ``T[x, i, j]`` convention.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from interplab.compmech.process import HiddenMarkovProcess
from interplab.errors import InterplabError


def _check_prob(name: str, value: float, process: str, open_interval: bool = False) -> float:
    v = float(value)
    ok = 0.0 < v < 1.0 if open_interval else 0.0 <= v <= 1.0
    if not ok:
        rng = "(0, 1)" if open_interval else "[0, 1]"
        raise InterplabError(f"{process}: parameter {name}={value!r} must lie in {rng}")
    return v


def mess3(x: float = 0.05, alpha: float = 0.85) -> HiddenMarkovProcess:
    """Mess3: 3 states, 3 symbols; state ``i`` prefers to stay (``1 - 2x``) and to emit ``i``
    (``alpha``). Its belief states form a fractal in the 2-simplex; its stationary distribution is
    uniform. ``x = 0.05, alpha = 0.85`` are the parameters of the belief-geometry paper."""
    x = _check_prob("x", x, "mess3")
    if x > 0.5:
        raise InterplabError(f"mess3: parameter x={x} must be at most 0.5 (1 - 2x is a probability)")
    a = _check_prob("alpha", alpha, "mess3")
    b, y = (1 - a) / 2, 1 - 2 * x
    t = np.empty((3, 3, 3))
    for sym in range(3):
        for i in range(3):
            for j in range(3):
                stay = y if i == j else x  # hidden move i -> j
                emit = a if j == sym else b  # symbol emitted on arrival in j
                t[sym, i, j] = stay * emit
    return HiddenMarkovProcess(
        t, name=f"mess3(x={x:g}, alpha={a:g})", symbols=("A", "B", "C"), states=("0", "1", "2")
    )


def rrxor(p1: float = 0.5, p2: float = 0.5) -> HiddenMarkovProcess:
    """Random-Random-XOR: two random bits (``P(0) = p1`` then ``P(0) = p2``) followed by their
    XOR. States S, 0, 1, T, F; stationary distribution ``(2, 1, 1, 1, 1) / 6`` at ``p = 1/2``."""
    p1 = _check_prob("p1", p1, "rrxor", open_interval=True)
    p2 = _check_prob("p2", p2, "rrxor", open_interval=True)
    s, z, o, tt, ff = range(5)
    t = np.zeros((2, 5, 5))
    t[0, s, z], t[1, s, o] = p1, 1 - p1  # first random bit
    t[0, z, ff], t[1, z, tt] = p2, 1 - p2  # second random bit; T/F = value of the XOR
    t[0, o, tt], t[1, o, ff] = p2, 1 - p2
    t[1, tt, s] = 1.0  # XOR = 1
    t[0, ff, s] = 1.0  # XOR = 0
    return HiddenMarkovProcess(
        t, name=f"rrxor(p1={p1:g}, p2={p2:g})", symbols=("0", "1"), states=("S", "0", "1", "T", "F")
    )


def z1r(p: float = 0.5) -> HiddenMarkovProcess:
    """Zero-One-Random: emits 0, then 1, then a random bit (``P(0) = p``), forever."""
    p = _check_prob("p", p, "z1r", open_interval=True)
    t = np.zeros((2, 3, 3))
    zero, one, rand = range(3)
    t[0, zero, one] = 1.0
    t[1, one, rand] = 1.0
    t[0, rand, zero], t[1, rand, zero] = p, 1 - p
    return HiddenMarkovProcess(t, name=f"z1r(p={p:g})", symbols=("0", "1"), states=("Z", "O", "R"))


def even_process(p: float = 0.5) -> HiddenMarkovProcess:
    """Even process: 1s come in blocks of even length. State A emits 0 (``p``, stay) or 1 (go to
    B); B emits 1 and returns to A. Infinite Markov order, stationary ``(1, 1-p) / (2-p)``."""
    p = _check_prob("p", p, "even", open_interval=True)
    t = np.zeros((2, 2, 2))
    t[0, 0, 0], t[1, 0, 1] = p, 1 - p
    t[1, 1, 0] = 1.0
    return HiddenMarkovProcess(t, name=f"even(p={p:g})", symbols=("0", "1"), states=("A", "B"))


def golden_mean(p: float = 0.5) -> HiddenMarkovProcess:
    """Golden-mean process: no two consecutive 0s. State A emits 1 (``p``, stay) or 0 (go to B);
    B emits 1 and returns to A. Markov order 1, stationary ``(1, 1-p) / (2-p)``."""
    p = _check_prob("p", p, "golden_mean", open_interval=True)
    t = np.zeros((2, 2, 2))
    t[1, 0, 0], t[0, 0, 1] = p, 1 - p
    t[1, 1, 0] = 1.0
    return HiddenMarkovProcess(t, name=f"golden_mean(p={p:g})", symbols=("0", "1"), states=("A", "B"))


PRESETS: dict[str, Callable[..., HiddenMarkovProcess]] = {
    "mess3": mess3,
    "rrxor": rrxor,
    "z1r": z1r,
    "even": even_process,
    "golden_mean": golden_mean,
}


def get_process(spec: str | Path, **params: Any) -> HiddenMarkovProcess:
    """A preset by name (``"mess3"``, ``"rrxor"``, ``"z1r"``, ``"even"``, ``"golden_mean"``) with
    keyword parameters, or a user process from a ``.json`` / ``.npy`` file path."""
    key = str(spec).strip()
    norm = key.lower().replace("-", "_")
    if norm in PRESETS:
        try:
            return PRESETS[norm](**params)
        except TypeError as exc:
            import inspect

            allowed = list(inspect.signature(PRESETS[norm]).parameters)
            raise InterplabError(
                f"bad parameters {sorted(params)} for process {norm!r} ({exc}); "
                f"it accepts {allowed}"
            ) from None
    if key.endswith((".json", ".npy")) or Path(key).exists():
        if params:
            raise InterplabError("parameters apply to presets only, not to a process file")
        return HiddenMarkovProcess.from_file(key)
    raise InterplabError(
        f"unknown process {key!r}: use one of {sorted(PRESETS)} or a path to a .json / .npy file"
    )
