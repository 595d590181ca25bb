"""Training data: a file (jsonl, json, parquet), a `datasets` folder or a run folder → rows a stage reads.

A run folder is exported on the fly, as `cai export` would, in the data kind the stage declares;
the hash recorded is the file's sha256 for a file and the export's row hash otherwise, the same
figure `cai export` writes in its dataset card. Several sources mixed with weights are
`cai/train/mix.py`'s; each source's line of the card is a `SourceInfo`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cai.errors import UsageError
from cai.export import Format
from cai.models import sha256_file


@dataclass
class DataInfo:
    path: str
    kind: str  # file, datasets folder, run folder
    sha256: str
    rows: int
    constitution_name: str | None = None
    constitution_sha256: str | None = None
    left_out: list[str] = field(default_factory=list)  # what the export from a run folder left out, and why
    judge_calibration: dict | None = None
    sources: list[SourceInfo] = field(default_factory=list)  # the card's sources table (one line at least)
    seed: int | None = None  # the seed the mix was drawn with (None: one source taken whole, in its order)
    mix_rule: str | None = None  # what set the mix's size

    def record(self) -> dict:
        """What metrics.json records under `data`."""
        out: dict[str, Any] = {"rows": sum(s.taken for s in self.sources) if self.sources else self.rows,
                               "sha256": self.sha256}
        if self.seed is not None:
            out["seed"], out["mix"] = self.seed, self.mix_rule
        out["sources"] = [s.record() for s in self.sources]
        return out


@dataclass
class SourceInfo:
    """One source of the training rows: where from, its hash, how many rows it gave and its share."""

    name: str  # the `source` column of its rows
    path: str
    kind: str  # file, datasets folder, run folder
    file: str  # what `sha256` is the hash of (for a run folder: the file the stage reads from it)
    sha256: str
    available: int  # training rows it holds (after the stage's conversion: KTO splits a pair in two)
    taken: int = 0  # training rows drawn from it
    share: float = 0.0  # taken / all training rows
    weight: float | None = None
    rows: int | None = None  # `rows: N` asked
    split: str | None = None
    asked: int | None = None  # rows its weight asked for, when that was more than it holds
    repeated: bool = False  # rows drawn more than once (--oversample)
    capped: bool = False  # its weight asked for more rows than it holds; all of them taken once
    info: DataInfo | None = field(default=None, repr=False)  # the source read alone (constitution, left out, judge)

    def record(self) -> dict:
        out = {"name": self.name, "path": self.path, "kind": self.kind, "file": self.file, "sha256": self.sha256,
               "available": self.available, "taken": self.taken, "share": round(self.share, 6)}
        for key in ("weight", "rows", "split", "asked"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.repeated:
            out["oversampled"] = True
        if self.capped:
            out["capped"] = True
        return out

    def taken_text(self) -> str:
        """`428 of 100000 (weight 0.3)`, with what capped or repeated it."""
        asked = (f"weight {self.weight:g}" if self.weight is not None else
                 f"rows: {self.rows}" if self.rows is not None else "whole")
        text = f"{self.taken} of {self.available} ({asked})"
        if self.capped:
            text += f"; **capped**: its share asked {self.asked}"
        if self.repeated:
            text += f"; **oversampled**: rows repeated up to {-(-self.taken // max(self.available, 1))}x"
        return text



def constitution_of(rows: Iterable[dict]) -> tuple[str | None, str | None]:
    """(name, sha256) from the `constitution`/`constitution_sha256` columns `cai export` writes;
    several constitutions are listed comma-separated, rows without the columns give (None, None)."""
    pairs = dict.fromkeys((str(r.get("constitution") or "?"), str(r["constitution_sha256"]))
                          for r in rows if r.get("constitution_sha256"))
    if not pairs:
        return None, None
    return ", ".join(n for n, _ in pairs), ", ".join(h for _, h in pairs)


def read_data(data: str | Path, fmt: Format, *, fallback: Format | None = None,
              keep_flagged: bool = False, filter: str = "none") -> tuple[list[dict], DataInfo]:
    rows, info = _read_data(data, fmt, fallback=fallback, keep_flagged=keep_flagged, filter=filter)
    provenance(info, lambda: rows)
    return rows, info


def provenance(info: DataInfo, rows: Callable[[], Iterable[dict]]) -> None:
    """Fill the constitution and the judge's calibration from the provenance columns `cai export`
    writes, where the source itself (a run folder's run.yaml) did not say. `rows()` gives the rows
    again for each pass (an Arrow-backed source reads just those columns)."""
    if info.constitution_sha256 is None:  # an exported file or datasets folder: its provenance columns say
        info.constitution_name, info.constitution_sha256 = constitution_of(rows())
    if info.judge_calibration is None:
        agreements = {r["judge_agreement"] for r in rows() if isinstance(r.get("judge_agreement"), (int, float))}
        if len(agreements) == 1:
            info.judge_calibration = {"agreement": agreements.pop(), "source": "the data's judge_agreement column",
                                      "below_floor": any(r.get("judge_below_floor") for r in rows())}


def stream_run_folder(path: str | Path, fmt: Format, *, fallback: Format | None = None, keep_flagged: bool = False,
                      filter: str = "none") -> tuple[Iterator[dict], DataInfo]:
    """A run folder's export rows as `cai export` streams them (exported as `fmt`, else as `fallback`
    when the run has no preferences yet), and its DataInfo, whose hash (the export's row hash, as
    `rows_sha256`), row count and left-out lines are complete once the rows are consumed."""
    import hashlib

    from cai.export import LeftOut, iter_rows
    from cai.records import RunFolder

    p = Path(path).expanduser()
    run = RunFolder(p)
    if fallback and fmt == "dpo" and not run.preferences.exists():
        fmt = fallback
    info = DataInfo(str(p), "run folder", "", 0)
    meta = run.info()
    if fmt == "dpo" or filter == "judged" or (fmt == "kto" and run.preferences.exists()):
        info.judge_calibration = meta.get("judge_calibration")
    info.constitution_name = meta.get("constitution_name")
    info.constitution_sha256 = meta.get("constitution_sha256")

    def rows() -> Iterator[dict]:
        left, h, n = LeftOut(), hashlib.sha256(), 0
        for r in iter_rows(p, fmt, keep_flagged=keep_flagged, filter=filter if fmt == "sft" else "none",
                           left_out=left):
            h.update(json.dumps(r, sort_keys=True, ensure_ascii=False).encode())
            n += 1
            yield r
        info.sha256, info.rows, info.left_out = h.hexdigest(), n, left.lines()

    return rows(), info


def run_folder_file(path: str | Path, fmt: Format, fallback: Format | None = None) -> Path:
    """The file of a run folder a stage reading `fmt` rows reads (the one its card hashes)."""
    from cai.records import RunFolder

    run = RunFolder(Path(path).expanduser())
    if fmt == "dpo" and fallback and not run.preferences.exists():
        fmt = fallback
    return run.preferences if fmt == "dpo" or (fmt == "kto" and run.preferences.exists()) else run.generations


def is_run_folder(path: str | Path) -> bool:
    p = Path(path).expanduser()
    return p.is_dir() and (p / "generations.jsonl").exists()


def train_dataset(rows):
    """The rows as a `datasets.Dataset` for a TRL trainer (an Arrow-backed mix is one already)."""
    from datasets import Dataset

    return rows if isinstance(rows, Dataset) else Dataset.from_list(rows)


def fingerprint(ds, *parts: str) -> str:
    """The fingerprint of a `ds.map` result, so `datasets` need not hash the function (it warns when
    it cannot): the input's own fingerprint and what the map does."""
    import hashlib

    return hashlib.sha256("|".join([ds._fingerprint, *parts]).encode()).hexdigest()[:16]


