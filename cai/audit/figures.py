"""What each comparison question does on labelled pairs, alone and beside the others.

Pure functions of plain numbers (P(a wins) per pair and question, the labels, the tie threshold),
so tests compute every figure by hand. A verdict is read with the judge's one tie rule
(cai/judge/verdict.py): a question the judge was not asked about a pair, or within the threshold
of 0.5, is a tie, and a tie counts half in agreement, as calibration counts it.
"""

from __future__ import annotations

import math
from typing import Sequence

from pydantic import BaseModel, Field

from cai.judge.figures import ratio, wilson
from cai.judge.verdict import outcome

# A wrong verdict this far from 0.5 (P >= 0.75 for the wrong answer) is listed by pair id: the
# question points firmly the other way from the person who labelled the pair.
CONFIDENT = 0.25
# Two questions whose verdicts correlate this much are one question written twice.
DUPLICATE_R = 0.9
# The trade-off pairs listed in the report.
TRADE_OFFS = 10


class Column(BaseModel):
    """One question's verdicts on every pair: P(a wins), and whether the judge was asked."""

    id: str
    question: str
    weight: float = 1.0
    p_a: list[float]
    asked: list[bool]


class PrincipleFigures(BaseModel):
    id: str
    question: str
    weight: float
    n: int
    agreement: float | None = Field(description="Share of pairs whose verdict matches the label; ties count half.")
    interval: tuple[float, float] | None = Field(description="95% Wilson interval of agreement.")
    decided: int
    decided_share: float | None = Field(description="Share of pairs the question decides (not a tie).")
    decided_agreement: float | None = Field(description="Agreement on the pairs it decides.")
    confidently_wrong: list[str] = Field(description=f"Pair ids decided against the label with |p - 0.5| >= {CONFIDENT}.")


def marks(p_a: Sequence[float], asked: Sequence[bool], labels: Sequence[str], threshold: float) -> list[float]:
    """1 right, 0 wrong, 0.5 a tie, per pair."""
    out = []
    for p, was_asked, label in zip(p_a, asked, labels):
        w = outcome(p, not was_asked, threshold)
        out.append(0.5 if w == "tie" else float(w == label))
    return out


def principle_figures(col: Column, ids: Sequence[str], labels: Sequence[str], threshold: float) -> PrincipleFigures:
    n = len(ids)
    total = sum(marks(col.p_a, col.asked, labels, threshold))
    decided = right = 0
    wrong = []
    for ident, p, asked, label in zip(ids, col.p_a, col.asked, labels):
        w = outcome(p, not asked, threshold)
        if w == "tie":
            continue
        decided += 1
        right += w == label
        if w != label and abs(p - 0.5) >= CONFIDENT:
            wrong.append(ident)
    return PrincipleFigures(
        id=col.id, question=col.question, weight=col.weight, n=n, agreement=ratio(total, n),
        interval=wilson(total, n), decided=decided, decided_share=ratio(decided, n),
        decided_agreement=ratio(right, decided), confidently_wrong=wrong)


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson's r; None when either side does not vary (a question that always says 0.5)."""
    n = len(x)
    if n < 2:
        return None
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    if sxx <= 1e-15 or syy <= 1e-15:
        return None
    return round(sxy / math.sqrt(sxx * syy), 4)


def same_verdicts(a: Column, b: Column, threshold: float) -> float | None:
    """Of the pairs both questions decide, the share they decide the same way."""
    both = [(outcome(p, not x, threshold), outcome(q, not y, threshold))
            for p, x, q, y in zip(a.p_a, a.asked, b.p_a, b.asked)]
    both = [(u, v) for u, v in both if u != "tie" and v != "tie"]
    return ratio(sum(u == v for u, v in both), len(both))


class PairOfPrinciples(BaseModel):
    a: str
    b: str
    r: float | None = Field(description="Pearson correlation of their P(a wins) over the pairs.")
    same: float | None = Field(description="Share of the pairs both decide that they decide alike.")
    duplicate: bool = Field(description=f"r >= {DUPLICATE_R}: one principle written twice.")


def correlations(cols: Sequence[Column], threshold: float) -> list[PairOfPrinciples]:
    out = []
    for j in range(len(cols)):
        for i in range(j):
            r = pearson(cols[i].p_a, cols[j].p_a)
            out.append(PairOfPrinciples(a=cols[i].id, b=cols[j].id, r=r, same=same_verdicts(cols[i], cols[j], threshold),
                                        duplicate=r is not None and r >= DUPLICATE_R))
    return out


class TradeOff(BaseModel):
    """A pair two questions decide opposite ways, as far apart as any two questions on it."""

    id: str
    for_a: str = Field(description="The question most sure that a is better.")
    p_for_a: float
    for_b: str = Field(description="The question most sure that b is better.")
    p_for_b: float
    spread: float
    label: str


def trade_offs(cols: Sequence[Column], ids: Sequence[str], labels: Sequence[str], threshold: float,
               limit: int = TRADE_OFFS) -> list[TradeOff]:
    """The pairs on which the questions disagree most: the highest P(a) against the lowest, kept
    only where those two decide opposite ways; largest spread first, then by id."""
    found = []
    for i, (ident, label) in enumerate(zip(ids, labels)):
        asked = [c for c in cols if c.asked[i]]
        if len(asked) < 2:
            continue
        hi = max(asked, key=lambda c: c.p_a[i])
        lo = min(asked, key=lambda c: c.p_a[i])
        if outcome(hi.p_a[i], False, threshold) == "a" and outcome(lo.p_a[i], False, threshold) == "b":
            found.append(TradeOff(id=ident, for_a=hi.id, p_for_a=round(hi.p_a[i], 4), for_b=lo.id,
                                  p_for_b=round(lo.p_a[i], 4), spread=round(hi.p_a[i] - lo.p_a[i], 4), label=label))
    found.sort(key=lambda t: (-t.spread, t.id))
    return found[:limit]
