"""`cai export`: a run folder → data TRL trains on, with provenance and a dataset card.

SFT rows are `{"messages": [...]}` (the prompt and the final revision; `all_rounds` adds each
round's revision as its own row). DPO rows are `{"prompt": [...], "chosen": [...], "rejected":
[...]}` message lists, chosen/rejected holding the assistant turn only. KTO rows are unpaired,
`{"prompt": [...], "completion": [...], "label": bool}`: a judged pair's chosen answer desirable
and its rejected one not, or, before judging, the final revision desirable and the initial answer
not. Provenance columns ride
along (`id`, `source_ids`, `category`, `p_chosen`, ...); TRL ignores columns it does not use.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cai.errors import UsageError
from cai.quality import excluding
from cai.records import RunFolder, read_rows

Format = Literal["sft", "dpo", "kto"]
FORMATS: tuple[str, ...] = Format.__args__
Filter = Literal["none", "judged"]


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def _provenance(info: dict) -> dict:
    # Carried by every row, so a model trained on the exported file alone can still name its
    # constitution in its card (cai/train/data.py reads these columns).
    return {"constitution": info.get("constitution_name") or "", "constitution_sha256": info.get("constitution_sha256") or ""}


@dataclass
class LeftOut:
    """What an export left out and why: the dataset card lists it."""

    flagged: int = 0
    by_flag: Counter = field(default_factory=Counter)
    not_preferred: int = 0  # --filter judged: the judge did not prefer the final revision
    kept_flagged: int = 0  # --keep-flagged: flagged rows kept anyway

    def lines(self) -> list[str]:
        out = []
        if self.flagged:
            kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.by_flag.items()))
            out.append(f"{self.flagged} left out: flagged by the quality checks ({kinds})")
        if self.kept_flagged:
            out.append(f"{self.kept_flagged} flagged rows kept (--keep-flagged)")
        if self.not_preferred:
            out.append(f"{self.not_preferred} left out: the judge did not prefer the final revision over the "
                       "initial answer (--filter judged)")
        return out


def _excluded(flags, keep_flagged: bool, left: LeftOut) -> bool:
    bad = excluding(flags or [])
    if not bad:
        return False
    if keep_flagged:
        left.kept_flagged += 1
        return False
    left.flagged += 1
    left.by_flag.update(bad)
    return True


def judged_preferred(run: RunFolder) -> set[str]:
    """Generation ids whose final revision the judge preferred over the initial answer."""
    if not run.preferences.exists() and not run.ties.exists():
        raise UsageError(f"{run.path}: --filter judged keeps the rows the judge preferred, but the run is not judged "
                         f"yet: run `cai judge {run.path} --strategy revision` first")
    strategy = (run.info().get("judge") or {}).get("strategy")
    if strategy and strategy != "revision":
        raise UsageError(f"{run.path}: --filter judged needs pairs of revision vs initial answer, but the run was "
                         f"judged with --strategy {strategy}")
    return {sid for p in read_rows(run.preferences) if p.get("strategy") == "revision"
            and not (p.get("meta") or {}).get("flipped") for sid in p.get("source_ids", [])}


def build_rows(run_dir: str | Path, fmt: Format, *, all_rounds: bool = False, keep_flagged: bool = False,
               filter: Filter = "none", left_out: LeftOut | None = None) -> list[dict]:
    """The export's rows. Rows whose final answer (SFT) or chosen answer (DPO) the quality checks
    flagged are left out unless `keep_flagged`; `filter="judged"` keeps only the SFT rows whose
    final revision the judge preferred (rejection-sampled SFT). `left_out` collects the counts."""
    run = RunFolder(run_dir)
    prov = _provenance(run.info())
    left = left_out if left_out is not None else LeftOut()
    if filter not in ("none", "judged"):
        raise UsageError(f"unknown filter {filter!r}: none or judged")
    if fmt == "sft":
        if not run.generations.exists():
            raise UsageError(f"{run_dir}: no generations.jsonl to export (run `cai generate` first)")
        preferred = judged_preferred(run) if filter == "judged" else None
        rows = []
        for g in read_rows(run.generations):
            if preferred is not None and g["id"] not in preferred:
                left.not_preferred += 1
                continue
            # With --all-rounds a generation made without rounds still gives its one answer (final = initial).
            if all_rounds and g["rounds"]:
                revisions = [(r["revision"], [f for f in r.get("flags") or [] if not f.startswith("critique_")])
                             for r in g["rounds"]]
            else:
                revisions = [(g["final"], g.get("flags") or [])]
            for k, (text, flags) in enumerate(revisions):
                if _excluded(flags, keep_flagged, left):
                    continue
                rows.append({
                    "messages": list(g["prompt"]) + _assistant(text),
                    "id": g["id"] if not all_rounds else f"{g['id']}-r{k + 1 if g['rounds'] else 0}",
                    "source_id": g["id"],
                    "round": len(g["rounds"]) if not all_rounds or not g["rounds"] else k + 1,
                    "category": g.get("category") or "",
                    "principle_ids": [r["principle_id"] for r in g["rounds"]],
                    "flags": list(flags),
                    **prov,
                })
        return rows
    if fmt == "dpo":
        if filter != "none":
            raise UsageError("--filter applies to SFT data (the pairs are already the judge's choices)")
        if not run.preferences.exists():
            raise UsageError(f"{run_dir}: no preferences.jsonl to export (run `cai judge {run_dir}` first)")
        texts = _answer_flags(run)
        cal = run.info().get("judge_calibration") or {}
        agreement, below = cal.get("agreement"), cal.get("below_floor")
        rows = []
        for p in read_rows(run.preferences):
            chosen_flags = next((texts[(sid, p["chosen"])] for sid in p["source_ids"] if (sid, p["chosen"]) in texts), [])
            if _excluded(chosen_flags, keep_flagged, left):
                continue
            rows.append({
                "prompt": p["prompt"],
                "chosen": _assistant(p["chosen"]),
                "rejected": _assistant(p["rejected"]),
                "id": p["id"],
                "source_ids": p["source_ids"],
                "category": p.get("category") or "",
                "p_chosen": p["p_chosen"],
                "strategy": p["strategy"],
                "question_ids": [j["question_id"] for j in p["judgements"]],
                "chosen_flags": list(chosen_flags),
                **prov,
                # The judge may have asked another constitution's comparison questions (--constitution).
                "judge_constitution_sha256": (p.get("meta") or {}).get("constitution_sha256") or "",
                # How far the judge's labels can be trusted travels with the data (model cards read it).
                "judge_agreement": agreement,
                "judge_below_floor": below,
            })
        return rows
    if fmt == "kto":
        if filter != "none":
            raise UsageError("--filter applies to SFT data")
        return _kto_rows(run, prov, keep_flagged, left)
    raise UsageError(f"unknown export format {fmt!r}: {', '.join(FORMATS)}")


def _kto_rows(run: RunFolder, prov: dict, keep_flagged: bool, left: LeftOut) -> list[dict]:
    """Unpaired rows. Only desirable rows are left out for flags: a flagged answer (truncated,
    repeating) is a fair example of what not to write, but never one to imitate."""
    if not run.generations.exists():
        raise UsageError(f"{run.path}: no generations.jsonl to export (run `cai generate` first)")

    def row(prompt, text, label, source_id, flags, **more) -> dict:
        return {"prompt": prompt, "completion": _assistant(text), "label": label, "source_id": source_id,
                "flags": list(flags), **more, **prov}

    rows = []
    if run.preferences.exists():
        texts = _answer_flags(run)
        cal = run.info().get("judge_calibration") or {}
        for p in read_rows(run.preferences):
            sid = p["source_ids"][0] if p["source_ids"] else ""
            common = {"pair_id": p["id"], "category": p.get("category") or "", "p_chosen": p["p_chosen"],
                      "strategy": p["strategy"], "judge_agreement": cal.get("agreement"),
                      "judge_below_floor": cal.get("below_floor")}
            chosen_flags = next((texts[(s, p["chosen"])] for s in p["source_ids"] if (s, p["chosen"]) in texts), [])
            rejected_flags = next((texts[(s, p["rejected"])] for s in p["source_ids"] if (s, p["rejected"]) in texts), [])
            if not _excluded(chosen_flags, keep_flagged, left):
                rows.append(row(p["prompt"], p["chosen"], True, sid, chosen_flags, id=f"{p['id']}-chosen", **common))
            rows.append(row(p["prompt"], p["rejected"], False, sid, rejected_flags, id=f"{p['id']}-rejected", **common))
        return rows
    for g in read_rows(run.generations):
        if g["final"] == g["initial"]:  # nothing revised: the same text cannot be both good and bad
            continue
        common = {"category": g.get("category") or "", "principle_ids": [r["principle_id"] for r in g["rounds"]]}
        if not _excluded(g.get("flags"), keep_flagged, left):
            rows.append(row(g["prompt"], g["final"], True, g["id"], g.get("flags") or [], id=f"{g['id']}-final", **common))
        rows.append(row(g["prompt"], g["initial"], False, g["id"], g.get("initial_flags") or [],
                        id=f"{g['id']}-initial", **common))
    return rows


def _answer_flags(run: RunFolder) -> dict[tuple[str, str], list[str]]:
    """(generation id, text) → the checks' flags, for the final and the initial answer of each row."""
    out: dict[tuple[str, str], list[str]] = {}
    for g in read_rows(run.generations):
        out.setdefault((g["id"], g["initial"]), g.get("initial_flags") or [])
        out[(g["id"], g["final"])] = g.get("flags") or []
    return out


