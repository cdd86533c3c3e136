"""The circuit and SHIFT studies end to end on a tiny model: registry, JSON, report, SAE cache."""

from __future__ import annotations

import json

import pytest

from interplab.errors import InterplabError

TINY_SAE = dict(model="tiny-llama", n_boot=100, batch_size=32, layers=[1, 2], sae_width=64,
                sae_k=4, sae_steps=20, sae_batch_size=64, sae_context=32, sae_sequences=64)


def _circuit_config(cache, **over):
    from interplab.studies.circuit import CircuitConfig

    return CircuitConfig.make(**{**TINY_SAE, "sae_cache_dir": str(cache), "n_pairs": 4,
                                 "n_heldout": 6, "ig_steps": 2, "n_exact": 4, "sizes": [2, 4],
                                 "circuit_size": 4, "n_random": 2, "n_cards": 2,
                                 "compare": ["jumprelu"], "compare_pairs": 3,
                                 "compare_steps": [1, 2], "max_per_dataset": 200, **over})


def test_circuit_study_runs_writes_its_files_and_a_second_run_trains_no_sae(tmp_path):
    from interplab.studies.registry import STUDIES

    study = STUDIES["circuit"]
    cache = tmp_path / "cache"
    res, json_path, html_path, lines = study.execute(_circuit_config(cache), tmp_path / "a",
                                                     progress=False)
    assert res.saes["trained"] == 3  # topk at blocks 1 and 2, jumprelu at block 2
    # one cache entry per SAE: topk at block 2 serves the circuit and the comparison
    assert sum(len(c["saes"]) for c in res.saes["cache"]) == 3
    data = json.loads(json_path.read_text())
    assert data["study"] == "circuit" and data["curve"]["sizes"]
    assert {r["architecture"] for r in data["comparison"]["rows"]} == {"jumprelu"}
    assert {r["setup"] for r in data["comparison"]["rows"]} == {
        "own latents, errors recomputed", "upstream latents, downstream errors frozen"}
    html = html_path.read_text()
    assert "Sparse feature circuit" in html and "data:image/png;base64" in html
    assert any("faithfulness" in line for line in lines)
    # 3–5 findings, each graded (the behaviour gate, the random-circuit control), then the
    # faithfulness curve, on the first screen
    from tests.pages import check_tables_align, check_top_of_page

    assert 3 <= len(data["summary"]) <= 5 and data["summary"][0].startswith("The behaviour")
    assert "random-circuit control" in data["summary"][1]
    assert check_tables_align(html) == 5
    check_top_of_page(html_path, tmp_path)
    assert data["circuit"]["size"] >= 1 and data["cards"]
    # user text is escaped: corpus tokens and city names reach the page as text, never as markup
    from interplab.report.circuit import write_circuit_report

    data.pop("study")
    data["cards"][0]["top_contexts"][0]["tokens"] = ["<script>alert(1)</script>", "$x$"]
    data["task"]["example"]["clean"] = "The city of <b>$5</b> is"
    page = write_circuit_report(data, tmp_path / "escaped.html").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;$5&lt;/b&gt;" in page

    from interplab.studies.circuit import run_circuit

    again = run_circuit(_circuit_config(cache), tmp_path / "b", progress=False)
    assert again.saes["trained"] == 0 and again.saes["train_seconds"] == 0
    assert [s["path"] for c in again.saes["cache"] for s in c["saes"]] == \
        [s["path"] for c in res.saes["cache"] for s in c["saes"]]
    # the same SAEs and the same data give the same attribution, and the same notes (a cached
    # SAE keeps the size warnings of its training run)
    assert again.attribution["agreement"] == res.attribution["agreement"]
    assert again.notes == res.notes and any("too few" in n for n in res.notes)


def test_no_sae_cache_trains_into_the_run_folder(tmp_path):
    from interplab.studies.circuit import run_circuit

    cfg = _circuit_config(tmp_path / "unused", sae_cache=False, compare=["none"], sizes=[2],
                          n_cards=0)
    res = run_circuit(cfg, out_dir=tmp_path / "run", progress=False)
    assert res.saes["trained"] == 2 and res.comparison == {}
    assert all(s["path"].startswith(str(tmp_path / "run" / "saes"))
               for c in res.saes["cache"] for s in c["saes"])
    assert not (tmp_path / "unused").exists()


