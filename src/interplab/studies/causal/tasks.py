"""The task a causal study steers: statements put to the model in one prompt format, the number
read from its output, and the model's unsteered behaviour on it (does it tell true from false?).

Every prompt starts with its statement (a few-shot prefix, when there is one, is shared and run
once), so the statement's last tokens can be steered and patched; every metric is "higher = read
as truer": P(true word) − P(false word) for an answer format, log P(the stated object) for the
completion format (a model that believes what it read repeats a true claim more readily than a
false one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from interplab.controls import bootstrap_mean, bootstrap_statistic
from interplab.errors import InterplabError
from interplab.interventions import LogitDiff, ProbDiff, TargetLogProb
from interplab.interventions.prompts import (
    answer_prompt,
    answer_tokens,
    has_chat_template,
    object_split,
    prompt_format,
)


@dataclass
class Task:
    """One prompt format made concrete for a model: its shared prefix per dataset and how a
    statement becomes a prompt, a metric and (for patching) a pair metric."""

    fmt: Any  # interventions.prompts.PromptFormat
    answers: dict[str, Any] | None  # answer formats: the answer words and their ids
    lm: Any
    n_shots: int
    seed: int

    @property
    def name(self) -> str:
        return self.fmt.name

    @property
    def metric_text(self) -> str:
        if self.answers is None:
            return "log P(stated object) (nats)"
        return f"P({self.answers['true']!r}) − P({self.answers['false']!r})"

    def prefix_and_tail(self, ds: Any, train_rows: np.ndarray) -> tuple[str, str]:
        """The shared prefix (few-shot examples from ``train_rows``) and the text after each
        statement of an answer format; ("", "") for the completion format."""
        if self.answers is None:
            return "", ""
        shots = _shots(ds, train_rows, self.answers, self.n_shots, self.seed)
        return answer_prompt(self.lm, self.fmt, shots)

    def prompts(self, statements: list[str], tail: str, subjects: list[str] | None = None
                ) -> list[str]:
        """Prompts for ``statements``; with ``subjects`` the non-propositional control: each
        subject (a noun phrase, no claim) in its statement's place, the rest unchanged."""
        lead = subjects if subjects is not None else statements
        if self.answers is not None:
            return [s + tail for s in lead]
        return [s + self.fmt.completion_sep + object_split(st)[0]
                for s, st in zip(lead, statements, strict=True)]

    def metric(self, statements: list[str]) -> Any:
        """The per-prompt metric for prompts made from ``statements`` (in order)."""
        if self.answers is not None:
            return ProbDiff(self.answers["true_id"], self.answers["false_id"])
        return TargetLogProb(tuple(self.object_ids(statements)))

    def object_ids(self, statements: list[str]) -> list[int]:
        """The first token of each statement's object, as it follows its opening words."""
        out = []
        for s in statements:
            cue, obj = object_split(s)
            ids = self.lm.tokenizer(cue + obj, add_special_tokens=False)["input_ids"]
            head = self.lm.tokenizer(cue, add_special_tokens=False)["input_ids"]
            if ids[: len(head)] != head or len(ids) == len(head):
                raise InterplabError(f"the object of {s!r} does not tokenise apart from its "
                                     "opening words; the completion format cannot read it")
            out.append(int(ids[len(head)]))
        return out

    def pair_metric(self, true_statements: list[str], false_statements: list[str]) -> Any:
        """The metric of a (true, false) pair, the same for both of its runs: P(true word) −
        P(false word), or log P(true object) − log P(false object) for the completion."""
        if self.answers is not None:
            return self.metric(true_statements)
        return LogitDiff(tuple(self.object_ids(true_statements)),
                         tuple(self.object_ids(false_statements)))


def make_task(lm: Any, name: str, prompt_cfg: Any, seed: int) -> Task:
    """The format ``name`` for ``lm``; answer words from the prompt settings."""
    fmt = prompt_format(name)
    if fmt.is_chat and not has_chat_template(lm):
        raise InterplabError(f"the chat format needs a chat template, and {lm.name}'s tokenizer "
                             "has none; leave chat out of --formats")
    answers = (answer_tokens(lm, prompt_cfg.answer_true, prompt_cfg.answer_false)
               if fmt.kind == "answer" else None)
    return Task(fmt, answers, lm, prompt_cfg.n_shots, seed)


