"""Model specs for the Ray tests, importable by Ray worker processes."""

import os
from dataclasses import dataclass
from pathlib import Path

from interplab.distributed import ModelSpec


@dataclass(frozen=True)
class DiesOnceSpec(ModelSpec):
    """A tiny model whose first forward pass, in whichever worker runs it first, kills that
    worker process (``os._exit``) mid-task; ``marker`` records that it happened, so the retried
    task runs normally."""

    marker: str = ""

    def load(self):
        lm = super().load()

        def die_once(module, args):
            if not Path(self.marker).exists():
                Path(self.marker).write_text(str(os.getpid()))
                os._exit(1)

        lm.base.register_forward_pre_hook(die_once)
        return lm


@dataclass(frozen=True)
class OtherWeightsSpec(ModelSpec):
    """The tiny model built from another seed: other weights than the driver's."""

    def load(self):
        return ModelSpec(self.spec, seed=self.seed + 1).load()
