"""The truth study's config and result (no torch here: the CLI reads this module for ``--help``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from interplab.controls.nulls import NULLS
from interplab.errors import InterplabError
from interplab.study.data import short_name
from interplab.study.result import StudyResult
from interplab.study.settings import (
    LAST_TOKEN,
    FlatConfig,
    ProbeConfig,
    RunConfig,
    SplitConfig,
)

DEFAULT_DATASETS = [
    "cities", "neg_cities", "sp_en_trans", "neg_sp_en_trans",
    "larger_than", "smaller_than", "cities_conj", "cities_disj",
]
DEFAULT_TRAIN_SETS = [["cities"], ["cities", "neg_cities"], ["larger_than"], ["sp_en_trans"]]
DEFAULT_PCA_PAIRS = [["cities", "neg_cities"], ["larger_than", "smaller_than"]]
CONTROLS = ("shuffled", "random", "reset")
TOKENS = LAST_TOKEN
# How each probe is named in summaries and in the report.
PROBE_LABELS = {"diffmean": "mass-mean", "lda": "LDA", "massmean-iid": "mass-mean iid",
                "logistic": "logistic", "ccs": "CCS"}


def is_pair_probe(name: str) -> bool:
    """Whether the registered probe ``name`` trains on statement/negation pairs (e.g. CCS)."""
    from interplab.probes import PROBES, PairProbe

    return issubclass(PROBES[name], PairProbe)


def label(probe: str) -> str:
    return PROBE_LABELS.get(probe, probe)


@dataclass
class TruthConfig(FlatConfig):
    """Everything that defines a truth-study run (saved with the result)."""

    run: RunConfig = field(default_factory=RunConfig)
    datasets: list[str] = field(default_factory=lambda: list(DEFAULT_DATASETS), metadata={
        "help": "Dataset names or .csv paths, comma-separated."})
    train_sets: list[list[str]] = field(
        default_factory=lambda: [list(t) for t in DEFAULT_TRAIN_SETS], metadata={
            "help": "A training set (repeat the option); join datasets with '+' to mix them."})
    layers: list[int] | None = field(default=None, metadata={
        "help": "Block indices, comma-separated (default: every block)."})
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    controls: list[str] = field(default_factory=lambda: list(CONTROLS), metadata={
        "help": "Any of shuffled,random,reset (or 'none')."})
    data: SplitConfig = field(default_factory=SplitConfig)
    n_shuffles: int = field(default=5, metadata={
        "help": "Shuffled-label fits averaged per probe."})
    pca_pairs: list[list[str]] = field(
        default_factory=lambda: [list(p) for p in DEFAULT_PCA_PAIRS], metadata={
            "help": "Dataset pairs of the PCA figure, joined with '+' (repeat the option)."})
    erasure_nulls: bool = field(default=False, metadata={
        "help": "Add an erasure and null section: at the first training set's chosen layer, "
        "LEACE checked held out beside a same-rank random subspace, and each probe against each "
        "null source of --nulls, method − null with a CI."})
    nulls: list[str] = field(default_factory=lambda: list(NULLS), metadata={
        "help": "Null sources of the erasure and null section: gaussian, gaussian-mixture, "
        "hypercube (no model pass); shuffled-tokens, layer0, reset, random-init (one harvest "
        "each of that training set's train and test statements, at the chosen layer only)."})

    def validate(self) -> None:
        self.run.validate()
        self.data.validate()
        self.probe.validate()
        if not self.datasets:
            raise InterplabError("no datasets given; name at least one (e.g. cities)")
        bad = [c for c in self.controls if c not in CONTROLS]
        if bad:
            raise InterplabError(f"unknown control(s) {bad}; choose from {list(CONTROLS)}")
        names = {short_name(d) for d in self.datasets}
        for ts in self.train_sets:
            missing = [d for d in ts if short_name(d) not in names]
            if missing:
                raise InterplabError(
                    f"training set {ts} uses {missing}, which is not among the datasets "
                    f"{sorted(names)}; add it to the datasets"
                )
        if self.n_shuffles < 1:
            raise InterplabError("n_shuffles must be at least 1")
        bad = [n for n in self.nulls if n not in NULLS]
        if bad:
            raise InterplabError(f"unknown null(s) {bad}; choose from {', '.join(NULLS)}")
        if self.layers is not None and any(layer < 0 for layer in self.layers):
            raise InterplabError(f"layers must be non-negative block indices, got {self.layers}")


@dataclass
class TruthResult(StudyResult):
    """A truth-study result: config, metrics with their controls, counts, seeds and versions."""

    study = "truth"

    config: dict[str, Any]
    versions: dict[str, str]
    model: dict[str, Any]
    reset_model: dict[str, Any] | None
    datasets: list[dict[str, Any]]
    layers: list[int]
    probes: list[str]
    train_sets: list[str]
    test_sets: list[str]
    # accuracy[train][probe][variant] = {"value": [L][T], "lo": [L][T], "hi": [L][T], "n": [T]}
    # on the rows ``scored[train][test]`` describes
    accuracy: dict[str, dict[str, dict[str, dict[str, Any]]]]
    # heldout[train][probe][variant] = {"value": [L], "lo": [L], "hi": [L], "n"}: the training
    # datasets' own test splits pooled (the in-distribution number), at every layer
    heldout: dict[str, dict[str, dict[str, dict[str, Any]]]]
    # validation[train][probe] = {"value": [L], "n"}: pooled validation splits (chooses the layer)
    validation: dict[str, dict[str, dict[str, Any]]]
    best_layer: dict[str, dict[str, int]]
    # scored[train][test] = {"rows": "test split" | "all rows", "n", "twins_left_out"}
    scored: dict[str, dict[str, dict[str, Any]]]
    method: dict[str, Any]  # split rule, centring, tokens, layer selection, multiple comparisons
    # one row per (train, probe, test) at the chosen layer: accuracy, every control, the verdict
    # against chance, and the controls that explain it (explained_by, partly_explained_by)
    verdicts: list[dict[str, Any]]
    control_checks: list[dict[str, Any]]  # controls that are off, each with a comment
    summary: list[str]  # the answer, in a few sentences
    likelihood: dict[str, Any]
    pca: dict[str, Any]
    notes: list[str]
    timings: dict[str, float]
    # with config.erasure_nulls: {"train_set", "layer", "erasure": {...}, "nulls": {...}}
    # (see interplab.studies.truth.erasure_nulls); None when off
    erasure_nulls: dict[str, Any] | None = None
    # one row per (train, probe): the training datasets' own test splits pooled at the chosen
    # layer, graded like a verdict row (empty in results written before it was added)
    in_distribution: list[dict[str, Any]] = field(default_factory=list)

    # convenience accessors used by the report and tests
    def acc(self, train: str, probe: str, variant: str, layer: int, test: str) -> dict[str, float]:
        entry = self.accuracy[train][probe][variant]
        li, ti = self.layers.index(layer), self.test_sets.index(test)
        return {"value": entry["value"][li][ti], "lo": entry["lo"][li][ti],
                "hi": entry["hi"][li][ti], "n": entry["n"][ti]}
