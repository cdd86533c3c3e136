"""Computational mechanics: hidden Markov processes, exact belief states, a toy transformer, and
the regression of its residual stream onto the belief simplex.

Data flow: a :class:`HiddenMarkovProcess` (``process``, ``presets``) samples training sequences
and gives exact beliefs and loss floors (``beliefs``); a :class:`GPT` (``transformer``) is trained
on the samples (``train``); its residual stream at every distinct prefix (``regression``) is
regressed onto the exact beliefs. Nothing here imports the language-model stack.
"""

from interplab.compmech.beliefs import (
    MixedStatePresentation,
    all_sequences,
    belief_distributions,
    belief_states,
    block_entropy_rates,
    entropy_rate,
    mixed_state_presentation,
    optimal_cross_entropy,
)
from interplab.compmech.presets import (
    PRESETS,
    even_process,
    get_process,
    golden_mean,
    mess3,
    rrxor,
    z1r,
)
from interplab.compmech.process import HiddenMarkovProcess
from interplab.compmech.regression import (
    BeliefDataset,
    BeliefRegression,
    CrossValidatedFit,
    belief_dataset,
    cross_validated_fit,
    r2_rmse,
    residual_rows,
    shuffled_pairs,
)
from interplab.compmech.train import TrainConfig, TrainHistory, evaluate, train_model
from interplab.compmech.transformer import GPT, GPTConfig, load_model, save_model

__all__ = [
    "GPT",
    "PRESETS",
    "BeliefDataset",
    "BeliefRegression",
    "CrossValidatedFit",
    "GPTConfig",
    "HiddenMarkovProcess",
    "MixedStatePresentation",
    "TrainConfig",
    "TrainHistory",
    "all_sequences",
    "belief_dataset",
    "belief_distributions",
    "belief_states",
    "block_entropy_rates",
    "cross_validated_fit",
    "entropy_rate",
    "evaluate",
    "even_process",
    "get_process",
    "golden_mean",
    "load_model",
    "mess3",
    "mixed_state_presentation",
    "optimal_cross_entropy",
    "r2_rmse",
    "residual_rows",
    "rrxor",
    "save_model",
    "shuffled_pairs",
    "train_model",
    "z1r",
]
