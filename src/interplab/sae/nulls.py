"""SAEs on null data: train the same TopK SAE on real activations and on a null source, score
both on training and held-out rows, and report model − null with bootstrap intervals and
p-values. The null study's SAE part and ``sae train --null-control`` both run this; its settings
(:class:`SaeNullConfig`) are written once, here. No torch at module level."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from interplab.errors import InterplabError


@dataclass
class SaeNullConfig:
    """How an SAE is trained on each source when it is compared with a null."""

    sae_width: int = field(default=4, metadata={"help": "SAE width as a multiple of d_model."})
    sae_k: int = field(default=32, metadata={"help": "Active features of the TopK SAE."})
    sae_steps: int = field(default=300, metadata={
        "help": "Training steps of each SAE compared with a null."})
    sae_batch_size: int = field(default=256, metadata={
        "help": "Rows per training step of each SAE compared with a null."})
    sae_heldout_fraction: float = field(default=0.25, metadata={
        "help": "Share of the rows (by sequence) held out from SAE training."})

    def validate(self) -> None:
        if min(self.sae_width, self.sae_k, self.sae_steps, self.sae_batch_size) < 1:
            raise InterplabError("sae_width, sae_k, sae_steps and sae_batch_size must be ≥ 1")
        if not 0 < self.sae_heldout_fraction < 1:
            raise InterplabError("sae_heldout_fraction must lie strictly between 0 and 1")


def train_and_score_sae(x: np.ndarray, heldout: np.ndarray, config: SaeNullConfig, seed: int,
                        sae_config: Any = None
                        ) -> tuple[dict[str, Any], dict[str, tuple[np.ndarray, ...]]]:
    """Train a TopK SAE (``config``'s width and k, or ``sae_config``, an
    :class:`~interplab.sae.SAEConfig` of width ``x``'s) on the rows not in ``heldout`` (boolean
    ``[n]``) for ``config.sae_steps`` steps of ``config.sae_batch_size`` rows; metrics on both
    parts, and per part the per-row
    terms of its metrics: squared error, squared deviation from that part's mean
    (FVE = 1 − Σ error / Σ deviation) and active features (L0)."""
    import torch

    from interplab.sae import SAEConfig, TrainerConfig, train_saes
    from interplab.sae.metrics import reconstruction_metrics

    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    train, test = xt[~torch.from_numpy(heldout)], xt[torch.from_numpy(heldout)]
    g = torch.Generator().manual_seed(seed)

    def batches():
        for _ in range(config.sae_steps):
            yield train[torch.randint(0, train.shape[0], (config.sae_batch_size,), generator=g)]

    d = x.shape[1]
    sae_cfg = sae_config or SAEConfig("topk", d, config.sae_width * d, k=config.sae_k, seed=seed)
    tcfg = TrainerConfig(total_steps=config.sae_steps, log_every_steps=0, seed=seed,
                         init_sample_size=min(8192, train.shape[0]))
    sae = train_saes(batches(), [sae_cfg], tcfg)[0].eval()
    out, terms = {}, {}
    with torch.no_grad():
        for part, rows in (("train", train), ("heldout", test)):
            feats = sae.encode(rows)
            recon = sae.decode(feats)
            m = reconstruction_metrics(rows, recon, feats)
            out[part] = {"fve": m.fraction_of_variance_explained, "l0": m.l0,
                         "features_used": m.n_alive, "n_features": m.n_features,
                         "n_rows": m.n_tokens}
            r64 = rows.double()
            terms[part] = ((r64 - recon.double()).pow(2).sum(1).numpy(),
                           (r64 - r64.mean(0)).pow(2).sum(1).numpy(),
                           (feats != 0).sum(1).double().numpy())
    out["generalisation_gap"] = out["train"]["fve"] - out["heldout"]["fve"]
    return out, terms


def _fve(err: np.ndarray, dev: np.ndarray) -> float:
    return float(1 - err.sum() / dev.sum())


def _interval(statistic: Any, columns: list[np.ndarray], n_boot: int, seed: int
              ) -> dict[str, Any]:
    """``value``, ``lo``, ``hi`` and the bootstrap p-value of "the statistic is 0" (``p``,
    ``p_floor``, ``at_floor``; :func:`~interplab.controls.bootstrap_test`)."""
    from interplab.controls import bootstrap_test

    return bootstrap_test(statistic, *columns, null=0.0, n_boot=n_boot, seed=seed)


def sae_minus_null(real: tuple[dict, dict], null: tuple[dict, dict], *, n_boot: int,
                   seed: int) -> dict[str, dict[str, Any]]:
    """The model's SAE minus the null's (each a ``train_and_score_sae`` output): FVE on training
    and on held-out rows and held-out L0, each with a bootstrap interval over that part's rows
    (the model's and the null's rows resampled jointly: they are the same token positions) and
    the bootstrap p-value of "no difference" (raw: correct it with the rest of the study's
    family, :func:`sae_cells`), and the features used on held-out rows (a count of distinct
    features: no interval or test, since a resample of rows can only lose features)."""
    (m_real, t_real), (m_null, t_null) = real, null
    out: dict[str, dict[str, Any]] = {}
    for part in ("train", "heldout"):
        (er, dr, _), (en, dn, _) = t_real[part], t_null[part]
        out[f"fve_{part}"] = _interval(lambda a, b, c, d: _fve(a, b) - _fve(c, d),
                                       [er, dr, en, dn], n_boot, seed)
    out["l0_heldout"] = _interval(lambda a, b: float(a.mean() - b.mean()),
                                  [t_real["heldout"][2], t_null["heldout"][2]], n_boot, seed)
    used = m_real["heldout"]["features_used"] - m_null["heldout"]["features_used"]
    out["features_used_heldout"] = {"value": used, "lo": None, "hi": None}
    return out


SAE_TESTED = ("fve_train", "fve_heldout", "l0_heldout")


def sae_cells(diff: dict[str, Any], what: str) -> list[tuple[str, dict[str, Any], float]]:
    """The tested cells of one :func:`sae_minus_null` output, labelled ``"{metric}: {what}"``,
    for :func:`interplab.controls.multiple.correct_cells`."""
    return [(f"{key}: {what}", diff[key], diff[key]["value"]) for key in SAE_TESTED
            if diff.get(key, {}).get("p") is not None]
