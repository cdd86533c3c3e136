"""Belief-state geometry study: process -> toy transformer -> regression onto exact beliefs.

``run_belief_study(BeliefStudyConfig(...))`` trains a small GPT on sequences sampled from a hidden
Markov process, then regresses its residual stream (every layer, and all layers concatenated) onto
the exact Bayesian belief over hidden states, weighted by prefix probability, and scores the fit on
held-out sequences (k-fold cross-validation over whole sequences). Two controls sit beside every number:

* shuffled beliefs: the same regression fitted on activations and beliefs drawn independently
  from each fold's training rows' weighted distribution (scored against the true held-out
  beliefs), which should give R² ≈ 0;
* untrained transformer: the same pipeline on the same architecture at its random initialisation
  (the very weights training started from), which shows how much comes from the architecture and
  the input tokens alone.

The result is a JSON-serialisable dataclass; figures are drawn by :mod:`interplab.report.belief`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import platform
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from interplab.errors import InterplabError

TARGET_LOSS_RATIO = 1.02  # final loss within 2 % of the optimal floor
TARGET_R2 = 0.9  # held-out R² at the best layer (or the concatenation)
TARGET_SHUFFLED_R2 = 0.05  # the shuffled-belief control must stay at or below this


@dataclass
class BeliefStudyConfig:
    """Everything that determines a run.

    Defaults (Mess3, x = 0.05, alpha = 0.85) are chosen to learn quickly on a shared 2-core CPU:
    the architecture of the belief-geometry paper (4 layers, d_model 64, 1 head, d_mlp 256,
    context 10) already reaches the loss floor within ~0.5 % after a few hundred steps of 256
    sequences, so the step budget is spent on sharpening the fine (fractal) structure rather than
    on a bigger model. ``num_threads = 1``: these matrices are tiny, and on a shared 2-core machine
    one thread measured ~4x faster per step than two (thread synchronisation dominates).
    """

    process: str = "mess3"
    process_params: dict[str, float] = field(default_factory=dict)
    context_length: int = 10
    n_layers: int = 4
    d_model: int = 64
    n_heads: int = 1
    d_mlp: int = 256
    n_steps: int = 1500
    batch_size: int = 256
    lr: float = 3e-3
    warmup_steps: int = 100
    eval_every: int = 100
    eval_sequences: int = 8192
    checkpoint_every: int = 0  # extra checkpoints every N steps (init and final: whenever out_dir)
    max_regression_sequences: int = 65536  # enumerate all sequences (exact weights) up to this
    n_folds: int = 5  # cross-validation folds of whole sequences
    ridge: float = 0.0
    max_plot_points: int = 8000
    seed: int = 0
    device: str = "auto"
    num_threads: int = 1  # 0 = leave torch's setting alone

    def __post_init__(self) -> None:
        if self.n_folds < 2:
            raise InterplabError("n_folds must be >= 2 (each sequence is held out once), e.g. 5")
        if self.context_length < 1:
            raise InterplabError("context_length must be >= 1")
        if self.max_plot_points < 0 or self.num_threads < 0:
            raise InterplabError("max_plot_points and num_threads must be >= 0")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BeliefStudyConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise InterplabError(f"unknown BeliefStudyConfig keys: {sorted(unknown)}")
        return cls(**data)


@dataclass
class LayerScore:
    """Held-out regression scores for one residual-stream site, with both controls beside them.

    R² is pooled over belief coordinates and weighted by prefix probability; RMSE is in
    probability units. All are out-of-fold, pooled over folds of whole sequences: ``r2`` /
    ``rmse`` over every (held-out sequence, position); ``r2_unseen`` only over prefixes that no
    training sequence of the fold contains; ``r2_train`` is the in-sample R² (mean over folds).
    """

    layer: str
    r2: float
    rmse: float
    r2_train: float
    r2_unseen: float
    shuffled_r2: float
    shuffled_rmse: float
    untrained_r2: float
    untrained_rmse: float
    untrained_r2_unseen: float


@dataclass
class BeliefStudyResult:
    """Config, process facts, training curve vs optimal floor, regression scores with controls,
    counts, seeds, versions, timings, and the points the simplex figure draws."""

    config: dict[str, Any]
    process: dict[str, Any]
    optimal_loss_per_position: list[float]
    optimal_loss: float
    unigram_loss: float
    training: dict[str, Any]
    final_loss: float
    final_loss_stderr: float
    final_loss_per_position: list[float]
    loss_ratio: float
    untrained_loss: float
    regression: list[LayerScore]
    best_layer: str
    best_r2: float
    untrained_best_layer: str
    untrained_best_r2: float
    max_shuffled_r2: float
    targets: dict[str, Any]
    counts: dict[str, Any]
    seeds: dict[str, int]
    versions: dict[str, str]
    timings: dict[str, float]
    figure_data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=True)

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(p)
        return p

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BeliefStudyResult:
        d = dict(data)
        d["regression"] = [LayerScore(**r) for r in d["regression"]]
        return cls(**d)

    @classmethod
    def load(cls, path: str | Path) -> BeliefStudyResult:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def score(self, layer: str) -> LayerScore:
        for r in self.regression:
            if r.layer == layer:
                return r
        raise InterplabError(f"no regression for layer {layer!r}")


def _versions() -> dict[str, str]:
    import torch

    import interplab

    return {
        "interplab": interplab.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _say(progress: bool, msg: str) -> None:
    if progress:
        from rich.console import Console

        Console(stderr=True).print(f"[bold cyan]belief[/] {msg}", highlight=False)


def _regress_all(
    resid: np.ndarray, names: list[str], data: Any, folds: np.ndarray, cfg: BeliefStudyConfig,
    shuffled_pairs: int = 0, desc: str = "regression", progress: bool = False,
) -> dict[str, Any]:
    """Cross-validated fits at every site and at all sites concatenated: name -> fit.

    ``shuffled_pairs > 0`` turns this into the shuffled-belief control."""
    from tqdm.auto import tqdm

    from interplab.compmech.regression import cross_validated_fit

    out = {}
    for li in tqdm([*range(len(names)), None], desc=desc, disable=not progress, unit="site"):
        x = resid.transpose(1, 0, 2).reshape(resid.shape[1], -1) if li is None else resid[li]
        out["concat" if li is None else names[li]] = cross_validated_fit(
            x, data, folds, ridge=cfg.ridge, shuffled_pairs_per_fold=shuffled_pairs,
            seed=cfg.seed + 3,
        )
    return out


def run_belief_study(
    config: BeliefStudyConfig | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> BeliefStudyResult:
    """Run process -> training -> regression (with controls). Checkpoints go to
    ``out_dir/checkpoints/{init,final}`` when ``out_dir`` is given (safetensors + JSON)."""
    import torch

    from interplab.compmech.beliefs import entropy_rate, optimal_cross_entropy
    from interplab.compmech.presets import get_process
    from interplab.compmech.regression import belief_dataset, residual_rows
    from interplab.compmech.train import TrainConfig, evaluate, train_model
    from interplab.compmech.transformer import GPT, GPTConfig, save_model

    cfg = config or BeliefStudyConfig()
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    old_threads = torch.get_num_threads()
    limits = contextlib.ExitStack()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
        try:  # numpy's BLAS too: the regression's float64 Grams were ~4x faster on one thread
            from threadpoolctl import threadpool_limits  # installed with scikit-learn

            limits.enter_context(threadpool_limits(cfg.num_threads))
        except ImportError:  # pragma: no cover
            pass
    try:
        device = cfg.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"

        # ---- process and its exact floor
        t0 = time.perf_counter()
        process = get_process(cfg.process, **cfg.process_params)
        floor = optimal_cross_entropy(process, cfg.context_length)
        h_mu = entropy_rate(process)
        sym_p = process.symbol_distribution()
        unigram = float(-(sym_p[sym_p > 0] * np.log(sym_p[sym_p > 0])).sum())
        timings["process"] = time.perf_counter() - t0
        _say(progress, f"{process.name}: {process.n_states} states, {process.n_symbols} symbols; "
             f"optimal loss {floor.mean():.4f} nats (no-context {unigram:.4f})")

        # ---- model and training
        gcfg = GPTConfig(
            vocab_size=process.n_symbols,
            context_length=cfg.context_length,
            n_layers=cfg.n_layers,
            d_model=cfg.d_model,
            n_heads=cfg.n_heads,
            d_mlp=cfg.d_mlp,
        )
        tcfg = TrainConfig(
            n_steps=cfg.n_steps,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            warmup_steps=min(cfg.warmup_steps, cfg.n_steps),
            seed=cfg.seed,
            eval_every=cfg.eval_every,
            eval_sequences=cfg.eval_sequences,
            checkpoint_every=cfg.checkpoint_every,
        )
        torch.manual_seed(cfg.seed)
        model = GPT(gcfg).to(device)
        untrained = copy.deepcopy(model).eval()  # the control: exactly the weights training starts from
        ckpt = Path(out_dir) / "checkpoints" if out_dir is not None else None
        if ckpt is not None:
            save_model(untrained, ckpt / "init", {"step": 0})
        t0 = time.perf_counter()
        hist = train_model(model, process, tcfg, checkpoint_dir=ckpt, progress=progress)
        timings["training"] = time.perf_counter() - t0
        final_pp = np.asarray(hist.eval_loss_per_position[-1])
        eval_rng = np.random.default_rng([cfg.seed, 1])  # the same held-out batch training used
        eval_tokens = torch.from_numpy(
            process.sample(cfg.eval_sequences, cfg.context_length + 1, seed=eval_rng)
        )
        untrained_loss = float(evaluate(untrained, eval_tokens)[0].mean())
        _say(progress, f"final held-out loss {final_pp.mean():.4f} vs floor {floor.mean():.4f} "
             f"(ratio {final_pp.mean() / floor.mean():.4f}); untrained {untrained_loss:.4f}")

        # ---- regression onto beliefs, with controls
        t0 = time.perf_counter()
        data = belief_dataset(
            process, cfg.context_length, max_sequences=cfg.max_regression_sequences, seed=cfg.seed
        )
        # Folds of whole sequences: each sequence is held out once, its (sequence, position)
        # samples scored by the fit on the other folds. Short prefixes are shared with training
        # sequences; the long ones are "unseen" (no training sequence contains them).
        fold_rng = np.random.default_rng([cfg.seed, 2])
        folds = fold_rng.permutation(len(data.sequences)) % cfg.n_folds
        n_pairs = max(20_000, 2 * data.n_rows)  # fitting error of the control ~ d / n_pairs
        names = gcfg.hook_names
        _say(progress, f"regression on {data.n_rows} prefixes of {len(data.sequences)} sequences "
             f"({cfg.n_folds}-fold; {'exact' if data.exact else 'sampled'} weights)")
        res_trained = residual_rows(model, data)
        res_untrained = residual_rows(untrained, data)
        fits = _regress_all(res_trained, names, data, folds, cfg, desc="regression (trained)",
                            progress=progress)
        shuf = _regress_all(res_trained, names, data, folds, cfg, shuffled_pairs=n_pairs,
                            desc="control (shuffled)", progress=progress)
        unt = _regress_all(res_untrained, names, data, folds, cfg, desc="control (untrained)",
                           progress=progress)
        timings["regression"] = time.perf_counter() - t0
        scores = [
            LayerScore(
                layer=k,
                r2=fits[k].r2,
                rmse=fits[k].rmse,
                r2_train=fits[k].r2_train,
                r2_unseen=fits[k].r2_unseen,
                shuffled_r2=shuf[k].r2,
                shuffled_rmse=shuf[k].rmse,
                untrained_r2=unt[k].r2,
                untrained_rmse=unt[k].rmse,
                untrained_r2_unseen=unt[k].r2_unseen,
            )
            for k in fits
        ]
        best = max(scores, key=lambda s: s.r2)
        unt_best = max(scores, key=lambda s: s.untrained_r2)
        max_shuf = max(s.shuffled_r2 for s in scores)

        # ---- the points the simplex figure draws (held-out rows, seeded subset)
        unseen = np.isfinite(fits[best.layer].unseen_predictions[:, 0])
        test_idx = np.flatnonzero(unseen)
        plot_rng = np.random.default_rng([cfg.seed, 4])
        if len(test_idx) > cfg.max_plot_points:
            test_idx = np.sort(plot_rng.choice(test_idx, cfg.max_plot_points, replace=False))

        def preds(fit: Any) -> list[list[float]]:
            return np.round(fit.unseen_predictions[test_idx], 5).tolist()

        figure_data = {
            "rows": "out-of-fold predictions at prefixes no training sequence contains "
            "(seeded subset)",
            "beliefs": np.round(data.beliefs[test_idx], 5).tolist(),
            "position": data.position[test_idx].tolist(),
            "trained_layer": best.layer,
            "trained": preds(fits[best.layer]),
            "untrained_layer": unt_best.layer,
            "untrained": preds(unt[unt_best.layer]),
            "shuffled_layer": best.layer,
            "shuffled": preds(shuf[best.layer]),
        }

        final_loss = float(final_pp.mean())
        ratio = final_loss / float(floor.mean())
        targets = {
            "loss_ratio_max": TARGET_LOSS_RATIO,
            "loss_met": bool(ratio <= TARGET_LOSS_RATIO),
            "r2_min": TARGET_R2,
            "r2_met": bool(best.r2 >= TARGET_R2),
            "shuffled_r2_max": TARGET_SHUFFLED_R2,
            "shuffled_met": bool(max_shuf <= TARGET_SHUFFLED_R2),
        }
        timings["total"] = time.perf_counter() - t_start
        return BeliefStudyResult(
            config=asdict(cfg),
            process={
                "name": process.name,
                "n_states": process.n_states,
                "n_symbols": process.n_symbols,
                "symbols": list(process.symbols),
                "states": list(process.states),
                "stationary": process.stationary_distribution().tolist(),
                "entropy_rate": h_mu,
                "unifilar": process.is_unifilar,
                "transitions": process.transitions.tolist(),
            },
            optimal_loss_per_position=floor.tolist(),
            optimal_loss=float(floor.mean()),
            unigram_loss=unigram,
            training={**hist.to_dict(), "gpt_config": asdict(gcfg), "train_config": asdict(tcfg)},
            final_loss=final_loss,
            final_loss_stderr=hist.eval_loss_stderr,
            final_loss_per_position=final_pp.tolist(),
            loss_ratio=ratio,
            untrained_loss=untrained_loss,
            regression=scores,
            best_layer=best.layer,
            best_r2=best.r2,
            untrained_best_layer=unt_best.layer,
            untrained_best_r2=unt_best.untrained_r2,
            max_shuffled_r2=max_shuf,
            targets=targets,
            counts={
                "regression_sequences": int(len(data.sequences)),
                "regression_rows": data.n_rows,
                "regression_folds": cfg.n_folds,
                "regression_rows_unseen": int(unseen.sum()),
                "shuffled_control_pairs_per_fold": n_pairs,
                "regression_weights_exact": data.exact,
                "training_tokens": hist.tokens_seen,
                "eval_sequences": cfg.eval_sequences,
                "parameters": sum(p.numel() for p in model.parameters()),
            },
            seeds={
                "model_init": cfg.seed,
                "training_data": cfg.seed,
                "split": cfg.seed,
                "shuffle": cfg.seed + 3,
                "plot_subset": cfg.seed,
            },
            versions=_versions(),
            timings=timings,
            figure_data=figure_data,
        )
    finally:
        limits.close()
        if cfg.num_threads:
            torch.set_num_threads(old_threads)
