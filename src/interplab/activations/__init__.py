"""Position selectors, harvesting, and the on-disk activation store."""

from interplab.activations.harvest import Activations, harvest, harvest_tokens
from interplab.activations.positions import Positions
from interplab.activations.store import ActivationStore, StoreWriter, VerifyReport
from interplab.activations.to_store import dataset_identity, harvest_to_store

__all__ = [
    "ActivationStore",
    "Activations",
    "Positions",
    "StoreWriter",
    "VerifyReport",
    "dataset_identity",
    "harvest",
    "harvest_tokens",
    "harvest_to_store",
]
