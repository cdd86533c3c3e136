"""The erasure study's config and result (no torch here: the CLI reads this module)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from interplab.errors import InterplabError
from interplab.study.result import StudyResult
from interplab.study.settings import FlatConfig, PromptConfig, RunConfig, SplitConfig

DEFAULT_METHODS = ("leace", "orth", "mean-diff", "inlp", "oracle", "quadratic", "mean-match",
                   "median-match")
TOKENS = "last token of each statement, blocks.{layer}.hook_resid_post"


@dataclass
class ErasureConfig(FlatConfig):
    """Everything that defines an erasure run (saved with the result)."""

    run: RunConfig = field(default_factory=RunConfig)
    dataset: str = field(default="cities",
        metadata={"help": "Statement dataset (a registry name or a .csv file)."})
    layer: int | None = field(default=None,
        metadata={"help": "Block whose resid_post is erased (none: chosen on validation, the "
                  "block where a logistic probe is most accurate on the validation split)."})
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS),
        metadata={"help": "Erasure methods to fit and check."})
    data: SplitConfig = field(default_factory=lambda: SplitConfig(max_per_dataset=1200))
    inlp_rounds: int = field(default=8,
        metadata={"help": "Rounds (directions) of the inlp method."})
    directions_max_rounds: int = field(default=40,
        metadata={"help": "Cap on erase-and-retrain rounds of the directions curve (0 skips it)."})
    neutral_sequences: int = field(default=32,
        metadata={"help": "Sequences of neutral text for the in-model ΔCE/KL (0 skips it)."})
    context_length: int = field(default=64, metadata={"help": "Tokens per neutral-text sequence."})
    in_model_random: int = field(default=10, metadata={
        "help": "Random subspaces of each rank whose in-model ΔCE/KL is measured beside the "
        "erasers (at least 5)."})
    behaviour_prompts: int = field(default=64, metadata={
        "help": "Held-out statements (half true) whose few-shot true/false answer is scored "
        "with and without each label-free erasure (0 skips it)."})
    behaviour_random: int = field(default=20, metadata={
        "help": "Random subspaces of the same rank scored beside each erasure (at least 20)."})
    prompt: PromptConfig = field(default_factory=PromptConfig)
    corpus: str = field(default="kjv", metadata={"help": "Neutral corpus (kjv or python-docs)."})

    def validate(self) -> None:
        from interplab.erasure import METHODS

        self.run.validate()
        self.data.validate()
        self.prompt.validate()
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise InterplabError(f"unknown or no erasure method(s) {bad}; choose from "
                                 f"{', '.join(METHODS)}")
        if self.inlp_rounds < 1 or self.directions_max_rounds < 0 or self.neutral_sequences < 0:
            raise InterplabError("inlp_rounds must be ≥ 1; directions_max_rounds and "
                                 "neutral_sequences ≥ 0 (0 skips that part)")
        if self.behaviour_prompts < 0:
            raise InterplabError("behaviour_prompts must be ≥ 0 (0 skips it)")
        if self.behaviour_prompts and self.behaviour_random < 20:
            raise InterplabError(f"behaviour_random must be at least 20 (one random subspace is "
                                 f"one draw, and the control is a distribution), not "
                                 f"{self.behaviour_random}")
        if self.neutral_sequences and self.in_model_random < 5:
            raise InterplabError(f"in_model_random must be at least 5 (the control is a "
                                 f"distribution of random subspaces), not {self.in_model_random}")
        if self.context_length < 2:
            raise InterplabError(f"context_length must be ≥ 2, got {self.context_length}")


@dataclass
class ErasureResult(StudyResult):
    """Per method: ``checks[method]`` (:class:`~interplab.erasure.ErasureCheck` as a dict) and,
    for label-free methods, ``in_model[method] = {"erased": {...}, "random": {...}}`` (ΔCE, KL
    and the edit's ‖Δx‖/‖x‖ on neutral text; "random" summarises the random subspaces of the
    method's rank: mean, min, max and each draw);
    ``directions`` holds the curves for real and shuffled labels; ``behaviour`` the change in
    the model's own true/false answers."""

    study = "erase"

    config: dict[str, Any]
    versions: dict[str, str]
    model: dict[str, Any]
    dataset: dict[str, Any]
    layer: int
    layer_choice: dict[str, Any]  # the block and how it was chosen (study.layers.LayerChoice)
    hook: str
    n_train: int
    n_test: int
    split_rule: str
    checks: dict[str, dict[str, Any]]
    in_model: dict[str, dict[str, Any]]
    directions: dict[str, Any] | None
    notes: list[str]
    timings: dict[str, float]
    # the model's own true/false answers with and without each label-free erasure
    # (:func:`interplab.erasure.truth_behaviour`); None when skipped and in older result files
    behaviour: dict[str, Any] | None = None
    # every p-value of the study (each eraser's separation change against its random
    # subspaces) corrected as one family (controls.multiple.Family.to_dict()); None when the
    # behaviour part is skipped and in older result files
    statistics: dict[str, Any] | None = None
