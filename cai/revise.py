"""Critique → revision rounds (the Constitutional AI supervised stage).

Each round draws a principle (by weight, independently per record and round), asks for a critique
of the current answer and then, in the same conversation, for a revision; the revision is the
answer of the next round. Building the conversations and cleaning the replies are pure functions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from cai.backends.base import Completion, Conversation, SamplingParams, overflow
from cai.batching import Batcher
from cai.constitution import Constitution, Principle
from cai.prompts import Templates
from cai.quality import critique_flags, revision_flags
from cai.records import Round

# A first line that only announces the revision ("Sure, here is a revised response:"). Small models
# add one often; it would teach the fine-tuned model to talk about revising.
_CHATTER = re.compile(
    r"^\s*(?:(?:sure|certainly|okay|ok|of course|absolutely|alright|great)\b[\s,!.]*)?"
    r"(?:(?:here(?:'s| is| are)|below is|this is|i(?:'ve| have)\s+\w+)\b[^\n]{0,80}?)?"
    r"\b(?:revised|rewritten|updated|improved|new|edited|corrected|better)\b[^\n]{0,40}?"
    r"\b(?:response|answer|version|reply|text)\b[^\n]{0,30}?(?::|\.|!)?\s*$",
    re.IGNORECASE,
)
_LABEL = re.compile(r"^\s*(?:revised|rewritten|revision|updated)\s*(?:response|answer|version)?\s*:\s*", re.IGNORECASE)
_POLITE = re.compile(r"^\s*(?:sure|certainly|of course|absolutely)[,!.]\s*", re.IGNORECASE)


def clean_revision(text: str) -> tuple[str, bool]:
    """Strip chatter about revising from the start of a revision. Returns (text, was_cleaned)."""
    original = text
    text = _LABEL.sub("", text.strip(), count=1)
    lines = text.split("\n", 1)
    if len(lines) == 2 and _CHATTER.match(lines[0]):
        text = lines[1].strip()
    elif _CHATTER.match(text) and text.endswith(":"):  # an announcement with nothing after it
        text = ""
    if text != original.strip():
        text = _POLITE.sub("", text, count=1)
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'" and text.count(text[0]) == 2:
        text = text[1:-1].strip()
    return text, text != original.strip()


def few_shot_turns(constitution: Constitution, templates: Templates, k: int) -> Conversation:
    """The constitution's worked examples as earlier turns of the same conversation."""
    turns: Conversation = []
    for ex in constitution.few_shot[:k]:
        turns += [
            {"role": "user", "content": ex.prompt},
            {"role": "assistant", "content": ex.answer},
            {"role": "user", "content": templates.render("critique.j2", principle=None)},
            {"role": "assistant", "content": ex.critique},
            {"role": "user", "content": templates.render("revision.j2", principle=None)},
            {"role": "assistant", "content": ex.revision},
        ]
    return turns


def critique_conversation(prefix: Conversation, prompt: Conversation, answer: str, principle: Principle,
                          templates: Templates) -> Conversation:
    return prefix + list(prompt) + [
        {"role": "assistant", "content": answer},
        {"role": "user", "content": templates.render("critique.j2", principle=principle)},
    ]


def revision_conversation(critique_conv: Conversation, critique: str, principle: Principle,
                          templates: Templates) -> Conversation:
    return critique_conv + [
        {"role": "assistant", "content": critique},
        {"role": "user", "content": templates.render("revision.j2", principle=principle)},
    ]


@dataclass
class RoundStats:
    finish: list[dict] = field(default_factory=list)
    critique_tokens: int = 0
    revision_tokens: int = 0
    cleaned: int = 0
    empty: int = 0
    error: str | None = None  # the step that failed and why ("round 2 critique: timed out"); rounds stop there
    stopped: str | None = None  # why the rounds ended early though nothing failed (the context is full)


@dataclass
class Reviser:
    """Everything a record's rounds need, shared by all records of a run."""

    batcher: Batcher
    constitution: Constitution
    templates: Templates
    prefix: Conversation  # system prompt and few-shot turns, identical for every record (cache-friendly)
    critique_params: SamplingParams
    revision_params: SamplingParams

    @classmethod
    def build(cls, batcher: Batcher, constitution: Constitution, templates: Templates, few_shot: int,
              critique_params: SamplingParams, revision_params: SamplingParams) -> "Reviser":
        prefix: Conversation = []
        if constitution.system_prompt:
            prefix.append({"role": "system", "content": constitution.system_prompt})
        prefix += few_shot_turns(constitution, templates, few_shot)
        return cls(batcher, constitution, templates, prefix, critique_params, revision_params)

    def _outgrown(self, stats: RoundStats, conv: Conversation, params: SamplingParams, step: str) -> bool:
        """A request that cannot fit the model's context ends the record's rounds, with the reason."""
        over = overflow(self.batcher.backend, conv, params.max_tokens)
        if over:
            stats.stopped = (f"{step}: the conversation has {over[0]} tokens, and with {params.max_tokens} to "
                             f"generate it does not fit the model's context of {over[1]}")
        return bool(over)

    async def rounds(self, key: str, prompt: Conversation, answer: str, n_rounds: int) -> tuple[list[Round], RoundStats]:
        stats = RoundStats()
        done: list[Round] = []
        for r in range(n_rounds):
            principle = self.constitution.draw_principle(f"{key}:{r}")
            conv = critique_conversation(self.prefix, prompt, answer, principle, self.templates)
            if self._outgrown(stats, conv, self.critique_params, f"round {r + 1} critique"):
                break
            crit: Completion = (await self.batcher.chat(conv, self.critique_params))[0]
            if crit.finish_reason == "error":  # a revision of no critique would be noise
                stats.error = f"round {r + 1} critique: {crit.error or 'request failed'}"
                break
            critique = crit.text.strip()
            rev_conv = revision_conversation(conv, critique, principle, self.templates)
            if self._outgrown(stats, rev_conv, self.revision_params, f"round {r + 1} revision"):
                break
            rev: Completion = (await self.batcher.chat(rev_conv, self.revision_params))[0]
            if rev.finish_reason == "error":
                stats.error = f"round {r + 1} revision: {rev.error or 'request failed'}"
                break
            revision, cleaned = clean_revision(rev.text)
            stats.cleaned += cleaned
            empty = not revision
            if empty:  # nothing usable: keep the answer so the next round has one
                stats.empty += 1
                revision = answer
            stats.critique_tokens += crit.tokens
            stats.revision_tokens += rev.tokens
            stats.finish.append({"critique": crit.finish_reason, "revision": rev.finish_reason})
            prompt_text = "\n".join(m["content"] for m in prompt)
            flags = critique_flags(critique, answer=answer, finish_reason=crit.finish_reason) + revision_flags(
                revision, previous=answer, prompt=prompt_text, critique=critique,
                requests=(conv[-1]["content"], rev_conv[-1]["content"]), finish_reason=rev.finish_reason,
                empty=empty)
            done.append(Round(principle_id=principle.id, critique=critique, revision=revision, flags=flags))
            answer = revision
        return done, stats
