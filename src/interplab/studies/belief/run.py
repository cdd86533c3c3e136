"""Belief-state geometry study: process -> toy transformer -> regression onto exact beliefs.

``run_belief_study(BeliefStudyConfig(...))`` trains a small GPT on sequences sampled from a hidden
Markov process, then regresses its residual stream (every layer, all layers concatenated, and a
random projection of the concatenation down to ``d_model`` features) onto the exact Bayesian belief
over hidden states, weighted by prefix probability, and scores the fit out of fold (k-fold
cross-validation over whole sequences). The headline scores are on *unseen* prefixes, those that
no training sequence of the fold contains: a held-out sequence shares its short prefixes with
training sequences, and those carry most of the held-out weight. Scores over all held-out
(sequence, position) pairs are kept beside them as ``*_heldout_all``. Two controls sit beside every
number:

* shuffled beliefs: the same regression fitted on activations and beliefs drawn independently
  from each fold's training rows' weighted distribution (scored against the true held-out
  beliefs), which should give R² ≈ 0;
* untrained transformer: the same pipeline on the same architecture at its random initialisation
  (the very weights training started from), which shows how much comes from the architecture and
  the input tokens alone.

Because random features of the input already decode a belief that the last few symbols mostly
determine, R² alone does not separate a trained model from the untrained one (Mess3: 0.97 on unseen
prefixes for the untrained network). The verdict therefore compares with the control: at the concatenation of all
layers, the trained model's RMSE on unseen prefixes must be at most ``TARGET_RMSE_RATIO`` times the
untrained model's, on top of R² and loss targets. Targets, values and the verdict are stored in the
result; the report only reads them.

The result is a JSON-serialisable dataclass; figures are drawn by :mod:`interplab.report.belief`.
"""

from __future__ import annotations

import contextlib
import copy
import platform
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from tqdm.auto import tqdm

import interplab
from interplab.compmech.beliefs import entropy_rate, optimal_cross_entropy
from interplab.compmech.config import GPTConfig, TrainConfig
from interplab.compmech.presets import get_process
from interplab.compmech.process import HiddenMarkovProcess
from interplab.compmech.regression import (
    BeliefDataset,
    CrossValidatedFit,
    belief_dataset,
    cross_validated_fit,
    r2_rmse,
    residual_rows,
)
from interplab.compmech.train import (
    TrainHistory,
    evaluate,
    heldout_seed,
    heldout_tokens,
    train_model,
)
from interplab.compmech.transformer import GPT, save_model
from interplab.studies.belief.config import (
    CONCAT,
    PROJECTED,
    TARGET_LOSS_RATIO,
    TARGET_R2,
    TARGET_RMSE_RATIO,
    TARGET_SHUFFLED_R2,
    TARGET_SITE,
    BeliefStudyConfig,
    BeliefStudyResult,
    LayerScore,
)
from interplab.threads import limit_threads


