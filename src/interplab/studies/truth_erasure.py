"""The truth study's optional erasure and null section, at the chosen layer of one training set.

On that training set's entity splits (fit on the train rows, score on the test rows): LEACE
checked by :func:`~interplab.erasure.verify_erasure` (linear and MLP probes held out, next to a
random subspace of the same rank), and the probe part of the null battery
(:func:`~interplab.studies.nulls.probe_scores`) on the data nulls, which need no model pass.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from interplab.controls.nulls import DATA_NULLS, MODEL_NULLS

ERASER = "leace"
LAYER_PROBES = ("logistic", "diffmean", "lda", "massmean-iid")  # whose chosen layer is used


def _rows(names: list[str], part: str, datasets: dict, splits: dict, acts: dict,
          li: int) -> tuple[np.ndarray, np.ndarray]:
    x = [acts[n][0][li][getattr(splits[n], part)] for n in names]
    y = [datasets[n].labels[getattr(splits[n], part)] for n in names]
    return np.concatenate(x).astype(np.float64), np.concatenate(y)


def erasure_and_nulls(config: Any, datasets: dict, splits: dict, acts: dict, layers: list[int],
                      best_layer: dict, train_key: str, names: list[str]) -> dict[str, Any] | None:
    """The section for training set ``train_key`` (datasets ``names``), or None when no
    single-statement probe chose a layer for it."""
    from interplab.erasure import fit_eraser, verify_erasure
    from interplab.models import HookPoint
    from interplab.studies.nulls import REAL, NullsConfig, probe_scores, source_rows

    chooser = next((p for p in LAYER_PROBES if p in best_layer.get(train_key, {})), None)
    probes = [p for p in config.probes if p in LAYER_PROBES]
    if chooser is None or not probes:
        return None
    layer = best_layer[train_key][chooser]
    li = layers.index(layer)
    xtr, ytr = _rows(names, "train", datasets, splits, acts, li)
    xte, yte = _rows(names, "test", datasets, splits, acts, li)
    eraser = fit_eraser(ERASER, xtr, ytr, seed=config.seed)
    check = verify_erasure(eraser, xtr, ytr, xte, yte, seed=config.seed, n_boot=config.n_boot)
    ncfg = NullsConfig(nulls=list(DATA_NULLS), probes=probes, seed=config.seed,
                       n_boot=config.n_boot)
    x = np.concatenate([xtr, xte]).astype(np.float32)
    data = {s: source_rows(s, None, x, xtr, "", "last", config.seed, config.batch_size)
            for s in (REAL, *DATA_NULLS)}
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
                  "nulls_run": list(DATA_NULLS),
                  "notes": [f"nulls run: {', '.join(DATA_NULLS)} (fitted to the training rows; "
                            "their labels are the real labels by row index, so chance is the "
                            "expected accuracy). Not run here: "
                            f"{', '.join(MODEL_NULLS)} (each needs a model pass; see "
                            "`interplab nulls`)", "no SAE part"]},
    }