def _shots(ds: Any, rows: np.ndarray, answers: dict[str, Any], n: int, seed: int
           ) -> list[tuple[str, str]]:
    """``n`` training statements alternating true and false, with their answer words (the same
    draw as :func:`interplab.interventions.prompts.few_shot_prefix`)."""
    rng = np.random.default_rng((seed, 1))
    true_rows = rng.permutation(rows[ds.labels[rows] == 1])
    false_rows = rng.permutation(rows[ds.labels[rows] == 0])
    if n > 2 * min(len(true_rows), len(false_rows)):
        raise InterplabError(f"--n-shots {n} needs {n} training statements of {ds.name}, half "
                             "true and half false; lower --n-shots")
    out = []
    for k in range(n):
        i = int((true_rows if k % 2 == 0 else false_rows)[k // 2])
        out.append((ds.statements[i], answers["true" if ds.labels[i] == 1 else "false"]))
    return out


def statement_positions(prompts: Any, lm: Any, statements: list[str], k: int) -> list[list[int]]:
    """Indices (in each encoded prompt's own tokens) of the last ``k`` tokens of the statement
    it starts with, checked against the statement's own tokenisation."""
    out = []
    for i, s in enumerate(statements):
        st = lm.tokenizer(s, add_special_tokens=False)["input_ids"]
        off = 1 if prompts.has_bos else 0
        if prompts.ids[i][off: off + len(st)] != st:
            raise InterplabError(f"the statement {s!r} tokenises differently inside its prompt; "
                                 "cannot locate its final tokens")
        if k > len(st):
            raise InterplabError(f"--steer-tokens {k} is more than the {len(st)} tokens of "
                                 f"{s!r}")
        out.append(list(range(off + len(st) - k, off + len(st))))
    return out


# ---------------------------------------------------------------------------------- behaviour
def true_false_gap(m: np.ndarray, y: np.ndarray) -> float:
    """Mean metric of true statements − of false ones (NaN without both)."""
    a, b = m[y == 1], m[y == 0]
    return float(a.mean() - b.mean()) if len(a) and len(b) else float("nan")


def pairwise_accuracy(m: np.ndarray, y: np.ndarray) -> float:
    """Share of (true, false) statement pairs whose true one scores higher (ties: half): the
    area under the ROC curve of the metric as a truth classifier."""
    a, b = m[y == 1], m[y == 0]
    if not len(a) or not len(b):
        return float("nan")
    return float(((a[:, None] > b[None, :]) + 0.5 * (a[:, None] == b[None, :])).mean())


def behaviour(m: np.ndarray, y: np.ndarray, *, answer: bool, n_boot: int, seed: int
              ) -> dict[str, Any]:
    """The unsteered model on a task: mean metric per class, the true − false gap with its
    bootstrap interval and standardised size, the pairwise accuracy and (answer formats) the
    accuracy of the answer word the model prefers, each with an interval; ``solves`` when the
    gap's interval lies above 0."""
    m, y = np.asarray(m, dtype=np.float64), np.asarray(y, dtype=np.int64)
    gap, lo, hi = bootstrap_statistic(true_false_gap, m, y, n_boot=n_boot, seed=seed)
    sd = np.sqrt((m[y == 1].var(ddof=1) + m[y == 0].var(ddof=1)) / 2) if min(
        (y == 1).sum(), (y == 0).sum()) > 1 else float("nan")
    auc = bootstrap_statistic(pairwise_accuracy, m, y, n_boot=n_boot, seed=seed)
    out: dict[str, Any] = {
        "n": int(len(m)), "n_true": int(y.sum()),
        "mean_true": float(m[y == 1].mean()), "mean_false": float(m[y == 0].mean()),
        "gap": gap, "gap_lo": lo, "gap_hi": hi,
        "standardised_gap": float(gap / sd) if sd and sd == sd and sd > 0 else None,
        "pairwise_accuracy": auc[0], "pairwise_lo": auc[1], "pairwise_hi": auc[2],
        "solves": bool(lo > 0)}
    if answer:
        acc = bootstrap_mean(((m > 0).astype(int) == y).astype(float)[None], n_boot=n_boot,
                             seed=seed)
        out.update(accuracy=acc["value"][0], accuracy_lo=acc["lo"][0], accuracy_hi=acc["hi"][0],
                   share_answered_true=float(np.mean(m > 0)))
    return out


def normalised_effect(effects: np.ndarray, base: np.ndarray, y: np.ndarray, *, n_boot: int,
                      seed: int) -> dict[str, float]:
    """Mean steering effect over the true − false gap of the unsteered metric, with a bootstrap
    interval (prompts resampled with their effect, baseline and label together)."""
    def ratio(e: np.ndarray, m: np.ndarray, lab: np.ndarray) -> float:
        g = true_false_gap(m, lab)
        return float(e.mean() / g) if g == g and g != 0 else float("nan")

    value, lo, hi = bootstrap_statistic(ratio, np.asarray(effects, dtype=np.float64),
                                        np.asarray(base, dtype=np.float64),
                                        np.asarray(y, dtype=np.int64), n_boot=n_boot, seed=seed)
    return {"value": value, "lo": lo, "hi": hi}