def column(rows, key: str) -> list:
    """One column of the training rows, a list of dicts or a `datasets.Dataset`."""
    from datasets import Dataset

    return list(rows[key]) if isinstance(rows, Dataset) else [r[key] for r in rows]


def _read_data(data: str | Path, fmt: Format, *, fallback: Format | None = None,
               keep_flagged: bool = False, filter: str = "none") -> tuple[list[dict], DataInfo]:
    """Rows of a jsonl/json/parquet file, a `datasets` folder, or a run folder (exported as `fmt`,
    else as `fallback` when the run has no preferences yet).

    The hash is the file's sha256 for a file (what `sha256sum` prints) and the export's row hash
    for a run folder, the same figure `cai export` writes in its dataset card.
    """
    p = Path(data).expanduser()
    if p.is_dir() and (p / "generations.jsonl").exists():
        stream, info = stream_run_folder(p, fmt, fallback=fallback, keep_flagged=keep_flagged, filter=filter)
        return list(stream), info
    if p.is_dir():
        from datasets import DatasetDict, load_from_disk

        try:
            ds = load_from_disk(str(p))
        except (FileNotFoundError, ValueError) as exc:
            raise UsageError(f"--data {p}: neither a run folder (generations.jsonl) nor a datasets folder: {exc}") from None
        if isinstance(ds, DatasetDict):
            if "train" not in ds:
                raise UsageError(f"--data {p}: a DatasetDict without a train split ({', '.join(ds)})")
            ds = ds["train"]
        rows = ds.to_list()
        from cai.export import rows_sha256

        return rows, DataInfo(str(p), "datasets folder", rows_sha256(rows), len(rows))
    if not p.is_file():
        raise UsageError(f"--data {p}: no such file or folder")
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(p).to_pylist()
    elif p.suffix in (".jsonl", ".json"):
        text = p.read_text(encoding="utf-8")
        try:
            if p.suffix == ".json" or text.lstrip().startswith("["):
                rows = json.loads(text)
            else:
                rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise UsageError(f"--data {p}: not valid JSON ({exc})") from None
    else:
        raise UsageError(f"--data {p}: use .jsonl, .json, .parquet, a datasets folder or a run folder")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise UsageError(f"--data {p}: expected one JSON object per row")
    return rows, DataInfo(str(p), "file", sha256_file(p), len(rows))


