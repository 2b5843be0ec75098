"""Every file read and write in harmref goes through here.

Writers are atomic: they write to a temporary file in the target folder and
rename it into place, so a killed job never leaves a half-written output.
Readers raise `DataError` naming the file, the record and the field.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch


class DataError(ValueError):
    """A bad input file: the message names the file, record and field."""

    def __init__(self, path, message, record=None, field=None):
        where = str(path)
        if record is not None:
            where += f", record {record}"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {message}")


# ---------------------------------------------------------------- atomic writes
_UMASK = os.umask(0)
os.umask(_UMASK)

@contextlib.contextmanager
def atomic_path(path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` on success.

    A writer killed by SIGKILL cannot clean up, so the next write of the same
    `path` first removes the temporaries such a writer left (`.{name}.*.tmp`,
    and the `.{name}.*.d` staging folders of `models.prepare`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; outputs get the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def remove_stale_temporaries(path) -> list[Path]:
    """Delete the temporaries that a killed writer of `path` left beside it; return them."""
    path = Path(path)
    # mkstemp names: .{name}.{8 random characters}.tmp (and the .d staging folder beside one)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.(tmp|d)")
    stale = [p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.") and pattern.fullmatch(p.name)]
    for p in stale:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
    return stale


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n")


def write_jsonl(path, rows: Iterable[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, default=_json_default) + "\n")


def append_jsonl(path, rows: Iterable[dict]) -> None:
    """Append rows to a JSON-lines side file and fsync it (batch checkpoints).

    Not atomic by design: a writer killed mid-append leaves at most one torn last
    line, which `read_jsonl_prefix` drops.
    """
    with open(path, "a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, default=_json_default) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl_prefix(path) -> list[dict]:
    """The intact records of an append-only JSON-lines file ([] when it does not exist).

    A torn last line (a writer killed mid-append) is dropped; a bad line before
    the last is corruption and raises `DataError`.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    rows = []
    for lineno, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if lineno == len(lines):
                break
            raise DataError(path, f"malformed JSON ({e.msg}, column {e.colno})", record=f"line {lineno}") from None
        rows.append(row)
    return rows


def remove(path) -> None:
    """Delete a file if it exists (a finished job's checkpoint)."""
    Path(path).unlink(missing_ok=True)


def _json_default(obj):
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj)}")


