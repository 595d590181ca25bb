"""Prompt sets in the formats users bring, streamed row by row.

JSONL (`prompt` string, `messages` list, or MT-Bench style `turns`), plain text (one prompt per
line), CSV and Parquet (`--prompt-field` column) and `datasets` folders (made by `save_to_disk`).
Rows are read lazily, so a run over a million prompts keeps memory flat. A bad row names its file,
row and field; with `on_bad_row="skip"` it is reported and skipped instead. Problems that would
make every row bad (no such file, unknown format, no prompt column) are a UsageError up front, so
"skip" never quietly skips a whole file.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from cai.errors import UsageError
from cai.resources import bundled_file

ROLES = ("system", "user", "assistant")
# Fields that can carry the prompt when `prompt_field` is absent from a row, in this order.
FALLBACK_FIELDS = ("messages", "turns")
_SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".txt": "txt", ".csv": "csv",
             ".parquet": "parquet"}
_PARQUET_BATCH = 1024


class PromptRow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    index: int = Field(description="0-based row number in the source (bad rows count; blank lines do not).")
    messages: list[dict[str, str]]
    category: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict, description="Other scalar columns, kept for provenance.")

    @property
    def prompt_text(self) -> str:
        return self.messages[-1]["content"]


class BadRowError(UsageError):
    """One unusable row: `FILE: line N: FIELD: reason` (N counted from 1, as an editor shows it)."""

    def __init__(self, path: Path | str, unit: str, number: int, field: str, reason: str):
        self.path, self.unit, self.number, self.field, self.reason = Path(path), unit, number, field, reason
        super().__init__(f"{path}: {unit} {number}: {field}: {reason}")


def default_prompts_path() -> Path:
    return bundled_file("data", "red_team.jsonl")


def eval_prompts_path() -> Path:
    return bundled_file("data", "eval_prompts.jsonl")


# ---------------------------------------------------------------------------------------------
# One record → messages


class _FieldError(Exception):
    def __init__(self, field: str, reason: str):
        super().__init__(field, reason)
        self.field, self.reason = field, reason


def _from_value(value: Any, field: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        if not value.strip():
            raise _FieldError(field, "is empty")
        return [{"role": "user", "content": value}]
    if not isinstance(value, (list, tuple)):
        raise _FieldError(field, f"must be a string or a list of messages, got {type(value).__name__}")
    if not value:
        raise _FieldError(field, "is an empty list")
    if all(isinstance(v, str) for v in value):
        # MT-Bench layout: later turns depend on the model's own earlier answers, so only the
        # first one is a self-contained prompt.
        if not value[0].strip():
            raise _FieldError(f"{field}[0]", "is empty")
        return [{"role": "user", "content": value[0]}]
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise _FieldError(f"{field}[{i}]", "must be {role: system|user|assistant, content: string}")
        out.append({"role": m["role"], "content": m["content"]})
    last = len(out) - 1
    if out[last]["role"] != "user":
        raise _FieldError(f"{field}[{last}]", f"the last message must be from the user, not {out[last]['role']}")
    if not out[last]["content"].strip():
        raise _FieldError(f"{field}[{last}]", "the last user message is empty")
    return out


def _messages(raw: dict, prompt_field: str) -> tuple[list[dict[str, str]], str]:
    """(messages, the field they came from); raises _FieldError naming the field at fault."""
    if raw.get(prompt_field) is not None:
        return _from_value(raw[prompt_field], prompt_field), prompt_field
    for alt in FALLBACK_FIELDS:
        if alt != prompt_field and raw.get(alt) is not None:
            return _from_value(raw[alt], alt), alt
    raise _FieldError(prompt_field, f"missing (a row needs {prompt_field!r}, 'messages' or 'turns')")


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _row(path: Path, unit: str, number: int, index: int, raw: Any, prompt_field: str) -> PromptRow:
    if not isinstance(raw, dict):
        raise BadRowError(path, unit, number, "(row)", f"must be an object, got {type(raw).__name__}")
    try:
        messages, used = _messages(raw, prompt_field)
    except _FieldError as exc:
        raise BadRowError(path, unit, number, exc.field, exc.reason) from None
    category = raw.get("category")
    # An empty CSV cell means "no category", not a category named "".
    category = str(category) if category is not None and str(category).strip() else None
    skip = {used, "category", *FALLBACK_FIELDS}
    meta = {str(k): v for k, v in raw.items() if k not in skip and _is_scalar(v)}
    return PromptRow(index=index, messages=messages, category=category, meta=meta)


# ---------------------------------------------------------------------------------------------
# Readers: each yields (unit, 1-based number, raw record or a BadRowError) lazily.

Record = tuple[str, int, Any]


def _text_lines(path: Path) -> Iterator[tuple[int, str | BadRowError]]:
    """Non-blank lines, decoded one at a time so one badly encoded line is one bad row."""
    with open(path, "rb") as fh:
        for n, data in enumerate(fh, 1):
            try:
                line = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield n, BadRowError(path, "line", n, "(encoding)", f"not UTF-8 text ({exc.reason})")
                continue
            if n == 1:
                line = line.lstrip("\ufeff")  # editors on Windows write a byte-order mark
            if line.strip():
                yield n, line.rstrip("\r\n")


def _jsonl(path: Path, prompt_field: str) -> Iterator[Record]:
    first = True
    for n, line in _text_lines(path):
        if isinstance(line, BadRowError):
            yield "line", n, line
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            if first and (line.strip() == "{" or line.lstrip().startswith("[")):
                raise UsageError(f"{path}: looks like one JSON document, not one object per line (JSONL); "
                                 f"convert it first, e.g. jq -c '.[]' {path.name} > prompts.jsonl") from None
            value = BadRowError(path, "line", n, "(json)", f"not valid JSON: {exc.msg} at column {exc.colno}")
        else:
            if first and isinstance(value, list):
                raise UsageError(f"{path}: line {n} is a JSON array; cai reads one JSON object per line "
                                 f"(JSONL), e.g. jq -c '.[]' {path.name} > prompts.jsonl")
        first = False
        yield "line", n, value


def _txt(path: Path, prompt_field: str) -> Iterator[Record]:
    for n, line in _text_lines(path):
        yield "line", n, line if isinstance(line, BadRowError) else {prompt_field: line}


def _check_columns(path: Path, columns: list[str], prompt_field: str) -> None:
    if prompt_field in columns or any(f in columns for f in FALLBACK_FIELDS):
        return
    shown = ", ".join(columns[:20]) + (", ..." if len(columns) > 20 else "")
    raise UsageError(f"{path}: no column {prompt_field!r} (columns: {shown or 'none'}); "
                     f"choose the prompt column with --prompt-field")


def _csv(path: Path, prompt_field: str) -> Iterator[Record]:
    # utf-8-sig: spreadsheet exports often start with a byte-order mark, which would otherwise
    # become part of the first column's name.
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader, None)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise UsageError(f"{path}: line 1: unreadable CSV header: {exc}") from None
        if header is None:
            raise UsageError(f"{path}: empty CSV file (no header line)")
        _check_columns(path, header, prompt_field)
        while True:
            # The line a record starts on, which differs from a record count once quoted fields
            # span several lines.
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield "line", start, BadRowError(path, "line", start, "(csv)", str(exc))
                continue
            except UnicodeDecodeError as exc:
                # The text decoder cannot resynchronise after a bad byte, so this ends the file.
                raise UsageError(f"{path}: near line {start}: not UTF-8 text ({exc.reason})") from None
            if not row or not any(cell.strip() for cell in row):
                continue
            if len(row) > len(header):
                # Usually an unquoted comma inside the prompt: reading it would cut the prompt short.
                yield "line", start, BadRowError(path, "line", start, "(csv)",
                                                 f"{len(row)} fields but the header has {len(header)}; "
                                                 f"quote fields that contain commas")
                continue
            yield "line", start, {k: (row[i] if i < len(row) else None) for i, k in enumerate(header)}


def _parquet(path: Path, prompt_field: str) -> Iterator[Record]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise UsageError(f"{path}: not a readable Parquet file: {exc}") from None
    _check_columns(path, pf.schema_arrow.names, prompt_field)
    n = 0
    for batch in pf.iter_batches(batch_size=_PARQUET_BATCH):
        for row in batch.to_pylist():
            n += 1
            yield "row", n, row


def _datasets_folder(path: Path, prompt_field: str) -> Iterator[Record]:
    splits_file = path / "dataset_dict.json"
    if splits_file.is_file():
        try:
            splits = json.loads(splits_file.read_text(encoding="utf-8")).get("splits") or []
        except (OSError, ValueError, AttributeError):
            splits = []
        example = f"{path / splits[0]}" if splits else f"{path}/SPLIT"
        raise UsageError(f"{path}: a DatasetDict with splits {', '.join(splits) or '(unknown)'}; "
                         f"pass one split's folder, e.g. --prompts {example}")
    from datasets import Dataset, load_from_disk

    try:
        ds = load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(f"{path}: a folder, but not a datasets folder made by save_to_disk ({exc})") from None
    if not isinstance(ds, Dataset):
        raise UsageError(f"{path}: holds a {type(ds).__name__}; pass one split's folder")
    _check_columns(path, list(ds.column_names), prompt_field)
    # Iterating a memory-mapped Arrow table reads it a batch at a time.
    for i, row in enumerate(ds, 1):
        yield "row", i, row


_READERS = {"jsonl": _jsonl, "txt": _txt, "csv": _csv, "parquet": _parquet, "datasets": _datasets_folder}


def _source(path: str | Path | None) -> tuple[Path, str]:
    src = Path(path).expanduser() if path is not None and str(path) != "" else default_prompts_path()
    if not src.exists():
        raise UsageError(f"--prompts {src}: no such file or folder")
    if src.is_dir():
        return src, "datasets"
    fmt = _SUFFIXES.get(src.suffix.lower())
    if fmt is None:
        raise UsageError(f"{src}: unknown prompt format {src.suffix or '(no extension)'}; use .jsonl, .txt, "
                         f".csv, .parquet or a datasets folder (save_to_disk)")
    return src, fmt


def prompts_source(path: str | Path | None) -> Path:
    """The file or folder `iter_prompts(path)` reads (the bundled set when `path` is None), checked;
    what a run records as its input."""
    return _source(path)[0]


def messages_key(messages: list[dict[str, str]]) -> bytes:
    """A short digest of a prompt's messages: rows with equal keys get equal record ids."""
    return hashlib.sha256(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()).digest()[:12]


