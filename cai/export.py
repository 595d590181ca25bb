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
from cai.judge.calibration import floor_figure
from cai.judge.figures import fmt as num
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
    duplicates: int = 0  # chosen text the same as an earlier row's (a collapsed policy)
    kept_duplicates: int = 0  # --keep-duplicates
    unconfident: int = 0  # --min-confidence: pairs the judge was less sure of
    min_confidence: float | None = None
    decontaminated: int = 0  # --decontaminate: the prompt overlaps an eval prompt
    decontaminated_ids: list[str] = field(default_factory=list)  # the first few, for the card

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
        if self.duplicates:
            out.append(f"{self.duplicates} left out: the chosen text duplicates an earlier row's (whitespace and case "
                       "aside; --keep-duplicates keeps them)")
        if self.kept_duplicates:
            out.append(f"{self.kept_duplicates} duplicate rows kept (--keep-duplicates)")
        if self.decontaminated:
            shown = ", ".join(self.decontaminated_ids[:SHOWN_IDS])
            out.append(f"{self.decontaminated} left out: the prompt overlaps an evaluation prompt (--decontaminate; "
                       f"{shown}{', ...' if self.decontaminated > SHOWN_IDS else ''})")
        if self.unconfident:
            out.append(f"{self.unconfident} left out: the judge's confidence |p_chosen - 0.5| was under "
                       f"--min-confidence {self.min_confidence}")
        return out


class Duplicates:
    """Chosen texts seen so far, as 16-byte digests of the normalised text (whitespace collapsed,
    case folded): a run of a million rows costs ~100 MB of digests at most, never the texts."""

    def __init__(self, keep: bool, left: LeftOut):
        self.keep, self.left, self.seen = keep, left, set()

    def __call__(self, text: str) -> bool:
        """True when `text` repeats an earlier chosen text and is to be left out."""
        key = hashlib.blake2b(" ".join(text.casefold().split()).encode(), digest_size=16).digest()
        if key not in self.seen:
            self.seen.add(key)
            return False
        if self.keep:
            self.left.kept_duplicates += 1
            return False
        self.left.duplicates += 1
        return True


SHOWN_IDS = 10  # row ids a card and summary list by name; the rest are counted


def _contaminated(row_id: str, prompt, dec, left: LeftOut) -> bool:
    """True when the row's prompt overlaps an eval prompt of `dec` (cai/decontaminate.py) and is left out."""
    if dec is None or not dec.hits(prompt):
        return False
    left.decontaminated += 1
    if len(left.decontaminated_ids) < SHOWN_IDS:
        left.decontaminated_ids.append(str(row_id))
    return True


def _unconfident(p: dict, min_confidence: float | None, left: LeftOut) -> bool:
    # a hair of slack: 0.6 - 0.5 is 0.0999... in floating point, and 0.6 is a pair at 0.1
    if min_confidence is None or p.get("p_chosen") is None or abs(p["p_chosen"] - 0.5) >= min_confidence - 1e-9:
        return False
    left.unconfident += 1
    return True


class _Flags:
    """A pair's answers' flags: from the pair (written at judge time), else, for pairs judged by an
    older cai, by one join over generations.jsonl made only when such a pair turns up."""

    def __init__(self, run: RunFolder):
        self.run, self._texts = run, None

    def __call__(self, p: dict, side: str) -> list[str]:
        own = p.get(f"{side}_flags")
        if own is not None:
            return own
        if self._texts is None:
            self._texts = _answer_flags(self.run)
        return next((self._texts[(s, p[side])] for s in p["source_ids"] if (s, p[side]) in self._texts), [])


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


def build_rows(run_dir: str | Path, fmt: Format, **how) -> list[dict]:
    """iter_rows as a list (for callers that train on the rows in memory)."""
    return list(iter_rows(run_dir, fmt, **how))


