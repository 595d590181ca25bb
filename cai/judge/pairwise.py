"""The pairwise AI judge: soft labels from option log-probabilities, in both orders.

For each comparison question the judge sees the conversation and two responses as options (A) and
(B); its mode (modes.py) reads P("A"). Each question is asked with the responses in both orders
and the two probabilities of "a wins" are averaged, which cancels position bias (small judges pick
the second option most of the time whatever it says). With `ensemble=k`, k questions drawn from
the constitution are averaged.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING, Iterable, Sequence

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cai.backends.base import Backend, Conversation
from cai.batching import Batcher
from cai.constitution import Constitution
from cai.errors import UsageError
from cai.judge.figures import THRESHOLD
from cai.judge.modes import COT_CLAMP, DEFAULT_MODE, PAIRWISE_MODES, CotClamped, PairwiseMode, check_mode, pairwise_mode
from cai.judge.verdict import PairVerdict, both_orders
from cai.prompts import Templates
from cai.records import Judgement
from cai.runloop import map_batched
from cai.window import PROMPT_SAMPLE, RecordSize, Sizing, Window, choose_window

if TYPE_CHECKING:
    from cai.constitution import Comparison


class JudgeConfig(BaseModel):
    """What changes a judge's verdicts besides its model and constitution."""

    model_config = ConfigDict(extra="forbid")
    ensemble: int = Field(1, ge=1, description="Comparison questions drawn per pair; probabilities averaged.")
    cot: bool = Field(False, description=f"Judge writes a rationale first; probabilities clamped to "
                                         f"[{COT_CLAMP[0]}, {COT_CLAMP[1]}] (the mode cot-clamped).")
    mode: str | None = Field(None, description="How the judge is asked (see cai/judge/modes.py); "
                                               "default: cot-clamped with cot, else logprobs.")
    threshold: float = Field(THRESHOLD, ge=0.0, lt=0.5, description="|p - 0.5| below this is a tie.")
    cot_max_tokens: int = Field(96, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _one_mode(self):
        # `cot` predates modes and stays a shorthand for one of them; both are kept in step so
        # either can be read.
        if self.mode is None:
            self.mode = CotClamped.id if self.cot else DEFAULT_MODE
        check_mode(self.mode)
        if self.cot and self.mode != CotClamped.id:
            raise UsageError(f"--cot is the judge mode {CotClamped.id}, not {self.mode}: give one of them")
        self.cot = self.mode == CotClamped.id
        margin = PAIRWISE_MODES[self.mode].max_margin
        if self.threshold >= margin - 1e-9:
            raise UsageError(
                f"--threshold {self.threshold:g} with judge mode {self.mode}: that mode's probabilities lie within "
                f"{margin:g} of 0.5, so no pair could get past the threshold and every pair would be a tie. "
                f"Give a --threshold below {margin:g}, or another --mode")
        return self


class PairInput(BaseModel):
    key: str = Field(description="Stable id of the pair: the comparison questions are drawn from it.")
    prompt: Conversation
    a: str
    b: str


class Judge:
    def __init__(self, backend: Backend, constitution: Constitution, cfg: JudgeConfig | None = None,
                 templates: Templates | None = None):
        self.backend = backend
        self.constitution = constitution
        self.cfg = cfg or JudgeConfig()
        self.mode: PairwiseMode = pairwise_mode(self.cfg)
        self.templates = templates or Templates()
        if not constitution.comparisons:
            raise UsageError(f"constitution {constitution.name!r} has no comparisons for the judge")

    def asking(self, comparison: Comparison) -> Judge:
        """This judge (its backend, mode, tie threshold and templates) asking one question alone of
        every pair: what `cai constitution audit` measures each comparison by."""
        only = self.constitution.model_copy(update={"comparisons": [comparison.model_copy(update={"weight": 1.0})]})
        return Judge(self.backend, only, self.cfg.model_copy(update={"ensemble": 1}), self.templates)

    @property
    def threshold(self) -> float:
        """The judge's tie threshold: the one source of it for every figure and file."""
        return self.cfg.threshold

    def describe(self) -> dict:
        return {"judge_model": getattr(self.backend, "model", "?"), "backend": getattr(self.backend, "name", "?"),
                "mode": self.mode.id, "orders": 2,
                "ensemble": self.cfg.ensemble, "threshold": self.cfg.threshold,
                # Part of every pair id: pairs judged through an edited template are other pairs.
                "templates": self.templates.fingerprint((self.mode.template,))}

    def _question(self, item: PairInput, q: Comparison, swap: bool) -> Conversation:
        first, second = (item.b, item.a) if swap else (item.a, item.b)
        return self.mode.question(self.templates, item.prompt, q.question, first, second)

    async def averdict(self, batcher: Batcher, item: PairInput) -> PairVerdict:
        questions = self.constitution.draw_comparisons(item.key, self.cfg.ensemble)
        ids = [q.id for q in questions]
        if item.a.strip() == item.b.strip():
            return PairVerdict.unasked(ids, identical=True)
        # Both orders hold the same texts: the longer of the two question renderings decides.
        for q in questions:
            for swap in (False, True):
                over = self.mode.too_long(self.backend, self._question(item, q, swap))
                if over:
                    return PairVerdict.unasked(
                        ids, reason=f"too long for the judge: {over[0]} tokens, its context is {over[1]}")

        async def one(q: Comparison) -> Judgement:
            shown_first, shown_second = await asyncio.gather(
                self.mode.p_option_a(batcher, self._question(item, q, False)),
                self.mode.p_option_a(batcher, self._question(item, q, True)))
            p_first, p_second = both_orders(shown_first, shown_second)
            return Judgement(question_id=q.id, p_first=p_first, p_second=p_second)

        return PairVerdict.averaged(list(await asyncio.gather(*(one(q) for q in questions))))

    def question_tokens(self, item: PairInput) -> int:
        """KV tokens one of `item`'s questions holds at its largest: the constitution's longest
        comparison question about both responses, plus what the judge writes after it."""
        longest = max(self.constitution.comparisons, key=lambda c: len(c.question))
        conv = self._question(item, longest, False)
        return self.backend.count_tokens(conv, self.mode.prefix) + self.mode.reply_tokens()

    def window(self, setting: int | str, items: Iterable[tuple[PairInput, int]]) -> Window:
        """Pairs in flight for `setting` (a number, or auto: cai/window.py). `items`: the pairs to
        judge (a sample is read), each with the questions' pairs its record asks (1, or every pair
        of a prompt's samples); every pair is asked in both orders, `ensemble` questions each."""
        def record() -> RecordSize:
            tokens, pairs = 0, 1
            for item, n in itertools.islice(items, PROMPT_SAMPLE):
                tokens, pairs = max(tokens, self.question_tokens(item)), max(pairs, n)
            return RecordSize(tokens or 1, pairs * 2 * self.cfg.ensemble)

        return choose_window(setting, [Sizing(self.backend, record)], unit="pair")

    def compare(self, items: Sequence[PairInput], *, window: int = 256) -> list[PairVerdict]:
        """Judge a list of pairs in batched engine calls; results in input order."""
        return map_batched(self.backend, self.averdict, items, window=window)
