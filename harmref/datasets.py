"""Prompt sets: read raw files, validate, normalise, sample deterministically.

A normalised record is `{id, prompt, label, source, category}`; `label` is
`harmful` or `harmless`. Optional keys: `target` (a source's `target_field`, e.g.
AdvBench's "Sure, here is …", the goal of an adversarial-suffix attack) and
`verbatim` (true: no ending normalisation, for optimised attack strings). Sampling is a seeded shuffle of the pooled sources,
so a set is the same on every machine. Sets hold the raw prompts; the
per-model ending normalisation is applied when a model reads them (`load_prompts`),
so models with and without it share one set of files.
"""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path

from .io import DataError, read_records

log = logging.getLogger(__name__)

LABELS = ("harmful", "harmless")
_TRAILING = re.compile(r"[\s.?!;:,…]+$")


def normalise_ending(prompt: str) -> str:
    """Strip trailing punctuation and end with exactly one '.'.

    On small models t_inst is otherwise the final punctuation token, and
    harmful sets mostly end in a word while Alpaca ends in '.', a lexical
    shortcut for any probe at t_inst.
    """
    return _TRAILING.sub("", prompt) + "."


def text_key(prompt: str) -> str:
    """Key for overlap checks: case- and ending-insensitive."""
    return _TRAILING.sub("", " ".join(prompt.split())).lower()


def source_path(spec: dict, root: Path | str = ".") -> Path:
    """`root / spec["file"]`, refused (`DataError`) unless it lies inside `root` once symlinks are resolved.

    The config schema already rejects absolute paths and '..'; this also stops a symlink under
    data_root that points elsewhere (a data file is an input the user vouches for by placing it there).
    """
    path = Path(root) / spec["file"]
    real, real_root = path.resolve(), Path(root).resolve()
    if not real.is_relative_to(real_root):
        raise DataError(path, f"resolves to {real}, outside data_root {real_root}; copy the file into data_root "
                              "(or point data_root at the folder that holds it)")
    return path


def source_prefixes(sources: list[dict], root: Path | str = ".") -> list[str]:
    """The id prefix of each source of one set: its file stem, or, where two different files of the
    set share a stem (a/harmful.json, b/harmful.csv), the file's path under `root`, so ids are unique."""
    real = [source_path(s, root).resolve() for s in sources]
    stems: dict[str, set] = {}
    for r in real:
        stems.setdefault(r.stem, set()).add(r)
    real_root = Path(root).resolve()
    return [r.stem if len(stems[r.stem]) == 1 else r.relative_to(real_root).as_posix() for r in real]


def read_source(spec: dict, root: Path | str = ".", prefix: str | None = None) -> list[dict]:
    """Records of one source: `{file, field, format?, where?, category_field?, id_field?, target_field?}`.

    Ids are `{prefix}:{record}` (prefix: the file stem unless given; see `source_prefixes`).
    """
    path = source_path(spec, root)
    prefix = path.stem if prefix is None else prefix
    field = spec.get("field", "instruction")
    rows = read_records(path, spec.get("format", "auto"))
    where = spec.get("where") or {}
    out, seen_ids, skipped = [], {}, 0
    for row in rows:
        line = row["_line"]
        if any(str(row.get(k)) != str(v) for k, v in where.items()):
            continue
        if field not in row:
            raise DataError(path, "missing prompt field", record=line, field=field)
        prompt = row[field]
        if prompt is None and spec.get("format") == "jbb":
            skipped += 1  # JailbreakBench artifacts hold null where no attack prompt was submitted
            continue
        if not isinstance(prompt, str):
            raise DataError(path, f"expected a string, got {type(prompt).__name__}", record=line, field=field)
        if not prompt.strip():
            raise DataError(path, "empty prompt", record=line, field=field)
        _no_bom(prompt, path, line, field)
        rid = f"{prefix}:{line}"
        if spec.get("id_field"):
            if spec["id_field"] not in row:
                raise DataError(path, "missing id field", record=line, field=spec["id_field"])
            rid = f"{prefix}:{row[spec['id_field']]}"
            if rid in seen_ids:
                raise DataError(path, f"duplicate id {row[spec['id_field']]!r} (first at record {seen_ids[rid]})", record=line, field=spec["id_field"])
            seen_ids[rid] = line
        cat = row.get(spec["category_field"]) if spec.get("category_field") else spec.get("category")
        rec = {"id": rid, "prompt": prompt.strip(), "source": str(spec["file"]), "category": None if cat is None else str(cat)}
        if spec.get("target_field"):
            target = row.get(spec["target_field"])
            if not isinstance(target, str) or not target.strip():
                raise DataError(path, "missing or empty target", record=line, field=spec["target_field"])
            _no_bom(target, path, line, spec["target_field"])
            rec["target"] = target.strip()
        out.append(rec)
    if skipped:
        log.warning("%s: skipped %d of %d records with a null prompt (no attack submitted)", path, skipped, len(rows))
    return out


