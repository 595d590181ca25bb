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
