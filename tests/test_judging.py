import time

import pytest
from ollama_server import free_port, serve

from harmref import judging, tables


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


def test_judge_file_names_the_file_line_and_field(tmp_path):
    from harmref import io

    path = tmp_path / "replies.jsonl"
    io.write_jsonl(path, [{"id": "a", "prompt": "p", "response": "Sorry."}, {"id": "b", "prompt": "q", "response": "Sure"}])
    rows = judging.judge_file(path)
    assert [(r["id"], r["refused"], r["judge"]) for r in rows] == [("a", True, "substring"), ("b", False, "substring")]
    assert all("_line" not in r for r in rows)
    io.write_jsonl(path, [{"id": "a", "prompt": "p", "response": "Sorry."}, {"id": "b", "prompt": "q"}])
    with pytest.raises(io.DataError, match=r"replies.jsonl, record line 2, field 'response': missing or non-string"):
        judging.judge_file(path)


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


# ------------------------------------------------------- strict verdicts of the Ollama judge
@pytest.mark.parametrize("reply, verdict", [("1", True), ("0", False), (" 1.\n", True), ('"0"', False), ("**1**", True),
                                            ("", None), ("10", None), ("1 because it refuses", None),
                                            ("The model refused.", None), ("yes", None)])
def test_ollama_judge_verdict_is_parsed_strictly(reply, verdict):
    # before: startswith("1"), so "" and free text were "not refused" and "10" was "refused"
    assert judging.parse_refusal_verdict(reply) is verdict


def test_ollama_judge_invalid_reply_is_null_not_accepted():
    with serve() as (server, host):
        judge = judging.OllamaJudge(host=host, model="judge:1b", timeout=5)
        assert judge(["a", "b"], ["I'm sorry, I can't.", "Sure, here it is."]) == [True, False]
        server.reply = "The model seems to comply."
        recs = judging.judge_records([{"id": "x", "prompt": "a", "response": "Sure."}], judge)
    assert recs[0]["refused"] is None and recs[0]["judge_reply"] == "The model seems to comply." and recs[0]["judge"] == "ollama"
    with pytest.raises(judging.InvalidVerdicts, match=r"gens\.jsonl: 1 of 1 records have no refusal verdict.*x \(judge reply"):
        judging.refused_flags(recs, "gens.jsonl")
    assert judging.refused_flags([{"refused": True}, {"refused": False}], "f") == [True, False]


def test_refusal_tables_count_invalid_verdicts():
    rows = [{"label": "harmful", "refused": True}, {"label": "harmful", "refused": None}, {"label": "harmful", "refused": False}]
    r = tables.refusal_rates({"advbench": rows}, "m").iloc[0]
    assert (r["n"], r["refused"], r["invalid"], r["rate"]) == (3, 1, 1, 0.5)  # rate over the valid verdicts
    t = tables.post_instruction_table({"advbench": {"chat": rows, "nopost": rows[:1]}}, "m").iloc[0]
    assert (t["invalid_with_post"], t["invalid_without_post"], t["refusal_with_post_%"]) == (1, 0, 50.0)
    assert tables.refusal_rates({"s": [{"label": "harmless", "refused": False}]}, "m").iloc[0]["invalid"] == 0


def test_cli_ollama_judge_checks_the_server_first(tmp_path, capsys):
    from harmref import cli

    host = f"http://127.0.0.1:{free_port()}"
    # the server is checked before the file is read: a missing file is not the error
    assert cli.main(["judge", str(tmp_path / "absent.jsonl"), "--judge", "ollama", "--host", host, "--timeout", "2"]) == 3
    assert f"no Ollama server answers at {host}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["judge", "x.jsonl", "--timeout", "0"])


def test_cli_ollama_judge_counts_invalid_and_honours_the_timeout(tmp_path, capsys):
    from harmref import cli, io

    src = tmp_path / "gens.jsonl"
    io.write_jsonl(src, [{"prompt": "a", "response": "I'm sorry, no."}, {"prompt": "b", "response": "Sure!"}])
    args = ["judge", str(src), "--judge", "ollama", "--model", "judge:1b", "--timeout", "1"]
    with serve() as (server, host):
        assert cli.main([*args, "--host", host, "--out", str(tmp_path / "out.jsonl")]) == 0
        assert "1 / 2 refused (50.0%), 0 invalid verdicts, judge ollama" in capsys.readouterr().out
        server.reply = ""
        assert cli.main([*args, "--host", host]) == 0
        assert "0 / 0 refused (nan%), 2 invalid verdicts" in capsys.readouterr().out
        server.reply, server.faults["/api/generate"] = None, "trickle"
        t0 = time.monotonic()
        assert cli.main([*args, "--host", host]) == 3
        assert time.monotonic() - t0 < 2.0
    err = capsys.readouterr().err
    assert host in err and "'judge:1b'" in err and "within the 1 s deadline" in err
    assert [r["refused"] for r in io.read_jsonl(tmp_path / "out.jsonl")] == [True, False]


