"""Batched greedy generation with left padding, optionally checkpointed batch by batch.

`greedy_ids(method="loop")` is a decoding loop that drops a row from the batch and the KV cache once
it has emitted EOS, so finished replies stop costing compute, and runs the chat template's head that every
row starts with once per batch (`shared_prefix`); it gives the tokens of HF `generate` (tested on six
template families). It is the default (`METHOD`, `SHARED_PREFIX`): on the default organism at batch 64 it
took 0.74x HF generate's time (benchmarks/README.md "Generation"); `method="hf"` is `model.generate`."""

from __future__ import annotations

import contextlib
import json
import logging

import torch

from . import io
from .activations import sort_by_length
from .batching import split_on_oom
from .positions import ChatFormat, encode, pad

log = logging.getLogger(__name__)


@torch.no_grad()
def generate_batch(model, tokenizer, batch, max_new_tokens: int, hooks_cm=None, method: str | None = None) -> list[str]:
    """Greedy continuations of one encoded batch, decoded without special tokens.

    `method`: "loop" (`greedy_ids`: finished rows leave the batch) or "hf" (`model.generate`);
    default `METHOD`. Both give the same tokens.
    """
    with hooks_cm if hooks_cm is not None else contextlib.nullcontext():
        new = greedy_ids(model, tokenizer, batch, max_new_tokens, method=method)
    return tokenizer.batch_decode(new, skip_special_tokens=True)


# the defaults of generate / generate_batch / greedy_ids (benchmarks/README.md "Generation": on the default
# organism, batch 64, 32 new tokens: loop 0.90x HF generate's time, loop + shared prefix 0.74x, same tokens;
# at batch 16 on the base model's long replies the loop alone was 1.11x)
METHOD = "loop"
SHARED_PREFIX = True

# Logits processors HF's greedy search may build from a model's generation config that act on each
# row alone (its own ids and scores): applied to the live rows only, they give each row what HF gives it.
_ROWWISE_PROCESSORS = {
    "RepetitionPenaltyLogitsProcessor", "NoRepeatNGramLogitsProcessor", "MinLengthLogitsProcessor",
    "MinNewTokensLengthLogitsProcessor", "SuppressTokensLogitsProcessor", "SuppressTokensAtBeginLogitsProcessor",
    "ForcedBOSTokenLogitsProcessor", "ForcedEOSTokenLogitsProcessor", "SequenceBiasLogitsProcessor",
    "NoBadWordsLogitsProcessor", "LogitNormalization",
}


def stop_ids(tokenizer) -> list[int]:
    """The token ids that end a reply: the tokenizer's EOS (what every generate call here passes as eos_token_id)."""
    eos = tokenizer.eos_token_id
    return [] if eos is None else list(eos) if isinstance(eos, (list, tuple)) else [int(eos)]


def _hf_kwargs(tokenizer, max_new_tokens):
    return dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id)


def _processors(model, tokenizer, max_new_tokens, input_ids):
    """HF's logits processors for this call (the model's generation config applied), or None when one of
    them is not row-wise (then only model.generate reproduces it)."""
    import copy

    from transformers import GenerationConfig

    gc = copy.deepcopy(getattr(model, "generation_config", None) or GenerationConfig())
    gc.update(**_hf_kwargs(tokenizer, max_new_tokens))
    gc.max_length = input_ids.shape[1] + max_new_tokens
    try:  # HF's own list, so the loop applies what generate would (a private method: a changed one falls back)
        procs = model._get_logits_processor(generation_config=gc, input_ids_seq_length=input_ids.shape[1],
                                            encoder_input_ids=input_ids, device=input_ids.device, model_kwargs={})
    except (AttributeError, TypeError) as e:
        log.warning("cannot build HF's logits processors (%s): using model.generate", e)
        return None
    if any(type(p).__name__ not in _ROWWISE_PROCESSORS for p in procs):
        return None
    return procs


def _forward_kwargs(model, cache) -> dict:
    """The cache under the name this transformers' forward takes, and last-position logits where supported."""
    import inspect

    params = inspect.signature(model.forward).parameters
    kw = {"cache" if "cache" in params else "past_key_values": cache, "use_cache": True}
    if "logits_to_keep" in params:
        kw["logits_to_keep"] = 1
    return kw


