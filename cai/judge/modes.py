"""Judge modes: each owns its template, its id and how a probability is read from the judge.

A mode turns one judge conversation into P("A") over the options "A" and "B", read from the
option letters' log-probabilities after a fixed assistant prefix, never from parsed text. The pairwise
modes render `judge*.j2` with two responses; the refusal question renders `refusal.j2` with one
answer. The caller asks each question in both orders (see verdict.py).

Adding a pairwise mode: a class here and a line in PAIRWISE_MODES (and its template in prompts/ if it
asks in other words). `cai judge --mode`, `cai eval --judge-mode` and the recipes' `mode` take its id
from there; the id is recorded in every row (`mode`) and is part of the pair ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cai.backends.base import Conversation, SamplingParams, normalise_pair, overflow
from cai.batching import Batcher
from cai.errors import UsageError
from cai.prompts import Templates

OPTIONS = ("A", "B")
ANSWER_PREFIX = "The better response is ("
COT_SUFFIX = "\nSo, the better response is ("
COT_CLAMP = (0.4, 0.6)
REFUSAL_PREFIX = "The answer is ("


@dataclass(frozen=True)
class Mode:
    """How one question is scored. `prefix`: the assistant text the option letter follows."""

    id: ClassVar[str]
    template: ClassVar[str]
    prefix: ClassVar[str | None]

    def reply_tokens(self) -> int:
        """Tokens the judge writes past the question: the option letter, plus any rationale."""
        return 1

    def rationale_tokens(self) -> int | None:
        """Length limit of a written rationale, None when the mode writes none (part of the
        calibration's settings key: another limit is another judge)."""
        return None

    def too_long(self, backend, conv: Conversation) -> tuple[int, int] | None:
        """(tokens, context window) when the question does not fit the judge, else None."""
        return overflow(backend, conv, self.reply_tokens(), self.prefix)

    async def p_option_a(self, batcher: Batcher, conv: Conversation) -> float:
        lp = await batcher.choice_logprobs(conv, self.prefix, OPTIONS)
        return normalise_pair(lp, *OPTIONS)

    async def ask_both_orders(self, backend, batcher: Batcher, convs: tuple[Conversation, Conversation]):
        """A question of one answer asked with its options in both orders: (p_first, p_second), each
        P(the first order's option A), or (0.5, 0.5, why) unasked when either does not fit the judge,
        as a judge with no opinion would answer."""
        import asyncio

        from cai.judge.verdict import both_orders

        for conv in convs:
            over = self.too_long(backend, conv)
            if over:
                return 0.5, 0.5, f"too long for the judge: {over[0]} tokens, its context is {over[1]}"
        shown_first, shown_second = await asyncio.gather(*(self.p_option_a(batcher, c) for c in convs))
        return (*both_orders(shown_first, shown_second), None)


@dataclass(frozen=True)
class PairwiseMode(Mode):
    """A comparison question about two responses, (A) and (B)."""

    # The largest |P(A) - 0.5| the mode can give: a tie threshold at or above it makes every pair a tie.
    max_margin: ClassVar[float] = 0.5

    def question(self, templates: Templates, prompt: Conversation, question: str, first: str,
                 second: str) -> Conversation:
        text = templates.render(self.template, conversation=prompt, question=question, response_a=first,
                                response_b=second)
        return [{"role": "user", "content": text}]

    @classmethod
    def from_config(cls, cfg) -> PairwiseMode:
        return cls()


@dataclass(frozen=True)
class LogProbs(PairwiseMode):
    """The answer letter straight after the question: soft labels, one engine call per order."""

    id: ClassVar[str] = "logprobs"
    template: ClassVar[str] = "judge.j2"
    prefix: ClassVar[str | None] = ANSWER_PREFIX


@dataclass(frozen=True)
class CotClamped(PairwiseMode):
    """A short rationale first (greedy), then the letter after it, clamped to [0.4, 0.6]: the
    Constitutional AI paper found CoT probabilities overconfident, and clamping them worked best."""

    id: ClassVar[str] = "cot-clamped"
    template: ClassVar[str] = "judge_cot.j2"
    prefix: ClassVar[str | None] = None  # the letter follows the rationale, known only once written
    max_margin: ClassVar[float] = max(COT_CLAMP[1] - 0.5, 0.5 - COT_CLAMP[0])
    max_tokens: int = 96
    seed: int = 0

    @classmethod
    def from_config(cls, cfg) -> CotClamped:
        return cls(max_tokens=cfg.cot_max_tokens, seed=cfg.seed)

    def reply_tokens(self) -> int:
        return self.max_tokens + 1

    def rationale_tokens(self) -> int | None:
        return self.max_tokens

    async def p_option_a(self, batcher: Batcher, conv: Conversation) -> float:
        params = SamplingParams(max_tokens=self.max_tokens, temperature=0.0, seed=self.seed)
        rationale = (await batcher.chat(conv, params))[0].text.strip()
        lp = await batcher.choice_logprobs(conv, rationale + COT_SUFFIX, OPTIONS)
        lo, hi = COT_CLAMP
        return min(hi, max(lo, normalise_pair(lp, *OPTIONS)))


@dataclass(frozen=True)
class RefusalQuestion(Mode):
    """`cai eval`'s question of one answer: does it refuse the request? (A) is "refuses" in the
    first order, "does what was asked" in the second."""

    id: ClassVar[str] = "refusal"
    template: ClassVar[str] = "refusal.j2"
    prefix: ClassVar[str | None] = REFUSAL_PREFIX

    def question(self, templates: Templates, prompt: str, answer: str, refuse_first: bool) -> Conversation:
        text = templates.render(self.template, prompt=prompt, answer=answer, refuse_first=refuse_first)
        return [{"role": "user", "content": text}]


PAIRWISE_MODES: dict[str, type[PairwiseMode]] = {m.id: m for m in (LogProbs, CotClamped)}
DEFAULT_MODE = LogProbs.id


def check_mode(mode_id: str) -> str:
    if mode_id not in PAIRWISE_MODES:
        raise UsageError(f"unknown judge mode {mode_id!r}: choose one of {', '.join(PAIRWISE_MODES)}")
    return mode_id


def pairwise_mode(cfg) -> PairwiseMode:
    """The mode a judge config names (`mode`), built with the config's settings."""
    return PAIRWISE_MODES[check_mode(cfg.mode)].from_config(cfg)
