import base64
import csv
import io
import re

import numpy as np
import pytest

from interplab.report.truth import write_truth_report
from interplab.studies.truth import TruthConfig, run_truth
from tests.pages import check_tables_align, check_top_of_page

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
    # headline matrix + by-layer per train set + PCA grid + one cross view
    assert len(uris) == 1 + len(result.train_sets) + 1 + len(result.pca["cross"])
    for uri in uris:
        img = mpimg.imread(io.BytesIO(base64.b64decode(uri)), format="png")
        assert img.shape[0] > 100 and img.shape[1] > 100
        assert np.asarray(img)[..., :3].std() > 0.02  # not a blank canvas


def test_report_answers_first_and_groups_findings(report):
    path, result = report
    html = path.read_text(encoding="utf-8")
    body = html[html.index("<body>"):]
    # the summary (one bullet per finding), then the headline figure, before any table or section
    first = min(body.index(tag) for tag in ("<table", "<h2", "<details"))
    assert body.index('id="summary"') < body.index('id="headline"') < first
    summary = body[body.index('id="summary"'):body.index("</section>")]
    assert summary.count("<li>") == len(result.summary) <= 5
    assert result.summary[0][:40] in html
    assert "<h2>Every cell of the generalization matrix</h2>" in html
    assert "<h2>Controls that are off</h2>" in html
    for check in result.control_checks:
        assert check["comment"][:40] in html
    # the page states the split rule, centring and tokens it used
    assert "by entity" in html and "per-dataset" in html and "last token" in html


def _group_tables(html):
    """``{verdict: [row html, ...]}`` of the every-cell section's tables."""
    section = html[html.index("<h2>Every cell of the generalization matrix</h2>"):]
    section = section[:section.index("<h2>", 10)]
    groups = {}
    for block in section.split("<details")[1:]:
        verdict = re.search(r"<summary>([^:]+):", block).group(1).lower()
        table = block[block.index("<table"):block.index("</table>")]
        groups[verdict] = table.split("<tr>")[2:]  # the header row is the first
    return groups


def test_every_cell_is_listed_including_chance_ones(report):
    path, result = report
    html = path.read_text(encoding="utf-8")
    groups = _group_tables(html)
    assert sum(len(rows) for rows in groups.values()) == len(result.verdicts)
    for verdict in {v["verdict"] for v in result.verdicts}:
        assert len(groups[verdict]) == sum(v["verdict"] == verdict for v in result.verdicts)
    # chance cells are there, collapsed; the others open
    section = html[html.index("<h2>Every cell of the generalization matrix</h2>"):]
    for block in section.split("<details")[1:]:
        opened = block.startswith(" open")
        assert opened == (not block.startswith("><summary>Chance"))
    assert check_tables_align(html) >= 4


def test_report_renders_the_study_verdicts_without_recomputing(report, tmp_path):
    _, result = report
    row = next(v for v in result.verdicts if v["train"] == "cities" and v["test"] == "neg_cities")
    # whatever the study decided is what the page says
    row.update(verdict="weakly below chance", explained_by=["reset"], partly_explained_by=[])
    html = write_truth_report(result, tmp_path / "r.html").read_text(encoding="utf-8")
    (cell,) = [r for r in _group_tables(html)["weakly below chance"] if "cities → neg_cities" in r]
    assert "reset network (R)" in cell


def test_a_result_written_before_control_grading_still_renders(report, tmp_path):
    import copy

    _, result = report
    old = copy.deepcopy(result)
    old.in_distribution = []
    for v in old.verdicts:
        del v["explained_by"], v["partly_explained_by"]
    html = write_truth_report(old, tmp_path / "old.html").read_text(encoding="utf-8")
    assert "predates the graded in-distribution rows" in html
    assert sum(len(rows) for rows in _group_tables(html).values()) == len(old.verdicts)


def test_explaining_controls_are_lettered(report):
    from interplab.report.truth import _marks

    assert _marks({"explained_by": ["reset", "shuffled"], "partly_explained_by": ["random"]}) \
        == "RS(d)"
    assert _marks({"explained_by": [], "partly_explained_by": []}) == ""


def test_report_renders_in_headless_chromium(report, tmp_path):
    path, _ = report
    layout = check_top_of_page(path, tmp_path)
    assert len(layout["images"]) >= 4


def test_a_default_shaped_report_opens_with_its_answer(tmp_path):
    """Eight datasets, four training sets, four probes: the page that used to open with a wall of
    text and a 73-row table still shows its summary and headline figure on the first screen."""
    result = _default_shaped_result()
    path = write_truth_report(result, tmp_path / "report.html")
    check_top_of_page(path, tmp_path)
    assert check_tables_align(path.read_text(encoding="utf-8")) >= 5


