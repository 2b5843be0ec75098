"""Every file read and write in harmref goes through here.

Writers are atomic: they write to a temporary file in the target folder and
rename it into place, so a killed job never leaves a half-written output.
Files that belong together (a tensor and its JSON sidecar, a table's CSV and
markdown) are written through `atomic_group`: every file is written first, and
only then are they all renamed into place, so a failing writer leaves the old pair.
Outputs get the usual permissions (0666 less the umask), whatever the writer made.
Readers raise `DataError` naming the file, the record and the field; text files
must be UTF-8 (a byte-order mark is accepted only at the start of a CSV).
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
from io import StringIO
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
    with atomic_group(path) as (tmp,):
        yield tmp


@contextlib.contextmanager
def atomic_group(*paths) -> Iterator[tuple[Path, ...]]:
    """Yield one temporary path per target; rename them all onto their targets when the block succeeds.

    For files that belong together (tensor + sidecar, CSV + markdown): the block writes every
    temporary first, so an exception anywhere in it (a failing converter, a full disk) leaves
    every old target as it was and no temporary behind. Only then are the temporaries renamed,
    back to back; a SIGKILL can land only between two of those renames (microseconds), and
    Snakemake then marks the job incomplete and reruns it.
    """
    targets = [Path(p) for p in paths]
    if len({os.path.abspath(p) for p in targets}) != len(targets):
        raise ValueError(f"atomic_group: the same target twice in {[str(p) for p in targets]}")
    tmps: list[Path] = []
    try:
        for p in targets:
            p.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(p)
            tmps.append(_temporary(p))
        yield tuple(tmps)
        for t in tmps:
            usual_permissions(t)
        for t, p in zip(tmps, targets):
            os.replace(t, p)
    except BaseException:
        for t in tmps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(t)
        raise


@contextlib.contextmanager
def atomic_folder(out_dir, entries: tuple[str, ...]) -> Iterator[Path]:
    """Yield an empty staging folder inside `out_dir`; on success move its files into `out_dir`.

    For a model copy (`save_pretrained`): every file gets the usual permissions, and the
    `entries` (the files a loader opens first, e.g. `model.safetensors` or the index of a
    sharded checkpoint) are moved last, so a loader that finds one finds the rest. Entries
    the block did not write are removed from `out_dir` (a stale single-file checkpoint
    beside new shards would be loaded instead of them). On failure the staging folder goes.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir / entries[0])
    staging = Path(tempfile.mkdtemp(prefix=f".{entries[0]}.", suffix=".d", dir=out_dir))
    try:
        yield staging
        files = sorted(staging.iterdir(), key=lambda f: f.name in entries)
        if not any(f.name in entries for f in files):
            raise FileNotFoundError(f"{staging}: none of {list(entries)} was written")
        for f in files:
            usual_permissions(f)
            os.replace(f, out_dir / f.name)
        for name in entries:
            if not any(f.name == name for f in files):
                (out_dir / name).unlink(missing_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _temporary(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def usual_permissions(path) -> None:
    """Give a file the permissions of an ordinary new file (0666 less the umask).

    mkstemp makes 0600 files, and so does safetensors' writer (it writes through its own
    temporary): set after the writer is done, just before the file is published.
    """
    if os.path.isfile(path):
        os.chmod(path, 0o666 & ~_UMASK)


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
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")  # bytes: a kill can also tear a multi-byte character of the last line
    if lines[-1] == b"":
        lines.pop()
    rows = []
    for lineno, line in enumerate(lines, 1):
        try:
            row = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            if lineno == len(lines):
                break
            why = f"malformed JSON ({e.msg}, column {e.colno})" if isinstance(e, json.JSONDecodeError) else "not UTF-8"
            raise DataError(path, why, record=f"line {lineno}") from None
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
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    if metadata is None:
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp))
        return
    sidecar = json.dumps(metadata, indent=2, ensure_ascii=False, default=_json_default) + "\n"
    with atomic_group(path, sidecar_path(path)) as (tmp, tmp_meta):  # replaced together or not at all
        save_file(tensors, str(tmp))
        tmp_meta.write_text(sidecar, encoding="utf-8")


