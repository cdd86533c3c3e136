"""The SAE study's config and result (no torch here: `interplab sae train` reads this module
to build its options)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from interplab.controls.nulls import DATA_NULLS
from interplab.errors import InterplabError
from interplab.sae.config import TrainerConfig, exclusion_rule_for
from interplab.sae.nulls import SaeNullConfig
from interplab.study.result import StudyResult

if TYPE_CHECKING:
    from interplab.activations.exclusion import ExclusionRule

NULL_SAMPLE_ROWS = 16_384  # --null-control: ordinary rows drawn for the retrained comparison
NULL_HELDOUT_FRACTION = 0.25  # of those rows, scored but never trained on
NULL_MIN_ROWS = 256  # fewer ordinary rows than this: no comparison
TOPK_FAMILY = ("topk", "batchtopk")  # swept over k; every other architecture over λ


@dataclass
class SaeStudyConfig:
    """Everything that determines an SAE training run or sweep (besides the output folder)."""

    store: Path | None = field(default=None, metadata={
        "help": "Activation store to train from."})
    model: str | None = field(default=None, metadata={
        "help": "Stream activations from this model instead (on --corpus)."})
    hook: str | None = field(default=None, metadata={
        "help": "Hook point, e.g. blocks.15.hook_resid_post (default: the store's only hook)."})
    arch: list[str] = field(default_factory=lambda: ["topk"], metadata={
        "help": "Architecture(s), comma-separated: relu, relu_decnorm, gated, topk, batchtopk, "
        "jumprelu."})
    width: int = field(default=0, metadata={"help": "Dictionary size (0: 8 × d_in)."})
    k: list[int] = field(default_factory=lambda: [32], metadata={
        "help": "Active features for topk/batchtopk (a list sweeps)."})
    sparsity: list[float] = field(default_factory=lambda: [1.0], metadata={
        "help": "λ for relu/gated/jumprelu (a list sweeps)."})
    batch_size: int = field(default=4096, metadata={"help": "Rows per optimizer step."})
    corpus: str = field(default="kjv", metadata={"help": "With --model: kjv | python-docs."})
    context_length: int = field(default=128, metadata={"help": "With --model: tokens per "
                                                       "sequence."})
    max_sequences: int = field(default=0, metadata={"help": "With --model: limit (0: all)."})
    # total_steps 0: one pass over the data. dead_window_tokens, resample_every_steps, log and
    # checkpoint paths, data_identity and progress are set by the study.
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(
        total_steps=0, lr_warmup_steps=100, sparsity_warmup_steps=500,
        checkpoint_every_steps=500), metadata={"help": {
            "total_steps": "Optimizer steps, one batch each (0: one pass over the data, i.e. "
                           "one epoch of the store or of the corpus's training part)."}})
    extend_steps: bool = field(default=False, metadata={
        "help": "Continue the run in the output folder up to a larger --steps (all other "
        "settings unchanged)."})
    allow_incomplete: bool = field(default=False, metadata={
        "help": "Train on an unfinished harvest (recorded in each SAE's config)."})
    exclusion: bool = field(default=True, metadata={
        "help": "Leave out position 0 and massive-norm tokens (--no-exclusion: train on every "
        "token)."})
    norm_ratio: float | None = field(default=None, metadata={
        "help": "Leave out tokens with a norm above this × the batch median (0: no norm test; "
        "default: the standard exclusion rule's ratio, 10)."})
    null_control: str | None = field(default=None, metadata={
        "help": "After training, retrain each TopK/BatchTopK config on a sample of the rows and "
        "on this data null fitted to them (gaussian | gaussian-mixture | hypercube), and report "
        "model − null with intervals."})
    null_steps: int = field(default=SaeNullConfig.sae_steps, metadata={
        "help": "--null-control: training steps of each SAE retrained on the sample and on the "
        "null."})
    null_batch_size: int = field(default=SaeNullConfig.sae_batch_size, metadata={
        "help": "--null-control: rows per training step of those SAEs."})

    def validate(self) -> None:
        """One clear error for a config that cannot run (before any data is read)."""
        from interplab.sae import architectures  # the architectures' registry loads torch

        if (self.store is None) == (not self.model):
            raise InterplabError("give exactly one data source: --store PATH or --model NAME")
        unknown = [a for a in self.arch if a not in architectures()]
        if unknown:
            raise InterplabError(f"unknown architecture(s) {unknown}; choose from "
                                 f"{architectures()}")
        if self.trainer.total_steps < 0 or self.batch_size < 1:
            raise InterplabError("steps must be >= 0 (0: one pass) and batch_size >= 1")
        if self.null_steps < 1 or self.null_batch_size < 1:
            raise InterplabError("--null-steps and --null-batch-size must be at least 1")
        if self.null_control is not None and self.null_control not in DATA_NULLS:
            raise InterplabError(f"unknown --null-control {self.null_control!r}; choose one of "
                                 f"{', '.join(DATA_NULLS)} (model nulls: `interplab nulls`)")

    def exclusion_rule(self) -> ExclusionRule:
        """The :class:`~interplab.activations.exclusion.ExclusionRule` of this run: the standard
        rule, its norm test replaced by ``norm_ratio`` when given (0: none), or none at all."""
        return exclusion_rule_for(None, self.exclusion, self.norm_ratio)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=str))


@dataclass
class SaeRun:
    """One trained SAE of the sweep: its folder and its last logged metrics."""

    name: str
    path: str  # the SAE's folder, relative to the folder the result is saved in (sae.json)
    architecture: str
    d_sae: int
    k: int | None
    sparsity_coefficient: float
    metrics: dict[str, float]  # the last training-log entry of this SAE (FVE, L0, alive, ...)


@dataclass
class SaeStudyResult(StudyResult):
    """What was trained, on what, for how long, with which tokens left out. Saved as ``sae.json``
    in the output folder (``to_json``/``from_json``, as every study's result), so
    ``interplab rerun out/sae.json --out DIR`` trains the same sweep again."""

    study = "sae"

    config: dict[str, Any]
    versions: dict[str, str]
    data: dict[str, Any]  # data identity: store fingerprint or model/corpus, hook, batch size
    runs: list[SaeRun]
    steps: int
    tokens_seen: int
    n_rows: int
    tokens_read: int
    tokens_excluded: int
    exclusion: dict[str, Any]
    exclusion_description: str
    input_scale: float
    scale_tokens: int
    warnings: list[str]
    # With --null-control (see :func:`null_comparison`); None otherwise and in older results.
    null_control: dict[str, Any] | None = None
