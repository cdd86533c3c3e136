"""`interplab sae eval`: the SAE's recorded identity checked against the store and the model, the
JSON written atomically next to the SAE, and the short table naming what each number is on."""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from interplab.activations import ActivationStore  # noqa: E402
from interplab.cli.main import main  # noqa: E402

HOOK = "blocks.1.hook_resid_post"
OTHER = "blocks.3.hook_resid_post"


def _harvest(folder, model: str, hooks: str, n: int = 40, start: int = 0) -> ActivationStore:
    texts = folder.parent / f"{folder.name}.txt"
    texts.write_text("\n".join(f"Text number {i} about rivers, bees and the mill."
                               for i in range(start, start + n)) + "\n", encoding="utf-8")
    assert main(["harvest", "--model", model, "--texts", str(texts), "--hooks", hooks,
                 "--out", str(folder), "--for-sae"]) == 0
    return ActivationStore(folder)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    return {"train": _harvest(root / "train", "tiny-llama", HOOK),
            "both": _harvest(root / "both", "tiny-llama", f"{HOOK},{OTHER}", start=100),
            "other_hook": _harvest(root / "other_hook", "tiny-llama", OTHER),
            "gpt2": _harvest(root / "gpt2", "tiny-gpt2", HOOK)}


@pytest.fixture(scope="module")
def sae_dir(tmp_path_factory, stores):
    out = tmp_path_factory.mktemp("saes")
    assert main(["sae", "train", "--store", str(stores["train"].path), "--arch", "topk", "--k",
                 "4", "--width", "64", "--steps", "4", "--batch-size", "64", "--out",
                 str(out)]) == 0
    return out / "topk_w64_k4"


def test_a_trained_sae_records_its_model_hook_and_data(sae_dir, stores):
    cfg = json.loads((sae_dir / "config.json").read_text())
    st = stores["train"]
    assert cfg["hook"] == HOOK
    assert cfg["model_identity"] == st.manifest["model"]  # incl. config and weights sha256
    assert cfg["model_identity"]["weights_sha256"] and cfg["model_identity"]["config_sha256"]
    assert cfg["data"]["kind"] == "store" and cfg["data"]["fingerprint"] == st.fingerprint()
    assert cfg["data"]["path"] == str(st.path.resolve())
    assert cfg["data"]["fingerprint"] != stores["both"].fingerprint()  # fingerprints differ


@pytest.mark.parametrize("store, sides", [
    ("other_hook", [f"SAE trained at {HOOK}", OTHER]),
    ("gpt2", ["SAE trained on tiny-llama (LlamaForCausalLM", "tiny-gpt2 (GPT2LMHeadModel"]),
])
def test_eval_refuses_a_mismatched_store_naming_both_sides(tmp_path, capsys, sae_dir, stores,
                                                           store, sides):
    path = stores[store].path
    out = tmp_path / "eval.json"
    args = ["sae", "eval", "--sae", str(sae_dir), "--store", str(path), "--out", str(out)]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("error:") == 1 and "Traceback" not in err
    flat = " ".join(err.split())
    assert all(side in flat for side in sides) and "--allow-mismatch" in flat, flat
    assert not out.exists()
    # Asked for explicitly: evaluated, with the mismatch in the output and on the terminal.
    assert main([*args, "--allow-mismatch"]) == 0
    res = json.loads(out.read_text())
    (check,) = res["identity"]
    assert check["allowed"] and check["mismatches"] and check["target"] == f"store {path}"
    assert res["store"]["training_store"] is False
    assert "evaluated despite a mismatch" in " ".join(capsys.readouterr().err.split())


