import json

from interplab.cli.main import main


def test_truth_cli_writes_results_and_report(tmp_path):
    out = tmp_path / "run"
    code = main(["truth", "--model", "tiny-gpt2", "--datasets", "cities,neg_cities",
                 "--train", "cities", "--layers", "1,2", "--probes", "diffmean,ccs",
                 "--max-per-dataset", "60", "--n-shuffles", "2", "--out", str(out)])
    assert code == 0
    result = json.loads((out / "truth.json").read_text())
    assert result["layers"] == [1, 2] and set(result["accuracy"]["cities"]) == {"diffmean", "ccs"}
    assert (out / "report.html").stat().st_size > 10_000


def test_truth_cli_bad_options_exit_2(tmp_path, capsys):
    assert main(["truth", "--model", "tiny-gpt2", "--probes", "svm", "--out", str(tmp_path)]) == 2
    assert "unknown probe" in capsys.readouterr().err
    assert main(["truth", "--model", "tiny-gpt2", "--datasets", "nope", "--train", "nope",
                 "--out", str(tmp_path)]) == 2
    assert "unknown dataset" in capsys.readouterr().err
    assert main(["truth", "--model", "tiny-gpt2", "--datasets", "cities", "--train", "cities",
                 "--layers", "9", "--out", str(tmp_path)]) == 2
    assert "out of range" in capsys.readouterr().err
