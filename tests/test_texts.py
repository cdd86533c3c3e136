"""Reading `--texts` files: lines end at \\n only, quoted CSV fields keep their newlines, JSON
Lines texts must be strings, a folder is named as a folder."""

from __future__ import annotations

import json

import pytest

from interplab.activations.texts import read_texts
from interplab.errors import InterplabError

# Characters str.splitlines() treats as line breaks but that are not line ends of a text file.
INNER_BREAKS = ["\u2028", "\u2029", "\x85", "\x0c", "\x0b", "\x1c", "\r"]


def test_txt_splits_only_at_newlines(tmp_path):
    texts = [f"before{c}after" for c in INNER_BREAKS]
    f = tmp_path / "t.txt"
    f.write_text("\n".join(texts) + "\n", encoding="utf-8", newline="")
    assert read_texts(f) == texts


def test_txt_windows_line_ends_and_blank_lines(tmp_path):
    f = tmp_path / "t.txt"
    f.write_bytes(b"one\r\n\r\ntwo words\r\n   \r\nthree")
    assert read_texts(f) == ["one", "two words", "three"]


def test_csv_keeps_newlines_inside_quotes(tmp_path):
    texts = ["multi\nline text", "para\u2028sep", "windows\r\nend", "plain"]
    f = tmp_path / "t.csv"
    with f.open("w", encoding="utf-8", newline="") as fh:
        import csv

        w = csv.writer(fh)
        w.writerow(["id", "text"])
        for i, t in enumerate(texts):
            w.writerow([i, t])
    assert read_texts(f) == texts


def test_csv_short_record_is_refused(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("id,label,text\n1,0,hello\n2\n", encoding="utf-8")
    with pytest.raises(InterplabError, match="record 2 has no 'text' field"):
        read_texts(f)


def test_jsonl_keeps_inner_breaks_and_refuses_non_strings(tmp_path):
    f = tmp_path / "t.jsonl"
    texts = ["a\u2028b", "c\x85d"]
    f.write_text("\n".join(json.dumps({"text": t}, ensure_ascii=False) for t in texts),
                 encoding="utf-8")
    assert read_texts(f) == texts
    for value, kind in ((None, "null"), (42, "number"), (["a", "b"], "array"),
                        ({"x": 1}, "object"), (True, "boolean")):
        f.write_text(json.dumps({"text": "fine"}) + "\n\n" + json.dumps({"text": value}) + "\n",
                     encoding="utf-8")
        with pytest.raises(InterplabError, match=rf"t.jsonl:3: field 'text' holds .*JSON {kind}"):
            read_texts(f)


def test_folder_is_named_as_a_folder(tmp_path):
    d = tmp_path / "adir"
    d.mkdir()
    with pytest.raises(InterplabError, match=r"adir is a folder; give one text file: \.txt"):
        read_texts(d)
    with pytest.raises(InterplabError, match="does not exist"):
        read_texts(tmp_path / "missing.txt")
