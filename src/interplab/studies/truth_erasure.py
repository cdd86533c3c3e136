"""The truth study's optional erasure and null section, at the chosen layer of one training set.

On that training set's entity splits (fit on the train rows, score on the test rows): LEACE
checked by :func:`~interplab.erasure.verify_erasure` (linear and MLP probes held out, next to a
random subspace of the same rank), and the probe part of the null battery
(:func:`~interplab.studies.nulls.probe_scores`): each probe's held-out accuracy on the real rows
and on each null source of ``config.nulls``, and model − null with a paired bootstrap interval.
The data nulls need no model pass; the model-pass nulls (:func:`model_null_rows`) are harvested
for the training set's train and test statements at the chosen layer only.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from interplab.controls.nulls import DATA_NULLS, MODEL_NULLS, NULLS

ERASER = "leace"
LAYER_PROBES = ("logistic", "diffmean", "lda", "massmean-iid")  # whose chosen layer is used


def _rows(names: list[str], part: str, datasets: dict, splits: dict, acts: dict,
          li: int) -> tuple[np.ndarray, np.ndarray]:
    x = [acts[n][0][li][getattr(splits[n], part)] for n in names]
    y = [datasets[n].labels[getattr(splits[n], part)] for n in names]
    return np.concatenate(x).astype(np.float64), np.concatenate(y)


def chosen_layer(config: Any, best_layer: dict, train_key: str) -> tuple[str, int] | None:
    """``(probe, layer)``: the layer the first single-statement probe chose on validation for
    ``train_key``, or None when none did (or none of ``config.probes`` can run here)."""
    chooser = next((p for p in LAYER_PROBES if p in best_layer.get(train_key, {})), None)
    if chooser is None or not any(p in LAYER_PROBES for p in config.probes):
        return None
    return chooser, best_layer[train_key][chooser]


def model_null_rows(config: Any, datasets: dict, splits: dict, names: list[str], layer: int,
                    reset_rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Rows of each model-pass null in ``config.nulls`` for the train then test statements of
    ``names`` (the order of the section's real rows), last token at ``layer``'s resid_post: one
    harvest per null at that layer only. ``reset_rows`` (the reset control's harvest of the same
    rows, when it ran) is used instead of a new reset pass."""
    from interplab.controls.nulls import model_null
    from interplab.models import HookPoint, load

    wanted = [n for n in config.nulls if n in MODEL_NULLS]
    out = {"reset": reset_rows} if "reset" in wanted and reset_rows is not None else {}
    todo = [n for n in wanted if n not in out]
    if not todo:
        return out
    texts = [datasets[n].statements[i] for part in ("train", "test") for n in names
             for i in getattr(splits[n], part)]
    lm = load(config.model, device=config.device)
    hook = lm.parse_hook(HookPoint.resid_post(layer)).name
    for name in todo:
        out[name] = model_null(name, lm, texts, hook, "last", seed=config.seed,
                               batch_size=config.batch_size)
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


def erasure_and_nulls(config: Any, datasets: dict, splits: dict, acts: dict, layers: list[int],
                      best_layer: dict, train_key: str, names: list[str],
                      model_rows: dict[str, np.ndarray] | None = None,
                      reused_reset: bool = False) -> dict[str, Any] | None:
    """The section for training set ``train_key`` (datasets ``names``), or None when no
    single-statement probe chose a layer for it. ``model_rows`` (:func:`model_null_rows`) are
    further null sources, row for row with the train then test rows."""
    from interplab.erasure import fit_eraser, verify_erasure
    from interplab.models import HookPoint
    from interplab.studies.nulls import REAL, NullsConfig, probe_scores, source_rows

    chosen = chosen_layer(config, best_layer, train_key)
    if chosen is None:
        return None
    chooser, layer = chosen
    probes = [p for p in config.probes if p in LAYER_PROBES]
    li = layers.index(layer)
    xtr, ytr = _rows(names, "train", datasets, splits, acts, li)
    xte, yte = _rows(names, "test", datasets, splits, acts, li)
    eraser = fit_eraser(ERASER, xtr, ytr, seed=config.seed)
    check = verify_erasure(eraser, xtr, ytr, xte, yte, seed=config.seed, n_boot=config.n_boot)
    x = np.concatenate([xtr, xte]).astype(np.float32)
    data_nulls = [n for n in getattr(config, "nulls", DATA_NULLS) if n in DATA_NULLS]
    data = {s: source_rows(s, None, x, xtr, "", "last", config.seed, config.batch_size)
            for s in (REAL, *data_nulls)}
    data.update({s: np.asarray(r, dtype=np.float32) for s, r in (model_rows or {}).items()})
    run = [s for s in data if s != REAL]
    ncfg = NullsConfig(nulls=[s for s in run if s in NULLS], probes=probes, seed=config.seed,
                       n_boot=config.n_boot)
    split = SimpleNamespace(train=np.arange(len(xtr)), test=np.arange(len(xtr), len(x)))
    scores, randoms = probe_scores(ncfg, data, np.concatenate([ytr, yte]), split)
    hook = HookPoint.resid_post(layer).name
    common = {"hook": hook, "n_train": len(xtr), "n_test": len(xte)}
    return {
        "train_set": train_key, "layer": layer, "layer_chosen_by": chooser, **common,
        "erasure": {**common, "checks": {ERASER: check.to_dict()}, "in_model": {},
                    "directions": None,
                    "notes": ["only LEACE is run here, and not inside the model (no ΔCE/KL); "
                              "`interplab erase` runs every method with its in-model cost"]},
        "nulls": {**common, "probes": scores, "random_directions": randoms, "saes": {},
                  "config": {"n_random_directions": ncfg.n_random_directions},
                  "nulls_run": run, "notes": _nulls_notes(run, len(x), reused_reset)},
    }
