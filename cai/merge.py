"""`cai merge RUN... --out RUN`: the shard folders of one sharded run as one run folder.

`cai generate --shard I/N` writes one folder per shard (run.yaml `shard: {index, count, prompts}`);
`cai judge --shard I/N` run on copies of one merged folder records `judge.shard` likewise. The
merge checks, and refuses with exit 2 naming what is wrong:

* that the folders were made the same way: every key of run.yaml compared, except the ones that
  say where, when and how fast a shard ran (IGNORED, IGNORED_CONFIG: its folder, its shard, its
  time, its window of prompts in flight and the chunk size asked for, the flag counts of its own
  rows, its servers and their limits, where the model's folder was found). Settings, constitution,
  code version, the prompts read (`prompts_digest`) and the dedup and decontamination decisions
  all have to be equal;
* that the shards are distinct shards of one N, and all N of them (`allow_partial` merges what
  there is, with a warning: `cai generate` with the same settings on the merged folder fills in
  the missing prompts).

The merged folder has every row once (by record id) in input order (`meta.source_row`, then
`sample`: the order of the unsharded input, whatever order the shards finished in), and a
run.yaml without `shard` and with `merged_from`, which every stage reads as any other run's.
Preferences and ties (judge shards) are merged the same way, by id, in shard order.

Memory: rows are copied as bytes, never held. One pass reads each shard's rows one at a time and
keeps, per row, its id (in a set) and four integers (source row, sample, shard, byte offset) in
flat arrays; the rows are then sorted by those and copied by seeking in the shard files.
"""

from __future__ import annotations

import json
import os
import sys
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import yaml

from cai.atomic import write_atomic
from cai.errors import UsageError
from cai.inputs import Shard, parse_shard
from cai.records import GENERATIONS, PREFERENCES, RUN_YAML, TIES, RunFolder

# run.yaml keys that describe one shard's run, not the run: never compared, not carried over.
IGNORED = ("created", "window", "flag_counts", "round_flag_counts", "shard", "merged_from", "judge_window",
           "judge_stats", "judge_calibration", "model_path")
IGNORED_CONFIG = ("run_dir", "shard", "chunk_size", "force_new", "base_url", "reviser_base_url", "concurrency",
                  "request_timeout", "max_retries")
IGNORED_JUDGE = ("shard", "engine")
_NO_ROW = 1 << 62  # rows without meta.source_row go last, in file order


@dataclass
class MergeSummary:
    out: Path
    inputs: list[str] = field(default_factory=list)
    shards: list[str] = field(default_factory=list)
    rows: int = 0
    duplicates: int = 0  # rows found in more than one input (written once)
    preferences: int = 0
    ties: int = 0
    missing: list[str] = field(default_factory=list)  # shards not given (with allow_partial)
    warnings: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"merged         {len(self.inputs)} folders ({', '.join(self.shards)})",
               f"rows           {self.rows} generations"
               + (f", {self.preferences} preferences, {self.ties} ties" if self.preferences or self.ties else ""),
               ]
        if self.duplicates:
            out.append(f"duplicates     {self.duplicates} rows found in more than one folder, written once")
        if self.missing:
            out.append(f"partial        shards {', '.join(self.missing)} missing (--allow-partial); `cai generate` "
                       f"with the same settings and --run-dir {self.out} generates their prompts")
        out += [f"warning        {w}" for w in self.warnings]
        return out


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and key != "constitution":  # the snapshot is one key (its hash is another)
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def compared(info: dict) -> dict:
    """The run.yaml keys (flattened: `config.rounds`) that must agree between shards."""
    info = {k: v for k, v in info.items() if k not in IGNORED}
    if isinstance(info.get("config"), dict):
        info["config"] = {k: v for k, v in info["config"].items() if k not in IGNORED_CONFIG}
    if isinstance(info.get("judge"), dict):
        info["judge"] = {k: v for k, v in info["judge"].items() if k not in IGNORED_JUDGE}
    return _flatten(info)


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def differences(a: dict, b: dict) -> list[str]:
    """`key (a vs b)` for every compared key whose values differ (or that one of them lacks)."""
    fa, fb = compared(a), compared(b)
    missing = object()
    out = []
    for k in sorted(set(fa) | set(fb)):
        va, vb = fa.get(k, missing), fb.get(k, missing)
        if va != vb:
            if isinstance(va, (dict, list)) or isinstance(vb, (dict, list)):
                out.append(k)
            else:
                out.append(f"{k} ({'absent' if va is missing else _short(va)} vs "
                           f"{'absent' if vb is missing else _short(vb)})")
    return out


