"""Batches of prompts: grouped by length, and split in halves when the GPU runs out of memory.

Every batched model loop (hidden states, steering sweeps, stated-belief questions, the organism's
answers: `run_by_length`; generation, which also checkpoints its batches) takes its batches from
`by_length` and runs each through `split_on_oom`, so a batch size that fits the model on one GPU but
not on another costs a log line, not the job.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


def by_length(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Row indices in batches of `batch_size`, prompts of similar length together (less padding)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


def split_on_oom(fn, rows: list[int], what: str = "batch"):
    """`fn(rows)` → one result per row (a list, or a tensor whose first dim is the rows).

    On a CUDA out-of-memory error the rows are split in halves, each run on its own (recursively,
    down to one row), and the results joined in row order; a single row that does not fit re-raises.
    """
    try:
        return fn(rows)
    except torch.OutOfMemoryError:
        if len(rows) <= 1:
            raise
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        half = len(rows) // 2
        log.warning("out of GPU memory on a %s of %d rows: running it as %d + %d", what, len(rows), half, len(rows) - half)
        a = split_on_oom(fn, rows[:half], what)
        b = split_on_oom(fn, rows[half:], what)
        return torch.cat([a, b]) if isinstance(a, torch.Tensor) else [*a, *b]


def run_by_length(fn, lengths: list[int], batch_size: int, what: str = "batch", progress=None) -> list:
    """The one batched loop: `fn(rows)` → one result per row, over the batches of `by_length`, each
    through `split_on_oom`; returns the results in input order, calling `progress(len(rows))` after
    every batch."""
    out: list = [None] * len(lengths)
    for rows in by_length(lengths, batch_size):
        for i, r in zip(rows, split_on_oom(fn, rows, what)):
            out[i] = r
        if progress is not None:
            progress(len(rows))
    return out
