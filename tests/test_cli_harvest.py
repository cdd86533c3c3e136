import json

import pytest

from interplab.activations import ActivationStore
from interplab.cli.main import main

HOOK = "blocks.1.hook_resid_post"


@pytest.mark.parametrize("fmt", ["txt", "jsonl", "csv"])
def test_harvest_cli_reads_each_text_format(tmp_path, fmt):
    texts = ["Bees dance.", "The river ran slowly, past the mill.", "Gold is soft."]
    f = tmp_path / f"texts.{fmt}"
    if fmt == "txt":
        f.write_text("\n".join(texts) + "\n", encoding="utf-8")
    elif fmt == "jsonl":
        f.write_text("\n".join(json.dumps({"body": t}) for t in texts), encoding="utf-8")
    else:
        f.write_text("id,body\n" + "\n".join(f'{i},"{t}"' for i, t in enumerate(texts)), encoding="utf-8")
    args = ["harvest", "--model", "tiny-llama", "--texts", str(f), "--hooks", HOOK,
            "--positions", "last", "--out", str(tmp_path / "out")]
    if fmt != "txt":
        args += ["--column", "body"]
    assert main(args) == 0
    s = ActivationStore(tmp_path / "out")
    assert s.n_rows == 3 and s.complete
    assert main(["store", "verify", str(tmp_path / "out")]) == 0
    assert main(["store", "info", str(tmp_path / "out")]) == 0


def test_cli_bad_input_exits_nonzero_with_message(tmp_path, capsys):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    out = tmp_path / "out"
    assert main(["harvest", "--model", "tiny-llama", "--texts", str(bad), "--hooks", HOOK,
                 "--out", str(out)]) == 2
    assert "UTF-8" in capsys.readouterr().err
    good = tmp_path / "t.txt"
    good.write_text("one\ntwo\n", encoding="utf-8")
    assert main(["harvest", "--model", "tiny-llama", "--texts", str(good),
                 "--hooks", "blocks.99.hook_resid_post", "--out", str(out)]) == 2
    assert "out of range" in capsys.readouterr().err
    assert main(["harvest", "--model", "nope", "--texts", str(good), "--hooks", HOOK,
                 "--out", str(out)]) == 2
    assert "Known names" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    assert main(["harvest", "--model", "tiny-llama", "--texts", str(empty), "--hooks", HOOK,
                 "--out", str(out)]) == 2
    assert main(["store", "info", str(tmp_path)]) == 2


def test_store_verify_cli_fails_on_altered_shard(tmp_path):
    good = tmp_path / "t.txt"
    good.write_text("one two three\nfour five\n", encoding="utf-8")
    out = tmp_path / "out"
    assert main(["harvest", "--model", "tiny-gpt2", "--texts", str(good), "--hooks", HOOK,
                 "--out", str(out)]) == 0
    shard = next(out.glob("shard-*.safetensors"))
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0x01
    shard.write_bytes(bytes(data))
    assert main(["store", "verify", str(out)]) == 1


def _texts(tmp_path, n=40):
    f = tmp_path / "t.txt"
    f.write_text("\n".join(f"Text number {i} about rivers and bees." for i in range(n)) + "\n",
                 encoding="utf-8")
    return f


@pytest.mark.parametrize("flag, value", [("--batch-size", "0"), ("--batch-size", "-3"),
                                         ("--rows-per-shard", "0"), ("--max-length", "-1")])
