"""Where the constitution is silent: rules the labels follow that no comparison question states.

For the pairs the fitted weights still get wrong, the judge model is asked (audit_propose.j2) for
the principle under which the labelled answer is better, as a "Which response ...?" question.
Near-identical proposals are grouped (the same words, by token-set Jaccard), and each group's
question is then measured like any comparison question, alone on every pair, and by whether adding
it raises the held-out agreement. Nothing here edits a constitution: candidates are suggestions.
"""

from __future__ import annotations

import re
from typing import Sequence

from pydantic import BaseModel

from cai.backends.base import Conversation, SamplingParams, overflow
from cai.batching import Batcher
from cai.prompts import Templates
from cai.runloop import map_batched

TEMPLATE = "audit_propose.j2"
MAX_TOKENS = 48
SAME_WORDS = 0.6  # token-set Jaccard at or above which two proposals are one
# Words every proposal shares ("Which response is more ...?"): left out of the comparison.
_COMMON = {"which", "response", "is", "more", "the", "a", "an", "of", "to", "and", "or", "better", "does", "that",
           "it", "its", "in", "with", "for", "by", "be", "are"}


def question_of(reply: str) -> str | None:
    """The judge model's reply as a comparison question: its first sentence, "Which response ...?"
    as asked; a sentence of another form is wrapped into one. None for an empty reply."""
    text = " ".join(reply.strip().strip("\"'`").split())
    text = re.sub(r"^(principle|question|answer)\s*:\s*", "", text, flags=re.I).strip("\"'` ")
    found = re.search(r"which response\b[^?]*\?", text, flags=re.I)
    if found:
        q = found.group(0)
        return "W" + q[1:]
    first = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0].rstrip(".!? ")
    if not first:
        return None
    return f"Which response better follows this principle: {first}?"


def words(question: str) -> frozenset[str]:
    """The question's words in any script (cai.quality's tokens: Unicode words, single characters
    where a script writes no spaces), less the words every English proposal shares."""
    from cai.quality import words as tokens

    return frozenset(w for w in tokens(question) if w not in _COMMON)


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


class Group(BaseModel):
    question: str  # the first proposal of the group, in pair order
    pairs: list[str]  # ids of the pairs whose proposal it holds
    variants: list[str]


def group(proposals: Sequence[tuple[str, str]], same: float = SAME_WORDS) -> list[Group]:
    """(pair id, question) → groups of near-identical questions, most supported first (then the
    order they were first proposed in)."""
    groups: list[tuple[frozenset[str], Group]] = []
    for ident, q in proposals:
        key = words(q)
        for gkey, g in groups:
            if jaccard(key, gkey) >= same:
                g.pairs.append(ident)
                if q not in g.variants:
                    g.variants.append(q)
                break
        else:
            groups.append((key, Group(question=q, pairs=[ident], variants=[q])))
    order = sorted(range(len(groups)), key=lambda i: (-len(groups[i][1].pairs), i))
    return [groups[i][1] for i in order]


def propose(backend, templates: Templates, asks: Sequence[tuple[str, Conversation, str, str]], *, window: int,
            seed: int = 0) -> tuple[list[tuple[str, str]], int]:
    """(pair id, question) for each (id, prompt, labelled-better answer, other answer), and how many
    were not asked (too long for the judge model's context) or gave no usable sentence."""
    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, seed=seed)
    convs = [[{"role": "user", "content": templates.render(TEMPLATE, conversation=prompt, better=better,
                                                          worse=worse)}] for _, prompt, better, worse in asks]
    fits = [overflow(backend, c, MAX_TOKENS) is None for c in convs]

    async def ask(batcher: Batcher, conv: Conversation) -> str:
        return (await batcher.chat(conv, params))[0].text

    replies = map_batched(backend, ask, [c for c, ok in zip(convs, fits) if ok], window=window)
    it = iter(replies)
    out = []
    for (ident, *_), ok in zip(asks, fits):
        q = question_of(next(it)) if ok else None
        if q:
            out.append((ident, q))
    return out, len(asks) - len(out)
