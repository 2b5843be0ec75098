"""A prompt set's stored hidden states with the model's judged generation of each row, joined once.

Rules extract_hidden (tensors and a sidecar of ids, labels, categories, positions) and judge (the
verdicts) stay apart, so a new judge reruns no extraction; every analysis that groups hidden states by the
model's behaviour (directions, geometry, latent_guard, stated_belief, claims) reads them through `load`,
which checks the two against each other: same prompts, the fields the analyses read, the expected
positions and, where asked, a valid verdict on every row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import io
from .judging import refused_flags

FIELDS = ("id", "prompt", "label", "refused")


@dataclass
class HiddenSet:
    """`hidden` [n, layers, positions, d]; `records[k]`: the generation record of row k (id, prompt, label,
    category, response, refused); `meta`: the hidden states' sidecar; `source`: the generations file."""

    hidden: torch.Tensor
    records: list[dict]
    meta: dict
    source: str

    @property
    def ids(self) -> list[str]:
        return [r["id"] for r in self.records]

    @property
    def by_id(self) -> dict[str, dict]:
        return {r["id"]: r for r in self.records}

    @property
    def labels(self) -> list[str]:
        return [r["label"] for r in self.records]

    def refused(self) -> list[bool]:
        """The verdicts as booleans (`judging.refused_flags`: an invalid verdict is an error)."""
        return refused_flags(self.records, self.source)


def load(hidden_path, gens_path, positions: list[str] | None = None, valid_verdicts: bool = True) -> HiddenSet:
    """The hidden states of `hidden_path` with the generation record of each of their prompts.

    `positions`: the captured positions the caller's centroids or directions were fitted on; other ones
    are an error. `valid_verdicts`: every row needs a verdict (`refused` not null), for analyses that
    group prompts by behaviour. Errors (`io.DataError`) name the file, record and field.
    """
    meta = io.read_sidecar(hidden_path)
    if positions is not None and meta["positions"] != positions:
        raise io.DataError(hidden_path, f"positions {meta['positions']} differ from the centroids' {positions}; "
                                        "rerun the directions rule", field="positions")
    by_id = {}
    for r in io.read_jsonl(gens_path):
        for field in FIELDS:
            if field not in r:
                raise io.DataError(gens_path, "missing field", record=f"line {r['_line']}", field=field)
        by_id[r["id"]] = r
    missing = [i for i in meta["ids"] if i not in by_id]
    if missing:
        raise io.DataError(gens_path, f"no generation for this prompt of {hidden_path} "
                           f"({len(missing)} missing in all); rerun the generate rule", record=missing[0], field="id")
    out = HiddenSet(io.read_tensors(hidden_path)["hidden"], [by_id[i] for i in meta["ids"]], meta, str(gens_path))
    if valid_verdicts:
        out.refused()  # an invalid LLM-judge verdict has no behaviour group
    return out
