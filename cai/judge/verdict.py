"""What a judge's question comes to: a verdict read in both orders, and the one tie rule.

Every question is asked twice, with the options swapped, because a small judge prefers a position
whatever the options say. `p_first` is P(the first-named thing wins) when it is shown as (A),
`p_second` the same when it is shown as (B); their mean cancels the position preference.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from cai.records import Judgement

Outcome = Literal["a", "b", "tie"]


def both_orders(p_a_shown_first: float, p_a_shown_second: float) -> tuple[float, float]:
    """(p_first, p_second) from P("A") read in each order: in the second order the first-named
    thing is option (B), so it wins with 1 - P("A")."""
    return p_a_shown_first, 1.0 - p_a_shown_second


def is_tie(p_a: float, threshold: float, *, unasked: bool = False) -> bool:
    """The tie rule, for every figure cai writes: a pair the judge was not asked about (identical
    answers, too long for its context), exactly 0.5, or within `threshold` of 0.5."""
    return unasked or p_a == 0.5 or abs(p_a - 0.5) < threshold


def same_winner(p_first: float, p_second: float, threshold: float) -> bool | None:
    """Whether both orders name the same winner; None when either order is a tie by the tie rule
    (a judge with no opinion in an order shows no position preference there, nor consistency)."""
    if is_tie(p_first, threshold) or is_tie(p_second, threshold):
        return None
    return (p_first > 0.5) == (p_second > 0.5)


def outcome(p_a: float, identical: bool, threshold: float) -> Outcome:
    """"a", "b" or "tie" for P(a wins)."""
    if is_tie(p_a, threshold, unasked=identical):
        return "tie"
    return "a" if p_a > 0.5 else "b"


class PairVerdict(BaseModel):
    p_a: float = Field(description="P(a is better), both orders and the ensemble averaged.")
    p_first: float = Field(description="P(a wins) with a shown as (A), averaged over the ensemble.")
    p_second: float = Field(description="P(a wins) with a shown as (B), averaged over the ensemble.")
    judgements: list[Judgement]
    identical: bool = False
    reason: str | None = Field(None, description="Why the judge was not asked (a tie): the pair does not fit its context.")

    @classmethod
    def unasked(cls, question_ids: list[str], *, identical: bool = False, reason: str | None = None) -> PairVerdict:
        """A tie without asking the judge: every question at 0.5."""
        js = [Judgement(question_id=q, p_first=0.5, p_second=0.5) for q in question_ids]
        return cls(p_a=0.5, p_first=0.5, p_second=0.5, judgements=js, identical=identical, reason=reason)

    @classmethod
    def averaged(cls, judgements: list[Judgement]) -> PairVerdict:
        p_first = sum(j.p_first for j in judgements) / len(judgements)
        p_second = sum(j.p_second for j in judgements) / len(judgements)
        return cls(p_a=(p_first + p_second) / 2, p_first=p_first, p_second=p_second, judgements=judgements)

    @property
    def question_ids(self) -> list[str]:
        return [j.question_id for j in self.judgements]

    @property
    def asked(self) -> bool:
        """Whether the judge saw the pair at all (identical or too-long pairs are ties unasked)."""
        return not self.identical and self.reason is None

    def same_winner(self, threshold: float) -> bool | None:
        """Both orders name the same winner (None: unasked, or a tie in an order)."""
        return same_winner(self.p_first, self.p_second, threshold) if self.asked else None

    def is_tie(self, threshold: float) -> bool:
        return is_tie(self.p_a, threshold, unasked=not self.asked)

    def winner(self, threshold: float) -> Outcome:
        """What `cai judge --pairs` writes as `winner`, and what calibration scores."""
        return outcome(self.p_a, not self.asked, threshold)

    def swapped(self) -> PairVerdict:
        """The same verdict about (b, a)."""
        judgements = [j.model_copy(update={"p_first": 1 - j.p_second, "p_second": 1 - j.p_first})
                       for j in self.judgements]
        return self.model_copy(update={"p_a": 1 - self.p_a, "p_first": 1 - self.p_second,
                                       "p_second": 1 - self.p_first, "judgements": judgements})


class RefusalVerdict(BaseModel):
    """Whether one answer refuses its request, read like a pair: `p_first` with "refuses" as (A)."""

    p_refuse: float
    p_first: float
    p_second: float
    reason: str | None = Field(None, description="Why the judge was not asked (undecided): too long for its context.")
