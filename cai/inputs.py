"""Prompt sets in the formats users bring, streamed row by row.

JSONL (`prompt` string, `messages` list, or MT-Bench style `turns`), plain text (one prompt per
line), CSV and Parquet (`--prompt-field` column) and `datasets` folders. Rows are read lazily, so a
run over a million prompts keeps memory flat. A bad row names its file, row and field; with
`on_bad_row="skip"` it is reported and skipped instead.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field

from cai.errors import UsageError
from cai.resources import bundled_file

ROLES = ("system", "user", "assistant")


class PromptRow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    index: int = Field(description="0-based row number in the source.")
    messages: list[dict[str, str]]
    category: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict, description="Other scalar columns, kept for provenance.")

    @property
    def prompt_text(self) -> str:
        return self.messages[-1]["content"]


class BadRowError(UsageError):
    def __init__(self, path: Path, unit: str, number: int, field: str, message: str):
        self.path, self.number, self.field = path, number, field
        super().__init__(f"{path}: {unit} {number}: {field}: {message}")


def default_prompts_path() -> Path:
    return bundled_file("data", "red_team.jsonl")


def eval_prompts_path() -> Path:
    return bundled_file("data", "eval_prompts.jsonl")


def _messages(raw: dict, prompt_field: str) -> tuple[list[dict[str, str]], str]:
    """(messages, field) from one record; raises ValueError with the field at fault."""
    if prompt_field in raw and raw[prompt_field] is not None:
        value = raw[prompt_field]
        if not isinstance(value, str):
            raise ValueError(prompt_field, f"must be a string, got {type(value).__name__}")
        if not value.strip():
            raise ValueError(prompt_field, "is empty")
        return [{"role": "user", "content": value}], prompt_field
    if "messages" in raw:
        msgs = raw["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise ValueError("messages", "must be a non-empty list of {role, content}")
        out = []
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise ValueError(f"messages[{i}]", "must be {role: system|user|assistant, content: string}")
            out.append({"role": m["role"], "content": m["content"]})
        if out[-1]["role"] != "user":
            raise ValueError(f"messages[{len(out) - 1}]", "the last message must be from the user")
        return out, "messages"
    if "turns" in raw and isinstance(raw["turns"], list) and raw["turns"] and isinstance(raw["turns"][0], str):
        return [{"role": "user", "content": raw["turns"][0]}], "turns"  # MT-Bench layout: first turn
    raise ValueError(prompt_field, f"missing (a row needs {prompt_field!r} or 'messages')")


def _row(path: Path, unit: str, number: int, index: int, raw: Any, prompt_field: str) -> PromptRow:
    if not isinstance(raw, dict):
        raise BadRowError(path, unit, number, "(row)", f"must be an object, got {type(raw).__name__}")
    try:
        messages, used = _messages(raw, prompt_field)
    except ValueError as exc:
        field, msg = exc.args
        raise BadRowError(path, unit, number, field, msg) from None
    category = raw.get("category")
    meta = {k: v for k, v in raw.items()
            if k not in (used, "category") and isinstance(v, (str, int, float, bool)) and k not in ("messages", "turns")}
    return PromptRow(index=index, messages=messages, category=str(category) if category is not None else None, meta=meta)


def _records(path: Path) -> Iterator[tuple[str, int, Any]]:
    """(unit, 1-based number, raw record or an exception) for each row of the file, lazily."""
    suffix = path.suffix.lower()
    if path.is_dir():
        from datasets import load_from_disk

        ds = load_from_disk(str(path))
        if hasattr(ds, "keys") and not hasattr(ds, "column_names"):
            raise UsageError(f"{path}: a DatasetDict; point --prompts at one split folder")
        for i, row in enumerate(ds):
            yield "row", i + 1, row
    elif suffix in (".jsonl", ".json", ".ndjson"):
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    yield "line", n, json.loads(line)
                except json.JSONDecodeError as exc:
                    yield "line", n, BadRowError(path, "line", n, "(json)", f"not valid JSON: {exc.msg}")
    elif suffix == ".txt":
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if line.strip():
                    yield "line", n, {"prompt": line.rstrip("\n")}
    elif suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as fh:
            for n, row in enumerate(csv.DictReader(fh), 2):  # line 1 is the header
                yield "line", n, {k: v for k, v in row.items() if k is not None}
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        n = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                n += 1
                yield "row", n, row
    else:
        raise UsageError(f"{path}: unknown prompt format {suffix or '(none)'}; use .jsonl, .txt, .csv, .parquet "
                         f"or a datasets folder")


def iter_prompts(path: str | Path | None, *, prompt_field: str = "prompt", on_bad_row: Literal["skip", "fail"] = "fail",
                 limit: int | None = None, on_skip: Callable[[BadRowError], None] | None = None) -> Iterator[PromptRow]:
    src = Path(path) if path else default_prompts_path()
    if not src.exists():
        raise UsageError(f"--prompts {src}: no such file or folder")
    index = emitted = 0
    for unit, number, raw in _records(src):
        if limit is not None and emitted >= limit:
            return
        try:
            if isinstance(raw, BadRowError):
                raise raw
            row = _row(src, unit, number, index, raw, prompt_field)
        except BadRowError as exc:
            if on_bad_row == "fail":
                raise
            if on_skip:
                on_skip(exc)
            continue
        finally:
            index += 1
        emitted += 1
        yield row


def count_prompts(path: str | Path | None, *, prompt_field: str = "prompt", limit: int | None = None) -> int:
    """Rows a run will see (bad rows skipped), for a progress bar's total."""
    n = 0
    for _ in iter_prompts(path, prompt_field=prompt_field, on_bad_row="skip", limit=limit):
        n += 1
    return n