def _no_bom(text: str, path, record, field) -> None:
    if "\ufeff" in text:  # a byte-order mark inside the file (files concatenated?) would enter the prompt's tokens
        raise DataError(path, "contains a byte-order mark (U+FEFF); remove it", record=record, field=field)


def build_set(
    name: str,
    spec: dict,
    root: Path | str = ".",
    exclude: list[list[dict]] = (),
    seed: int = 0,
) -> list[dict]:
    """One normalised, sampled prompt set. `exclude`: record lists whose prompts must not appear."""
    label = spec["label"]
    if label not in LABELS:
        raise ValueError(f"dataset {name!r}: label must be one of {LABELS}, got {label!r}")
    banned = {text_key(r["prompt"]) for recs in exclude for r in recs}
    pool, seen, ids = [], set(), {}
    for i, (source, prefix) in enumerate(zip(spec["sources"], source_prefixes(spec["sources"], root)), 1):
        here = f"source {i} ({Path(root) / source['file']}, field {source.get('field', 'instruction')!r})"
        for rec in read_source(source, root, prefix):
            key = text_key(rec["prompt"])
            if key in banned or key in seen:
                continue
            if rec["id"] in ids:  # e.g. one file listed twice with different fields: ids would collide downstream
                raise DataError(Path(root) / source["file"], f"dataset {name!r}: id {rec['id']!r} of {here} is also "
                                f"the id of a record of {ids[rec['id']]}; give the sources distinct files or distinct "
                                "id_field values", field="id")
            ids[rec["id"]] = here
            seen.add(key)
            pool.append(rec)
    rng = random.Random(f"{seed}:{name}")
    if spec.get("shuffle", True):
        rng.shuffle(pool)
    n = spec.get("n")
    if n is not None and n > len(pool):
        log.warning("dataset %s: asked for %d prompts, only %d available", name, n, len(pool))
    chosen = pool if n is None else pool[:n]
    extra = {"verbatim": True} if spec.get("verbatim") else {}
    return [{"id": r["id"], "prompt": r["prompt"], "label": label, "source": r["source"], "category": r["category"],
             **({"target": r["target"]} if "target" in r else {}), **extra} for r in chosen]


def provenance(name: str, spec: dict, records: list[dict], root: Path | str = ".", exclude: list[list[dict]] = (),
               seed: int = 0) -> dict:
    """A set's provenance: seed, sample size, source sha256s, and whether rebuilding it reproduces `records`.

    `records` as read back from results/data/{name}.jsonl; a rebuild that differs means the
    sources or the sampler changed since the set was built.
    """
    from .io import sha256_file

    stored = [{k: v for k, v in r.items() if k != "_line"} for r in records]
    rebuilt = build_set(name, spec, root, exclude, seed)
    return {
        "seed": seed, "label": spec["label"], "n": spec.get("n"), "count": len(stored), "shuffle": spec.get("shuffle", True),
        "exclude": list(spec.get("exclude", [])),
        "sources": [{"file": s["file"], "sha256": sha256_file(Path(root) / s["file"])} for s in spec["sources"]],
        "reproduced": rebuilt == stored,
    }


def load_prompts(path, normalise_endings: bool = False) -> list[dict]:
    """Read a normalised set (results/data/{set}.jsonl), validate it, and apply the model's ending rule.

    Records marked `verbatim` (optimised attack strings) are never normalised.
    """
    from .io import read_jsonl

    records = validate_records(read_jsonl(path), path)
    if normalise_endings:
        records = [r if r.get("verbatim") else {**r, "prompt": normalise_ending(r["prompt"])} for r in records]
    return records


def validate_records(records: list[dict], path) -> list[dict]:
    """Check a normalised set (as read back from JSONL) before a model sees it."""
    ids = {}
    for r in records:
        line = r.get("_line")
        for field in ("id", "prompt", "label"):
            if field not in r:
                raise DataError(path, "missing field", record=f"line {line}", field=field)
        if not isinstance(r["prompt"], str) or not r["prompt"].strip():
            raise DataError(path, "empty prompt", record=f"line {line}", field="prompt")
        if r["label"] not in LABELS:
            raise DataError(path, f"label must be one of {LABELS}, got {r['label']!r}", record=f"line {line}", field="label")
        if r["id"] in ids:
            raise DataError(path, f"duplicate id {r['id']!r} (first at line {ids[r['id']]})", record=f"line {line}", field="id")
        ids[r["id"]] = line
    return records
