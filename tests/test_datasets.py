import json

import pytest

from harmref import datasets, io
from harmref.io import DataError


def _spec(path, **kw):
    """A one-source set spec; pass root=path.parent to build_set (sources lie under data_root)."""
    return {"label": "harmful", "sources": [{"file": path.name, "field": "instruction", **kw}]}


def test_normalise_ending():
    assert datasets.normalise_ending("How do I bake bread?") == "How do I bake bread."
    assert datasets.normalise_ending("Write a poem...  ") == "Write a poem."
    assert datasets.normalise_ending("Write a poem") == "Write a poem."


def test_build_set_is_deterministic_and_excludes(tmp_path):
    f = tmp_path / "a.json"
    f.write_text(json.dumps([{"instruction": f"prompt number {i}"} for i in range(50)]))
    a = datasets.build_set("x", {**_spec(f), "n": 10}, tmp_path, seed=3)
    b = datasets.build_set("x", {**_spec(f), "n": 10}, tmp_path, seed=3)
    assert a == b and len(a) == 10
    c = datasets.build_set("y", {**_spec(f), "n": 40}, tmp_path, exclude=[a], seed=3)
    assert not {r["prompt"] for r in a} & {r["prompt"] for r in c}
    assert {"id", "prompt", "label", "source", "category"} <= set(a[0])


def test_jsonl_named_json_is_read_line_by_line(tmp_path):
    f = tmp_path / "official.json"
    f.write_text('{"bad_q": "one"}\n{"bad_q": "two"}\n')
    recs = datasets.build_set("x", {"label": "harmful", "sources": [{"file": f.name, "field": "bad_q"}]}, tmp_path)
    assert sorted(r["prompt"] for r in recs) == ["one", "two"]


@pytest.mark.parametrize(
    "content, fmt, match",
    [
        ('{"instruction": "ok"}\n{"instruction": "broken"\n', "jsonl", r"line 2: malformed JSON"),
        ('{"instruction": "ok"}\n{"prompt": "no field"}\n', "jsonl", r"record 2, field 'instruction': missing prompt field"),
        ('{"instruction": "ok"}\n{"instruction": "   "}\n', "jsonl", r"record 2, field 'instruction': empty prompt"),
        ('instruction,x\nok,1\n"unterminated,2\n', "csv", r"malformed CSV|more fields"),
        ("[1, 2", "json", r"malformed JSON"),
    ],
)
def test_bad_files_name_file_record_and_field(tmp_path, content, fmt, match):
    f = tmp_path / f"bad.{fmt}"
    f.write_text(content)
    with pytest.raises(DataError, match=match) as e:
        datasets.build_set("x", _spec(f, format=fmt), tmp_path)
    assert str(f) in str(e.value)


def test_duplicate_ids_are_an_error(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"instruction": "a", "id": 1}\n{"instruction": "b", "id": 1}\n')
    with pytest.raises(DataError, match="duplicate id"):
        datasets.build_set("x", _spec(f, id_field="id"), tmp_path)


def test_validate_records_rejects_bad_normalised_file(tmp_path):
    p = tmp_path / "set.jsonl"
    p.write_text('{"id": "a", "prompt": "x", "label": "harmful"}\n{"id": "a", "prompt": "y", "label": "harmful"}\n')
    with pytest.raises(DataError, match="duplicate id"):
        datasets.validate_records(io.read_jsonl(p), p)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.jsonl"

    def rows():
        yield {"a": 1}
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        io.write_jsonl(target, rows())
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_load_prompts_applies_the_model_ending_rule(tmp_path):
    p = tmp_path / "set.jsonl"
    io.write_jsonl(p, [{"id": "a", "prompt": "How do I bake bread?", "label": "harmless"}])
    assert datasets.load_prompts(p)[0]["prompt"] == "How do I bake bread?"
    assert datasets.load_prompts(p, normalise_endings=True)[0]["prompt"] == "How do I bake bread."


def test_markdown_tables_survive_newlines_and_pipes_in_cells(tmp_path):
    import pandas as pd

    from harmref import io

    io.write_table(pd.DataFrame({"reply": ["Sure:\n\n1. a | b", "No"], "n": [1, 2]}), tmp_path / "t")
    md = (tmp_path / "t.md").read_text().splitlines()
    assert len(md) == 4 and md[2].count("|") - md[2].count("\\|") == 3, md  # one row per line, 2 columns
    assert "Sure:<br><br>1. a \\| b" in md[2]
    assert pd.read_csv(tmp_path / "t.csv")["reply"][0] == "Sure:\n\n1. a | b"  # the CSV keeps the text