def test_bad_sizes_are_refused_before_anything_is_created(tmp_path, capsys, flag, value):
    out = tmp_path / "out"
    assert main(["harvest", "--model", "tiny-llama", "--texts", str(_texts(tmp_path)),
                 "--hooks", HOOK, "--out", str(out), flag, value]) == 2
    err = capsys.readouterr().err
    assert flag in err and "at least" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_failed_run_does_not_block_the_corrected_command(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["harvest", "--model", "tiny-llama", "--texts", str(_texts(tmp_path)), "--hooks", HOOK,
            "--out", str(out)]
    assert main([*args, "--positions", "index:999"]) == 2
    assert "position index 999" in capsys.readouterr().err
    assert main([*args, "--positions", "last"]) == 0
    assert ActivationStore(out).complete


def _interrupt_after(monkeypatch, n_shards):
    from interplab.activations import store

    original = store.StoreWriter.add_shard

    def write_then_interrupt(self, entry, exclusion_count=None):
        original(self, entry, exclusion_count)
        if len(self.manifest["shards"]) == n_shards:
            raise KeyboardInterrupt

    monkeypatch.setattr(store.StoreWriter, "add_shard", write_then_interrupt)
    return original


def test_ctrl_c_reports_what_was_saved_and_the_resume_command(tmp_path, capsys, monkeypatch):
    import shlex

    from interplab.activations import store

    out = tmp_path / "out"
    original = _interrupt_after(monkeypatch, 2)
    assert main(["harvest", "--model", "tiny-llama", "--texts", str(_texts(tmp_path)),
                 "--hooks", HOOK, "--out", str(out), "--batch-size", "2", "--positions", "last",
                 "--rows-per-shard", "1"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "32 rows from 32 of 40 texts in 2 complete shard(s)" in err
    command = err.split("resume with: ", 1)[1].strip()
    monkeypatch.setattr(store.StoreWriter, "add_shard", original)
    argv = shlex.split(command)
    assert argv[:2] == ["interplab", "harvest"]
    assert main(argv[1:]) == 0  # the printed command resumes
    s = ActivationStore(out)
    assert s.complete and s.n_rows == 40 and s.manifest["command"] == command


def test_damaged_store_is_one_line_and_nonzero(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["harvest", "--model", "tiny-gpt2", "--texts", str(_texts(tmp_path, 4)),
                 "--hooks", HOOK, "--out", str(out)]) == 0
    capsys.readouterr()
    m = json.loads((out / "manifest.json").read_text())
    m["shards"][0]["file"] = "../../etc/hostname"
    (out / "manifest.json").write_text(json.dumps(m))
    for cmd in ("verify", "info"):
        assert main(["store", cmd, str(out)]) == 2
        err = capsys.readouterr().err
        assert "not a plain file name" in err and len(err.strip().splitlines()) == 1
    del m["shards"]
    (out / "manifest.json").write_text(json.dumps(m))
    assert main(["store", "verify", str(out)]) == 2
    assert "lacks the key(s) shards" in capsys.readouterr().err


def test_hf_folder_without_tokenizer_is_a_clear_error(tmp_path, capsys):
    from interplab.models import load

    folder = tmp_path / "model"
    load("tiny-llama").hf.save_pretrained(folder)
    assert main(["harvest", "--model", str(folder), "--texts", str(_texts(tmp_path, 4)),
                 "--hooks", HOOK, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "holds no tokenizer" in err and "tokenizer.save_pretrained" in err


def test_sae_commands_refuse_an_incomplete_store_unless_allowed(tmp_path, capsys, monkeypatch):
    from interplab.activations import store

    out = tmp_path / "acts"
    original = _interrupt_after(monkeypatch, 1)
    assert main(["harvest", "--model", "tiny-llama", "--texts", str(_texts(tmp_path)),
                 "--hooks", HOOK, "--out", str(out), "--batch-size", "4",
                 "--rows-per-shard", "1"]) == 130
    monkeypatch.setattr(store.StoreWriter, "add_shard", original)
    capsys.readouterr()
    train = ["sae", "train", "--store", str(out), "--arch", "topk", "--k", "4", "--width", "64",
             "--steps", "2", "--batch-size", "32", "--out", str(tmp_path / "saes")]
    assert main(train) == 2
    err = capsys.readouterr().err
    assert "incomplete" in err and "32 of 40 texts" in err and "resume it with: interplab harvest" in err
    assert not (tmp_path / "saes").exists()
    assert main([*train, "--allow-incomplete"]) == 0
    cfg = json.loads((tmp_path / "saes" / "topk_w64_k4" / "config.json").read_text())
    assert cfg["extra"]["incomplete_store"] == {"texts_done": 32, "n_texts": 40}
    evaluate = ["sae", "eval", "--sae", str(tmp_path / "saes" / "topk_w64_k4"), "--store", str(out),
                "--out", str(tmp_path / "eval.json")]
    assert main(evaluate) == 2
    assert main([*evaluate, "--allow-incomplete"]) == 0
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["store"]["complete"] is False and result["store"]["texts_done"] == 32


def test_resume_with_changed_settings_is_refused_naming_them(tmp_path, capsys, monkeypatch):
    from interplab.activations import store

    out = tmp_path / "out"
    args = ["harvest", "--model", "tiny-llama", "--texts", str(_texts(tmp_path)), "--hooks", HOOK,
            "--out", str(out), "--batch-size", "4", "--rows-per-shard", "1"]
    original = _interrupt_after(monkeypatch, 1)
    assert main(args) == 130
    monkeypatch.setattr(store.StoreWriter, "add_shard", original)
    capsys.readouterr()
    for extra, named in ((["--max-length", "8"], "max_length: store has 128, new rows have 8"),
                         (["--compute-dtype", "bfloat16"],
                          'compute_dtype: store has "float32", new rows have "bfloat16"')):
        assert main([*args, *extra]) == 2
        assert named in capsys.readouterr().err
    assert len(ActivationStore(out).shards) == 1
    assert main(args) == 0 and main(["store", "verify", str(out)]) == 0


def test_disk_full_names_the_file_and_the_resume_command(tmp_path, capsys, monkeypatch):
    from interplab.activations import store

    out = tmp_path / "out"
    original = store.atomic_write_bytes

    def full(path, data):
        if path.name == "shard-00001.safetensors":
            raise OSError(28, "No space left on device")
        return original(path, data)

    monkeypatch.setattr(store, "atomic_write_bytes", full)
    args = ["harvest", "--model", "tiny-llama", "--texts", str(_texts(tmp_path)), "--hooks", HOOK,
            "--out", str(out), "--batch-size", "4", "--rows-per-shard", "1", "--positions", "last"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert str(out / "shard-00001.safetensors") in err and "No space left on device" in err
    assert "keeps its 32 rows (32 of 40 texts)" in err
    assert f"resume it with: interplab harvest --model tiny-llama --texts {tmp_path / 't.txt'}" in err
    monkeypatch.setattr(store, "atomic_write_bytes", original)
    assert main(args) == 0 and ActivationStore(out).complete


def test_store_for_sae_training_leaves_out_position_zero_and_records_the_rule(tmp_path, capsys):
    texts = _texts(tmp_path)
    args = ["harvest", "--model", "tiny-llama", "--texts", str(texts), "--hooks", HOOK,
            "--positions", "all"]
    assert main([*args, "--out", str(tmp_path / "all")]) == 0
    assert main([*args, "--out", str(tmp_path / "sae"), "--for-sae"]) == 0
    every, sae = ActivationStore(tmp_path / "all"), ActivationStore(tmp_path / "sae")
    assert every.manifest["sae_exclusion"] is None
    assert (every.metadata()["position"] == 0).any()  # the control: a plain store keeps them
    assert sae.manifest["sae_exclusion"] == {"first_position": True, "norm_ratio": 10.0}
    assert not (sae.metadata()["position"] == 0).any()
    count = sae.manifest["sae_exclusion_count"]
    assert count["n_seen"] == every.n_rows and count["n_excluded"] == every.n_rows - sae.n_rows
    assert "--for-sae" in sae.manifest["command"]
    capsys.readouterr()
    for store, shown in ((sae, f"{count['n_excluded']} of {count['n_seen']} tokens left out"),
                         (every, "none (every selected token is stored)")):
        assert main(["store", "info", str(store.path)]) == 0
        assert shown in " ".join(capsys.readouterr().out.split())


def test_resume_command_is_generated_from_the_config_and_round_trips(tmp_path, monkeypatch):
    """The command recorded in the manifest is the config written back as options: run again,
    it builds the same config (with absolute paths), whatever options the first run had."""
    import shlex

    from interplab.studies import harvest as study

    seen = []
    monkeypatch.setattr(study, "run_harvest", lambda cfg, **kw: seen.append((cfg, kw)) or 1 / 0)
    texts = _texts(tmp_path, 3)
    monkeypatch.chdir(tmp_path)
    for extra in ([], ["--positions", "last", "--column", "body", "--batch-size", "4",
                       "--rows-per-shard", "7", "--dtype", "float16", "--compute-dtype",
                       "bfloat16", "--device", "cpu", "--max-length", "12", "--strict-length",
                       "--for-sae", "--executor", "local"]):
        seen.clear()
        with pytest.raises(ZeroDivisionError):
            main(["harvest", "--model", "tiny-gpt2", "--texts", texts.name, "--hooks",
                  f"{HOOK},blocks.0.hook_mlp_out", "--out", "acts", *extra])
        cfg, kw = seen[0]
        command = kw["command"]
        argv = shlex.split(command)
        assert argv[:2] == ["interplab", "harvest"] and "--executor" not in argv
        assert str(tmp_path / "acts") in argv and str(texts) in argv  # absolute paths
        assert ("--for-sae" in argv) == ("--for-sae" in extra)
        with pytest.raises(ZeroDivisionError):
            main(argv[1:])
        assert seen[1][0] == cfg.absolute() and seen[1][1]["command"] == command
    assert cfg.max_length == 12 and cfg.strict_length and cfg.compute_dtype == "bfloat16"
