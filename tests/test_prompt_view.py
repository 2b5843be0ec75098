"""A model's view of a prompt set (harmref.prompt_view, rule prompt_view): positions written once, read as they are."""

import pytest
import torch

from harmref import activations, generation, io, models, positions, prompt_view

RECORDS = [
    {"id": "s:1", "prompt": "Write a poem about the sea.", "label": "harmless", "category": None, "source": "s.json"},
    {"id": "s:2", "prompt": "How do I pick a lock?", "label": "harmful", "category": "crime", "source": "s.json"},
    {"id": "s:3", "prompt": "Say <|im_end|> and </s> as text", "label": "harmful", "category": None, "source": "s.json"},
    {"id": "s:4", "prompt": "Hi", "label": "harmless", "category": None, "source": "s.json"},
]


def write_view(tmp_path, tok, fmt, records=RECORDS, context_length=2048):
    rows = prompt_view.build(tok, fmt, records)
    side = prompt_view.sidecar(fmt, rows, model="m", dataset="d", system_prompt=None, normalise_endings=False,
                               context_length=context_length, source="results/data/d.jsonl")
    path = tmp_path / "d.jsonl"
    io.write_jsonl(path, rows)
    io.write_json(tmp_path / "d.json", side)
    return path, rows


@pytest.mark.parametrize("post", [True, False])
def test_view_positions_are_encodes(tiny, post):
    _, _, tok = tiny
    fmt = positions.ChatFormat.from_tokenizer(tok, post_instruction=post)
    rows = prompt_view.build(tok, fmt, RECORDS)
    batch, own = positions.encode(tok, fmt, [r["prompt"] for r in RECORDS]), positions.pad(tok, prompt_view.tokenized(rows))
    for a, b in zip(batch.__dict__.values(), own.__dict__.values()):
        assert torch.equal(a, b)
    for r in rows:
        assert r["text"] == fmt.render(r["prompt"])[0] and r["t_post_inst"] == len(r["input_ids"]) - 1
        assert r["context_end"] == r["t_inst"] + 1 and r["category"] == RECORDS[rows.index(r)]["category"]
        assert r["input_ids"] == positions.tokenize_prompt(tok, fmt, r["prompt"])[0]
    # without post-instruction tokens, t_inst is the prompt's last token
    assert all(r["t_inst"] == r["t_post_inst"] for r in rows) == (not post)


def test_models_read_the_view_and_get_the_same_outputs(chatml, tmp_path):
    model, tok = chatml
    fmt = positions.ChatFormat.from_tokenizer(tok)
    path, _ = write_view(tmp_path, tok, fmt)
    rows, side, fmt2 = prompt_view.load(path, tok, "m")
    assert fmt2 == fmt and [r["id"] for r in rows] == [r["id"] for r in RECORDS] and side["max_tokens"] > 0
    prompts = [r["prompt"] for r in rows]
    ids = prompt_view.tokenized(rows)
    h, labels, toks = activations.hidden_states(model, tok, fmt, prompts, batch_size=3)
    h2, labels2, toks2 = activations.hidden_states(model, tok, fmt, prompts, batch_size=3, tokenized=ids)
    assert torch.equal(h, h2) and labels == labels2 and toks == toks2
    out = generation.generate(model, tok, fmt, prompts, 6, batch_size=3)
    assert generation.generate(model, tok, fmt, prompts, 6, batch_size=3, tokenized=ids) == out


def test_a_view_of_another_template_or_a_broken_row_is_refused(chatml, tmp_path):
    model, tok = chatml
    fmt = positions.ChatFormat.from_tokenizer(tok)
    path, rows = write_view(tmp_path, tok, fmt)
    other = positions.ChatFormat.from_tokenizer(tok, "You are terse.")
    with pytest.raises(io.DataError, match=r"d\.jsonl, field 'template_fingerprint'.*rerun prompt_view"):
        prompt_view.read(path, other)
    for field, value, why in [("t_inst", len(rows[1]["input_ids"]), "not an index"), ("input_ids", [], "token ids"),
                              ("t_post_inst", 0, "not the last"), ("context_end", "3", "not an index")]:
        io.write_jsonl(path, [rows[0], {**rows[1], field: value}])
        with pytest.raises(io.DataError, match=rf"record s:2, field '{field}'.*{why}"):
            prompt_view.read(path, fmt)
    io.write_jsonl(path, [{k: v for k, v in rows[0].items() if k != "text"}])
    with pytest.raises(io.DataError, match=r"record s:1, field 'text'"):
        prompt_view.read(path, fmt)


def test_context_check_names_the_record(chatml, tmp_path):
    _, tok = chatml
    fmt = positions.ChatFormat.from_tokenizer(tok)
    n = max(len(r["input_ids"]) for r in prompt_view.build(tok, fmt, RECORDS))
    path, rows = write_view(tmp_path, tok, fmt, context_length=n + 4)
    rows, side = prompt_view.read(path, fmt)
    prompt_view.check_context(rows, side, 4, path)
    longest = max(rows, key=lambda r: len(r["input_ids"]))["id"]
    with pytest.raises(io.DataError, match=rf"record {longest}, field 'prompt'.*\+ 5 new tokens exceeds"):
        prompt_view.check_context(rows, side, 5, path)


def test_load_tokenizer_without_weights(chatml, tmp_path):
    model, tok = chatml
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    tok2, n = models.load_tokenizer(tmp_path / "m")
    assert tok2.padding_side == "left" and tok2.pad_token is not None
    assert n == model.config.max_position_embeddings
    assert tok2("hello world")["input_ids"] == tok("hello world")["input_ids"]
