"""The harvest's config (no torch here: ``interplab harvest`` reads this module for its options)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

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
