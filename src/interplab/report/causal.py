"""HTML report of the causal truth study: one self-contained file, figures inline.

Reads a :class:`~interplab.studies.causal.CausalResult` (or its JSON dict) and draws the
dose–response of each probe direction beside its random-direction null, the side effects, the
patching map (layers × final tokens) and the attribution agreement table. It computes nothing:
every number comes from the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from interplab.report.html import figure_png, new_figure, plain_text, render


def _as_dict(result: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return result if isinstance(result, dict) else asdict(result)


def _figure_dose(r: dict[str, Any]) -> str:
    steering = r["steering"]
    fig, (ax, ax2) = new_figure((11, 3.8), 1, 2)
    for name, s in steering.items():
        label = next(c["label"] for c in r["comparison"] if c["probe"] == name)
        d, m = np.asarray(s["doses"]), s["summary"]
        ax.plot(d, m["mean"], "o-", ms=3, label=plain_text(label))
        ax.fill_between(d, m["lo"], m["hi"], alpha=0.2)
        ax2.plot(d, s["side_effects"]["kl_mean"], "o-", ms=3, label=plain_text(label))
    null = next(iter(steering.values()))["null"]
    ax.errorbar([null["dose"]], [null["mean"]], yerr=[[null["mean"] - min(null["values"])],
                                                      [max(null["values"]) - null["mean"]]],
                fmt="kx", capsize=4,
                label=f"{null.get('k', null.get('n_null'))} random directions (range)")
    ax.axhline(0, color="grey", lw=0.6)
    ax.set_xlabel("dose (class-mean gaps at each steered layer)")
    ax.set_ylabel("change of P(true) − P(false), intended direction")
    ax.set_title("Dose–response on held-out statements (95% CI)")
    ax.legend(fontsize=7)
    ax2.set_xlabel("dose")
    ax2.set_ylabel("KL(clean ‖ steered) at the answer (nats)")
    ax2.set_title("Side effect at the answer token")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    return figure_png(fig)


def _figure_patch(p: dict[str, Any]) -> str:
    grid = np.asarray(p["fraction_grid"] if p["fraction_grid"] is not None else p["grid"])
    fig, ax = new_figure((7, 5.5))
    lim = max(float(np.abs(grid).max()), 1e-9)
    im = ax.imshow(grid, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, origin="lower")
    ax.set_yticks(range(len(p["layers"])), [str(v) for v in p["layers"]])
    ax.set_xticks(range(len(p["offsets"])), [plain_text(f"{t}\n{o}") for t, o in
                                             zip(p["tokens_of_first_pair"], p["offsets"],
                                                 strict=True)], fontsize=7)
    ax.set_ylabel("layer (resid_post)")
    ax.set_xlabel("token (first pair) and offset from the end")
    ax.set_title("Fraction of the true − false gap restored by patching"
                 if p["fraction_grid"] is not None else "Mean effect of patching")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return figure_png(fig)


def write_causal_report(result: Any, path: str | Path) -> Path:
    r = _as_dict(result)
    return render("causal.html", path, r=r, dose_png=_figure_dose(r),
                  patch_png=_figure_patch(r["patching"]))