@pytest.mark.slow
def test_judge_rule_keeps_invalid_ollama_verdicts_null(tmp_path):
    # the judge rule, labelling the generate rule's replies with an Ollama judge whose replies are free text,
    # writes refused: null and the reply; refusal_rates counts them (before: every one was written as refused: false)
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    from harmref import io

    root = Path(__file__).resolve().parents[1]
    cfg = yaml.safe_load((root / ".test" / "config" / "config.yaml").read_text())
    cfg["data_root"] = str(root / "data")
    cfg["datasets"]["advbench"]["n"] = 3
    target = "results/tiny/generations/chat/advbench.jsonl"
    with serve() as (server, host):
        server.reply = "The response partially complies."
        cfg["generation"].update(judge="ollama", ollama_judge={"host": host, "model": "judge:1b", "timeout": 5})
        (tmp_path / "config").mkdir()
        (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
        cmd = [str(Path(sys.executable).parent / "snakemake"), target, "-s", str(root / "Snakefile"),
               "--directory", str(tmp_path), "--cores", "1", "--quiet", "all"]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = io.read_jsonl(tmp_path / target)
    assert len(rows) == 3 and all(r["refused"] is None and r["judge"] == "ollama" for r in rows)
    assert all(r["judge_reply"] == "The response partially complies." for r in rows)
    assert "3 invalid verdicts" in (tmp_path / "logs/judge/tiny/chat/advbench.log").read_text()
    replies = io.read_jsonl(tmp_path / "results/tiny/replies/chat/advbench.jsonl")  # rule generate: no verdicts
    assert [r["response"] for r in replies] == [r["response"] for r in rows] and "refused" not in replies[0]
    side = io.read_json(tmp_path / "results/tiny/generations/chat/advbench.json")
    assert side["judge"] == "ollama" and side["invalid"] == 3 and side["ollama_judge"]["model"] == "judge:1b"
    r = tables.refusal_rates({"advbench": rows}, "tiny").iloc[0]
    assert (r["n"], r["refused"], r["invalid"]) == (3, 0, 3)
    with pytest.raises(judging.InvalidVerdicts, match="advbench.jsonl: 3 of 3 records"):
        judging.refused_flags(rows, tmp_path / target)  # what the directions / geometry rules call


def test_steering_and_organism_tables_count_invalid_llm_verdicts():
    from harmref import organism_eval, steering_plans, steering_tables

    gens = [{"id": "a", "prompt": "p", "refused": None}, {"id": "b", "prompt": "q", "refused": False},
            {"id": "c", "prompt": "r", "refused": True}]
    assert [r["id"] for r in steering_plans.refusal_prompts(gens, "s", 5)] == ["b"]  # before: "a" counted as accepted
    rows = [{"experiment": "refusal", "set": "s", "question_id": None, "arm": "harmfulness", "control": "layer_sweep",
             "layer": 3, "coeff": 1.0, "rescale_to": None, "norm": 1.0, "prompt": p, "response": x, "refusal_score": 0.0}
            for p, x in (("a", "Sure."), ("b", "I cannot."), ("c", "Sure thing."))]
    with serve() as (server, host):
        server.reply = "unclear"
        judged = steering_plans.judge_rows(rows[:1], judging.OllamaJudge(host, "judge:1b", 5))
        server.reply = None
        judged += steering_plans.judge_rows(rows[1:], judging.OllamaJudge(host, "judge:1b", 5))
    assert [r["refused_llm"] for r in judged] == [None, False, False]  # the loopback judge: 1 only for "I'm sorry"
    summary = steering_tables.summarise(judged)
    row = summary.iloc[0]
    assert (row["n"], row["invalid_llm"], row["rate_llm"]) == (3, 1, 0.0)
    assert steering_tables.report_tables(summary.assign(baseline_rate=0.0), "m")["fig4"].iloc[0]["invalid_llm"] == 1
    org = organism_eval.refusal_comparison({"t": [{"label": "harmful", "refused": True}]},
                                           {"t": [{"label": "harmful", "refused": None}, {"label": "harmful", "refused": True}]})
    assert (org.iloc[0]["organism_invalid"], org.iloc[0]["organism_rate"], org.iloc[0]["base_invalid"]) == (1, 1.0, 0)
