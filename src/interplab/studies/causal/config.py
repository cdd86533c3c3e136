"""The causal study's config and result (no torch here: the CLI reads this module for ``--help``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from interplab.errors import InterplabError
from interplab.study.result import StudyResult
from interplab.study.settings import FlatConfig, ProbeConfig, PromptConfig, RunConfig, SplitConfig

DATASETS = ["cities", "neg_cities"]  # the probes' training data; steered: cities' test split
CAUSAL_PROBES = ["diffmean", "logistic", "lda"]
FORMAT_NAMES = ("completion", "statement-is", "chat")  # interventions.prompts.FORMATS
WINDOW_RULES = ("own", "shared")
PROBE_LABELS = {"diffmean": "mass-mean", "logistic": "logistic", "lda": "LDA",
                "massmean-iid": "mass-mean iid"}


def label(probe: str) -> str:
    return PROBE_LABELS.get(probe, probe)


@dataclass
class CausalConfig(FlatConfig):
    """Everything that defines a causal-study run (saved with the result)."""

    run: RunConfig = field(default_factory=RunConfig)
    data: SplitConfig = field(default_factory=lambda: SplitConfig(max_per_dataset=400), metadata={
        "help": {"max_per_dataset": "Statements kept of cities and of neg_cities (and of each "
                                    "--transfer dataset), balanced by label."}})
    probe: ProbeConfig = field(default_factory=lambda: ProbeConfig(probes=list(CAUSAL_PROBES)),
                               metadata={"help": {"probes": "Probes whose directions are steered "
                                                  "(diffmean, logistic, lda, massmean-iid; not "
                                                  "the pair probe ccs)."}})
    prompt: PromptConfig = field(default_factory=PromptConfig)
    formats: list[str] = field(default_factory=lambda: list(FORMAT_NAMES), metadata={
        "help": "Prompt formats to choose from: completion (the statement, then its opening words "
                "again; read log P(the stated object)), statement-is (few-shot '... This "
                "statement is: TRUE'), chat (the model's chat template). Each is scored unsteered "
                "on validation statements; the one with the largest standardised true − false gap "
                "is used."})
    n_prompts: int = field(default=64, metadata={
        "help": "Held-out statements steered (half true, half false); as many validation "
                "statements choose the format."})
    window: str = field(default="own", metadata={
        "help": "Steering window rule: own (each probe's window is centred on its own best "
                "validation layer) or shared (one window for every probe, centred on the layer "
                "of best mean validation accuracy over the probes)."})
    steer_layers: list[int] | None = field(default=None, metadata={
        "help": "Steered layers for every probe (none: the --window rule)."})
    n_steer_layers: int = field(default=4, metadata={"help": "Width of the steering window."})
    steer_tokens: int = field(default=2, metadata={
        "help": "The statement's last tokens steered (final word piece and period)."})
    doses: list[float] = field(default_factory=lambda: [-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0],
                               metadata={"help": "Doses in class-mean gaps per steered layer."})
    n_null: int = field(default=250, metadata={
        "help": "Norm-matched random directions in each null (steering per window and dataset, "
                "patching's held-out nodes); a p-value's floor is 1/(k+1). With the default 12 "
                "p-values corrected together, 250 lets a lone effect at its floor reach q = "
                "0.048 (docs/benchmarks.md: the cost of more)."})
    transfer: list[str] = field(default_factory=lambda: ["sp_en_trans"], metadata={
        "help": "Other datasets whose held-out statements are steered with the same directions "
                "(none: no transfer)."})
    n_transfer: int = field(default=32, metadata={
        "help": "Held-out statements steered per transfer dataset."})
    n_neutral: int = field(default=4, metadata={"help": "Neutral (KJV) texts for ΔCE."})
    neutral_tokens: int = field(default=48, metadata={"help": "Tokens per neutral text."})
    patch_pairs: int = field(default=32, metadata={
        "help": "True/false pairs about one city for the patching map (its null picks nodes on "
                "one half and tests them on the other)."})
    patch_layer_stride: int = field(default=2, metadata={"help": "Every k-th layer patched."})
    patch_tokens: int = field(default=8, metadata={"help": "Final prompt tokens patched."})
    patch_null_nodes: int = field(default=3, metadata={
        "help": "Nodes of largest effect (on the selection half) tested against the null."})
    attr_pairs: int = field(default=8, metadata={"help": "Pairs in the attribution comparison."})
    attr_layers: list[int] | None = field(default=None, metadata={
        "help": "Layers whose resid_post, attn_out, mlp_out are attributed (none: five spread "
                "evenly, block ⌊(i + ½)·L/5⌋ of L; 3,9,15,21,27 on a 30-block model)."})
    attr_tokens: int = field(default=6, metadata={"help": "Final prompt tokens attributed."})
    ig_steps: int = field(default=4, metadata={"help": "Integrated-gradients steps."})
    n_exact: int = field(default=12, metadata={
        "help": "Randomly sampled nodes per hook kind patched exactly."})
    n_top_exact: int = field(default=5, metadata={
        "help": "Top-ranked nodes by attribution patching per hook kind also patched exactly."})

    # Read by studies/erasure.py, which took its answer words from this config before they
    # moved to the shared PromptConfig; drop these once it reads PromptConfig itself.
    @property
    def answer_true(self) -> list[str]:
        return self.prompt.answer_true

    @property
    def answer_false(self) -> list[str]:
        return self.prompt.answer_false

    def validate(self) -> None:
        """Every check that needs no model (run before anything loads)."""
        from interplab.probes import PROBES, PairProbe

        self.run.validate()
        self.data.validate()
        self.prompt.validate()
        pair = [p for p in self.probe.probes if p in PROBES and issubclass(PROBES[p], PairProbe)]
        if pair:
            raise InterplabError(
                f"{', '.join(pair)} is a pair probe (trained on statement/negation pairs): it "
                "has no direction to add to one statement; leave it out of --probes (e.g. "
                "--probes diffmean,logistic,lda)")
        self.probe.validate(allowed=tuple(p for p in PROBES if not issubclass(PROBES[p],
                                                                             PairProbe)))
        if not self.formats:
            raise InterplabError(f"give at least one prompt format (--formats), from "
                                 f"{', '.join(FORMAT_NAMES)}")
        bad = [f for f in self.formats if f not in FORMAT_NAMES]
        if bad or len(set(self.formats)) != len(self.formats):
            raise InterplabError(f"--formats {','.join(self.formats)}: each of "
                                 f"{', '.join(FORMAT_NAMES)} at most once")
        if self.window not in WINDOW_RULES:
            raise InterplabError(f"--window must be one of {', '.join(WINDOW_RULES)}, not "
                                 f"{self.window!r}")
        if len(self.doses) < 5 or 0.0 not in self.doses or min(self.doses) >= 0:
            raise InterplabError("doses need at least 5 values including 0 and a negative one, "
                                 "e.g. -2,-1,-0.5,0,0.5,1,2")
        if self.n_null < 20:
            raise InterplabError(f"--n-null must be at least 20 for a usable null, not "
                                 f"{self.n_null}")
        for name in ("n_prompts", "attr_pairs", "steer_tokens", "patch_tokens", "attr_tokens",
                     "ig_steps", "n_steer_layers", "patch_null_nodes", "n_exact"):
            if getattr(self, name) < 1:
                raise InterplabError(f"--{name.replace('_', '-')} must be at least 1")
        if self.n_prompts < 8 or self.patch_pairs < 4:
            raise InterplabError("--n-prompts must be at least 8 and --patch-pairs at least 4 "
                                 "(the patching null selects on one half and tests on the other)")
        if self.transfer and self.n_transfer < 8:
            raise InterplabError(f"--n-transfer must be at least 8, not {self.n_transfer}")
        clash = sorted(set(self.transfer) & set(DATASETS))
        if clash:
            raise InterplabError(f"--transfer {','.join(clash)}: the probes are trained on "
                                 f"{' and '.join(DATASETS)}; name other datasets (e.g. "
                                 "sp_en_trans, larger_than)")
        if self.patch_layer_stride < 1:
            raise InterplabError(f"--patch-layer-stride must be at least 1 (every k-th layer is "
                                 f"patched), not {self.patch_layer_stride}")
        if self.n_top_exact < 0:
            raise InterplabError(f"--n-top-exact must be >= 0, not {self.n_top_exact}")
        for option, layers in (("--layers", self.steer_layers), ("--attr-layers",
                                                                   self.attr_layers)):
            if layers is not None and (not layers or min(layers) < 0):
                raise InterplabError(f"{option} must list block indices ≥ 0, got {layers}")

    def check_layers(self, n_layers: int) -> None:
        """Refuse layer options outside a model of ``n_layers`` blocks (once it is loaded, before
        anything runs on it)."""
        last = n_layers - 1
        for option, layers in (("--layers", self.steer_layers), ("--attr-layers",
                                                                   self.attr_layers)):
            bad = sorted({layer for layer in layers or [] if layer > last})
            if bad:
                raise InterplabError(f"{option}: layer(s) {', '.join(map(str, bad))} do not exist; "
                                     f"the model has {n_layers} blocks (0–{last})")
        if self.steer_layers is None and self.n_steer_layers > n_layers:
            raise InterplabError(f"--n-layers {self.n_steer_layers} is wider than the model's "
                                 f"{n_layers} blocks; give at most {n_layers}")

    def attribution_layers(self, n_layers: int) -> list[int]:
        """``attr_layers``, or five blocks spread evenly over ``n_layers`` (fewer when the model
        has fewer than five)."""
        if self.attr_layers is not None:
            return sorted(set(self.attr_layers))
        return sorted({int((i + 0.5) * n_layers / 5) for i in range(5)})


@dataclass
class CausalResult(StudyResult):
    """A causal-study result: config, data, probes, the task and the model's behaviour on it,
    steering with its controls, patching, attribution, the corrected statistics and findings."""

    study = "causal"

    config: dict[str, Any]
    versions: dict[str, str]
    model: dict[str, Any]
    data: dict[str, Any]
    probes: dict[str, Any]  # directions' scaling, validation accuracy, each probe's window
    task: dict[str, Any]  # the formats scored on validation, the one chosen, its test baseline
    steering: dict[str, dict[str, Any]]  # probe -> InterventionResult.to_dict() (cities, test)
    comparison: list[dict[str, Any]]  # one row per probe × dataset at the null's dose
    control: dict[str, Any]  # the same directions and dose on prompts with no statement
    transfer: dict[str, Any]  # dataset -> its baseline and per-probe steering
    patching: dict[str, Any]
    attribution: dict[str, Any]
    statistics: dict[str, Any]  # every p-value of the study, corrected as one family
    verdict: dict[str, Any]  # the gates and what the findings may claim
    findings: list[str]
    notes: list[str]
    timings: dict[str, Any]
