"""A store harvest, run in a subprocess by the crash/resume test (and in its own process, by
:func:`harvest` with one thread, for the reference and the resume).

Usage: python _store_worker.py OUT_DIR SLOW_SECONDS
With SLOW_SECONDS > 0 every shard write is followed by a pause, so the parent can kill the process
with SIGKILL in the middle of the harvest.
"""

import sys
import time

from interplab.activations import harvest_to_store, store
from interplab.models import load

TEXTS = [f"Sample text number {i} about cities, bees, probes and rivers." * (1 + i % 3)
         for i in range(240)]


def main() -> None:
    out, slow = sys.argv[1], float(sys.argv[2])
    if slow > 0:
        original = store.StoreWriter.add_shard

        def slow_write(self, entry, exclusion_count=None):
            original(self, entry, exclusion_count)
            print(f"shard {len(self.manifest['shards'])}", flush=True)
            time.sleep(slow)

        store.StoreWriter.add_shard = slow_write
    harvest(out)


def harvest(out: str) -> None:
    """The harvest, on one thread (as the test processes run), so every process writes the same
    bytes."""
    from interplab.threads import limit_threads

    lm = load("tiny-gpt2", seed=0)
    with limit_threads(1):
        harvest_to_store(lm, TEXTS, ["blocks.2.hook_resid_post", "blocks.1.hook_mlp_out"], out,
                         "all", batch_size=8, rows_per_shard=300, texts_per_chunk=16,
                         progress=False)


if __name__ == "__main__":
    main()
