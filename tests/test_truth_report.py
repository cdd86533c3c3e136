import base64
import csv
import io
import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from interplab.report.truth import write_truth_report
from interplab.studies.truth import TruthConfig, run_truth
from tests.conftest import skip_unless_strict

EVIL = "<script>alert('x')</script> & \"quotes\""


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("truth")
    path_csv = tmp / "evil.csv"
    with path_csv.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["statement", "label"])
        for i in range(60):
            writer.writerow([f"{EVIL} claim number {i} is {'right' if i % 2 else 'wrong'}.", i % 2])
    config = TruthConfig.make(model="tiny-gpt2", datasets=["cities", "neg_cities", str(path_csv)],
                         train_sets=[["cities"], ["evil"]], layers=[1, 2],
                         probes=["diffmean", "ccs"], max_per_dataset=60, n_boot=100)
    result = run_truth(config, progress=False)
    path = write_truth_report(result, tmp / "report.html")
    return path, result


def test_report_escapes_all_text(report):
    path, _ = report
    html = path.read_text(encoding="utf-8")
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(" in html
    assert "data:image/png;base64," in html
    assert "http://" not in html and "https://" not in html  # self-contained


def test_every_figure_is_a_non_blank_png(report):
    import matplotlib.image as mpimg

    path, result = report
    html = path.read_text(encoding="utf-8")
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    # by-layer per train set + heatmap per probe + PCA grid + one cross view
    assert len(uris) == len(result.train_sets) + len(result.probes) + 1 + len(result.pca["cross"])
    for uri in uris:
        img = mpimg.imread(io.BytesIO(base64.b64decode(uri)), format="png")
        assert img.shape[0] > 100 and img.shape[1] > 100
        assert np.asarray(img)[..., :3].std() > 0.02  # not a blank canvas


def test_report_answers_first_and_groups_findings(report):
    path, result = report
    html = path.read_text(encoding="utf-8")
    body = html[html.index("<body>"):]
    # the summary paragraph comes before any table, figure or section
    first = min(body.index(tag) for tag in ("<table", "<figure", "<h2"))
    assert body.index('class="summary"') < first
    assert result.summary[0][:40] in html
    # findings are rows of one table, not one callout box each
    assert 'class="note"' not in html
    assert "<h2>Findings</h2>" in html and "<h2>Controls that are off</h2>" in html
    for check in result.control_checks:
        assert check["comment"][:40] in html
    # the page states the split rule, centring and tokens it used
    assert "by entity" in html and "per-dataset" in html and "last token" in html


def test_report_renders_the_study_verdicts_without_recomputing(report, tmp_path):
    _, result = report
    row = next(v for v in result.verdicts if v["train"] == "cities" and v["test"] == "neg_cities")
    row["verdict"] = "weakly below chance"  # whatever the study decided is what the page says
    html = write_truth_report(result, tmp_path / "r.html").read_text(encoding="utf-8")
    transfers = html[html.index("<h2>Headline transfers</h2>"):]
    transfers = transfers[:transfers.index("</table>")]
    assert "weakly below chance" in transfers


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        exe = shutil.which(name)
        if exe:
            return exe
    return None


def test_report_renders_in_headless_chromium(report, tmp_path):
    exe = _chromium()
    if exe is None:
        skip_unless_strict("Chromium is not installed and the test set-up could not install it "
                    "(apt-get install chromium); the rendering check needs a real browser")
    path, _ = report
    probe = tmp_path / "probe.html"
    # Test-only instrumentation: after load, write each image's rendered size into the title.
    probe.write_text(path.read_text(encoding="utf-8").replace(
        "</body>",
        "<script>window.addEventListener('load',()=>{document.title=JSON.stringify("
        "[...document.images].map(i=>[i.naturalWidth,i.naturalHeight,i.getBoundingClientRect().width]))});"
        "</script></body>"), encoding="utf-8")
    out = subprocess.run(
        [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom",
         probe.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    m = re.search(r"<title>(.*?)</title>", out.stdout, re.S)
    assert m, out.stderr[-2000:]
    sizes = json.loads(m.group(1))
    assert len(sizes) >= 4
    assert all(w > 100 and h > 100 and shown > 100 for w, h, shown in sizes)


def test_report_keeps_the_users_matplotlib_backend(report, tmp_path):
    import matplotlib
    import matplotlib.pyplot as plt

    _, result = report
    old = matplotlib.get_backend()
    matplotlib.use("svg", force=True)  # stands for a notebook's own backend
    try:
        open_before = plt.get_fignums()
        html = write_truth_report(result, tmp_path / "r.html").read_text(encoding="utf-8")
        assert html.count("data:image/png;base64,") >= len(result.train_sets) + len(result.probes)
        assert matplotlib.get_backend() == "svg"
        assert plt.get_fignums() == open_before  # no pyplot figure left open
    finally:
        matplotlib.use(old, force=True)


def test_erasure_nulls_section_is_rendered_only_when_run(report, tmp_path):
    path, _ = report
    assert "Erasure and nulls" not in path.read_text(encoding="utf-8")
    config = TruthConfig.make(model="tiny-llama", datasets=["cities", "neg_cities"],
                         train_sets=[["cities"]], layers=[0, 3], probes=["diffmean", "logistic"],
                         controls=["shuffled"], max_per_dataset=60, n_boot=100, erasure_nulls=True)
    result = run_truth(config, progress=False)
    en = result.erasure_nulls
    assert en["train_set"] == "cities" and en["layer"] == result.best_layer["cities"]["logistic"]
    nulls = ["gaussian", "gaussian-mixture", "hypercube", "shuffled-tokens", "layer0", "reset",
             "random-init"]
    assert en["nulls"]["nulls_run"] == nulls and list(en["nulls"]["probes"]) == ["model", *nulls]
    for null in nulls:
        d = en["nulls"]["probes"][null]["logistic"]["model_minus_this"]
        assert d["lo"] <= d["value"] <= d["hi"]
    html = write_truth_report(result, tmp_path / "r.html").read_text(encoding="utf-8")
    assert f"Erasure and nulls (trained on cities, layer {en['layer']})" in html
    assert "Erasure checks (held-out)" in html and "model − this" in html
    assert "Nulls run: " + ", ".join(nulls) in html
    assert "harvested for these" in html and "at the chosen layer only" in html
    for alt in ("held-out probe accuracy per method", "probe accuracy per source"):
        assert re.search(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]{500,}" alt="' + alt, html)


@pytest.mark.parametrize("name", ["cost$_$", "a$x$b", "$", "price \\$5 $$"])
def test_plain_text_is_drawn_literally(name):
    from matplotlib.text import Text

    from interplab.report.html import plain_text

    drawn, is_math = Text(0, 0, plain_text(name))._preprocess_math(plain_text(name))
    assert (drawn, is_math) == (name, False)


def test_dollar_signs_in_a_dataset_name_reach_the_figures_as_text(tmp_path):
    """A dataset file called cost$_$.csv: matplotlib would parse `$_$` as (broken) math."""
    path_csv = tmp_path / "cost$_$.csv"
    with path_csv.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["statement", "label"])
        for i in range(60):
            writer.writerow([f"Item {i} costs ${i}.", i % 2])
    config = TruthConfig(model="tiny-gpt2", datasets=["cities", str(path_csv)],
                         train_sets=[["cost$_$"]], layers=[1], probes=["diffmean"],
                         max_per_dataset=60, n_boot=20)
    result = run_truth(config, progress=False)
    assert result.train_sets == ["cost$_$"]
    html = write_truth_report(result, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "cost$_$" in html and html.count("data:image/png;base64,") >= 3
