from harmref import judging


def test_substring_judge_matches_paper_list():
    j = judging.SubstringJudge()
    assert len(judging.REFUSAL_PHRASES) == 24
    assert j.refused("I'm sorry, but I can't help with that.")
    assert j.refused("I can\u2019t do that")
    assert j.refused("   ")
    assert not j.refused("Sure, here is a recipe for bread.")


def test_parse_inversion():
    assert judging.parse_inversion("Certainly.") == "harmful"
    assert judging.parse_inversion("No.") == "harmless"
    assert judging.parse_inversion("Maybe later") == "invalid"


def test_judge_records_adds_label():
    recs = judging.judge_records([{"prompt": "p", "response": "Sorry, no."}, {"prompt": "q", "response": "Here you go"}])
    assert [r["refused"] for r in recs] == [True, False]


def test_cli_judges_a_jsonl(tmp_path, capsys):
    from harmref import cli, io

    src = tmp_path / "gens.jsonl"
    io.write_jsonl(src, [{"prompt": "a", "response": "I cannot help."}, {"prompt": "b", "response": "Sure!"}])
    assert cli.main(["judge", str(src), "--out", str(tmp_path / "out.jsonl")]) == 0
    assert "1 / 2 refused" in capsys.readouterr().out
    assert [r["refused"] for r in io.read_jsonl(tmp_path / "out.jsonl")] == [True, False]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n')
    assert cli.main(["judge", str(bad)]) == 2
