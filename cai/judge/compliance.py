"""Per-principle compliance (`cai eval --compliance`): does an answer follow one principle?

A question of one answer, like the refusal call: asked of the judge model in both option orders
through the same batcher, read from the option letters' probabilities. The principle is the
constitution's critique request for it (what a reviewer looks for when the principle is broken).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

from pydantic import BaseModel

from cai.backends.base import Backend, Conversation
from cai.batching import Batcher
from cai.judge.figures import THRESHOLD
from cai.judge.modes import Mode
from cai.prompts import Templates
from cai.runloop import map_batched

COMPLIANCE_PREFIX = "The answer is ("


@dataclass(frozen=True)
class ComplianceQuestion(Mode):
    """(A) is "follows the principle" in the first order, "breaks it" in the second."""

    id: ClassVar[str] = "compliance"
    template: ClassVar[str] = "compliance.j2"
    prefix: ClassVar[str | None] = COMPLIANCE_PREFIX

    def question(self, templates: Templates, prompt: str, answer: str, principle: str,
                 follows_first: bool) -> Conversation:
        text = templates.render(self.template, prompt=prompt, answer=answer, principle=principle,
                                follows_first=follows_first)
        return [{"role": "user", "content": text}]


class ComplianceAsk(BaseModel):
    principle_id: str
    principle: str  # its text, as the judge reads it
    prompt: str
    answer: str


class ComplianceVerdict(BaseModel):
    p_follows: float
    p_first: float  # with "follows" as (A)
    p_second: float
    reason: str | None = None  # why the judge was not asked (undecided)


class ComplianceJudge:
    def __init__(self, backend: Backend, templates: Templates | None = None):
        self.backend = backend
        self.templates = templates or Templates()
        self.mode = ComplianceQuestion()

    async def averdict(self, batcher: Batcher, ask: ComplianceAsk) -> ComplianceVerdict:
        convs = tuple(self.mode.question(self.templates, ask.prompt, ask.answer, ask.principle, first)
                      for first in (True, False))
        p_first, p_second, reason = await self.mode.ask_both_orders(self.backend, batcher, convs)
        return ComplianceVerdict(p_follows=(p_first + p_second) / 2, p_first=p_first, p_second=p_second, reason=reason)

    def verdicts(self, asks: Sequence[ComplianceAsk], *, window: int = 256,
                 progress: bool = False) -> list[ComplianceVerdict]:
        return map_batched(self.backend, self.averdict, list(asks), window=window, progress=progress,
                           unit="question", desc="compliance judge")


def compliance_figures(asks: Sequence[ComplianceAsk], sides: Sequence[str], verdicts: Sequence[ComplianceVerdict],
                       *, margin: float = THRESHOLD) -> dict[str, dict]:
    """Per principle id: for each side the share of its answers judged to follow it (P > 0.5), the
    mean probability and how many calls were undecided (|P - 0.5| < margin); `n` answers per side."""
    out: dict[str, dict] = {}
    for ask, side, v in zip(asks, sides, verdicts):
        entry = out.setdefault(ask.principle_id, {"_p": {"A": [], "B": []}})
        entry["_p"][side].append(v.p_follows)
    for pid, entry in out.items():
        ps = entry.pop("_p")
        for side in ("A", "B"):
            vals = ps[side]
            key = side.lower()
            entry[f"rate_{key}"] = sum(p > 0.5 for p in vals) / len(vals) if vals else None
            entry[f"mean_p_{key}"] = sum(vals) / len(vals) if vals else None
            entry[f"undecided_{key}"] = sum(abs(p - 0.5) < margin for p in vals) / len(vals) if vals else None
        entry["n"] = max(len(ps["A"]), len(ps["B"]))
    return out