def iter_rows(run_dir: str | Path, fmt: Format, *, all_rounds: bool = False, keep_flagged: bool = False,
              filter: Filter = "none", left_out: LeftOut | None = None, keep_duplicates: bool = True,
              min_confidence: float | None = None, decontaminate=None):
    """The export's rows, streamed (a window of rows in memory, whatever the run's size). Rows whose
    final answer (SFT) or chosen answer (DPO) the quality checks flagged are left out unless
    `keep_flagged`; `filter="judged"` keeps only the SFT rows whose final revision the judge preferred
    (rejection-sampled SFT); unless `keep_duplicates`, a row whose chosen text repeats an earlier
    one's; with `min_confidence`, pairs with |p_chosen - 0.5| under it; with `decontaminate` (a
    cai.decontaminate.Decontaminator), rows whose prompt overlaps an eval prompt. `left_out` collects
    the counts (complete once the rows are consumed)."""
    dec = decontaminate
    run = RunFolder(run_dir)
    prov = _provenance(run.info())
    left = left_out if left_out is not None else LeftOut()
    left.min_confidence = min_confidence
    duplicate = Duplicates(keep_duplicates, left)
    if filter not in ("none", "judged"):
        raise UsageError(f"unknown filter {filter!r}: none or judged")
    if min_confidence is not None and fmt == "sft":
        raise UsageError("--min-confidence applies to judged pairs (dpo, kto), not to SFT rows")
    if fmt == "sft":
        if not run.generations.exists():
            raise UsageError(f"{run_dir}: no generations.jsonl to export (run `cai generate` first)")
        preferred = judged_preferred(run) if filter == "judged" else None
        for g in read_rows(run.generations):
            if preferred is not None and g["id"] not in preferred:
                left.not_preferred += 1
                continue
            if _contaminated(g["id"], g["prompt"], dec, left):
                continue
            # With --all-rounds a generation made without rounds still gives its one answer (final = initial).
            if all_rounds and g["rounds"]:
                revisions = [(r["revision"], [f for f in r.get("flags") or [] if not f.startswith("critique_")])
                             for r in g["rounds"]]
            else:
                revisions = [(g["final"], g.get("flags") or [])]
            for k, (text, flags) in enumerate(revisions):
                if _excluded(flags, keep_flagged, left) or duplicate(text):
                    continue
                yield {
                    "messages": list(g["prompt"]) + _assistant(text),
                    "id": g["id"] if not all_rounds else f"{g['id']}-r{k + 1 if g['rounds'] else 0}",
                    "source_id": g["id"],
                    "round": len(g["rounds"]) if not all_rounds or not g["rounds"] else k + 1,
                    "category": g.get("category") or "",
                    "principle_ids": [r["principle_id"] for r in g["rounds"]],
                    "flags": list(flags),
                    **prov,
                }
        return
    if fmt == "dpo":
        if filter != "none":
            raise UsageError("--filter applies to SFT data (the pairs are already the judge's choices)")
        if not run.preferences.exists():
            raise UsageError(f"{run_dir}: no preferences.jsonl to export (run `cai judge {run_dir}` first)")
        flags_of = _Flags(run)
        cal = run.info().get("judge_calibration") or {}
        agreement, below = cal.get("agreement"), cal.get("below_floor")
        for p in read_rows(run.preferences):
            chosen_flags = flags_of(p, "chosen")
            if _contaminated(p["id"], p["prompt"], dec, left):
                continue
            if _unconfident(p, min_confidence, left) or _excluded(chosen_flags, keep_flagged, left) \
                    or duplicate(p["chosen"]):
                continue
            yield {
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
            }
        return
    if fmt == "kto":
        if filter != "none":
            raise UsageError("--filter applies to SFT data")
        yield from _kto_rows(run, prov, keep_flagged, left, duplicate, min_confidence, dec)
        return
    raise UsageError(f"unknown export format {fmt!r}: {', '.join(FORMATS)}")


