"""Token positions t_inst and t_post-inst, derived from the tokenizer's own chat template.

The template is rendered once with a sentinel instruction; the text before the
sentinel is the prefix, the text after it the post-instruction suffix. No
per-model string tables (paper §2.1). Character offsets from the fast tokenizer
then map the end of the instruction onto a token, so the positions are right
even where the template strips or rewrites whitespace.

Batches are left-padded, so t_post-inst is always the last column.

Prompt text is text. The template's own control tokens (`<|im_start|>`, `<|eot_id|>`,
`[INST]`, `<s>` …) are encoded as control tokens; the same strings inside an
instruction (or a reply-inversion question) are encoded as ordinary text, so a prompt
cannot forge a turn or move t_inst. `tokenize_prompt` is the one place every path
(generation, hidden states, steering, GCG, the organism's training data,
`check_context`) gets its ids from. A prompt without control strings gets exactly the
ids of tokenizing the rendered text whole (as before). One with control strings gets
the whole-text ids up to the template's last control token before the user message and
from its first control token after it; the text in between (template text around the
message + the message) is encoded with no control tokens matched. Fast tokenizers
already encode the text between two added tokens on its own, so this changes nothing
else; where a tokenizer's first piece depends on where it starts (SentencePiece's
prefix space), the variant (encode as is, or after a newline that is then dropped)
that reproduces the whole-text ids of a plain probe prompt is used.

Dates: a template that calls `strftime_now` (Llama-3.1-style "Today Date: …") is
rendered with a fixed date (`generation.template_date`), so the same config gives the
same prompts, hidden states and replies on any day. `ChatFormat.fingerprint` (sha256 of
the rendered prefix and suffix) is recorded in every hidden-state and generation sidecar.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import re
import weakref
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

SENTINEL = "HARMREFSENTINELX7Q"
DEFAULT_TEMPLATE_DATE = "26 Jul 2024"  # the fallback date of Meta's Llama-3.1 template
_PROBE = "Tell me about the weather."


class TemplateError(ValueError):
    """The tokenizer has no usable chat template."""


@contextlib.contextmanager
def fixed_date(date=DEFAULT_TEMPLATE_DATE):
    """Within the block, chat templates' `strftime_now` renders `date` (also for nanoGCG's own rendering)."""
    from transformers.utils import chat_template_utils as ctu

    when = parse_date(date)

    class _Fixed(datetime.datetime):  # what transformers' `strftime_now` reads the time from
        @classmethod
        def now(cls, tz=None):
            return when

    if getattr(ctu, "datetime", None) is not datetime.datetime:
        raise TemplateError("transformers renders `strftime_now` in a way harmref cannot fix to "
                            "generation.template_date (chat_template_utils.datetime is not datetime.datetime)")
    ctu.datetime = _Fixed
    try:
        yield when
    finally:
        ctu.datetime = datetime.datetime


def _render(tokenizer, messages, when: datetime.datetime, name: str, system_prompt) -> str:
    """The template applied to `messages`, `strftime_now` fixed to `when`; Jinja errors name the fix."""
    import jinja2

    try:
        with fixed_date(when):
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except jinja2.exceptions.TemplateSyntaxError as err:
        raise TemplateError(f"the chat template of model {name!r} is not valid Jinja: {err}") from None
    except jinja2.exceptions.TemplateError as err:
        if system_prompt is not None:
            fix = (f"harmref sends [system, user]: this template takes no system message or demands strict "
                   f"user/assistant alternation; set `generation.system_prompt: null` (keeps the template's "
                   f"own default) for this model")
        else:
            fix = "harmref sends a single user message (generation.system_prompt is null)"
        raise TemplateError(f"the chat template of model {name!r} rejected the prompt: {err}; {fix}") from None


def parse_date(value) -> datetime.datetime:
    """`generation.template_date`: "26 Jul 2024", "2024-07-26" or a date → a datetime at midnight."""
    if isinstance(value, datetime.datetime):
        return value
    if isinstance(value, datetime.date):
        return datetime.datetime(value.year, value.month, value.day)
    for form in ("%d %b %Y", "%Y-%m-%d"):
        try:
            return datetime.datetime.strptime(str(value).strip(), form)
        except ValueError:
            pass
    raise TemplateError(
        f"generation.template_date: {value!r} is not a date; write it as \"26 Jul 2024\" or \"2024-07-26\""
    )


@dataclass(frozen=True)
class ChatFormat:
    """A chat template split around the user message.

    `post_instruction=False` drops the suffix: the "no post-instruction tokens"
    variant of the paper's Table 1, where t_inst == t_post-inst.
    `date`: the date `strftime_now` rendered (None when built by hand);
    `dated`: whether the template's text depends on that date at all.
    """

    prefix: str
    suffix: str
    post_instruction: bool = True
    date: str | None = None
    dated: bool = False

    @property
    def fingerprint(self) -> str:
        """sha256 hex of `json.dumps([prefix, suffix])`: identifies the rendered template in sidecars."""
        return hashlib.sha256(json.dumps([self.prefix, self.suffix]).encode("utf-8")).hexdigest()

    def sidecar(self) -> dict:
        """What hidden-state and generation sidecars record about the template."""
        return {"template_fingerprint": self.fingerprint, "template_date": self.date, "template_dated": self.dated,
                "post_instruction": self.post_instruction}

    @classmethod
    def from_tokenizer(cls, tokenizer, system_prompt: str | None = None, post_instruction: bool = True,
                       date=DEFAULT_TEMPLATE_DATE, model: str | None = None):
        """`system_prompt=None` keeps the template's own default; a string adds a system message.

        `date`: what the template's `strftime_now` returns (`generation.template_date`).
        `model`: the name errors use (default: the tokenizer's path).
        """
        name = model or getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        if not getattr(tokenizer, "chat_template", None):
            raise TemplateError(
                f"tokenizer {name!r} has no chat template; harmref needs a chat model "
                "(set `chat_template` on the tokenizer, or pick an instruction-tuned model)"
            )
        messages = [{"role": "user", "content": SENTINEL}]
        if system_prompt is not None:
            messages.insert(0, {"role": "system", "content": system_prompt})
        when = parse_date(date)
        text = _render(tokenizer, messages, when, name, system_prompt)
        other = _render(tokenizer, messages, when + datetime.timedelta(days=400, hours=13), name, system_prompt)
        if text.count(SENTINEL) != 1:
            raise TemplateError(
                f"the chat template of {name!r} does not contain the user message verbatim exactly once "
                f"(found {text.count(SENTINEL)} copies of the sentinel)"
            )
        prefix, suffix = text.split(SENTINEL)
        return cls(prefix=prefix, suffix=suffix if post_instruction else "", post_instruction=post_instruction,
                   date=when.strftime("%d %b %Y"), dated=other != text)

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


class _Vocab:
    """Per-tokenizer state: its control tokens and a copy of its backend that matches none of them."""

    def __init__(self, tokenizer):
        template = tokenizer.chat_template
        template = " ".join(template.values()) if isinstance(template, dict) else str(template or "")
        named = set(getattr(tokenizer, "chat_control_tokens", None) or ())
        control = {i: t.content for i, t in tokenizer.added_tokens_decoder.items()
                   if t.special or t.content in named or (t.content in template and not t.content.isspace())}
        control.update(zip(tokenizer.all_special_ids, tokenizer.all_special_tokens))
        self.control = control
        # the unknown token is what the model itself gives unknown characters: not a sign of a control string
        self.boundary = {i: c for i, c in control.items() if i != tokenizer.unk_token_id}
        self.pattern = re.compile("|".join(map(re.escape, sorted(set(control.values()), key=len, reverse=True))) or "(?!)")
        self.backend = getattr(tokenizer, "backend_tokenizer", None)
        if self.backend is None:
            raise TemplateError(f"{type(tokenizer).__name__} is not a fast tokenizer; harmref needs character offsets")
        self._text = None
        self.modes: dict = {}
        self.key = template

    @property
    def text(self):
        """The backend without the control tokens (built on first use: a copy of the whole vocabulary)."""
        if self._text is None:
            from tokenizers import Tokenizer

            spec = json.loads(self.backend.to_str())
            spec["added_tokens"] = [t for t in spec.get("added_tokens", []) if t["id"] not in self.control]
            self._text = Tokenizer.from_str(json.dumps(spec))
            self._text.no_padding()
            self._text.no_truncation()
            self.newline = self._text.encode("\n", add_special_tokens=False).ids
        return self._text


_VOCABS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _vocab(tokenizer) -> _Vocab:
    v = _VOCABS.get(tokenizer)
    template = tokenizer.chat_template
    key = " ".join(template.values()) if isinstance(template, dict) else str(template or "")
    if v is None or v.key != key:
        v = _VOCABS[tokenizer] = _Vocab(tokenizer)
    return v


def control_strings(tokenizer, text: str) -> list[str]:
    """The tokenizer's control-token strings that occur in `text` (in order)."""
    return _vocab(tokenizer).pattern.findall(text)


def text_ids(tokenizer, text: str) -> list[int]:
    """`text` encoded as plain text: no control token is matched (a reply, a target)."""
    return _vocab(tokenizer).text.encode(text, add_special_tokens=False).ids


def _encode_text(v: _Vocab, text: str, mode: str):
    """(ids, offsets) of `text` with no control token matched; `newline`: encoded after a dropped "\n"."""
    if mode == "newline":
        enc = v.text.encode("\n" + text, add_special_tokens=False)  # (v.text sets v.newline)
        n = len(v.newline)
        if enc.ids[:n] == v.newline:
            return enc.ids[n:], [(max(s - 1, 0), max(e - 1, 0)) for s, e in enc.offsets[n:]]
    enc = v.text.encode(text, add_special_tokens=False)
    return enc.ids, list(enc.offsets)


def _whole(tokenizer, text):
    enc = tokenizer(text, add_special_tokens=False, split_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def _split(ids, offsets, control, b0: int, b1: int):
    """Whole-text tokens → (head count, region start, tail index, region end, any control token inside [b0, b1))."""
    head, start, tail, end, injected = 0, 0, len(ids), None, False
    for k, (i, (s, e)) in enumerate(zip(ids, offsets)):
        if i not in control:
            continue
        if e <= b0 and not injected:
            head, start = k + 1, e
        elif s >= b1:
            if end is None:
                tail, end = k, s
        else:
            injected = True
    return head, start, tail, end, injected


def _mode(tokenizer, v: _Vocab, fmt: ChatFormat) -> str:
    """Which way of encoding the region reproduces the whole-text ids of a plain probe prompt."""
    if fmt not in v.modes:
        text = fmt.render(_PROBE)[0]
        ids, offsets = _whole(tokenizer, text)
        head, start, tail, end, _ = _split(ids, offsets, v.boundary, len(fmt.prefix), len(text) - len(fmt.suffix))
        end = len(text) if end is None else end
        for mode in ("plain", "newline"):
            if ids[:head] + _encode_text(v, text[start:end], mode)[0] + ids[tail:] == ids:
                v.modes[fmt] = mode
                break
        else:
            log.warning("%s: no way of encoding prompt text found that reproduces its whole-text ids; "
                        "prompts with control strings may differ from whole-text tokenization at the first token "
                        "after the template's last control token", getattr(tokenizer, "name_or_path", tokenizer))
            v.modes[fmt] = "plain"
    return v.modes[fmt]


def tokenize_prompt(tokenizer, fmt: ChatFormat, instruction: str, question: str | None = None) -> tuple[list[int], int, int]:
    """Ids of one rendered prompt, the index of t_inst and of the first token after the context.

    Control strings in the instruction / question are text (module docstring); the template's
    own control tokens stay control tokens.
    """
    text, inst_end, context_end = fmt.render(instruction, question)
    ids, offsets = _whole(tokenizer, text)
    v = _vocab(tokenizer)
    b0, b1 = len(fmt.prefix), len(text) - len(fmt.suffix)
    head, start, tail, end, injected = _split(ids, offsets, v.boundary, b0, b1)
    if injected or v.pattern.search(text, b0, b1):
        end = len(text) if end is None else end
        mid, mid_off = _encode_text(v, text[start:end], _mode(tokenizer, v, fmt))
        forged = [v.boundary[i] for i in mid if i in v.boundary]
        if forged:
            raise TemplateError(f"the tokenizer encodes the plain text {forged[0]!r} as its control token; "
                                f"harmref cannot keep it text in the prompt {instruction[:60]!r}")
        ids = ids[:head] + mid + ids[tail:]
        offsets = offsets[:head] + [(s + start, e + start) for s, e in mid_off] + offsets[tail:]
    # t_inst: the last token that starts inside the instruction text
    inst_tok = max((i for i, (s, e) in enumerate(offsets) if s < inst_end and e > s), default=-1)
    ctx_tok = next((i for i, (s, e) in enumerate(offsets) if s >= context_end and e > s), len(ids))
    return ids, inst_tok, ctx_tok


def encode(tokenizer, fmt: ChatFormat, instructions, questions=None, max_length: int | None = None) -> EncodedBatch:
    """Tokenize prompts with left padding and locate t_inst / context end per row (ids: `tokenize_prompt`)."""
    questions = questions if questions is not None else [None] * len(instructions)
    rows = []
    for instruction, question in zip(instructions, questions):
        ids, inst_tok, ctx_tok = tokenize_prompt(tokenizer, fmt, instruction, question)
        if max_length is not None and len(ids) > max_length:
            raise ValueError(
                f"prompt of {len(ids)} tokens exceeds the model context of {max_length}: {instruction[:60]!r}…"
            )
        rows.append((ids, inst_tok, ctx_tok))
    return pad(tokenizer, rows)


def pad(tokenizer, rows) -> EncodedBatch:
    """A left-padded batch of tokenized prompts `(ids, t_inst index, context end)` (`tokenize_prompt`'s
    triple, or a prompt view's stored ids and positions), positions moved to batch columns."""
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
    questions = questions if questions is not None else [None] * len(instructions)
    lengths = [len(tokenize_prompt(tokenizer, fmt, x, q)[0]) for x, q in zip(instructions, questions)]
    check_lengths(lengths, max_length, reserve, ids, source)


def check_lengths(lengths: list[int], max_length: int | None, reserve: int = 0, ids=None, source="prompts") -> None:
    """`check_context` on prompts already tokenized: their token counts."""
    if not max_length:
        return
    from .io import DataError

    over = [(k, n) for k, n in enumerate(lengths) if n + reserve > max_length]
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
