"""The measured tables in docs/ against the result files they quote (docs/results/*.json).

Each table row the docs print is rebuilt here from the committed JSON, formatted as the doc
formats it, and must appear as a line of the doc (for tables with a column of words at the end,
the row up to that column). Editing a number in a doc, or replacing a result file with another
run, fails this test; so does a result file whose config is not the command the doc names.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
RESULTS = DOCS / "results"


def _minus(text: str) -> str:
    return text.replace("-", "−")


def num(x: float, digits: int = 2, sign: bool = False) -> str:
    return _minus(f"{x:{'+' if sign else ''}.{digits}f}")


def sig(x: float) -> str:
    """Two significant digits, trailing zeros kept (0.30, 0.0069)."""
    return _minus(f"{x:#.2g}")


def sig_up(x: float) -> str:
    """Two significant digits rounded up, for a bound printed after "≤" (0.002738 → 0.0028)."""
    if x <= 0:
        return sig(x)
    unit = 10.0 ** (math.floor(math.log10(x)) - 1)
    return sig(math.ceil(round(x / unit, 9)) * unit)


def ci(d: dict[str, Any], digits: int = 2, sign: bool = False) -> str:
    return f"{num(d['value'], digits, sign)} [{num(d['lo'], digits)}, {num(d['hi'], digits)}]"


def qv(cell: dict[str, Any]) -> str:
    """A corrected q-value as the docs print it ("≤" when it rests on a p-value at its floor)."""
    if cell["q_bound"]:
        return f"q ≤ {sig_up(cell['q'])}"
    return f"q = {sig(cell['q'])}"


def pv(cell: dict[str, Any]) -> str:
    return f"≤ {sig_up(cell['p'])}" if cell["at_floor"] else sig(cell["p"])


def verdict_cell(cell: dict[str, Any], digits: int = 2) -> str:
    return f"{ci(cell, digits)}, {cell['verdict']}, {qv(cell)}"


# ------------------------------------------------------------------------------ erasure.json
def erasure_rows(r: dict[str, Any]) -> list[str]:
    """docs/erasure.md, "Measured: truth on cities": held-out accuracy per method."""
    checks = r["checks"]
    first = next(iter(checks.values()))["accuracy"]
    rows = [f"| (before erasure) | | {ci(first['linear']['before'])} | | "
            f"{ci(first['mlp']['before'])} | | | | |"]
    for method, c in checks.items():
        acc = c["accuracy"]
        rank = "–" if c["rank"] is None else str(c["rank"])
        if method in r["in_model"]:
            e, rnd = r["in_model"][method]["erased"], r["in_model"][method]["random"]
            cost = f"{sig(e['delta_ce'])} / {sig(e['kl'])}"
            rcost = f"{sig(rnd['delta_ce'])} / {sig(rnd['kl'])}"
        else:
            cost, rcost = "(needs labels)", None
        rows.append(f"| {method} | {rank} | {ci(acc['linear']['erased'])} | "
                    f"{num(acc['linear']['random']['value'])} | {ci(acc['mlp']['erased'])} | "
                    f"{num(acc['mlp']['random']['value'])} | {num(c['relative_change'], 3)} | "
                    f"{cost} |" + (f" {rcost} |" if rcost else " |"))
    return rows


def behaviour_rows(r: dict[str, Any]) -> list[str]:
    """docs/erasure.md, "Measured: erasure and the model's own true/false answers"."""
    b = r["behaviour"]
    p = b["plain"]
    rows = [f"| none | {ci(p['score_true'], 3)} | {ci(p['score_false'], 3)} | | | "
            f"{ci(p['separation'], 3)} | | | | |"]
    for name, e in b["erasers"].items():
        v = e["vs_random"]
        rows.append(
            f"| {name} (rank {e['rank']}) | {num(e['score_true']['value'], 3)} | "
            f"{num(e['score_false']['value'], 3)} | {ci(e['delta_true'], 3, True)} | "
            f"{ci(e['delta_false'], 3, True)} | {num(e['separation']['value'], 3)} | "
            f"{ci(e['separation_change'], 3, True)} | {sig(e['kl']['value'])} | {pv(v)} | "
            f"{qv(v)}, {v['verdict']} |")
    for rank, e in b["random"].items():
        rows.append(
            f"| random subspace, rank {rank} (mean of {e['n_random']}) | "
            f"{num(e['score_true']['value'], 3)} | {num(e['score_false']['value'], 3)} | "
            f"{num(e['delta_true']['value'], 3, True)} | {num(e['delta_false']['value'], 3, True)} | "
            f"{num(e['separation']['value'], 3)} | {ci(e['separation_change'], 3, True)} | "
            f"{sig(e['kl']['value'])} | | |")
    return rows


# -------------------------------------------------------------------------------- nulls.json
def nulls_probe_rows(r: dict[str, Any]) -> list[str]:
    """docs/erasure.md, "Measured: the null battery": probes per source."""
    rows = []
    for source, by_probe in r["probes"].items():
        dm, lg = by_probe["diffmean"], by_probe["logistic"]
        if source == "model":
            rows.append(f"| model | {ci(dm)} | {ci(lg)} | | |")
        else:
            rows.append(f"| {source} | {ci(dm)} | {ci(lg)} | {verdict_cell(dm['model_minus_this'])} | "
                        f"{verdict_cell(lg['model_minus_this'])} |")
    return rows


def nulls_random_rows(r: dict[str, Any]) -> list[str]:
    """The probes against their norm-matched random directions."""
    rows = []
    for probe, d in r["random_directions"].items():
        t = d["probe_test"]
        rows.append(f"| {probe} | {num(t['observed'])} | {d['n']} | {num(d['mean'])} | "
                    f"{num(d['sd'])} | {num(d['p95'])} | {num(d['max'])} | {pv(t)} | {qv(t)}, "
                    f"{t['verdict']} |")
    return rows


def nulls_sae_rows(r: dict[str, Any]) -> list[str]:
    """docs/erasure.md, "Measured: the null battery": SAEs per source."""
    rows = []
    for source, s in r["saes"].items():
        head = (f"| {source} | {num(s['train']['fve'], 3)} | {num(s['heldout']['fve'], 3)} | "
                f"{s['heldout']['features_used']} / {s['heldout']['n_features']} |")
        d = s["model_minus_this"]
        if d is None:
            rows.append(head + " | | |")
        else:
            used = d["features_used_heldout"]["value"]
            rows.append(head + f" {verdict_cell(d['fve_train'], 3)} | {verdict_cell(d['fve_heldout'], 3)} | "
                        f"{_minus(f'{used:+d}') if used else '0'} |")
    return rows


def truth_nulls_probe_rows(r: dict[str, Any]) -> list[str]:
    """docs/erasure.md, "Inside the truth study": the truth study's null section."""
    return nulls_probe_rows(r["erasure_nulls"]["nulls"])


