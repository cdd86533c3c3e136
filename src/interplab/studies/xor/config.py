"""The XOR study's config and result (no torch here: the CLI reads this module for ``--help``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from interplab.datasets.xor import GENERATORS
from interplab.errors import InterplabError
from interplab.study.result import StudyResult
from interplab.study.settings import FlatConfig, RunConfig, SplitConfig

DEFAULT_DATASETS = ["speaker_cities", "distractor_cities", "speaker_filler"]
NETWORKS = ("model", "reset", "random_init")
CONTROLS = ("shuffled", "reset", "random_init")
TOKEN_MODES = ("last", "mean")
TOKEN_WORDS = {
    "last": "the last token of each text (blocks.{layer}.hook_resid_post, before the final norm)",
    "mean": "the mean over the tokens of the statement (or filler) itself, without the speaker "
            "prefix or the distractor word (blocks.{layer}.hook_resid_post)",
}
CONTROL_WORDS = {"shuffled": "shuffled labels", "reset": "reset network",
                 "random_init": "random-init network"}
NETWORK_WORDS = {"model": "the trained model", "reset": "the reset (weight-permuted) network",
                 "random_init": "a randomly initialised network of the same architecture"}
PROBE = "logistic"  # L2 logistic regression, C=1 on RMS-scaled inputs (interplab.probes)
CENTERING = "train"  # nothing about a test set is used


@dataclass
class XorConfig(FlatConfig):
    """Everything that defines an XOR-study run (saved with the result); the CLI options of
    ``interplab xor`` are derived from these fields."""

    run: RunConfig = field(default_factory=RunConfig)
    datasets: list[str] = field(
        default_factory=lambda: list(DEFAULT_DATASETS),
        metadata={"help": "speaker_cities, distractor_cities, speaker_filler, distractor_filler."})
    layers: list[int] | None = field(
        default=None, metadata={"help": "Blocks to probe (default: every --layer-step-th block "
                                        "from 0, and the last)."})
    layer_step: int = field(default=3, metadata={"help": "Stride of the default layers."})
    tokens: list[str] = field(
        default_factory=lambda: ["last"],
        metadata={"help": "last and/or mean (the mean over the statement's own tokens)."})
    controls: list[str] = field(
        default_factory=lambda: list(CONTROLS),
        metadata={"help": "Any of shuffled, reset, random_init ('none' for none)."})
    # XOR datasets are cut to size by their generator, as whole entity groups, so every feature
    # combination stays exactly balanced: a larger default than the statement studies'.
    data: SplitConfig = field(default_factory=lambda: SplitConfig(max_per_dataset=800))
    generalization: bool = field(
        default=True, metadata={"help": "Train a truth probe with a feature held constant and "
                                        "test it with the feature flipped."})
    n_shuffles: int = field(default=3, metadata={"help": "Shuffled-label fits per probe."})

    def validate(self) -> None:
        self.run.validate()
        self.data.validate()
        if not self.datasets:
            raise InterplabError("no datasets given; name at least one, e.g. speaker_cities")
        unknown = [d for d in self.datasets if d not in GENERATORS]
        if unknown:
            raise InterplabError(f"unknown XOR dataset(s) {unknown}; choose from "
                                 f"{', '.join(GENERATORS)}")
        bad = [c for c in self.controls if c not in CONTROLS]
        if bad:
            raise InterplabError(f"unknown control(s) {bad}; choose from {', '.join(CONTROLS)}")
        if not self.tokens or any(t not in TOKEN_MODES for t in self.tokens):
            raise InterplabError(f"tokens must be one or both of {TOKEN_MODES}, got {self.tokens}")
        if self.layers is not None and any(layer < 0 for layer in self.layers):
            raise InterplabError(f"layers must be non-negative block indices, got {self.layers}")
        if self.layer_step < 1 or self.n_shuffles < 1:
            raise InterplabError("layer_step and n_shuffles must be at least 1")
        if self.data.max_per_dataset and self.data.max_per_dataset < 40:
            raise InterplabError(f"max_per_dataset {self.data.max_per_dataset} is too small for three "
                                 "splits of a balanced design; use at least 40 (or none)")


@dataclass
class XorResult(StudyResult):
    """An XOR-study result: config, curves with controls, readings, generalization, summary."""

    study = "xor"

    config: dict[str, Any]
    versions: dict[str, str]
    model: dict[str, Any]
    control_models: dict[str, dict[str, Any]]
    datasets: list[dict[str, Any]]
    layers: list[int]
    # curves[tokens][dataset][feature][network or "shuffled"] =
    #   {"value": [L], "lo": [L], "hi": [L], "n": int, "val": [L] (not for "shuffled")}
    curves: dict[str, dict[str, dict[str, dict[str, dict[str, Any]]]]]
    readings: list[dict[str, Any]]  # one row per (tokens, dataset, feature), chosen layers
    # generalization[tokens][dataset][feature held constant] = see `generalization_curves`
    generalization: dict[str, dict[str, dict[str, dict[str, Any]]]]
    method: dict[str, Any]
    summary: list[str]
    notes: list[str]
    timings: dict[str, float]