# ------------------------------------------------ issue 11.6: data paths, ids, encodings
def test_a_source_symlinked_from_outside_data_root_is_refused(tmp_path):
    root, outside = tmp_path / "data", tmp_path / "elsewhere"
    root.mkdir(), outside.mkdir()
    (outside / "secret.jsonl").write_text('{"instruction": "from outside"}\n')
    (root / "link.jsonl").symlink_to(outside / "secret.jsonl")
    with pytest.raises(DataError, match=r"data/link.jsonl: resolves to .*elsewhere/secret.jsonl, outside data_root .*data; copy"):
        datasets.build_set("x", _spec(root / "link.jsonl"), root)
    (root / "sub").symlink_to(outside, target_is_directory=True)  # a linked folder is refused the same way
    with pytest.raises(DataError, match="outside data_root"):
        datasets.build_set("x", {"label": "harmful", "sources": [{"file": "sub/secret.jsonl"}]}, root)
    # a symlink that stays inside data_root, and a data_root that is itself a symlink, are fine
    (root / "real.jsonl").write_text('{"instruction": "inside"}\n')
    (root / "alias.jsonl").symlink_to(root / "real.jsonl")
    (tmp_path / "root_link").symlink_to(root, target_is_directory=True)
    for r in (root, tmp_path / "root_link"):
        assert [x["prompt"] for x in datasets.build_set("x", _spec(root / "alias.jsonl"), r)] == ["inside"]


def test_two_sources_with_the_same_stem_get_distinct_ids(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    (tmp_path / "a/harmful.jsonl").write_text('{"instruction": "one"}\n{"instruction": "two"}\n')
    (tmp_path / "b/harmful.csv").write_text("instruction\nthree\nfour\n")
    (tmp_path / "other.jsonl").write_text('{"instruction": "five"}\n')
    spec = {"label": "harmful", "shuffle": False,
            "sources": [{"file": "a/harmful.jsonl"}, {"file": "b/harmful.csv"}, {"file": "other.jsonl"}]}
    ids = [r["id"] for r in datasets.build_set("x", spec, tmp_path)]
    assert ids == ["a/harmful.jsonl:1", "a/harmful.jsonl:2", "b/harmful.csv:1", "b/harmful.csv:2", "other:1"]
    # the normalised set passes the id check that every model job makes
    out = tmp_path / "set.jsonl"
    io.write_jsonl(out, datasets.build_set("x", spec, tmp_path))
    datasets.load_prompts(out)


def test_one_file_read_twice_with_colliding_ids_fails_naming_both_sources(tmp_path):
    (tmp_path / "pairs.jsonl").write_text('{"goal": "g1", "target": "t1"}\n{"goal": "g2", "target": "t2"}\n')
    spec = {"label": "harmful", "sources": [{"file": "pairs.jsonl", "field": "goal"}, {"file": "pairs.jsonl", "field": "target"}]}
    with pytest.raises(DataError, match=r"pairs.jsonl, field 'id': dataset 'x': id 'pairs:1' of source 2 \(.*pairs.jsonl, field 'target'\) "
                       r"is also the id of a record of source 1 \(.*pairs.jsonl, field 'goal'\); give"):
        datasets.build_set("x", spec, tmp_path)


@pytest.mark.parametrize("fmt", ["jsonl", "json", "txt"])
def test_a_bom_or_non_utf8_file_is_a_data_error_naming_the_file(tmp_path, fmt):
    body = {"jsonl": '{"instruction": "caf\u00e9"}\n', "json": '[{"instruction": "caf\u00e9"}]', "txt": "caf\u00e9\n"}[fmt]
    spec = {"label": "harmful", "sources": [{"file": f"s.{fmt}", "format": fmt, "field": "text" if fmt == "txt" else "instruction"}]}
    f = tmp_path / f"s.{fmt}"
    f.write_bytes(b"\xef\xbb\xbf" + body.encode())
    with pytest.raises(DataError, match=rf"s.{fmt}: starts with a UTF-8 byte-order mark \(BOM\); save it as UTF-8 without a BOM"):
        datasets.build_set("x", spec, tmp_path)
    f.write_bytes(("first line\n" if fmt == "txt" else "") .encode() + body.encode("latin-1"))
    with pytest.raises(DataError, match=rf"s.{fmt}: not UTF-8 text \(byte 0xe9 at line \d, byte offset \d+\); convert it to UTF-8"):
        datasets.build_set("x", spec, tmp_path)
    f.write_bytes(body.encode())
    assert datasets.build_set("x", spec, tmp_path)[0]["prompt"] == "caf\u00e9"


def test_a_bom_csv_header_works_and_a_bom_never_enters_a_prompt(tmp_path):
    f = tmp_path / "excel.csv"
    f.write_bytes(b"\xef\xbb\xbfinstruction,category\r\nHow do I bake bread?,food\r\n")
    spec = {"label": "harmless", "sources": [{"file": "excel.csv", "category_field": "category"}]}
    (rec,) = datasets.build_set("x", spec, tmp_path)
    assert rec["prompt"] == "How do I bake bread?" and rec["category"] == "food"
    # a BOM inside the file (two files concatenated) would reach the tokenizer: refused, naming the record
    (tmp_path / "cat.txt").write_bytes(b"first prompt\n\xef\xbb\xbfsecond prompt\n")
    with pytest.raises(DataError, match=r"cat.txt, record 2, field 'text': contains a byte-order mark \(U\+FEFF\)"):
        datasets.build_set("x", {"label": "harmful", "sources": [{"file": "cat.txt", "field": "text"}]}, tmp_path)
