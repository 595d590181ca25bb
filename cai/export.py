"""`cai export`: a run folder → data TRL trains on, with provenance and a dataset card.

SFT rows are `{"messages": [...]}` (the prompt and the final revision; `all_rounds` adds each
round's revision as its own row). DPO rows are `{"prompt": [...], "chosen": [...], "rejected":
[...]}` message lists, chosen/rejected holding the assistant turn only. Provenance columns ride
along (`id`, `source_ids`, `category`, `p_chosen`, ...); TRL ignores columns it does not use.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Literal

from cai.errors import UsageError
from cai.records import RunFolder, read_rows

Format = Literal["sft", "dpo"]


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def build_rows(run_dir: str | Path, fmt: Format, *, all_rounds: bool = False) -> list[dict]:
    run = RunFolder(run_dir)
    if fmt == "sft":
        if not run.generations.exists():
            raise UsageError(f"{run_dir}: no generations.jsonl to export (run `cai generate` first)")
        rows = []
        for g in read_rows(run.generations):
            revisions = [r["revision"] for r in g["rounds"]] if all_rounds else [g["final"]]
            for k, text in enumerate(revisions):
                rows.append({
                    "messages": list(g["prompt"]) + _assistant(text),
                    "id": g["id"] if not all_rounds else f"{g['id']}-r{k + 1}",
                    "source_id": g["id"],
                    "round": len(g["rounds"]) if not all_rounds else k + 1,
                    "category": g.get("category") or "",
                    "principle_ids": [r["principle_id"] for r in g["rounds"]],
                })
        return rows
    if fmt == "dpo":
        if not run.preferences.exists():
            raise UsageError(f"{run_dir}: no preferences.jsonl to export (run `cai judge {run_dir}` first)")
        return [
            {
                "prompt": p["prompt"],
                "chosen": _assistant(p["chosen"]),
                "rejected": _assistant(p["rejected"]),
                "id": p["id"],
                "source_ids": p["source_ids"],
                "category": p.get("category") or "",
                "p_chosen": p["p_chosen"],
                "strategy": p["strategy"],
                "question_ids": [j["question_id"] for j in p["judgements"]],
            }
            for p in read_rows(run.preferences)
        ]
    raise UsageError(f"unknown export format {fmt!r}: sft or dpo")


def rows_sha256(rows: list[dict]) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps(r, sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()


def export(run_dir: str | Path, fmt: Format, to: Literal["jsonl", "parquet", "hf"], out: str | Path,
           *, all_rounds: bool = False) -> dict:
    rows = build_rows(run_dir, fmt, all_rounds=all_rounds)
    if not rows:
        raise UsageError(f"{run_dir}: nothing to export as {fmt}")
    out = Path(out)
    if to == "jsonl":
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        os.replace(tmp, out)
        card_dir = out.parent
    elif to in ("parquet", "hf"):
        from datasets import Dataset

        ds = Dataset.from_list(rows)
        if to == "parquet":
            out.parent.mkdir(parents=True, exist_ok=True)
            ds.to_parquet(str(out))
            card_dir = out.parent
        else:
            ds.save_to_disk(str(out))
            card_dir = out
    else:
        raise UsageError(f"unknown target {to!r}: jsonl, parquet or hf")
    stats = {"rows": len(rows), "sha256": rows_sha256(rows), "format": fmt, "to": to, "path": str(out)}
    write_card(card_dir, RunFolder(run_dir), rows, stats, all_rounds=all_rounds)
    return stats


def write_card(folder: Path, run: RunFolder, rows: list[dict], stats: dict, *, all_rounds: bool) -> Path:
    info = run.info()
    judge = info.get("judge") or {}
    cats: dict[str, int] = {}
    for r in rows:
        cats[r.get("category") or "(none)"] = cats.get(r.get("category") or "(none)", 0) + 1
    ties = sum(1 for _ in read_rows(run.path / "ties.jsonl"))
    lines = [
        f"# cai {stats['format'].upper()} dataset",
        "",
        f"Made by `cai export {run.path} --format {stats['format']} --to {stats['to']}` from a Constitutional AI run.",
        "",
        "| | |",
        "|---|---|",
        f"| rows | {stats['rows']} |",
        f"| data sha256 | `{stats['sha256']}` |",
        f"| constitution | {info.get('constitution_name', '?')} (sha256 `{info.get('constitution_sha256', '?')}`) |",
        f"| policy model | {info.get('model', '?')} |",
        f"| critique/revision rounds | {(info.get('config') or {}).get('rounds', '?')} |",
        f"| code version | {info.get('code_version', '?')} |",
    ]
    if stats["format"] == "dpo":
        lines += [
            f"| judge | {judge.get('judge_model', '?')} via {judge.get('backend', '?')}, mode {judge.get('mode', '?')}, "
            f"ensemble {judge.get('ensemble', '?')}, both orders |",
            f"| pair strategy | {judge.get('strategy', '?')} |",
            f"| filter | ties with abs(p - 0.5) < {judge.get('threshold', '?')} left out: {ties} (listed in ties.jsonl) |",
        ]
    else:
        lines.append(f"| rows per generation | {'one per revision round' if all_rounds else 'final revision only'} |")
    lines += ["", "## Categories", "", "| category | rows |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(cats.items())]
    lines += ["", "Columns TRL reads: " + ("`messages`." if stats["format"] == "sft" else "`prompt`, `chosen`, `rejected`."),
              "The other columns record where each row came from."]
    card = folder / "README.md"
    folder.mkdir(parents=True, exist_ok=True)
    card.write_text("\n".join(lines) + "\n")
    return card
