"""A streaming mixing buffer: activations harvested from the model on the fly, shuffled.

Sequences of tokens are run through the model a few at a time; the activations at one hook
(every position except BOS tokens and those an :class:`ExclusionRule` leaves out — by default
position 0 and tokens with a norm above 10 × the median of their model batch) fill a buffer of ``buffer_tokens`` rows; once
full, the buffer is shuffled and its first half handed out as training batches, then refilled.
This decorrelates consecutive batches (tokens of one text are otherwise adjacent) without writing
an activation store. Deterministic for a given seed. ``exclusion_count`` reports how many tokens
the rule left out.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from interplab.activations.exclusion import ExclusionCount, ExclusionRule
from interplab.defaults import DEFAULT_CORPUS_BATCH_SIZE
from interplab.errors import InterplabError
from interplab.models.hooks import HookLike

__all__ = ["MixingBuffer"]


class MixingBuffer:
    """Iterable of shuffled ``[batch_size, d_model]`` activation batches fed by ``lm``.

    ``tokens [n, T]`` (int64, from :func:`interplab.datasets.corpus.pack_tokens`); rows at
    ``bos_token_id`` positions are skipped, and so are the tokens ``exclusion`` leaves out
    (default :class:`ExclusionRule`; ``ExclusionRule.none()`` keeps them). Stops when the tokens run out (after ``epochs``).
    """

    def __init__(self, lm, hook: HookLike, tokens: torch.Tensor, batch_size: int,
                 buffer_tokens: int = 65536, model_batch_size: int = DEFAULT_CORPUS_BATCH_SIZE, seed: int = 0,
                 bos_token_id: int | None = None, epochs: int = 1,
                 exclusion: ExclusionRule | None = None):
        hook = lm.parse_hook(hook)  # a HookPoint from here on
        if tokens.ndim != 2:
            raise InterplabError("tokens must be [n_sequences, seq_len] ids")
        if buffer_tokens < 2 * batch_size:
            raise InterplabError(f"buffer_tokens ({buffer_tokens}) must be ≥ 2 × batch_size")
        bos = bos_token_id if bos_token_id is not None else lm.bos_token_id
        rows = int((tokens != bos).sum()) if bos is not None else int(tokens.numel())
        if epochs > 1 and batch_size > rows:
            # The buffer carries rows across epochs: such a batch would hold rows several times.
            raise InterplabError(
                f"batch size {batch_size} is larger than the {rows} tokens of one pass over the "
                f"{tokens.shape[0]} sequences: one batch would read every token about "
                f"{-(-batch_size // max(rows, 1))} times; use a batch size of at most {rows} "
                "(--batch-size) or more sequences")
        self.lm, self.hook, self.tokens = lm, hook, tokens
        self.batch_size, self.buffer_tokens = batch_size, buffer_tokens
        self.model_batch_size, self.seed, self.epochs = model_batch_size, seed, epochs
        self.bos = bos
        self.exclusion = exclusion if exclusion is not None else ExclusionRule()
        self.exclusion_count = ExclusionCount()

    def _harvest(self) -> Iterator[torch.Tensor]:
        from interplab.activations import Positions, harvest_tokens

        for _ in range(self.epochs):
            for i in range(0, self.tokens.shape[0], self.model_batch_size):
                t = self.tokens[i: i + self.model_batch_size]
                keep = torch.ones_like(t, dtype=torch.bool) if self.bos is None else t != self.bos
                acts = harvest_tokens(self.lm, t.tolist(), self.hook, Positions.masks(keep.tolist()),
                                      batch_size=self.model_batch_size, progress=False)
                rows = acts[self.hook].float()  # rows in (sequence, position) order, BOS dropped
                ordinary = self.exclusion.keep_mask(rows, acts.position)
                self.exclusion_count.add(ordinary)
                yield rows[ordinary]

    def __iter__(self) -> Iterator[torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed)
        buf = torch.empty(0, self.lm.d_model)
        for rows in self._harvest():
            buf = torch.cat([buf, rows])
            if buf.shape[0] >= self.buffer_tokens:
                buf = buf[torch.randperm(buf.shape[0], generator=g)]
                half = (buf.shape[0] // 2 // self.batch_size) * self.batch_size
                yield from buf[:half].split(self.batch_size)
                buf = buf[half:]
        buf = buf[torch.randperm(buf.shape[0], generator=g)]
        n = (buf.shape[0] // self.batch_size) * self.batch_size
        yield from buf[:n].split(self.batch_size)
