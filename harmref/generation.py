"""Batched greedy generation with left padding."""

from __future__ import annotations

import contextlib

import torch

from .activations import sort_by_length
from .positions import ChatFormat, encode


@torch.no_grad()
def generate_batch(model, tokenizer, batch, max_new_tokens: int, hooks_cm=None) -> list[str]:
    """Greedy continuations of one encoded batch, decoded without special tokens."""
    device = next(model.parameters()).device
    b = batch.to(device)
    with hooks_cm if hooks_cm is not None else contextlib.nullcontext():
        out = model.generate(
            **b.model_inputs(),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    new = out[:, b.input_ids.shape[1] :]
    return tokenizer.batch_decode(new, skip_special_tokens=True)


def generate(
    model,
    tokenizer,
    fmt: ChatFormat,
    instructions: list[str],
    max_new_tokens: int = 64,
    batch_size: int = 16,
    questions: list[str] | None = None,
    progress=None,
) -> list[str]:
    """Greedy responses to every instruction, in input order; prompts sorted by length internally."""
    lengths = [len(fmt.render(x)[0]) for x in instructions]
    order = sort_by_length(lengths)
    out: list[str | None] = [None] * len(instructions)
    for s in range(0, len(order), batch_size):
        rows = order[s : s + batch_size]
        batch = encode(tokenizer, fmt, [instructions[i] for i in rows], [questions[i] for i in rows] if questions else None)
        for i, text in zip(rows, generate_batch(model, tokenizer, batch, max_new_tokens)):
            out[i] = text
        if progress is not None:
            progress(len(rows))
    return out  # type: ignore[return-value]
