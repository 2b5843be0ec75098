"""Residual-stream hidden states at chosen positions, all layers in one forward pass.

Entry l (0 ≤ l < L) is the input of decoder layer l (entry 0 = the embeddings);
entry L is the output of the last decoder layer, before the final norm. This
matches the paper's code (pre-hooks on every layer plus one hook on the last
layer's output: 33 entries for Llama, 29 for Qwen; paper §2.2).
"""

from __future__ import annotations

import logging

import torch

from .hooks import add_hooks, decoder_layers
from .positions import ChatFormat, capture_columns, encode, pad, position_labels

log = logging.getLogger(__name__)


@torch.no_grad()
def capture(model, batch, columns: torch.Tensor) -> torch.Tensor:
    """Hidden states of one encoded batch at `columns` [b, p] → [b, L+1, p, d] (float32, CPU)."""
    from .models import input_device

    n_layers = len(decoder_layers(model))
    store: list[torch.Tensor | None] = [None] * (n_layers + 1)
    device = input_device(model)
    index = {}  # (rows, columns) on each device the layers live on (a split model has several)

    def at(h):
        if h.device not in index:
            cols = columns.to(h.device)
            index[h.device] = (torch.arange(cols.shape[0], device=h.device)[:, None], cols)
        return index[h.device]

    def grab(slot):
        def fn(h):
            idx, cols = at(h)
            store[slot] = h[idx, cols]  # stays on its device until the batch is done

        return fn

    hooks = [("resid_pre", l, grab(l)) for l in range(n_layers)]
    hooks.append(("resid_post", n_layers - 1, grab(n_layers)))
    batch = batch.to(device)
    with add_hooks(model, hooks):
        # the decoder stack alone: the LM head's logits (vocab × seq × batch) are never read
        body(model)(**batch.model_inputs(), use_cache=False)
    # one copy to the host per batch (per device of a split model), not one per layer
    return torch.stack([h.to(device) for h in store], dim=1).to("cpu", torch.float32)


def body(model):
    """The head-free transformer of a causal LM (`model.model` for llama-likes), or the model itself."""
    inner = getattr(model, "base_model", None)
    return inner if isinstance(inner, torch.nn.Module) and inner is not model else model


def sort_by_length(lengths: list[int]) -> list[int]:
    """Order that groups prompts of similar length, to cut padding."""
    return sorted(range(len(lengths)), key=lambda i: lengths[i])


def hidden_states(
    model,
    tokenizer,
    fmt: ChatFormat,
    instructions: list[str],
    before: int = 2,
    n_post: int | None = None,
    batch_size: int = 16,
    progress=None,
    tokenized: list | None = None,
) -> tuple[torch.Tensor, list[str], list[list[str]]]:
    """Hidden states of every prompt at t_inst-before … t_post-inst.

    `tokenized`: the prompts' (ids, t_inst, context end), e.g. a prompt view's (`prompt_view.tokenized`),
    batched as they are; default: `positions.encode` them here.
    Returns (tensor [n, L+1, before+1+n_post, d], position labels, token strings [n][pos]).
    """
    from .positions import template_n_post

    if n_post is None:
        n_post = template_n_post(tokenizer, fmt)
    labels = position_labels(before, n_post)
    from .batching import run_by_length

    def one(rows):
        batch = (pad(tokenizer, [tokenized[i] for i in rows]) if tokenized is not None
                 else encode(tokenizer, fmt, [instructions[i] for i in rows]))
        cols = capture_columns(batch, before, n_post)
        h = capture(model, batch, cols)
        ids = batch.input_ids.gather(1, cols)
        return [(h[j], tokenizer.convert_ids_to_tokens(ids[j].tolist())) for j in range(len(rows))]

    res = run_by_length(one, [len(fmt.render(x)[0]) for x in instructions], batch_size, "hidden-state batch", progress)
    if not instructions:
        n_layers = len(decoder_layers(model)) + 1
        d = model.config.hidden_size
        return torch.zeros(0, n_layers, len(labels), d), labels, []
    return torch.stack([h for h, _ in res]), labels, [toks for _, toks in res]


def storage_cast(h: torch.Tensor, dtype: str = "float16") -> torch.Tensor:
    """Cast hidden states for storage; keep float32 when float16 would overflow (massive activations)."""
    if dtype == "float16":
        if h.numel() == 0 or float(h.abs().max()) < 6.0e4:
            return h.half()
        log.warning("hidden states exceed the float16 range (max |h| = %.0f); storing float32", float(h.abs().max()))
    return h.float()
