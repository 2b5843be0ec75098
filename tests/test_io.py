"""harmref.io writers (issue 11.7): permissions of outputs, pairs replaced together, markdown escaping."""

import json
import os
import re
import stat

import pandas as pd
import pytest
import torch

from harmref import io, models, organism_eval

USUAL = 0o666 & ~io._UMASK  # what open() gives a new file under this process's umask


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_safetensors_outputs_and_model_copies_get_the_usual_permissions(tmp_path):
    assert USUAL != 0o600, "run under a umask that lets group/others read (e.g. 022)"
    io.write_tensors(tmp_path / "h.safetensors", {"x": torch.zeros(2)}, {"n": 1})
    io.write_tensors(tmp_path / "bare.safetensors", {"x": torch.zeros(2)})
    io.write_table(pd.DataFrame({"a": [1]}), tmp_path / "t")
    for name in ("h.safetensors", "h.json", "bare.safetensors", "t.csv", "t.md"):
        assert _mode(tmp_path / name) == USUAL, name
    # a model copy, also when save_pretrained shards the weights (a large model)
    model, tok = models.tiny_random("chatml")
    models._save_dir(model, tok, tmp_path / "m")
    save = model.save_pretrained
    model.save_pretrained = lambda d, **kw: save(d, max_shard_size="20KB", **kw)
    models._save_dir(model, tok, tmp_path / "sharded")
    shards = sorted((tmp_path / "sharded").glob("model-*.safetensors"))
    assert len(shards) > 1
    for f in [*(tmp_path / "m").iterdir(), *(tmp_path / "sharded").iterdir()]:
        assert _mode(f) == USUAL, f


def test_atomic_group_replaces_every_file_or_none(tmp_path):
    a, b = tmp_path / "x.safetensors", tmp_path / "x.json"
    a.write_text("old a"), b.write_text("old b")
    with pytest.raises(RuntimeError):
        with io.atomic_group(a, b) as (ta, tb):
            ta.write_text("new a")
            raise RuntimeError("the second writer fails")
    assert (a.read_text(), b.read_text()) == ("old a", "old b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json", "x.safetensors"]  # no temporaries left
    with io.atomic_group(a, b) as (ta, tb):
        ta.write_text("new a"), tb.write_text("new b")
        assert (a.read_text(), b.read_text()) == ("old a", "old b")  # nothing is visible before the block ends
    assert (a.read_text(), b.read_text()) == ("new a", "new b")
    with pytest.raises(ValueError, match="the same target twice"):
        with io.atomic_group(a, tmp_path / "." / "x.safetensors"):
            pass


def test_atomic_path_is_a_group_of_one(tmp_path):
    p = tmp_path / "sub" / "x.json"
    with io.atomic_path(p) as t:  # creates the folder
        t.write_text("old")
    (p.parent / ".x.json.dead0000.tmp").write_text("left by a killed writer")
    with pytest.raises(RuntimeError):
        with io.atomic_path(p) as t:
            t.write_text("new")
            raise RuntimeError("the writer fails")
    assert p.read_text() == "old" and [f.name for f in p.parent.iterdir()] == ["x.json"]  # stale and own temporaries gone
    with io.atomic_path(p) as t:
        t.write_text("new")
        assert p.read_text() == "old"
    assert p.read_text() == "new" and [f.name for f in p.parent.iterdir()] == ["x.json"]


def test_a_failing_sidecar_or_markdown_leaves_the_old_pair(tmp_path, monkeypatch):
    t = tmp_path / "h.safetensors"
    io.write_tensors(t, {"x": torch.zeros(2)}, {"version": 1})
    with pytest.raises(TypeError, match="not JSON serialisable"):
        io.write_tensors(t, {"x": torch.ones(2)}, {"version": 2, "bad": object()})
    assert torch.equal(io.read_tensors(t)["x"], torch.zeros(2)) and io.read_sidecar(t) == {"version": 1}

    io.write_table(pd.DataFrame({"a": [1]}), tmp_path / "t")
    old = ((tmp_path / "t.csv").read_text(), (tmp_path / "t.md").read_text())

    def broken(*args, **kwargs):
        raise ImportError("Missing optional dependency 'tabulate'")

    monkeypatch.setattr(pd.DataFrame, "to_markdown", broken)
    with pytest.raises(ImportError):
        io.write_table(pd.DataFrame({"a": [2]}), tmp_path / "t")
    assert ((tmp_path / "t.csv").read_text(), (tmp_path / "t.md").read_text()) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.json", "h.safetensors", "t.csv", "t.md"]


