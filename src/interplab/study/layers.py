"""The one layer-choice rule: chosen on validation, reported on test.

A study that must fix its layer (one layer given in its config) says so; the choice and the rule
are recorded in the result, so a report can state both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from interplab.errors import InterplabError

RULE_VALIDATION = ("the layer with the highest score on the validation split (the first such "
                   "layer on ties); test numbers are reported at that layer")
RULE_FIXED = "fixed by the study's configuration (not chosen on data)"


@dataclass(frozen=True)
class LayerChoice:
    """A chosen layer, the rule that chose it and the validation scores it was chosen on."""

    layer: int
    rule: str
    validation: list[float] | None = None

    def to_dict(self) -> dict:
        return {"layer": self.layer, "rule": self.rule, "validation": self.validation}


def choose_layer(layers: list[int], validation_scores: np.ndarray | list[float]) -> LayerChoice:
    """The layer with the highest validation score (first on ties)."""
    scores = np.asarray(validation_scores, dtype=float)
    if scores.shape != (len(layers),) or not len(layers):
        raise InterplabError(f"choose_layer: {len(layers)} layers but scores of shape "
                             f"{scores.shape}")
    if not np.isfinite(scores).any():
        raise InterplabError("choose_layer: no layer has a finite validation score")
    best = int(np.nanargmax(np.where(np.isfinite(scores), scores, -np.inf)))
    return LayerChoice(int(layers[best]), RULE_VALIDATION, scores.tolist())


def fixed_layer(layer: int, n_layers: int) -> LayerChoice:
    """A layer the configuration fixes; refused when the model has no such block."""
    if not 0 <= layer < n_layers:
        raise InterplabError(f"layer {layer} does not exist: the model has blocks 0-{n_layers - 1}")
    return LayerChoice(int(layer), RULE_FIXED)


def choose_layer_by_probe(X: np.ndarray, y: np.ndarray, train: np.ndarray, val: np.ndarray,
                          layers: list[int], probe: str = "logistic",
                          centering: str = "train") -> LayerChoice:
    """The layer where ``probe`` fitted on the ``train`` rows of ``X [L, n, d]`` is most accurate
    on the ``val`` rows (the test rows are not looked at)."""
    from interplab.probes import make_probe

    if len(val) == 0:
        raise InterplabError("choosing a layer needs a validation split; give three split "
                             "fractions (e.g. --split 0.6,0.2,0.2) or fix the layer (--layer)")
    scores = [float((make_probe(probe, centering=centering).fit(X[li][train], y[train])
                     .predict(X[li][val]) == y[val]).mean()) for li in range(len(layers))]
    choice = choose_layer(layers, scores)
    return LayerChoice(choice.layer, f"{RULE_VALIDATION} ({probe} probe accuracy)",
                       choice.validation)
