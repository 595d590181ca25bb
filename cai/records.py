"""Record models and the run folder: append-only JSONL that survives a crash and resumes.

A row is written only once its whole record is done, flushed and fsynced per chunk; a crash can
leave at most a torn last line, which the next writer cuts off before appending. Record ids are
hashes of their inputs, so a rerun knows exactly which rows exist and never writes one twice.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

import yaml
from pydantic import BaseModel, ConfigDict, Field

from cai.atomic import acquire, write_atomic
from cai.errors import Failure, UsageError


class DiskFull(Failure):
    """The run folder's disk filled up: what was flushed stays, the rerun resumes after space is freed."""


@contextmanager
def _disk(path: Path):
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(f"{path.parent}: the disk is full ({os.strerror(exc.errno)}) while writing {path.name}; "
                           "the rows written so far are kept. Free some space and rerun the same command to "
                           "resume") from None
        raise

GENERATIONS = "generations.jsonl"
PREFERENCES = "preferences.jsonl"
TIES = "ties.jsonl"
RUN_YAML = "run.yaml"
# The judge settings that decide what a preference row is (and its id): a rerun with other values
# would add a second set of pairs for the same generations, so it is refused unless --force-new.
JUDGE_IDENTITY = ("judge_model", "backend", "mode", "ensemble", "threshold", "strategy", "constitution_sha256",
                  "templates", "shard")  # a folder judged as one shard is not resumed as another


def code_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("cai")
    except PackageNotFoundError:
        v = "0+unknown"
    head = Path(__file__).resolve().parent.parent / ".git" / "HEAD"
    try:  # a checkout also records its commit, so rows say exactly which code made them
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            ref = (head.parent / ref[5:]).read_text().strip()
        return f"{v}+g{ref[:10]}"
    except OSError:
        return v


def record_id(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:20]


class Round(BaseModel):
    model_config = ConfigDict(extra="forbid")
    principle_id: str
    critique: str
    revision: str
    # What the model-free checks found in this round (cai/quality.py); critique findings prefixed.
    flags: list[str] = Field(default_factory=list)


class GenerationRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    prompt: list[dict[str, str]]
    category: str | None = None
    sample: int = 0
    initial: str
    rounds: list[Round] = Field(default_factory=list)
    final: str
    # The checks' findings on the final answer (the last revision, or the initial answer without
    # rounds) and on the initial answer: what `cai export` leaves out of training by default.
    flags: list[str] = Field(default_factory=list)
    initial_flags: list[str] = Field(default_factory=list)
    meta: dict[str, Any] = Field(default_factory=dict)


