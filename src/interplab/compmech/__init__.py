"""Computational mechanics: hidden Markov processes, exact belief states, a toy transformer, and
the regression of its residual stream onto the belief simplex.

Data flow: a :class:`HiddenMarkovProcess` (``process``, ``presets``) samples training sequences
and gives exact beliefs and loss floors (``beliefs``); a :class:`GPT` (``transformer``) is trained
on the samples (``train``); its residual stream at every distinct prefix (``regression``) is
regressed onto the exact beliefs. Nothing here imports the language-model stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from interplab.compmech.config import GPTConfig, TrainConfig
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
    from interplab.compmech.train import TrainHistory, evaluate, train_model
    from interplab.compmech.transformer import GPT, load_model, save_model

_LAZY = {  # name -> submodule: importing the package stays cheap (torch loads on first use)
    "BeliefDataset": "regression",
    "BeliefRegression": "regression",
    "CrossValidatedFit": "regression",
    "GPT": "transformer",
    "GPTConfig": "config",
    "HiddenMarkovProcess": "process",
    "MixedStatePresentation": "beliefs",
    "PRESETS": "presets",
    "TrainConfig": "config",
    "TrainHistory": "train",
    "all_sequences": "beliefs",
    "belief_dataset": "regression",
    "belief_distributions": "beliefs",
    "belief_states": "beliefs",
    "block_entropy_rates": "beliefs",
    "cross_validated_fit": "regression",
    "entropy_rate": "beliefs",
    "evaluate": "train",
    "even_process": "presets",
    "get_process": "presets",
    "golden_mean": "presets",
    "load_model": "transformer",
    "mess3": "presets",
    "mixed_state_presentation": "beliefs",
    "optimal_cross_entropy": "beliefs",
    "r2_rmse": "regression",
    "residual_rows": "regression",
    "rrxor": "presets",
    "save_model": "transformer",
    "shuffled_pairs": "regression",
    "train_model": "train",
    "z1r": "presets",
}


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


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"interplab.compmech.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'interplab.compmech' has no attribute {name!r}")
