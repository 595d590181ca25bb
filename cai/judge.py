"""The pairwise AI judge: soft labels from option log-probabilities, in both orders.

For each comparison question the judge sees the conversation and two responses as options (A) and
(B); the label is the probability of the letter "A" against "B" as the next token after a fixed
assistant prefix, never a parsed string. Each question is asked with the responses in both orders
and the two probabilities of "a wins" are averaged, which cancels position bias (small judges pick
the second option most of the time whatever it says). With `ensemble=k`, k questions are averaged.
With `cot`, the judge writes a short rationale first and the probabilities read after it are
clamped to [0.4, 0.6], as the Constitutional AI paper found works best for CoT labels.
"""

from __future__ import annotations

import asyncio
from typing import Sequence

from pydantic import BaseModel, ConfigDict, Field

from cai.backends.base import Backend, Conversation, SamplingParams, normalise_pair, overflow
from cai.batching import Batcher, run_interruptible
from cai.constitution import Constitution
from cai.prompts import Templates
from cai.records import Judgement

ANSWER_PREFIX = "The better response is ("
COT_SUFFIX = "\nSo, the better response is ("
OPTIONS = ("A", "B")
COT_CLAMP = (0.4, 0.6)


class JudgeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ensemble: int = Field(1, ge=1)
    cot: bool = False
    threshold: float = Field(0.0, ge=0.0, lt=0.5)
    cot_max_tokens: int = 96
    seed: int = 0


class PairInput(BaseModel):
    key: str = Field(description="Stable id of the pair: the comparison questions are drawn from it.")
    prompt: Conversation
    a: str
    b: str


class PairVerdict(BaseModel):
    p_a: float = Field(description="P(a is better), both orders and the ensemble averaged.")
    p_first: float = Field(description="P(a wins) with a shown as (A), averaged over the ensemble.")
    p_second: float = Field(description="P(a wins) with a shown as (B), averaged over the ensemble.")
    judgements: list[Judgement]
    identical: bool = False
    reason: str | None = Field(None, description="Why the judge was not asked (a tie): the pair does not fit its context.")

    @property
    def question_ids(self) -> list[str]:
        return [j.question_id for j in self.judgements]

    @property
    def consistent(self) -> bool:
        """Both orders name the same winner (0.5 exactly counts as no winner)."""
        return (self.p_first > 0.5) == (self.p_second > 0.5) and (self.p_first != 0.5) == (self.p_second != 0.5)

    def is_tie(self, threshold: float) -> bool:
        return self.identical or self.reason is not None or abs(self.p_a - 0.5) < threshold or self.p_a == 0.5


class Judge:
    def __init__(self, backend: Backend, constitution: Constitution, cfg: JudgeConfig | None = None,
                 templates: Templates | None = None):
        self.backend = backend
        self.constitution = constitution
        self.cfg = cfg or JudgeConfig()
        self.templates = templates or Templates()
        if not constitution.comparisons:
            from cai.errors import UsageError

            raise UsageError(f"constitution {constitution.name!r} has no comparisons for the judge")

    def describe(self) -> dict:
        return {"judge_model": getattr(self.backend, "model", "?"), "backend": getattr(self.backend, "name", "?"),
                "mode": "cot-clamped" if self.cfg.cot else "logprobs", "orders": 2,
                "ensemble": self.cfg.ensemble, "threshold": self.cfg.threshold,
                # Part of every pair id: pairs judged through an edited template are other pairs.
                "templates": self.templates.fingerprint(("judge_cot.j2" if self.cfg.cot else "judge.j2",))}

    def _question_conv(self, prompt: Conversation, question: str, first: str, second: str) -> Conversation:
        name = "judge_cot.j2" if self.cfg.cot else "judge.j2"
        text = self.templates.render(name, conversation=prompt, question=question, response_a=first, response_b=second)
        return [{"role": "user", "content": text}]

    async def _p_option_a(self, batcher: Batcher, conv: Conversation) -> float:
        """P("A") over {"A", "B"} for one judge conversation."""
        if not self.cfg.cot:
            lp = await batcher.choice_logprobs(conv, ANSWER_PREFIX, OPTIONS)
            return normalise_pair(lp, *OPTIONS)
        params = SamplingParams(max_tokens=self.cfg.cot_max_tokens, temperature=0.0, seed=self.cfg.seed)
        rationale = (await batcher.chat(conv, params))[0].text.strip()
        lp = await batcher.choice_logprobs(conv, rationale + COT_SUFFIX, OPTIONS)
        lo, hi = COT_CLAMP
        return min(hi, max(lo, normalise_pair(lp, *OPTIONS)))

    async def averdict(self, batcher: Batcher, item: PairInput) -> PairVerdict:
        questions = self.constitution.draw_comparisons(item.key, self.cfg.ensemble)
        if item.a.strip() == item.b.strip():
            js = [Judgement(question_id=q.id, p_first=0.5, p_second=0.5) for q in questions]
            return PairVerdict(p_a=0.5, p_first=0.5, p_second=0.5, judgements=js, identical=True)

        # Both orders hold the same texts: the longer of the two question renderings decides.
        reply = (self.cfg.cot_max_tokens if self.cfg.cot else 0) + 1
        for q in questions:
            for first, second in ((item.a, item.b), (item.b, item.a)):
                conv = self._question_conv(item.prompt, q.question, first, second)
                over = overflow(self.backend, conv, reply, None if self.cfg.cot else ANSWER_PREFIX)
                if over:
                    js = [Judgement(question_id=q.id, p_first=0.5, p_second=0.5) for q in questions]
                    return PairVerdict(p_a=0.5, p_first=0.5, p_second=0.5, judgements=js,
                                       reason=f"too long for the judge: {over[0]} tokens, its context is {over[1]}")

        async def one(q) -> Judgement:
            first, second = await asyncio.gather(
                self._p_option_a(batcher, self._question_conv(item.prompt, q.question, item.a, item.b)),
                self._p_option_a(batcher, self._question_conv(item.prompt, q.question, item.b, item.a)),
            )
            return Judgement(question_id=q.id, p_first=first, p_second=1.0 - second)

        js = list(await asyncio.gather(*(one(q) for q in questions)))
        p_first = sum(j.p_first for j in js) / len(js)
        p_second = sum(j.p_second for j in js) / len(js)
        return PairVerdict(p_a=(p_first + p_second) / 2, p_first=p_first, p_second=p_second, judgements=js)

    def compare(self, items: Sequence[PairInput], *, window: int = 256) -> list[PairVerdict]:
        """Judge a list of pairs in batched engine calls; results in input order."""
        batcher = Batcher(self.backend)
        out: list[PairVerdict | None] = [None] * len(items)

        def jobs():
            for i, item in enumerate(items):
                async def job(i=i, item=item):
                    return i, await self.averdict(batcher, item)
                yield job

        def done(res):
            out[res[0]] = res[1]

        run_interruptible(batcher.run(jobs(), window=window, on_done=done))
        return out  # type: ignore[return-value]
