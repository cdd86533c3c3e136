"""The settings of one SAE and of its training: plain dataclasses (no torch import), so study
configs and the command line read their defaults without loading torch."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from interplab.errors import ConfigFieldError, InterplabError

# Fields older interplab versions wrote into SAE configs and no longer do; reading ignores them.
# ``normalisation_folded`` was always True: saved weights always take raw activations.
RETIRED_CONFIG_FIELDS = frozenset({"normalisation_folded"})


def without_retired(d: dict) -> dict:
    """``d`` without the :data:`RETIRED_CONFIG_FIELDS` (an old config.json or checkpoint)."""
    return {k: v for k, v in d.items() if k not in RETIRED_CONFIG_FIELDS}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


class _Checker:
    """Range checks of one config instance; each failure is a :class:`ConfigFieldError`."""

    def __init__(self, obj: Any, labels: dict[str, str] | None = None):
        self.obj, self.owner, self.labels = obj, type(obj).__name__, labels or {}

    def fail(self, name: str, problem: str) -> ConfigFieldError:
        return ConfigFieldError(self.owner, name, f"{problem}, not {getattr(self.obj, name)!r}",
                                flag=self.labels.get(name))

    def integer(self, name: str, least: int, optional: bool = False, note: str = "") -> None:
        v = getattr(self.obj, name)
        if optional and v is None:
            return
        if not _is_int(v) or v < least:
            kind = {0: "a whole number ≥ 0", 1: "a positive whole number"}.get(
                least, f"a whole number ≥ {least}")
            raise self.fail(name, f"must be {kind}{note}")

    def number(self, name: str, low: float, high: float = math.inf, *, low_open: bool = False,
               high_open: bool = False) -> None:
        v = getattr(self.obj, name)
        ok = _is_number(v) and (v > low if low_open else v >= low) and (
            v < high if high_open else v <= high)
        if ok:
            return
        if high == math.inf:
            kind = ("a positive finite number" if low == 0 and low_open else
                    f"a finite number {'>' if low_open else '≥'} {low:g}")
        else:
            kind = (f"a number in {'(' if low_open else '['}{low:g}, {high:g}"
                    f"{')' if high_open else ']'}")
        raise self.fail(name, f"must be {kind}")


# How the fields of SAEConfig that `interplab sae train` sets are named on its command line.
_SAE_LABELS = {"d_sae": "the width d_sae (--width)", "k": "k (--k)",
               "sparsity_coefficient": "the sparsity coefficient λ (--sparsity)",
               "seed": "the seed (--seed)"}


@dataclass
class SAEConfig:
    """Hyper-parameters and provenance of one SAE (saved as JSON beside the weights).

    ``sparsity_coefficient`` is λ of the L1 (ReLU, Gated) or L0 (JumpReLU) penalty; ``k`` is the
    number of active features for TopK/BatchTopK. ``normalisation_scale`` is the factor the
    trainer multiplied inputs by; saved weights always have it folded back in, so a loaded SAE
    takes raw activations.
    """

    architecture: str
    d_in: int
    d_sae: int
    k: int | None = None
    sparsity_coefficient: float = 0.0
    aux_k: int | None = None  # top-k family: number of dead latents used by the aux-k loss
    aux_k_coefficient: float = 1 / 32
    # JumpReLU: STE kernel width ε and initial θ, in units of the (normalised, E‖x‖² = d_in) input.
    jumprelu_bandwidth: float = 0.05
    jumprelu_init_threshold: float = 0.1
    batchtopk_threshold_momentum: float = 0.01
    hook: str | None = None
    model: str | None = None
    context_length: int | None = None
    normalisation_scale: float = 1.0
    normalisation_tokens: int = 0  # ordinary tokens the scale was estimated on
    # The ExclusionRule (to_dict) of the tokens left out of training and of headline metrics.
    exclusion: dict | None = None
    # Provenance, recorded when a trained SAE is saved and checked before it is applied
    # (interplab.sae.identity): the model's identity (name, architecture, config and weights
    # sha256) and what the training rows were (a store's path and fingerprint, or a corpus part).
    # None: an SAE from an older version or another library, which cannot be checked.
    model_identity: dict | None = None
    data: dict | None = None
    # Rows the optimizer stepped on: a row read in two epochs counts twice, so this exceeds the
    # distinct rows of the data only when a run is longer than one pass.
    training_tokens: int = 0
    seed: int = 0
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Every numeric field in its range, or one :class:`ConfigFieldError` naming it."""
        c = _Checker(self, _SAE_LABELS)
        for name in ("d_in", "d_sae"):
            c.integer(name, 1)
        c.integer("k", 1, optional=True)
        if self.k is not None and self.k > self.d_sae:
            raise InterplabError(f"k={self.k} is larger than the SAE width d_sae={self.d_sae}; "
                                 "lower --k or raise --width")
        c.number("sparsity_coefficient", 0)
        c.integer("aux_k", 1, optional=True)
        c.number("aux_k_coefficient", 0)
        c.number("jumprelu_bandwidth", 0, low_open=True)
        c.number("jumprelu_init_threshold", 0, low_open=True)
        c.number("batchtopk_threshold_momentum", 0, 1, low_open=True)
        c.integer("context_length", 1, optional=True)
        c.number("normalisation_scale", 0, low_open=True)
        for name in ("normalisation_tokens", "training_tokens", "seed"):
            c.integer(name, 0)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: object = "SAE config") -> SAEConfig:
        """Build from a dict (``where`` names its source in errors); fields older versions wrote
        and this one retired are ignored."""
        d = without_retired(d)
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise InterplabError(
                f"{where} has unknown fields {sorted(unknown)}; expected a subset of "
                f"{sorted(known)} (is this an interplab SAE folder?)"
            )
        missing = [k for k in ("architecture", "d_in", "d_sae") if k not in d]
        if missing:
            raise InterplabError(f"{where} lacks {missing}; restore the file or re-save the SAE")
        for k in ("d_in", "d_sae"):
            if not isinstance(d[k], int) or isinstance(d[k], bool):
                raise InterplabError(f"{where}: {k} must be an integer, got {d[k]!r}")
        try:
            return cls(**d)
        except InterplabError as exc:
            raise InterplabError(f"{where}: {exc}; restore the file or re-save the SAE") from None


