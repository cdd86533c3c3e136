"""The circuit study's config and result (no torch here: the CLI reads this module for
``--help``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from interplab.circuits.config import ARCHITECTURES, StudySaeConfig
from interplab.errors import InterplabError
from interplab.study.result import StudyResult
from interplab.study.settings import FlatConfig, RunConfig, SplitConfig

METHODS = ("atp", "ig")


@dataclass
class CircuitConfig(FlatConfig):
    """Everything that defines a circuit-study run (saved with the result)."""

    run: RunConfig = field(default_factory=RunConfig)
    data: SplitConfig = field(default_factory=SplitConfig)
    sae: StudySaeConfig = field(default_factory=StudySaeConfig)
    layers: list[int] = field(default_factory=lambda: [6, 12, 18], metadata={
        "help": "Blocks whose resid_post gets an SAE (the circuit's hooks)."})
    n_pairs: int = field(default=16, metadata={
        "help": "Clean/corrupted prompt pairs (training split) the circuit is found on."})
    n_heldout: int = field(default=32, metadata={
        "help": "Held-out prompts (test split) faithfulness is measured on."})
    direction: str = field(default="noise", metadata={
        "help": "noise: corrupted values patched into the clean run (sparse feature circuits); "
        "denoise: clean into corrupted."})
    node_method: str = field(default="ig", metadata={
        "help": "Method whose node scores select the circuit (atp or ig)."})
    ig_steps: int = field(default=8, metadata={"help": "Integrated-gradients steps."})
    n_exact: int = field(default=16, metadata={
        "help": "Nodes per hook patched exactly (the agreement's ground truth)."})
    sizes: list[int] = field(default_factory=lambda: [4, 16, 64, 256], metadata={
        "help": "Circuit sizes (nodes) of the faithfulness curve."})
    circuit_size: int = field(default=32, metadata={
        "help": "Nodes of the circuit drawn and tabulated (its edges and cards)."})
    n_random: int = field(default=3, metadata={
        "help": "Random circuits of the same size per point (the control)."})
    edge_threshold: float = field(default=0.05, metadata={
        "help": "Edges drawn: |weight| at least this fraction of the largest."})
    n_cards: int = field(default=8, metadata={"help": "Top latents shown with their cards."})
    compare: list[str] = field(default_factory=lambda: list(ARCHITECTURES), metadata={
        "help": "Architectures of the AtP-vs-IG measurement ('none' to skip)."})
    compare_layer: int | None = field(default=None, metadata={
        "help": "Block of the measurement (default: the middle of --layers)."})
    compare_pairs: int = field(default=8, metadata={
        "help": "Prompt pairs of the measurement (training split)."})
    compare_steps: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32], metadata={
        "help": "IG step counts of the measurement."})

    def validate(self) -> None:
        self.run.validate()
        self.data.validate()
        self.sae.validate()
        if self.compare == ["none"]:
            self.compare = []
        bad = [a for a in self.compare if a not in ARCHITECTURES]
        if bad:
            raise InterplabError(f"--compare {bad}: choose from {ARCHITECTURES} (or none)")
        if not self.layers or len(set(self.layers)) != len(self.layers) or min(self.layers) < 0:
            raise InterplabError(f"--layers must be distinct block indices, got {self.layers}")
        if self.direction not in ("noise", "denoise"):
            raise InterplabError(f"--direction must be noise or denoise, not {self.direction!r}")
        if self.node_method not in METHODS:
            raise InterplabError(f"--node-method must be atp or ig, not {self.node_method!r}")
        for name in ("n_pairs", "n_heldout", "compare_pairs"):
            if getattr(self, name) < 2:
                raise InterplabError(f"--{name.replace('_', '-')} must be at least 2")
        if self.ig_steps < 1 or self.n_exact < 3 or self.n_random < 1 or self.n_cards < 0:
            raise InterplabError("--ig-steps and --n-random must be at least 1, --n-exact at "
                                 "least 3, --n-cards at least 0")
        if not self.sizes or min(self.sizes) < 1 or self.circuit_size < 1:
            raise InterplabError("--sizes and --circuit-size must be positive node counts")
        if not self.compare_steps or min(self.compare_steps) < 1:
            raise InterplabError("--compare-steps must be positive step counts")
        if not 0 <= self.edge_threshold <= 1:
            raise InterplabError("--edge-threshold is a fraction of the largest edge, in [0, 1]")
        if self.compare_layer is not None and self.compare_layer not in self.layers:
            raise InterplabError(f"--compare-layer {self.compare_layer} must be one of --layers "
                                 f"{self.layers}")


@dataclass
class CircuitResult(StudyResult):
    """A circuit-study result (see the module docstring for what each part holds)."""

    study = "circuit"

    config: dict[str, Any]
    versions: dict[str, str]
    model: dict[str, Any]
    task: dict[str, Any]
    saes: dict[str, Any]
    attribution: dict[str, Any]
    curve: dict[str, Any]
    circuit: dict[str, Any]
    edges: dict[str, Any]
    cards: list[dict[str, Any]]
    comparison: dict[str, Any]
    summary: list[str]
    notes: list[str]
    timings: dict[str, float]
