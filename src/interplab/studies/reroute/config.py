"""The rerouting study's config and result (no torch here: the CLI reads this module for
``--help``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from interplab.defences.settings import AdapterSettings, AttackSettings, TrainSettings
from interplab.errors import InterplabError
from interplab.study.result import StudyResult
from interplab.study.settings import FlatConfig, RunConfig, SplitConfig

GENERATED = "generated"
# Default target layers as fractions of the depth (RR's losses and the heads read these blocks;
# the adapters sit on blocks 0..max): shallow enough that every pass stops early.
LAYER_FRACTIONS = (0.1, 0.2)
MIN_SEEDS = 3
CORPORA = ("kjv", "python-docs")


# The detectors' names and the comparisons the study makes (the report reads them too).
LABELS = {"hp": "HP", "hp_last": "HP (last token)", "hp_mlp": "HP, MLP head (matched)",
          "rr": "RR", "lp": "LoRA + probe", "rr_output": "RR (output shift)"}
ATTACKED = ("hp", "hp_mlp", "rr", "lp")
# (a, b) pairs compared; the first is the question of the study.
PAIRS = (("rr", "lp"), ("rr", "hp"), ("lp", "hp"), ("hp_mlp", "hp"), ("lp", "hp_mlp"))
# metric → (label, higher is better)
METRICS = {"auroc": ("test AUROC", True), "tpr_1pct": ("TPR at 1 % FPR", True),
           "recall": ("unwanted flagged (validation threshold)", True),
           "flag_rate": ("acceptable flagged (validation threshold)", False),
           "embed_pass": ("unwanted passing under the embedding attack", False),
           "token_pass": ("unwanted passing under the token attack", False),
           "delta_ce": ("ΔCE on neutral text (nats)", False), "kl": ("KL on neutral text", False)}
COMPARED = ("auroc", "tpr_1pct", "flag_rate", "embed_pass", "token_pass")
RETAIN = ("delta_ce", "kl")


@dataclass
class RerouteConfig(FlatConfig):
    """Everything that defines a rerouting-study run (saved with the result)."""

    run: RunConfig = field(default_factory=RunConfig)
    requests: str = field(default=GENERATED, metadata={
        "help": "'generated' (requests about animals are unwanted, the same requests about "
        "objects acceptable) or a CSV with request,label (unwanted/acceptable) and optionally "
        "group columns."})
    data: SplitConfig = field(default_factory=SplitConfig)
    layers: list[int] | None = field(default=None, metadata={
        "help": "Target blocks of RR's losses and the heads, comma-separated; adapters go on "
        "blocks 0..max (default: 10 % and 20 % of the depth)."})
    adapters: AdapterSettings = field(default_factory=AdapterSettings)
    training: TrainSettings = field(default_factory=TrainSettings)
    training_seeds: int = field(default=MIN_SEEDS, metadata={
        "help": f"Training seeds of RR, LoRA + probe and the MLP head (at least {MIN_SEEDS})."})
    attacks: AttackSettings = field(default_factory=AttackSettings)
    fpr: float = field(default=0.05, metadata={
        "help": "Share of the validation split's acceptable requests each defence may flag: "
        "sets its threshold (flag rate and attack success are read at it)."})
    neutral_corpus: str = field(default="kjv", metadata={
        "help": "Neutral text for the retain loss and the CE/KL check: kjv or python-docs."})
    neutral_tokens: int = field(default=48, metadata={"help": "Tokens per neutral-text chunk."})
    neutral_train: int = field(default=64, metadata={
        "help": "Neutral chunks the retain loss draws from."})
    neutral_eval: int = field(default=24, metadata={
        "help": "Held-out neutral chunks (other documents) for the CE/KL check."})
    n_perm: int = field(default=999, metadata={
        "help": "Permutations of each paired test (p-values have a floor of 1/(n+1))."})

    def validate(self) -> None:
        self.run.validate()
        self.data.validate()
        self.adapters.validate()
        self.training.validate()
        self.attacks.validate()
        if self.training_seeds < MIN_SEEDS:
            raise InterplabError(f"--training-seeds must be at least {MIN_SEEDS} (the spread "
                                 f"between training runs is part of every interval), got "
                                 f"{self.training_seeds}")
        if not 0 < self.fpr < 0.5:
            raise InterplabError(f"--fpr must be between 0 and 0.5, got {self.fpr}")
        if self.layers is not None and (not self.layers or min(self.layers) < 0):
            raise InterplabError(f"--layers must be block indices >= 0, got {self.layers}")
        if self.neutral_corpus not in CORPORA:
            raise InterplabError(f"--neutral-corpus must be one of {CORPORA}, got "
                                 f"{self.neutral_corpus!r}")
        if self.neutral_tokens < 8 or self.neutral_train < 1 or self.neutral_eval < 2:
            raise InterplabError("--neutral-tokens must be at least 8, --neutral-train at "
                                 "least 1 and --neutral-eval at least 2")
        if self.n_perm < 99:
            raise InterplabError(f"--n-perm {self.n_perm} is too few for a p-value; use at "
                                 "least 99 (the default is 999)")
        if self.requests != GENERATED and not self.requests.lower().endswith(".csv"):
            raise InterplabError(f"--requests must be 'generated' or a .csv file, got "
                                 f"{self.requests!r}")


@dataclass
class RerouteResult(StudyResult):
    """A rerouting-study result: every defence's detection, attack and retain numbers per seed
    and with intervals, the paired comparisons, controls, costs and the summary."""

    study = "reroute"

    config: dict[str, Any]
    versions: dict[str, str]
    model: dict[str, Any]
    data: dict[str, Any]
    layers: dict[str, Any]
    defences: dict[str, dict[str, Any]]  # name → label, parameters, per-metric estimates
    comparisons: list[dict[str, Any]]
    headline: list[dict[str, Any]]  # the RR vs LoRA + probe rows of comparisons
    controls: dict[str, Any]
    training: dict[str, Any]
    attacks: dict[str, Any]
    cost: dict[str, Any]
    method: dict[str, Any]
    summary: list[str]
    notes: list[str]
    timings: dict[str, float]