def _default_shaped_result():
    """A saved-result stand-in with the demo's shape (8 test sets, 4 training sets, 4 probes)
    and five findings: every number on the page comes from it."""
    from interplab.studies.truth import DEFAULT_DATASETS, DEFAULT_TRAIN_SETS, TruthResult
    from interplab.studies.truth.wording import in_distribution, summary, verdicts

    probes = ["diffmean", "lda", "logistic", "ccs"]
    trains = ["+".join(t) for t in DEFAULT_TRAIN_SETS]
    tests = list(DEFAULT_DATASETS)
    layers = [0, 3, 6, 9]
    rng = np.random.default_rng(0)

    def entry(value):
        value = np.clip(value, 0.01, 0.99)
        return {"value": value.tolist(), "lo": (value - 0.06).tolist(),
                "hi": (value + 0.06).tolist(), "n": [200] * len(tests),
                "positive_rate": np.full_like(value, 0.5).tolist()}

    accuracy, heldout, validation, best_layer = {}, {}, {}, {}
    for key in trains:
        for probe in probes:
            base = 0.5 + rng.normal(0, 0.02, (len(layers), len(tests)))
            base[:, tests.index("smaller_than")] -= 0.3 * (key == "larger_than")
            base[:, [tests.index(t) for t in key.split("+")]] += 0.4
            accuracy.setdefault(key, {})[probe] = {
                "probe": entry(base), "shuffled": entry(0.5 + 0 * base),
                "random": entry(0.5 + 0 * base),
                "reset": entry(base if key == "larger_than" else 0.5 + 0 * base)}
            pooled = base[:, tests.index(key.split("+")[0])]
            heldout.setdefault(key, {})[probe] = {}
            for v in ("probe", "shuffled", "random", "reset"):
                value = (pooled if v == "probe" or (v == "reset" and key == "larger_than")
                         else 0.5 + 0 * pooled)
                heldout[key][probe][v] = {"value": value.tolist(),
                                          "lo": (value - 0.06).tolist(),
                                          "hi": (value + 0.06).tolist(), "n": 200}
            validation.setdefault(key, {})[probe] = {"value": pooled.tolist(), "n": 200}
            best_layer.setdefault(key, {})[probe] = 6
    scored = {k: {t: {"rows": "all rows", "n": 200, "twins_left_out": 0} for t in tests}
              for k in trains}
    rows = verdicts(accuracy, best_layer, trains, tests, layers, scored)
    own = in_distribution(heldout, validation, best_layer, layers)
    pca = {"layer": 6, "cross": [], "own": {t: {"x": [0.0, 1.0], "y": [1.0, 0.0], "label": [0, 1],
                                               "explained": [0.3, 0.2]} for t in tests}}
    likelihood = {"per_dataset": {t: {"r_logprob_label": 0.1, "r_lo": 0.0, "r_hi": 0.2, "n": 200,
                                      "mean_logprob_true": -20.0, "mean_logprob_false": -21.0}
                                  for t in tests},
                  "baseline": {k: {"test": {t: {"value": 0.5, "lo": 0.45, "hi": 0.55, "n": 200}
                                            for t in tests}} for k in trains},
                  "probe_logprob_r": {}}
    return TruthResult(
        config={"controls": ["shuffled", "random", "reset"], "run": {"seed": 0}},
        versions={"interplab": "test"}, model={"name": "model", "architecture": "llama",
                                               "n_layers": 10, "d_model": 64},
        reset_model=None, datasets=[], layers=layers, probes=probes, train_sets=trains,
        test_sets=tests, accuracy=accuracy, heldout=heldout, validation=validation,
        best_layer=best_layer, scored=scored,
        method={"split": {"fractions": [0.6, 0.2, 0.2], "rules": {}}, "centering": "per-dataset",
                "centering_description": "", "tokens": "last token", "layer_selection": "",
                "targets": "", "multiple_comparisons": ""},
        verdicts=rows, control_checks=[], summary=summary("model", rows, [], own),
        likelihood=likelihood, pca=pca, notes=[], timings={"total_s": 1.0},
        in_distribution=own)


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
    config = TruthConfig.make(model="tiny-gpt2", datasets=["cities", str(path_csv)],
                         train_sets=[["cost$_$"]], layers=[1], probes=["diffmean"],
                         max_per_dataset=60, n_boot=100)
    result = run_truth(config, progress=False)
    assert result.train_sets == ["cost$_$"]
    html = write_truth_report(result, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "cost$_$" in html and html.count("data:image/png;base64,") >= 3
