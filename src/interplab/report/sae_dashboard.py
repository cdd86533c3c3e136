"""Render SAE feature dashboards as one self-contained HTML file (jinja2, autoescaped)."""

from __future__ import annotations

import json
from pathlib import Path

from interplab.report.html import figure_png, new_figure, render
from interplab.sae.dashboard import DashboardData

__all__ = ["render_dashboard", "shown_token"]


def _histogram(counts: list[int], edges: list[float]) -> str | None:
    if not counts:
        return None
    fig, ax = new_figure((3.6, 1.8))
    ax.stairs(counts, edges, fill=True, color="#c0392b", alpha=0.8)
    ax.set_xlabel("activation (when > 0)", fontsize=8)
    ax.set_ylabel("tokens", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.spines[["top", "right"]].set_visible(False)
    return figure_png(fig)


def _shade(act: float, max_act: float) -> str:
    """Background colour for a token: white → red with the activation (a CSS value, not text)."""
    a = 0.0 if max_act <= 0 else max(0.0, min(1.0, act / max_act))
    return f"rgba(192, 57, 43, {a:.2f})"


def shown_token(token: str) -> str:
    """A token as the page shows it in lists: quoted, with whitespace and control characters
    visible as escapes (``"\\n"``) and every other character as itself (``"ч"``, not
    ``"\\u0447"``); the template escapes it for HTML."""
    return json.dumps(token, ensure_ascii=False)


def render_dashboard(data: DashboardData, path: str | Path) -> Path:
    """Write ``data`` to ``path`` as HTML: every token and label is escaped by the template."""
    features = []
    for f in data.features:
        contexts = []
        for c in f.top_contexts:
            excluded = c.get("excluded") or [False] * len(c["tokens"])
            contexts.append({
                "activation": c["activation"],
                "tokens": [{"text": t, "act": a, "bg": _shade(a, f.max_activation),
                            "centre": i == c["centre"], "excluded": x}
                           for i, (t, a, x) in enumerate(zip(c["tokens"], c["acts"], excluded,
                                                             strict=True))],
            })
        features.append({"f": f, "hist": _histogram(f.histogram_counts, f.histogram_edges),
                         "contexts": contexts,
                         "promoted": [(shown_token(t), v) for t, v in f.promoted],
                         "suppressed": [(shown_token(t), v) for t, v in f.suppressed]})
    identity = data.identity or {}
    return render("sae_dashboard.html", path, data=data, features=features,
                  mismatches=identity.get("mismatches", []), notes=identity.get("notes", []))
