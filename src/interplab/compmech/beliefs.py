"""Exact Bayesian inference over a process's hidden states.

* :func:`belief_states` — the belief ``eta_t = P(state | x_0..x_{t-1})`` at every position of a
  batch of sequences, vectorised over the batch, with each prefix's log-probability.
* :func:`mixed_state_presentation` — every distinct belief reachable within ``depth`` symbols
  (the mixed-state presentation, MSP), with its transitions.
* :func:`optimal_cross_entropy` and :func:`entropy_rate` — the floor a perfect predictor reaches at
  each context position, in nats.

The update is ``eta' = eta T[x] / (eta T[x] 1)`` starting from the stationary distribution.
Beliefs are deduplicated by rounding to ``1 / quantum`` (default 1e-9), far above float error and
far below any distance that matters for the geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from interplab.compmech.process import HiddenMarkovProcess
from interplab.errors import InterplabError

_QUANTUM = 1e9


def _check_sequences(process: HiddenMarkovProcess, sequences: np.ndarray) -> np.ndarray:
    seq = np.asarray(sequences)
    if seq.ndim == 1:
        seq = seq[None, :]
    if seq.ndim != 2:
        raise InterplabError(f"sequences must be [n_sequences, length]; got shape {seq.shape}")
    if seq.size and not np.issubdtype(seq.dtype, np.integer):
        raise InterplabError("sequences must hold integer symbol ids")
    if seq.size and (seq.min() < 0 or seq.max() >= process.n_symbols):
        raise InterplabError(
            f"sequences hold symbol ids outside [0, {process.n_symbols - 1}] for process "
            f"{process.name!r}"
        )
    return seq.astype(np.int64, copy=False)


def belief_states(
    process: HiddenMarkovProcess,
    sequences: np.ndarray,
    initial: np.ndarray | None = None,
    allow_impossible: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Beliefs over hidden states after each prefix of each sequence.

    Args:
        process: the generating process.
        sequences: ``[n, L]`` integer symbol ids.
        initial: ``[n_states]`` starting belief (default: stationary distribution).
        allow_impossible: if False, a sequence of probability 0 raises; if True its beliefs from
            the impossible symbol on are NaN and its log-probability is ``-inf``.

    Returns:
        ``beliefs [n, L + 1, n_states]`` (``beliefs[:, t]`` has seen ``t`` symbols, so
        ``beliefs[:, 0]`` is the initial belief) and ``log_probs [n, L + 1]`` in nats
        (``log_probs[:, t] = log P(x_0..x_{t-1})``).
    """
    seq = _check_sequences(process, sequences)
    n, length = seq.shape
    t = process.transitions
    eta = process.stationary_distribution() if initial is None else np.asarray(initial, float)
    if eta.shape != (process.n_states,):
        raise InterplabError(f"initial belief must have shape ({process.n_states},)")
    beliefs = np.empty((n, length + 1, process.n_states))
    log_probs = np.zeros((n, length + 1))
    cur = np.broadcast_to(eta, (n, process.n_states)).copy()
    beliefs[:, 0] = cur
    with np.errstate(divide="ignore", invalid="ignore"):
        for pos in range(length):
            # Group by symbol: one [m, S] @ [S, S] product per symbol is far faster than a
            # gathered [n, S, S] batch of matrices.
            nxt = np.empty_like(cur)
            for x in range(process.n_symbols):
                rows = seq[:, pos] == x
                if rows.any():
                    nxt[rows] = cur[rows] @ t[x]
            norm = nxt.sum(axis=1)
            lp = log_probs[:, pos] + np.log(norm)
            log_probs[:, pos + 1] = np.where(np.isnan(lp), -np.inf, lp)  # stays -inf once impossible
            cur = nxt / norm[:, None]
            beliefs[:, pos + 1] = cur
    impossible = ~np.isfinite(log_probs[:, -1])
    if impossible.any() and not allow_impossible:
        i = int(np.flatnonzero(impossible)[0])
        raise InterplabError(
            f"sequence {i} ({seq[i].tolist()}) has probability 0 under {process.name!r}; "
            "pass allow_impossible=True to get NaN beliefs for such sequences"
        )
    return beliefs, log_probs


def _quantize(beliefs: np.ndarray) -> np.ndarray:
    return np.round(beliefs * _QUANTUM).astype(np.int64)


