"""Check that two results/ folders hold the same outputs (a local run vs a SLURM run of .test).

usage: compare_results.py LOCAL_RESULTS OTHER_RESULTS
Tensors and table numbers are compared with a small tolerance (torch CPU kernels may sum in a
different order across processes); JSON(L) records exactly, except run-time fields; figures by
existence. Exit 1 with the list of differences.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd
import torch

from harmref import io

# run-time measurements: they differ between any two runs (a CSV column or a JSON key of these names)
VOLATILE = {"prepare_seconds", "seconds", "elapsed", "elapsed_s", "created", "timestamp", "script_seconds",
            "wall_seconds", "train_seconds", "peak_rss_gb", "torch_threads"}
# folders of run-time accounting (Snakemake benchmark files and their summary), not results
VOLATILE_DIRS = {"benchmarks"}
RTOL, ATOL = 1e-4, 1e-5


def volatile(key) -> bool:
    """A run-time measurement: a listed name, any `*_seconds`, any peak RSS."""
    key = str(key)
    return key in VOLATILE or key.endswith("_seconds") or "peak_rss" in key


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if not volatile(k)}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _close(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            a, b = float(a), float(b)
        except (TypeError, ValueError):
            return a == b
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=RTOL, abs_tol=ATOL)
    return a == b


def compare(a: Path, b: Path) -> str | None:
    """None if the two files match, else why not."""
    suffix = a.suffix
    if suffix == ".safetensors":
        ta, tb = io.read_tensors(a), io.read_tensors(b)
        if ta.keys() != tb.keys():
            return f"tensor keys {sorted(ta)} vs {sorted(tb)}"
        for k in ta:
            if ta[k].shape != tb[k].shape:
                return f"{k}: shape {tuple(ta[k].shape)} vs {tuple(tb[k].shape)}"
            if not torch.allclose(ta[k].float(), tb[k].float(), rtol=RTOL, atol=ATOL, equal_nan=True):
                diff = (ta[k].float() - tb[k].float()).abs().nan_to_num().max().item()
                return f"{k}: max |diff| {diff:.3g}"
        return None
    if suffix == ".jsonl":
        ra, rb = io.read_jsonl(a), io.read_jsonl(b)
        return None if _strip(ra) == _strip(rb) else "records differ"
    if suffix == ".json":
        return None if _strip(io.read_json(a)) == _strip(io.read_json(b)) else "JSON differs"
    if suffix == ".csv":
        da, db = pd.read_csv(a), pd.read_csv(b)
        da, db = (d.drop(columns=[c for c in d.columns if volatile(c)]) for d in (da, db))
        if list(da.columns) != list(db.columns) or da.shape != db.shape:
            return f"table shape/columns {da.shape} vs {db.shape}"
        for col in da.columns:
            for i, (x, y) in enumerate(zip(da[col], db[col])):
                if not (_close(x, y) or (pd.isna(x) and pd.isna(y))):
                    return f"row {i}, column {col!r}: {x!r} vs {y!r}"
        return None
    if suffix in (".png", ".md", ".pdf", ".svg", ".html"):  # renderings of the checked tables and tensors
        return None if b.stat().st_size > 0 else "empty"
    return None if a.read_bytes() == b.read_bytes() else "bytes differ"


def main(local: str, other: str) -> int:
    local_dir, other_dir = Path(local), Path(other)
    files = sorted(p.relative_to(local_dir) for p in local_dir.rglob("*")
                   if p.is_file() and p.relative_to(local_dir).parts[0] not in VOLATILE_DIRS)
    if not files:
        print(f"no files under {local_dir}")
        return 1
    problems = []
    for rel in files:
        if not (other_dir / rel).is_file():
            problems.append(f"{rel}: missing")
        elif (why := compare(local_dir / rel, other_dir / rel)) is not None:
            problems.append(f"{rel}: {why}")
    extra = sorted(p.relative_to(other_dir) for p in other_dir.rglob("*") if p.is_file() and not (local_dir / p.relative_to(other_dir)).exists())
    problems += [f"{rel}: only in {other_dir}" for rel in extra]
    for p in problems:
        print("DIFF", p)
    print(f"compared {len(files)} files: {len(files) - len(problems)} match, {len(problems)} differ")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