# ---------------------------------------------------------------------------------------------


def iter_prompts(path: str | Path | None, *, prompt_field: str = "prompt", on_bad_row: Literal["skip", "fail"] = "fail",
                 limit: int | None = None, on_skip: Callable[[BadRowError], None] | None = None) -> Iterator[PromptRow]:
    """The prompts of `path` (default: the bundled red-team set), one PromptRow at a time.

    The path, format and arguments are checked now, so a typo fails at the call rather than at
    the first `next()`; the file itself is opened lazily.
    """
    src, fmt = _source(path)
    if on_bad_row not in ("skip", "fail"):
        raise UsageError(f"on_bad_row must be 'skip' or 'fail', not {on_bad_row!r}")
    if limit is not None and limit < 0:
        raise UsageError(f"limit must be >= 0, not {limit}")
    if not prompt_field:
        raise UsageError("prompt_field must be a non-empty field name")
    return _iter(src, fmt, prompt_field, on_bad_row, limit, on_skip)


def _iter(src: Path, fmt: str, prompt_field: str, on_bad_row: str, limit: int | None,
          on_skip: Callable[[BadRowError], None] | None) -> Iterator[PromptRow]:
    if limit == 0:
        return
    emitted = 0
    for index, (unit, number, raw) in enumerate(_READERS[fmt](src, prompt_field)):
        try:
            if isinstance(raw, BadRowError):
                raise raw
            row = _row(src, unit, number, index, raw, prompt_field)
        except BadRowError as exc:
            if on_bad_row == "fail":
                raise
            if on_skip is not None:
                on_skip(exc)
            continue
        yield row
        emitted += 1
        if limit is not None and emitted >= limit:
            return