def _step_all(process: HiddenMarkovProcess, beliefs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All one-symbol successors of ``beliefs [k, S]``: ``[k, X, S]`` beliefs and ``[k, X]`` probs."""
    unnorm = np.einsum("ks,xsj->kxj", beliefs, process.transitions)
    probs = unnorm.sum(axis=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        nxt = unnorm / probs[:, :, None]
    return nxt, probs


@dataclass(frozen=True, eq=False)
class MixedStatePresentation:
    """The distinct beliefs reachable within ``depth`` symbols, and the transitions between them.

    Attributes:
        beliefs: ``[k, n_states]``, ``beliefs[0]`` is the initial (stationary) belief.
        first_depth: ``[k]`` the fewest symbols after which each belief is reached.
        sources, symbols, targets: ``[m]`` transitions ``beliefs[src] --symbol--> beliefs[dst]``
            (only for beliefs first reached before ``depth``).
        probabilities: ``[m]`` ``P(symbol | belief[src])`` of each transition.
        depth: the depth explored; ``complete`` is True if no new belief appeared at the last depth
            (the MSP is then finite and fully enumerated).
    """

    beliefs: np.ndarray
    first_depth: np.ndarray
    sources: np.ndarray
    symbols: np.ndarray
    targets: np.ndarray
    probabilities: np.ndarray
    depth: int
    complete: bool

    @property
    def n_states(self) -> int:
        """Number of distinct mixed states (beliefs)."""
        return int(self.beliefs.shape[0])


def mixed_state_presentation(
    process: HiddenMarkovProcess, depth: int, max_states: int = 2_000_000
) -> MixedStatePresentation:
    """Breadth-first enumeration of the beliefs reachable within ``depth`` symbols, deduplicated.

    Stops early once a depth adds no new belief (``complete=True``). Raises if more than
    ``max_states`` beliefs would be stored (Mess3 grows like ``3^depth``).
    """
    if depth < 0:
        raise InterplabError("depth must be >= 0")
    start = process.stationary_distribution()[None, :]
    index: dict[bytes, int] = {_quantize(start)[0].tobytes(): 0}
    beliefs = [start[0]]
    first = [0]
    src: list[np.ndarray] = []
    sym: list[np.ndarray] = []
    dst: list[np.ndarray] = []
    prb: list[np.ndarray] = []
    frontier = np.array([0])
    complete = False
    for d in range(1, depth + 1):
        fb = np.stack([beliefs[i] for i in frontier])
        nxt, probs = _step_all(process, fb)
        k, n_x = probs.shape
        ok = probs > 0
        fi, xi = np.nonzero(ok)
        cand = nxt[fi, xi]
        keys = _quantize(cand)
        targets = np.empty(len(cand), dtype=np.int64)
        new: list[int] = []
        for r in range(len(cand)):
            key = keys[r].tobytes()
            j = index.get(key)
            if j is None:
                j = len(beliefs)
                index[key] = j
                beliefs.append(cand[r])
                first.append(d)
                new.append(j)
                if len(beliefs) > max_states:
                    raise InterplabError(
                        f"mixed-state presentation of {process.name!r} exceeds {max_states} "
                        f"beliefs at depth {d}; lower depth or raise max_states"
                    )
            targets[r] = j
        src.append(frontier[fi])
        sym.append(xi)
        dst.append(targets)
        prb.append(probs[fi, xi])
        frontier = np.array(new, dtype=np.int64)
        if not new:
            complete = True
            break
    cat = (lambda a, dt: np.concatenate(a).astype(dt)) if src else (lambda a, dt: np.zeros(0, dt))
    return MixedStatePresentation(
        beliefs=np.stack(beliefs),
        first_depth=np.asarray(first, dtype=np.int64),
        sources=cat(src, np.int64),
        symbols=cat(sym, np.int64),
        targets=cat(dst, np.int64),
        probabilities=cat(prb, np.float64),
        depth=depth,
        complete=complete,
    )


def belief_distributions(
    process: HiddenMarkovProcess, depth: int, max_states: int = 5_000_000
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The distribution over beliefs after ``t`` symbols, for ``t = 0..depth``.

    Returns a list of ``(beliefs [k_t, S], probabilities [k_t])``; equal beliefs are merged (their
    probabilities summed), which keeps finite MSPs (RRXOR, Z1R) cheap at any depth.
    """
    if depth < 0:
        raise InterplabError("depth must be >= 0")
    cur_b = process.stationary_distribution()[None, :]
    cur_p = np.ones(1)
    out = [(cur_b, cur_p)]
    for _ in range(depth):
        cur_b, cur_p = _merged_step(process, cur_b, cur_p)
        if len(cur_p) > max_states:
            raise InterplabError(
                f"{process.name!r} has more than {max_states} distinct beliefs at this depth; "
                "use a shorter context"
            )
        out.append((cur_b, cur_p))
    return out


def _merged_step(
    process: HiddenMarkovProcess, beliefs: np.ndarray, probs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One symbol later: successor beliefs of ``beliefs [k, S]`` (weights ``probs [k]``), equal
    beliefs merged and their probabilities summed."""
    nxt, sym_probs = _step_all(process, beliefs)
    w = probs[:, None] * sym_probs  # [k, X]
    ok = w > 0
    cand, cw = nxt[ok], w[ok]
    uniq, inv = np.unique(_quantize(cand), axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    merged = np.bincount(inv, weights=cw, minlength=len(uniq))
    rep = np.empty(len(uniq), dtype=np.int64)
    rep[inv[::-1]] = np.arange(len(inv))[::-1]  # one exact representative per class
    return cand[rep], merged


def _entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    return terms.sum(axis=axis)


def optimal_cross_entropy(process: HiddenMarkovProcess, context_length: int) -> np.ndarray:
    """``[context_length]`` nats: ``H(X_t | X_0..X_{t-1})`` for ``t = 1..context_length``.

    Entry ``k`` is the lowest expected cross-entropy any predictor can reach at position ``k`` of
    a next-token model that has read ``k + 1`` symbols (the model never predicts the first symbol).
    Computed exactly from the distribution over beliefs.
    """
    if context_length < 1:
        raise InterplabError("context_length must be >= 1")
    dists = belief_distributions(process, context_length)
    em = process.emission_matrix
    return np.array(
        [float(p @ _entropy(b @ em)) for b, p in dists[1 : context_length + 1]], dtype=np.float64
    )


def block_entropy_rates(process: HiddenMarkovProcess, depth: int) -> np.ndarray:
    """``[depth + 1]`` nats: ``h(L) = H(X_L | X_0..X_{L-1})`` for ``L = 0..depth`` (non-increasing,
    converging to the entropy rate from above)."""
    em = process.emission_matrix
    return np.array([float(p @ _entropy(b @ em)) for b, p in belief_distributions(process, depth)])


def entropy_rate(process: HiddenMarkovProcess, tol: float = 1e-7, max_depth: int = 40) -> float:
    """Entropy rate ``h_mu`` in nats per symbol.

    Unifilar processes (each state and symbol determine the next state) have the closed form
    ``sum_i pi_i H(X | state i)``. Otherwise ``h(L)`` is iterated until it changes by less than
    ``tol`` or the number of distinct beliefs gets too large; the last ``h(L)`` (an upper bound
    within ``~tol`` for synchronising processes) is returned.
    """
    if process.is_unifilar:
        pi = process.stationary_distribution()
        return float(pi @ _entropy(process.emission_matrix))
    em = process.emission_matrix
    b, p = process.stationary_distribution()[None, :], np.ones(1)
    prev = float(p @ _entropy(b @ em))
    for _ in range(max_depth):
        b, p = _merged_step(process, b, p)
        h = float(p @ _entropy(b @ em))
        if abs(prev - h) < tol or len(p) > 1_000_000:
            return h
        prev = h
    return prev


def all_sequences(n_symbols: int, length: int) -> np.ndarray:
    """``[n_symbols ** length, length]`` every sequence in lexicographic order."""
    if n_symbols**length > 50_000_000:
        raise InterplabError(f"{n_symbols}^{length} sequences are too many to enumerate")
    if length == 0:
        return np.zeros((1, 0), dtype=np.int64)
    codes = np.arange(n_symbols**length, dtype=np.int64)
    return np.stack(np.unravel_index(codes, (n_symbols,) * length), axis=1).astype(np.int64)
