"""The settings every study shares, each default written once.

A study's config nests these instead of declaring its own ``model``, ``seed``, ``n_boot``,
``batch_size``, ``device``, ``threads``, split fractions or centring; the command line flattens
them back to the same options (``--model``, ``--seed``, ``--split`` ...). A study that needs a
different *science* default (its own probe list) overrides it where it nests the config, with
``field(default_factory=lambda: ProbeConfig(probes=[...]))``; run settings, the split convention
and the centring are never overridden (``tests/test_study_spine.py`` checks both).

No torch here: the CLI imports this module to build ``--help``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

from interplab.defaults import DEFAULT_BATCH_SIZE, DEFAULT_MODEL, DEFAULT_N_BOOT
from interplab.errors import InterplabError

DEFAULT_SPLIT = (0.6, 0.2, 0.2)
DEFAULT_PROBES = ("diffmean", "lda", "logistic", "ccs")
LAST_TOKEN = "last token of each statement, blocks.{layer}.hook_resid_post (before the final norm)"
# Fewer resamples than this give a "95 % interval" that is mostly noise in its own end points.
MIN_BOOT = 100


C = TypeVar("C", bound="FlatConfig")


class FlatConfig:
    """Mixin for a study config that nests the shared settings: ``Config.make(model=..., seed=...,
    probes=..., datasets=...)`` takes every setting by the name of its command-line option (the
    leaf field name), whichever nested config holds it."""

    @classmethod
    def make(cls: type[C], **settings: Any) -> C:
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        nested = {f.name: f for f in fields if _is_config_factory(f)}
        top = {f.name for f in fields}
        own: dict[str, Any] = {}
        parts: dict[str, dict[str, Any]] = {name: {} for name in nested}
        for key, value in settings.items():
            holder = next((name for name, f in nested.items()
                           if key in _field_names(_factory_type(f))), None)
            if key in top or holder is None:  # unknown names: the constructor's error
                own[key] = value
            else:
                parts[holder][key] = value
        cfg = cls(**own)
        for name, values in parts.items():
            if values:
                setattr(cfg, name, dataclasses.replace(getattr(cfg, name), **values))
        return cfg


def _is_config_factory(f: dataclasses.Field) -> bool:
    return f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(
        f.default_factory())


def _factory_type(f: dataclasses.Field) -> type:
    return type(f.default_factory())  # type: ignore[misc]


def _field_names(tp: type) -> set[str]:
    return {f.name for f in dataclasses.fields(tp)}  # type: ignore[arg-type]


@dataclass
class RunConfig:
    """Where and how a study runs: the model, the seed and the resources. Nothing here changes
    what a study measures except ``model`` and ``seed``; ``threads`` can change the last digits
    of floating-point sums (a run at one thread repeats bit for bit)."""

    model: str = field(default=DEFAULT_MODEL, metadata={
        "help": "Registry name (smollm2-135m, tiny-llama, ...), HF folder or .gguf file."})
    seed: int = field(default=0, metadata={
        "help": "Seed of the splits, subsamples, probes, controls and bootstrap."})
    n_boot: int = field(default=DEFAULT_N_BOOT, metadata={
        "help": f"Bootstrap resamples of each interval (at least {MIN_BOOT})."})
    batch_size: int = field(default=DEFAULT_BATCH_SIZE, metadata={"help": "Texts per forward pass."})
    device: str | None = field(default=None, metadata={
        "help": "cpu, cuda or cuda:N (none: cuda when available, else cpu)."})
    threads: int | None = field(default=None, metadata={
        "help": "CPU threads (none: $INTERPLAB_THREADS, else the CPUs other processes leave "
        "free, re-decided as the load changes); 1 repeats a run bit for bit."})

    def validate(self) -> None:
        if not self.model:
            raise InterplabError("--model is empty; name a model (e.g. smollm2-135m)")
        if self.n_boot < MIN_BOOT:
            raise InterplabError(
                f"--n-boot {self.n_boot} is too few for a 95 % interval; use at least {MIN_BOOT} "
                f"(the default is {DEFAULT_N_BOOT})")
        if self.batch_size < 1:
            raise InterplabError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.threads is not None and self.threads < 1:
            raise InterplabError(f"--threads must be at least 1 (or none for auto), got "
                                 f"{self.threads}")
        if self.device is not None:
            dev = self.device.strip().lower()
            base, _, index = dev.partition(":")
            if base not in ("cpu", "cuda", "mps") or (index and not index.isdigit()) or (
                    index and base != "cuda"):
                raise InterplabError(f"--device {self.device!r} is not a device; use cpu, cuda "
                                     "or cuda:N (or leave it out)")
            self.device = dev


@dataclass
class SplitConfig:
    """How statement datasets become train / validation / test: one convention for every study.

    Splits are by entity (the city, the word, the number pair), so no subject is on two sides;
    the layer (or any other choice) is made on validation and reported on test."""

    split: list[float] = field(default_factory=lambda: list(DEFAULT_SPLIT), metadata={
        "help": "Train,validation,test fractions (split by entity)."})
    max_per_dataset: int | None = field(default=600, metadata={
        "help": "Statements per dataset, balanced by label (0 or none: no limit)."})
    pair_by: str = field(default="auto", metadata={
        "help": "Match twin datasets (cities/neg_cities): auto (pair ids, else aligned rows), "
        "row, or a CSV column name."})
    group_column: str | None = field(default=None, metadata={
        "help": "CSV column naming each row's entity (for the split)."})

    def validate(self) -> None:
        if (len(self.split) != 3 or min(self.split) <= 0
                or abs(sum(self.split) - 1) > 1e-6):
            raise InterplabError(
                f"split must be three positive fractions (train, validation, test) summing to 1, "
                f"got {self.split}; e.g. 0.6,0.2,0.2")
        if self.max_per_dataset is not None and self.max_per_dataset < 0:
            raise InterplabError(f"--max-per-dataset must be >= 0 (0: no limit), got "
                                 f"{self.max_per_dataset}")


@dataclass
class ProbeConfig:
    """Which probes a study fits and how their inputs are centred. Every probe a study fits
    (headline, controls, null sections) uses this one centring."""

    probes: list[str] = field(default_factory=lambda: list(DEFAULT_PROBES), metadata={
        "help": "Probes, comma-separated (diffmean, lda, massmean-iid, logistic, ccs)."})
    centering: str = field(default="per-dataset", metadata={
        "help": "per-dataset | train | none."})

    def validate(self, allowed: tuple[str, ...] | None = None) -> None:
        from interplab.probes import CENTERINGS, PROBES

        if not self.probes:
            raise InterplabError("no probes given; name at least one (e.g. diffmean)")
        choices = list(allowed) if allowed is not None else list(PROBES)
        unknown = [p for p in self.probes if p not in choices]
        if unknown:
            raise InterplabError(f"unknown probe(s) {unknown} (or not usable here); choose from "
                                 f"{choices}")
        if self.centering not in CENTERINGS:
            raise InterplabError(f"centering must be one of {list(CENTERINGS)}, got "
                                 f"{self.centering!r}")


@dataclass
class PromptConfig:
    """The few-shot true/false prompt the causal and erasure studies score: labelled training
    statements, each followed by " This statement is:" and its answer word, then the statement
    asked about. The answer is read as P(true word) − P(false word)."""

    n_shots: int = field(default=4, metadata={
        "help": "Labelled training statements in the few-shot prefix."})
    answer_true: list[str] = field(default_factory=lambda: ["TRUE", "True"], metadata={
        "help": "Spellings of the true answer (read after a space); the first that is one "
                "token is used."})
    answer_false: list[str] = field(default_factory=lambda: ["FALSE", "False"], metadata={
        "help": "Spellings of the false answer (read after a space); the first that is one "
                "token is used."})

    def validate(self) -> None:
        if self.n_shots < 1:
            raise InterplabError(f"--n-shots must be at least 1, got {self.n_shots}")
        if not self.answer_true or not self.answer_false:
            raise InterplabError("give at least one spelling of each answer word "
                                 "(--answer-true, --answer-false)")