def rows_sha256(rows: list[dict]) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps(r, sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()


def export(run_dir: str | Path, fmt: Format, to: Literal["jsonl", "parquet", "hf"], out: str | Path,
           *, all_rounds: bool = False, keep_flagged: bool = False, filter: Filter = "none") -> dict:
    """Write the data and its dataset card; returns the stats (rows, sha256, path, card, left_out, ...)."""
    if to not in ("jsonl", "parquet", "hf"):
        raise UsageError(f"unknown target {to!r}: jsonl, parquet or hf")
    left = LeftOut()
    rows = build_rows(run_dir, fmt, all_rounds=all_rounds, keep_flagged=keep_flagged, filter=filter, left_out=left)
    if not rows:
        why = "; ".join(left.lines())
        raise UsageError(f"{run_dir}: nothing to export as {fmt}" + (f" ({why}; --keep-flagged keeps flagged rows)"
                                                                     if why else ""))
    out = Path(out)
    # The card's place is decided before any data is written, so a refusal leaves nothing behind.
    card = card_path(out if to == "hf" else out.parent, out.name)
    if to == "jsonl":
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        os.replace(tmp, out)
    else:
        from datasets import Dataset

        ds = Dataset.from_list(rows)
        if to == "parquet":
            out.parent.mkdir(parents=True, exist_ok=True)
            ds.to_parquet(str(out))
        else:
            ds.save_to_disk(str(out))
    stats = {"rows": len(rows), "sha256": rows_sha256(rows), "format": fmt, "to": to, "path": str(out),
             "left_out": left, "filter": filter, "keep_flagged": keep_flagged}
    section = card_section(out.name, RunFolder(run_dir), rows, stats, all_rounds=all_rounds)
    stats["card"] = str(write_card(card, out.name, section))
    return stats


# ---------------------------------------------------------------- the dataset card
#
# Several exports often share a folder (the demo writes sft.jsonl and dpo.jsonl side by side), and
# the folder may hold someone's own README.md. So a card carries a marker line, holds one
# delimited section per data file, and is only ever rewritten when the marker says cai wrote it;
# beside a README that is not ours the card goes to `<data file>.README.md` instead.

CARD_MARKER = ("<!-- cai dataset card: `cai export` rewrites the sections below, one per data file, "
               "and never a README.md it did not write -->")
CARD = "README.md"


def _begin(name: str) -> str:
    return f"<!-- cai:section {name} -->"


def _end(name: str) -> str:
    return f"<!-- cai:end {name} -->"


def is_cai_card(text: str) -> bool:
    return CARD_MARKER in text


def merge_card(existing: str | None, name: str, section: str) -> str | None:
    """The card with `name`'s section added or replaced; None when `existing` is not a cai card."""
    block = f"{_begin(name)}\n{section.rstrip()}\n{_end(name)}\n"
    if existing is None:
        return (f"{CARD_MARKER}\n# cai datasets\n\nData exported by `cai export` from Constitutional AI runs, "
                f"one section per data file in this folder.\n\n{block}")
    if not is_cai_card(existing):
        return None
    begin, end = _begin(name), _end(name)
    i, j = existing.find(begin), existing.find(end)
    if i >= 0 and j > i:
        return existing[:i] + block + existing[j + len(end):].lstrip("\n")
    return existing.rstrip("\n") + "\n\n" + block


def card_path(folder: Path, name: str) -> Path:
    """README.md when it is absent or a cai card, else `<name>.README.md` (never someone else's file)."""
    for card in (folder / CARD, folder / f"{name}.{CARD}"):
        if not card.exists() or is_cai_card(card.read_text(encoding="utf-8", errors="replace")):
            return card
    raise UsageError(f"{folder}: {CARD} and {name}.{CARD} both exist and were not written by cai; "
                     "export to another folder")


def write_card(card: Path, name: str, section: str) -> Path:
    existing = card.read_text(encoding="utf-8") if card.exists() else None
    text = merge_card(existing, name, section)
    if text is None:  # card_path chose it, so only a file swapped in since then gets here
        raise UsageError(f"{card} is not a cai dataset card; not overwritten")
    card.parent.mkdir(parents=True, exist_ok=True)
    tmp = card.with_name(f".{card.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, card)
    return card


def card_section(name: str, run: RunFolder, rows: list[dict], stats: dict, *, all_rounds: bool) -> str:
    """The card's section for one data file: provenance, counts and filters."""
    info = run.info()
    judge = info.get("judge") or {}
    cats: dict[str, int] = {}
    for r in rows:
        cats[r.get("category") or "(none)"] = cats.get(r.get("category") or "(none)", 0) + 1
    ties = sum(1 for _ in read_rows(run.ties))
    lines = [
        f"## `{name}`: cai {stats['format'].upper()} dataset",
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
    fmt = stats["format"]
    judged = fmt == "dpo" or (fmt == "kto" and run.preferences.exists())
    if fmt == "kto":
        lines.append("| labels | " + ("a judged pair's chosen answer desirable, its rejected answer undesirable |" if judged
                                     else "the final revision desirable, the initial answer undesirable (rows the "
                                     "rounds left unchanged are skipped) |"))
    if judged:
        lines += [
            f"| judge | {judge.get('judge_model', '?')} via {judge.get('backend', '?')}, mode {judge.get('mode', '?')}, "
            f"ensemble {judge.get('ensemble', '?')}, both orders |",
            f"| judge constitution | {judge.get('constitution_name', '?')} (sha256 `{judge.get('constitution_sha256', '?')}`) |",
            f"| pair strategy | {judge.get('strategy', '?')} |",
            f"| filter | ties with abs(p - 0.5) < {judge.get('threshold', '?')} left out: {ties} (listed in ties.jsonl) |",
        ]
    elif fmt == "sft":
        lines.append(f"| rows per generation | {'one per revision round' if all_rounds else 'final revision only'} |")
        if stats.get("filter") == "judged":
            lines.append("| filter | judged: only rows whose final revision the judge preferred over the initial "
                         "answer (rejection-sampled SFT) |")
    left: LeftOut = stats.get("left_out") or LeftOut()
    checked = {"dpo": "rows whose chosen answer is flagged are left out", "sft": "rows whose final answer is flagged are left out",
               "kto": "desirable rows whose answer is flagged are left out (a flagged answer stays as an undesirable one)"}[fmt]
    lines.append(f"| quality checks | {'flagged rows kept (--keep-flagged)' if stats.get('keep_flagged') else checked} |")
    lines += ["", "### Left out", ""]
    lines += [f"- {line}" for line in left.lines()] or ["- nothing"]
    flag_counts = info.get("flag_counts")
    if flag_counts:
        lines += ["", "Quality flags on the run's final answers: " + ", ".join(f"{k} {v}" for k, v in flag_counts.items())
                  + " (see cai/quality.py for what each means)."]
    lines += card_calibration(info)
    lines += ["", "### Categories", "", "| category | rows |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(cats.items())]
    reads = {"sft": "`messages`.", "dpo": "`prompt`, `chosen`, `rejected`.", "kto": "`prompt`, `completion`, `label`."}
    lines += ["", "Columns TRL reads: " + reads[fmt],
              "The other columns record where each row came from (`constitution`, `constitution_sha256`: the run's "
              "constitution)."]
    return "\n".join(lines) + "\n"


def card_calibration(info: dict) -> list[str]:
    """The judge's calibration as a card section: every card made from judged data carries it."""
    cal = info.get("judge_calibration")
    if not cal:
        return []
    if cal.get("skipped"):
        return ["", "### Judge calibration", "", "Not measured (`--calibration none`): nothing is known about how far "
                "the judge's labels agree with people."]
    out = ["", "### Judge calibration", "",
           f"Measured before judging, with the judge's own settings, on `{cal.get('source')}` "
           f"(sha256 `{str(cal.get('sha256', '?'))[:16]}`, n={cal.get('n')}).", "",
           "| | value |", "|---|---|",
           f"| agreement with the labels (ties half) | {_f(cal.get('agreement'))} |",
           f"| position consistency | {_f(cal.get('position_consistency'))} |",
           f"| longer response wins (decided pairs) | {_f(cal.get('longer_wins'))} |"]
    easy = cal.get("easy")
    if easy:
        out.append(f"| agreement on the easy clear-cut tier (n={easy.get('n')}) | {_f(easy.get('agreement'))} |")
    if cal.get("below_floor"):
        out += ["", f"**The judge was below the floor** (agreement {_f(cal.get('agreement'))} < min_agreement "
                f"{_f(cal.get('min_agreement'))}): its labels are close to chance, and so is this data's preference signal."]
    return out


def _f(x) -> str:
    return f"{x:.3f}" if isinstance(x, (int, float)) else "n/a"
