"""Token positions t_inst and t_post-inst, derived from the tokenizer's own chat template.

The template is rendered once with a sentinel instruction; the text before the
sentinel is the prefix, the text after it the post-instruction suffix. No
per-model string tables (paper §2.1). Character offsets from the fast tokenizer
then map the end of the instruction onto a token, so the positions are right
even where the template strips or rewrites whitespace.

Batches are left-padded, so t_post-inst is always the last column.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SENTINEL = "HARMREFSENTINELX7Q"


class TemplateError(ValueError):
    """The tokenizer has no usable chat template."""


@dataclass(frozen=True)
class ChatFormat:
    """A chat template split around the user message.

    `post_instruction=False` drops the suffix: the "no post-instruction tokens"
    variant of the paper's Table 1, where t_inst == t_post-inst.
    """

    prefix: str
    suffix: str
    post_instruction: bool = True

    @classmethod
    def from_tokenizer(cls, tokenizer, system_prompt: str | None = None, post_instruction: bool = True):
        """`system_prompt=None` keeps the template's own default; a string adds a system message."""
        if not getattr(tokenizer, "chat_template", None):
            name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
            raise TemplateError(
                f"tokenizer {name!r} has no chat template; harmref needs a chat model "
                "(set `chat_template` on the tokenizer, or pick an instruction-tuned model)"
            )
        messages = [{"role": "user", "content": SENTINEL}]
        if system_prompt is not None:
            messages.insert(0, {"role": "system", "content": system_prompt})
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if text.count(SENTINEL) != 1:
            raise TemplateError(
                f"the chat template does not contain the user message verbatim exactly once "
                f"(found {text.count(SENTINEL)} copies of the sentinel)"
            )
        prefix, suffix = text.split(SENTINEL)
        return cls(prefix=prefix, suffix=suffix if post_instruction else "", post_instruction=post_instruction)

    def render(self, instruction: str, question: str | None = None) -> tuple[str, int, int]:
        """Prompt text, the character end of the instruction, and of the context.

        With a reply-inversion `question`, the user message is
        `User wants to {instruction}\\n{question}`; the context is everything before
        the question (paper §3.5), and t_inst is the last token of the instruction.
        """
        if question is None:
            body = instruction
            inst_end = len(self.prefix) + len(instruction)
            context_end = inst_end
        else:
            head = f"User wants to {instruction}"
            body = f"{head}\n{question}"
            inst_end = len(self.prefix) + len(head)
            context_end = inst_end + 1  # the newline belongs to the context
        return self.prefix + body + self.suffix, inst_end, context_end


@dataclass
class EncodedBatch:
    """A left-padded batch and its positions. Indices are columns of `input_ids`.

    input_ids, attention_mask: [batch, seq]
    inst_pos: [batch] column of t_inst
    context_end: [batch] first column after the context (the question start, or t_inst + 1)
    start: [batch] first non-pad column
    post_pos: [batch] column of t_post-inst (always seq - 1 under left padding)
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    inst_pos: torch.Tensor
    context_end: torch.Tensor
    start: torch.Tensor

    @property
    def post_pos(self) -> torch.Tensor:
        return torch.full_like(self.inst_pos, self.input_ids.shape[1] - 1)

    @property
    def n_post(self) -> torch.Tensor:
        """Number of post-instruction tokens after t_inst, per row."""
        return self.post_pos - self.inst_pos

    def to(self, device):
        return EncodedBatch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.inst_pos, self.context_end, self.start)))

    def model_inputs(self) -> dict:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask}


def encode(tokenizer, fmt: ChatFormat, instructions, questions=None, max_length: int | None = None) -> EncodedBatch:
    """Tokenize prompts with left padding and locate t_inst / context end per row."""
    questions = questions if questions is not None else [None] * len(instructions)
    rows = []
    for instruction, question in zip(instructions, questions):
        text, inst_end, context_end = fmt.render(instruction, question)
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        # t_inst: the last token that starts inside the instruction text
        inst_tok = max(i for i, (s, e) in enumerate(offsets) if s < inst_end and e > s) if ids else -1
        ctx_tok = next((i for i, (s, e) in enumerate(offsets) if s >= context_end and e > s), len(ids))
        if max_length is not None and len(ids) > max_length:
            raise ValueError(
                f"prompt of {len(ids)} tokens exceeds the model context of {max_length}: {instruction[:60]!r}…"
            )
        rows.append((ids, inst_tok, ctx_tok))
    width = max(len(r[0]) for r in rows)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    inst_pos, ctx, start = [], [], []
    for b, (ids, inst_tok, ctx_tok) in enumerate(rows):
        off = width - len(ids)
        input_ids[b, off:] = torch.tensor(ids, dtype=torch.long)
        mask[b, off:] = 1
        inst_pos.append(off + inst_tok)
        ctx.append(off + ctx_tok)
        start.append(off)
    return EncodedBatch(input_ids, mask, torch.tensor(inst_pos), torch.tensor(ctx), torch.tensor(start))


def check_context(tokenizer, fmt: ChatFormat, instructions, max_length: int | None, reserve: int = 0,
                  ids=None, source="prompts", questions=None) -> None:
    """Fail before any compute when a rendered prompt plus `reserve` new tokens exceeds `max_length`.

    harmref does not truncate: cutting a prompt would drop the chat template's
    post-instruction tokens and move t_inst, silently changing what is measured.
    The error names the source file, the record id and how far over the limit it is.
    """
    if not max_length:
        return
    from .io import DataError

    questions = questions if questions is not None else [None] * len(instructions)
    over = []
    for k, (instruction, question) in enumerate(zip(instructions, questions)):
        n = len(tokenizer(fmt.render(instruction, question)[0], add_special_tokens=False)["input_ids"])
        if n + reserve > max_length:
            over.append((k, n))
    if over:
        k, n = over[0]
        record = ids[k] if ids is not None else k + 1
        more = f" ({len(over) - 1} more prompts are too long as well)" if len(over) > 1 else ""
        raise DataError(
            source,
            f"prompt of {n} tokens{f' + {reserve} new tokens' if reserve else ''} exceeds the model context of "
            f"{max_length} tokens{more}; harmref does not truncate (it would cut the chat template and move t_inst): "
            "shorten or drop the prompt in the source data",
            record=record, field="prompt",
        )


def position_labels(before: int, n_post: int) -> list[str]:
    """Names of the captured positions: t_inst-before … t_inst, post_1 … post_n (last = t_post-inst)."""
    return [f"t_inst-{k}" for k in range(before, 0, -1)] + ["t_inst"] + [f"post_{k}" for k in range(1, n_post + 1)]


def capture_columns(batch: EncodedBatch, before: int, n_post: int) -> torch.Tensor:
    """Columns to capture per row: [batch, before + 1 + n_post].

    Positions up to t_inst are counted back from t_inst; post-instruction
    positions are counted back from the end, so the last is always t_post-inst.
    """
    seq = batch.input_ids.shape[1]
    inst = batch.inst_pos[:, None] + torch.arange(-before, 1)[None, :]
    post = seq - n_post + torch.arange(n_post)[None, :].expand(len(inst), -1)
    cols = torch.cat([inst, post], dim=1)
    return cols.clamp(min=batch.start[:, None])


def template_n_post(tokenizer, fmt: ChatFormat) -> int:
    """Post-instruction token count for a plain instruction under this template."""
    b = encode(tokenizer, fmt, ["Tell me about the weather."])
    return int(b.n_post[0])
