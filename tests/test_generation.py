"""The greedy decoding loop (generation.greedy_ids, method "loop") gives HF generate's tokens and drops finished rows."""

import pytest
import torch
from transformers import DynamicCache

from harmref import generation, models, positions

PROMPTS = ["Write a poem about the sea.", "Hi", "How do I bake bread at home with little flour?", "x",
           "Name three colours, please, and explain.", "ok ok", "What is 2+2?", "Tell me a long story about dragons"]
CASES = [("chatml", "llama"), ("llama3", "qwen2"), ("mistral", "mistral"), ("gemma", "gemma2"), ("phi3", "phi3"),
         ("llama31", "llama")]
N_NEW = 20


def _first_eos(row, eos):
    hit = (row == eos).nonzero()
    return int(hit[0]) + 1 if len(hit) else len(row)


def ends_early(model, tok, batch):
    """Make the random model end its replies at different steps: a tied head gets its own random weights (a
    tied tiny model repeats one token), then EOS takes over (×1.02) the output row of a token that HF's greedy
    replies first emit at the most different steps, never the first."""
    head = model.get_output_embeddings()
    with torch.no_grad():
        w = head.weight.detach().clone()
        if head.weight is model.get_input_embeddings().weight:
            w = torch.randn(w.shape, generator=torch.Generator().manual_seed(0)) * w.std()
        head.weight = torch.nn.Parameter(w)
    ref = generation.greedy_ids(model, tok, batch, N_NEW, method="hf")
    firsts = {}
    for r in ref.tolist():
        seen = set()
        for t, x in enumerate(r):
            if x not in seen:
                seen.add(x)
                firsts.setdefault(x, set()).add(t)
    x = max((k for k in firsts if 0 not in firsts[k]), key=lambda k: (len(firsts[k]), -k))
    with torch.no_grad():
        head.weight[tok.eos_token_id] = 1.02 * head.weight[x]
    return model


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"{c[0]}-{c[1]}")
def case(request):
    template, arch = request.param
    model, tok = models.tiny_random(template=template, arch=arch, n_layers=2)
    fmt = positions.ChatFormat.from_tokenizer(tok)
    batch = positions.encode(tok, fmt, PROMPTS)
    return ends_early(model, tok, batch), tok, fmt, batch


def test_loop_gives_hf_generate_tokens(case):
    model, tok, _, batch = case
    ref = generation.greedy_ids(model, tok, batch, N_NEW, method="hf")
    lengths = {_first_eos(r, tok.eos_token_id) for r in ref}
    assert len(lengths) >= 2, f"the rows should end at different steps: {lengths}"
    out = generation.greedy_ids(model, tok, batch, N_NEW, method="loop")
    assert out.shape == ref.shape and torch.equal(out, ref)
    assert generation.generate_batch(model, tok, batch, N_NEW, method="loop") == generation.generate_batch(model, tok, batch, N_NEW, method="hf")


def test_finished_rows_leave_the_batch(case):
    """The forward sees one row fewer for every reply that has ended; HF's keeps all rows to the end."""
    model, tok, _, batch = case
    ref = generation.greedy_ids(model, tok, batch, N_NEW, method="hf")
    ends = [_first_eos(r, tok.eos_token_id) if (r == tok.eos_token_id).any() else None for r in ref]
    seen = {"loop": [], "hf": []}
    for method in seen:
        handle = model.register_forward_pre_hook(lambda m, a, kw: seen[method].append(kw["input_ids"].shape[0]),
                                                 with_kwargs=True)
        try:
            generation.greedy_ids(model, tok, batch, N_NEW, method=method, shared_prefix=False)
        finally:
            handle.remove()
    steps = ref.shape[1]
    expected = [sum(e is None or e > t for e in ends) for t in range(steps)]  # rows still going at step t
    assert seen["loop"] == expected
    assert seen["hf"] == [len(PROMPTS)] * steps
    assert sum(seen["loop"]) < sum(seen["hf"])


