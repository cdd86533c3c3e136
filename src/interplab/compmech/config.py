"""The toy transformer's shape and its training settings: plain dataclasses (no torch import), so
study configs and the command line can read their defaults cheaply."""

from __future__ import annotations

from dataclasses import dataclass, field

from interplab.errors import InterplabError


@dataclass(frozen=True)
class GPTConfig:
    """Shape of the toy transformer.

    Attributes:
        vocab_size: number of symbols of the process.
        context_length: maximum number of input positions.
        n_layers, d_model, n_heads, d_mlp: the usual sizes (``d_model % n_heads == 0``).
        layer_norm: pre-LN blocks and a final LN (off gives a purely additive residual stream).
    """

    vocab_size: int = field(default=3, metadata={"help": "Number of symbols of the process."})
    context_length: int = field(default=10, metadata={"help": "Context length (symbols the "
                                                      "model reads)."})
    n_layers: int = field(default=4, metadata={"help": "Transformer layers."})
    d_model: int = field(default=64, metadata={"help": "Residual-stream width."})
    n_heads: int = field(default=1, metadata={"help": "Attention heads."})
    d_mlp: int = field(default=256, metadata={"help": "MLP hidden width."})
    layer_norm: bool = field(default=True, metadata={"help": "Pre-LN blocks and a final LN (off: "
                                                     "a purely additive residual stream)."})

    def __post_init__(self) -> None:
        for f in ("vocab_size", "context_length", "n_layers", "d_model", "n_heads", "d_mlp"):
            if int(getattr(self, f)) < 1:
                raise InterplabError(f"GPTConfig.{f} must be a positive integer")
        if self.d_model % self.n_heads:
            raise InterplabError(
                f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})"
            )

    @property
    def hook_names(self) -> list[str]:
        """Residual-stream hook names, in the order :meth:`GPT.forward` returns them."""
        from interplab.models.hooks import HookPoint  # the names only; imported when asked for

        points = [HookPoint.resid_pre(0)] + [HookPoint.resid_post(i) for i in range(self.n_layers)]
        return [hp.name for hp in points]



@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. Units: steps and sequences; ``lr`` is AdamW's peak learning rate."""

    n_steps: int = field(default=3000, metadata={"help": "Training steps (the cap when a "
                                                 "stopping loss is set)."})
    batch_size: int = field(default=256, metadata={"help": "Sequences per training step."})
    lr: float = field(default=3e-3, metadata={"help": "Peak learning rate (AdamW, cosine decay)."})
    min_lr_fraction: float = field(default=0.05, metadata={"help": "Final learning rate as a "
                                                           "fraction of the peak."})
    warmup_steps: int = field(default=100, metadata={"help": "Linear warm-up steps."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    grad_clip: float = field(default=1.0, metadata={"help": "Gradient-norm clip."})
    seed: int = field(default=0, metadata={"help": "Seed of the training data."})
    eval_every: int = field(default=250, metadata={"help": "Held-out evaluation every N steps."})
    eval_sequences: int = field(default=8192, metadata={"help": "Sequences in the held-out "
                                                        "batch."})
    checkpoint_every: int = field(default=0, metadata={"help": "Extra checkpoints every N steps "
                                                       "(0 = none; the final one always)."})
    # nats; None: run all n_steps (see module docstring)
    stop_loss: float | None = field(default=None, metadata={"help": "Stop at the first evaluation "
                                                            "at or below this loss (nats)."})

    def __post_init__(self) -> None:
        if self.n_steps < 1 or self.batch_size < 1:
            raise InterplabError("TrainConfig: n_steps and batch_size must be positive")
        if not (self.lr > 0 and 0 <= self.min_lr_fraction <= 1):
            raise InterplabError("TrainConfig: lr must be > 0 and min_lr_fraction in [0, 1]")
        if self.eval_every < 1 or self.eval_sequences < 1:
            raise InterplabError("TrainConfig: eval_every and eval_sequences must be positive")
        if self.stop_loss is not None and not self.stop_loss > 0:
            raise InterplabError("TrainConfig: stop_loss must be a positive loss in nats, or None")