def _versions() -> dict[str, str]:
    return {
        "interplab": interplab.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _say(progress: bool, msg: str) -> None:
    if progress:
        Console(stderr=True).print(f"[bold cyan]belief[/] {msg}", highlight=False)


def _site_features(
    resid: np.ndarray, names: list[str], projection: np.ndarray
) -> dict[str, np.ndarray]:
    """Site name -> features ``[n_rows, d]``: every layer of ``resid [layers, n_rows, d_model]``,
    their concatenation, and the concatenation times ``projection [layers * d_model, d_model]``."""
    concat = resid.transpose(1, 0, 2).reshape(resid.shape[1], -1)
    sites = {name: resid[i] for i, name in enumerate(names)}
    sites[CONCAT] = concat
    sites[PROJECTED] = concat @ projection
    return sites


def _regress_all(
    sites: dict[str, np.ndarray], data: BeliefDataset, folds: np.ndarray, cfg: BeliefStudyConfig,
    shuffled_pairs: int = 0, desc: str = "regression", progress: bool = False,
) -> dict[str, CrossValidatedFit]:
    """Cross-validated fits at every site: name -> fit.

    ``shuffled_pairs > 0`` turns this into the shuffled-belief control."""

    return {
        name: cross_validated_fit(
            x, data, folds, ridge=cfg.ridge, shuffled_pairs_per_fold=shuffled_pairs,
            seed=_seeds(cfg)["shuffle"],
        )
        for name, x in tqdm(sites.items(), desc=desc, disable=not progress, unit="site")
    }


def _seeds(cfg: BeliefStudyConfig, tcfg: TrainConfig | None = None) -> dict[str, int | list[int]]:
    """Every seed the study draws from, by purpose, exactly as passed to its generator (a list
    seeds ``np.random.default_rng(list)``): the code reads its seeds here and the result records
    this dict, so a recorded seed reproduces its draw. ``tcfg``: the training config, whose
    held-out batch the study scores the untrained model on."""
    seeds: dict[str, int | list[int]] = {
        "model_init": cfg.seed,  # torch.manual_seed, inside GPT(seed=)
        "training_data": cfg.seed,
        "regression_sequences": cfg.seed,  # belief_dataset(seed=)
        "split": [cfg.seed, 2],  # folds of whole sequences
        "shuffle": cfg.seed + 3,  # cross_validated_fit(seed=): the shuffled-belief control
        "plot_subset": [cfg.seed, 4],
        "projection": [cfg.seed, 5],
    }
    if tcfg is not None:
        seeds["heldout_batch"] = heldout_seed(tcfg)
    return seeds


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def _layer_score(name: str, n_features: int, fit: CrossValidatedFit, unt: CrossValidatedFit,
                 shuf: CrossValidatedFit) -> LayerScore:
    return LayerScore(
        layer=name,
        n_features=n_features,
        r2_unseen=fit.r2_unseen,
        rmse_unseen=fit.rmse_unseen,
        r2_heldout_all=fit.r2,
        rmse_heldout_all=fit.rmse,
        r2_train=fit.r2_train,
        untrained_r2_unseen=unt.r2_unseen,
        untrained_rmse_unseen=unt.rmse_unseen,
        untrained_r2_heldout_all=unt.r2,
        untrained_rmse_heldout_all=unt.rmse,
        rmse_ratio_unseen=_ratio(fit.rmse_unseen, unt.rmse_unseen),
        shuffled_r2_unseen=shuf.r2_unseen,
        shuffled_rmse_unseen=shuf.rmse_unseen,
        shuffled_r2_heldout_all=shuf.r2,
    )


def _nan_low(v: float) -> float:
    return v if np.isfinite(v) else -np.inf


def _layers_vs_concat(scores: list[LayerScore], names: list[str]) -> dict[str, Any]:
    """Best single layer against the concatenation and its projection to one layer's width, for
    the trained and the untrained model (the untrained gain is the feature-count control)."""
    by = {s.layer: s for s in scores}
    single = [by[n] for n in names]
    best = max(single, key=lambda s: _nan_low(s.r2_unseen))
    unt_best = max(single, key=lambda s: _nan_low(s.untrained_r2_unseen))
    cat, proj = by[CONCAT], by[PROJECTED]
    return {
        "best_single_layer": best.layer,
        "best_single_r2_unseen": best.r2_unseen,
        "concat_r2_unseen": cat.r2_unseen,
        "concat_projected_r2_unseen": proj.r2_unseen,
        "concat_gain": cat.r2_unseen - best.r2_unseen,
        "untrained_best_single_layer": unt_best.layer,
        "untrained_best_single_r2_unseen": unt_best.untrained_r2_unseen,
        "untrained_concat_r2_unseen": cat.untrained_r2_unseen,
        "untrained_concat_projected_r2_unseen": proj.untrained_r2_unseen,
        "untrained_concat_gain": cat.untrained_r2_unseen - unt_best.untrained_r2_unseen,
        "n_features": {"layer": best.n_features, CONCAT: cat.n_features, PROJECTED: proj.n_features},
    }


def _targets(loss_ratio: float, site: LayerScore, max_shuffled: float) -> dict[str, Any]:
    """Targets, the values they are checked against, and the verdict (see module docstring)."""
    t: dict[str, Any] = {
        "site": site.layer,
        "loss_ratio_max": TARGET_LOSS_RATIO,
        "loss_ratio": loss_ratio,
        "loss_met": bool(loss_ratio <= TARGET_LOSS_RATIO),
        "r2_unseen_min": TARGET_R2,
        "r2_unseen": site.r2_unseen,
        "r2_met": bool(site.r2_unseen >= TARGET_R2),
        "rmse_ratio_max": TARGET_RMSE_RATIO,
        "rmse_ratio": site.rmse_ratio_unseen,
        "rmse_ratio_met": bool(site.rmse_ratio_unseen <= TARGET_RMSE_RATIO),
        "shuffled_r2_max": TARGET_SHUFFLED_R2,
        "max_shuffled_r2": max_shuffled,
        "shuffled_met": bool(max_shuffled <= TARGET_SHUFFLED_R2),
        "untrained_r2_unseen": site.untrained_r2_unseen,
        # True when R² alone cannot tell the trained model from the control
        "untrained_meets_r2_min": bool(site.untrained_r2_unseen >= TARGET_R2),
    }
    t["decodable_beyond_control"] = t["r2_met"] and t["rmse_ratio_met"] and t["shuffled_met"]
    t["all_met"] = t["decodable_beyond_control"] and t["loss_met"]
    return t


def _fold_spread(reg: _Regression) -> dict[str, list[float]]:
    """At the target site, R² and the RMSE ratio (trained / untrained) on the unseen prefixes of
    each fold separately: how much the headline numbers move between folds of sequences.

    An unseen prefix belongs to one fold (no training sequence of its fold contains it, so
    every sequence through it is held out there); its weight is its probability."""
    trained = reg.fits[TARGET_SITE].unseen_predictions
    untrained = reg.untrained[TARGET_SITE].unseen_predictions
    unseen = np.isfinite(trained[:, 0]) & np.isfinite(untrained[:, 0])
    fold_of_row = reg.folds[reg.data.seq_index]
    r2, ratio = [], []
    for k in np.unique(reg.folds):
        rows = unseen & (fold_of_row == k)
        if not rows.any():
            continue
        y, w = reg.data.beliefs[rows], reg.data.weights[rows]
        r2_k, rmse_k = r2_rmse(y, trained[rows], w)
        _, rmse_u = r2_rmse(y, untrained[rows], w)
        r2.append(r2_k)
        ratio.append(_ratio(rmse_k, rmse_u))
    return {"r2_unseen_folds": r2, "rmse_ratio_folds": ratio}


def _summary(r: BeliefStudyResult) -> list[str]:
    """The findings behind the verdict, each with its spread over folds and its control: the
    trained network against the untrained one, training against the floor, the shuffled-belief
    control, single layers against the concatenation."""
    t, lc = r.targets, r.layers_vs_concat

    def spread(key: str) -> str:
        v = t.get(key) or []
        return f" (folds {min(v):.3f}–{max(v):.3f})" if v else ""


    def met(ok: bool) -> str:
        return "met" if ok else "not met"

    out = [f"Against the untrained network, at {t['site']}, on prefixes no training sequence "
           f"contains: RMSE "
           f"{t['rmse_ratio']:.3f} × the untrained network's{spread('rmse_ratio_folds')}, target "
           f"≤ {t['rmse_ratio_max']:g} ({met(t['rmse_ratio_met'])}); R² {t['r2_unseen']:.3f}"
           f"{spread('r2_unseen_folds')} against the untrained network's "
           f"{t['untrained_r2_unseen']:.3f}, target ≥ {t['r2_unseen_min']:g} "
           f"({met(t['r2_met'])})."]
    if t["untrained_meets_r2_min"]:
        out.append(f"The untrained network alone reaches R² {t['untrained_r2_unseen']:.3f}, above "
                   "the R² target: random features of the input already decode much of the "
                   "belief, so R² alone does not separate the two; the RMSE ratio does.")
    out.append(f"Training: held-out loss {r.final_loss:.4f} ± {r.final_loss_stderr:.4f} nats per "
               f"symbol, {r.loss_ratio:.4f} × the optimal floor {r.optimal_loss:.4f}, target "
               f"≤ {t['loss_ratio_max']:g} ({met(t['loss_met'])}); the untrained network "
               f"{r.untrained_loss:.4f}, the no-context predictor {r.unigram_loss:.4f}.")
    out.append(f"Shuffled-belief control: largest R² on unseen prefixes over all sites "
               f"{t['max_shuffled_r2']:.4f}, target ≤ {t['shuffled_r2_max']:g} "
               f"({met(t['shuffled_met'])}).")
    out.append(f"Best single layer {lc['best_single_layer']}: R² {lc['best_single_r2_unseen']:.3f} "
               f"(untrained best {lc['untrained_best_single_r2_unseen']:.3f}); the concatenation "
               f"adds {lc['concat_gain']:+.3f}, against {lc['untrained_concat_gain']:+.3f} for the "
               "untrained network (what feature count alone adds).")
    return out


def _determinism(device: str) -> dict[str, Any]:
    """What a bit-identical re-run needs to match: thread counts change the order of floating-point
    reductions in torch and BLAS, and the CPU instruction set selects different kernels."""
    try:
        from threadpoolctl import threadpool_info

        blas = {d["internal_api"]: d["num_threads"] for d in threadpool_info()}
    except ImportError:  # pragma: no cover
        blas = {}
    return {
        "torch_threads": torch.get_num_threads(),
        "blas_threads": blas,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "device": device,
    }


@contextlib.contextmanager
def _deterministic(num_threads: int) -> Iterator[None]:
    """Deterministic torch kernels and ``num_threads`` torch/BLAS threads (the regression's
    float64 Grams were ~4x faster on one thread); both restored on exit, also on error."""
    old = (torch.are_deterministic_algorithms_enabled(),
           torch.is_deterministic_algorithms_warn_only_enabled())
    # warn_only: an op without a deterministic kernel (some CUDA ones) warns instead of failing
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with limit_threads(num_threads):
            yield
    finally:
        torch.use_deterministic_algorithms(old[0], warn_only=old[1])


@dataclass
class _Process:
    """The process and its exact loss floor (nats per predicted symbol)."""

    process: HiddenMarkovProcess
    floor: np.ndarray  # [context_length] optimal cross-entropy at each position
    entropy_rate: float
    unigram: float  # loss of the no-context predictor

    def facts(self) -> dict[str, Any]:
        p = self.process
        return {
            "name": p.name,
            "n_states": p.n_states,
            "n_symbols": p.n_symbols,
            "symbols": list(p.symbols),
            "states": list(p.states),
            "stationary": p.stationary_distribution().tolist(),
            "entropy_rate": self.entropy_rate,
            "unifilar": p.is_unifilar,
            "transitions": p.transitions.tolist(),
        }


@dataclass
class _Trained:
    """The trained model, its untrained control (the weights training started from), and the
    settings and history of training."""

    model: GPT
    untrained: GPT
    gcfg: GPTConfig
    tcfg: TrainConfig
    history: TrainHistory
    final_pp: np.ndarray  # [context_length] final held-out loss per position
    untrained_loss: float


@dataclass
class _Regression:
    """Out-of-fold fits at every site for the trained model and both controls."""

    data: BeliefDataset
    fits: dict[str, CrossValidatedFit]
    shuffled: dict[str, CrossValidatedFit]
    untrained: dict[str, CrossValidatedFit]
    scores: list[LayerScore]
    layers: dict[str, Any]  # _layers_vs_concat
    max_shuffled: float
    n_pairs: int  # shuffled-control pairs per fold
    folds: np.ndarray  # [n_sequences] fold of each sequence


def _process_stage(cfg: BeliefStudyConfig, progress: bool) -> _Process:
    """The process and its exact floor."""

    process = get_process(cfg.process, **cfg.process_params)
    floor = optimal_cross_entropy(process, cfg.model.context_length)
    sym_p = process.symbol_distribution()
    unigram = float(-(sym_p[sym_p > 0] * np.log(sym_p[sym_p > 0])).sum())
    _say(progress, f"{process.name}: {process.n_states} states, {process.n_symbols} symbols; "
         f"optimal loss {floor.mean():.4f} nats (no-context {unigram:.4f})")
    return _Process(process, floor, entropy_rate(process), unigram)


def _training_configs(cfg: BeliefStudyConfig, proc: _Process) -> tuple[GPTConfig, TrainConfig]:
    """``cfg.model`` and ``cfg.train`` with what the study sets: the vocabulary, the seed, the
    stopping loss (``stop_loss_ratio`` × the floor) and a warm-up no longer than the run."""
    gcfg = replace(cfg.model, vocab_size=proc.process.n_symbols)
    tcfg = replace(
        cfg.train,
        warmup_steps=min(cfg.train.warmup_steps, cfg.train.n_steps),
        seed=cfg.seed,
        stop_loss=cfg.stop_loss_ratio * float(proc.floor.mean()) if cfg.stop_loss_ratio else None,
    )
    return gcfg, tcfg


def _train_stage(cfg: BeliefStudyConfig, proc: _Process, device: str, out_dir: Path | None,
                 progress: bool) -> _Trained:
    """Model and training; checkpoints in ``out_dir/checkpoints/{init,final}`` when given."""

    gcfg, tcfg = _training_configs(cfg, proc)
    model = GPT(gcfg, seed=_seeds(cfg, tcfg)["model_init"]).to(device)
    untrained = copy.deepcopy(model).eval()  # the control: exactly the weights training starts from
    ckpt = out_dir / "checkpoints" if out_dir is not None else None
    if ckpt is not None:
        save_model(untrained, ckpt / "init", {"step": 0})
    hist = train_model(model, proc.process, tcfg, checkpoint_dir=ckpt, progress=progress)
    final_pp = np.asarray(hist.eval_loss_per_position[-1])
    eval_tokens = heldout_tokens(proc.process, gcfg.context_length + 1, tcfg)  # training's batch
    untrained_loss = float(evaluate(untrained, eval_tokens)[0].mean())
    floor = proc.floor.mean()
    _say(progress, f"{hist.steps_run} steps ({hist.stop_reason}); final held-out loss "
         f"{final_pp.mean():.4f} vs floor {floor:.4f} "
         f"(ratio {final_pp.mean() / floor:.4f}); untrained {untrained_loss:.4f}")
    return _Trained(model, untrained, gcfg, tcfg, hist, final_pp, untrained_loss)


def _regression_stage(cfg: BeliefStudyConfig, proc: _Process, trained: _Trained,
                      progress: bool) -> _Regression:
    """Regression onto beliefs at every site, with the shuffled and untrained controls."""
    seeds = _seeds(cfg, trained.tcfg)
    gcfg = trained.gcfg
    data = belief_dataset(
        proc.process, gcfg.context_length, max_sequences=cfg.max_regression_sequences,
        seed=seeds["regression_sequences"],
    )
    # Folds of whole sequences: each sequence is held out once, its (sequence, position)
    # samples scored by the fit on the other folds. Short prefixes are shared with training
    # sequences; the long ones are "unseen" (no training sequence contains them).
    fold_rng = np.random.default_rng(seeds["split"])
    folds = fold_rng.permutation(len(data.sequences)) % cfg.n_folds
    n_pairs = max(20_000, 2 * data.n_rows)  # fitting error of the control ~ d / n_pairs
    names = gcfg.hook_names
    _say(progress, f"regression on {data.n_rows} prefixes of {len(data.sequences)} sequences "
         f"({cfg.n_folds}-fold; {'exact' if data.exact else 'sampled'} weights)")
    width = gcfg.d_model * len(names)
    projection = np.random.default_rng(seeds["projection"]).normal(size=(width, gcfg.d_model))
    projection = (projection / np.sqrt(gcfg.d_model)).astype(np.float32)
    sites = _site_features(residual_rows(trained.model, data), names, projection)
    sites_untrained = _site_features(residual_rows(trained.untrained, data), names, projection)
    fits = _regress_all(sites, data, folds, cfg, desc="regression (trained)", progress=progress)
    shuf = _regress_all(sites, data, folds, cfg, shuffled_pairs=n_pairs,
                        desc="control (shuffled)", progress=progress)
    unt = _regress_all(sites_untrained, data, folds, cfg, desc="control (untrained)",
                       progress=progress)
    scores = [_layer_score(k, sites[k].shape[1], fits[k], unt[k], shuf[k]) for k in fits]
    return _Regression(data, fits, shuf, unt, scores, _layers_vs_concat(scores, names),
                       max(_nan_low(s.shuffled_r2_unseen) for s in scores), n_pairs, folds)


def _figure_data(cfg: BeliefStudyConfig, reg: _Regression) -> tuple[dict[str, Any], int]:
    """The points the simplex figure draws (unseen rows at the target site, seeded subset), and
    the number of unseen rows."""
    unseen = np.isfinite(reg.fits[TARGET_SITE].unseen_predictions[:, 0])
    test_idx = np.flatnonzero(unseen)
    plot_rng = np.random.default_rng(_seeds(cfg)["plot_subset"])
    if len(test_idx) > cfg.max_plot_points:
        test_idx = np.sort(plot_rng.choice(test_idx, cfg.max_plot_points, replace=False))

    def preds(fit: CrossValidatedFit) -> list[list[float]]:
        return np.round(fit.unseen_predictions[test_idx], 5).tolist()

    figure = {
        "rows": "out-of-fold predictions at prefixes no training sequence contains "
        "(seeded subset)",
        "beliefs": np.round(reg.data.beliefs[test_idx], 5).tolist(),
        "position": reg.data.position[test_idx].tolist(),
        "trained_layer": TARGET_SITE,
        "trained": preds(reg.fits[TARGET_SITE]),
        "untrained_layer": TARGET_SITE,
        "untrained": preds(reg.untrained[TARGET_SITE]),
        "shuffled_layer": TARGET_SITE,
        "shuffled": preds(reg.shuffled[TARGET_SITE]),
    }
    return figure, int(unseen.sum())


def _result(cfg: BeliefStudyConfig, proc: _Process, trained: _Trained, reg: _Regression,
            device: str, timings: dict[str, float]) -> BeliefStudyResult:
    """Assemble the result: scores, verdict against the targets, counts, seeds, versions."""
    figure_data, n_unseen = _figure_data(cfg, reg)
    hist, floor = trained.history, float(proc.floor.mean())
    final_loss = float(trained.final_pp.mean())
    ratio = final_loss / floor
    layers = reg.layers
    targets = {**_targets(ratio, next(s for s in reg.scores if s.layer == TARGET_SITE),
                          reg.max_shuffled), **_fold_spread(reg)}
    result = BeliefStudyResult(
        config=asdict(cfg),
        process=proc.facts(),
        optimal_loss_per_position=proc.floor.tolist(),
        optimal_loss=floor,
        unigram_loss=proc.unigram,
        training={**hist.to_dict(), "gpt_config": asdict(trained.gcfg),
                  "train_config": asdict(trained.tcfg), "stop_loss_ratio": cfg.stop_loss_ratio},
        final_loss=final_loss,
        final_loss_stderr=hist.eval_loss_stderr,
        final_loss_per_position=trained.final_pp.tolist(),
        loss_ratio=ratio,
        untrained_loss=trained.untrained_loss,
        regression=reg.scores,
        best_layer=layers["best_single_layer"],
        best_r2=layers["best_single_r2_unseen"],
        untrained_best_layer=layers["untrained_best_single_layer"],
        untrained_best_r2=layers["untrained_best_single_r2_unseen"],
        max_shuffled_r2=reg.max_shuffled,
        layers_vs_concat=layers,
        targets=targets,
        determinism=_determinism(device),
        counts={
            "regression_sequences": int(len(reg.data.sequences)),
            "regression_rows": reg.data.n_rows,
            "regression_folds": cfg.n_folds,
            "regression_rows_unseen": n_unseen,
            "heldout_weight_unseen": reg.fits[TARGET_SITE].unseen_weight_fraction,
            "shuffled_control_pairs_per_fold": reg.n_pairs,
            "regression_weights_exact": reg.data.exact,
            "training_tokens": hist.tokens_seen,
            "eval_sequences": cfg.train.eval_sequences,
            "parameters": sum(p.numel() for p in trained.model.parameters()),
        },
        seeds=_seeds(cfg, trained.tcfg),
        versions=_versions(),
        timings=timings,
        figure_data=figure_data,
    )
    result.summary = _summary(result)
    return result


def run_belief_study(
    config: BeliefStudyConfig | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> BeliefStudyResult:
    """Run process -> training -> regression (with controls). Checkpoints go to
    ``out_dir/checkpoints/{init,final}`` when ``out_dir`` is given (safetensors + JSON)."""
    cfg = config or BeliefStudyConfig()
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    with _deterministic(cfg.num_threads):
        device = cfg.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        t0 = time.perf_counter()
        proc = _process_stage(cfg, progress)
        timings["process"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        trained = _train_stage(cfg, proc, device, Path(out_dir) if out_dir is not None else None,
                               progress)
        timings["training"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        reg = _regression_stage(cfg, proc, trained, progress)
        timings["regression"] = time.perf_counter() - t0
        timings["total"] = time.perf_counter() - t_start
        return _result(cfg, proc, trained, reg, device, timings)