def test_given_sae_folders_are_used_instead_of_training(tmp_path):
    from interplab.models import load
    from interplab.sae.base import SAEConfig, create_sae
    from interplab.sae.formats import export_saelens
    from interplab.studies.circuit import run_circuit

    lm = load("tiny-llama")
    folders = []
    for layer in (1, 2):
        sae = create_sae(SAEConfig("topk", lm.d_model, 48, k=4, seed=layer,
                                   hook=f"blocks.{layer}.hook_resid_post"))
        folders.append(f"blocks.{layer}.hook_resid_post="
                       f"{export_saelens(sae, tmp_path / f'sl{layer}')}")
    cfg = _circuit_config(tmp_path / "cache", sae_paths=folders, compare=["none"], sizes=[2],
                          n_cards=1)
    res = run_circuit(cfg, out_dir=tmp_path / "run", progress=False)
    assert res.saes["trained"] == 0 and len(res.saes["loaded"]) == 2
    assert res.attribution["widths"] == {"blocks.1.hook_resid_post": 48,
                                         "blocks.2.hook_resid_post": 48}


def test_circuit_config_errors_name_the_option():
    from interplab.studies.circuit import CircuitConfig

    for over, match in (({"compare": ["relu", "nope"]}, "--compare"),
                        ({"layers": [1, 1]}, "--layers"),
                        ({"sae_paths": ["blocks.1"]}, "HOOK=DIR"),
                        ({"sae_k": 0}, "--sae-k"),
                        ({"compare_layer": 3}, "--compare-layer"),
                        ({"node_method": "exact"}, "--node-method")):
        with pytest.raises(InterplabError, match=match):
            CircuitConfig.make(**over).validate()


def test_shift_study_runs_and_reports(tmp_path):
    from interplab.studies.registry import STUDIES
    from interplab.studies.shift import ShiftConfig

    cfg = ShiftConfig.make(**{**TINY_SAE, "sae_cache_dir": str(tmp_path / "cache"),
                              "n_candidates": 6, "n_random": 1, "n_seeds": 2,
                              "max_per_dataset": 400})
    res, json_path, html_path, lines = STUDIES["shift"].execute(cfg, tmp_path / "s",
                                                                progress=False)
    data = json.loads(json_path.read_text())
    assert data["study"] == "shift" and len(data["seeds"]) == 2
    assert {r["condition"] for r in data["table"]} >= {"unablated", "shift", "leace_oracle",
                                                       "balanced_oracle"}
    for s in data["seeds"]:
        sizes = s["sizes"]
        assert sizes["balanced_train"] == sizes["train"] and sizes["test"] % 4 == 0
    assert all(0 <= t["q"] <= 1 for t in data["tests"])
    assert "SHIFT" in html_path.read_text() and lines
    # graded against the random-latent control, then the headline figure on the first screen
    from tests.pages import check_tables_align, check_top_of_page

    assert 3 <= len(data["summary"]) <= 5
    assert any("random latents in" in s for s in data["summary"])
    assert check_tables_align(html_path.read_text()) == 4
    check_top_of_page(html_path, tmp_path)


def test_p_values_at_their_floor_are_printed_as_a_bound():
    from interplab.studies.shift import format_p

    assert format_p(1 / 1001, 1 / 1001) == "≤ 1/1001"
    assert format_p(0.2, 1 / 1001) == "0.2"


def test_config_modules_stay_torch_free():
    import subprocess
    import sys

    code = ("import sys, interplab.studies.circuit, interplab.studies.shift, "
            "interplab.circuits.config; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_circuits_package_stays_below_studies_cli_and_report():
    import ast
    from pathlib import Path

    import interplab

    root = Path(interplab.__file__).parent
    files = [*(root / "circuits").rglob("*.py"), root / "sae" / "cache.py"]
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            mods = ([node.module] if isinstance(node, ast.ImportFrom) and node.module else
                    [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for m in mods:
                assert not m.startswith(("interplab.studies", "interplab.cli",
                                         "interplab.report")), (f, m)
