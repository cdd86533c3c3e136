"""Benchmark of exact inference in interplab.compmech.

Times (best of ``--repeat`` runs, wall clock):
* belief states for all 3^10 length-10 Mess3 sequences (target: < 1 s);
* the optimal per-position cross-entropy of Mess3 at context 10;
* the mixed-state presentation of RRXOR (36 beliefs) and of Mess3 to depth 8;
* the belief-regression dataset of Mess3 at length 10 (88,572 distinct prefixes).

Run: ``PYTHONPATH=src python bench/bench_beliefs.py`` (add ``--json`` for machine-readable output).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from typing import Any

from interplab.compmech import (
    all_sequences,
    belief_dataset,
    belief_states,
    mess3,
    mixed_state_presentation,
    optimal_cross_entropy,
    rrxor,
)


def best_of(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    p = mess3()
    seqs = all_sequences(3, 10)
    rows = []
    t, (b, _) = best_of(lambda: belief_states(p, seqs), args.repeat)
    rows.append(("belief states, all 3^10 Mess3 sequences (59,049 x 11 beliefs)", t, b.shape[0]))
    t, _ = best_of(lambda: all_sequences(3, 10), args.repeat)
    rows.append(("enumerate all 3^10 sequences", t, 59049))
    t, f = best_of(lambda: optimal_cross_entropy(p, 10), args.repeat)
    rows.append(("optimal per-position cross-entropy, Mess3, context 10", t, len(f)))
    t, m = best_of(lambda: mixed_state_presentation(rrxor(), 30), args.repeat)
    rows.append(("mixed-state presentation, RRXOR (complete)", t, m.n_states))
    t, m = best_of(lambda: mixed_state_presentation(p, 8), max(1, args.repeat // 2))
    rows.append(("mixed-state presentation, Mess3, depth 8", t, m.n_states))
    t, d = best_of(lambda: belief_dataset(p, 10), max(1, args.repeat // 2))
    rows.append(("regression dataset, Mess3 length 10 (distinct prefixes)", t, d.n_rows))

    machine = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    if args.json:
        print(json.dumps({"machine": machine, "results": [
            {"what": w, "seconds": s, "count": c} for w, s, c in rows
        ]}, indent=1))
        return
    print(f"machine: {machine}")
    print(f"{'what':<66} {'seconds':>9} {'count':>8}")
    for w, s, c in rows:
        print(f"{w:<66} {s:>9.4f} {c:>8}")
    target = rows[0][1]
    print(f"\nall 3^10 Mess3 belief states: {target:.3f} s (target < 1 s: "
          f"{'met' if target < 1.0 else 'NOT met'})")


if __name__ == "__main__":
    main()
