"""Sparse autoencoders: architectures, one trainer, one audited metrics module, formats.

>>> from interplab.sae import SAEConfig, TrainerConfig, SAETrainer
>>> from interplab.sae import save_sae, load_sae, load_saelens, load_dictionary_learning

Names load on first use (importing the package, e.g. for :mod:`interplab.sae.config`, does not
import torch); anything taken from :mod:`interplab.sae.base` comes with every architecture
registered.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from interplab.sae.base import (
        REGISTRY,
        SparseAutoencoder,
        TrainingLoss,
        architectures,
        create_sae,
    )
    from interplab.sae.config import SAEConfig, TrainerConfig
    from interplab.sae.evaluate import evaluate_reconstruction
    from interplab.sae.formats import (
        export_saelens,
        load_dictionary_learning,
        load_sae,
        load_saelens,
        save_sae,
    )
    from interplab.sae.metrics import (
        ReconstructionAccumulator,
        ReconstructionMetrics,
        reconstruction_metrics,
    )
    from interplab.sae.trainer import SAETrainer, train_saes

_LAZY = {  # name -> submodule
    "REGISTRY": "base",
    "SparseAutoencoder": "base",
    "TrainingLoss": "base",
    "architectures": "base",
    "create_sae": "base",
    "SAEConfig": "config",
    "TrainerConfig": "config",
    "evaluate_reconstruction": "evaluate",
    "export_saelens": "formats",
    "load_dictionary_learning": "formats",
    "load_sae": "formats",
    "load_saelens": "formats",
    "save_sae": "formats",
    "ReconstructionAccumulator": "metrics",
    "ReconstructionMetrics": "metrics",
    "reconstruction_metrics": "metrics",
    "SAETrainer": "trainer",
    "train_saes": "trainer",
}

__all__ = [
    "REGISTRY",
    "SAEConfig",
    "SparseAutoencoder",
    "TrainingLoss",
    "architectures",
    "create_sae",
    "evaluate_reconstruction",
    "export_saelens",
    "load_dictionary_learning",
    "load_sae",
    "load_saelens",
    "save_sae",
    "ReconstructionAccumulator",
    "ReconstructionMetrics",
    "reconstruction_metrics",
    "SAETrainer",
    "TrainerConfig",
    "train_saes",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'interplab.sae' has no attribute {name!r}")
    module = importlib.import_module(f"interplab.sae.{_LAZY[name]}")
    if _LAZY[name] == "base":
        module._import_all()  # fill the architecture registry
    value = getattr(module, name)
    globals()[name] = value
    return value
