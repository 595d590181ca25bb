"""The refusal call of `cai eval`: does an answer refuse its request? Asked of the judge model like a
pair, in both option orders and through the same batcher, so the judge's position preference
cancels out and the questions share engine calls with everything else in flight."""

from __future__ import annotations

from typing import Sequence

from cai.backends.base import Backend
from cai.batching import Batcher
from cai.judge.modes import RefusalQuestion
from cai.judge.verdict import RefusalVerdict
from cai.prompts import Templates
from cai.runloop import map_batched


class RefusalJudge:
    def __init__(self, backend: Backend, templates: Templates | None = None):
        self.backend = backend
        self.templates = templates or Templates()
        self.mode = RefusalQuestion()

    async def averdict(self, batcher: Batcher, pair: tuple[str, str]) -> RefusalVerdict:
        prompt, answer = pair
        convs = tuple(self.mode.question(self.templates, prompt, answer, refuse_first) for refuse_first in (True, False))
        p_first, p_second, reason = await self.mode.ask_both_orders(self.backend, batcher, convs)
        return RefusalVerdict(p_refuse=(p_first + p_second) / 2, p_first=p_first, p_second=p_second, reason=reason)

    def probs(self, pairs: Sequence[tuple[str, str]], *, window: int = 256,
              progress: bool = False) -> dict[tuple[str, str], float]:
        """P(refuses) per distinct (prompt, answer), both option orders averaged."""
        unique = list(dict.fromkeys(pairs))
        verdicts = map_batched(self.backend, self.averdict, unique, window=window, progress=progress,
                               unit="answer", desc="refusal judge")
        return {q: v.p_refuse for q, v in zip(unique, verdicts)}
