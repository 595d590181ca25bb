"""Per-principle and per-question figures of a run, computed from its files.

The page only displays these numbers; computing them here keeps one definition that a test (or a
user with `python -c`) can recompute, and keeps the browser free of arithmetic on 10,000 rows.

Definitions (a round's "previous answer" is the initial answer for round 1, else the revision of
the round before):
  drawn             rounds that used the principle
  changed           share of those rounds whose revision differs from the previous answer
                    (whitespace-normalised text comparison)
  length_change     mean of (words in the revision - words in the previous answer)
  flagged           share of those rounds whose revision carries a flag that keeps a text out of
                    training (cai.quality.excluding: not `unchanged`, not a critique finding)
  critique_flagged  share of those rounds whose critique carries a `critique_*` finding
  win_rate          over rows whose last round used the principle and whose revision was judged
                    against the initial answer (`--strategy revision`): revision chosen 1, tie 0.5,
                    flipped (initial chosen) 0; `judged` is their number
Per comparison question, over the judge's answers to it in preferences.jsonl and ties.jsonl where
the judge was actually asked (not identical texts, not a pair too long for its context):
  asked             how often the question was asked
  margin            mean |p - 0.5|, p the question's two orders averaged
  consistency       share of asks with the same winner in both orders
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable

from cai.quality import excluding

# The label of a judged row: how the judge's verdict came out.
DECIDED, FLIP, TIE = "decided", "flip", "tie"
SCORE = {DECIDED: 1.0, TIE: 0.5, FLIP: 0.0}


def _norm(text: str) -> str:
    return " ".join((text or "").split())


def _words(text: str) -> int:
    return len((text or "").split())


def _share(k: int, n: int) -> float | None:
    return round(k / n, 4) if n else None


def _mean(xs: list[float]) -> float | None:
    return round(sum(xs) / len(xs), 4) if xs else None


@dataclass
class PrincipleStats:
    id: str
    drawn: int = 0
    changed: float | None = None
    length_change: float | None = None
    flagged: float | None = None
    critique_flagged: float | None = None
    judged: int = 0
    win_rate: float | None = None


@dataclass
class QuestionStats:
    id: str
    asked: int = 0
    margin: float | None = None
    consistency: float | None = None


def verdict_label(pair: dict) -> str:
    """decided / flip / tie for a preferences.jsonl or ties.jsonl row."""
    if pair.get("tie"):
        return TIE
    return FLIP if (pair.get("meta") or {}).get("flipped") else DECIDED


def was_asked(pair: dict) -> bool:
    """False for pairs the judge never saw: identical texts, or too long for its context."""
    return not pair.get("reason") and _norm(pair.get("chosen", "")) != _norm(pair.get("rejected", ""))


def principle_stats(generations: Iterable[dict], pairs: Iterable[dict],
                    order: Iterable[str] = ()) -> list[PrincipleStats]:
    """One entry per principle: those named in `order` first (the constitution's), then any other
    id the rounds used, in the order first seen."""
    acc: dict[str, dict] = {pid: {"n": 0, "changed": 0, "dlen": [], "flagged": 0, "crit": 0, "scores": []}
                            for pid in order}
    last_used: dict[str, str] = {}
    for g in generations:
        previous = g.get("initial", "")
        rounds = g.get("rounds") or []
        for rd in rounds:
            a = acc.setdefault(rd["principle_id"], {"n": 0, "changed": 0, "dlen": [], "flagged": 0, "crit": 0,
                                                    "scores": []})
            revision = rd.get("revision", "")
            flags = rd.get("flags") or []
            a["n"] += 1
            a["changed"] += _norm(revision) != _norm(previous)
            a["dlen"].append(_words(revision) - _words(previous))
            a["flagged"] += bool(excluding(flags))
            a["crit"] += any(f.startswith("critique_") for f in flags)
            previous = revision
        if rounds:
            last_used[g["id"]] = rounds[-1]["principle_id"]
    for p in pairs:
        if p.get("strategy") != "revision" or not p.get("source_ids"):
            continue
        pid = last_used.get(p["source_ids"][0])
        if pid is not None:
            acc[pid]["scores"].append(SCORE[verdict_label(p)])
    return [PrincipleStats(id=pid, drawn=a["n"], changed=_share(a["changed"], a["n"]),
                           length_change=_mean(a["dlen"]), flagged=_share(a["flagged"], a["n"]),
                           critique_flagged=_share(a["crit"], a["n"]), judged=len(a["scores"]),
                           win_rate=_mean(a["scores"]))
            for pid, a in acc.items()]


def question_stats(pairs: Iterable[dict], order: Iterable[str] = ()) -> list[QuestionStats]:
    acc: dict[str, list[tuple[float, float]]] = {q: [] for q in order}
    for p in pairs:
        if not was_asked(p):
            continue
        for j in p.get("judgements") or []:
            acc.setdefault(j["question_id"], []).append((j["p_first"], j["p_second"]))
    out = []
    for qid, asks in acc.items():
        margins = [abs((a + b) / 2 - 0.5) for a, b in asks]
        # The rule of PairVerdict.consistent: one winner in both orders, 0.5 counting as none.
        same = sum((a > 0.5) == (b > 0.5) and (a != 0.5) == (b != 0.5) for a, b in asks)
        out.append(QuestionStats(id=qid, asked=len(asks), margin=_mean(margins), consistency=_share(same, len(asks))))
    return out


def as_dicts(items: Iterable) -> list[dict]:
    return [asdict(x) for x in items]