def _kto_rows(run: RunFolder, prov: dict, keep_flagged: bool, left: LeftOut, duplicate: Duplicates,
              min_confidence: float | None, dec):
    """Unpaired rows. Only desirable rows are left out for flags: a flagged answer (truncated,
    repeating) is a fair example of what not to write, but never one to imitate."""
    if not run.generations.exists():
        raise UsageError(f"{run.path}: no generations.jsonl to export (run `cai generate` first)")

    def row(prompt, text, label, source_id, flags, **more) -> dict:
        return {"prompt": prompt, "completion": _assistant(text), "label": label, "source_id": source_id,
                "flags": list(flags), **more, **prov}

    if run.preferences.exists():
        flags_of = _Flags(run)
        cal = run.info().get("judge_calibration") or {}
        for p in read_rows(run.preferences):
            if _contaminated(p["id"], p["prompt"], dec, left) or _unconfident(p, min_confidence, left):
                continue
            sid = p["source_ids"][0] if p["source_ids"] else ""
            common = {"pair_id": p["id"], "category": p.get("category") or "", "p_chosen": p["p_chosen"],
                      "strategy": p["strategy"], "judge_agreement": cal.get("agreement"),
                      "judge_below_floor": cal.get("below_floor")}
            chosen_flags, rejected_flags = flags_of(p, "chosen"), flags_of(p, "rejected")
            if not _excluded(chosen_flags, keep_flagged, left) and not duplicate(p["chosen"]):
                yield row(p["prompt"], p["chosen"], True, sid, chosen_flags, id=f"{p['id']}-chosen", **common)
            yield row(p["prompt"], p["rejected"], False, sid, rejected_flags, id=f"{p['id']}-rejected", **common)
        return
    if min_confidence is not None:
        raise UsageError(f"{run.path}: --min-confidence keeps confident judged pairs, but the run is not judged")
    for g in read_rows(run.generations):
        if g["final"] == g["initial"]:  # nothing revised: the same text cannot be both good and bad
            continue
        if _contaminated(g["id"], g["prompt"], dec, left):
            continue
        common = {"category": g.get("category") or "", "principle_ids": [r["principle_id"] for r in g["rounds"]]}
        if not _excluded(g.get("flags"), keep_flagged, left) and not duplicate(g["final"]):
            yield row(g["prompt"], g["final"], True, g["id"], g.get("flags") or [], id=f"{g['id']}-final", **common)
        yield row(g["prompt"], g["initial"], False, g["id"], g.get("initial_flags") or [],
                  id=f"{g['id']}-initial", **common)


def _answer_flags(run: RunFolder) -> dict[tuple[str, str], list[str]]:
    """(generation id, text) → the checks' flags, for the final and the initial answer of each row."""
    out: dict[tuple[str, str], list[str]] = {}
    for g in read_rows(run.generations):
        out.setdefault((g["id"], g["initial"]), g.get("initial_flags") or [])
        out[(g["id"], g["final"])] = g.get("flags") or []
    return out


def rows_sha256(rows) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps(r, sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()


@dataclass
class Tally:
    """What the card needs of the rows, counted as they stream past."""

    rows: int = 0
    sha: "hashlib._Hash" = field(default_factory=hashlib.sha256)
    categories: Counter = field(default_factory=Counter)

    def add(self, row: dict) -> None:
        self.rows += 1
        self.sha.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode())  # as rows_sha256
        self.categories[row.get("category") or "(none)"] += 1


def _jsonl_rows(path: str):
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)


