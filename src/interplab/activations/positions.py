"""Position selectors: which tokens of each text become rows of activations.

Positions are indices into a text's own tokens (0 = its first token, BOS included when the
tokenizer adds one), so they do not depend on padding or on the batch a text lands in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from interplab.errors import InterplabError


@dataclass(frozen=True)
class Positions:
    """A position selector.

    Build with :meth:`parse` (``"last"``, ``"all"``, ``"all-but-bos"``, ``"index:-2"``,
    ``"index:3"``) or with :meth:`explicit` / :meth:`masks` for per-text choices.
    """

    kind: str  # "last" | "all" | "all-but-bos" | "index" | "explicit"
    offset: int = 0
    per_text: tuple[tuple[int, ...], ...] | None = None
    mask_lengths: tuple[int, ...] | None = None  # set by masks(): each mask's length, checked

    @staticmethod
    def parse(spec: str | Positions) -> Positions:
        if isinstance(spec, Positions):
            return spec
        s = str(spec).strip().lower()
        if s in ("last", "all", "all-but-bos"):
            return Positions(s)
        if s.startswith("index:"):
            try:
                return Positions("index", offset=int(s.split(":", 1)[1]))
            except ValueError:
                pass
        raise InterplabError(
            f"unknown position selector {spec!r}; use 'last', 'all', 'all-but-bos', "
            "'index:N' (N >= 0 from the start, N < 0 from the end, e.g. 'index:-2'), or "
            "Positions.explicit(...) / Positions.masks(...) in Python"
        )

    @staticmethod
    def explicit(indices: Sequence[Sequence[int]]) -> Positions:
        """Per-text token indices (negative counts from the end of that text)."""
        return Positions("explicit", per_text=tuple(tuple(int(i) for i in row) for row in indices))

    @staticmethod
    def masks(masks: Sequence[Sequence[bool]]) -> Positions:
        """Per-text boolean masks over each text's tokens (length must equal its token count)."""
        rows = []
        lengths = []
        for m in masks:
            arr = np.asarray(m, dtype=bool)
            lengths.append(arr.size)
            rows.append(tuple(int(i) for i in np.flatnonzero(arr)))
        return Positions("explicit", per_text=tuple(rows), mask_lengths=tuple(lengths))

    @property
    def spec(self) -> str:
        """A string that identifies this selector (recorded in store manifests)."""
        if self.kind == "index":
            return f"index:{self.offset}"
        if self.kind == "explicit":
            import hashlib
            import json

            digest = hashlib.sha256(json.dumps(self.per_text).encode()).hexdigest()[:16]
            return f"explicit:{digest}"
        return self.kind

    def select(self, text_index: int, n_tokens: int, has_bos: bool) -> list[int]:
        """Token indices (ascending, within ``0..n_tokens-1``) selected for one text."""
        if self.kind == "last":
            return [n_tokens - 1]
        if self.kind == "all":
            return list(range(n_tokens))
        if self.kind == "all-but-bos":
            return list(range(1 if has_bos else 0, n_tokens))
        if self.kind == "index":
            i = self.offset if self.offset >= 0 else n_tokens + self.offset
            if not 0 <= i < n_tokens:
                raise InterplabError(
                    f"position index {self.offset} is outside text {text_index}, which has "
                    f"{n_tokens} tokens"
                )
            return [i]
        assert self.per_text is not None
        if text_index >= len(self.per_text):
            raise InterplabError(
                f"explicit positions were given for {len(self.per_text)} texts but there are more "
                "texts; give one entry per text"
            )
        lengths = self.mask_lengths
        if lengths is not None and lengths[text_index] != n_tokens:
            raise InterplabError(
                f"the mask for text {text_index} has length {lengths[text_index]} but the text has "
                f"{n_tokens} tokens; build masks over the tokenised text"
            )
        out = []
        for i in self.per_text[text_index]:
            j = i if i >= 0 else n_tokens + i
            if not 0 <= j < n_tokens:
                raise InterplabError(
                    f"position {i} is outside text {text_index}, which has {n_tokens} tokens"
                )
            out.append(j)
        return sorted(set(out))

    def validate_count(self, n_texts: int) -> None:
        if self.kind == "explicit" and self.per_text is not None and len(self.per_text) != n_texts:
            raise InterplabError(
                f"explicit positions were given for {len(self.per_text)} texts but there are "
                f"{n_texts} texts; give exactly one entry per text"
            )