@dataclass
class TrainerConfig:
    """Optimisation settings shared by every SAE of a sweep.

    ``total_steps`` fixes the LR schedule (one step = one batch). LR: linear warm-up over
    ``lr_warmup_steps``, constant, then linear decay to 0 over the last ``lr_decay_fraction`` of
    the steps. λ: linear warm-up from 0 over ``sparsity_warmup_steps``. A feature is *dead* when it
    has not fired in the last ``dead_window_tokens`` tokens. ``data_identity`` describes the
    batches (a JSON-able dict, e.g. a store fingerprint, hook and batch size); a checkpoint only
    resumes with the same one.
    """

    total_steps: int = field(metadata={"help": "Optimizer steps (one step = one batch)."})
    lr: float = field(default=3e-4, metadata={"help": "Adam's peak learning rate."})
    adam_betas: tuple[float, float] = field(default=(0.9, 0.999), metadata={
        "help": "Adam's beta1,beta2."})
    lr_warmup_steps: int = field(default=0, metadata={"help": "Linear LR warm-up steps."})
    lr_decay_fraction: float = field(default=0.2, metadata={
        "help": "Linear LR decay to 0 over this last fraction of the steps."})
    sparsity_warmup_steps: int = field(default=0, metadata={
        "help": "Linear warm-up of the sparsity coefficient λ from 0."})
    dead_window_tokens: int = field(default=1_000_000, metadata={
        "help": "A feature is dead when it has not fired in this many tokens."})
    # ReLU family: resample dead features this often
    resample_every_steps: int | None = field(default=None, metadata={
        "help": "ReLU family: resample dead features every N steps."})
    normalise_activations: bool = field(default=True, metadata={
        "help": "Scale inputs so that E‖x‖² = d_in (folded back into the saved weights)."})
    # tokens (from the first batches) that set the scale
    scale_estimation_tokens: int = field(default=131_072, metadata={
        "help": "Tokens (from the first batches) that set the input scale."})
    geometric_median_init: bool = field(default=True, metadata={
        "help": "Initialise the decoder bias at the geometric median of a sample."})
    init_sample_size: int = field(default=8192, metadata={
        "help": "Rows of that sample."})
    # bf16: bf16 matrix products, fp32 weights/optimizer
    mixed_precision: Literal["fp32", "bf16"] = field(default="fp32", metadata={
        "help": "fp32, or bf16 matrix products with fp32 weights and optimizer."})
    sparse_topk_decoder: bool = field(default=False, metadata={
        "help": "TopK autograd reference path only: decode with the k active rows (the default "
                "fused TopK loss always does)."})
    log_path: str | None = None
    log_every_steps: int = field(default=100, metadata={
        "help": "Training-log entry every N steps."})
    checkpoint_dir: str | None = None
    checkpoint_every_steps: int = field(default=0, metadata={
        "help": "Checkpoint every N steps (0: only on interrupt and at the end)."})
    # What the batches are (e.g. store fingerprint, hook, batch size); compared on resume.
    data_identity: dict | None = None
    wandb_project: str | None = field(default=None, metadata={
        "help": "Log to this wandb project too."})
    seed: int = field(default=0, metadata={"help": "Seed of initialisation and data order."})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda[:N]."})
    progress: bool = False

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Every field in its range, or one :class:`ConfigFieldError` naming it (the CLI adds
        the flag). ``total_steps`` 0 passes here (a study reads it as one pass over the data);
        :meth:`validate` asks for at least one step."""
        c = _Checker(self)
        c.integer("total_steps", 0)
        c.number("lr", 0, low_open=True)
        betas = self.adam_betas
        if not (isinstance(betas, tuple | list) and len(betas) == 2
                and all(_is_number(b) and 0 <= b < 1 for b in betas)):
            raise c.fail("adam_betas", "must be two numbers in [0, 1) (beta1,beta2)")
        for name in ("lr_warmup_steps", "sparsity_warmup_steps", "log_every_steps",
                     "checkpoint_every_steps", "seed"):
            c.integer(name, 0)
        c.number("lr_decay_fraction", 0, 1)
        for name in ("dead_window_tokens", "scale_estimation_tokens", "init_sample_size"):
            c.integer(name, 1)
        c.integer("resample_every_steps", 1, optional=True)
        if self.mixed_precision not in ("fp32", "bf16"):
            raise c.fail("mixed_precision", "must be 'fp32' or 'bf16'")
        if not isinstance(self.device, str) or not _DEVICE.fullmatch(self.device):
            raise c.fail("device", "must be cpu, cuda, cuda:N, mps or xpu[:N]")

    def validate(self) -> None:
        """:meth:`check`, and at least one step (what the trainer needs)."""
        self.check()
        if self.total_steps <= 0:
            raise InterplabError(f"total_steps must be ≥ 1 (got {self.total_steps})")


_ALLOW_MISMATCH_HELP = ("Apply the SAE even where its recorded model or hook differs from the one "
                        "given (e.g. a transfer experiment); the mismatch is recorded in the "
                        "output. Without it a mismatch is refused.")
_NORM_RATIO_HELP = ("Override the norm test of the exclusion rule: leave out tokens with a norm "
                    "above this × the batch median (0: no norm test, as in `sae train`; default: "
                    "the rule the SAE was trained with, else 10).")


def exclusion_rule_for(recorded: dict | None, exclusion: bool, norm_ratio: float | None) -> Any:
    """The :class:`~interplab.activations.exclusion.ExclusionRule` an evaluation applies: the one
    an SAE records (``recorded``; None: the default rule), with its norm test replaced by
    ``norm_ratio`` when given (0: none), or no rule at all when ``exclusion`` is False."""
    from interplab.activations.exclusion import ExclusionRule

    if not exclusion:
        return ExclusionRule.none()
    rule = ExclusionRule.from_dict(recorded)
    if norm_ratio is None:
        return rule
    return ExclusionRule(first_position=rule.first_position, norm_ratio=norm_ratio or None)


@dataclass(kw_only=True)
class SaeEvalConfig:
    """What ``sae eval`` measures: reconstruction on a store and/or the model's loss with the SAE
    spliced in (:func:`interplab.sae.evaluate.evaluate_sae`)."""

    sae: Path = field(metadata={
        "help": "SAE folder (interplab, SAELens or dictionary_learning)."})
    store: Path | None = field(default=None, metadata={
        "help": "Activation store for the reconstruction metrics (FVE, MSE, L0, alive) over all "
        "its rows."})
    model: str | None = field(default=None, metadata={
        "help": "Model for CE loss recovered, CE increase and KL with the SAE spliced in, on "
        "the held-out slice of --corpus."})
    hook: str | None = field(default=None, metadata={
        "help": "Hook point (default: the SAE's own; another one is a mismatch, see "
        "--allow-mismatch)."})
    context_lengths: list[int] = field(default_factory=list, metadata={
        "help": "Context lengths for CE, e.g. 128,512 (default: the SAE's training context "
        "length, else 128)."})
    corpus: str = field(default="kjv", metadata={
        "help": "Corpus whose held-out slice (its last 5 % of documents) the CE metrics run on: "
        "kjv | python-docs."})
    n_sequences: int = field(default=32, metadata={"help": "Held-out sequences for CE."})
    max_tokens: int = field(default=0, metadata={
        "help": "Evaluate only the store's first N rows (0: the whole store)."})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda[:N]."})
    allow_incomplete: bool = field(default=False, metadata={
        "help": "Evaluate on an unfinished harvest (recorded in the output)."})
    allow_mismatch: bool = field(default=False, metadata={"help": _ALLOW_MISMATCH_HELP})
    exclusion: bool = field(default=True, metadata={
        "help": "Headline metrics on ordinary tokens: position 0 and massive-norm tokens left "
        "out by the rule the SAE was trained with (--no-exclusion: every token)."})
    norm_ratio: float | None = field(default=None, metadata={"help": _NORM_RATIO_HELP})

    def validate(self) -> None:
        if self.store is None and not self.model:
            raise InterplabError("nothing to evaluate: give --store and/or --model")
        if self.n_sequences < 1 or self.max_tokens < 0:
            raise InterplabError("--n-sequences must be at least 1 and --max-tokens at least 0")
        if any(L < 2 for L in self.context_lengths):
            raise InterplabError(f"--context-lengths {self.context_lengths}: each must be at "
                                 "least 2 (one prediction needs two tokens)")

    def exclusion_rule(self, recorded: dict | None) -> Any:
        return exclusion_rule_for(recorded, self.exclusion, self.norm_ratio)


@dataclass(kw_only=True)
class DashboardConfig:
    """What ``sae dashboard`` shows: which features, on which text
    (:func:`interplab.sae.dashboard.dashboard_from_config`)."""

    sae: Path = field(metadata={
        "help": "SAE folder (interplab, SAELens or dictionary_learning)."})
    model: str = field(metadata={
        "help": "The model the SAE reads (registry name, HF folder or .gguf file)."})
    features: list[int] = field(default_factory=list, metadata={
        "help": "Feature ids to show (default: --n-features features that fired on the text, "
        "spread evenly over the density range from the densest to the rarest)."})
    n_features: int = field(default=12, metadata={
        "help": "How many features to pick when --features is not given."})
    hook: str | None = field(default=None, metadata={
        "help": "Hook point (default: the SAE's own; another one is a mismatch, see "
        "--allow-mismatch)."})
    corpus: str = field(default="kjv", metadata={
        "help": "Packaged corpus the text comes from: kjv | python-docs."})
    corpus_part: Literal["held_out", "train", "all"] = field(default="held_out", metadata={
        "help": "Which of its documents: held_out (the last 5 %, which `sae train --model` never "
        "uses; for kjv also far from the first chapters a store is usually harvested from), "
        "train (the rest) or all."})
    n_sequences: int = field(default=64, metadata={
        "help": "Sequences of --context-length tokens, each starting with BOS."})
    context_length: int = field(default=128, metadata={"help": "Tokens per sequence."})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda[:N]."})
    allow_mismatch: bool = field(default=False, metadata={"help": _ALLOW_MISMATCH_HELP})
    exclusion: bool = field(default=True, metadata={
        "help": "Leave out position 0 and massive-norm tokens by the rule the SAE was trained "
        "with, as training did (--no-exclusion: every token but BOS)."})
    norm_ratio: float | None = field(default=None, metadata={"help": _NORM_RATIO_HELP})

    def validate(self) -> None:
        if self.n_features < 1 or self.n_sequences < 1:
            raise InterplabError("--n-features and --n-sequences must be at least 1")
        if self.context_length < 2:
            raise InterplabError(f"--context-length must be at least 2, not "
                                 f"{self.context_length}")

    def exclusion_rule(self, recorded: dict | None) -> Any:
        return exclusion_rule_for(recorded, self.exclusion, self.norm_ratio)


_DEVICE = re.compile(r"cpu|mps|meta|(cuda|xpu)(:\d+)?")
