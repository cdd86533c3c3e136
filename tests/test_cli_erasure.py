"""`interplab erase`, `nulls` and `weights`: options from the config, JSON + HTML written, bad
input refused with one line."""

import json

from interplab.cli.main import main


def test_erase_command_writes_json_and_report(tmp_path, capsys):
    out = tmp_path / "erase"
    rc = main(["erase", "--model", "tiny-llama", "--layer", "1", "--max-per-dataset", "80",
               "--methods", "leace,mean-match", "--directions-max-rounds", "1",
               "--neutral-sequences", "1", "--context-length", "8", "--n-boot", "100",
               "--behaviour-prompts", "8", "--n-shots", "1", "--answer-true", "TRUE,the",
               "--answer-false", "FALSE,and", "--out", str(out)])
    assert rc == 0
    result = json.loads((out / "erasure.json").read_text())
    assert set(result["checks"]) == {"leace", "mean-match"}
    assert set(result["behaviour"]["erasers"]) == {"leace"}  # mean-match needs labels
    assert result["behaviour"]["info"]["answers"] == {"true": " the", "false": " and"}
    assert (out / "report.html").read_text().startswith("<!DOCTYPE html>")
    printed = capsys.readouterr().out
    assert "directions to chance" in printed and "Δ separation" in printed
    assert "vs random subspaces: " in printed and ("q = " in printed or "q ≤ " in printed)


def test_weights_command(tmp_path):
    out = tmp_path / "w"
    assert main(["weights", "--model", "tiny-gpt2", "--top-directions", "1", "--controls", "reset",
                 "--out", str(out)]) == 0
    assert set(json.loads((out / "weights.json").read_text())["networks"]) == {"model", "reset"}


def test_bad_options_are_one_line_errors(tmp_path, capsys):
    assert main(["erase", "--model", "tiny-llama", "--methods", "rlace", "--out", str(tmp_path)]) == 2
    assert "unknown or no erasure method" in capsys.readouterr().err
    assert main(["nulls", "--model", "tiny-llama", "--n-random-directions", "5",
                 "--out", str(tmp_path)]) == 2
    assert "at least 20" in capsys.readouterr().err