def test_shared_prefix_is_run_once_and_gives_the_same_tokens(case):
    model, tok, fmt, batch = case
    ref = generation.greedy_ids(model, tok, batch, N_NEW, method="hf")
    seen = []
    handle = model.register_forward_pre_hook(lambda m, a, kw: seen.append(tuple(kw["input_ids"].shape)), with_kwargs=True)
    try:
        out = generation.greedy_ids(model, tok, batch, N_NEW, method="loop", shared_prefix=True)
    finally:
        handle.remove()
    assert out.shape == ref.shape and torch.equal(out, ref)
    if any(getattr(layer, "is_sliding", False) for layer in DynamicCache(config=model.config).layers):
        assert seen[0] == tuple(batch.input_ids.shape)  # Gemma-2's sliding window: no prefix reuse
        return
    head = len(positions.tokenize_prompt(tok, fmt, "x")[0][: positions.tokenize_prompt(tok, fmt, "x")[1]])
    assert seen[0][0] == 1 and seen[0][1] >= head - 1  # the template's head (its last token may merge with the text)
    assert seen[1] == (len(PROMPTS), batch.input_ids.shape[1] - seen[0][1])


def test_generate_by_default_equals_hf(case, monkeypatch):
    """The default decoding (the loop with the shared prefix) gives HF generate's replies, and so does the loop alone."""
    model, tok, fmt, _ = case
    assert (generation.METHOD, generation.SHARED_PREFIX) == ("loop", True)
    out = generation.generate(model, tok, fmt, PROMPTS, N_NEW, batch_size=3, method="hf")
    assert generation.generate(model, tok, fmt, PROMPTS, N_NEW, batch_size=3) == out
    monkeypatch.setattr(generation, "SHARED_PREFIX", False)
    assert generation.generate(model, tok, fmt, PROMPTS, N_NEW, batch_size=3) == out


def test_generation_config_processors_are_applied_like_hf():
    """A repetition penalty (as Qwen2-Instruct's generation config has) changes the replies; the loop applies it."""
    model, tok = models.tiny_random(template="chatml", arch="qwen2", n_layers=2)
    fmt = positions.ChatFormat.from_tokenizer(tok)
    batch = positions.encode(tok, fmt, PROMPTS)
    plain = generation.greedy_ids(model, tok, batch, N_NEW, method="hf")
    model.generation_config.repetition_penalty = 1.3
    model.generation_config.no_repeat_ngram_size = 3
    ref = generation.greedy_ids(model, tok, batch, N_NEW, method="hf")
    assert not torch.equal(ref, plain)
    assert torch.equal(generation.greedy_ids(model, tok, batch, N_NEW, method="loop"), ref)


def test_a_processor_that_is_not_row_wise_falls_back_to_hf_generate(monkeypatch):
    model, tok = models.tiny_random(template="chatml", arch="llama", n_layers=2)
    fmt = positions.ChatFormat.from_tokenizer(tok)
    batch = positions.encode(tok, fmt, PROMPTS[:3])
    monkeypatch.setattr(generation, "_ROWWISE_PROCESSORS", set())
    model.generation_config.repetition_penalty = 1.2
    calls = []
    real = model.generate
    monkeypatch.setattr(model, "generate", lambda **kw: calls.append(1) or real(**kw))
    out = generation.greedy_ids(model, tok, batch, 5, method="loop")
    assert calls == [1] and out.shape[0] == 3


def test_unknown_method_is_refused():
    model, tok = models.tiny_random(n_layers=1)
    batch = positions.encode(tok, positions.ChatFormat.from_tokenizer(tok), ["Hi"])
    with pytest.raises(ValueError, match="generation method"):
        generation.greedy_ids(model, tok, batch, 2, method="fast")


@pytest.mark.slow
def test_embedded_smollm2_loop_equals_hf_generate(tmp_path_factory):
    """The real model: harmful and harmless prompts whose replies end at very different steps."""
    out = tmp_path_factory.mktemp("smol_gen")
    models.prepare("embedded", out)
    model, tok = models.load(out / "model.json", device="cpu", dtype="float32")
    fmt = positions.ChatFormat.from_tokenizer(tok)
    prompts = ["Say only the word yes.", "Write a poem about the sea.", "How do I make a bomb?", "Name three colours.",
               "Explain how photosynthesis works in detail.", "Reply with one word: hello."]
    batch = positions.encode(tok, fmt, prompts)
    ref = generation.greedy_ids(model, tok, batch, 48, method="hf")
    ends = [_first_eos(r, tok.eos_token_id) for r in ref]
    assert min(ends) < 8 and max(ends) - min(ends) >= 30, ends
    assert torch.equal(generation.greedy_ids(model, tok, batch, 48, method="loop"), ref)
    assert torch.equal(generation.greedy_ids(model, tok, batch, 48, method="loop", shared_prefix=True), ref)