def count_prompts(path: str | Path | None, *, prompt_field: str = "prompt", limit: int | None = None) -> int:
    """How many rows a run will see (bad rows left out), for a progress bar's total: one streaming
    pass that checks each row's prompt but builds no row models."""
    src, fmt = _source(path)
    if limit == 0:
        return 0
    n = 0
    for _unit, _number, raw in _READERS[fmt](src, prompt_field):
        if isinstance(raw, dict):
            try:
                _messages(raw, prompt_field)
            except _FieldError:
                continue
            n += 1
            if limit is not None and n >= limit:
                break
    return n


def iter_records(path: str | Path, *, prompt_field: str = "prompt") -> Iterator[dict]:
    """The raw records (dicts) of any prompt or data file cai reads (JSONL, CSV, Parquet, text, a
    `datasets` folder), streamed; rows that are not objects (bad JSON, a bad CSV line) are left
    out. For data whose rows are not prompts (an SFT export ends with the assistant's turn), where
    `iter_prompts` would call the row bad."""
    src, fmt = _source(path)
    for _unit, _number, raw in _READERS[fmt](src, prompt_field):
        if isinstance(raw, dict):
            yield raw


# ---------------------------------------------------------------------------------------------
# Shards: `cai generate --shard I/N` (and `cai judge --shard I/N`) take the rows whose stable key
# falls in shard I. The key is a hash of the row itself, so the split needs no coordination between
# the N jobs, and a job resumed any number of times takes the same rows.


