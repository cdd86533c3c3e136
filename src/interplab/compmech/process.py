"""Hidden Markov processes in the edge-emitting (Mealy) convention of computational mechanics.

``T[x, i, j] = P(emit x, go to state j | in state i)``: one labelled transition matrix per symbol.
Summed over ``x`` the matrices give the hidden chain's transition matrix; summed over ``x`` and ``j``
every state's outgoing probability mass is 1. This is the convention of the belief-geometry
literature, and the one in which the Bayesian belief update is a single matrix product
(``eta' = eta T[x] / eta T[x] 1``, see :mod:`interplab.compmech.beliefs`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from interplab.errors import InterplabError

# Outgoing mass must sum to 1 within this tolerance (user files are often written with 3-6 digits,
# so we are lenient and renormalise nothing: a sum off by more than this is an error).
_SUM_TOL = 1e-6


@dataclass(frozen=True, eq=False)
class HiddenMarkovProcess:
    """A stationary hidden Markov process over ``n_states`` hidden states and ``n_symbols`` symbols.

    Args:
        transitions: ``[n_symbols, n_states, n_states]`` array, ``T[x, i, j]`` as above.
        name: a short name used in reports.
        symbols: display names of the symbols (default ``"0"``, ``"1"``, ...).
        states: display names of the hidden states (default ``"s0"``, ``"s1"``, ...).

    Construction validates the array and raises :class:`InterplabError` naming the first problem.
    """

    transitions: np.ndarray
    name: str = "custom"
    symbols: tuple[str, ...] = field(default=())
    states: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        t = _validate_transitions(self.transitions, self.name)
        object.__setattr__(self, "transitions", t)
        n_x, n_s, _ = t.shape
        symbols = tuple(str(s) for s in self.symbols) or tuple(str(x) for x in range(n_x))
        states = tuple(str(s) for s in self.states) or tuple(f"s{i}" for i in range(n_s))
        if len(symbols) != n_x:
            raise InterplabError(
                f"process {self.name!r}: {len(symbols)} symbol names for {n_x} symbols; "
                "give one name per symbol (first axis of the transition array)"
            )
        if len(states) != n_s:
            raise InterplabError(
                f"process {self.name!r}: {len(states)} state names for {n_s} states; "
                "give one name per hidden state"
            )
        if len(set(symbols)) != n_x or len(set(states)) != n_s:
            raise InterplabError(f"process {self.name!r}: symbol and state names must be unique")
        object.__setattr__(self, "symbols", symbols)
        object.__setattr__(self, "states", states)
        # Computed once: every consumer needs it and a bad (reducible) process should fail early.
        object.__setattr__(self, "_stationary", _stationary(t, self.name))

    # ------------------------------------------------------------------ basic properties
    @property
    def n_symbols(self) -> int:
        return int(self.transitions.shape[0])

    @property
    def n_states(self) -> int:
        return int(self.transitions.shape[1])

    @property
    def state_transition_matrix(self) -> np.ndarray:
        """``[n_states, n_states]`` hidden-chain matrix ``sum_x T[x]`` (rows sum to 1)."""
        return self.transitions.sum(axis=0)

    @property
    def emission_matrix(self) -> np.ndarray:
        """``[n_states, n_symbols]``: ``P(emit x | in state i) = sum_j T[x, i, j]``."""
        return self.transitions.sum(axis=2).T

    def stationary_distribution(self) -> np.ndarray:
        """``[n_states]`` stationary distribution ``pi`` with ``pi @ sum_x T[x] = pi`` (a copy)."""
        return self._stationary.copy()  # type: ignore[attr-defined]

    def symbol_distribution(self, belief: np.ndarray | None = None) -> np.ndarray:
        """``[n_symbols]`` next-symbol probabilities given a belief (default: stationary)."""
        eta = self.stationary_distribution() if belief is None else np.asarray(belief, float)
        return eta @ self.emission_matrix

    @property
    def is_unifilar(self) -> bool:
        """True if each (state, symbol) with positive probability leads to exactly one state."""
        return bool(((self.transitions > 0).sum(axis=2) <= 1).all())

    # ------------------------------------------------------------------ sampling
    def sample(
        self,
        n_sequences: int,
        length: int,
        seed: int | np.random.Generator | None = 0,
        return_states: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Sample sequences whose first hidden state is drawn from the stationary distribution.

        Vectorised over the batch: one step draws the joint (symbol, next state) for every
        sequence with a single uniform variate and a cumulative table.

        Returns:
            symbols ``[n_sequences, length]`` int64; with ``return_states`` also the hidden
            states ``[n_sequences, length + 1]`` int64 (state before each symbol, then the last).
        """
        if n_sequences < 0 or length < 0:
            raise InterplabError("n_sequences and length must be non-negative integers")
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        n_x, n_s = self.n_symbols, self.n_states
        # joint[i, x * n_s + j] = T[x, i, j]; cumulative per state, last entry forced to 1.
        joint = self.transitions.transpose(1, 0, 2).reshape(n_s, n_x * n_s)
        cdf = np.cumsum(joint, axis=1)
        cdf /= cdf[:, -1:]
        cdf[:, -1] = 1.0
        states = np.empty((n_sequences, length + 1), dtype=np.int64)
        symbols = np.empty((n_sequences, length), dtype=np.int64)
        states[:, 0] = rng.choice(n_s, size=n_sequences, p=self._stationary)  # type: ignore[attr-defined]
        for t in range(length):
            u = rng.random(n_sequences)
            rows = cdf[states[:, t]]  # [n, n_x * n_s]
            idx = (rows <= u[:, None]).sum(axis=1)
            idx = np.minimum(idx, n_x * n_s - 1)
            symbols[:, t] = idx // n_s
            states[:, t + 1] = idx % n_s
        return (symbols, states) if return_states else symbols

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (round-trips through :meth:`from_dict`)."""
        return {
            "name": self.name,
            "symbols": list(self.symbols),
            "states": list(self.states),
            "transitions": self.transitions.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], name: str | None = None) -> HiddenMarkovProcess:
        if not isinstance(data, dict) or "transitions" not in data:
            raise InterplabError(
                "a process definition must be a JSON object with a 'transitions' key holding "
                "T[x][i][j] = P(emit x, go to state j | in state i); optional 'name', 'symbols', "
                "'states'"
            )
        unknown = set(data) - {"name", "symbols", "states", "transitions"}
        if unknown:
            raise InterplabError(
                f"unknown keys in process definition: {sorted(unknown)}; allowed: name, symbols, "
                "states, transitions"
            )
        try:
            t = np.asarray(data["transitions"], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InterplabError(
                f"process 'transitions' is not a rectangular array of numbers ({exc}); write it "
                "as a list (one per symbol) of square lists of lists"
            ) from None
        return cls(
            t,
            name=str(data.get("name", name or "custom")),
            symbols=tuple(data.get("symbols", ())),
            states=tuple(data.get("states", ())),
        )

    @classmethod
    def from_file(cls, path: str | Path) -> HiddenMarkovProcess:
        """Load a process from a ``.json`` definition or a ``.npy`` array ``[n_symbols, S, S]``."""
        p = Path(path)
        if not p.is_file():
            raise InterplabError(f"process file {str(p)!r} does not exist")
        if p.suffix == ".npy":
            try:
                t = np.load(p, allow_pickle=False)
            except ValueError as exc:
                raise InterplabError(f"cannot read {str(p)!r} as a plain .npy array: {exc}") from None
            return cls(np.asarray(t, dtype=np.float64), name=p.stem)
        if p.suffix == ".json":
            try:
                data = json.loads(p.read_text())
            except json.JSONDecodeError as exc:
                raise InterplabError(f"{str(p)!r} is not valid JSON: {exc}") from None
            return cls.from_dict(data, name=p.stem)
        raise InterplabError(
            f"unsupported process file {str(p)!r}: use a .json definition or a .npy array "
            "of shape [n_symbols, n_states, n_states]"
        )

    def save(self, path: str | Path) -> Path:
        """Write the JSON definition to ``path``."""
        p = Path(path)
        p.write_text(json.dumps(self.to_dict(), indent=2))
        return p


def _validate_transitions(transitions: Any, name: str) -> np.ndarray:
    try:
        t = np.array(transitions, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InterplabError(f"process {name!r}: transitions are not numeric ({exc})") from None
    if t.ndim != 3 or t.shape[1] != t.shape[2]:
        raise InterplabError(
            f"process {name!r}: transitions must have shape [n_symbols, n_states, n_states] "
            f"(T[x, i, j] = P(emit x, go to j | in i)); got shape {t.shape}"
        )
    if t.shape[0] < 1 or t.shape[1] < 1:
        raise InterplabError(f"process {name!r}: need at least one symbol and one state")
    if not np.isfinite(t).all():
        raise InterplabError(f"process {name!r}: transitions contain NaN or infinity")
    if (t < 0).any():
        x, i, j = (int(v) for v in np.argwhere(t < 0)[0])
        raise InterplabError(
            f"process {name!r}: negative probability T[{x}, {i}, {j}] = {t[x, i, j]:g}; "
            "all entries must be >= 0"
        )
    out_mass = t.sum(axis=(0, 2))
    bad = np.flatnonzero(np.abs(out_mass - 1.0) > _SUM_TOL)
    if bad.size:
        i = int(bad[0])
        raise InterplabError(
            f"process {name!r}: outgoing probability of state {i} sums to {out_mass[i]:.6g}, not 1; "
            "for every state i, sum over symbols x and next states j of T[x, i, j] must be 1"
        )
    t.setflags(write=False)
    return t


def _stationary(t: np.ndarray, name: str) -> np.ndarray:
    """Left eigenvector of ``sum_x T[x]`` with eigenvalue 1, normalised to sum 1."""
    m = t.sum(axis=0)
    vals, vecs = np.linalg.eig(m.T)
    ones = np.flatnonzero(np.abs(vals - 1.0) < 1e-8)
    if ones.size != 1:
        raise InterplabError(
            f"process {name!r}: the hidden chain has {ones.size} independent stationary "
            "distributions (it is not irreducible), so the process's start is ambiguous; "
            "connect its states or split it into separate processes"
        )
    pi = np.real(vecs[:, ones[0]])
    pi = pi / pi.sum()
    pi[np.abs(pi) < 1e-15] = 0.0
    if (pi < -1e-12).any():  # pragma: no cover - cannot happen for a single recurrent class
        raise InterplabError(f"process {name!r}: stationary distribution is not non-negative")
    pi = np.clip(pi, 0.0, None)
    pi /= pi.sum()
    pi.setflags(write=False)
    return pi
