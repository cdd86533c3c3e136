"""The weight-SVD study's config and result (no torch here: the CLI reads this module for
``--help``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from interplab.errors import InterplabError
from interplab.study.result import StudyResult
from interplab.study.settings import FlatConfig, RunConfig

# The reset network permutes the last axis of every parameter: for a weight [out, in] that is
# W·P with P a permutation (orthogonal), so its singular values equal the model's exactly.
RESET_NOTE = ("the reset network permutes the columns of every matrix (W·P, P orthogonal), so its "
              "singular values equal the model's exactly: it is no null for a spectrum (only its "
              "token readings differ). The random-matrix edge, the entry-shuffled matrices and a "
              "randomly initialised network are the nulls here.")


@dataclass
class WeightsConfig(FlatConfig):
    """Everything that defines a weight-SVD run (saved with the result)."""

    run: RunConfig = field(default_factory=RunConfig)
    top_directions: int = field(default=3,
        metadata={"help": "Top singular directions per matrix read out as tokens."})
    top_tokens: int = field(default=8,
        metadata={"help": "Tokens listed at each end of a direction."})
    controls: tuple[str, ...] = field(default=("reset", "random-init"),
        metadata={"help": "Control networks whose spectra are computed too (reset, random-init)."})

    def validate(self) -> None:
        self.run.validate()
        if self.top_directions < 0 or self.top_tokens < 1:
            raise InterplabError("top_directions must be ≥ 0 and top_tokens ≥ 1")
        bad = [c for c in self.controls if c not in ("reset", "random-init")]
        if bad:
            raise InterplabError(f"unknown control(s) {bad}; choose from reset, random-init")


@dataclass
class WeightsResult(StudyResult):
    """``networks[name]`` is a list of per-matrix analyses (see
    :func:`interplab.weights.analyse_matrix`) for ``model`` and each control that ran."""

    study = "weights"

    config: dict[str, Any]
    versions: dict[str, str]
    model: dict[str, Any]
    networks: dict[str, list[dict[str, Any]]]
    reset_max_spectrum_difference: float | None
    notes: list[str]
    timings: dict[str, float]
    # the answer in a few findings, each against its null and control (empty in results written
    # before it was added)
    summary: list[str] = field(default_factory=list)