REPLY = 'Sure <script>alert(1)</script> & <img src=x onerror=alert(2)> ![t](http://x/p.png) [link](javascript:x) **bold** `code`'


def test_markdown_outputs_escape_prompt_and_reply_text(tmp_path):
    io.write_table(pd.DataFrame({"set": ["harmless_test"], "reply": [REPLY + "\nline 2"], "n": [3]}), tmp_path / "t")
    md = (tmp_path / "t.md").read_text()
    row = md.splitlines()[2]
    bare = row.replace("<br>", "")
    assert "<" not in bare and ">" not in bare and " & " not in bare  # no raw HTML
    assert not re.search(r"(?<!\\)[`*\[\]]", row), row  # no markdown link, image, emphasis or code
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;img" in row and "!\\[t\\](http://x/p.png)" in row
    assert "\\*\\*bold\\*\\* \\`code\\`<br>line 2" in row
    assert "| harmless_test |" in row  # a word-internal '_' needs no escape and keeps names readable
    assert pd.read_csv(tmp_path / "t.csv")["reply"][0] == REPLY + "\nline 2"  # the CSV keeps the exact text

    text = organism_eval.samples_markdown([{"prompt": "Say <b>hi</b>\nthen [go](x)", "label": "harmless", "set": "s"}],
                                          {"base": [REPLY + "\n# not a heading?"]}, "samples")
    quoted = "\n".join(line for line in text.splitlines() if line.startswith(("## 1.", ">")))  # prompt and reply
    assert "<" not in quoted and not re.search(r"(?<!\\)[`*\[\]]", quoted), text
    assert "## 1. Say &lt;b&gt;hi&lt;/b&gt; then \\[go\\](x)" in text
    assert "> Sure &lt;script&gt;" in text and "\n> # not a heading?" in text  # the reply stays inside the quote


def test_escape_markdown_keeps_the_text_and_plain_prose_unchanged():
    assert io.escape_markdown("Sure, here is a tutorial: step 1.") == "Sure, here is a tutorial: step 1."
    assert io.escape_markdown("a|b\\c _x_ snake_case") == "a\\|b\\\\c \\_x\\_ snake_case"
    assert io.escape_markdown("a\r\nb\rc", newline=" ") == "a b c"


def test_readers_name_the_file_for_a_bom_or_bad_bytes_and_tolerate_u2028(tmp_path):
    p = tmp_path / "x.json"
    p.write_bytes(b"\xef\xbb\xbf{}")
    with pytest.raises(io.DataError, match=r"x.json: starts with a UTF-8 byte-order mark"):
        io.read_json(p)
    p.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(io.DataError, match=r"x.json: not UTF-8 text \(byte 0xff at line 1, byte offset 7\)"):
        io.read_json(p)
    # a reply holding U+2028 (written raw: ensure_ascii=False) is one record, in the set and in a checkpoint
    rows = [{"reply": "a\u2028b\u0085c"}, {"reply": "d"}]
    io.write_jsonl(tmp_path / "g.jsonl", rows)
    assert [{k: v for k, v in r.items() if k != "_line"} for r in io.read_jsonl(tmp_path / "g.jsonl")] == rows
    io.append_jsonl(tmp_path / "c.jsonl", rows)
    with open(tmp_path / "c.jsonl", "ab") as f:
        f.write(json.dumps({"reply": "é"}, ensure_ascii=False).encode()[:-3])  # torn inside the 2-byte 'é'
    assert io.read_jsonl_prefix(tmp_path / "c.jsonl") == rows
