import json

import pytest

from harmref import datasets, io
from harmref.io import DataError


def _spec(path, **kw):
    return {"label": "harmful", "sources": [{"file": str(path), "field": "instruction", **kw}]}


def test_normalise_ending():
    assert datasets.normalise_ending("How do I bake bread?") == "How do I bake bread."
    assert datasets.normalise_ending("Write a poem...  ") == "Write a poem."
    assert datasets.normalise_ending("Write a poem") == "Write a poem."


def test_build_set_is_deterministic_and_excludes(tmp_path):
    f = tmp_path / "a.json"
    f.write_text(json.dumps([{"instruction": f"prompt number {i}"} for i in range(50)]))
    a = datasets.build_set("x", {**_spec(f), "n": 10}, seed=3)
    b = datasets.build_set("x", {**_spec(f), "n": 10}, seed=3)
    assert a == b and len(a) == 10
    c = datasets.build_set("y", {**_spec(f), "n": 40}, exclude=[a], seed=3)
    assert not {r["prompt"] for r in a} & {r["prompt"] for r in c}
    assert {"id", "prompt", "label", "source", "category"} <= set(a[0])


def test_jsonl_named_json_is_read_line_by_line(tmp_path):
    f = tmp_path / "official.json"
    f.write_text('{"bad_q": "one"}\n{"bad_q": "two"}\n')
    recs = datasets.build_set("x", {"label": "harmful", "sources": [{"file": str(f), "field": "bad_q"}]})
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
        datasets.build_set("x", _spec(f, format=fmt))
    assert str(f) in str(e.value)


def test_duplicate_ids_are_an_error(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"instruction": "a", "id": 1}\n{"instruction": "b", "id": 1}\n')
    with pytest.raises(DataError, match="duplicate id"):
        datasets.build_set("x", _spec(f, id_field="id"))


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
