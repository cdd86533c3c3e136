"""HTML report of a belief-state geometry study: one self-contained file, figures inline.

The top tells the finding: the verdict against the untrained control and the study's summary
(each number with its spread over folds and its control), then the headline figure: the
beliefs in the simplex, true and as each network decodes them. Reads a :class:`~interplab.studies.belief.BeliefStudyResult` (or its JSON dict)
and draws:

* the training loss against the optimal floor (and per context position);
* the true beliefs in the simplex beside the regression's predictions at the verdict's site (the
  concatenation of all layers) for the trained model, the untrained model and the shuffled-belief
  control, at prefixes no training sequence contains; every point is coloured by its true belief,
  so corresponding structure is visible across panels;
* R² and RMSE on unseen prefixes per site (each layer, the concatenation, and its random
  projection to one layer's width) with both controls.

It computes nothing beyond projecting points for display: targets, verdicts and every number come
from the result.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from interplab.report.html import figure_png, new_figure, plain_text, render


def _as_dict(result: Any) -> dict[str, Any]:
    return result if isinstance(result, dict) else result.to_dict()


def _figure_loss(r: dict[str, Any]) -> str:
    tr = r["training"]
    fig, (ax, ax2) = new_figure((11, 3.8), 1, 2)
    ax.plot(tr["train_steps"], tr["train_loss"], lw=0.8, alpha=0.6, label="train (fresh samples)")
    ax.plot(tr["eval_steps"], tr["eval_loss"], "o-", ms=3, label="held-out")
    ax.axhline(r["optimal_loss"], color="k", ls="--", lw=1, label="optimal floor")
    ratio_max = r["targets"]["loss_ratio_max"]
    ax.axhline(r["optimal_loss"] * ratio_max, color="k", ls=":", lw=0.8,
               label=f"target: floor × {ratio_max:g}")
    ax.axhline(r["unigram_loss"], color="grey", ls="-.", lw=0.8, label="no-context predictor")
    ax.axhline(r["untrained_loss"], color="tab:red", ls="-.", lw=0.8, label="untrained model")
    lo = r["optimal_loss"]
    hi = max(r["unigram_loss"], max(tr["eval_loss"][:1] or [lo]))
    ax.set_ylim(lo - 0.05 * (hi - lo) - 1e-3, hi + 0.1 * (hi - lo) + 1e-3)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats / symbol)")
    ax.set_title("Training loss vs the optimal floor")
    ax.legend(fontsize=7)
    pos = np.arange(1, len(r["optimal_loss_per_position"]) + 1)
    ax2.plot(pos, r["optimal_loss_per_position"], "k--", marker=".", label="optimal floor")
    ax2.plot(pos, r["final_loss_per_position"], "o-", ms=3, label="trained (held-out)")
    ax2.set_xlabel("symbols read (context position + 1)")
    ax2.set_ylabel("cross-entropy (nats)")
    ax2.set_title("Per-position loss after training")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    return figure_png(fig)


def _project(points: np.ndarray, ref: np.ndarray, n_states: int) -> tuple[np.ndarray, np.ndarray]:
    """2-D coordinates of ``points`` and of the simplex vertices. 3 states: the barycentric
    triangle; more: the top-2 principal axes of the true beliefs ``ref``."""
    if n_states == 3:
        verts = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2]])
        return points @ verts, verts
    mean = ref.mean(axis=0)
    _, _, vt = np.linalg.svd(ref - mean, full_matrices=False)
    axes = vt[:2].T
    if axes.shape[1] < 2:
        axes = np.pad(axes, ((0, 0), (0, 2 - axes.shape[1])))
    return (points - mean) @ axes, (np.eye(n_states) - mean) @ axes


def _colours(beliefs: np.ndarray) -> np.ndarray:
    n = beliefs.shape[1]
    if n == 3:
        palette = np.eye(3)
    else:
        import matplotlib

        palette = np.array(matplotlib.colormaps["tab10"].colors)[np.arange(n) % 10]
    return np.clip(np.nan_to_num(beliefs) @ palette, 0, 1)


def _figure_simplex(r: dict[str, Any]) -> str:
    fd = r["figure_data"]
    n_states = r["process"]["n_states"]
    truth = np.asarray(fd["beliefs"], dtype=float)
    if truth.size == 0:
        truth = np.zeros((0, n_states))
    colours = _colours(truth)
    scores = {s["layer"]: s for s in r["regression"]}
    panels = [
        ("true beliefs", truth),
        (f"trained, {fd['trained_layer']}\nunseen-prefix R² "
         f"{scores[fd['trained_layer']]['r2_unseen']:.3f}",
         np.asarray(fd["trained"], dtype=float).reshape(truth.shape)),
        (f"control: untrained, {fd['untrained_layer']}\n"
         f"unseen-prefix R² {scores[fd['untrained_layer']]['untrained_r2_unseen']:.3f}",
         np.asarray(fd["untrained"], dtype=float).reshape(truth.shape)),
        (f"control: shuffled beliefs, {fd['shuffled_layer']}\n"
         f"unseen-prefix R² {scores[fd['shuffled_layer']]['shuffled_r2_unseen']:.3f}",
         np.asarray(fd["shuffled"], dtype=float).reshape(truth.shape)),
    ]
    fig, axes = new_figure((16, 4.4), 1, 4)
    size = max(0.3, min(4.0, 3000 / max(len(truth), 1)))
    for ax, (title, pts) in zip(axes, panels, strict=True):
        if n_states == 2:
            pos = np.asarray(fd["position"], dtype=float) + 1
            jitter = np.random.default_rng(0).uniform(-0.25, 0.25, len(pos))
            ax.scatter(pts[:, 0], pos + jitter, s=size, c=colours, linewidths=0)
            ax.set_xlabel(plain_text(f"P({r['process']['states'][0]})"))
            ax.set_ylabel("symbols read")
            ax.axvline(0, color="k", lw=0.5)
            ax.axvline(1, color="k", lw=0.5)
        else:
            xy, verts = _project(pts, truth, n_states)
            loop = np.vstack([verts, verts[:1]]) if n_states == 3 else verts
            if n_states == 3:
                ax.plot(loop[:, 0], loop[:, 1], "k-", lw=0.6)
            else:
                ax.scatter(verts[:, 0], verts[:, 1], marker="x", c="k", s=20)
            for name, v in zip(r["process"]["states"], verts, strict=True):
                ax.annotate(plain_text(name), v, fontsize=8, ha="center", va="center",
                            xytext=(0, -9 if v[1] <= verts[:, 1].mean() else 8),
                            textcoords="offset points")
            ax.scatter(xy[:, 0], xy[:, 1], s=size, c=colours, linewidths=0)
            # Same frame in every panel (the simplex plus a margin), so panels compare directly;
            # predictions far outside the simplex are cut off rather than rescaling the panel.
            span = np.ptp(verts, axis=0).max()
            lo, hi = verts.min(axis=0) - 0.12 * span, verts.max(axis=0) + 0.12 * span
            ax.set_xlim(lo[0], hi[0])
            ax.set_ylim(lo[1], hi[1])
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
        ax.set_title(plain_text(title), fontsize=9)
    proj = "2-simplex" if n_states == 3 else ("P(first state) by position" if n_states == 2
                                             else "top-2 principal axes of the true beliefs")
    fig.suptitle(f"Beliefs over hidden states ({proj}); colour = true belief", fontsize=10)
    fig.tight_layout()
    return figure_png(fig)


def _figure_r2(r: dict[str, Any]) -> str:
    regs = r["regression"]
    labels = [plain_text(s["layer"].replace(".hook_", "\n")) for s in regs]
    x = np.arange(len(regs))
    w = 0.27
    fig, (ax, ax2) = new_figure((max(11.0, 2.4 * len(regs)), 4.0), 1, 2)
    ax.bar(x - w, [s["r2_unseen"] for s in regs], w, label="trained")
    ax.bar(x, [s["untrained_r2_unseen"] for s in regs], w, label="control: untrained model")
    ax.bar(x + w, [s["shuffled_r2_unseen"] for s in regs], w, label="control: shuffled beliefs")
    ax.axhline(r["targets"]["r2_unseen_min"], color="k", ls="--", lw=0.8, label="target R²")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("R² on unseen prefixes (probability-weighted)")
    low = np.nanmin([s["shuffled_r2_unseen"] for s in regs] + [0.0])
    ax.set_ylim(min(-0.1, low - 0.05), 1.05)
    ax.set_title("Linear decodability of beliefs (R²)")
    # RMSE on a log scale separates sites whose R² are all close to 1.
    ax2.bar(x - w, [s["rmse_unseen"] for s in regs], w, label="trained")
    ax2.bar(x, [s["untrained_rmse_unseen"] for s in regs], w, label="control: untrained model")
    ax2.bar(x + w, [s["shuffled_rmse_unseen"] for s in regs], w, label="control: shuffled beliefs")
    ax2.set_yscale("log")
    ax2.set_xticks(x, labels, fontsize=7)
    ax2.set_ylabel("RMSE on unseen prefixes (probability units, log scale)")
    ax2.set_title("Error of the decoded beliefs (RMSE)")
    handles, names = ax.get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return figure_png(fig)


def render_belief_report(result: Any, path: str | Path) -> Path:
    """Write the study's self-contained HTML report to ``path`` and return it (figures are drawn
    on ``Figure`` objects: matplotlib's backend is not changed)."""
    r = {"summary": [], **_as_dict(result)}  # results written before the summary existed
    figures = {"loss": _figure_loss(r), "simplex": _figure_simplex(r), "r2": _figure_r2(r)}
    return render("belief.html", path, r=r, figures=figures)


def summary_lines(result: Any) -> list[str]:
    """What ``interplab belief`` prints: training against the floor, regression against its
    controls, and which targets were met; then the study's summary."""
    t, tr = result.targets, result.training
    return [
        f"{tr['steps_run']} steps ({tr['stop_reason']}); loss {result.final_loss:.4f} vs floor "
        f"{result.optimal_loss:.4f} (ratio {result.loss_ratio:.4f}, untrained "
        f"{result.untrained_loss:.4f}); at {t['site']} on unseen prefixes: R² {t['r2_unseen']:.4f} "
        f"(untrained {t['untrained_r2_unseen']:.4f}), RMSE trained/untrained "
        f"{t['rmse_ratio']:.3f}; shuffled max R² {t['max_shuffled_r2']:.4f}; best single layer "
        f"R² {result.best_r2:.4f} at {result.best_layer}; targets met: loss {t['loss_met']}, "
        f"R² {t['r2_met']}, RMSE ratio {t['rmse_ratio_met']}, shuffled {t['shuffled_met']}; "
        f"{result.timings['total']:.0f} s", *(f"• {s}" for s in result.summary)]
