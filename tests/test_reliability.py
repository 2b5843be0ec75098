"""Reliability and safety: faults (SIGKILL, resume), bad inputs with clear messages, determinism, loading safety.

docs/reliability.md lists every fault and bad input tried here (or in the test named there)
with the message the user sees. The one workflow test below starts a few `.test` jobs in a
temporary folder; everything else is library-level and takes seconds.
"""

import copy
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from test_workflow import ROOT, SNAKEMAKE, run

from harmref import activations, datasets, generation, geometry, io, judging, models, positions
from harmref.guards import GuardUnavailable
from harmref.io import DataError
from harmref.positions import ChatFormat

PROMPTS = [
    "Compare and contrast feudalism and capitalism.",
    "Create a short poem using the word moon.",
    "Write a story",
    "How do I bake bread?",
    "Explain how vaccines train the immune system in simple words.",
    "List three rivers.",
    "x" * 50,
]


def untied_tiny(seed=0):
    """The tiny random chatml Llama with its own random LM head.

    With tied embeddings the random model only ever repeats its last token ("\\n"),
    so generations would compare equal whatever the order; an untied head makes
    every prompt's continuation different.
    """
    model, tok = models.tiny_random("chatml", seed=seed)
    tok.padding_side = "left"
    g = torch.Generator().manual_seed(seed + 1)
    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(torch.randn(model.lm_head.weight.shape, generator=g))
    return model, tok


@pytest.fixture(scope="module")
def lm():
    model, tok = untied_tiny()
    return model, tok, ChatFormat.from_tokenizer(tok)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ================================================================== (a) faults
