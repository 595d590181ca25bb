"""Model-free quality checks on every generated text: cheap, deterministic, recorded with the row.

A small policy or critic fails in a few recognisable ways: it runs into the token limit, loops on
one sentence, answers the critique instead of the user, returns nothing, or hands back its input
unchanged. Each check below names one of those failures; a row carries the names (`flags`) so a
user can count them, look at them, and keep them out of training (`cai export` does by default).

Flags of a revision (a round's `flags`, and the row's `flags` for its final answer):
  truncated   the step stopped at its max_tokens
  repetition  a degenerate loop: a sentence (or a block of them) repeated back to back, one
              sentence making up most of the text, or most of the token n-grams repeated
  echo        the revision repeats the critique's evaluation (or the request for one) instead of
              answering; adopting a rewrite the critique suggested is not an echo
  meta        a short revision that evaluates "the response"/"the revision"/"the critique" instead
              of being an answer (English phrasing only: the critique and revision requests are)
  empty       nothing left after cleaning chatter ("Sure, here is a revised response:")
  unchanged   the revision equals its input answer (informative only: never excludes data)
Findings about the round's critique are recorded in the same list with a `critique_` prefix
(`critique_truncated`, `critique_repetition`, `critique_empty`, `critique_vague`); they describe
the feedback, not the answer, so they never exclude a row.

Tokens. The checks count tokens, not bytes, so they work in any script: a token is a run of
Unicode word characters with their combining marks (Devanagari vowel signs, Arabic harakat are
marks and must not split a word), apostrophes kept inside words, case-folded after NFKC (so
full-width and half-width forms meet their ordinary ones). Scripts written without spaces between
words (Han, Hiragana, Katakana, Thai, Lao, Khmer, Myanmar) have no word boundaries to find without
a dictionary, so there each character (with its marks) is one token. The n-gram checks then run
over character windows: a Chinese 4-gram is about two words, still rare to repeat by chance in
varied text and always repeated in a loop. Character bigrams as tokens were the other choice; as
units of an n-gram they only shift each window by one character, and single characters keep
`unchanged` and the token counts simple. Sentences end at . ! ? followed by a space, and at the
ends that need none: 。！？ (CJK), ؟ ۔ (Arabic script), । ॥ (Devanagari), ။ (Myanmar), ។ ៕
(Khmer), ። (Ethiopic); every line is split on its own.

Repetition. A decoding loop repeats itself back to back and keeps going; songs, plans and lists
repeat too, but differently: a chorus comes back between verses, and a plan's days share their
wording while each says something else ("Day 1: run 2 km ...", "Day 2: run 3 km ..."). So copies
of a sentence count as a loop when they come back to back (or a block of a few sentences does),
or make up most of the text; a line's named label ("Day 2:", "Monday:") is part of what it says,
a bare list number ("2.") is not; and over the whole text only a third and later occurrence of a
4-gram counts as repeated.

Meta reads English only: the critique and revision requests are written in English, so talk about
"the response" comes in English. Echo works in any script; of the ways a critique marks a rewrite
it suggests, quotation marks work in any script and the phrases ("A better response would be:")
in English.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter
from typing import Iterable

FLAGS = ("truncated", "repetition", "echo", "meta", "empty", "unchanged")
# Flags that say nothing bad about the text itself: a revision may rightly keep a good answer.
INFORMATIVE = frozenset({"unchanged"})

# A repeated unit (sentence or line) must have at least this many tokens (characters, in scripts
# without spaces): "Thank you." twice is ordinary politeness, a 4-word sentence three times over is
# a loop.
MIN_UNIT_WORDS = 4
# ... and occur this often: twice happens in normal prose (a restated conclusion) and in songs (a
# chorus sung twice), three times is what decoding loops look like.
MIN_UNIT_REPEATS = 3
# Copies back to back (one sentence, or a block of up to MAX_PERIOD sentences, repeated with
# nothing between) are a loop once they make up this share of the text's tokens ...
MIN_UNIT_SHARE = 1 / 3
MAX_PERIOD = 4
# ... while copies with other text between them are how a refrain works (a chorus between verses,
# a line that closes each stanza), so those need to be most of the text. The short song in the
# tests, whose chorus sings its first line twice, puts a third of its tokens in that line.
MIN_SCATTERED_SHARE = 1 / 2
# The same text under different named labels ("Day 1: Run 3 km at an easy pace." through
# "Day 10: ...") is a loop only when it is most of the text: a plan may give several days one
# activity, and a week that alternates two activities puts about half its text in each.
MIN_LABELLED_SHARE = 2 / 3
# A leading list marker ("1.", "b)", "-", "•") only counts items: "1. Be kind." and "2. Be kind."
# are one item repeated. A named label ("Day 2:", "Monday:", "Week 3 -", "第二天：") says what the
# line is for, so lines under different labels are different items even when their text agrees:
# a plan may rightly give Monday and Wednesday the same walk. A label is up to three words before a
# colon, or a word and a number before a full stop, bracket or dash ("Week 2 -").
_ENUMERATOR = re.compile(r"^\s*(?:[-*•·‣▪◦–—>]+|#{1,6}|\(?(?:\d{1,3}|[a-z]|[ivx]{1,4})[.)\]:])\s+", re.IGNORECASE)
_LABEL = re.compile(r"^\s*([\w'-]+(?:[ \t]+[\w'-]+){0,2})[ \t]*[:：][ \t]*(?=\S)"
                    r"|^\s*([^\W\d_]+\.?[ \t]*\d{1,3}[a-z]?)[ \t]*[.)\-–—][ \t]+")
# Token n-grams for the loop tests that do not rely on sentence ends: 4 tokens is long enough that
# natural text rarely repeats one by chance, short enough to catch loops that drift by a word.
NGRAM = 4
# Within one long sentence or line, more than this share of repeated 4-grams is a phrase looping
# with no sentence end to split it on ("... stay safe and be safe and stay safe ...").
# Over the whole text only the third and later occurrences of a 4-gram count: a chorus sung twice
# and the shared wording of a list's lines ("at an easy pace, then stretch") repeat once or twice,
# a loop keeps going. Measured on the ordinary answers of the tests (lists, plans, code, songs): at
# most 0.25; on their loops of five or more copies, 0.5 to 0.9 (shorter loops are the unit tests').
MAX_REPEATED_NGRAM_SHARE = 0.5
# Below this many tokens the n-gram share is too noisy to judge (a 10-word text has 7 4-grams).
MIN_NGRAM_WORDS = 24
# Echo: share of the revision's token trigrams that come from the critique or the request texts
# (and not from the prompt or the answer being revised, which a critique quotes, nor from a
# rewrite the critique suggests). A real revision borrows a phrase or two from the critique's
# evaluation; a copied critique shares nearly all of them.
ECHO_SHARE = 0.6
ECHO_NGRAM = 3
# "Meta" revisions are short sentences about the text ("The response is not helpful."); a text
# longer than this is an answer however it begins (which subjects and predicates count: the Meta
# comment above is_meta).
META_MAX_WORDS = 20
# A critique this short that names nothing from the answer ("The sentence is unclear.") gives the
# revision nothing to act on.
VAGUE_MAX_WORDS = 6

# Scripts written without spaces between words: each character is a token (see the docstring).
_NOSPACE_RANGES = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF), (0x19E0, 0x19FF),  # Khmer, Khmer symbols
    (0x3005, 0x3007),  # 々 〆 〇
    (0x3040, 0x30FF), (0x31F0, 0x31FF),  # Hiragana, Katakana, Katakana extensions
    (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF),  # Han: extension A, unified, compatibility
    (0xA9E0, 0xA9FF), (0xAA60, 0xAA7F),  # Myanmar extensions
    (0x20000, 0x323AF),  # Han extensions B to H
)
_SENT_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？｡؟۔।॥။።។៕])\s*")


def _class(ranges: Iterable[tuple[int, int]]) -> str:
    return "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in ranges)


def _category_ranges(prefix: str, spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in spans:
        for c in range(lo, hi):
            if unicodedata.category(chr(c)).startswith(prefix):
                if out and out[-1][1] == c - 1:
                    out[-1] = (out[-1][0], c)
                else:
                    out.append((c, c))
    return out


@functools.cache
def _token_re() -> re.Pattern:
    # Python's \w leaves out combining marks (category M), which would cut "हिंदी" into single
    # letters. They are listed from the Unicode database, once, on first use (about 0.1 s): every
    # mark lies below U+20000 or among the variation selectors at U+E0100.
    marks = _class(_category_ranges("M", [(0, 0x20000), (0xE0100, 0xE01F0)]))
    nospace = _class(_NOSPACE_RANGES)
    char = rf"(?:[^\W{nospace}]|[{marks}])"
    return re.compile(rf"[{nospace}][{marks}]*|{char}+(?:'{char}+)*")


# ASCII text has no marks and no scripts without spaces, and the full pattern's long character
# classes make it about four times slower, so English takes this one (same tokens).
_ASCII_TOKEN = re.compile(r"\w+(?:'\w+)*")


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).replace("\u2019", "'").casefold()


def words(text: str) -> list[str]:
    text = _fold(text)
    return (_ASCII_TOKEN if text.isascii() else _token_re()).findall(text)


def _norm(text: str) -> str:
    return " ".join(words(text))


def _ngrams(ws: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(ws[i : i + n]) for i in range(len(ws) - n + 1)]


def _units(text: str) -> list[tuple[tuple[str, ...], list[str]]]:
    """The text's sentences and lines as (label, tokens): list markers dropped, a line's named
    label given to each of its sentences."""
    out = []
    for line in text.splitlines():
        line = _ENUMERATOR.sub("", line, count=1)
        label: tuple[str, ...] = ()
        if m := _LABEL.match(line):
            label, line = tuple(words(m.group(1) or m.group(2))), line[m.end():]
        for sentence in _SENT_END.split(line):
            if ws := words(sentence):
                out.append((label, ws))
    return out


def _repeated_share(ws: list[str], beyond: int) -> float:
    grams = _ngrams(ws, NGRAM)
    repeated = sum(max(0, c - beyond) for c in Counter(grams).values())
    return repeated / len(grams) if grams else 0.0


def _looping(keys: list, sizes: list[int], total: int) -> bool:
    """Whether units (`keys`, with their token counts) repeat as a loop: copies back to back (each
    unit equal to the one `period` before), or copies spread over most of the text."""
    for period in range(1, MAX_PERIOD + 1):
        run = 0
        for i in range(period, len(keys) + 1):
            if i < len(keys) and keys[i] == keys[i - period]:
                run += 1
                continue
            if (run + period) // period >= MIN_UNIT_REPEATS and \
                    sum(sizes[i - run - period : i]) >= MIN_UNIT_SHARE * total:
                return True
            run = 0
    return _spread(keys, sizes, total, MIN_SCATTERED_SHARE)


def _spread(keys: list, sizes: list[int], total: int, share: float) -> bool:
    counts, mass = Counter(keys), Counter()
    for key, size in zip(keys, sizes):
        mass[key] += size
    return any(counts[k] >= MIN_UNIT_REPEATS and mass[k] >= share * total for k in counts)


def is_repetitive(text: str) -> bool:
    units = _units(text)
    total = sum(len(label) + len(ws) for label, ws in units)
    if not total:
        return False
    long = [(label, tuple(ws)) for label, ws in units if len(ws) >= MIN_UNIT_WORDS]
    sizes = [len(label) + len(ws) for label, ws in long]
    if _looping(long, sizes, total) or _spread([ws for _, ws in long], sizes, total, MIN_LABELLED_SHARE):
        return True
    # A phrase looping inside one long sentence, or a loop that no unit test sees.
    if any(len(ws) >= MIN_NGRAM_WORDS and _repeated_share(ws, 1) > MAX_REPEATED_NGRAM_SHARE for _, ws in units):
        return True
    all_words = [w for label, ws in units for w in (*label, *ws)]
    return len(all_words) >= MIN_NGRAM_WORDS and _repeated_share(all_words, 2) > MAX_REPEATED_NGRAM_SHARE


# A rewrite the critique proposes: text in quotation marks, or what follows a colon that
# introduces one ("A better response would be:", "Suggested revision:", "Rewrite:", "It could
# say:"), up to the end of its paragraph. Not "For example:", which brings evidence from the answer.
_QUOTED = re.compile(r'"[^"]+"|“[^”]+”|«[^»]+»|„[^“”]+[“”]|「[^」]+」|『[^』]+』|(?<!\w)\'(?=\S)[^\n]+?(?<=\S)\'(?!\w)')
_SUGGESTS = re.compile(
    r"\b(?:(?:better|improved|revised|suggested|proposed|alternative|safer|more\s+\w+|rewritten|corrected)\s+"
    r"(?:response|answer|reply|version|revision|wording|rewrite)\b[^.!?\n:]{0,40}"
    r"|(?:suggested\s+|proposed\s+)?(?:revision|rewrite|rewording|suggestion|instead)"
    r"|(?:say|saying|respond|reply|answer|write|try|like)(?:\s+something\s+like)?(?:\s+this)?)\s*:",
    re.IGNORECASE,
)


def _split_suggestions(text: str) -> tuple[list[str], list[str]]:
    """(the text's own words in pieces, the rewrites it suggests)."""
    spans = [m.span() for m in _QUOTED.finditer(text)]
    for m in _SUGGESTS.finditer(text):
        end = text.find("\n\n", m.end())
        spans.append((m.end(), len(text) if end < 0 else end))
    own, suggested, at = [], [], 0
    for start, end in sorted(spans):
        if end <= at:
            continue
        start = max(start, at)
        own.append(text[at:start])
        suggested.append(text[start:end])
        at = end
    own.append(text[at:])
    return own, suggested


def is_echo(revision: str, feedback: Iterable[str], own: Iterable[str]) -> bool:
    """The revision's trigrams come mostly from `feedback` (critique, requests) and not from `own`
    (the prompt and the answer being revised, which the critique may quote). A rewrite that the
    feedback suggests (quoted, or after "A better response would be:") is the critique working,
    so its words count as the revision's own."""
    source, allowed = [], list(own)
    for text in feedback:
        pieces, suggested = _split_suggestions(text)
        source += pieces
        allowed += suggested
    rev = _ngrams(words(revision), ECHO_NGRAM)
    if not rev:
        norm = _norm(revision)
        return bool(norm) and any(norm == _norm(s) for s in source)
    fb = {g for s in source for g in _ngrams(words(s), ECHO_NGRAM)}
    mine = {g for o in allowed for g in _ngrams(words(o), ECHO_NGRAM)}
    borrowed = sum(1 for g in rev if g in fb and g not in mine)
    return borrowed / len(rev) >= ECHO_SHARE


# Meta: a revision whose subject is the text being revised (or the critique) and whose predicate
# judges or describes it, instead of answering the user. Two kinds of subject:
# - nouns that can only mean the assistant's own text ("the response", "this revision", "the
#   critique", "my previous answer", "the assistant"): any predicate about them is meta
#   ("The response is harmful", "This revision removes the harmful part");
# - nouns that may as well be what the user asked about ("the statement", "the text", "the
#   request", "the sentence", "the answer"): meta only when the predicate is a verdict on a reply's
#   quality (helpful, unclear, appropriate, lacks, should mention, does not address ...), not a
#   truth value or a description ("The statement is false.", "The text is in Latin." answer the
#   user), and only when nothing in the text speaks to the user or for the assistant ("This
#   request is harmful, so I can't help with it." is a refusal) and the user did not bring the
#   noun up ("Is this sentence clear?" may be answered "The sentence is unclear.").
_LEAD = r"^\s*(?:(?:i\s+think|i\s+believe|i\s+feel|in\s+my\s+opinion|overall|honestly|yes|no|okay|ok)\s*,?\s+)?"
_DET = r"(?:the|this|that|these|those|my|your|our|its)\s+"
# Any qualifier will do before a noun that only a reply can be; before "answer", "text" or "version"
# only those that name a step of the revising ("the revised text"), not "the first sentence".
_QUALIFIER = (r"(?:original|previous|above|revised|last|initial|new|current|updated|earlier|final|rewritten|"
              r"improved|edited|assistant's|ai's|model's)\s+")
_STEP = r"(?:previous|revised|rewritten|improved|updated|edited|initial|earlier|assistant's|ai's|model's)\s+"
_OWN_NOUN = r"(?:responses?|repl(?:y|ies)|revisions?|critiques?|rewrites?)"
_ANY_NOUN = r"(?:answers?|texts?|versions?|sentences?|messages?|paragraphs?|drafts?|outputs?|statements?)"
_ASKED_NOUN = (r"(?:requests?|sentences?|texts?|statements?|paragraphs?|passages?|messages?|answers?|wording|tone|"
               r"phrasing|outputs?)")
_ADVERBS = r"(?:(?:\w+ly|not|now|still|also|already|no\s+longer|never|just|only)\s+)*"
_VERB = (r"(?:is|was|are|were|be|been|isn't|wasn't|aren't|weren't|seems?|seemed|appears?|appeared|looks?|sounds?|"
         r"reads?|remains?|feels?|does|did|do|doesn't|didn't|don't|has|had|have|hasn't|haven't|can|could|would|"
         r"should|must|might|may|will|can't|cannot|won't|shouldn't|wouldn't|couldn't|needs?|needed|lacks?|lacked|"
         r"fails?|failed|contains?|includes?|provides?|gives?|offers?|explains?|mentions?|addresses|answers?|"
         r"avoids?|removes?|adds?|keeps?|changes?|focuses|uses?|suggests?|encourages?|promotes?|refuses?|"
         r"declines?|acknowledges?|describes?|states?|says?|tells?|shows?|makes?|improves?|reflects?|violates?|"
         r"follows?|meets?|misses|ignores?|goes|stays?|tries|manages?)\b")
_VERDICT = (r"(?:helpful|unhelpful|useful|useless|unclear|clear|clearer|vague|confusing|confused|ambiguous|"
            r"irrelevant|relevant|appropriate|inappropriate|acceptable|unacceptable|harmful|harmless|offensive|"
            r"problematic|improved|better|worse|revised|rewritten|changed|edited|lacking|missing|incomplete|"
            r"complete|concise|verbose|wordy|informative|good|bad|fine|okay|adequate|inadequate|sufficient|"
            r"insufficient|polite|rude|respectful|disrespectful|biased|lacks?|needs?|fails?|address(?:es)?|"
            r"answers?|explains?|mentions?|includes?|provides?|acknowledges?|improves?|make\s+sense|"
            r"be\s+(?:more|less|clearer|improved|revised|rewritten|changed)|mention|include|explain)\b")
_META_OWN = re.compile(
    _LEAD + rf"(?:{_DET}(?:{_QUALIFIER})*{_OWN_NOUN}|{_DET}(?:{_STEP})+{_ANY_NOUN}|the\s+assistant)"
    rf"(?:'s\s+\w+)?\s+{_ADVERBS}{_VERB}",
    re.IGNORECASE)
# The verdict follows the verb within three words ("is not very helpful"), or is the verb ("lacks").
_META_ASKED = re.compile(_LEAD + rf"{_DET}({_ASKED_NOUN})\s+{_ADVERBS}(?:{_VERB}(?:\s+[\w'-]+){{0,3}}?\s+)?{_VERDICT}",
                         re.IGNORECASE)
# Someone speaking to the user or for the assistant, or offering something: an answer, not a verdict.
_ANSWERING = re.compile(
    r"\b(?:i|i'm|i'd|i'll|i've|me|we|we're|we'll|let's|you|you're|you'll|you'd|you've|your|yours|please|here's|"
    r"here\s+is|here\s+are)\b|[\"“”«»]|:\s*\S",
    re.IGNORECASE)


def is_meta(text: str, prompt: str = "") -> bool:
    """Whether a short text evaluates the response instead of being one. `prompt`: the user's
    turn, which may itself be about a sentence or text (then judging it is the answer)."""
    if len(words(text)) > META_MAX_WORDS:
        return False
    text = _fold(text)
    if _META_OWN.match(text):
        return True
    m = _META_ASKED.match(text)
    if not m or _ANSWERING.search(text, m.start(1)):
        return False
    noun = m.group(1).rstrip("s")
    return not re.search(rf"\b{re.escape(noun)}", _fold(prompt))


def _content(text: str) -> set[str]:
    # Five-letter stems: "lock"/"locks"/"locked" and "vehicle"/"vehicles" meet. In scripts without
    # spaces a token is one character, so pairs of adjacent characters stand in for words.
    ws = words(text)
    stems = {w[:5] for w in ws if len(w) > 2 and w not in _STOP}
    return stems | {a + b for a, b in zip(ws, ws[1:]) if _is_nospace(a) and _is_nospace(b)}


def _is_nospace(token: str) -> bool:
    c = ord(token[0])
    return any(lo <= c <= hi for lo, hi in _NOSPACE_RANGES)


_STOP = frozenset(
    "a an the and or but if then so of to in on at by for with from as is are was were be been being it its "
    "this that these those there here i you he she we they me him her us them my your his our their what "
    "which who whom whose when where why how not no do does did done have has had can could should would "
    "will shall may might must very more most also just than too any all some such only own same other".split()
)


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
        if is_meta(revision, prompt):
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
