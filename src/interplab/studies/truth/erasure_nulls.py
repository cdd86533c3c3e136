"""The truth study's optional erasure and null section, at the chosen layer of one training set.

On that training set's entity splits (fit on the train rows, score on the test rows): LEACE
checked by :func:`~interplab.erasure.verify_erasure` (linear and MLP probes held out, next to a
random subspace of the same rank), and the probe part of the null battery
(:func:`~interplab.study.nulls.probe_scores`, with the headline's centring): each probe's
held-out accuracy on the real rows and on each null source of ``config.nulls``, and model − null
with a paired bootstrap interval. The data nulls need no model pass; the model-pass nulls
(:func:`model_null_rows`) are harvested for the training set's train and test statements at the
chosen layer only (the reset network's rows come from the reset control's harvest when it ran).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from interplab.controls.nulls import DATA_NULLS, MODEL_NULLS, NULLS
from interplab.erasure import fit_eraser, verify_erasure
from interplab.models import HookPoint, load
from interplab.studies.truth.config import TruthConfig
from interplab.study.data import StatementData, short_name, train_key
from interplab.study.harvest import StatementActs
from interplab.study.nulls import (
    N_RANDOM_DIRECTIONS,
    REAL,
    model_null,
    nulls_statistics,
    probe_scores,
    source_rows,
)
from interplab.threads import limit_threads

ERASER = "leace"
LAYER_PROBES = ("logistic", "diffmean", "lda", "massmean-iid")  # whose chosen layer is used


def _rows(names: list[str], part: str, data: StatementData, acts: dict[str, StatementActs],
          li: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, labels and dataset name per row of ``names``' ``part`` at layer index ``li``."""
    x = [acts[n].acts[li][data.rows(n, part)] for n in names]
    y = [data.datasets[n].labels[data.rows(n, part)] for n in names]
    g = [np.full(len(data.rows(n, part)), n) for n in names]
    return np.concatenate(x).astype(np.float64), np.concatenate(y), np.concatenate(g)


def chosen_layer(config: TruthConfig, best_layer: dict, key: str) -> tuple[str, int] | None:
    """``(probe, layer)``: the layer the first single-statement probe chose on validation for
    ``key``, or None when none did (or none of the configured probes can run here)."""
    chooser = next((p for p in LAYER_PROBES if p in best_layer.get(key, {})), None)
    if chooser is None or not any(p in LAYER_PROBES for p in config.probe.probes):
        return None
    return chooser, best_layer[key][chooser]