@torch.no_grad()
def greedy_ids(model, tokenizer, batch, max_new_tokens: int, method: str | None = None,
               shared_prefix: bool | None = None) -> torch.Tensor:
    """New token ids [rows, steps] of greedy decoding, as `model.generate(do_sample=False)` returns them.

    Rows after their EOS hold the pad id; `steps` is the longest reply (EOS included), at most
    `max_new_tokens`. method "loop": a KV-cached loop in which a row that has
    emitted EOS leaves the batch and the cache, so it costs no more compute; positions from the
    attention mask (left padding), logits of the last position only, the model's generation-config
    processors applied as HF applies them (a model with one that is not row-wise uses HF's generate).
    method "hf" (default `METHOD`): `model.generate`.
    `shared_prefix` (loop only; default `SHARED_PREFIX`, see benchmarks/README.md "Generation"): the tokens every
    row starts with (the template's head and system prompt) are run once with batch 1 and their cache
    copied to every row; the rest follows left-padded after them (the mask covers the gap, positions
    continue from the prefix). Not used for models with sliding-window layers (the window counts cache
    columns, gap included).
    """
    from transformers import DynamicCache

    from .models import input_device

    method = method or METHOD
    shared_prefix = SHARED_PREFIX if shared_prefix is None else shared_prefix
    if method not in ("loop", "hf"):
        raise ValueError(f"generation method {method!r}: expected 'loop' or 'hf'")
    device = input_device(model)
    ids, mask = batch.input_ids.to(device), batch.attention_mask.to(device)
    n, width = ids.shape
    procs = _processors(model, tokenizer, max_new_tokens, ids) if method == "loop" else None
    if method == "hf" or procs is None or max_new_tokens < 1:
        if method == "loop" and max_new_tokens >= 1:
            log.info("the generation config of %s needs a logits processor the loop does not apply row by row: "
                     "using model.generate", type(model).__name__)
        out = model.generate(input_ids=ids, attention_mask=mask, **_hf_kwargs(tokenizer, max_new_tokens))
        return out[:, width:]
    stop = torch.tensor(stop_ids(tokenizer), dtype=torch.long, device=device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (int(stop[0]) if len(stop) else 0)  # as HF
    out = torch.full((n, max_new_tokens), pad, dtype=torch.long, device=device)
    live = torch.arange(n, device=device)  # the batch row of each live row
    seq = ids  # what HF's processors see: the padded prompt and the reply so far
    pos = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
    cache = DynamicCache(config=model.config.get_text_config(decoder=True))
    kw = _forward_kwargs(model, cache)
    step_ids = ids
    if shared_prefix and not any(getattr(layer, "is_sliding", False) for layer in cache.layers):
        step_ids, mask, pos = _run_shared_prefix(model, batch, ids, mask, cache, kw)
    steps = 0
    for t in range(max_new_tokens):
        logits = model(input_ids=step_ids, attention_mask=mask, position_ids=pos, **kw).logits
        scores = logits[:, -1].to(dtype=torch.float32, device=device, copy=True)
        nxt = torch.argmax(procs(seq, scores) if len(procs) else scores, dim=-1)
        out[live, t] = nxt
        steps = t + 1
        keep = ~torch.isin(nxt, stop)
        if t == max_new_tokens - 1 or not bool(keep.any()):
            break
        if not bool(keep.all()):  # finished rows leave the batch and the cache
            idx = keep.nonzero().squeeze(1)
            cache.reorder_cache(idx)
            live, nxt, mask, seq, pos = live[idx], nxt[idx], mask[idx], seq[idx], pos[idx]
        seq = torch.cat([seq, nxt[:, None]], dim=-1)
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
        pos = pos[:, -1:] + 1
        step_ids = nxt[:, None]
    return out[:, :steps]


def _run_shared_prefix(model, batch, ids, mask, cache, kw):
    """Fill `cache` with the rows' common first tokens (batch 1, copied to every row); return the rest of the
    prompts left-padded after them, with its mask (prefix columns included) and positions."""
    n = ids.shape[0]
    starts = batch.start.tolist()
    rows = [ids[r, s:] for r, s in enumerate(starts)]
    shortest = min(len(x) for x in rows)
    differ = [k for k in range(shortest - 1) if any(int(x[k]) != int(rows[0][k]) for x in rows)]
    p = differ[0] if differ else shortest - 1  # every row keeps at least one token after the prefix
    if p < 1:
        return ids, mask, (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
    dev = ids.device
    model(input_ids=rows[0][None, :p], attention_mask=mask.new_ones((1, p)),
          position_ids=torch.arange(p, device=dev)[None], **kw)
    cache.batch_repeat_interleave(n)
    width = max(len(x) for x in rows) - p
    rest = ids.new_full((n, width), int(ids[0, 0]))
    rest_mask = mask.new_zeros((n, width))
    for r, x in enumerate(rows):
        rest[r, width - (len(x) - p):] = x[p:]
        rest_mask[r, width - (len(x) - p):] = 1
    pos = (p + rest_mask.long().cumsum(-1) - 1).masked_fill(rest_mask == 0, 0)
    return rest, torch.cat([mask.new_ones((n, p)), rest_mask], dim=-1), pos


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
    method: str | None = None,
    tokenized: list | None = None,
) -> list[str]:
    """Greedy responses to every instruction, in input order; prompts sorted by length internally.

    `tokenized`: the prompts' (ids, t_inst, context end), e.g. a prompt view's (`prompt_view.tokenized`),
    batched as they are (without `questions`); default: `positions.encode` them here.

    `method`: the decoding of each batch (`greedy_ids`: "hf" or "loop", which drops finished rows; default `METHOD`).

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

    def batch(r):
        if tokenized is not None:
            return pad(tokenizer, [tokenized[i] for i in r])
        return encode(tokenizer, fmt, [instructions[i] for i in r], [questions[i] for i in r] if questions else None)

    for s in range(0, len(order), batch_size):
        rows = order[s : s + batch_size]
        if s in done and done[s]["rows"] == rows:
            texts = done[s]["texts"]
        else:
            texts = split_on_oom(lambda r: generate_batch(model, tokenizer, batch(r), max_new_tokens, method=method),
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