def sidecar_path(path) -> Path:
    path = Path(path)
    return path.with_name(path.name.rsplit(".", 1)[0] + ".json")


def read_tensors(path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def read_sidecar(path) -> dict:
    return read_json(sidecar_path(path))


def write_table(df, stem, floatfmt: str = ".3f", markdown_df=None) -> None:
    """Write a pandas DataFrame as `{stem}.csv` and `{stem}.md` (`markdown_df`: a readable view for the .md)."""
    stem = str(stem)
    for suffix in (".csv", ".md"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    # object dtype keeps integer columns integers (a mixed frame's .values would make them floats);
    # text cells (a model's reply, a GCG suffix) are escaped: a newline or '|' would break the row,
    # and HTML or markdown in them would render as markup instead of as the text
    cells = (df if markdown_df is None else markdown_df).astype(object).map(lambda x: escape_markdown(x) if isinstance(x, str) else x)
    markdown = cells.to_markdown(index=False, floatfmt=floatfmt) + "\n"
    with atomic_group(stem + ".csv", stem + ".md") as (tmp_csv, tmp_md):  # replaced together or not at all
        df.to_csv(tmp_csv, index=False)
        tmp_md.write_text(markdown, encoding="utf-8")


_MD_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
# backslash, code, emphasis, links/images, strikethrough, table pipes; '_' only where it can open or close
# emphasis (not inside a word such as harmless_test)
_MD_SPECIAL = re.compile(r"[&<>\\`*\[\]~|]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def escape_markdown(text: str, newline: str = "<br>") -> str:
    """`text` as literal markdown: no raw HTML, link, image or emphasis from it renders.

    `&`, `<`, `>` become entities; other markdown punctuation is backslash-escaped; a newline
    becomes `newline` (`<br>` inside a table cell, the only HTML that harmref itself adds).
    """
    text = _MD_SPECIAL.sub(lambda m: _MD_ENTITIES.get(m.group(0), "\\" + m.group(0)), text)
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", newline)


def save_figure(fig, path) -> None:
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=130, bbox_inches="tight")
    plt.close(fig)


# ---------------------------------------------------------------------- readers
_BOM = b"\xef\xbb\xbf"


def read_text(path, bom_ok: bool = False) -> str:
    """A UTF-8 text file's content; `DataError` naming the file for a missing, non-UTF-8 or BOM'd file.

    `bom_ok`: a leading UTF-8 byte-order mark is dropped (spreadsheets write one before a CSV
    header) instead of refused, so it never becomes part of a field name or a prompt.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except IsADirectoryError:
        raise DataError(path, "is a folder, not a file") from None
    if data.startswith(_BOM):
        if not bom_ok:
            raise DataError(path, "starts with a UTF-8 byte-order mark (BOM); save it as UTF-8 without a BOM")
        data = data[len(_BOM):]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(path, f"not UTF-8 text (byte 0x{data[e.start]:02x} at line {line}, byte offset {e.start}); "
                              "convert it to UTF-8") from None


def read_json(path) -> Any:
    path = Path(path)
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(path, f"malformed JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None


def read_jsonl(path) -> list[dict]:
    """Read JSON lines; every non-empty line must be a JSON object."""
    path = Path(path)
    rows = []
    for lineno, line in enumerate(_lines(read_text(path)), 1):
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


_NEWLINE = re.compile(r"\r\n|\r|\n")


def _lines(text: str) -> list[str]:
    """Lines of a JSON-lines text. Not `str.splitlines`: that also splits at U+2028 and other
    separators, which a JSON string may hold unescaped (harmref writes with ensure_ascii=False)."""
    lines = _NEWLINE.split(text)
    return lines[:-1] if lines and lines[-1] == "" else lines


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
        with StringIO(read_text(path, bom_ok=True), newline="") as f:
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
        lines = read_text(path).splitlines()
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
    text = read_text(path)
    head = text.lstrip()[:1]
    return "json" if head in ("[", "{") and not _looks_like_jsonl(text) else "jsonl"


def _looks_like_jsonl(text: str) -> bool:
    """The official CHATS-lab `*.json` files are JSON lines: several objects, one a line."""
    first = text.split("\n", 1)[0].strip()
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
