"""Batches by length, and an out-of-memory batch split in halves instead of failing the job."""

import pytest
import torch

from harmref import activations, batching, generation
from harmref.positions import ChatFormat


def test_by_length_groups_similar_prompts():
    assert batching.by_length([5, 1, 3, 2, 4], 2) == [[1, 3], [2, 4], [0]]
    assert batching.by_length([], 4) == []


def test_run_by_length_returns_input_order_and_counts_progress(caplog):
    seen, done = [], []

    def fn(rows):
        seen.append(list(rows))
        if len(rows) > 1 and 0 in rows:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return [f"r{i}" for i in rows]

    out = batching.run_by_length(fn, [5, 1, 3, 2, 4], 2, "test batch", progress=done.append)
    assert out == ["r0", "r1", "r2", "r3", "r4"]
    assert seen == [[1, 3], [2, 4], [0]]  # the batches of by_length, shortest first
    assert done == [2, 2, 1]
    assert batching.run_by_length(fn, [9, 1], 2, "test batch") == ["r0", "r1"]  # [1, 0] split on the OOM
    assert "out of GPU memory on a test batch of 2 rows" in caplog.text
    assert batching.run_by_length(fn, [], 4) == []


def test_split_on_oom_halves_until_it_fits(caplog):
    calls = []

    def fn(rows):
        calls.append(len(rows))
        if len(rows) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return [r * 10 for r in rows]

    assert batching.split_on_oom(fn, [1, 2, 3, 4, 5]) == [10, 20, 30, 40, 50]
    assert calls == [5, 2, 3, 1, 2]
    assert "out of GPU memory on a batch of 5 rows" in caplog.text
    tensor = batching.split_on_oom(lambda rows: torch.tensor(fn(rows)), [1, 2, 3])
    assert tensor.tolist() == [10, 20, 30]
    with pytest.raises(torch.OutOfMemoryError):
        batching.split_on_oom(lambda rows: (_ for _ in ()).throw(torch.OutOfMemoryError("x")), [1, 2])


def test_an_oom_inside_extraction_and_generation_gives_the_same_results(chatml, monkeypatch):
    """Hidden states and greedy replies after a simulated OOM equal the ones of a batch that fit."""
    model, tok = chatml
    fmt = ChatFormat.from_tokenizer(tok)
    prompts = ["Hi.", "Tell me a story about a cat.", "Why is the sea salty?", "Name a colour."]
    h_ref, _, _ = activations.hidden_states(model, tok, fmt, prompts, batch_size=4)
    g_ref = generation.generate(model, tok, fmt, prompts, 5, batch_size=4)
    real_capture, real_generate = activations.capture, generation.generate_batch

    def capture(model_, batch, cols):
        if batch.input_ids.shape[0] > 1:
            raise torch.OutOfMemoryError("simulated")
        return real_capture(model_, batch, cols)

    def generate_batch(model_, tok_, batch, n, **kw):
        if batch.input_ids.shape[0] > 2:
            raise torch.OutOfMemoryError("simulated")
        return real_generate(model_, tok_, batch, n, **kw)

    monkeypatch.setattr(activations, "capture", capture)
    monkeypatch.setattr(generation, "generate_batch", generate_batch)
    h, _, _ = activations.hidden_states(model, tok, fmt, prompts, batch_size=4)
    torch.testing.assert_close(h, h_ref, atol=1e-4, rtol=1e-4)
    assert generation.generate(model, tok, fmt, prompts, 5, batch_size=4) == g_ref
