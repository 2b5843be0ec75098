"""A model's view of a prompt set: the one place a prompt becomes the model's tokens (rule prompt_view).

For one (model, template, set) it writes, per prompt, the set's record with

- `prompt`: the text after the model's ending rule (`datasets.load_prompts`; `verbatim` records untouched),
- `text`: the prompt rendered with the model's own chat template (`positions.ChatFormat.render`),
- `input_ids`: its tokens (`positions.tokenize_prompt`: control-token strings in the prompt stay text),
- `t_inst`, `t_post_inst`: indices into `input_ids` of the last instruction token and of the last token of
  the prompt; `context_end`: the first index after the instruction (t_inst + 1 without a question),

and a sidecar naming the template (`ChatFormat.sidecar`), the system prompt, the ending rule and the
model's context length. Rules generate and extract_hidden batch these ids as they are (`positions.pad`), so
normalisation, rendering and position finding are done once per model and set, and both read the same
positions. A reader passes its own `ChatFormat`; a view rendered by another template is refused.
"""

from __future__ import annotations

from . import datasets, io, positions

FIELDS = ("id", "prompt", "label", "category", "text", "input_ids", "t_inst", "t_post_inst", "context_end")


def build(tokenizer, fmt: positions.ChatFormat, records: list[dict]) -> list[dict]:
    """View rows of normalised records (`datasets.load_prompts`), in their order."""
    rows = []
    for r in records:
        ids, inst, ctx = positions.tokenize_prompt(tokenizer, fmt, r["prompt"])
        rec = {k: v for k, v in r.items() if k != "_line"}
        rows.append({**rec, "text": fmt.render(r["prompt"])[0], "input_ids": ids, "t_inst": inst,
                     "t_post_inst": len(ids) - 1, "context_end": ctx})
    return rows


def sidecar(fmt: positions.ChatFormat, rows: list[dict], *, model: str, dataset: str, system_prompt,
            normalise_endings: bool, context_length: int | None, source) -> dict:
    return {"model": model, "dataset": dataset, "source": str(source), "n": len(rows), "system_prompt": system_prompt,
            "normalise_endings": normalise_endings, "context_length": context_length,
            "max_tokens": max((len(r["input_ids"]) for r in rows), default=0), **fmt.sidecar()}


def read(path, fmt: positions.ChatFormat | None = None) -> tuple[list[dict], dict]:
    """(rows, sidecar) of a view, checked: every field present, positions inside the ids, unique ids, and,
    with `fmt`, rendered by that template (else `DataError` naming file, record and field)."""
    side = io.read_sidecar(path)
    if fmt is not None and side.get("template_fingerprint") != fmt.fingerprint:
        raise io.DataError(path, f"rendered with template {str(side.get('template_fingerprint'))[:16]}…, but the "
                                 f"model's template now renders {fmt.fingerprint[:16]}…; rerun prompt_view",
                           field="template_fingerprint")
    rows = io.read_jsonl(path)
    datasets.validate_records(rows, path)
    for r in rows:
        where = {"record": r["id"]}
        for field in FIELDS:
            if field not in r:
                raise io.DataError(path, "missing field", field=field, **where)
        ids = r["input_ids"]
        if not isinstance(ids, list) or not ids or not all(isinstance(i, int) and i >= 0 for i in ids):
            raise io.DataError(path, "expected a non-empty list of token ids", field="input_ids", **where)
        for field, lo in (("t_inst", 0), ("context_end", 1)):
            if not isinstance(r[field], int) or not lo <= r[field] <= len(ids) - (field == "t_inst"):
                raise io.DataError(path, f"{r[field]!r} is not an index into the {len(ids)} token ids", field=field,
                                   **where)
        if r["t_post_inst"] != len(ids) - 1:
            raise io.DataError(path, f"{r['t_post_inst']!r} is not the last of the {len(ids)} token ids",
                               field="t_post_inst", **where)
        del r["_line"]
    return rows, side


def load(path, tokenizer, model: str | None = None) -> tuple[list[dict], dict, positions.ChatFormat]:
    """(rows, sidecar, format) of a view for a model job: the template is rebuilt from the tokenizer with the
    view's system prompt, date and post-instruction setting, and must render what the view holds."""
    side = io.read_sidecar(path)
    fmt = positions.ChatFormat.from_tokenizer(tokenizer, side.get("system_prompt"),
                                              post_instruction=side.get("post_instruction", True),
                                              date=side.get("template_date") or positions.DEFAULT_TEMPLATE_DATE,
                                              model=model)
    rows, side = read(path, fmt)
    return rows, side, fmt


def tokenized(rows: list[dict]) -> list[tuple[list[int], int, int]]:
    """`positions.pad`'s input: (ids, t_inst, context end) per row."""
    return [(r["input_ids"], r["t_inst"], r["context_end"]) for r in rows]


def check_context(rows: list[dict], side: dict, reserve: int, path) -> None:
    """`positions.check_lengths` on the view: fail before any compute when a prompt plus `reserve` new tokens
    does not fit the model's context."""
    positions.check_lengths([len(r["input_ids"]) for r in rows], side.get("context_length"), reserve,
                            [r["id"] for r in rows], path)
