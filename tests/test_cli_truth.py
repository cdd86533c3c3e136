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


def test_truth_cli_on_csvs_without_pair_ids(tmp_path):
    """The geometry-of-truth files have no pair_id column; a study without CCS must not care."""
    import csv

    from interplab.datasets import load_dataset

    paths = []
    for name in ("cities", "neg_cities"):
        ds = load_dataset(name, seed=0, max_size=80)
        path = tmp_path / f"{name}.csv"
        with path.open("w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(["statement", "label"])
            w.writerows(zip(ds.statements, ds.labels.tolist(), strict=True))
        paths.append(str(path))
    out = tmp_path / "run"
    assert main(["truth", "--model", "tiny-llama", "--datasets", ",".join(paths),
                 "--train", "cities", "--layers", "0", "--probes", "diffmean",
                 "--controls", "none", "--out", str(out)]) == 0
    result = json.loads((out / "truth.json").read_text())
    assert result["scored"]["cities"]["neg_cities"]["twins_left_out"] > 0  # aligned: paired by row
    assert list((out / "activations").glob("*.safetensors"))


def test_truth_cli_bad_layers_is_one_line(tmp_path, capsys):
    assert main(["truth", "--model", "tiny-gpt2", "--layers", "abc", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--layers 'abc'" in err and "Traceback" not in err and len(err.splitlines()) <= 2