def truth_nulls_random_rows(r: dict[str, Any]) -> list[str]:
    return nulls_random_rows(r["erasure_nulls"]["nulls"])


# ---------------------------------------------------------------------------------- xor.json
NET_LABEL = {"reset": "reset", "random_init": "random init"}


def q_graded(q: float) -> str:
    return "q < 0.001" if q < 0.001 else f"q = {sig(q)}"


def xor_rows(r: dict[str, Any]) -> list[str]:
    """docs/xor.md, the readings table, up to its "reading" column."""
    rows = []
    for row in r["readings"]:
        m = row["model"]
        cells = [row["dataset"], row["feature"].replace("^", " ⊕ "), str(m["layer"]), ci(m),
                 f"{m['verdict']}, {q_graded(m['q'])}", num(row["shuffled"]["value"])]
        cells += [f"{num(row[net]['value'])} (L{row[net]['layer']})" for net in NET_LABEL]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def xor_generalization_rows(r: dict[str, Any]) -> list[str]:
    """docs/xor.md, the generalization table."""
    rows = []
    for per_ds in r["generalization"].values():
        for name, per_held in per_ds.items():
            for held, g in per_held.items():
                li = g["layer_index"]
                at = {k: {"value": g[k]["value"][li], "lo": g[k]["lo"][li], "hi": g[k]["hi"][li]}
                      for k in ("in", "out", "both", "drop")}
                if at["drop"]["lo"] > 0:
                    ab, rc = (ci(g["explained"][k]) for k in ("ablated", "recentred"))
                else:
                    ab = rc = "–"
                rows.append(f"| {name} | {held} | {r['layers'][li]} | {ci(at['in'])} | "
                            f"{ci(at['out'])} | {ci(at['both'])} | {ci(at['drop'])} | "
                            f"{num(g['cos_xor'][li], sign=True)} | {ab} | {rc} | "
                            f"{num(g['separation_ratio'][li])} |")
    return rows


