"""A harvest into an activation store, as a typed config and one function.

``run_harvest(HarvestConfig(...))`` validates the settings, reads the texts, loads the model and
streams the activations of the hooks into the store folder (:func:`~interplab.activations.
harvest_to_store`; re-running the same config resumes it). The config is the single place its
defaults and help texts are written: ``interplab harvest`` derives its options from it, and the
command that resumes a harvest (recorded in the store's manifest) is generated from it.

This module imports torch only inside functions, so the command line can read the config cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from interplab.defaults import DEFAULT_BATCH_SIZE, DEFAULT_MODEL
from interplab.errors import InterplabError

FOR_SAE_HELP = ("A store for SAE training: leave out position 0 and tokens with a norm > 10 × the "
                "median of their chunk of texts (the rule and the count are recorded in the "
                "manifest).")


@dataclass(kw_only=True)
class HarvestConfig:
    """Everything that determines a harvest: which model, texts, hooks and positions, and how the
    rows are computed and stored."""

    model: str = field(default=DEFAULT_MODEL, metadata={
        "help": "Registry name, HF folder or .gguf file."})
    texts: Path = field(metadata={"help": ".txt (one text per line), .jsonl or .csv file."})
    hooks: list[str] = field(metadata={
        "help": "Hook point(s), comma-separated, e.g. blocks.15.hook_resid_post."})
    out: Path = field(metadata={"help": "Store folder (re-run the same command to resume)."})
    positions: str = field(default="all", metadata={
        "help": "Positions to keep: last | all | all-but-bos | index:N."})
    column: str = field(default="text", metadata={
        "help": "Column (.csv) or field (.jsonl) holding the text."})
    batch_size: int = field(default=DEFAULT_BATCH_SIZE, metadata={"help": "Texts per forward pass."})
    rows_per_shard: int = field(default=65536, metadata={"help": "Rows per shard file."})
    dtype: str = field(default="float32", metadata={
        "help": "Stored dtype: float32 | float16 | bfloat16."})
    compute_dtype: str | None = field(default=None, metadata={
        "help": "Run the matrix products in this dtype, e.g. bfloat16 (default: the model's)."})
    device: str | None = field(default=None, metadata={
        "help": "cpu, cuda, ... (default: cuda if present)."})
    max_length: int = field(default=0, metadata={
        "help": "Truncate texts to this many tokens (0: no limit but the model's context "
        "length)."})
    strict_length: bool = field(default=False, metadata={
        "help": "Refuse (instead of truncating with a warning) texts longer than the context."})
    for_sae: bool = field(default=False, metadata={"help": FOR_SAE_HELP})

    def validate(self) -> None:
        """One clear error for settings that cannot run (before anything is read or created)."""
        for name, least in (("batch_size", 1), ("rows_per_shard", 1), ("max_length", 0)):
            value = getattr(self, name)
            if value < least:
                raise InterplabError(f"--{name.replace('_', '-')} must be at least {least}, "
                                     f"not {value}")
        if not [h for h in self.hooks if h.strip()]:
            raise InterplabError("--hooks is empty; name at least one hook point, e.g. "
                                 "--hooks blocks.15.hook_resid_post")

    def absolute(self) -> HarvestConfig:
        """The same harvest with absolute paths (texts, store, and the model when it is a local
        folder or file), so its command line works from any folder."""
        model = Path(self.model).expanduser()
        return replace(self, texts=self.texts.expanduser().resolve(),
                       out=self.out.expanduser().resolve(),
                       model=str(model.resolve()) if model.exists() else self.model)


def run_harvest(cfg: HarvestConfig, *, executor: Any = None, command: str | None = None,
                progress: bool = True) -> Any:
    """Harvest ``cfg`` into its store folder and return the
    :class:`~interplab.activations.ActivationStore`. ``executor``: a remote executor
    (:func:`interplab.distributed.make_executor`) writes one shard per task; ``command`` is
    recorded in the manifest as the command that resumes the harvest."""
    cfg.validate()
    from interplab.activations import harvest_to_store
    from interplab.activations.exclusion import ExclusionRule
    from interplab.activations.store import parse_dtype
    from interplab.activations.texts import read_texts
    from interplab.distributed import ModelSpec
    from interplab.models import HookPoint

    text_list = read_texts(cfg.texts, column=cfg.column)
    hook_list = [HookPoint.parse(h) for h in cfg.hooks if h.strip()]
    stored_dtype = parse_dtype(cfg.dtype)
    compute = parse_dtype(cfg.compute_dtype) if cfg.compute_dtype else None
    local_file = Path(cfg.model).expanduser()
    spec = ModelSpec(str(local_file.resolve()) if local_file.exists() else cfg.model,
                     device=cfg.device or None)  # workers may start in another folder
    lm = spec.load()
    remote = executor is not None and getattr(executor, "remote", False)
    return harvest_to_store(
        lm, text_list, hook_list, cfg.out, cfg.positions,
        batch_size=cfg.batch_size, rows_per_shard=cfg.rows_per_shard, dtype=stored_dtype,
        dataset_name=cfg.texts.name, max_length=cfg.max_length or None,
        truncation="error" if cfg.strict_length else "warn", compute_dtype=compute,
        command=command, exclusion=ExclusionRule() if cfg.for_sae else None,
        executor=executor if remote else None, worker_model=spec, progress=progress,
    )
