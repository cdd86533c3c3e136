"""Null sources that need the model, and probes scored on every null source.

The statistics of the null battery (data nulls matched to real activations, the source lists)
are pure and live in :mod:`interplab.controls.nulls`; the model-pass nulls run the model and so
live here, with :func:`probe_scores`, which the null study and the truth study's null section
share (one centring: the study's own :class:`~interplab.study.settings.ProbeConfig`).

Model nulls, harvested at the same hook and positions as the real rows: ``shuffled-tokens``
(each text's tokens in a seeded random order, the first token kept first), ``layer0`` (the
embeddings: ``blocks.0.hook_resid_pre``), ``reset`` (the weight-permuted network,
:func:`interplab.models.reset_copy`) and ``random-init`` (a randomly initialised network of the
same architecture). Their rows correspond one to one with the input texts (and so with their
labels).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from interplab.activations import harvest_tokens
from interplab.controls import (
    bootstrap_mean,
    distribution_summary,
    null_p_value,
    random_direction_accuracies,
)
from interplab.controls.multiple import correct_cells
from interplab.controls.nulls import DATA_NULLS, MODEL_NULLS, data_null
from interplab.defaults import DEFAULT_BATCH_SIZE
from interplab.errors import InterplabError
from interplab.models import LanguageModel, random_init_copy, reset_copy
from interplab.probes import make_probe
from interplab.sae.nulls import sae_cells

REAL = "model"  # the real activations (the model's own), scored beside every null source
N_RANDOM_DIRECTIONS = 20


def shuffle_tokens(token_ids: Sequence[Sequence[int]], seed: int = 0) -> list[list[int]]:
    """Each sequence's tokens in a seeded random order; the first token (BOS where the tokenizer
    adds one) stays first."""
    rng = np.random.default_rng(seed)
    return [[t[0], *rng.permutation(t[1:]).tolist()] if len(t) > 1 else list(t) for t in token_ids]


def null_model(lm: LanguageModel, name: str, seed: int = 0) -> LanguageModel:
    """The control network of ``name`` (``reset`` or ``random-init``)."""
    if name == "reset":
        return reset_copy(lm, seed=seed)
    if name == "random-init":
        return random_init_copy(lm, seed=seed)
    raise InterplabError(f"{name!r} is not a null network; use reset or random-init")


def model_null(name: str, lm: LanguageModel, texts: Sequence[str] | None, hook: str,
               positions: str = "last", *, token_ids: Sequence[Sequence[int]] | None = None,
               seed: int = 0, batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
    """Rows of the model null ``name`` at ``hook`` and ``positions`` for ``texts`` (or ready
    ``token_ids``), one set of rows per text as the real harvest gives."""
    if name not in MODEL_NULLS:
        raise InterplabError(f"unknown model null {name!r}; choose one of {', '.join(MODEL_NULLS)}")
    if (texts is None) == (token_ids is None):
        raise InterplabError("give either texts or token_ids")
    ids = lm.tokenize(list(texts)) if token_ids is None else [list(t) for t in token_ids]
    lm.parse_hook(hook)
    net, at = lm, hook
    if name == "shuffled-tokens":
        ids = shuffle_tokens(ids, seed)
    elif name == "layer0":
        at = "blocks.0.hook_resid_pre"
    else:
        net = null_model(lm, name, seed)
    acts = harvest_tokens(net, ids, [at], positions, batch_size=batch_size, progress=False)
    return acts[at].float().numpy()


def source_rows(name: str, lm: LanguageModel | None, real: np.ndarray, reference: np.ndarray,
                hook: str, positions: str, seed: int, batch_size: int,
                texts: list[str] | None = None, token_ids: Any = None) -> np.ndarray:
    """The rows of source ``name`` matching ``real`` (data nulls are fitted to ``reference``)."""
    if name == REAL:
        return real
    if name in DATA_NULLS:
        return data_null(name, reference, n=len(real), seed=seed)
    if lm is None:
        raise InterplabError(f"the model null {name!r} needs the model")
    return model_null(name, lm, texts, hook, positions, token_ids=token_ids, seed=seed,
                      batch_size=batch_size)


def _decisions(probe: Any, x: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """Predictions, each group scored on its own (per-dataset centring centres each dataset
    by its own mean, as the truth study's headline does)."""
    if groups is None:
        return probe.predict(x)
    out = np.empty(len(x), dtype=np.int64)
    for g in np.unique(groups):
        rows = groups == g
        out[rows] = probe.predict(x[rows])
    return out


def probe_scores(probes: list[str], centering: str, data: dict[str, np.ndarray], y: np.ndarray,
                 train: np.ndarray, test: np.ndarray, *, seed: int, n_boot: int,
                 groups: np.ndarray | None = None,
                 n_random_directions: int = N_RANDOM_DIRECTIONS) -> tuple[dict, dict]:
    """Per source and probe, held-out accuracy and the paired difference real − source, with
    intervals and the bootstrap p-value of "no difference" (``p``, ``p_floor``, ``at_floor``);
    the real probe's norm-matched random directions, with ``probe_test``: the real probe's
    accuracy among them (:func:`~interplab.controls.null_p_value`, one-sided: does it beat
    them?). The p-values are raw: :func:`nulls_statistics` corrects them.

    ``train``/``test`` index the rows of every source alike; ``groups`` (one dataset name per
    row) makes ``per-dataset`` centring centre each dataset by its own mean in fitting and in
    scoring, exactly as the probes of a study's headline are centred."""
    hits, out, randoms = {}, {}, {}
    g_tr = None if groups is None else groups[train]
    g_te = None if groups is None else groups[test]
    for source, x in data.items():
        for name in probes:
            probe = make_probe(name, centering=centering).fit(x[train], y[train], groups=g_tr)
            hits[source, name] = (_decisions(probe, x[test], g_te) == y[test]).astype(np.float64)
            if source == REAL:
                accs = random_direction_accuracies(probe, x[train], y[train], x[test], y[test],
                                                   n=n_random_directions, seed=seed)
                observed = float(hits[source, name].mean())
                randoms[name] = {**distribution_summary(accs), "probe_test": {
                    "observed": observed, "effect": observed - float(accs.mean()),
                    **null_p_value(observed, accs, alternative="greater").to_dict()}}
    for source in data:
        out[source] = {}
        for name in probes:
            rows = [hits[source, name]] + ([hits[REAL, name] - hits[source, name]]
                                           if source != REAL else [])
            b = bootstrap_mean(np.stack(rows), n_boot=n_boot, seed=seed, null=0.0)
            diff = ({"value": b["value"][1], "lo": b["lo"][1], "hi": b["hi"][1],
                     "p": b["p"][1], "p_floor": b["p_floor"],
                     "at_floor": b["p"][1] <= b["p_floor"]} if source != REAL else None)
            out[source][name] = {"value": b["value"][0], "lo": b["lo"][0], "hi": b["hi"][0],
                                 "n": b["n"], "model_minus_this": diff}
    return out, randoms


def nulls_statistics(probes: dict[str, dict[str, Any]], randoms: dict[str, dict[str, Any]],
                     saes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Every p-value of a null battery (:func:`probe_scores`' model − null per probe and source
    and each probe against its random directions; the SAE part's model − null per metric and
    source) corrected as one family (Benjamini–Hochberg); ``q``, ``q_bound`` and ``verdict`` are
    written into each tested cell. Returns the family's summary."""
    cells: list[tuple[str, Any, float | None]] = []
    for name, rd in randoms.items():
        if rd.get("probe_test"):
            cells.append((f"{name}: model vs random directions", rd["probe_test"],
                          rd["probe_test"]["effect"]))
    for source, by_probe in probes.items():
        for name, c in by_probe.items():
            d = c.get("model_minus_this")
            if d and d.get("p") is not None:
                cells.append((f"{name}: model − {source}", d, d["value"]))
    for source, m in saes.items():
        if m.get("model_minus_this"):
            cells += sae_cells(m["model_minus_this"], f"model − {source}")
    out = correct_cells(cells).to_dict()
    out["family"] = ("every p-value of this battery: each probe's model − null accuracy "
                     "difference per source and its accuracy against its random directions "
                     "(one-sided: above them), each SAE metric's model − null difference per "
                     "source (bootstrap p-values, two-sided)")
    return out
