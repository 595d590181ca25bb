"""Per-principle and per-question figures of a run, computed from its files.

The page only displays these numbers; computing them here keeps one definition that a test (or a
user with `python -c`) can recompute, and keeps the browser free of arithmetic on 10,000 rows.
They are counted one row at a time (PrincipleTally, QuestionTally), so a run of any size is
streamed past them; a mean is the builtin sum() of its values over their number, rounded to 4
places, exactly as if the values had been held in a list.

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

import math
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


# Python 3.12 made the builtin sum() of floats compensated (Neumaier); a running total has to add
# the same way for a streamed mean to equal the mean of the whole list, bit for bit.
_COMPENSATED = sum([1e100, 1.0, -1e100]) == 1.0


class RunningSum:
    """The builtin `sum(xs)` of the values added so far, kept in O(1) memory: plain left-to-right
    addition before Python 3.12, Neumaier's compensated summation (as CPython's sum does) after."""

    __slots__ = ("n", "total", "_c")

    def __init__(self):
        self.n, self.total, self._c = 0, 0, 0.0

    def add(self, x) -> None:
        if not _COMPENSATED or self.n == 0 or not isinstance(x, float) or not isinstance(self.total, float):
            self.total = self.total + x  # the start (int 0) plus the first value, as sum() does
        else:
            f = self.total
            t = f + x
            self._c += (f - t) + x if abs(f) >= abs(x) else (x - t) + f
            self.total = t
        self.n += 1

    def value(self):
        if _COMPENSATED and self._c and math.isfinite(self._c):
            return self.total + self._c
        return self.total

    def mean(self) -> float | None:
        return round(self.value() / self.n, 4) if self.n else None


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


class PrincipleTally:
    """principle_stats one row at a time: O(principles) memory, whatever the run's size.

    `add(generation)` counts its rounds and returns the principle of its last round (None without
    rounds); `judged(pid, score)` counts a revision pair's verdict for a row whose last round used
    pid. The caller does that join (load.py joins on the row ids in a compact index)."""

    def __init__(self, order: Iterable[str] = ()):
        self._acc: dict[str, list] = {}
        for pid in order:
            self._new(pid)

    def _new(self, pid: str) -> list:
        # drawn, changed, sum of length changes, flagged, critique-flagged, judged, sum of scores
        return self._acc.setdefault(pid, [0, 0, RunningSum(), 0, 0, 0, RunningSum()])

    def add(self, g: dict) -> str | None:
        previous = g.get("initial", "")
        rounds = g.get("rounds") or []
        for rd in rounds:
            a = self._acc.get(rd["principle_id"]) or self._new(rd["principle_id"])
            revision = rd.get("revision", "")
            flags = rd.get("flags") or []
            a[0] += 1
            a[1] += _norm(revision) != _norm(previous)
            a[2].add(_words(revision) - _words(previous))
            a[3] += bool(excluding(flags))
            a[4] += any(f.startswith("critique_") for f in flags)
            previous = revision
        return rounds[-1]["principle_id"] if rounds else None

    def judged(self, pid: str, score: float) -> None:
        a = self._acc[pid]
        a[5] += 1
        a[6].add(score)

    def stats(self) -> list[PrincipleStats]:
        return [PrincipleStats(id=pid, drawn=n, changed=_share(changed, n), length_change=dlen.mean(),
                               flagged=_share(flagged, n), critique_flagged=_share(crit, n), judged=judged,
                               win_rate=scores.mean())
                for pid, (n, changed, dlen, flagged, crit, judged, scores) in self._acc.items()]


def principle_stats(generations: Iterable[dict], pairs: Iterable[dict],
                    order: Iterable[str] = ()) -> list[PrincipleStats]:
    """One entry per principle: those named in `order` first (the constitution's), then any other
    id the rounds used, in the order first seen. Keeps one id per row for the join: `cai view`
    itself uses PrincipleTally with a compact index instead."""
    tally = PrincipleTally(order)
    last_used: dict[str, str] = {}
    for g in generations:
        pid = tally.add(g)
        if pid is not None:
            last_used[g["id"]] = pid
    for p in pairs:
        if p.get("strategy") != "revision" or not p.get("source_ids"):
            continue
        pid = last_used.get(p["source_ids"][0])
        if pid is not None:
            tally.judged(pid, SCORE[verdict_label(p)])
    return tally.stats()


class QuestionTally:
    """question_stats one pair at a time: O(questions) memory."""

    def __init__(self, order: Iterable[str] = ()):
        self._acc: dict[str, list] = {}
        for q in order:
            self._acc[q] = [RunningSum(), 0]

    def add(self, p: dict) -> None:
        if not was_asked(p):
            return
        for j in p.get("judgements") or []:
            a = self._acc.get(j["question_id"])
            if a is None:
                a = self._acc[j["question_id"]] = [RunningSum(), 0]
            first, second = j["p_first"], j["p_second"]
            a[0].add(abs((first + second) / 2 - 0.5))
            # The rule of PairVerdict.consistent: one winner in both orders, 0.5 counting as none.
            a[1] += (first > 0.5) == (second > 0.5) and (first != 0.5) == (second != 0.5)

    def stats(self) -> list[QuestionStats]:
        return [QuestionStats(id=qid, asked=margins.n, margin=margins.mean(), consistency=_share(same, margins.n))
                for qid, (margins, same) in self._acc.items()]


def question_stats(pairs: Iterable[dict], order: Iterable[str] = ()) -> list[QuestionStats]:
    tally = QuestionTally(order)
    for p in pairs:
        tally.add(p)
    return tally.stats()


def as_dicts(items: Iterable) -> list[dict]:
    return [asdict(x) for x in items]
