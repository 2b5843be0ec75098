"""The paper's numbers, read from `paper_numbers.yaml` (package data): the one place harmref keeps them.

Every number carries its source: P (paper text), W≈ (a website figure read by eye), C (official
code), A (the official released tensors, measured by the research notes; not a paper number).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

PATH = Path(__file__).with_name("paper_numbers.yaml")
SOURCES = {
    "P": "paper text",
    "W": "paper figure/table image on the project website",
    "W≈": "website figure read by eye (approximate)",
    "C": "official code",
    "A": "official released tensors (not a paper number)",
}


@lru_cache(maxsize=1)
def numbers() -> dict:
    """The whole file as a dict; fails naming the file when a value lacks its source."""
    data = yaml.safe_load(PATH.read_text(encoding="utf-8"))
    _check_sources(data, [])
    return data


def _check_sources(node, where: list[str]) -> None:
    if isinstance(node, dict):
        if ("value" in node or "range" in node) and node.get("source") not in SOURCES:
            raise ValueError(f"{PATH}: {'.'.join(where)}: source must be one of {sorted(SOURCES)}, got {node.get('source')!r}")
        for k, v in node.items():
            _check_sources(v, [*where, str(k)])


def paper_name(model: str) -> str | None:
    """The paper's name for a harmref model alias (llama2-7b-chat, …), None for other models."""
    return numbers()["models"].get(model)


def get(section: str, model: str) -> dict:
    """One section's numbers for one model ({} when the paper has none for it)."""
    return numbers().get(section, {}).get(model, {}) or {}


def table1() -> dict[str, tuple[float, float]]:
    """Table 1: model alias → (refusal % with, without the post-instruction tokens)."""
    return {m: (v["with"]["value"], v["without"]["value"]) for m, v in numbers()["table1"].items()}


def table3() -> dict[str, dict[str, dict[str, float]]]:
    """Table 3: model alias → guard → test set → accuracy %."""
    return {m: v for m, v in numbers()["table3"].items() if m in numbers()["models"]}


def fmt(entry: dict | None, unit: str = "") -> str:
    """'94 % (layer 9) [P]', '≈ 5–9 % [W≈]' or '—'."""
    if not entry:
        return "—"
    if "range" in entry:
        lo, hi = entry["range"]
        text = f"{_num(lo)}…{_num(hi)}{unit}"
    else:
        v = entry["value"]
        text = ", ".join(map(_num, v)) if isinstance(v, list) else f"{_num(v)}{unit}"
    if entry.get("layer") is not None:
        text += f" (layer {entry['layer']})"
    return f"{text} [{entry['source']}]"


def _num(x) -> str:
    return f"{x:g}" if isinstance(x, (int, float)) else str(x)
