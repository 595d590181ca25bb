"""The one definition of each figure cai reports about a judge, and of the defaults behind them.

Calibration, `cai judge`'s summary and `cai eval` all report position consistency, the share won by
the longer answer and the tie threshold; computed in three places they drifted apart (a judge that
never answered read as perfectly consistent in one of them). Each is defined here once, from plain
numbers, so every caller counts the same way and tests can check a figure by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from cai.judge.verdict import same_winner

# |p - 0.5| below this is a tie: a judge this close to a coin flip has not preferred anything.
THRESHOLD = 0.05
# RLAIF's AI labellers agreed with people 69-72% on helpfulness and harmlessness (Lee et al. 2023);
# 0.6 sits between that and a coin flip: below it the labels are closer to chance than to a judge.
MIN_AGREEMENT = 0.6


def fmt(x) -> str:
    """A figure as printed: three decimals, or n/a when it could not be measured."""
    return f"{x:.3f}" if isinstance(x, (int, float)) and not isinstance(x, bool) else "n/a"


def ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole else None


@dataclass
class PositionTally:
    """Position consistency over verdicts read in both orders.

    Only pairs the judge was asked about count (identical answers and pairs too long for it are
    ties without asking). Of those, consistency is the share with the same winner in both orders
    among the pairs decided in BOTH orders: a judge that answers 0.5 every time has no position
    preference to measure, and must not read as consistent. The share of asked pairs undecided in
    at least one order is its own figure (`undecided_orders`)."""

    threshold: float = THRESHOLD
    asked: int = 0
    decided: int = 0
    consistent: int = 0

    def add(self, p_first: float, p_second: float, *, asked: bool = True) -> bool | None:
        """Counts one verdict; returns whether it was consistent (None: not decided in both orders)."""
        if not asked:
            return None
        self.asked += 1
        same = same_winner(p_first, p_second, self.threshold)
        if same is not None:
            self.decided += 1
            self.consistent += same
        return same

    @property
    def position_consistency(self) -> float | None:
        return ratio(self.consistent, self.decided)

    @property
    def undecided_orders(self) -> float | None:
        return ratio(self.asked - self.decided, self.asked)


@dataclass
class BiasTally:
    """The judge's length and position preference over decided pairs, counted one pair at a time (a
    run's preferences are streamed, never held)."""

    decided: int = 0
    unequal: int = 0
    longer: int = 0
    first: float = 0.0

    def add(self, win: str, lose: str, p_first: float | None = None, p_second: float | None = None) -> None:
        """One decided pair: the winner's and the loser's text, and P(the winner wins) when shown first
        and second (leave them out where only the length counts)."""
        self.decided += 1
        lw, ll = len(win.strip()), len(lose.strip())
        if lw != ll:
            self.unequal += 1
            self.longer += lw > ll
        if p_first is not None and p_second is not None:
            # Order 1 shows the winner first: it wins when p_first > 0.5. Order 2 shows the other
            # answer first, which wins when p_second < 0.5.
            self.first += ((p_first > 0.5) + (p_second < 0.5)) / 2

    @property
    def longer_wins(self) -> float | None:
        """Share of decided pairs won by the longer answer, equal lengths left out; 0.5 is no preference."""
        return ratio(self.longer, self.unequal)

    @property
    def first_wins(self) -> float | None:
        """Share of single-order verdicts won by the answer shown first; 0.5 is no preference."""
        return ratio(self.first, self.decided)


def longer_wins(decided_pairs: Iterable[tuple[str, str]]) -> float | None:
    """BiasTally.longer_wins of (winner's text, loser's text) pairs."""
    tally = BiasTally()
    for win, lose in decided_pairs:
        tally.add(win, lose)
    return tally.longer_wins


def wilson(k: float, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """The 95% Wilson score interval of a share k/n (sound at small n and near 0 or 1)."""
    if not n:
        return None
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)


# Buckets of a decided verdict's confidence |p - 0.5|: the lowest holds what a threshold under 0.05
# lets through; the top one is wide because a well-used judge has few verdicts past 0.8.
CONFIDENCE_EDGES = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)
# A bucket this small says nothing about a trend: left out of the informativeness check.
MIN_BUCKET = 5


def confidence_figures(verdicts: Iterable[tuple[float, str | None, str]]) -> dict:
    """Whether a judge's confidence is worth anything, from (p_a, winner or "tie", label) per pair.

    by_confidence: the decided pairs in buckets of |p - 0.5|, each with n, agreement and its 95%
    Wilson interval. ece: expected calibration error, |agreement - mean confidence of the chosen
    side (0.5 + |p - 0.5|)| per bucket, weighted by its size. brier: mean (p_a - [label is a])^2 over
    every pair, ties included. confidence_informative: True when some bucket's interval lies wholly
    above a less confident bucket's (agreement rises with confidence by more than the buckets'
    noise allows), False when buckets of at least MIN_BUCKET pairs exist and none does, None when
    fewer than two such buckets exist (not measurable)."""
    buckets = [{"lo": lo, "hi": hi, "n": 0, "right": 0, "conf": 0.0}
               for lo, hi in zip(CONFIDENCE_EDGES, CONFIDENCE_EDGES[1:])]
    brier = 0.0
    n = 0
    for p_a, winner, label in verdicts:
        n += 1
        brier += (p_a - float(label == "a")) ** 2
        if winner not in ("a", "b"):
            continue
        c = abs(p_a - 0.5)
        b = next((b for b in buckets if c < b["hi"]), buckets[-1])
        b["n"] += 1
        b["right"] += winner == label
        b["conf"] += 0.5 + c
    decided = sum(b["n"] for b in buckets)
    table = {f"{b['lo']:g}-{b['hi']:g}": {"n": b["n"], "agreement": ratio(b["right"], b["n"]),
                                           "interval": wilson(b["right"], b["n"])}
             for b in buckets if b["n"]}
    ece = (round(sum(abs(b["right"] / b["n"] - b["conf"] / b["n"]) * b["n"] for b in buckets if b["n"]) / decided, 4)
           if decided else None)
    solid = [f for f in table.values() if f["n"] >= MIN_BUCKET]
    informative = (None if len(solid) < 2 else
                   any(hi["interval"][0] > lo["interval"][1] for i, lo in enumerate(solid) for hi in solid[i + 1:]))
    return {"by_confidence": table, "ece": ece, "brier": round(brier / n, 4) if n else None,
            "confidence_informative": informative}
