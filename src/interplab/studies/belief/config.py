"""The belief study's config and result (no torch here: the CLI reads this module for
``--help``)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from interplab.compmech.config import GPTConfig, TrainConfig
from interplab.errors import InterplabError
from interplab.study.result import StudyResult, config_from_dict

TARGET_LOSS_RATIO = 1.02  # final loss within 2 % of the optimal floor
TARGET_R2 = 0.9  # R² on unseen prefixes at TARGET_SITE
TARGET_RMSE_RATIO = 0.5  # RMSE trained / untrained on unseen prefixes at TARGET_SITE
TARGET_SHUFFLED_R2 = 0.05  # the shuffled-belief control must stay at or below this everywhere
CONCAT = "concat"
PROJECTED = "concat_projected"  # the concatenation randomly projected to d_model features
TARGET_SITE = CONCAT  # the verdict is read at the concatenation of all layers (fixed in advance)


@dataclass
class BeliefStudyConfig:
    """Everything that determines a run.

    Defaults (Mess3, x = 0.05, alpha = 0.85) are chosen to learn quickly on a shared 2-core CPU:
    the architecture of the belief-geometry paper (4 layers, d_model 64, 1 head, d_mlp 256,
    context 10) already reaches the loss floor within ~0.5 % after a few hundred steps of 256
    sequences, so the step budget is spent on sharpening the fine (fractal) structure rather than
    on a bigger model. ``num_threads = 1``: these matrices are tiny, and on a shared 2-core machine
    one thread measured ~4x faster per step than two (thread synchronisation dominates).

    ``stop_loss_ratio > 0`` turns ``n_steps`` into a cap: training stops at the first evaluation
    whose held-out loss is within that ratio of the optimal floor (e.g. 1.02), and the result
    records the steps run and whether the cap was hit. Runs are bit-identical for the same config,
    thread count, library versions and CPU instruction set (see ``BeliefStudyResult.determinism``).
    """

    process: str = field(default="mess3", metadata={
        "help": "Preset (mess3, rrxor, z1r, even, golden_mean) or a .json/.npy file."})
    process_params: dict[str, float] = field(default_factory=dict, metadata={
        "help": "Preset parameter NAME=VALUE (repeatable), e.g. x=0.05."})
    # model.vocab_size is set from the process
    model: GPTConfig = field(default_factory=GPTConfig)
    # train.seed follows ``seed``; train.stop_loss comes from ``stop_loss_ratio``
    train: TrainConfig = field(default_factory=lambda: TrainConfig(n_steps=1500, eval_every=100))
    stop_loss_ratio: float = field(default=0.0, metadata={
        "help": "Stop at the first evaluation whose held-out loss is within this ratio of the "
        "optimal floor, e.g. 1.02 (0 = run all steps)."})
    max_regression_sequences: int = field(default=65536, metadata={
        "help": "Enumerate all sequences (exact weights) up to this many, else sample."})
    n_folds: int = field(default=5, metadata={"help": "Cross-validation folds of whole sequences."})
    ridge: float = field(default=0.0, metadata={"help": "Ridge penalty of the belief regression."})
    max_plot_points: int = field(default=8000, metadata={"help": "Points in the simplex figure."})
    seed: int = field(default=0, metadata={
        "help": "Seed for initialisation, data, split and controls."})
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda[:N]."})
    num_threads: int = field(default=1, metadata={
        "help": "Torch and BLAS CPU threads (0 = library defaults)."})

    def __post_init__(self) -> None:
        if self.n_folds < 2:
            raise InterplabError("n_folds must be >= 2 (each sequence is held out once), e.g. 5")
        if self.max_plot_points < 0 or self.num_threads < 0:
            raise InterplabError("max_plot_points and num_threads must be >= 0")
        if self.stop_loss_ratio and self.stop_loss_ratio <= 1:
            raise InterplabError(
                f"stop_loss_ratio must be > 1 (a loss above the floor, e.g. 1.02) or 0 to run all "
                f"n_steps; got {self.stop_loss_ratio}"
            )
        if self.train.stop_loss is not None:
            raise InterplabError("set stop_loss_ratio (relative to the process's loss floor), "
                                 "not train.stop_loss")
        if self.train.seed != self.seed:  # one seed for the study
            self.train = replace(self.train, seed=self.seed)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BeliefStudyConfig:
        return config_from_dict(cls, data)


@dataclass
class LayerScore:
    """Out-of-fold regression scores for one site, with both controls beside them.

    ``layer`` is a residual-stream hook name, ``"concat"`` (all of them concatenated) or
    ``"concat_projected"`` (the concatenation times a seeded Gaussian matrix down to ``d_model``
    features: the concatenation's information at a single layer's feature count). R² is pooled
    over belief coordinates and weighted by prefix probability; RMSE is in probability units.
    Pooled over folds of whole sequences: ``*_unseen`` (the headline) only over prefixes that no
    training sequence of the fold contains; ``*_heldout_all`` over every held-out (sequence,
    position) pair, most of whose weight is on prefixes training sequences also contain;
    ``r2_train`` is the in-sample R² (mean over folds). ``rmse_ratio_unseen`` is
    ``rmse_unseen / untrained_rmse_unseen``.
    """

    layer: str
    n_features: int
    r2_unseen: float
    rmse_unseen: float
    r2_heldout_all: float
    rmse_heldout_all: float
    r2_train: float
    untrained_r2_unseen: float
    untrained_rmse_unseen: float
    untrained_r2_heldout_all: float
    untrained_rmse_heldout_all: float
    rmse_ratio_unseen: float
    shuffled_r2_unseen: float
    shuffled_rmse_unseen: float
    shuffled_r2_heldout_all: float


@dataclass
class BeliefStudyResult(StudyResult):
    """Config, process facts, training curve vs optimal floor, regression scores with controls,
    counts, seeds, versions, timings, and the points the simplex figure draws."""

    study = "belief"

    config: dict[str, Any]
    process: dict[str, Any]
    optimal_loss_per_position: list[float]
    optimal_loss: float
    unigram_loss: float
    training: dict[str, Any]
    final_loss: float
    final_loss_stderr: float
    final_loss_per_position: list[float]
    loss_ratio: float
    untrained_loss: float
    regression: list[LayerScore]
    best_layer: str  # best single residual-stream site by unseen R² (not the concatenations)
    best_r2: float  # its unseen R²
    untrained_best_layer: str
    untrained_best_r2: float
    max_shuffled_r2: float  # largest shuffled-control unseen R² over all sites
    layers_vs_concat: dict[str, Any]
    targets: dict[str, Any]
    determinism: dict[str, Any]
    counts: dict[str, Any]
    seeds: dict[str, int | list[int]]  # every seed by purpose, as passed (see _seeds)
    versions: dict[str, str]
    timings: dict[str, float]
    figure_data: dict[str, Any]
    # the answer in a few findings (empty in results written before it was added)
    summary: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BeliefStudyResult:
        d = dict(data)
        d.pop("study", None)
        names = {f.name for f in fields(cls)}
        optional = {"summary"}
        layer_names = {f.name for f in fields(LayerScore)}
        if (not names - optional <= set(d) <= names
                or any(set(r) != layer_names for r in d.get("regression", []))):
            raise InterplabError(
                "this belief result was written by a different interplab version (its fields "
                "differ); re-run the study with `interplab belief` to get a current result.json"
            )
        d["regression"] = [LayerScore(**r) for r in d["regression"]]
        return cls(**d)

    def score(self, layer: str) -> LayerScore:
        for r in self.regression:
            if r.layer == layer:
                return r
        raise InterplabError(f"no regression for layer {layer!r}")
