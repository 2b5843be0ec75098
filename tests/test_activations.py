import torch

from harmref import activations, hooks
from harmref.positions import ChatFormat

PROMPTS = ["Hi.", "Tell me how to bake a very large chocolate cake.", "Why is the sky blue?", "Explain RoPE briefly."]


def test_batched_equals_unbatched(tiny):
    _, model, tok = tiny
    fmt = ChatFormat.from_tokenizer(tok)
    batched, labels, tokens = activations.hidden_states(model, tok, fmt, PROMPTS, batch_size=4)
    single, _, _ = activations.hidden_states(model, tok, fmt, PROMPTS, batch_size=1)
    n_layers = len(hooks.decoder_layers(model))
    assert batched.shape[:3] == (4, n_layers + 1, len(labels))
    torch.testing.assert_close(batched, single, atol=1e-4, rtol=1e-4)
    assert hooks.n_hooks(model) == 0, "hooks leaked"


def test_entries_match_hf_hidden_states(chatml):
    """entry l = input of layer l = hidden_states[l]; last entry = last layer output (before the final norm)."""
    model, tok = chatml
    fmt = ChatFormat.from_tokenizer(tok)
    h, labels, _ = activations.hidden_states(model, tok, fmt, ["Hello there."], batch_size=1)
    text = fmt.render("Hello there.")[0]
    ids = tok(text, add_special_tokens=False, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    L = len(hooks.decoder_layers(model))
    inst = labels.index("t_inst")
    t_inst = ids.shape[1] - 1 - (len(labels) - 1 - inst)
    for l in range(L):
        torch.testing.assert_close(h[0, l, inst], out.hidden_states[l][0, t_inst], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h[0, L - 1, -1], out.hidden_states[L - 1][0, -1], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(h[0, L, -1], out.hidden_states[L][0, -1]), "last HF entry is after the final norm"


def test_storage_cast_keeps_float32_on_overflow():
    assert activations.storage_cast(torch.ones(2, 2)).dtype == torch.float16
    assert activations.storage_cast(torch.full((2,), 1e5)).dtype == torch.float32


def test_capture_skips_the_lm_head_and_matches_the_full_forward(tiny):
    """Extraction runs the decoder stack alone (no vocab logits) and gives the full model's hidden states."""
    _, model, tok = tiny
    fmt = ChatFormat.from_tokenizer(tok)
    head = model.get_output_embeddings()
    calls = []
    handle = head.register_forward_hook(lambda *a: calls.append(1))
    try:
        h, _, _ = activations.hidden_states(model, tok, fmt, PROMPTS, batch_size=4)
    finally:
        handle.remove()
    assert calls == [], "the LM head ran during extraction"
    assert activations.body(model) is not model
    # reference: the same hooks around the whole causal LM
    from harmref.positions import capture_columns, encode

    batch = encode(tok, fmt, PROMPTS)
    cols = capture_columns(batch, 2, h.shape[2] - 3)
    n = len(hooks.decoder_layers(model))
    store = [None] * (n + 1)
    idx = torch.arange(len(PROMPTS))[:, None]

    def grab(k):
        def fn(x):
            store[k] = x[idx, cols].float()

        return fn

    with hooks.add_hooks(model, [("resid_pre", l, grab(l)) for l in range(n)] + [("resid_post", n - 1, grab(n))]):
        with torch.no_grad():
            model(**batch.model_inputs(), use_cache=False)
    ref = torch.stack(store, dim=1)
    direct = activations.capture(model, batch, cols)
    torch.testing.assert_close(direct, ref, atol=1e-5, rtol=0)
