"""Batched greedy generation with left padding, optionally checkpointed batch by batch."""

from __future__ import annotations

import contextlib
import json
import logging

import torch

from . import io
from .activations import sort_by_length
from .batching import split_on_oom
from .positions import ChatFormat, encode

log = logging.getLogger(__name__)


@torch.no_grad()
def generate_batch(model, tokenizer, batch, max_new_tokens: int, hooks_cm=None) -> list[str]:
    """Greedy continuations of one encoded batch, decoded without special tokens."""
    from .models import input_device

    device = input_device(model)
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
    checkpoint=None,
    checkpoint_key=None,
) -> list[str]:
    """Greedy responses to every instruction, in input order; prompts sorted by length internally.

    `checkpoint`: a side file (JSON lines) to which every finished batch is appended.
    A rerun with the same inputs (instructions, questions, template, max_new_tokens,
    batch_size and the caller's `checkpoint_key`: `models.checkpoint_key(card, model)`,
    the identity of the weights with device and dtype) skips
    the batches already there, so the result equals an uninterrupted run; a file
    written for other inputs is discarded. The caller deletes it (`io.remove`) once
    the real output is written.
    """
    lengths = [len(fmt.render(x)[0]) for x in instructions]
    order = sort_by_length(lengths)
    out: list[str | None] = [None] * len(instructions)
    done = {}
    if checkpoint is not None:
        done = open_checkpoint(checkpoint, _fingerprint(fmt, instructions, questions, max_new_tokens, batch_size, checkpoint_key))
    for s in range(0, len(order), batch_size):
        rows = order[s : s + batch_size]
        if s in done and done[s]["rows"] == rows:
            texts = done[s]["texts"]
        else:
            texts = split_on_oom(lambda r: generate_batch(model, tokenizer, encode(
                tokenizer, fmt, [instructions[i] for i in r], [questions[i] for i in r] if questions else None), max_new_tokens),
                rows, "generation batch")
            if checkpoint is not None:
                io.append_jsonl(checkpoint, [{"start": s, "rows": rows, "texts": texts}])
        for i, text in zip(rows, texts):
            out[i] = text
        if progress is not None:
            progress(len(rows))
    return out  # type: ignore[return-value]


def _fingerprint(fmt, instructions, questions, max_new_tokens, batch_size, key) -> str:
    blob = json.dumps(
        [fmt.prefix, fmt.suffix, instructions, questions, max_new_tokens, batch_size, key],
        ensure_ascii=False, sort_keys=True, default=str,
    )
    return io.sha256_text(blob)


def open_checkpoint(path, fingerprint: str, key: str = "start", what: str = "batches") -> dict:
    """Finished units {record[key]: record} of a checkpoint written for `fingerprint`.

    A unit is a generated batch here (key `start`) or an attacked goal in harmref.gcg.
    The file is rewritten without a torn last line (or started afresh when it was
    written for other inputs), so new units can be appended to it.
    """
    rows = io.read_jsonl_prefix(path)
    if rows and rows[0].get("fingerprint") == fingerprint:
        done = {r[key]: r for r in rows[1:]}
        io.write_jsonl(path, rows)
        extra = f" ({sum(len(r['rows']) for r in done.values())} prompts)" if what == "batches" else ""
        log.info("resuming from %s: %d finished %s%s kept", path, len(done), what, extra)
        return done
    if rows:
        log.warning("%s was written for other inputs (model weights, prompts or settings changed); starting over", path)
    io.write_jsonl(path, [{"fingerprint": fingerprint}])
    return {}
