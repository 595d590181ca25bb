"""Model-free quality checks on every generated text: cheap, deterministic, recorded with the row.

A small policy or critic fails in a few recognisable ways: it runs into the token limit, loops on
one sentence, answers the critique instead of the user, returns nothing, or hands back its input
unchanged. Each check below names one of those failures; a row carries the names (`flags`) so a
user can count them, look at them, and keep them out of training (`cai export` does by default).

Flags of a revision (a round's `flags`, and the row's `flags` for its final answer):
  truncated   the step stopped at its max_tokens
  repetition  a degenerate loop: one sentence repeated, or most of the word n-grams repeated
  echo        the revision repeats the critique (or the request for one) instead of answering
  meta        a short revision that talks about "the response"/"the request" instead of being one
  empty       nothing left after cleaning chatter ("Sure, here is a revised response:")
  unchanged   the revision equals its input answer (informative only: never excludes data)
Findings about the round's critique are recorded in the same list with a `critique_` prefix
(`critique_truncated`, `critique_repetition`, `critique_empty`, `critique_vague`); they describe
the feedback, not the answer, so they never exclude a row.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Iterable

FLAGS = ("truncated", "repetition", "echo", "meta", "empty", "unchanged")
# Flags that say nothing bad about the text itself: a revision may rightly keep a good answer.
INFORMATIVE = frozenset({"unchanged"})

# A repeated unit must have at least this many words: "Thank you." twice is ordinary politeness,
# a 4-word sentence three times over is a loop.
MIN_UNIT_WORDS = 4
# ... and occur this often: twice happens in normal prose (a restated conclusion), three times
# in a short answer is what decoding loops look like.
MIN_UNIT_REPEATS = 3
# ... and make up at least this share of the text's words, so a poem's refrain or a list with a
# repeated heading (a chorus is usually well under a third of a song) is not flagged.
MIN_UNIT_SHARE = 1 / 3
# Word n-grams for the second repetition test: 4 words is long enough that natural text rarely
# repeats one by chance, short enough to catch loops that drift by a word each time.
NGRAM = 4
# A text whose 4-grams are more than half repeats is looping even when no whole sentence repeats
# exactly. Measured on ordinary answers (lists, code, poems with a refrain): under 0.25.
MAX_REPEATED_NGRAM_SHARE = 0.5
# Below this many words the n-gram share is too noisy to judge (a 10-word text has 7 4-grams).
MIN_NGRAM_WORDS = 24
# Echo: share of the revision's word trigrams that come from the critique or the request texts
# (and not from the prompt or the answer being revised, which a critique quotes). A real revision
# borrows a phrase or two from the critique; a copied critique shares nearly all of them.
ECHO_SHARE = 0.6
ECHO_NGRAM = 3
# "Meta" revisions are short sentences about the text ("The response is not helpful."); a real
# answer that happens to begin with "The answer" is longer or has another subject.
META_MAX_WORDS = 20
# A critique this short that names nothing from the answer ("The sentence is unclear.") gives the
# revision nothing to act on.
VAGUE_MAX_WORDS = 6

_WORD = re.compile(r"[a-z0-9']+")
_UNIT_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
_META = re.compile(
    r"^\s*(?:the|this|that|my|your|our|its|the\s+(?:original|previous|above|revised|last|initial))\s+"
    r"(?:original\s+|previous\s+|above\s+|revised\s+|last\s+|initial\s+)?"
    # not "answer": "The answer is 42." is an answer
    r"(?:request|response|responses|sentence|critique|revision|reply|text|statement|paragraph)\s+"
    r"(?:is|was|are|were|does|do|did|doesn't|does not|isn't|is not|has|had|lacks|seems|contains|should|"
    r"could|would|can|cannot|can't|needs|must|will)\b",
    re.IGNORECASE,
)
_STOP = frozenset(
    "a an the and or but if then so of to in on at by for with from as is are was were be been being it its "
    "this that these those there here i you he she we they me him her us them my your his our their what "
    "which who whom whose when where why how not no do does did done have has had can could should would "
    "will shall may might must very more most also just than too any all some such only own same other".split()
)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _norm(text: str) -> str:
    return " ".join(words(text))


def _ngrams(ws: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(ws[i : i + n]) for i in range(len(ws) - n + 1)]


def is_repetitive(text: str) -> bool:
    ws = words(text)
    if not ws:
        return False
    units = Counter(u for u in (_norm(p) for p in _UNIT_SPLIT.split(text)) if len(u.split()) >= MIN_UNIT_WORDS)
    for unit, count in units.items():
        if count >= MIN_UNIT_REPEATS and count * len(unit.split()) >= MIN_UNIT_SHARE * len(ws):
            return True
    if len(ws) < MIN_NGRAM_WORDS:
        return False
    grams = _ngrams(ws, NGRAM)
    seen = Counter(grams)
    repeated = sum(c - 1 for c in seen.values())  # every occurrence after a gram's first
    return repeated / len(grams) > MAX_REPEATED_NGRAM_SHARE


def is_echo(revision: str, feedback: Iterable[str], own: Iterable[str]) -> bool:
    """The revision's trigrams come mostly from `feedback` (critique, requests) and not from `own`
    (the prompt and the answer being revised, which the critique may quote)."""
    rev = _ngrams(words(revision), ECHO_NGRAM)
    if not rev:
        norm = _norm(revision)
        return bool(norm) and any(norm == _norm(f) for f in feedback)
    fb = {g for f in feedback for g in _ngrams(words(f), ECHO_NGRAM)}
    mine = {g for o in own for g in _ngrams(words(o), ECHO_NGRAM)}
    borrowed = sum(1 for g in rev if g in fb and g not in mine)
    return borrowed / len(rev) >= ECHO_SHARE


def is_meta(text: str) -> bool:
    return len(words(text)) <= META_MAX_WORDS and bool(_META.match(text))


def _content(text: str) -> set[str]:
    # Five-letter stems: "lock"/"locks"/"locked" and "vehicle"/"vehicles" meet.
    return {w[:5] for w in words(text) if len(w) > 2 and w not in _STOP}


def is_vague(critique: str, answer: str) -> bool:
    ws = words(critique)
    return 0 < len(ws) <= VAGUE_MAX_WORDS and not (_content(critique) & _content(answer))


def answer_flags(text: str, finish_reason: str | None) -> list[str]:
    """Flags of a text that answers the user directly (an initial answer, an eval answer)."""
    flags = []
    if finish_reason == "length":
        flags.append("truncated")
    if not text.strip():
        flags.append("empty")
    elif is_repetitive(text):
        flags.append("repetition")
    return flags


def revision_flags(revision: str, *, previous: str, prompt: str, critique: str, requests: Iterable[str],
                   finish_reason: str | None, empty: bool) -> list[str]:
    """Flags of one round's revision. `empty`: cleaning left nothing and the previous answer was kept."""
    flags = []
    if finish_reason == "length":
        flags.append("truncated")
    if empty or not revision.strip():
        flags.append("empty")
    else:
        if is_repetitive(revision):
            flags.append("repetition")
        if is_echo(revision, [critique, *requests], [prompt, previous]):
            flags.append("echo")
        if is_meta(revision):
            flags.append("meta")
    if _norm(revision) == _norm(previous):
        flags.append("unchanged")
    return flags


def critique_flags(critique: str, *, answer: str, finish_reason: str | None) -> list[str]:
    flags = []
    if finish_reason == "length":
        flags.append("critique_truncated")
    if not critique.strip():
        flags.append("critique_empty")
    else:
        if is_repetitive(critique):
            flags.append("critique_repetition")
        if is_vague(critique, answer):
            flags.append("critique_vague")
    return flags


def excluding(flags: Iterable[str]) -> list[str]:
    """The flags that keep a text out of training data by default."""
    return [f for f in flags if f in FLAGS and f not in INFORMATIVE]


def flag_line(counts: Counter | dict) -> str:
    """Every flag with its count, zeros too, so a clean run reads as clean rather than unchecked."""
    return "  ".join(f"{f} {counts.get(f, 0)}" for f in FLAGS)