def shard_of_info(info: dict) -> tuple[str, Shard] | None:
    """('generate' | 'judge', the shard) a run.yaml records, or None."""
    for kind, rec in (("generate", info.get("shard")), ("judge", (info.get("judge") or {}).get("shard"))):
        if rec is not None:
            try:
                return kind, parse_shard(rec)
            except UsageError:
                raise UsageError(f"run.yaml `shard` {rec!r} is not {{index, count}}") from None
    return None


def _lines(path: Path) -> Iterable[tuple[int, int, bytes]]:
    """(line number, byte offset, line) of a JSONL file; a torn last line is left out."""
    if not path.exists():
        return
    offset = 0
    with open(path, "rb") as fh:
        for n, line in enumerate(fh, 1):
            start, offset = offset, offset + len(line)
            if not line.endswith(b"\n"):
                return
            if line.strip():
                yield n, start, line


def _row(path: Path, n: int, line: bytes) -> dict:
    try:
        row = json.loads(line)
    except ValueError as exc:
        raise UsageError(f"{path}:{n}: not valid JSON ({exc}); the file was edited or damaged") from None
    if not isinstance(row, dict) or not isinstance(row.get("id"), str):
        raise UsageError(f"{path}:{n}: a row without a string `id`; not a file cai wrote")
    return row


