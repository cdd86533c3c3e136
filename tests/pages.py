"""Checks of report pages: tables whose headers line up with their cells, and the page in a
real browser (headless Chromium at a laptop viewport).

``table_shapes`` counts the header and data cells of every table row (colspans included);
``page_layout`` asks Chromium where elements land (``getBoundingClientRect`` after load, written
into a data attribute by a test-only script and read back from ``--dump-dom``);
``screenshot`` renders the first screen to a PNG; ``check_top_of_page`` does both for a report
and checks that its summary and headline figure are above the fold, with the figure's pixels
on screen. Without Chromium the calling test is skipped (failed under
``INTERPLAB_STRICT_TESTS=1``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np

from tests.conftest import skip_unless_strict

VIEWPORT = (1366, 768)  # a typical laptop screen
# Of the headline figure, at least this many pixels must show on the first screen
MIN_VISIBLE_FIGURE = 200

_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--hide-scrollbars", "--virtual-time-budget=5000"]


def chromium() -> str:
    """The Chromium executable, or the test is skipped (failed in strict mode)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        exe = shutil.which(name)
        if exe:
            return exe
    skip_unless_strict("Chromium is not installed and the test set-up could not install it "
                       "(apt-get install chromium); the rendering check needs a real browser")
    raise AssertionError("unreachable")  # skip_unless_strict raises


def _run(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    w, h = VIEWPORT
    return subprocess.run([chromium(), *_FLAGS, f"--user-data-dir={profile}",
                           f"--window-size={w},{h}", *args],
                          capture_output=True, text=True, timeout=180)


def page_layout(html: Path, selectors: dict[str, str], tmp: Path) -> dict:
    """``{"viewport": [w, h], "boxes": {name: {"top", "bottom", "left", "right", "height"} or
    None}, "images": [[natural w, natural h, shown w], ...]}`` of ``html`` rendered at
    ``VIEWPORT``; ``selectors`` maps names to CSS selectors (the first match is measured)."""
    probe = tmp / f"layout-{html.name}"
    script = (
        "<script>window.addEventListener('load',()=>{const o={viewport:[innerWidth,innerHeight],"
        "boxes:{},images:[...document.images].map(i=>[i.naturalWidth,i.naturalHeight,"
        "i.getBoundingClientRect().width])};for(const [k,s] of Object.entries("
        + json.dumps(selectors) + ")){const e=document.querySelector(s);"
        "const b=e&&e.getBoundingClientRect();o.boxes[k]=b?{top:b.top,bottom:b.bottom,"
        "left:b.left,right:b.right,height:b.height}:null;}"
        "document.body.setAttribute('data-layout',JSON.stringify(o));});</script></body>")
    probe.write_text(html.read_text(encoding="utf-8").replace("</body>", script),
                     encoding="utf-8")
    out = _run(["--dump-dom", probe.as_uri()], tmp / "profile")
    m = re.search(r'data-layout="([^"]*)"', out.stdout)
    assert m, f"Chromium returned no layout: {out.stderr[-2000:]}"
    return json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def screenshot(html: Path, png: Path, tmp: Path) -> np.ndarray:
    """The first screen of ``html`` at ``VIEWPORT`` as a PNG file and an ``[h, w, 3]`` array."""
    import matplotlib.image as mpimg

    out = _run([f"--screenshot={png}", html.as_uri()], tmp / "profile")
    assert png.is_file(), f"Chromium wrote no screenshot: {out.stderr[-2000:]}"
    return np.asarray(mpimg.imread(png))[..., :3]


def check_top_of_page(html: Path, tmp: Path) -> dict:
    """The report's ``#summary`` and ``#headline`` figure both start on the first screen, the
    summary first, and at least ``MIN_VISIBLE_FIGURE`` pixel rows of the figure's image show
    there, drawn (checked in the screenshot, not only in the layout). Returns the layout."""
    layout = page_layout(html, {"summary": "#summary", "headline": "#headline",
                                "image": "#headline img"}, tmp)
    w, h = VIEWPORT
    # The page area can be shorter than the window (the browser's own bars take their part,
    # as on a real laptop): the fold is the shorter of the two.
    assert layout["viewport"][0] == w and 0.75 * h <= layout["viewport"][1] <= h, layout
    fold = layout["viewport"][1]
    summary, headline, image = (layout["boxes"][k] for k in ("summary", "headline", "image"))
    assert summary and headline and image, f"no #summary, #headline or figure image: {layout}"
    assert 0 <= summary["top"] < summary["bottom"] <= headline["top"], layout
    assert image["top"] + MIN_VISIBLE_FIGURE <= fold, (
        f"the headline figure starts at {image['top']:.0f} px; less than "
        f"{MIN_VISIBLE_FIGURE} px of it is above the fold at {fold} px")
    assert image["height"] >= MIN_VISIBLE_FIGURE, layout
    assert all(nw > 100 and nh > 100 and shown > 100 for nw, nh, shown in layout["images"])
    pixels = screenshot(html, tmp / f"{html.stem}.png", tmp)
    assert pixels.shape[:2] == (h, w), pixels.shape
    shown = pixels[int(image["top"]):fold, int(image["left"]):int(image["right"])]
    assert shown.std() > 0.05, "the headline figure's part of the first screen is blank"
    return layout


class _Tables(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        # per table, per row, per column: (tag, left-aligned), left meaning class "l"
        self.tables: list[list[list[tuple[str, bool]]]] = []
        self.open: list[list[list[tuple[str, bool]]]] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "table":
            self.open.append([])
        elif tag == "tr" and self.open:
            self.open[-1].append([])
        elif tag in ("th", "td") and self.open and self.open[-1]:
            a = dict(attrs)
            left = "l" in (a.get("class") or "").split()
            self.open[-1][-1].extend([(tag, left)] * int(a.get("colspan") or 1))

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self.open:
            self.tables.append(self.open.pop())


def table_shapes(html: str) -> list[list[list[tuple[str, bool]]]]:
    """Every table of ``html``: per row, for each column it fills, the cell's tag (``th`` or
    ``td``) and whether it is left-aligned (class ``l``)."""
    parser = _Tables()
    parser.feed(html)
    assert not parser.open, "a table is not closed"
    return parser.tables


def check_tables_align(html: str) -> int:
    """Every table's header row has as many columns as each of its data rows, and each header is
    aligned (left or right) as the cells under it; returns how many tables were checked."""
    tables = table_shapes(html)
    for i, rows in enumerate(tables):
        header = [r for r in rows if r and all(tag == "th" for tag, _ in r)]
        body = [r for r in rows if any(tag == "td" for tag, _ in r)]
        assert len(header) <= 1, f"table {i}: {len(header)} header rows"
        widths = {len(r) for r in body} | {len(r) for r in header}
        assert len(widths) <= 1, f"table {i}: rows of {sorted(widths)} columns: {rows[:3]}"
        for row in body:
            for col, ((_, left), head) in enumerate(zip(row, header[0] if header else row,
                                                        strict=True)):
                assert left == head[1], (
                    f"table {i}, column {col}: the header is {'left' if head[1] else 'right'}-"
                    f"aligned, a cell under it {'left' if left else 'right'}-aligned")
    return len(tables)
