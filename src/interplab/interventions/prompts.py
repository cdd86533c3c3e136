"""Prompts for interventions: tokenised, batched with explicit position ids, read at one token.

Positions are indices into a prompt's own tokens (as in :mod:`interplab.activations.positions`),
so left and right padding give the same result. A shared ``prefix`` (e.g. few-shot examples) is
run once; its keys and values are reused by every batch and it is never edited: interventions act
on the prompts' own tokens, which come after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from interplab.activations.harvest import validate_texts
from interplab.activations.positions import Positions
from interplab.datasets import StatementDataset
from interplab.errors import InterplabError
from interplab.interventions.metrics import first_single_token
from interplab.models import LanguageModel


@dataclass
class Prompts:
    """Tokenised prompts. ``ids[i]`` are prompt i's own tokens (after the shared prefix)."""

    ids: list[list[int]]
    prefix_ids: list[int]
    has_bos: bool  # whether each prompt's own first token is BOS (never with a prefix)
    prefix_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # per layer [1, h, P, hd]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(t) for t in self.ids], dtype=np.int64)

    def select(self, positions: Positions, i: int) -> list[int]:
        return positions.select(i, len(self.ids[i]), self.has_bos)


def encode(lm: LanguageModel, prompts: Sequence[str], prefix: str | None = None) -> Prompts:
    """Tokenise ``prompts`` (and run the shared ``prefix`` once, keeping its keys and values)."""
    prompts = validate_texts(prompts)
    if not prefix:
        ids = lm.tokenize(prompts, truncation="error")
        return Prompts(ids, [], lm.bos_token_id is not None)
    prefix_ids = lm.tokenize([prefix], truncation="error")[0]
    ids = [list(t) for t in lm.tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    for i, t in enumerate(ids):
        if not t:
            raise InterplabError(f"prompt {i} tokenises to no tokens; remove empty prompts")
        if len(prefix_ids) + len(t) > lm.n_ctx:
            raise InterplabError(f"prefix + prompt {i} is {len(prefix_ids) + len(t)} tokens, more "
                                 f"than the model's context of {lm.n_ctx}; shorten the prefix")
    with torch.no_grad():  # not inference_mode: attribution backpropagates through the cache
        out = lm.base(input_ids=torch.tensor([prefix_ids], device=lm.device), use_cache=True)
    cache = out.get("cache") or out.past_key_values  # renamed to "cache" in transformers 5
    kv = [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]
    return Prompts(ids, prefix_ids, False, kv)


def split_head(lm: LanguageModel, prompts: Prompts, i: int, cut: int) -> Prompts:
    """Prompt ``i`` alone, its first ``cut`` tokens moved into the shared prefix (run once here,
    keys and values kept): rows that edit only tokens from ``cut`` on then run just the rest.
    Token positions in the result count from ``cut``."""
    ids = list(prompts.ids[i])
    if not 0 < cut < len(ids):
        raise InterplabError(f"cannot split prompt {i} ({len(ids)} tokens) at token {cut}")
    head = list(prompts.prefix_ids) + ids[:cut]
    with torch.no_grad():
        out = lm.base(input_ids=torch.tensor([head], device=lm.device), use_cache=True)
    cache = out.get("cache") or out.past_key_values
    kv = [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]
    return Prompts([ids[cut:]], head, False, kv)


def as_prompts(lm: LanguageModel, prompts: Sequence[str] | Prompts,
               prefix: str | None = None) -> Prompts:
    if isinstance(prompts, Prompts):
        if prefix:
            raise InterplabError("give the prefix to encode(), not with already encoded prompts")
        return prompts
    return encode(lm, prompts, prefix)


@dataclass
class Batch:
    """Rows of one forward pass: ``example[r]`` is the prompt of row r, its tokens start at column
    ``start[r]`` of the padded ``[b, w]`` ids."""

    example: np.ndarray  # [b]
    start: np.ndarray  # [b]
    length: np.ndarray  # [b]
    ids: torch.Tensor
    mask: torch.Tensor
    position_ids: torch.Tensor

    def columns(self, prompts: Prompts, positions: Positions
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(rows, cols, text_pos)`` of the selected tokens of every row of the batch."""
        rows, cols, pos = [], [], []
        for r, i in enumerate(self.example):
            sel = prompts.select(positions, int(i))
            rows.extend([r] * len(sel))
            cols.extend(int(self.start[r]) + p for p in sel)
            pos.extend(sel)
        dev = self.ids.device
        return (torch.tensor(rows, dtype=torch.long, device=dev),
                torch.tensor(cols, dtype=torch.long, device=dev),
                torch.tensor(pos, dtype=torch.long, device=dev))


def make_batch(lm: LanguageModel, prompts: Prompts, example: np.ndarray,
               padding_side: str = "right") -> Batch:
    if padding_side not in ("left", "right"):
        raise InterplabError(f"padding_side must be 'left' or 'right', not {padding_side!r}")
    example = np.asarray(example, dtype=np.int64)
    lengths = prompts.lengths[example]
    b, width = len(example), int(lengths.max())
    ids = torch.full((b, width), lm.tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((b, width), dtype=torch.long)
    start = np.zeros(b, dtype=np.int64) if padding_side == "right" else width - lengths
    for r, i in enumerate(example):
        s = int(start[r])
        ids[r, s : s + lengths[r]] = torch.as_tensor(prompts.ids[i])
        mask[r, s : s + lengths[r]] = 1
    # Explicit position ids: a token's position is the same under left or right padding.
    position_ids = (mask.cumsum(-1) - 1).clamp_min(0) + len(prompts.prefix_ids)
    dev = lm.device
    return Batch(example, start, lengths, ids.to(dev), mask.to(dev), position_ids.to(dev))


def hidden(lm: LanguageModel, prompts: Prompts, batch: Batch,
           widen: tuple[int, int] | None = None) -> torch.Tensor:
    """Final hidden states (after the final norm) ``[b, w, d]`` of a batch.

    ``widen=(layer, k)`` is for a hook that turns the batch's one row into ``k`` rows at block
    ``layer`` (the result is then ``[k, w, d]``): the shared prefix's keys and values are repeated
    ``k`` times from that block on.
    """
    kwargs = {}
    mask = batch.mask
    if prompts.prefix_kv is not None:
        from transformers import DynamicCache

        b = len(batch.example)

        def rows(layer: int) -> int:
            return widen[1] if widen is not None and layer >= widen[0] else b

        kv = [(k.expand(rows(i), -1, -1, -1), v.expand(rows(i), -1, -1, -1))
              for i, (k, v) in enumerate(prompts.prefix_kv)]
        kwargs = {"cache": DynamicCache(kv, config=lm.hf.config), "use_cache": True}
        mask = torch.cat([torch.ones(b, len(prompts.prefix_ids), dtype=mask.dtype,
                                     device=mask.device), mask], dim=1)
    else:
        kwargs = {"use_cache": False}
    out = lm.base(input_ids=batch.ids, attention_mask=mask, position_ids=batch.position_ids,
                  **kwargs)
    return out.last_hidden_state


def read_columns(prompts: Prompts, batch: Batch, read: Positions) -> torch.Tensor:
    """Column of the one read token of each row ``[b]``."""
    rows, cols, _ = batch.columns(prompts, read)
    if rows.numel() != len(batch.example) or not torch.equal(rows, torch.arange(len(rows),
                                                                              device=rows.device)):
        raise InterplabError(f"the read position {read.spec!r} must select exactly one token of "
                             "every prompt; use 'last' or 'index:N'")
    return cols


def read_logits(lm: LanguageModel, prompts: Prompts, batch: Batch, read: Positions) -> torch.Tensor:
    """Logits ``[b, vocab]`` (float32) at each row's read token; only those rows are unembedded."""
    h = hidden(lm, prompts, batch)
    cols = read_columns(prompts, batch, read)
    h = h[torch.arange(len(cols), device=h.device), cols]
    return lm.hf.get_output_embeddings()(h).float()


def token_ce(lm: LanguageModel, prompts: Prompts, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token cross-entropy (nats) over each row's own tokens ``[b]``, and the count."""
    h = hidden(lm, prompts, batch)
    logits = lm.hf.get_output_embeddings()(h).float()
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    tok_lp = logp.gather(-1, batch.ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    scored = (batch.mask[:, 1:] * batch.mask[:, :-1]).to(tok_lp.dtype)
    return -(tok_lp * scored).sum(-1), scored.sum(-1)


def chunks(n: int, size: int) -> list[slice]:
    if size < 1:
        raise InterplabError(f"batch_size must be at least 1, not {size}")
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


# -- the few-shot true/false prompt (the causal and erasure studies score the same one) --------

TAIL = " This statement is:"  # what follows each statement; the answer word comes next


def answer_tokens(lm: LanguageModel, answer_true: Sequence[str], answer_false: Sequence[str]
                  ) -> dict[str, Any]:
    """The first spelling of the true and false answers that is one token for ``lm``, with its
    id (read after a space)."""
    t_text, t_id = first_single_token(lm, [" " + w.strip() for w in answer_true])
    f_text, f_id = first_single_token(lm, [" " + w.strip() for w in answer_false])
    return {"true": t_text, "true_id": t_id, "false": f_text, "false_id": f_id,
            "asked": {"true": list(answer_true), "false": list(answer_false)}}


def few_shot_prefix(ds: StatementDataset, rows: np.ndarray, answers: dict[str, Any], n: int, seed: int) -> str:
    """Few-shot examples from the training split, alternating true and false."""
    rng = np.random.default_rng((seed, 1))
    true_rows = rng.permutation(rows[ds.labels[rows] == 1])
    false_rows = rng.permutation(rows[ds.labels[rows] == 0])
    lines = []
    for k in range(n):
        i = int((true_rows if k % 2 == 0 else false_rows)[k // 2])
        word = answers["true" if ds.labels[i] == 1 else "false"]
        lines.append(f"{ds.statements[i]}{TAIL}{word}")
    return "\n".join(lines) + "\n"


def held_out_rows(ds: StatementDataset, rows: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` test-split rows, half true and half false."""
    rng = np.random.default_rng((seed, 2))
    half = [rng.permutation(rows[ds.labels[rows] == v])[: n // 2 + (v == 0) * (n % 2)]
            for v in (0, 1)]
    return np.sort(np.concatenate(half))


def check_prompts_fit(lm: LanguageModel, ds: StatementDataset, train_rows: np.ndarray, answers: dict[str, Any],
                      n_shots: int, seed: int, prompts: list[str]) -> str:
    """The ``n_shots`` few-shot prefix, after checking that it and the longest of ``prompts``
    fit the model's context; if not, one error naming the largest ``--n-shots`` that fits."""
    t = max(len(ids) for ids in lm.tokenizer(prompts, add_special_tokens=False,
                                              verbose=False)["input_ids"])

    def prefix_tokens(n: int) -> int:  # with BOS, as the prefix is run
        prefix = few_shot_prefix(ds, train_rows, answers, n, seed)
        return len(lm.tokenizer(prefix, verbose=False)["input_ids"])

    p = prefix_tokens(n_shots)
    if p + t <= lm.n_ctx:
        return few_shot_prefix(ds, train_rows, answers, n_shots, seed)
    fits = next((n for n in range(n_shots - 1, 0, -1) if prefix_tokens(n) + t <= lm.n_ctx),
                None)
    advice = (f"lower --n-shots (at most {fits} fits)" if fits else
              "even --n-shots 1 does not fit; use a model with a longer context")
    raise InterplabError(f"the {n_shots}-shot prefix ({p} tokens) and the longest prompt ({t} "
                         f"tokens) need {p + t} tokens, more than the model's context of "
                         f"{lm.n_ctx}; {advice}")


# -- prompt formats: how a statement is put to the model and where its answer is read ----------

@dataclass(frozen=True)
class PromptFormat:
    """One way of asking a model about a statement; every prompt starts with the statement.

    ``kind="answer"``: a true/false answer word is read after the statement, either after a plain
    ``tail`` (few-shot lines ``<statement><tail> <word>`` before it) or, for a chat format
    (``chat_question`` set), after the model's chat template wraps ``chat_question`` (with
    ``{statement}`` at its end) and the assistant's turn begins with ``chat_answer``.
    ``kind="completion"``: the statement is followed by ``completion_sep`` and its own opening
    words up to its last word (its object: "The city of X is in"), and the model's log-probability
    of the object the statement stated is read there."""

    name: str
    kind: str
    description: str
    tail: str = TAIL
    chat_question: str | None = None
    chat_answer: str = ""
    completion_sep: str = " "

    @property
    def is_chat(self) -> bool:
        return self.chat_question is not None


FORMATS: dict[str, PromptFormat] = {f.name: f for f in (
    PromptFormat("completion", "completion",
                 "the statement, then its opening words again up to its last word "
                 "(\"The city of X is in Y. The city of X is in\"); read: log P(the stated object's "
                 "first token), nats"),
    PromptFormat("statement-is", "answer",
                 f"few-shot lines \"<statement>{TAIL} <answer>\", then the statement and "
                 f"\"{TAIL}\"; read: P(true word) − P(false word)"),
    PromptFormat("chat", "answer",
                 "the model's chat template: the user asks \"Is this statement true or false?\" "
                 "before the statement, the assistant's turn begins \"The statement is\"; few-shot "
                 "turns before it; read: P(true word) − P(false word)",
                 tail="", chat_question="Is this statement true or false?\n{statement}",
                 chat_answer="The statement is"),
)}


def prompt_format(name: str) -> PromptFormat:
    if name not in FORMATS:
        raise InterplabError(f"unknown prompt format {name!r}; choose from {', '.join(FORMATS)}")
    return FORMATS[name]


def has_chat_template(lm: LanguageModel) -> bool:
    return bool(getattr(lm.tokenizer, "chat_template", None))


_PLACEHOLDER = "\u2063STATEMENT\u2063"


def answer_prompt(lm: LanguageModel, fmt: PromptFormat, shots: Sequence[tuple[str, str]]
                  ) -> tuple[str, str]:
    """``(prefix, tail)`` of an answer format: the shared prefix (``shots`` as (statement,
    answer word with its leading space) examples) and the text after each statement."""
    if fmt.kind != "answer":
        raise InterplabError(f"the {fmt.name} format reads no answer word")
    if not fmt.is_chat:
        return "".join(f"{s}{fmt.tail}{word}\n" for s, word in shots), fmt.tail
    if not has_chat_template(lm):
        raise InterplabError(f"the {fmt.name} format needs a chat template, and {lm.name}'s "
                             "tokenizer has none; use another prompt format")
    question = fmt.chat_question or "{statement}"
    if not question.endswith("{statement}"):
        raise InterplabError("a chat question must end with {statement}: prompts start there")
    messages = []
    for s, word in shots:
        messages += [{"role": "user", "content": question.format(statement=s)},
                     {"role": "assistant", "content": f"{fmt.chat_answer}{word}."}]
    messages.append({"role": "user", "content": question.format(statement=_PLACEHOLDER)})
    text = lm.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    text += fmt.chat_answer
    head, _, tail = text.partition(_PLACEHOLDER)
    return head, tail


def object_split(statement: str) -> tuple[str, str]:
    """A statement's opening words up to its last word, and that last word (its object) as it
    follows them: "The city of Paris is in France." → ("The city of Paris is in", " France");
    a quoted object keeps its opening quote in the opening words ("... means 'January'." →
    ("... means '", "January"))."""
    body = statement.strip().rstrip(".!?").rstrip()
    cut = body.rfind(" ")
    if cut <= 0:
        raise InterplabError(f"the statement {statement!r} has no last word to complete; the "
                             "completion format needs statements of several words")
    head, last = body[:cut], body[cut + 1:]
    if last[:1] in "'\"" and len(last) > 1:
        return f"{head} {last[0]}", last[1:].rstrip("'\"")
    return head, " " + last