def test_eval_and_dashboard_refuse_an_sae_of_another_model(tmp_path, capsys, sae_dir):
    html = tmp_path / "d.html"
    capsys.readouterr()
    for args in (["sae", "eval", "--sae", str(sae_dir), "--model", "tiny-gpt2", "--out",
                  str(tmp_path / "e.json")],
                 ["sae", "dashboard", "--sae", str(sae_dir), "--model", "tiny-gpt2", "--out",
                  str(html), "--n-sequences", "2", "--context-length", "16"]):
        assert main(args) == 2
        flat = " ".join(capsys.readouterr().err.split())
        assert "tiny-llama (LlamaForCausalLM" in flat and "tiny-gpt2 (GPT2LMHeadModel" in flat
    assert not html.exists() and not (tmp_path / "e.json").exists()
    # Control: the model it was trained on passes the check.
    assert main(["sae", "dashboard", "--sae", str(sae_dir), "--model", "tiny-llama", "--out",
                 str(html), "--n-sequences", "2", "--context-length", "16",
                 "--n-features", "2"]) == 0
    assert html.exists()


def test_an_sae_without_recorded_identity_is_evaluated_with_a_note(tmp_path, capsys, stores):
    from interplab.sae import SAEConfig, create_sae, save_sae

    old = save_sae(create_sae(SAEConfig("topk", 64, 64, k=4, hook=HOOK, seed=0)), tmp_path / "old")
    capsys.readouterr()
    assert main(["sae", "eval", "--sae", str(old), "--store", str(stores["train"].path)]) == 0
    captured = capsys.readouterr()
    assert "note: the SAE records no model identity" in " ".join(captured.err.split())
    res = json.loads((old / "eval.json").read_text())
    assert res["identity"][0]["mismatches"] == [] and res["notes"]
    assert res["store"]["training_store"] is None and "records no training store" in captured.out


def test_eval_prints_a_short_table_and_writes_its_json_atomically(tmp_path, capsys, sae_dir,
                                                                   stores, monkeypatch):
    st = stores["both"]  # the SAE's model and hook, but not its training store
    capsys.readouterr()
    assert main(["sae", "eval", "--sae", str(sae_dir), "--store", str(st.path)]) == 0
    out = capsys.readouterr().out
    path = sae_dir / "eval.json"  # the default: next to the SAE, and the table says so
    assert str(path) in " ".join(out.split())
    res = json.loads(path.read_text())
    head = res["reconstruction"]["ordinary_tokens"]
    lines = out.strip().splitlines()
    assert len(lines) < 20 and not any(ln.lstrip().startswith(("{", '"')) for ln in lines)
    flat = " ".join(out.split())
    assert f"on ordinary tokens of every row of store {st.path} (not the store the SAE was " \
           "trained on)" in flat
    rows = f"{head['n_tokens']:,} rows"
    for metric, value in (("FVE", f"{head['fraction_of_variance_explained']:.4f}"),
                          ("L0", f"{head['l0']:.1f}"),
                          ("alive fraction", f"{head['fraction_alive']:.2f}")):
        line = next(ln for ln in lines if ln.strip().startswith(metric + " "))
        assert value in line and rows in line, line
    count = st.manifest["sae_exclusion_count"]
    assert (f"store harvest: {count['n_excluded']} of {count['n_seen']} tokens left out"
            in flat)
    # Atomic: a write that fails half-way leaves the previous file whole and no temporary file.
    before = path.read_bytes()
    from interplab import fileio

    real = fileio.os.replace

    def full(src, dst):
        if str(dst).endswith("eval.json"):
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(fileio.os, "replace", full)
    assert main(["sae", "eval", "--sae", str(sae_dir), "--store", str(stores["train"].path)]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert path.read_bytes() == before and not list(sae_dir.glob("*.tmp"))


def test_plural():
    from interplab.sae.evaluate import plural

    assert plural(1, "position") == "1 position" and plural(0, "token") == "0 tokens"
    assert plural(12_345, "row") == "12,345 rows"


def test_training_names_what_its_metrics_are_on(tmp_path, capsys, stores):
    capsys.readouterr()
    assert main(["sae", "train", "--store", str(stores["train"].path), "--k", "4", "--width",
                 "64", "--steps", "2", "--batch-size", "32", "--log-every", "1", "--out",
                 str(tmp_path)]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "on one training batch of 32 rows" in err and "scores every row of a store" in err
