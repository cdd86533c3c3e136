"""The SHIFT study's config, result and the words its report uses (no torch here: the CLI reads
this module for ``--help``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from interplab.circuits.config import StudySaeConfig
from interplab.errors import InterplabError
from interplab.study.result import StudyResult
from interplab.study.settings import FlatConfig, RunConfig, SplitConfig

DATASETS = {"distractor_cities": "has_banana", "speaker_cities": "has_alice"}
CUE_WORDS = {"has_banana": ("banana", "shed"), "has_alice": ("Alice", "Bob")}
CONDITIONS = ("unablated", "shift", "shift_no_retrain", "random", "leace_oracle",
              "balanced_oracle")
CONDITION_WORDS = {
    "unablated": "probe trained on the ambiguous set",
    "shift": "SHIFT: cue latents ablated, head retrained",
    "shift_no_retrain": "cue latents ablated, the original head kept",
    "random": "as many random latents ablated, head retrained",
    "leace_oracle": "LEACE erasure of the cue (oracle: uses cue labels)",
    "balanced_oracle": "probe trained on balanced data (oracle)",
}


@dataclass
class ShiftConfig(FlatConfig):
    """Everything that defines a SHIFT-study run (saved with the result)."""

    run: RunConfig = field(default_factory=RunConfig)
    # whole entity groups of eight rows each: a larger default than the statement studies'
    data: SplitConfig = field(default_factory=lambda: SplitConfig(max_per_dataset=1200))
    sae: StudySaeConfig = field(default_factory=StudySaeConfig)
    dataset: str = field(default="speaker_cities", metadata={
        "help": "distractor_cities (cue: the word after the statement, banana/shed) or "
        "speaker_cities (cue: the speaker, Alice/Bob)."})
    layers: list[int] = field(default_factory=lambda: [6, 12, 18], metadata={
        "help": "Blocks whose resid_post gets an SAE."})
    probe_layer: int | None = field(default=None, metadata={
        "help": "Block whose resid_post the probe reads (default: the last of --layers)."})
    pooling: str = field(default="last", metadata={
        "help": "mean (over each text's ordinary tokens) or last (the last token)."})
    n_candidates: int = field(default=30, metadata={
        "help": "Most attributed latents checked for a tie to the cue."})
    min_r: float = field(default=0.3, metadata={
        "help": "A candidate is tied to the cue when |r(activation, cue)| is at least this and "
        "above |r(activation, label)| (on held-out balanced texts)."})
    n_random: int = field(default=3, metadata={
        "help": "Random-latent ablations per seed (the control)."})
    n_seeds: int = field(default=3, metadata={
        "help": "Seeds (splits, ambiguous subsets, random draws): --seed, --seed+1, ..."})

    def validate(self) -> None:
        self.run.validate()
        self.data.validate()
        self.sae.validate()
        if self.dataset not in DATASETS:
            raise InterplabError(f"--dataset must be one of {list(DATASETS)}, not "
                                 f"{self.dataset!r}")
        if not self.layers or len(set(self.layers)) != len(self.layers) or min(self.layers) < 0:
            raise InterplabError(f"--layers must be distinct block indices, got {self.layers}")
        if self.probe_layer is not None and self.probe_layer < min(self.layers):
            raise InterplabError(f"--probe-layer {self.probe_layer} lies below every SAE "
                                 f"({self.layers}); SHIFT needs latents at or below the probe")
        if self.pooling not in ("mean", "last"):
            raise InterplabError(f"--pooling must be mean or last, not {self.pooling!r}")
        if self.n_candidates < 1 or self.n_random < 1 or self.n_seeds < 1:
            raise InterplabError("--n-candidates, --n-random and --n-seeds must be at least 1")
        if not 0 < self.min_r < 1:
            raise InterplabError(f"--min-r must lie in (0, 1), not {self.min_r}")
        if self.data.max_per_dataset and self.data.max_per_dataset < 160:
            raise InterplabError(f"--max-per-dataset {self.data.max_per_dataset} leaves too few "
                                 "rows per (label, cue) group; use at least 160 (or none)")


@dataclass
class ShiftResult(StudyResult):
    """A SHIFT-study result: per seed the candidates, ablations and accuracies; across seeds the
    summary table; the p-values with their BH correction; cards of the candidate latents."""

    study = "shift"

    config: dict[str, Any]
    versions: dict[str, str]
    model: dict[str, Any]
    data: dict[str, Any]
    saes: dict[str, Any]
    seeds: list[dict[str, Any]]
    table: list[dict[str, Any]]
    tests: list[dict[str, Any]]
    cards: list[dict[str, Any]]
    summary: list[str]
    notes: list[str]
    timings: dict[str, float]


def format_p(p: float, floor: float) -> str:
    """A p-value, or "≤ 1/(k+1)" when it sits at the resampling floor."""
    if p <= floor * (1 + 1e-9):
        return f"≤ 1/{round(1 / floor)}"
    return f"{p:.3g}"