class Shard(NamedTuple):
    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def record(self) -> dict[str, int]:
        """As run.yaml records it."""
        return {"index": self.index, "count": self.count}

    def takes(self, key: str) -> bool:
        return in_shard(key, self.index, self.count)


def parse_shard(value: "str | Shard | dict | None") -> Shard | None:
    """`I/N` (0 <= I < N) → Shard; a Shard or {index, count} passes through (checked); None stays None."""
    if value is None or isinstance(value, Shard):
        return value
    if isinstance(value, dict):
        try:
            index, count = int(value["index"]), int(value["count"])
        except (KeyError, TypeError, ValueError):
            raise UsageError(f"shard {value!r}: expected {{index: I, count: N}}") from None
    else:
        text = str(value).strip()
        left, sep, right = text.partition("/")
        try:
            index, count = int(left), int(right)
        except ValueError:
            index = count = None
        if not sep or index is None:
            raise UsageError(f"--shard {text!r}: expected I/N, e.g. 0/4 (shard I of N, counted from 0)")
    if count < 1 or not 0 <= index < count:
        raise UsageError(f"--shard {index}/{count}: I must be 0..N-1 and N at least 1 (shards are counted from 0)")
    return Shard(index, count)


def shard_of(key: str, count: int) -> int:
    """The shard (0..count-1) that `key` falls in: int(sha256(key)) mod count."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest(), "big") % count


def in_shard(key: str, index: int, count: int) -> bool:
    """Whether the row with stable id `key` (a record id, a prompt key) belongs to shard `index` of
    `count`. Depends on nothing but the key: every job computes the same split on its own."""
    return count <= 1 or shard_of(key, count) == index


def prompt_key(messages: list[dict[str, str]]) -> str:
    """The stable id `cai generate --shard` splits prompts by: the hex of `messages_key`, the digest
    the prompt's record ids are made from (equal messages, equal key, so a prompt and its identical
    copies land in one shard). It does not depend on the run's settings."""
    return messages_key(messages).hex()
