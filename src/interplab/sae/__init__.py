"""Sparse autoencoders: architectures, one trainer, one audited metrics module, formats.

>>> from interplab.sae import SAEConfig, TrainerConfig, SAETrainer
>>> from interplab.sae import save_sae, load_sae, load_saelens, load_dictionary_learning
"""

from interplab.sae import gated, jumprelu, relu, topk  # noqa: F401  (fill the registry)
from interplab.sae.base import (
    REGISTRY,
    SAEConfig,
    SparseAutoencoder,
    TrainingLoss,
    architectures,
    create_sae,
)
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
from interplab.sae.trainer import SAETrainer, TrainerConfig, train_saes

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
