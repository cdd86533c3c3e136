"""The SAE settings of the circuit and SHIFT studies (no torch here: the command line reads it).

Both studies splice SAEs at a few residual hooks. Each SAE is either loaded from a folder
(``--sae-paths blocks.6.hook_resid_post=DIR``, any format :func:`interplab.sae.load_sae` reads:
interplab, SAELens, dictionary_learning) or trained on the packaged corpus and cached
(:mod:`interplab.sae.cache`), keyed by the model's weights, the hook, the data and every setting
below, so a second run with the same settings trains nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from interplab.errors import InterplabError

ARCHITECTURES = ("relu", "topk", "batchtopk", "jumprelu", "gated")
TOPK_FAMILY = ("topk", "batchtopk")


@dataclass
class StudySaeConfig:
    """How the studies' SAEs are made: architecture, size, training, data and the cache."""

    sae_architecture: str = field(default="topk", metadata={
        "help": "Architecture of the SAEs at the circuit's hooks (relu, topk, batchtopk, "
        "jumprelu, gated)."})
    sae_width: int = field(default=768, metadata={"help": "Latents per SAE."})
    sae_k: int = field(default=32, metadata={"help": "Active latents (topk, batchtopk)."})
    # λ defaults give L0 ≈ 30–40 on SmolLM2's block 12 at the default width and steps, near the
    # TopK SAEs' k = 32 (calibrated on the packaged corpus; docs/circuits.md)
    relu_sparsity: float = field(default=3.0, metadata={
        "help": "L1 coefficient λ of ReLU SAEs (inputs scaled to E‖x‖² = d)."})
    gated_sparsity: float = field(default=5.0, metadata={"help": "L1 coefficient λ of gated SAEs."})
    jumprelu_sparsity: float = field(default=1.0, metadata={
        "help": "L0 coefficient λ of JumpReLU SAEs."})
    jumprelu_threshold: float = field(default=1.0, metadata={
        "help": "Initial JumpReLU threshold θ (in units of the scaled input); short runs barely "
        "move it, so it sets the L0."})
    sae_steps: int = field(default=600, metadata={"help": "Training steps per SAE."})
    sae_batch_size: int = field(default=256, metadata={"help": "Rows per training step."})
    sae_lr: float = field(default=3e-4, metadata={"help": "Adam's learning rate."})
    corpus: str = field(default="kjv", metadata={
        "help": "Packaged corpus the SAEs are trained on (kjv, python-docs; its last 5 % of "
        "documents are held out for the latent cards)."})
    sae_context: int = field(default=64, metadata={"help": "Tokens per training window."})
    sae_sequences: int = field(default=384, metadata={"help": "Training windows."})
    sae_cache: bool = field(default=True, metadata={
        "help": "Keep trained SAEs in the cache folder and reuse them (--no-sae-cache: train "
        "into the run's own folder)."})
    sae_cache_dir: str | None = field(default=None, metadata={
        "help": "Cache folder (default: $INTERPLAB_CACHE/saes or ~/.cache/interplab/saes)."})
    sae_paths: list[str] = field(default_factory=list, metadata={
        "help": "SAE folders to use instead of training, as HOOK=DIR (interplab, SAELens or "
        "dictionary_learning), comma-separated."})

    def validate(self) -> None:
        if self.sae_architecture not in ARCHITECTURES:
            raise InterplabError(f"--sae-architecture must be one of {ARCHITECTURES}, not "
                                 f"{self.sae_architecture!r}")
        if self.sae_width < 2 or self.sae_steps < 1 or self.sae_batch_size < 1:
            raise InterplabError("--sae-width must be at least 2, --sae-steps and "
                                 "--sae-batch-size at least 1")
        if not 1 <= self.sae_k <= self.sae_width:
            raise InterplabError(f"--sae-k must lie in 1..{self.sae_width}, not {self.sae_k}")
        if self.jumprelu_threshold <= 0:
            raise InterplabError("--jumprelu-threshold must be positive")
        if self.sae_context < 2 or self.sae_sequences < 1:
            raise InterplabError("--sae-context must be at least 2 and --sae-sequences at least 1")
        for p in self.sae_paths:
            if "=" not in p or not p.split("=", 1)[0] or not p.split("=", 1)[1]:
                raise InterplabError(f"--sae-paths entry {p!r} is not HOOK=DIR, e.g. "
                                     "blocks.6.hook_resid_post=saes/topk")

    def paths(self) -> dict[str, str]:
        return dict(p.split("=", 1) for p in self.sae_paths)

    def sae_config(self, architecture: str, d_in: int) -> Any:
        """The :class:`~interplab.sae.SAEConfig` template of ``architecture`` for inputs of width
        ``d_in`` (the hook and model are filled in where the SAE is made)."""
        from interplab.sae.config import SAEConfig

        if architecture in TOPK_FAMILY:
            return SAEConfig(architecture, d_in, self.sae_width, k=self.sae_k)
        lam = {"relu": self.relu_sparsity, "gated": self.gated_sparsity,
               "jumprelu": self.jumprelu_sparsity}[architecture]
        extra = {"jumprelu_init_threshold": self.jumprelu_threshold} if (
            architecture == "jumprelu") else {}
        return SAEConfig(architecture, d_in, self.sae_width, sparsity_coefficient=lam, **extra)

    def trainer_config(self, seed: int) -> Any:
        """Training settings: warm-ups of 5 % (LR) and 10 % (λ) of the steps, a dead-latent
        window of two passes over a tenth of the data, ReLU resampling every quarter run."""
        from interplab.sae.config import TrainerConfig

        rows = self.sae_sequences * (self.sae_context - 1)
        return TrainerConfig(total_steps=self.sae_steps, lr=self.sae_lr,
                             lr_warmup_steps=max(1, self.sae_steps // 20),
                             sparsity_warmup_steps=max(1, self.sae_steps // 10),
                             dead_window_tokens=max(self.sae_batch_size, rows // 5),
                             resample_every_steps=max(1, self.sae_steps // 4), seed=seed,
                             log_every_steps=max(1, self.sae_steps // 4))

    def corpus_data(self) -> Any:
        from interplab.sae.cache import CorpusData

        return CorpusData(self.corpus, self.sae_context, self.sae_sequences)


def load_or_train(lm: Any, hooks: list[str], cfg: StudySaeConfig, architectures: list[str],
                  seed: int, out_dir: Any, progress: bool) -> tuple[dict, dict[str, Any]]:
    """``{(hook, architecture): SAE}`` for every hook × architecture: from ``--sae-paths`` where
    given (for the main architecture), else from the cache or trained now; and a record of what
    happened (folders, trained or reused, sizes, seconds)."""
    from pathlib import Path

    from interplab.sae.cache import cached_saes
    from interplab.sae.formats import check_compatible, load_sae

    given = {lm.parse_hook(h).name: p for h, p in cfg.paths().items()}
    out: dict = {}
    loaded = []
    for h, p in given.items():
        sae = load_sae(p)
        check_compatible(sae, lm.d_model, h)
        out[(h, cfg.sae_architecture)] = sae
        loaded.append({"hook": h, "path": str(p), "architecture": sae.config.architecture})
    todo = {a: [h for h in hooks if (h, a) not in out] for a in architectures}
    cache_dir = (cfg.sae_cache_dir or None) if cfg.sae_cache else str(Path(out_dir) / "saes")
    record: dict[str, Any] = {"loaded": loaded, "cache": [], "trained": 0, "bytes": 0,
                              "train_seconds": 0.0, "warnings": []}
    by_hooks: dict[tuple[str, ...], list[str]] = {}
    for a, hs in todo.items():
        if hs:
            by_hooks.setdefault(tuple(hs), []).append(a)
    for hs, archs in by_hooks.items():
        got, report = cached_saes(lm, list(hs), [cfg.sae_config(a, lm.d_model) for a in archs],
                                  cfg.trainer_config(seed), cfg.corpus_data(),
                                  batch_size=cfg.sae_batch_size, cache_dir=cache_dir,
                                  progress=progress)
        out.update(got)
        d = report.to_dict()
        record["cache"].append(d)
        record["cache_dir"] = d["cache_dir"]
        record["trained"] += report.n_trained
        record["bytes"] += report.bytes
        record["train_seconds"] += report.train_seconds if report.n_trained else 0.0
        record["warnings"] += report.warnings
    return out, record
