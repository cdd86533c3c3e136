"""Shared pieces of interplab's HTML reports: inline PNG figures and an escaping renderer.

Every report is one self-contained file: figures are base64 PNGs inside ``<img>`` tags, styles
are inline, nothing is fetched from a network. Templates are rendered by jinja2 with autoescape
on, so any text that came from data (statements, corpus text, file names) is escaped.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import jinja2

from interplab.fileio import atomic_write_text

TEMPLATES = Path(__file__).parent / "templates"


def new_figure(figsize: tuple[float, float], nrows: int = 1, ncols: int = 1,
               **subplots: Any) -> tuple[Any, Any]:
    """A ``matplotlib.figure.Figure`` and its axes (as ``plt.subplots`` returns them), made
    without pyplot: the global backend and pyplot's list of open figures are left alone, so
    rendering a report in a notebook does not change how the notebook draws."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **subplots)


def plain_text(value: Any) -> str:
    """``value`` as text matplotlib draws literally. matplotlib reads text between two ``$`` as
    math: a dataset called ``cost$_$`` makes drawing fail, and ``a$x$`` is typeset in italics.
    Every ``$`` is escaped (``\\$``, drawn as ``$``). Use it on every string from data or
    configuration that reaches a figure: titles, axis labels, legend entries, tick labels and
    annotations."""
    return str(value).replace("$", "\\$")


def figure_png(fig: Any, dpi: int = 110) -> str:
    """Encode a matplotlib figure (from :func:`new_figure`) as a ``data:image/png;base64,...``
    URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,  # every template, whatever its extension
        undefined=jinja2.StrictUndefined,
    )
    env.filters["pct"] = lambda v: "–" if v is None or v != v else f"{100 * v:.0f}%"
    env.filters["f2"] = lambda v: "–" if v is None or v != v else f"{v:.2f}"
    env.filters["f"] = lambda v, nd=4: "n/a" if v is None or v != v else f"{v:.{nd}f}"
    env.filters["ptext"] = p_text
    env.filters["qtext"] = q_text
    return env


def p_text(cell: dict[str, Any]) -> str:
    """A tested cell's raw p-value (keys ``p``, ``at_floor`` and ``k`` or ``p_floor``), at its
    floor as an upper bound: "p ≤ 0.048 (floor, k = 20)"."""
    from interplab.controls.pvalues import format_p

    if "k" in cell:
        return format_p(cell["p"], at_floor=cell.get("at_floor", False), k=cell["k"])
    return format_p(cell["p"], at_floor=cell.get("at_floor", False))


def q_text(cell: dict[str, Any]) -> str:
    """A tested cell's corrected q-value (keys ``q``, ``q_bound``): "q = 0.012" or "q ≤ 0.048"."""
    from interplab.controls.pvalues import format_p

    return format_p(cell.get("q"), at_floor=cell.get("q_bound", False), name="q")


def render(template: str, path: str | Path, **context: Any) -> Path:
    """Render ``template`` with ``context`` to ``path`` (written atomically)."""
    html = environment().get_template(template).render(**context)
    return atomic_write_text(path, html)