def _write_sorted(files: list[Path], out: Path, summary: MergeSummary) -> list[int]:
    """Every generation row of `files` once, sorted by (source row, sample), into `out`; the rows
    each file holds."""
    import numpy as np

    seen: set[str] = set()
    src, sample, which, offset = array("q"), array("q"), array("q"), array("q")
    per_file = [0] * len(files)
    for fi, path in enumerate(files):
        for n, start, line in _lines(path):
            row = _row(path, n, line)
            per_file[fi] += 1
            if row["id"] in seen:
                summary.duplicates += 1
                continue
            seen.add(row["id"])
            s = (row.get("meta") or {}).get("source_row")
            src.append(s if isinstance(s, int) and s >= 0 else _NO_ROW)
            sample.append(row.get("sample") if isinstance(row.get("sample"), int) else 0)
            which.append(fi)
            offset.append(start)
    del seen
    order = np.lexsort((np.frombuffer(offset, np.int64), np.frombuffer(which, np.int64),
                        np.frombuffer(sample, np.int64), np.frombuffer(src, np.int64)))
    handles = [open(p, "rb") for p in files]
    tmp = out.with_name(out.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            for i in order.tolist():
                h = handles[which[i]]
                h.seek(offset[i])
                fh.write(h.readline())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    finally:
        for h in handles:
            h.close()
        tmp.unlink(missing_ok=True)
    summary.rows = len(order)
    return per_file


def _write_concat(files: list[Path], out: Path) -> int:
    """Every row of `files` once (by id), in file order, into `out`; nothing written when there are none."""
    seen: set[str] = set()
    tmp = out.with_name(out.name + ".tmp")
    n_out = 0
    try:
        with open(tmp, "wb") as fh:
            for path in files:
                for n, _start, line in _lines(path):
                    rid = _row(path, n, line)["id"]
                    if rid not in seen:
                        seen.add(rid)
                        fh.write(line)
                        n_out += 1
            fh.flush()
            os.fsync(fh.fileno())
        if n_out:
            os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return n_out


def merge_runs(run_dirs: Iterable[str | Path], out: str | Path, *, allow_partial: bool = False,
               log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> MergeSummary:
    """Merge shard run folders into `out` (see the module doc). UsageError (exit 2) on anything
    that would make the merged folder other than the unsharded run."""
    dirs = [Path(d) for d in dict.fromkeys(str(d) for d in run_dirs)]
    out = Path(out)
    if not dirs:
        raise UsageError("cai merge: no run folders given")
    infos = []
    for d in dirs:
        if not (d / RUN_YAML).is_file():
            raise UsageError(f"{d}: no {RUN_YAML}; not a run folder made by `cai generate`")
        info = RunFolder(d).info()
        if info.get("stage") != "generate":
            raise UsageError(f"{d}: run.yaml is not a `cai generate` run's (stage {info.get('stage')!r})")
        if not (d / GENERATIONS).exists():
            raise UsageError(f"{d}: no {GENERATIONS}")
        infos.append(info)
    if out.resolve() in {d.resolve() for d in dirs}:
        raise UsageError(f"--out {out} is one of the folders to merge; choose a new folder")

    # Settings first: a folder of another run is the likelier mistake than a missing shard.
    diffs = [(d, differences(infos[0], info)) for d, info in zip(dirs[1:], infos[1:])]
    diffs = [(d, keys) for d, keys in diffs if keys]
    if diffs:
        told = "; ".join(f"{d} differs from {dirs[0]} in {', '.join(keys[:8])}"
                         + (f" and {len(keys) - 8} more keys" if len(keys) > 8 else "") for d, keys in diffs)
        raise UsageError(f"cannot merge runs made differently: {told}")

    shards = [shard_of_info(info) for info in infos]
    unsharded = [str(d) for d, s in zip(dirs, shards) if s is None]
    if unsharded:
        raise UsageError(f"{', '.join(unsharded)}: not a shard (run.yaml has no `shard`: made without --shard); "
                         "cai merge joins the folders of one `--shard I/N` run")
    kinds = {k for k, _ in shards}
    if len(kinds) > 1:
        raise UsageError("cannot merge generate shards with judge shards: "
                         + ", ".join(f"{d} ({k} {s})" for d, (k, s) in zip(dirs, shards)))
    counts = {s.count for _, s in shards}
    if len(counts) > 1:
        raise UsageError("the folders are shards of different N: " + ", ".join(f"{d} ({s})" for d, (_, s) in zip(dirs, shards)))
    count = counts.pop()
    by_index: dict[int, list[Path]] = {}
    for d, (_, s) in zip(dirs, shards):
        by_index.setdefault(s.index, []).append(d)
    twice = {i: ds for i, ds in by_index.items() if len(ds) > 1}
    if twice:
        raise UsageError("the same shard given twice: " + "; ".join(
            f"{i}/{count} in {', '.join(map(str, ds))}" for i, ds in sorted(twice.items())))
    missing = [f"{i}/{count}" for i in range(count) if i not in by_index]
    if missing and not allow_partial:
        raise UsageError(f"shards {', '.join(missing)} missing (of {count}); merge all {count}, or pass "
                         "--allow-partial to merge these (their prompts are then left out)")

    order = sorted(range(len(dirs)), key=lambda i: shards[i][1].index)
    dirs, infos, shards = [dirs[i] for i in order], [infos[i] for i in order], [shards[i] for i in order]
    summary = MergeSummary(out=out, inputs=[str(d) for d in dirs], shards=[str(s) for _, s in shards],
                           missing=missing)
    if missing:
        log(f"merge: shards {', '.join(missing)} missing; merging the {len(dirs)} given (--allow-partial)")

    target = RunFolder(out)
    has_rows = [f for f in (target.generations, target.preferences, target.ties) if f.exists() and f.stat().st_size]
    if has_rows:
        raise UsageError(f"--out {out} already holds {has_rows[0].name}; choose a new folder or remove it")
    lock = target.lock()
    try:
        per_file = _write_sorted([d / GENERATIONS for d in dirs], target.generations, summary)
        if kinds == {"judge"}:  # copies of one merged run: every generation is in each of them
            summary.duplicates = 0
        summary.preferences = _write_concat([d / PREFERENCES for d in dirs], target.preferences)
        summary.ties = _write_concat([d / TIES for d in dirs], target.ties)
        for d, info, (kind, s), have in zip(dirs, infos, shards, per_file):
            rec = info.get("shard") if kind == "generate" else None
            expected = (rec or {}).get("prompts")
            samples = (info.get("config") or {}).get("samples") or 1
            if isinstance(expected, int):
                if have < expected * samples:
                    summary.warnings.append(
                        f"shard {s} ({d}) holds {have} of its {expected * samples} rows ({expected} prompts x "
                        f"{samples} samples): it has not finished, or some prompts failed or were too long; rerun "
                        "its `cai generate`, then merge again")
        for w in summary.warnings:
            log(f"merge: {w}")
        _write_info(target, out, infos[0], dirs, shards, summary)
    finally:
        lock.release()
    return summary


def _write_info(target: RunFolder, out: Path, base: dict, dirs: list[Path], shards, summary: MergeSummary) -> None:
    from cai.generate import count_run_flags

    info = {k: v for k, v in base.items() if k not in ("shard", "window", "judge_window", "judge_stats",
                                                         "merged_from")}
    info["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if isinstance(info.get("config"), dict):
        info["config"] = {**info["config"], "run_dir": str(out), "shard": None}
    if isinstance(info.get("judge"), dict):
        info["judge"] = {k: v for k, v in info["judge"].items() if k != "shard"}
    _, info["flag_counts"], info["round_flag_counts"] = count_run_flags(target.generations)
    info["flag_counts"] = {k: v for k, v in info["flag_counts"].items() if not k.startswith("_")}
    info["merged_from"] = [{"path": str(d), "shard": s.record(), "kind": kind} for d, (kind, s) in zip(dirs, shards)]
    if summary.missing:
        info["merged_missing"] = summary.missing
    write_atomic(out / RUN_YAML, yaml.safe_dump(info, sort_keys=False, allow_unicode=True, width=100))
