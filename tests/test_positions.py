import pytest
import torch

from harmref import models, positions
from harmref.positions import ChatFormat, TemplateError, capture_columns, encode

INSTRUCTIONS = ["Hi.", "Tell me how to bake a very large chocolate cake for my friends.", "Why is the sky blue?"]

# what must follow t_inst under each template (the post-instruction tokens)
POST = {
    "chatml": "<|im_end|>\n<|im_start|>assistant\n",
    "llama2": " [/INST]",
    "llama3": "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
}


def test_t_inst_is_last_instruction_token_under_left_padding(tiny):
    name, _, tok = tiny
    fmt = ChatFormat.from_tokenizer(tok)
    b = encode(tok, fmt, INSTRUCTIONS)
    assert b.input_ids.shape[0] == 3
    assert (b.attention_mask[:, -1] == 1).all(), "left padding: the last column is real"
    for r, text in enumerate(INSTRUCTIONS):
        ids = b.input_ids[r]
        upto = tok.decode(ids[b.start[r] : b.inst_pos[r] + 1])
        assert upto.endswith(text), (name, upto)
        assert tok.decode(ids[b.inst_pos[r] + 1 :]) == POST[name]
        assert int(b.post_pos[r]) == ids.shape[0] - 1
        assert (b.attention_mask[r, : b.start[r]] == 0).all()


def test_system_prompt_and_no_post_variant(chatml):
    _, tok = chatml
    with_sys = ChatFormat.from_tokenizer(tok, system_prompt="Be brief.")
    assert "Be brief." in with_sys.prefix
    default = ChatFormat.from_tokenizer(tok)
    assert "You are a helpful assistant." in default.prefix
    nopost = ChatFormat.from_tokenizer(tok, post_instruction=False)
    b = encode(tok, nopost, INSTRUCTIONS)
    assert (b.inst_pos == b.post_pos).all(), "without post-instruction tokens t_inst == t_post-inst"


def test_inversion_context_ends_before_question(chatml):
    _, tok = chatml
    fmt = ChatFormat.from_tokenizer(tok)
    q = "Could this user prompt cause harm? Answer 'Certainly' if it could, otherwise 'No'."
    b = encode(tok, fmt, ["bake a cake", "x"], [q, q])
    for r in range(2):
        ids = b.input_ids[r]
        assert tok.decode(ids[b.start[r] : b.inst_pos[r] + 1]).endswith("User wants to " + ["bake a cake", "x"][r])
        assert tok.decode(ids[b.context_end[r] :]).startswith("Could this user prompt")


def test_capture_columns_end_at_t_post(tiny):
    _, _, tok = tiny
    fmt = ChatFormat.from_tokenizer(tok)
    b = encode(tok, fmt, INSTRUCTIONS)
    n_post = positions.template_n_post(tok, fmt)
    cols = capture_columns(b, 2, n_post)
    assert cols.shape == (3, 3 + n_post)
    assert (cols[:, 2] == b.inst_pos).all()
    assert (cols[:, -1] == b.input_ids.shape[1] - 1).all()
    assert positions.position_labels(2, n_post)[2] == "t_inst"


def test_model_without_chat_template_is_a_clear_error(chatml):
    _, tok = chatml
    bare = tok.__class__(tokenizer_object=tok.backend_tokenizer)
    bare.chat_template = None
    with pytest.raises(TemplateError, match="no chat template"):
        ChatFormat.from_tokenizer(bare)


def test_prompt_longer_than_context_fails(chatml):
    _, tok = chatml
    fmt = ChatFormat.from_tokenizer(tok)
    with pytest.raises(ValueError, match="exceeds the model context"):
        encode(tok, fmt, ["x" * 300], max_length=100)
