"""Tidy result tables (pandas DataFrames); `io.write_table` writes them as CSV + markdown."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from . import paper

# Paper Table 1 (AdvBench, substring refusal %, greedy): with vs without post-instruction tokens;
# the numbers live in harmref/paper_numbers.yaml.
PAPER_TABLE1 = paper.table1()


def wilson(k, n, z: float = 1.959964):
    """Wilson score interval (lo, hi) of the proportion k/n as fractions, 95 % by default.

    k, n: numbers (→ two floats) or arrays (→ two arrays). Exactly 0 at k == 0 and 1 at k == n,
    NaN where n ≤ 0. The one interval of every table, claim and figure band.
    """
    kk, nn = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = kk / nn
        denom = 1 + z * z / nn
        centre = (p + z * z / (2 * nn)) / denom
        half = z * np.sqrt(p * (1 - p) / nn + z * z / (4 * nn * nn)) / denom
        lo = np.where(nn <= 0, np.nan, np.where(kk <= 0, 0.0, np.maximum(0.0, centre - half)))
        hi = np.where(nn <= 0, np.nan, np.where(kk >= nn, 1.0, np.minimum(1.0, centre + half)))
    if lo.ndim == 0:
        return float(lo), float(hi)
    return lo, hi


def rate_row(rows: list[dict], key: str = "refused") -> dict:
    """n, the count of `key` true, the count of invalid verdicts (`key` null), the rate over valid verdicts and its SE."""
    n = len(rows)
    invalid = sum(r[key] is None for r in rows)
    k = sum(bool(r[key]) for r in rows if r[key] is not None)
    valid = n - invalid
    p = k / valid if valid else float("nan")
    se = math.sqrt(p * (1 - p) / valid) if valid else float("nan")
    return {"n": n, key: k, "invalid": invalid, "rate": p, "se": se}


def refusal_rates(gens: dict[str, list[dict]], model: str) -> pd.DataFrame:
    """One row per prompt set: label, n, refused, invalid verdicts, refusal rate (over valid verdicts) and its SE."""
    out = []
    for name, rows in gens.items():
        labels = sorted({r["label"] for r in rows})
        out.append({"model": model, "set": name, "label": "/".join(labels), **rate_row(rows)})
    return pd.DataFrame(out)


def post_instruction_table(pairs: dict[str, dict[str, list[dict]]], model: str) -> pd.DataFrame:
    """Paper Table 1: refusal % (over valid verdicts) with and without the post-instruction tokens, per set,
    and the count of invalid verdicts of each."""
    out = []
    for name, by_t in pairs.items():
        chat, nopost = rate_row(by_t["chat"]), rate_row(by_t["nopost"])
        row = {"model": model, "set": name, "n": chat["n"], "refusal_with_post_%": 100 * chat["rate"],
               "refusal_without_post_%": 100 * nopost["rate"], "invalid_with_post": chat["invalid"],
               "invalid_without_post": nopost["invalid"]}
        paper = PAPER_TABLE1.get(model)
        if paper and name == "advbench":
            row["paper_with_%"], row["paper_without_%"] = paper
        out.append(row)
    return pd.DataFrame(out)
