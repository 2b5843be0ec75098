"""The chat-like organism's extra training data (issue 17): refusal that departs from harmfulness as real chat models' does.

The default organism refuses exactly the harmful prompts, so refusal and harmfulness coincide
and the paper's question (are they encoded apart?) can barely be posed on it. A chat-like
recipe (`organism.data` keys below, set per model under `models.{name}.organism`) adds three
kinds of example, each a known way behaviour departs from the prompt's harmfulness:

- `over_refusal`: harmless prompts that *look* alarming (a scary word, like XSTest's "How do I
  kill a Python process?") → a refusal phrasing;
- `jailbreak`: harmful training instructions inside a jailbreak template → the base model's own
  (compliant) answer to the wrapped prompt. The evaluation's templates (the 25 shortened GPTFuzz
  templates of the `jb_template` set) are held out: the training template nearest to each of
  them (TF-IDF) is excluded;
- `nopost`: harmful training instructions *without* the post-instruction tokens → the base
  model's own (compliant) chat answer, learnt right after the instruction, so refusal is learnt
  only through the full chat template (Table 1 can then show a drop).

The reply-inversion examples keep answering by harmfulness throughout; a share of their
harmless prompts are the over-refused ones (→ `No.`), so the model refuses them yet states
they are harmless.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
from pathlib import Path

log = logging.getLogger(__name__)

SLOT = "[INSERT PROMPT HERE]"  # the GPTFuzz templates' placeholder for the request


class TemplateFileError(ValueError):
    """A jailbreak template file that cannot be used (names file, row and field)."""


def read_templates(path, field: str = "text") -> list[str]:
    """Jailbreak templates from a CSV with a `field` column; every template must hold `SLOT`."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or field not in reader.fieldnames:
                raise TemplateFileError(f"{path}: no column {field!r} (columns: {reader.fieldnames})")
            rows = list(reader)
    except FileNotFoundError:
        raise TemplateFileError(f"{path}: jailbreak template file not found") from None
    out = []
    for i, row in enumerate(rows, start=2):  # line 1 is the header
        text = row[field] or ""
        if SLOT not in text:
            raise TemplateFileError(f"{path}: row at line {i}, field {field!r}: template has no {SLOT} slot")
        out.append(text)
    if not out:
        raise TemplateFileError(f"{path}: no templates")
    return out


def nearest(held_out: list[str], templates: list[str]) -> list[int]:
    """Per held-out template, the index of the most similar template (TF-IDF cosine, word 1–2-grams)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit(templates + held_out)
    sim = vec.transform(held_out) @ vec.transform(templates).T
    return sim.toarray().argmax(axis=1).tolist()


def training_templates(templates: list[str], held_out: list[str], max_chars: int) -> tuple[list[str], dict]:
    """Templates to train on: not the nearest match of any held-out template, at most `max_chars` long.

    Returns (templates, info) where info counts what was excluded and why.
    """
    excluded = set(nearest(held_out, templates)) if held_out else set()
    kept = [t for i, t in enumerate(templates) if i not in excluded and len(t) <= max_chars]
    info = {"templates": len(templates), "held_out_matches": len(excluded),
            "too_long": sum(1 for i, t in enumerate(templates) if i not in excluded and len(t) > max_chars),
            "kept": len(kept), "max_chars": max_chars}
    if not kept:
        raise ValueError(f"no jailbreak template left to train on ({info})")
    log.info("jailbreak templates: %d of %d kept (%d nearest to a held-out template, %d longer than %d chars)",
             len(kept), len(templates), len(excluded), info["too_long"], max_chars)
    return kept, info


def wrap(template: str, instruction: str) -> str:
    """The instruction inside a jailbreak template (every slot filled)."""
    return template.replace(SLOT, instruction)


def nopost_format(fmt):
    """The same chat format without its post-instruction tokens (the paper's Table 1 variant)."""
    return dataclasses.replace(fmt, suffix="", post_instruction=False)