def _messages(value: Any, role: str, where: str) -> list[dict]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in value):
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise UsageError(f"{where}: expected a list of {{role, content}} messages or a string")


def sft_rows(rows: list[dict], where: str, start: int = 0) -> list[dict]:
    """`start`: the number of rows before these (a batch of a larger source), for the row numbers of errors."""
    out = []
    for i, r in enumerate(rows, start):
        if "messages" not in r:
            raise UsageError(f"{where}: row {i + 1} has no `messages` (SFT rows are {{\"messages\": [...]}})")
        out.append({"messages": _messages(r["messages"], "user", f"{where} row {i + 1}")})
    return out


def preference_rows(rows: list[dict], where: str, start: int = 0) -> list[dict]:
    out = []
    for i, r in enumerate(rows, start):
        missing = [k for k in ("prompt", "chosen", "rejected") if k not in r]
        if missing:
            raise UsageError(f"{where}: row {i + 1} lacks {', '.join(missing)} "
                             "(preference rows are {\"prompt\": [...], \"chosen\": [...], \"rejected\": [...]})")
        at = f"{where} row {i + 1}"
        out.append({"prompt": _messages(r["prompt"], "user", at), "chosen": _messages(r["chosen"], "assistant", at),
                    "rejected": _messages(r["rejected"], "assistant", at)})
    return out


def kto_rows(rows: list[dict], where: str, start: int = 0) -> list[dict]:
    """Unpaired rows `{"prompt", "completion", "label"}` as TRL's KTOTrainer reads them (label true:
    desirable). A preference row gives two: its chosen answer desirable, its rejected one not."""
    out = []
    for i, r in enumerate(rows, start):
        at = f"{where} row {i + 1}"
        if "label" in r and "completion" in r and "prompt" in r:
            if not isinstance(r["label"], bool):
                raise UsageError(f"{at}: `label` must be true (desirable) or false (undesirable), got {r['label']!r}")
            out.append({"prompt": _messages(r["prompt"], "user", at),
                        "completion": _messages(r["completion"], "assistant", at), "label": r["label"]})
        elif all(k in r for k in ("prompt", "chosen", "rejected")):
            prompt = _messages(r["prompt"], "user", at)
            out.append({"prompt": prompt, "completion": _messages(r["chosen"], "assistant", at), "label": True})
            out.append({"prompt": prompt, "completion": _messages(r["rejected"], "assistant", at), "label": False})
        else:
            raise UsageError(f"{at}: KTO rows are {{\"prompt\": [...], \"completion\": [...], \"label\": true|false}} "
                             "(or preference rows with prompt, chosen, rejected)")
    return out


def prompt_rows(rows: list[dict], where: str) -> list[dict]:
    """RL prompts, each with a `reference` answer for the judge: the un-revised (rejected) answer of a
    preference row, else its chosen one, else an SFT row's last assistant turn. Repeated prompts
    (several pairs per prompt) are kept once."""
    out, seen = [], set()
    for i, r in enumerate(rows):
        at = f"{where} row {i + 1}"
        if "prompt" in r:
            prompt = _messages(r["prompt"], "user", at)
            ref = r.get("rejected", r.get("chosen"))
            ref = _messages(ref, "assistant", at)[-1]["content"] if ref is not None else None
        elif "messages" in r:
            msgs = _messages(r["messages"], "user", at)
            last = max((k for k, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
            prompt = msgs[:last] if last is not None else msgs
            ref = msgs[last]["content"] if last is not None else None
        else:
            raise UsageError(f"{at}: no `prompt` or `messages` to take a prompt from")
        if not prompt:
            raise UsageError(f"{at}: empty prompt")
        key = json.dumps(prompt, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append({"prompt": prompt, "reference": ref})
    return out


def holdout_split(rows: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, held out): `fraction` of the rows, at least one on each side, drawn with `seed`."""
    if len(rows) < 2:
        raise UsageError(f"need at least 2 pairs to hold one out, got {len(rows)}")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n = min(len(rows) - 1, max(1, round(len(rows) * fraction)))
    held = set(order[:n])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def rows_over(rows: list[dict], tokenizer, limit: int | None) -> int:
    """How many training rows hold more than `limit` tokens once templated (TRL truncates them)."""
    if not limit:
        return 0

    def length(messages) -> int:
        try:
            return len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False))
        except Exception:  # noqa: BLE001 - a row the template rejects is TRL's to report
            return 0

    def as_messages(value, role):
        return value if isinstance(value, list) else [{"role": role, "content": str(value)}]

    n = 0
    for r in rows:
        if "messages" in r:
            longest = length(r["messages"])
        elif "chosen" in r:
            prompt = as_messages(r.get("prompt", []), "user")
            longest = max(length(prompt + as_messages(r[k], "assistant")) for k in ("chosen", "rejected") if k in r)
        elif "completion" in r:
            longest = length(as_messages(r.get("prompt", []), "user") + as_messages(r["completion"], "assistant"))
        else:
            continue
        n += longest > limit
    return n
