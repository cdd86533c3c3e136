"""Settings of the defences, their training and the attacks on them, each default written once.

No torch here: a study config nests these dataclasses and the CLI reads them to build ``--help``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from interplab.errors import InterplabError

ATTACK_POSITIONS = ("suffix", "prefix")
# Words whose first token makes up the token attack's fixed candidate set: common function words
# and everyday-object words (the acceptable side of the generated requests), none of them taken
# from the data.
CANDIDATE_WORDS = (" object", " tool", " machine", " furniture", " kitchen", " device", " metal",
                   " wooden", " plastic", " house", " office", " item", " please", " thanks",
                   " the", " and", " of", " product", " shop", " repair", " table", " car",
                   " box", " paper")


@dataclass
class AdapterSettings:
    """The LoRA adapters RR and LoRA + probe both train (the same ones)."""

    rank: int = field(default=4, metadata={"help": "LoRA rank of every adapted linear layer."})
    lora_alpha: float = field(default=16.0, metadata={
        "help": "LoRA alpha (the update is scaled by alpha / rank)."})

    def validate(self) -> None:
        if self.rank < 1:
            raise InterplabError(f"--rank must be at least 1, got {self.rank}")
        if not self.lora_alpha > 0:
            raise InterplabError(f"--lora-alpha must be positive, got {self.lora_alpha}")


@dataclass
class TrainSettings:
    """One training run of RR or LoRA + probe: both see the same texts in the same order."""

    steps: int = field(default=60, metadata={"help": "Optimiser steps per training run."})
    lr: float = field(default=4e-3, metadata={"help": "AdamW learning rate (adapters and head)."})
    train_batch: int = field(default=8, metadata={
        "help": "Unwanted requests per step (and as many acceptable ones in the retain batch)."})
    neutral_batch: int = field(default=4, metadata={
        "help": "Neutral-text chunks per step in the retain batch."})
    checkpoint_every: int = field(default=10, metadata={
        "help": "Steps between training checkpoints (a re-run resumes from the last)."})

    def validate(self) -> None:
        if self.steps < 1 or self.train_batch < 1 or self.neutral_batch < 0:
            raise InterplabError("--steps and --train-batch must be at least 1 and "
                                 "--neutral-batch at least 0")
        if not self.lr > 0:
            raise InterplabError(f"--lr must be positive, got {self.lr}")
        if self.checkpoint_every < 1:
            raise InterplabError(f"--checkpoint-every must be at least 1, got "
                                 f"{self.checkpoint_every}")


@dataclass
class AttackSettings:
    """The two attacks, run against every defence with the same budget."""

    attack_examples: int = field(default=16, metadata={
        "help": "Held-out unwanted requests each attack is run on (the same for every defence)."})
    embed_steps: int = field(default=12, metadata={
        "help": "Steps of the input-embedding attack (projected gradient descent)."})
    embed_norm: float = field(default=0.05, metadata={
        "help": "L2 bound of the input-embedding attack per token, as a fraction of the mean "
        "norm of the model's token embeddings."})
    token_positions: int = field(default=2, metadata={
        "help": "Tokens the token-level attack adds (greedy search, one position at a time)."})
    token_candidates: int = field(default=16, metadata={
        "help": f"Size of the token attack's fixed candidate set (at most "
        f"{len(CANDIDATE_WORDS)}: first tokens of a fixed word list)."})
    attack_position: str = field(default="suffix", metadata={
        "help": "Where the token attack inserts its tokens: suffix or prefix."})

    def validate(self) -> None:
        if self.attack_examples < 0:
            raise InterplabError(f"--attack-examples must be >= 0 (0: no attacks), got "
                                 f"{self.attack_examples}")
        if self.embed_steps < 0 or self.embed_norm < 0 or self.token_positions < 0:
            raise InterplabError("--embed-steps, --embed-norm and --token-positions must be >= 0")
        if not 1 <= self.token_candidates <= len(CANDIDATE_WORDS):
            raise InterplabError(f"--token-candidates must be between 1 and "
                                 f"{len(CANDIDATE_WORDS)}, got {self.token_candidates}")
        if self.attack_position not in ATTACK_POSITIONS:
            raise InterplabError(f"--attack-position must be one of {ATTACK_POSITIONS}, got "
                                 f"{self.attack_position!r}")