# -------------------------------------------------------------------------------------- tests
# result file → (doc, the command the doc names, config values that command sets, row builders)
QUOTED = {
    "erasure.json": ("erasure.md", "interplab erase --neutral-sequences 16 --out runs/erase",
                     {("run", "seed"): 0, ("run", "model"): "smollm2-135m",
                      ("neutral_sequences",): 16, ("layer",): None},
                     (erasure_rows, behaviour_rows)),
    "erasure_12shots.json": ("erasure.md", "interplab erase --methods leace,orth,mean-diff "
                             "--directions-max-rounds 0 --neutral-sequences 0 --n-shots 12 "
                             "--out runs/erase12",
                             {("run", "seed"): 0, ("run", "model"): "smollm2-135m",
                              ("prompt", "n_shots"): 12, ("neutral_sequences",): 0,
                              ("directions_max_rounds",): 0, ("layer",): None,
                              ("methods",): ["leace", "orth", "mean-diff"]},
                             (behaviour_rows,)),
    "nulls.json": ("erasure.md", "interplab nulls --out runs/nulls",
                   {("run", "seed"): 0, ("run", "model"): "smollm2-135m", ("layer",): None},
                   (nulls_probe_rows, nulls_random_rows, nulls_sae_rows)),
    "truth_erasure_nulls.json": ("erasure.md", "interplab truth --datasets cities,neg_cities "
                                 "--train cities --layers 9,12,15 --probes diffmean,logistic "
                                 "--controls shuffled --erasure-nulls --out runs/truth-en",
                                 {("run", "seed"): 0, ("run", "model"): "smollm2-135m",
                                  ("erasure_nulls",): True, ("layers",): [9, 12, 15],
                                  ("controls",): ["shuffled"]},
                                 (truth_nulls_probe_rows, truth_nulls_random_rows)),
    "xor.json": ("xor.md", "interplab xor --out runs/xor",
                 {("run", "seed"): 0, ("run", "model"): "smollm2-135m", ("layers",): None,
                  ("tokens",): ["last"]},
                 (xor_rows, xor_generalization_rows)),
}


def _load(name: str) -> dict[str, Any]:
    return json.loads((RESULTS / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", sorted(QUOTED))
def test_doc_tables_equal_the_committed_result(name):
    doc_name, command, _, builders = QUOTED[name]
    r = _load(name)
    lines = (DOCS / doc_name).read_text(encoding="utf-8").splitlines()
    for build in builders:
        rows = build(r)
        assert rows, f"{build.__name__} built no rows from {name}"
        missing = [row for row in rows if not any(line.startswith(row) for line in lines)]
        assert not missing, (f"docs/{doc_name} does not show these rows of docs/results/{name} "
                             f"({build.__name__}):\n" + "\n".join(missing))


@pytest.mark.parametrize("name", sorted(QUOTED))
def test_result_file_is_the_command_the_doc_names(name):
    doc_name, command, settings, _ = QUOTED[name]
    r = _load(name)
    text = (DOCS / doc_name).read_text(encoding="utf-8")
    assert f"`{command}`" in text, f"docs/{doc_name} no longer names `{command}`"
    assert f"docs/results/{name}" in text
    for path, expected in settings.items():
        value = r["config"]
        for key in path:
            value = value[key]
        assert value == expected, f"{name}: config {'.'.join(path)} is {value!r}, not {expected!r}"


def test_readme_examples_write_only_under_runs():
    """Every file the README's commands write (``--out``, ``--texts`` they make, shell
    redirections) is under the ignored ``runs/`` folder, so following the README leaves the
    checkout clean."""
    import re

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = [ln for block in re.findall(r"```bash\n(.*?)```", readme, re.S)
                for ln in block.replace("\\\n", " ").splitlines()
                if ln.strip().startswith(("interplab", "make"))]
    commands += re.findall(r"`((?:mkdir|python|interplab)[^`]*)`", readme)
    targets = [t for c in commands for t in re.findall(r"(?:--out|--texts|>)\s+(\S+)", c)]
    assert len(targets) >= 15 and "runs/acts" in targets, targets
    outside = [t for t in targets if not t.startswith(("runs/", "DIR"))]
    assert not outside, f"README commands write outside runs/: {outside}"
    ignored = (ROOT / ".gitignore").read_text(encoding="utf-8").split()
    assert "runs/" in ignored