def write_tensors(path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    """Save tensors as safetensors (never pickles); `metadata` goes to a JSON sidecar."""
    from safetensors.torch import save_file

    path = Path(path)
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
    if metadata is not None:
        write_json(sidecar_path(path), metadata)


def sidecar_path(path) -> Path:
    path = Path(path)
    return path.with_name(path.name.rsplit(".", 1)[0] + ".json")


def read_tensors(path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def read_sidecar(path) -> dict:
    return read_json(sidecar_path(path))


def write_table(df, stem, floatfmt: str = ".3f") -> None:
    """Write a pandas DataFrame as `{stem}.csv` and `{stem}.md`."""
    stem = str(stem)
    for suffix in (".csv", ".md"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    with atomic_path(stem + ".csv") as tmp:
        df.to_csv(tmp, index=False)
    # object dtype keeps integer columns integers (a mixed frame's .values would make them floats);
    # a newline or '|' inside a cell (a model's reply, a GCG suffix) would break the markdown row
    cells = df.astype(object).map(lambda x: x.replace("|", "\\|").replace("\r", "").replace("\n", "<br>") if isinstance(x, str) else x)
    write_text(stem + ".md", cells.to_markdown(index=False, floatfmt=floatfmt) + "\n")


def save_figure(fig, path) -> None:
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=130, bbox_inches="tight")
    plt.close(fig)


# ---------------------------------------------------------------------- readers
def read_json(path) -> Any:
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except json.JSONDecodeError as e:
        raise DataError(path, f"malformed JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None


def read_jsonl(path) -> list[dict]:
    """Read JSON lines; every non-empty line must be a JSON object."""
    path = Path(path)
    rows = []
    try:
        f = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    with f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(path, f"malformed JSON ({e.msg}, column {e.colno})", record=f"line {lineno}") from None
            if not isinstance(row, dict):
                raise DataError(path, f"expected a JSON object, got {type(row).__name__}", record=f"line {lineno}")
            row["_line"] = lineno
            rows.append(row)
    return rows


def read_records(path, fmt: str = "auto") -> list[dict]:
    """Read a dataset file into dicts, each carrying its `_line` (1-based record position).

    Formats: `jsonl`, `json` (a list of objects or strings), `csv`, `txt` (one prompt a line),
    `jbb` (JailbreakBench artifact: `{"jailbreaks": [...]}`); `auto` guesses from content.
    """
    path = Path(path)
    if fmt == "auto":
        fmt = _guess_format(path)
    if fmt == "jsonl":
        return read_jsonl(path)
    if fmt in ("json", "jbb"):
        obj = read_json(path)
        if fmt == "jbb":
            if not isinstance(obj, dict) or "jailbreaks" not in obj:
                raise DataError(path, "expected a JailbreakBench artifact with a 'jailbreaks' list")
            obj = obj["jailbreaks"]
        if not isinstance(obj, list):
            raise DataError(path, f"expected a JSON list, got {type(obj).__name__}")
        rows = []
        for i, item in enumerate(obj, 1):
            if isinstance(item, str):
                item = {"text": item}
            if not isinstance(item, dict):
                raise DataError(path, f"expected an object or string, got {type(item).__name__}", record=i)
            rows.append({**item, "_line": i})
        return rows
    if fmt == "csv":
        try:
            f = open(path, encoding="utf-8", newline="")
        except FileNotFoundError:
            raise DataError(path, "file not found") from None
        with f:
            reader = csv.DictReader(f, strict=True)
            rows = []
            try:
                for i, row in enumerate(reader, 1):
                    if None in row:
                        raise DataError(path, "more fields than the header has", record=f"row {i}")
                    rows.append({**row, "_line": i})
            except csv.Error as e:
                raise DataError(path, f"malformed CSV after line {reader.line_num}: {e}") from None
            return rows
    if fmt == "txt":
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise DataError(path, "file not found") from None
        return [{"text": line, "_line": i} for i, line in enumerate(lines, 1) if line.strip()]
    raise DataError(path, f"unknown format {fmt!r}")


def _guess_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix == ".txt":
        return "txt"
    if suffix == ".jsonl":
        return "jsonl"
    try:
        head = path.read_text(encoding="utf-8").lstrip()[:1]
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    return "json" if head in ("[", "{") and not _looks_like_jsonl(path) else "jsonl"


def _looks_like_jsonl(path: Path) -> bool:
    """The official CHATS-lab `*.json` files are JSON lines: several objects, one a line."""
    with open(path, encoding="utf-8") as f:
        first = f.readline().strip()
    if not first.startswith("{"):
        return False
    try:
        json.loads(first)
    except json.JSONDecodeError:
        return False
    return True


def sha256_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ------------------------------------------------------- released paper pickles
def read_paper_tensor(path, sha256: str) -> torch.Tensor:
    """Load one of the paper's released `torch.save` files (`src/run/*.pt`) as a tensor.

    These files are pickles, so they are opened only after their sha256 matches the
    pinned value (data/MANIFEST.md), and then with `torch.load(weights_only=True)`:
    the restricted unpickler, widened only by the three numpy globals that a
    `torch.save`d numpy array needs. Nothing else in harmref reads a pickle.
    """
    import numpy as np

    path = Path(path)
    if not path.exists():
        raise DataError(path, "file not found")
    digest = sha256_file(path)
    if digest != sha256:
        raise DataError(path, f"sha256 {digest} does not match the pinned {sha256}; refusing to unpickle it")
    numpy_array = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.float16))]
    try:
        with torch.serialization.safe_globals(numpy_array):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # the restricted unpickler names what it refused
        raise DataError(path, f"not loadable with torch.load(weights_only=True): {e}") from None
    if isinstance(obj, np.ndarray):
        obj = torch.from_numpy(obj.copy())
    if not isinstance(obj, torch.Tensor):
        raise DataError(path, f"expected a tensor or numpy array, got {type(obj).__name__}")
    return obj