class Judgement(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question_id: str
    p_first: float = Field(description="P(A wins) with A shown first.")
    p_second: float = Field(description="P(A wins) with A shown second.")


class PreferenceRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    prompt: list[dict[str, str]]
    category: str | None = None
    chosen: str
    rejected: str
    p_chosen: float
    judgements: list[Judgement]
    strategy: str
    source_ids: list[str] = Field(default_factory=list, description="Generation rows the pair came from.")
    # The quality flags of the two answers, copied at judge time from their generation rows, so that
    # export and training read them from the pair itself instead of joining the whole generations file.
    chosen_flags: list[str] | None = None
    rejected_flags: list[str] | None = None
    meta: dict[str, Any] = Field(default_factory=dict)


def repair_torn_tail(path: Path) -> bool:
    """Cut a last line that a crash left without its newline. True when something was cut."""
    if not path.exists() or path.stat().st_size == 0:
        return False
    with open(path, "rb+") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return False
        # Walk back to the previous newline in blocks: the file may be large.
        end = fh.tell()
        pos = end
        while pos > 0:
            step = min(1 << 16, pos)
            pos -= step
            fh.seek(pos)
            block = fh.read(step)
            nl = block.rfind(b"\n")
            if nl >= 0:
                fh.truncate(pos + nl + 1)
                return True
        fh.truncate(0)
        return True


def read_rows(path: Path) -> Iterator[dict]:
    """Rows of a JSONL file, streamed; a torn last line (no newline) is skipped."""
    if not path.exists():
        return
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.endswith("\n"):
                return
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise UsageError(f"{path}:{n}: not valid JSON ({exc.msg}); the file was edited or damaged") from None


class AppendWriter:
    """Append-only JSONL writer that knows which ids are already there."""

    def __init__(self, path: Path):
        self.path = path
        self.repaired = repair_torn_tail(path)
        self.ids: set[str] = {row["id"] for row in read_rows(path)}
        self._fh = open(path, "a", encoding="utf-8")
        self.written = 0

    def __contains__(self, rid: str) -> bool:
        return rid in self.ids

    def write(self, rows: Iterable[BaseModel | dict]) -> int:
        n = 0
        with _disk(self.path):
            for row in rows:
                data = row.model_dump(mode="json") if isinstance(row, BaseModel) else row
                if data["id"] in self.ids:
                    continue
                self._fh.write(json.dumps(data, ensure_ascii=False) + "\n")
                self.ids.add(data["id"])
                n += 1
        self.written += n
        return n

    def flush(self) -> None:
        with _disk(self.path):
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh.closed:
            return
        try:
            self.flush()
        finally:
            try:
                self._fh.close()
            except OSError:  # the same full disk again: the torn tail is cut on the next start
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# The sections of run.yaml that are mappings (read with .get() by the stages).
RUN_YAML_SECTIONS = ("config", "constitution", "dedup", "decontaminated", "shard", "judge", "judge_calibration", "judge_stats", "judge_window",
                     "window", "flag_counts", "round_flag_counts")
RUN_YAML_HINT = ("run.yaml is cai's record of this run (its settings, constitution snapshot and judge settings, "
                 "which every later stage reads): fix it by hand, or restore it from a backup or a copy of the "
                 "run folder (`cai generate --force-new` starts the run over, clearing its rows)")


def read_run_yaml(path: str | Path) -> dict:
    """A run folder's run.yaml, which must be UTF-8 YAML holding a mapping; anything else is a
    UsageError (exit 2) with the path, line and column, what is wrong and what to do."""
    from cai.textfiles import decode_utf8, load_yaml_mapping

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = decode_utf8(data, str(path))
    except UsageError as exc:
        raise UsageError(f"{exc}. {RUN_YAML_HINT}") from None
    # An empty run.yaml is damage too: cai writes it whole (atomically) or not at all.
    info = load_yaml_mapping(text, str(path), what="a mapping of the run's settings", hint=RUN_YAML_HINT,
                             empty_ok=False)
    bad = [k for k in RUN_YAML_SECTIONS if info.get(k) is not None and not isinstance(info[k], dict)]
    if bad:  # a section the stages read with .get(): a torn or mistyped one would fail far from here
        import yaml

        root = yaml.compose(text, Loader=yaml.SafeLoader)
        line = next((key.start_mark.line + 1 for key, _ in root.value if key.value == bad[0]), None)
        raise UsageError(f"{path}: line {line}: `{bad[0]}` holds {type(info[bad[0]]).__name__} "
                         f"{info[bad[0]]!r:.60}, not a mapping of settings. {RUN_YAML_HINT}")
    return info


class RunFolder:
    """A run's folder: run.yaml (resolved config + constitution snapshot) and the JSONL stages."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def generations(self) -> Path:
        return self.path / GENERATIONS

    @property
    def preferences(self) -> Path:
        return self.path / PREFERENCES

    @property
    def ties(self) -> Path:
        return self.path / TIES

    def info(self) -> dict:
        """run.yaml as a mapping ({} where there is none). A damaged one (hand-edited, cut short,
        not UTF-8, not a mapping) is a UsageError naming the file, the line and what is wrong."""
        f = self.path / RUN_YAML
        if not f.exists():
            return {}
        return read_run_yaml(f)

    def lock(self):
        """Held for a whole stage (the caller releases it): one cai process per run folder."""
        self.path.mkdir(parents=True, exist_ok=True)
        return acquire(self.path / ".lock", timeout=1, busy=f"{self.path} is in use by another cai process")

    def start(self, info: dict, *, identity: tuple[str, ...], force_new: bool) -> None:
        """Write run.yaml, or check that an existing run was made with the same identity keys.
        A damaged run.yaml is refused unless `force_new`, which starts the run over anyway."""
        try:
            old = self.info()
        except UsageError:
            if not force_new:
                raise
            old = {"damaged": True}  # its rows are cleared below like any other setup's
        if old and not force_new:
            changed = [k for k in identity if old.get(k) != info.get(k)]
            if changed:
                diffs = "; ".join(f"{k}: {old.get(k)!r} -> {info.get(k)!r}" for k in changed)
                raise UsageError(
                    f"{self.path} was made with a different setup ({diffs}); use another --run-dir, "
                    f"or --force-new to start it over"
                )
        if old and force_new:
            # Every later stage is made from the generations: none of it survives a new start.
            for f in (self.generations, self.preferences, self.ties):
                f.unlink(missing_ok=True)
        elif old.get("judge") and "judge" not in info:
            # A resumed generation keeps the judge's settings, or a later judge could not tell
            # that the pairs already there were made another way.
            info = {**info, "judge": old["judge"]}
        self._write_info(info)

    def start_judge(self, settings: dict, *, force_new: bool) -> None:
        """Record the judge's settings, or check them against the pairs already judged.

        Same settings: the judge resumes. Other settings with pairs (or ties) already written: refused
        unless `force_new`, which clears preferences.jsonl and ties.jsonl first.
        """
        old = self.info().get("judge") or {}
        keys = JUDGE_IDENTITY
        has_rows = any(f.exists() and f.stat().st_size > 0 for f in (self.preferences, self.ties))
        if has_rows and not old:  # judged before run.yaml recorded the settings: the rows say
            first = next(read_rows(self.preferences), None) or next(read_rows(self.ties), None) or {}
            old = {**(first.get("meta") or {}), "strategy": first.get("strategy")}
            # A row's meta holds the Judge's own threshold, not necessarily the one that decided ties;
            # rows from older versions may lack a key (templates): compare what they do say.
            keys = tuple(k for k in keys if k != "threshold" and k in old)
        changed = [k for k in keys if old.get(k) != settings.get(k)] if old else []
        if has_rows and force_new:
            self.preferences.unlink(missing_ok=True)
            self.ties.unlink(missing_ok=True)
        elif has_rows and changed:
            diffs = "; ".join(f"{k}: {old.get(k)!r} -> {settings.get(k)!r}" for k in changed)
            raise UsageError(
                f"{self.path} was judged with other settings ({diffs}); rerunning would add a second set of "
                f"pairs. Use --force-new to clear {PREFERENCES} and {TIES} and judge again, or judge a copy "
                "of the run folder"
            )
        self.update_info(judge=settings)

    def update_info(self, **fields) -> None:
        self._write_info({**self.info(), **fields})

    def _write_info(self, info: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path / RUN_YAML, yaml.safe_dump(info, sort_keys=False, allow_unicode=True, width=100))