def export(run_dir: str | Path, fmt: Format, to: Literal["jsonl", "parquet", "hf"], out: str | Path,
           *, all_rounds: bool = False, keep_flagged: bool = False, filter: Filter = "none",
           keep_duplicates: bool = False, min_confidence: float | None = None,
           decontaminate: list[str] | None = None) -> dict:
    """Write the data and its dataset card; returns the stats (rows, sha256, path, card, left_out, ...).
    Rows stream from the run to a JSON Lines file (the parquet and hf targets are built from it by
    `datasets`, on disk), so memory stays flat in the run's size."""
    if to not in ("jsonl", "parquet", "hf"):
        raise UsageError(f"unknown target {to!r}: jsonl, parquet or hf")
    left = LeftOut()
    dec = None
    if decontaminate:
        from cai.decontaminate import Decontaminator

        dec = Decontaminator.from_files(decontaminate)  # a bad file is exit 2 before anything is written
    rows = iter_rows(run_dir, fmt, all_rounds=all_rounds, keep_flagged=keep_flagged, filter=filter, left_out=left,
                     keep_duplicates=keep_duplicates, min_confidence=min_confidence, decontaminate=dec)
    out = Path(out)
    # The card's place is decided before any data is written, so a refusal leaves nothing behind.
    card = card_path(out if to == "hf" else out.parent, out.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.jsonl.tmp")
    tally = Tally()
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            for r in rows:
                tally.add(r)
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        if not tally.rows:
            why = "; ".join(left.lines())
            raise UsageError(f"{run_dir}: nothing to export as {fmt}" + (
                f" ({why}; --keep-flagged keeps flagged rows)" if why else ""))
        if to == "jsonl":
            os.replace(tmp, out)
        else:
            import tempfile

            from datasets import Dataset

            with tempfile.TemporaryDirectory(prefix="cai-export-") as cache:
                ds = Dataset.from_generator(_jsonl_rows, gen_kwargs={"path": str(tmp)}, cache_dir=cache)
                if to == "parquet":
                    ds.to_parquet(str(out))
                else:
                    ds.save_to_disk(str(out))
                del ds
    finally:
        tmp.unlink(missing_ok=True)
    stats = {"rows": tally.rows, "sha256": tally.sha.hexdigest(), "format": fmt, "to": to, "path": str(out),
             "left_out": left, "filter": filter, "keep_flagged": keep_flagged, "keep_duplicates": keep_duplicates,
             "min_confidence": min_confidence, "decontaminate": dec.record() if dec else None}
    section = card_section(out.name, RunFolder(run_dir), tally.categories, stats, all_rounds=all_rounds)
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


def card_section(name: str, run: RunFolder, cats: dict[str, int], stats: dict, *, all_rounds: bool) -> str:
    """The card's section for one data file: provenance, counts (`cats`: rows per category) and filters."""
    info = run.info()
    judge = info.get("judge") or {}
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
    lines.append("| duplicates | " + ("kept (--keep-duplicates)" if stats.get("keep_duplicates") else
                                     "rows whose chosen text repeats an earlier row's are left out") + " |")
    if stats.get("decontaminate"):
        files = ", ".join(f"`{f['path']}` (sha256 `{f['sha256'][:12]}`)" for f in stats["decontaminate"]["files"])
        lines.append(f"| decontaminated against | {files}: rows whose prompt shares a "
                     f"{stats['decontaminate']['ngram']}-word run with an eval prompt (short prompts: "
                     f"{stats['decontaminate']['short_ratio']:g} of their 3-grams) left out: "
                     f"{(stats.get('left_out') or LeftOut()).decontaminated} |")
    if stats.get("min_confidence") is not None:
        lines.append(f"| min confidence | pairs with abs(p_chosen - 0.5) < {stats['min_confidence']} left out: "
                     f"{(stats.get('left_out') or LeftOut()).unconfident} |")
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
           f"| agreement with the labels (ties half) | {num(cal.get('agreement'))} |",
           *([f"| agreement averaged over the set's kinds (the floor's figure) | {num(cal['balanced_agreement'])} |"]
             if cal.get("balanced_agreement") is not None else []),
           f"| position consistency (pairs decided in both orders) | {num(cal.get('position_consistency'))} |",
           f"| longer response wins (decided pairs) | {num(cal.get('longer_wins'))} |"]
    easy = cal.get("easy")
    if easy:
        out.append(f"| agreement on the easy clear-cut tier (n={easy.get('n')}) | {num(easy.get('agreement'))} |")
    if cal.get("below_floor"):
        figure, name = floor_figure(cal)
        out += ["", f"**The judge was below the floor** ({name} {num(figure)} < min_agreement "
                f"{num(cal.get('min_agreement'))}): its labels are close to chance, and so is this data's preference signal."]
    return out


