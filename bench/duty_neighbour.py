"""A neighbour process that keeps one CPU busy for a fraction of the time, for benchmarks that
measure what a partly busy core costs.

Usage: python bench/duty_neighbour.py 0.3 &   (busy 30 ms of every 100 ms, asleep the rest;
stop it with kill)
"""

from __future__ import annotations

import sys
import time

PERIOD_S = 0.1


def main() -> None:
    fraction = float(sys.argv[1]) if len(sys.argv) > 1 else 0.5
    if not 0.0 < fraction < 1.0:
        sys.exit(f"the busy fraction must lie strictly between 0 and 1, not {fraction}")
    while True:
        start = time.monotonic()
        while time.monotonic() - start < fraction * PERIOD_S:
            pass
        time.sleep((1.0 - fraction) * PERIOD_S)


if __name__ == "__main__":
    main()