def model_null_rows(config: TruthConfig, data: StatementData, names: list[str], layer: int,
                    reset_rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Rows of each model-pass null in ``config.nulls`` for the train then test statements of
    ``names`` (the order of the section's real rows), last token at ``layer``'s resid_post: one
    harvest per null at that layer only. ``reset_rows`` (the reset control's harvest of the same
    rows, when it ran) is used instead of a new reset pass."""
    wanted = [n for n in config.nulls if n in MODEL_NULLS]
    out = {"reset": reset_rows} if "reset" in wanted and reset_rows is not None else {}
    todo = [n for n in wanted if n not in out]
    if not todo:
        return out
    texts = [data.datasets[n].statements[i] for part in ("train", "test") for n in names
             for i in data.rows(n, part)]
    lm = load(config.run.model, device=config.run.device)
    hook = lm.parse_hook(HookPoint.resid_post(layer)).name
    for name in todo:
        out[name] = model_null(name, lm, texts, hook, "last", seed=config.run.seed,
                               batch_size=config.run.batch_size)
    return {n: out[n] for n in wanted}


def _nulls_notes(run: list[str], n_rows: int, reused_reset: bool) -> list[str]:
    data = [n for n in run if n in DATA_NULLS]
    model = [n for n in run if n not in DATA_NULLS]
    notes = []
    if data:
        notes.append(f"data nulls ({', '.join(data)}) are fitted to the training rows; their labels "
                     "are the real labels by row index, so chance is the expected accuracy")
    if model:
        notes.append(f"model-pass nulls ({', '.join(model)}) were harvested for these {n_rows} "
                     "statements at the chosen layer only (one pass each"
                     + ("; reset reuses the reset control's harvest" if reused_reset else "")
                     + "); their rows keep their statements' labels")
    missing = [n for n in NULLS if n not in run]
    if missing:
        notes.append(f"not run: {', '.join(missing)} (see --nulls, or `interplab nulls`)")
    notes.append("no SAE part (`interplab nulls` trains SAEs on each null)")
    return notes


def erasure_nulls_section(config: TruthConfig, data: StatementData,
                          acts: dict[str, dict[str, StatementActs]], layers: list[int],
                          best_layer: dict) -> dict[str, Any] | None:
    """The section for the first training set, or None when no single-statement probe chose a
    layer for it. ``acts`` holds the model's harvest and, when that control ran, the reset
    network's (its rows are reused as the reset null)."""
    ts = config.train_sets[0]
    key, names = train_key(ts), [short_name(n) for n in ts]
    chosen = chosen_layer(config, best_layer, key)
    if chosen is None:
        return None
    chooser, layer = chosen
    li = layers.index(layer)
    reset = acts.get("reset")
    reset_rows = None if reset is None else np.concatenate(
        [reset[n].acts[li][data.rows(n, part)] for part in ("train", "test") for n in names])
    model_rows = model_null_rows(config, data, names, layer, reset_rows)
    with limit_threads(1):
        return _section(config, data, acts["model"], li, layer, chooser, key, names, model_rows,
                        reused_reset="reset" in model_rows and reset_rows is not None)


def _section(config: TruthConfig, data: StatementData, acts: dict[str, StatementActs], li: int,
             layer: int, chooser: str, key: str, names: list[str],
             model_rows: dict[str, np.ndarray], reused_reset: bool) -> dict[str, Any]:
    seed, n_boot = config.run.seed, config.run.n_boot
    probes = [p for p in config.probe.probes if p in LAYER_PROBES]
    xtr, ytr, gtr = _rows(names, "train", data, acts, li)
    xte, yte, gte = _rows(names, "test", data, acts, li)
    eraser = fit_eraser(ERASER, xtr, ytr, seed=seed)
    check = verify_erasure(eraser, xtr, ytr, xte, yte, seed=seed, n_boot=n_boot)
    x = np.concatenate([xtr, xte]).astype(np.float32)
    rows = {s: source_rows(s, None, x, xtr, "", "last", seed, config.run.batch_size)
            for s in (REAL, *[n for n in config.nulls if n in DATA_NULLS])}
    rows.update({s: np.asarray(r, dtype=np.float32) for s, r in model_rows.items()})
    run = [s for s in rows if s != REAL]
    train, test = np.arange(len(xtr)), np.arange(len(xtr), len(x))
    scores, randoms = probe_scores(
        probes, config.probe.centering, rows, np.concatenate([ytr, yte]), train, test,
        seed=seed, n_boot=n_boot, groups=np.concatenate([gtr, gte]))
    statistics = nulls_statistics(scores, randoms, {})
    hook = HookPoint.resid_post(layer).name
    common = {"hook": hook, "n_train": len(xtr), "n_test": len(xte)}
    return {
        "train_set": key, "layer": layer, "layer_chosen_by": chooser, **common,
        "centering": config.probe.centering,
        "erasure": {**common, "checks": {ERASER: check.to_dict()}, "in_model": {},
                    "directions": None,
                    "notes": ["only LEACE is run here, and not inside the model (no ΔCE/KL); "
                              "`interplab erase` runs every method with its in-model cost"]},
        "nulls": {**common, "probes": scores, "random_directions": randoms, "saes": {},
                  "config": {"n_random_directions": N_RANDOM_DIRECTIONS,
                             "centering": config.probe.centering},
                  "nulls_run": run, "statistics": statistics,
                  "notes": _nulls_notes(run, len(x), reused_reset) + statistics["notes"]},
    }
