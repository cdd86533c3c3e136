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