@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    """SIGKILL the whole snakemake process group while a generate job runs, then resume.

    Returns the workdir and what each step saw. The model is the untied tiny model saved
    as a local directory, so the generations differ per prompt and a wrong resume shows.
    """
    wd = tmp_path_factory.mktemp("fault")
    model, tok = untied_tiny()
    model.save_pretrained(wd / "weights")
    tok.save_pretrained(wd / "weights")
    cfg = yaml.safe_load((ROOT / ".test/config/config.yaml").read_text())
    cfg["data_root"] = str(ROOT / "data")
    cfg["models"] = {"tiny": {"source": str(wd / "weights"), "normalise_endings": True}}
    cfg["datasets"]["harmless_train"]["n"] = 12
    cfg["generation"]["max_new_tokens"] = 32
    cfg["runtime"]["batch_size"] = 1
    (wd / "config").mkdir()
    (wd / "config/config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))

    gen = "results/tiny/generations/chat/harmless_train.jsonl"
    hidden = "results/tiny/hidden/harmless_train.safetensors"
    partial = wd / "results/tiny/replies/chat/harmless_train.jsonl.partial.jsonl"  # rule generate's checkpoint
    # inputs written in-process (they are not under test): saves two jobs
    spec = cfg["datasets"]["harmless_train"]
    io.write_jsonl(wd / "results/data/harmless_train.jsonl",
                   datasets.build_set("harmless_train", spec, root=cfg["data_root"], seed=cfg["seed"]))
    models.prepare(str(wd / "weights"), wd / "results/models/tiny")

    seen = {}
    proc = subprocess.Popen([*SNAKEMAKE, "--directory", str(wd), gen, hidden], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while _lines(partial) < 1 + 3:  # the header and three finished batches
        assert proc.poll() is None, "the generate job finished before it could be killed"
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(1.0)
    seen["batches_at_kill"] = _lines(partial) - 1
    time.sleep(1.0)
    seen["batches_later"] = _lines(partial) - 1  # nothing of the job survived the kill
    seen["output_after_kill"] = (wd / gen).exists()

    seen["locked"] = run(wd, gen, check=False)
    run(wd, "--unlock")
    seen["resume"] = run(wd, gen, hidden, "--rerun-incomplete")
    seen["resumed_rows"] = io.read_jsonl(wd / gen)
    seen["resumed_hidden"] = io.read_tensors(wd / hidden)["hidden"]
    seen["partial_after_resume"] = partial.exists()
    seen["tmp_after_resume"] = sorted(str(p) for p in (wd / "results").rglob("*.tmp"))
    seen["resume_log"] = (wd / "logs/generate/tiny/chat/harmless_train.log").read_text()

    run(wd, gen, hidden, "--forcerun", "generate", "extract_hidden")  # the uninterrupted run
    seen["fresh_rows"] = io.read_jsonl(wd / gen)
    seen["fresh_hidden"] = io.read_tensors(wd / hidden)["hidden"]
    return wd, seen


def _lines(path) -> int:
    try:
        return Path(path).read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


@pytest.mark.slow  # runs workflow jobs on a model (generate; safety_tune)
def test_sigkill_mid_generation_leaves_no_output_and_stops(killed_and_resumed):
    _, seen = killed_and_resumed
    assert not seen["output_after_kill"]
    assert 3 <= seen["batches_at_kill"] < 12
    assert seen["batches_later"] == seen["batches_at_kill"]


def test_rerun_after_sigkill_names_the_lock(killed_and_resumed):
    _, seen = killed_and_resumed
    locked = seen["locked"]
    assert locked.returncode != 0
    assert "Directory cannot be locked" in locked.stdout + locked.stderr


def test_resume_keeps_finished_batches_and_equals_an_uninterrupted_run(killed_and_resumed):
    _, seen = killed_and_resumed
    k = seen["batches_at_kill"]
    assert f"{k} finished batches ({k} prompts) kept" in seen["resume_log"]
    strip = lambda rows: [{key: v for key, v in r.items() if key != "_line"} for r in rows]  # noqa: E731
    assert strip(seen["resumed_rows"]) == strip(seen["fresh_rows"])
    assert len({r["response"] for r in seen["fresh_rows"]}) > 1  # the comparison can fail
    assert torch.equal(seen["resumed_hidden"], seen["fresh_hidden"])
    assert not seen["partial_after_resume"] and not seen["tmp_after_resume"]


def test_unreachable_ollama_judge_fails_the_judge_rule_and_keeps_the_replies(killed_and_resumed):
    wd, _ = killed_and_resumed
    host = f"http://127.0.0.1:{_free_port()}"
    gen = "results/tiny/generations/chat/harmless_train.jsonl"
    replies = wd / "results/tiny/replies/chat/harmless_train.jsonl"
    before = replies.stat().st_mtime_ns
    cfg = yaml.safe_load((wd / "config/config.yaml").read_text())
    cfg["generation"].update(judge="ollama", ollama_judge={"host": host, "timeout": 3})
    (wd / "config/ollama.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    p = run(wd, gen, "--configfile", str(wd / "config/ollama.yaml"), check=False)
    assert p.returncode != 0
    log = (wd / "logs/judge/tiny/chat/harmless_train.log").read_text()
    assert f"no Ollama server answers at {host}" in log and "set generation.judge: substring" in log
    assert not (wd / "logs/generate/tiny/chat/harmless_train.log").read_text().count("no Ollama")
    assert not (wd / gen).exists()  # the judged file is gone, the replies are kept: a new judge reruns no generation
    assert replies.stat().st_mtime_ns == before


@pytest.mark.slow  # runs workflow jobs on a model (generate; safety_tune)
def test_retrained_organism_discards_a_stale_generation_checkpoint(tmp_path, monkeypatch):
    """Kill `generate` on the organism, change its recipe, rerun: the checkpoint of the old weights is not reused.

    The partial checkpoint is what a job killed after its first batch leaves, written in-process
    with the rule's own key (`models.checkpoint_key`), with a marker reply so that a resume shows.
    The same model resumes from it; retrained weights (organism.train.steps 4 → 2) start over.
    """
    wd = tmp_path
    cfg = yaml.safe_load((ROOT / ".test/config/config.yaml").read_text())
    cfg["data_root"] = str(ROOT / "data")
    (wd / "config").mkdir()
    (wd / "config/config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    card = wd / "results/models/tiny-refusal/model.json"
    data = "results/data/harmless_train.jsonl"
    gen = "results/tiny-refusal/generations/chat/harmless_train.jsonl"
    replies = wd / "results/tiny-refusal/replies/chat/harmless_train.jsonl"  # rule generate's output; judge writes gen
    partial, log = wd / (str(replies) + ".partial.jsonl"), wd / "logs/generate/tiny-refusal/chat/harmless_train.log"
    monkeypatch.chdir(wd)  # the card's weights path is relative to the workdir
    # inputs not under test written in-process (saves four jobs); the organism is trained by the workflow
    for name in ("harmless_train", "organism_harmful", "organism_harmless"):
        io.write_jsonl(wd / f"results/data/{name}.jsonl",
                       datasets.build_set(name, cfg["datasets"][name], root=cfg["data_root"], seed=cfg["seed"]))
    models.prepare("tiny-random:chatml", "results/models/tiny", seed=cfg["seed"])
    run(wd, "results/models/tiny-refusal/model.json")
    g, rt = cfg["generation"], cfg["runtime"]

    def killed_after_one_batch():
        model, tok = models.load(card, rt["device"], rt["dtype"])
        fmt = ChatFormat.from_tokenizer(tok, g["system_prompt"], post_instruction=True)
        prompts = [r["prompt"] for r in datasets.load_prompts(wd / data, normalise_endings=True)]
        calls = []

        def first_batch_then_killed(model, tokenizer, batch, max_new_tokens, hooks_cm=None, **kw):
            if calls:
                raise SimulatedKill()
            calls.append(1)
            return ["STALE reply"] * batch.input_ids.shape[0]

        with monkeypatch.context() as m:
            m.setattr(generation, "generate_batch", first_batch_then_killed)
            with pytest.raises(SimulatedKill):
                generation.generate(model, tok, fmt, prompts, g["max_new_tokens"], rt["batch_size"],
                                    checkpoint=partial, checkpoint_key=models.checkpoint_key(card, model))
        assert _lines(partial) == 1 + 1  # the fingerprint and one finished batch
        return model, tok, fmt, prompts

    killed_after_one_batch()
    run(wd, gen)  # same weights: resumes
    assert "1 finished batches (4 prompts) kept" in log.read_text()
    assert sum(r["response"] == "STALE reply" for r in io.read_jsonl(wd / gen)) == 4
    assert not partial.exists()

    old = models.read_card(card)
    replies.unlink()  # what a killed generate job leaves: no replies, a checkpoint
    killed_after_one_batch()
    cfg["organism"]["train"]["steps"] = 2
    (wd / "config/steps2.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    p = run(wd, gen, "--configfile", str(wd / "config/steps2.yaml"))
    assert "safety_tune" in p.stdout + p.stderr  # retrained
    new = models.read_card(card)
    assert new["weights_sha256"]["model.safetensors"] != old["weights_sha256"]["model.safetensors"]
    assert new["identity"] != old["identity"] and new["recipe_sha256"] != old["recipe_sha256"]
    text = log.read_text()
    assert "was written for other inputs (model weights, prompts or settings changed); starting over" in text
    assert "finished batches" not in text
    rows = io.read_jsonl(wd / gen)
    assert not any(r["response"] == "STALE reply" for r in rows) and not partial.exists()
    model, tok = models.load(card, rt["device"], rt["dtype"])
    fmt = ChatFormat.from_tokenizer(tok, g["system_prompt"], post_instruction=True)
    fresh = generation.generate(model, tok, fmt, [r["prompt"] for r in rows], g["max_new_tokens"], rt["batch_size"])
    assert [r["response"] for r in rows] == fresh  # the new weights' replies, as an uninterrupted run


def test_weights_replaced_in_a_local_model_folder_rerun_its_card(tmp_path):
    model, tok = models.tiny_random("chatml", seed=0)
    src = tmp_path / "weights"
    model.save_pretrained(src)
    tok.save_pretrained(src)
    cfg = yaml.safe_load((ROOT / ".test/config/config.yaml").read_text())
    cfg["data_root"] = str(ROOT / "data")
    cfg["models"] = {"tiny": {"source": str(src)}}
    (tmp_path / "config").mkdir()
    (tmp_path / "config/config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    card = "results/models/tiny/model.json"
    models.prepare(str(src), tmp_path / "results/models/tiny")
    assert "Nothing to be done" in run(tmp_path, card, "-n").stdout
    time.sleep(0.05)
    model.save_pretrained(src)  # retrained or replaced in place
    out = run(tmp_path, card, "-n").stdout
    assert "prepare_model" in out and "Nothing to be done" not in out, out[-2000:]


# ----------------------------------------------------- checkpoints, library level
class SimulatedKill(BaseException):
    pass


REAL_GENERATE_BATCH = generation.generate_batch


def _counting(monkeypatch, fail_after=None):
    """Count generate_batch calls; with `fail_after`, die like a killed job on the next one."""
    calls = []
    real = REAL_GENERATE_BATCH

    def wrapped(*args, **kwargs):
        if fail_after is not None and len(calls) == fail_after:
            raise SimulatedKill()
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(generation, "generate_batch", wrapped)
    return calls


def test_checkpoint_resumes_after_the_last_finished_batch(lm, tmp_path, monkeypatch):
    model, tok, fmt = lm
    ref = generation.generate(model, tok, fmt, PROMPTS, 6, batch_size=2)
    ck = tmp_path / "out.jsonl.partial.jsonl"
    _counting(monkeypatch, fail_after=2)
    with pytest.raises(SimulatedKill):
        generation.generate(model, tok, fmt, PROMPTS, 6, batch_size=2, checkpoint=ck, checkpoint_key="m")
    with open(ck, "a") as f:
        f.write('{"start": 4, "rows": [1, ')  # torn line of a writer killed mid-append
    calls = _counting(monkeypatch)
    out = generation.generate(model, tok, fmt, PROMPTS, 6, batch_size=2, checkpoint=ck, checkpoint_key="m")
    assert out == ref and len(set(out)) > 1
    assert len(calls) == 4 - 2  # 7 prompts in batches of 2: two were finished before the kill
    assert len(io.read_jsonl_prefix(ck)) == 1 + 4


def test_checkpoint_of_other_inputs_is_discarded(lm, tmp_path, monkeypatch, caplog):
    model, tok, fmt = lm
    ck = tmp_path / "ck.jsonl"
    generation.generate(model, tok, fmt, PROMPTS, 4, batch_size=2, checkpoint=ck, checkpoint_key="model-a")
    calls = _counting(monkeypatch)
    out = generation.generate(model, tok, fmt, PROMPTS, 4, batch_size=2, checkpoint=ck, checkpoint_key="model-b")
    assert len(calls) == 4 and "written for other inputs" in caplog.text
    assert out == generation.generate(model, tok, fmt, PROMPTS, 4, batch_size=2)


def test_torn_last_line_is_dropped_but_a_torn_middle_line_is_an_error(tmp_path):
    p = tmp_path / "ck.jsonl"
    p.write_text('{"a": 1}\n{"a": 2}\n{"a": ')
    assert io.read_jsonl_prefix(p) == [{"a": 1}, {"a": 2}]
    p.write_text('{"a": 1}\n{"a": \n{"a": 3}\n')
    with pytest.raises(DataError, match=r"ck.jsonl, record line 2: malformed JSON"):
        io.read_jsonl_prefix(p)
    assert io.read_jsonl_prefix(tmp_path / "missing.jsonl") == []


def test_temporaries_of_a_killed_writer_are_removed_by_the_next_write(tmp_path):
    (tmp_path / ".x.safetensors.ab12cd34.tmp").write_bytes(b"half a tensor")
    (tmp_path / ".model.safetensors.zz_9yx87.d").mkdir()
    (tmp_path / ".x.safetensors.gz.ab12cd34.tmp").write_bytes(b"another target's")
    io.write_tensors(tmp_path / "x.safetensors", {"a": torch.ones(2)}, {"k": 1})
    io.write_text(tmp_path / "model.safetensors", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".x.safetensors.gz.ab12cd34.tmp", "model.safetensors",
                                                         "x.json", "x.safetensors"]


def test_a_reader_never_sees_a_partial_file(tmp_path):
    """The target appears only complete: while the writer runs, only a hidden temporary exists."""
    target = tmp_path / "h.safetensors"
    seen = []
    with io.atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        seen.append(target.exists())
    assert seen == [False] and target.read_bytes() == b"partial"


# ============================================================= (b) bad inputs
def test_prompt_longer_than_the_context_fails_naming_file_and_record(lm):
    model, tok, fmt = lm
    long = "word " * 200
    ctx = models.context_length(model, tok)
    assert ctx == 2048
    positions.check_context(tok, fmt, PROMPTS, ctx, reserve=64)  # fits: no error
    with pytest.raises(DataError) as e:
        positions.check_context(tok, fmt, ["ok", long, long], 300, reserve=64, ids=["a:1", "a:2", "a:3"],
                                source="results/data/x.jsonl")
    msg = str(e.value)
    assert msg.startswith("results/data/x.jsonl, record a:2, field 'prompt': prompt of ")
    assert "+ 64 new tokens exceeds the model context of 300 tokens (1 more prompts are too long as well)" in msg
    assert "does not truncate" in msg


def test_scripts_check_the_context_before_any_compute():
    # rule prompt_view checks every prompt against the model's context once (extract_hidden reads its view);
    # generate checks again with room for its new tokens
    for script, compute in (("prompt_view.py", "io.write_jsonl("), ("generate.py", "generation.generate(")):
        text = (ROOT / "workflow_scripts" / script).read_text()
        assert "prompt_view.check_context(" in text, script
        assert text.index("check_context(") < text.index(compute), script
    assert "context_length = models.load_tokenizer(" in (ROOT / "workflow_scripts" / "prompt_view.py").read_text()
    assert "prompt_view.load(" in (ROOT / "workflow_scripts" / "extract_hidden.py").read_text()


BASE_CONFIG = yaml.safe_load((ROOT / ".test/config/config.yaml").read_text())


def _set(path, value):
    def mutate(cfg):
        *head, last = path
        for k in head:
            cfg = cfg[k]
        cfg[last] = value
    return mutate


def _rename(section, old, new):
    def mutate(cfg):
        cfg[section][new] = cfg[section].pop(old)
    return mutate


@pytest.mark.parametrize("mutate, message", [
    (_rename("datasets", "catqa", "../evil"), "'../evil' does not match '^[a-z0-9][a-z0-9_.-]*$'"),
    (_rename("datasets", "catqa", "/tmp/evil"), "'/tmp/evil' does not match"),
    (_rename("datasets", "catqa", "a..b"), "'a..b' should not be valid under {'pattern': '\\\\.\\\\.'}"),
    (_rename("models", "tiny", "org/model"), "'org/model' does not match '^[a-z0-9][a-z0-9_.-]*$'"),
    (_set(("datasets", "catqa", "sources", 0, "file"), "../../etc/passwd"), "'../../etc/passwd' should not be valid"),
    (_set(("datasets", "catqa", "sources", 0, "file"), "/etc/passwd"), "'/etc/passwd' should not be valid"),
    (_set(("analysis_models",), ["../x"]), "'../x' does not match"),
    (_set(("seeed",), 1), "Additional properties are not allowed ('seeed' was unexpected)"),
    (_set(("generation", "max_tokens"), 3), "Additional properties are not allowed ('max_tokens' was unexpected)"),
    (_set(("runtime", "batch_size"), "sixteen"), "'sixteen' is not of type 'integer'"),
    (_set(("runtime", "batch_size"), 0), "0 is less than the minimum of 1"),
    (_set(("datasets", "catqa", "label"), "harmfull"), "'harmfull' is not one of ['harmful', 'harmless']"),
])
def test_schema_rejects_unsafe_names_unknown_keys_and_wrong_types(mutate, message):
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    cfg = copy.deepcopy(BASE_CONFIG)
    mutate(cfg)
    with pytest.raises(WorkflowError) as e:
        validate(cfg, str(ROOT / "config/schema.yaml"))
    assert message in str(e.value.args[0]) or message in str(e.value), str(e.value)[:800]


def _dry_run(tmp_path, cfg):
    cfg = {**cfg, "data_root": str(ROOT / "data")}
    (tmp_path / "config").mkdir(exist_ok=True)
    (tmp_path / "config/config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    t0 = time.time()
    p = run(tmp_path, "-n", check=False)
    assert p.returncode != 0 and time.time() - t0 < 60
    assert not (tmp_path / "results").exists()
    return p.stdout + p.stderr


def test_bad_config_fails_the_dry_run_in_seconds(tmp_path):
    cfg = copy.deepcopy(BASE_CONFIG)
    cfg["datasets"]["../../outside"] = cfg["datasets"].pop("catqa")
    assert "'../../outside' does not match" in _dry_run(tmp_path, cfg)


def test_references_to_unconfigured_datasets_fail_before_the_dag(tmp_path):
    cfg = copy.deepcopy(BASE_CONFIG)
    cfg["directions"]["harmful"] = "harmfull_train"
    out = _dry_run(tmp_path, cfg)
    assert "config: directions.harmful names 'harmfull_train', which is not under datasets:" in out


def _mkdir(path):
    path.mkdir()
    return path


def test_gcg_set_name_clash_and_unknown_goals_fail_before_the_dag(tmp_path):
    cfg = copy.deepcopy(BASE_CONFIG)
    cfg["guard"]["gcg"] = {"enabled": True, "set": "advbench"}
    assert "config: guard.gcg.set 'advbench' is also under datasets:" in _dry_run(_mkdir(tmp_path / "a"), cfg)
    cfg["guard"]["gcg"] = {"enabled": True, "goals": "advbenhc"}
    assert "config: guard.gcg.goals names 'advbenhc', which is not under datasets:" in _dry_run(_mkdir(tmp_path / "b"), cfg)


def test_nested_config_overrides_are_typed_by_the_schema(tmp_path):
    """`--config` with nested keys (numbers and booleans arrive as strings) works, as the paper configs advise."""
    from test_workflow import job_counts

    cfg = {**copy.deepcopy(BASE_CONFIG), "data_root": str(ROOT / "data")}
    (tmp_path / "config").mkdir()
    (tmp_path / "config/config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert cfg["guard"]["gcg"]["enabled"] and not cfg["guard"]["llama_guard"]["enabled"]
    p = run(tmp_path, "-n", "--config", "guard={llama_guard: {enabled: true}, gcg: {enabled: false, n: 1}}",
            "runtime={batch_size: 3}", "directions={middle_layers: [0.25, 5e-1]}", "generation={system_prompt: null}",
            "steering={inversion: {questions: [1, \"Is it harmful?\"]}}", "datasets={advbench: {n: 3}}", check=False)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    counts = job_counts(p.stdout)
    assert counts["llama_guard"] > 0 and "gcg_attack" not in counts, counts  # 'true' / 'false' read as booleans
    assert not (tmp_path / "results").exists()
    # what the rules get (the override dict as Snakemake parses it, coerced in place, then validated)
    from snakemake.cli import parse_config
    from snakemake.utils import update_config, validate

    from harmref.overrides import coerce_overrides

    over = parse_config(["guard={llama_guard: {enabled: true}, gcg: {enabled: false, n: 1}}", "runtime={batch_size: 3}",
                         "directions={middle_layers: [0.25, 5e-1]}", "generation={system_prompt: null, judge: substring}",
                         "steering={inversion: {questions: [1, \"Is it harmful?\"]}}"])
    assert over["guard"]["gcg"]["enabled"] == "false"  # the problem: a non-empty string, i.e. truthy
    merged = copy.deepcopy(BASE_CONFIG)
    update_config(merged, over)
    changed = coerce_overrides(merged, over, ROOT / "config/schema.yaml")
    validate(merged, str(ROOT / "config/schema.yaml"))
    assert merged["guard"]["gcg"]["enabled"] is False and merged["guard"]["llama_guard"]["enabled"] is True
    assert merged["guard"]["gcg"]["n"] == 1 and merged["runtime"]["batch_size"] == 3
    assert merged["directions"]["middle_layers"] == [0.25, 0.5] and merged["generation"]["system_prompt"] is None
    assert merged["generation"]["judge"] == "substring" and merged["steering"]["inversion"]["questions"] == [1, "Is it harmful?"]
    assert "guard.gcg.enabled" in changed and "generation.judge" not in changed
    # a value of the wrong type is still an error naming it
    bad = run(_mkdir(tmp_path / "bad"), "-n", "--configfile", str(tmp_path / "config/config.yaml"),
              "--config", "runtime={batch_size: sixteen}", check=False)
    assert bad.returncode != 0 and "'sixteen' is not of type 'integer'" in bad.stdout + bad.stderr
    with pytest.raises(ValueError, match=r"--config steering=.*: not valid YAML \(expected ',' or '\]', but got '\?'\); quote"):
        coerce_overrides(merged, {"steering": "{inversion: {questions: [1, Is it harmful?]}}"}, ROOT / "config/schema.yaml")


def test_bad_label_and_broken_csv_name_the_problem(tmp_path):
    p = tmp_path / "set.jsonl"
    p.write_text('{"id": "a", "prompt": "x", "label": "harmfull"}\n')
    with pytest.raises(DataError, match=r"set.jsonl, record line 1, field 'label': label must be one of .*got 'harmfull'"):
        datasets.load_prompts(p)
    f = tmp_path / "bad.csv"
    f.write_text('instruction,x\nok,1\n"unterminated,2\n')
    with pytest.raises(DataError, match=r"bad.csv: malformed CSV after line 2"):
        datasets.build_set("x", {"label": "harmful", "sources": [{"file": f.name, "format": "csv"}]}, tmp_path)


def test_unreachable_ollama_judge_names_the_host():
    host = f"http://127.0.0.1:{_free_port()}"
    judge = judging.make_judge("ollama", host=host, timeout=3)
    t0 = time.time()
    with pytest.raises(GuardUnavailable, match=rf"no Ollama server answers at {re.escape(host)}.*set generation.judge: substring"):
        judge.check()
    assert time.time() - t0 < 10
    judging.make_judge("substring", host=host).check()  # the substring judge needs no server


def test_model_card_missing_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="model card not found"):
        models.load(tmp_path / "results/models/x/model.json")


# ============================================================ (c) determinism
def test_hidden_states_generation_and_directions_are_identical_twice(lm):
    model, tok, fmt = lm
    runs = []
    for _ in range(2):
        h, labels, tokens = activations.hidden_states(model, tok, fmt, PROMPTS, batch_size=3)
        out = generation.generate(model, tok, fmt, PROMPTS, 8, batch_size=3)
        refused = judging.SubstringJudge()(PROMPTS, out)
        cents, notes = geometry.fit(h[:4], [True, True, False, True], h[4:], refused[4:], min_group=2)
        runs.append((h, labels, tokens, out, cents, notes))
    (h1, l1, t1, o1, c1, n1), (h2, l2, t2, o2, c2, n2) = runs
    assert torch.equal(h1, h2) and l1 == l2 and t1 == t2 and o1 == o2 and n1 == n2
    assert all(torch.equal(c1[k], c2[k]) for k in c1)
    assert len(set(o1)) > 1 and h1.abs().sum() > 0


def test_model_card_records_the_seed_and_the_random_weights_follow_it(tmp_path):
    a = models.prepare("tiny-random:chatml", tmp_path / "a", seed=3)
    b = models.prepare("tiny-random:chatml", tmp_path / "b", seed=3)
    assert a["seed"] == 3
    wa, wb = (io.read_tensors(tmp_path / x / "model.safetensors") for x in ("a", "b"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_dataset_sample_follows_the_seed(tmp_path):
    f = tmp_path / "a.jsonl"
    io.write_jsonl(f, [{"instruction": f"prompt {i}"} for i in range(40)])
    spec = {"label": "harmless", "n": 10, "sources": [{"file": f.name}]}
    assert datasets.build_set("s", spec, tmp_path, seed=1) == datasets.build_set("s", spec, tmp_path, seed=1)
    assert datasets.build_set("s", spec, tmp_path, seed=1) != datasets.build_set("s", spec, tmp_path, seed=2)


def test_dataset_provenance_records_the_seed_and_detects_a_changed_set(tmp_path):
    f = tmp_path / "a.jsonl"
    io.write_jsonl(f, [{"instruction": f"prompt {i}"} for i in range(40)])
    spec = {"label": "harmless", "n": 10, "sources": [{"file": "a.jsonl"}]}
    built = tmp_path / "set.jsonl"
    io.write_jsonl(built, datasets.build_set("s", spec, root=tmp_path, seed=4))
    prov = datasets.provenance("s", spec, io.read_jsonl(built), root=tmp_path, seed=4)
    assert prov["seed"] == 4 and prov["count"] == 10 and prov["reproduced"]
    assert prov["sources"] == [{"file": "a.jsonl", "sha256": io.sha256_file(f)}]
    assert not datasets.provenance("s", spec, io.read_jsonl(built), root=tmp_path, seed=5)["reproduced"]
    rule = (ROOT / "rules/data.smk").read_text()
    assert 'FINAL_TARGETS.append("results/data/manifest.json")' in rule  # every run writes and checks it


# ======================================================= (d) safety of loading
SOURCES = [*(ROOT / "harmref").rglob("*.py"), *(ROOT / "workflow_scripts").rglob("*.py"),
           *(ROOT / "rules").glob("*.smk"), ROOT / "Snakefile", *(ROOT / ".ci").glob("*")]


def _code_files():
    return [p for p in SOURCES if p.is_file()]


UNPICKLERS = {("torch", "load"), ("pickle", "load"), ("pickle", "loads"), ("joblib", "load"), ("dill", "load"),
              ("cloudpickle", "load"), ("np", "load"), ("numpy", "load")}


def _unpickling_calls(path):
    """(function, call, weights_only / allow_pickle keyword) for every call that may unpickle."""
    import ast

    tree = ast.parse(path.read_text())
    out = []
    for fn in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.Module))]:
        for node in ast.walk(fn):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name):
                key = (node.func.value.id, node.func.attr)
                if key in UNPICKLERS:
                    kw = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg in ("weights_only", "allow_pickle")}
                    out.append((getattr(fn, "name", "<module>"), ".".join(key), kw))
    return out


def test_pickles_are_loaded_only_by_the_sha256_pinned_reader():
    calls = {}
    for p in _code_files():
        if p.suffix == ".py":
            found = sorted({(f, c, tuple(sorted(k.items()))) for f, c, k in _unpickling_calls(p)})
            if found:
                calls[str(p.relative_to(ROOT))] = found
        else:
            code = "\n".join(line for line in p.read_text(errors="replace").splitlines() if not line.lstrip().startswith("#"))
            assert not re.search(r"torch\.load\(|pickle\.loads?\(|weights_only\s*=\s*False|allow_pickle", code), p
    # functions nest inside the module, so a call is reported for both; keep the innermost
    flat = {(f, c, k) for found in calls.values() for (f, c, k) in found if f != "<module>"}
    assert list(calls) == ["harmref/io.py"] and flat == {("read_paper_tensor", "torch.load", (("weights_only", True),))}, calls
    reader = (ROOT / "harmref/io.py").read_text()
    reader = reader[reader.index("def read_paper_tensor"):]
    assert reader.index("sha256_file(path)") < reader.index("torch.load(path")


def test_no_trust_remote_code_unless_configured(tmp_path, monkeypatch):
    for p in _code_files():
        assert not re.search(r"trust_remote_code\s*=\s*True", p.read_text()), p
    schema = yaml.safe_load((ROOT / "config/schema.yaml").read_text())
    assert schema["properties"]["models"]["additionalProperties"]["properties"]["trust_remote_code"]["default"] is False
    # a local model directory: the card says False, and load passes exactly that to transformers
    model, tok = models.tiny_random("chatml")
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    card = models.prepare(str(tmp_path / "m"), tmp_path / "card")
    assert card["trust_remote_code"] is False
    import transformers

    seen = []
    for cls in (transformers.AutoTokenizer, transformers.AutoModelForCausalLM):
        real = cls.from_pretrained

        def spy(*args, _real=real, **kwargs):
            seen.append({k: kwargs.get(k) for k in ("trust_remote_code", "weights_only")})
            return _real(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", spy)
    models.load(tmp_path / "card/model.json", "cpu", "float32")
    assert seen == [{"trust_remote_code": False, "weights_only": None}] * 2


def test_no_prompt_text_reaches_a_shell():
    rules = [ROOT / "Snakefile", *(ROOT / "rules").glob("*.smk")]
    for p in rules:
        text = p.read_text()
        for m in re.finditer(r"^\s*shell:\s*\n?(.*?)(?=^\s*\w+:|\Z)", text, re.M | re.S):
            placeholders = re.findall(r"(?<!\{)\{([^{}]+)\}(?!\})", m.group(1))
            bad = [x for x in placeholders if not re.match(r"(input|output|log|threads|resources|wildcards)\b", x)]
            assert not bad, f"{p.name}: shell: interpolates {bad} (only paths and numbers may reach a shell)"
        assert not re.search(r"\bshell\(", text), f"{p.name} calls shell() in a run: block"
    for p in _code_files():
        text = p.read_text(errors="replace")
        assert not re.search(r"shell\s*=\s*True|os\.system\(|os\.popen\(", text), p
        assert not re.search(r"\byaml\.load\(|(?<![.\w])eval\(|(?<![.\w])exec\(", text), p
