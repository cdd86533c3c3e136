"""The null battery's config and result (no torch here: the CLI reads this module)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from interplab.controls.nulls import NULLS
from interplab.errors import InterplabError
from interplab.sae.nulls import SaeNullConfig
from interplab.study.result import StudyResult
from interplab.study.settings import FlatConfig, ProbeConfig, RunConfig, SplitConfig

N_RANDOM_DIRECTIONS = 20


@dataclass
class NullsConfig(FlatConfig):
    """Everything that defines a null-battery run (saved with the result)."""

    run: RunConfig = field(default_factory=RunConfig)
    dataset: str = field(default="cities",
        metadata={"help": "Statement dataset for the probe part (a registry name or a .csv)."})
    layer: int | None = field(default=None,
        metadata={"help": "Block whose resid_post is read (none: chosen on validation, the "
                  "block where a logistic probe is most accurate on the validation split)."})
    nulls: list[str] = field(default_factory=lambda: list(NULLS),
        metadata={"help": "Null sources to run."})
    probe: ProbeConfig = field(default_factory=lambda: ProbeConfig(probes=["diffmean", "logistic"]))
    data: SplitConfig = field(default_factory=lambda: SplitConfig(max_per_dataset=1200))
    n_random_directions: int = field(default=N_RANDOM_DIRECTIONS,
        metadata={"help": "Norm-matched random directions per probe (at least 20)."})
    sae_sequences: int = field(default=64,
        metadata={"help": "Neutral-text sequences for the SAE part (0 skips it)."})
    context_length: int = field(default=64, metadata={"help": "Tokens per neutral-text sequence."})
    corpus: str = field(default="kjv", metadata={"help": "Neutral corpus (kjv or python-docs)."})
    sae: SaeNullConfig = field(default_factory=SaeNullConfig)

    def validate(self) -> None:
        from interplab.probes import PROBES, PairProbe

        self.run.validate()
        self.data.validate()
        self.sae.validate()
        self.probe.validate(allowed=tuple(p for p, cls in PROBES.items()
                                          if not issubclass(cls, PairProbe)))
        bad = [n for n in self.nulls if n not in NULLS]
        if bad:
            raise InterplabError(f"unknown null(s) {bad}; choose from {', '.join(NULLS)}")
        if self.n_random_directions < 20:
            raise InterplabError("n_random_directions must be at least 20: one random direction is "
                                 "one draw, and the control is a distribution")
        if self.sae_sequences < 0 or self.context_length < 2:
            raise InterplabError("sae_sequences must be ≥ 0 and context_length ≥ 2")


@dataclass
class NullsResult(StudyResult):
    """``probes[source][probe] = {"value", "lo", "hi", "n", "model_minus_this": {...} | None}``;
    ``random_directions[probe]`` a distribution summary with ``probe_test`` (the real probe's
    accuracy among them); ``saes[source]`` train/held-out metrics with ``model_minus_this``
    (:func:`sae_minus_null`). ``source`` is ``model`` (the real activations) or a null's name.
    Each tested cell holds its raw ``p`` and, corrected as one family (``statistics``,
    :func:`nulls_statistics`), ``q``, ``q_bound`` and ``verdict``."""

    study = "nulls"

    config: dict[str, Any]
    versions: dict[str, str]
    model: dict[str, Any]
    dataset: dict[str, Any]
    hook: str
    layer: dict[str, Any]  # the block and how it was chosen (interplab.study.layers.LayerChoice)
    n_train: int
    n_test: int
    probes: dict[str, dict[str, dict[str, Any]]]
    random_directions: dict[str, dict[str, Any]]
    saes: dict[str, dict[str, Any]]
    notes: list[str]
    timings: dict[str, float]
    # the family of every p-value above (controls.multiple.Family.to_dict()); None in older
    # result files
    statistics: dict[str, Any] | None = None
