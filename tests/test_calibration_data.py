"""The bundled calibration sets measure a reader, not a bias it happens to have (issue 23, section 5).

`cai` trusts its judge only after it agrees with the labelled hard pairs in
cai/data/judge_calibration.jsonl, and trusts its refusal reader only after it agrees with
cai/data/refusal_calibration.jsonl. A set whose labels follow a surface feature lets a reader that
sees only that feature pass. These tests pin down the design of both files:

* judge set: inside every content kind the better answer is the longer one in 40-60% of pairs and
  sits in position A in 40-60%; no single surface feature (citations, hedges, refusal words,
  digits, ...) picks the better answer in more than 70% of a kind's pairs; in the two length kinds
  the shorter answer is always the better one;
* refusal set: a reader that looks only at the prompt (refuses = harmful_prompt) scores at most
  0.65, and the labels are balanced;
* neither set overlaps the text the tool generates from, evaluates on or shows the model as
  examples (the rule is in `overlaps` below);
* every row has the schema its readers expect.

Pure Python over the bundled files; no engine.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_left, bisect_right
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "cai" / "data"
HARD = DATA / "judge_calibration.jsonl"
REFUSAL = DATA / "refusal_calibration.jsonl"
EASY = DATA / "judge_pairs.jsonl"
EVAL_PROMPTS = DATA / "eval_prompts.jsonl"
RED_TEAM = DATA / "red_team.jsonl"

# Content kinds: the two answers differ in the one respect the kind names, and length says nothing.
CONTENT_KINDS = {"subtle_harm", "partial_refusal", "unsupported_claim", "overconfidence", "evasive", "preachy",
                 "factual_recall"}
# Length kinds: the answers differ in length, and the shorter one is the better one.
LENGTH_KINDS = {"longer_worse", "shorter_better"}
CATEGORIES = {"benign", "harmful"}

# Refusal kinds and what each one is: (harmful_prompt, refuses).
REFUSAL_KINDS = {
    "refuse_harmful_plain": (True, True),       # a harmful request declined in so many words
    "refuse_harmful_subtle": (True, True),      # declined without a stock phrase (a redirect)
    "partial_refusal_adjacent": (True, True),   # the asked-for part declined, something safe beside it offered
    "comply_harmful": (True, False),            # a harmful request simply done
    "comply_harmful_caveat": (True, False),     # done, with a warning or disclaimer around it
    "over_refusal": (False, True),              # a benign request declined over a trigger word
    "over_refusal_plausible": (False, True),    # a benign request that sounds risky, declined
    "partial_over_refusal": (False, True),      # a benign request's asked-for part declined, an adjacent part given
    "comply_benign": (False, False),            # a benign request done (some open with refusal-like words)
    "comply_borderline": (False, False),        # a benign request on a sensitive topic, done
}

BALANCE = (0.4, 0.6)
PROMPT_ONLY_MAX = 0.65
TELL_MAX = 0.7


def _rows(path: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        assert line.strip(), f"{path.name}: line {n} is blank"
        row = json.loads(line)
        assert isinstance(row, dict), f"{path.name}: line {n} is not an object"
        rows.append(row)
    return rows


@lru_cache(maxsize=None)
def hard() -> tuple[dict, ...]:
    return tuple(_rows(HARD))


@lru_cache(maxsize=None)
def refusal() -> tuple[dict, ...]:
    return tuple(_rows(REFUSAL))


def better_worse(row: dict) -> tuple[str, str]:
    other = "b" if row["label"] == "a" else "a"
    return row["response_" + row["label"]], row["response_" + other]


def by_kind(rows) -> dict[str, list[dict]]:
    out = defaultdict(list)
    for r in rows:
        out[r["kind"]].append(r)
    return dict(out)


# ------------------------------------------------------------------------------------ schema


def test_hard_set_schema_ids_and_labels():
    rows = hard()
    assert rows
    ids = [r.get("id") for r in rows]
    assert len(ids) == len(set(ids)), "duplicate ids"
    for r in rows:
        assert set(r) == {"id", "prompt", "response_a", "response_b", "label", "kind", "category"}, r.get("id")
        assert re.fullmatch(r"hc-\d{3}", r["id"]), r["id"]
        for f in ("prompt", "response_a", "response_b"):
            assert isinstance(r[f], str) and r[f].strip() and r[f] == r[f].strip(), (r["id"], f)
        assert r["response_a"] != r["response_b"], r["id"]
        assert r["label"] in ("a", "b"), r["id"]
        assert r["kind"] in CONTENT_KINDS | LENGTH_KINDS, (r["id"], r["kind"])
        assert r["category"] in CATEGORIES, (r["id"], r["category"])
    assert {r["kind"] for r in rows} == CONTENT_KINDS | LENGTH_KINDS
    prompts = [r["prompt"] for r in rows]
    assert len(prompts) == len(set(prompts)), "a prompt appears twice"


def test_hard_set_reads_with_the_pair_reader():
    from cai.judge.pairfile import read_labelled_pairs

    assert len(read_labelled_pairs(HARD)) == len(hard())


def test_refusal_set_schema_ids_and_kinds():
    rows = refusal()
    assert rows
    ids = [r.get("id") for r in rows]
    assert len(ids) == len(set(ids)), "duplicate ids"
    for r in rows:
        assert set(r) == {"id", "prompt", "answer", "refuses", "harmful_prompt", "kind"}, r.get("id")
        assert re.fullmatch(r"rc-\d{3}", r["id"]), r["id"]
        for f in ("prompt", "answer"):
            assert isinstance(r[f], str) and r[f].strip() and r[f] == r[f].strip(), (r["id"], f)
        assert isinstance(r["refuses"], bool) and isinstance(r["harmful_prompt"], bool), r["id"]
        assert r["kind"] in REFUSAL_KINDS, (r["id"], r["kind"])
        assert (r["harmful_prompt"], r["refuses"]) == REFUSAL_KINDS[r["kind"]], r["id"]
    # calibrate_refusals keys the model's calls by (prompt, answer): each pair once.
    keys = [(r["prompt"], r["answer"]) for r in rows]
    assert len(keys) == len(set(keys))


def test_refusal_set_reads_with_the_refusal_reader():
    from cai.judge.refusal import read_refusal_rows

    assert len(read_refusal_rows(REFUSAL)) == len(refusal())


# ------------------------------------------------------------------------------------ judge set balance


def test_length_kinds_prefer_the_shorter_answer():
    for r in hard():
        if r["kind"] in LENGTH_KINDS:
            good, bad = better_worse(r)
            assert len(good) < len(bad), r["id"]


@pytest.mark.parametrize("kind", sorted(CONTENT_KINDS | LENGTH_KINDS))
def test_labels_balanced_within_each_kind(kind):
    rs = by_kind(hard())[kind]
    share_a = sum(r["label"] == "a" for r in rs) / len(rs)
    assert BALANCE[0] <= share_a <= BALANCE[1], f"{kind}: label a in {share_a:.2f} of {len(rs)}"


@pytest.mark.parametrize("kind", sorted(CONTENT_KINDS))
def test_length_says_nothing_within_each_content_kind(kind):
    rs = by_kind(hard())[kind]
    longer = sum(len(better_worse(r)[0]) > len(better_worse(r)[1]) for r in rs) / len(rs)
    assert BALANCE[0] <= longer <= BALANCE[1], f"{kind}: the better answer is the longer in {longer:.2f} of {len(rs)}"


def _reader_score(rows, pick) -> float:
    """Agreement of a reader `pick(row) -> "a" | "b" | None` with the labels; None (undecided) counts half."""
    right = 0.0
    for r in rows:
        p = pick(r)
        right += 0.5 if p is None else float(p == r["label"])
    return right / len(rows)


def _longer(r):
    la, lb = len(r["response_a"]), len(r["response_b"])
    return None if la == lb else ("a" if la > lb else "b")


def _shorter(r):
    p = _longer(r)
    return None if p is None else ("b" if p == "a" else "a")


def test_length_readers_score_near_chance():
    groups = by_kind(hard())
    content = [r for k in CONTENT_KINDS for r in groups[k]]
    for k in CONTENT_KINDS:
        assert _reader_score(groups[k], _longer) <= 0.6, k
        assert _reader_score(groups[k], _shorter) <= 0.6, k
    # Over the content kinds, over all kinds (each kind weighted the same), and over every pair.
    assert _reader_score(content, _longer) <= 0.6 and _reader_score(content, _shorter) <= 0.6
    assert sum(_reader_score(rs, _longer) for rs in groups.values()) / len(groups) <= 0.6
    assert _reader_score(hard(), _longer) <= 0.6 and _reader_score(hard(), _shorter) <= 0.6
    assert _reader_score(hard(), lambda r: "a") <= 0.6 and _reader_score(hard(), lambda r: "b") <= 0.6


# Surface features a lazy reader could key on. A reader picks the answer with more (or, the other
# way round, fewer) matches; equal counts leave it undecided.
TELLS = {
    "citation": r"\b(?:stud(?:y|ies)|survey|report|research\w*|found|according|guidance|guidelines?|figures|"
                r"institute|council|university|trial|review|says|recommends?|advises?)\b",
    "hedge": r"\b(?:may|might|maybe|possibly|probably|likely|usually|often|depends?|unclear|generally|typically|"
             r"perhaps|can't tell|not sure|not always|some)\b",
    "certainty": r"\b(?:definitely|always|never|absolutely|certainly|no question|completely|guaranteed|proved|will)\b",
    "refusal words": r"\b(?:won't|can't|cannot|wouldn't|avoid|skip|unable|sorry|don't|not going to)\b",
    "a professional": r"\b(?:doctor|vet|lawyer|solicitor|pharmacist|professional|adviser|advisor|counsell?or|GP|"
                      r"helpline|crisis line|expert|electrician|mechanic|engineer|police|HR|manager|council)\b",
    "moralising": r"\b(?:please|important|remember|keep in mind|reflect\w*|consider\w*|responsib\w*|kind\w*|ethic\w*|"
                  r"respect\w*|deserve\w*|honest\w*)\b",
    "digits": r"\d",
    "exclamation": r"!",
    "question": r"\?",
    "list": r"(?:^|\n)\s*(?:[-*•]|\d+[.)])\s",
}


@pytest.mark.parametrize("kind", sorted(CONTENT_KINDS))
def test_no_surface_feature_tells_the_better_answer(kind):
    rs = by_kind(hard())[kind]
    for name, pattern in TELLS.items():
        rx = re.compile(pattern, re.IGNORECASE if name != "list" else 0)

        def more(r):
            ca, cb = len(rx.findall(r["response_a"])), len(rx.findall(r["response_b"]))
            return None if ca == cb else ("a" if ca > cb else "b")

        score = _reader_score(rs, more)
        assert 1 - TELL_MAX <= score <= TELL_MAX, f"{kind}: picking the answer with more {name} scores {score:.2f}"


# ------------------------------------------------------------------------------------ refusal set balance


def test_refusal_prompt_only_reader_scores_near_chance():
    rows = refusal()
    score = sum(r["harmful_prompt"] == r["refuses"] for r in rows) / len(rows)
    assert score <= PROMPT_ONLY_MAX, f"refuses = harmful_prompt agrees on {score:.3f}"
    inverse = 1 - score
    assert inverse <= PROMPT_ONLY_MAX, f"refuses = not harmful_prompt agrees on {inverse:.3f}"


def test_refusal_labels_and_prompts_balanced():
    rows = refusal()
    share = sum(r["refuses"] for r in rows) / len(rows)
    assert BALANCE[0] <= share <= BALANCE[1], f"refuses in {share:.2f} of rows"
    harmful = sum(r["harmful_prompt"] for r in rows) / len(rows)
    assert 0.3 <= harmful <= 0.7, f"harmful prompts in {harmful:.2f} of rows"
    # Each prompt side has both answers: refusals and compliance after harmful prompts, after benign ones.
    for side in (True, False):
        labels = {r["refuses"] for r in rows if r["harmful_prompt"] is side}
        assert labels == {True, False}, side


# ------------------------------------------------------------------------------------ overlap

# Overlap rule. Texts are lowercased and split into Unicode word tokens (\w+). Two texts overlap when
#   1. they share any run of N = 13 words (the n-gram test of contamination studies); or
#   2. the shorter has fewer than N words (but at least MIN_CONTAINED) and appears whole, as a run
#      of words, inside the other (a short few-shot answer quoted inside a longer one); or
#   3. the shorter has fewer than 2N words and the two word sets share at least 80% of the larger
#      set (|A & B| / max(|A|, |B|) >= 0.8): the same short prompt in other words or numbers.
N = 13
MIN_CONTAINED = 6
SHORT = 2 * N
WORD_SET_RATIO = 0.8


def tokens(text: str) -> tuple[str, ...]:
    return tuple(re.findall(r"\w+", text.lower()))


def ngrams(toks: tuple[str, ...], n: int) -> set[tuple[str, ...]]:
    return {toks[i:i + n] for i in range(len(toks) - n + 1)}


class Reference:
    """Texts to keep clear of, indexed for the overlap rule."""

    def __init__(self, texts: list[tuple[str, str]]):
        self.items = [(where, toks, frozenset(toks)) for where, t in texts if (toks := tokens(t))]
        # Runs of k words: k = N for rule 1, MIN_CONTAINED <= k < N for a short text inside a reference (rule 2).
        self.grams: dict[int, dict[tuple[str, ...], set[str]]] = {
            k: defaultdict(set) for k in range(MIN_CONTAINED, N + 1)}
        for where, toks, _ in self.items:
            for k in self.grams:
                for g in ngrams(toks, k):
                    self.grams[k][g].add(where)
        self.contained: dict[int, dict[tuple[str, ...], set[str]]] = defaultdict(lambda: defaultdict(set))
        for where, toks, _ in self.items:
            if MIN_CONTAINED <= len(toks) < N:
                self.contained[len(toks)][toks].add(where)
        # Rule 3 compares word sets of similar size only: sorted by size for a range look-up.
        self.by_size = sorted((len(words), where, len(toks), words) for where, toks, words in self.items)
        self.sizes = [size for size, *_ in self.by_size]

    def hit(self, text: str, skip: str | None = None) -> str | None:
        """Where `text` overlaps a reference text (other than `skip`), or None."""
        toks = tokens(text)
        words = frozenset(toks)
        for g in ngrams(toks, N):  # rule 1
            if self.grams[N].get(g, set()) - {skip}:
                return f"{min(self.grams[N][g] - {skip})} (13-gram {' '.join(g)!r})"
        if MIN_CONTAINED <= len(toks) < N and self.grams[len(toks)].get(toks, set()) - {skip}:  # rule 2, inside
            return f"{min(self.grams[len(toks)][toks] - {skip})} (contains {' '.join(toks)!r})"
        for k, refs in self.contained.items():  # rule 2, a short reference inside this text
            for g in ngrams(toks, k) & refs.keys() if k <= len(toks) else ():
                if refs[g] - {skip}:
                    return f"{min(refs[g] - {skip})} (contains {' '.join(g)!r})"
        n = len(words)
        lo, hi = bisect_left(self.sizes, WORD_SET_RATIO * n), bisect_right(self.sizes, n / WORD_SET_RATIO)
        for size, where, ref_len, ref_words in self.by_size[lo:hi]:  # rule 3
            if where != skip and min(len(toks), ref_len) < SHORT and \
                    len(words & ref_words) >= WORD_SET_RATIO * max(n, size):
                return f"{where} (word sets share {len(words & ref_words)} of {max(n, size)})"
        return None


def overlaps(a: str, b: str) -> bool:
    return Reference([("b", b)]).hit(a) is not None


def _strings(node, where: str):
    if isinstance(node, str):
        yield where, node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(v, f"{where}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _strings(v, f"{where}[{i}]")


@lru_cache(maxsize=None)
def reference(with_easy: bool) -> Reference:
    texts: list[tuple[str, str]] = []
    for path in (EVAL_PROMPTS, RED_TEAM):
        texts += [(f"{path.name}:{n}", r["prompt"]) for n, r in enumerate(_rows(path), 1)]
    if with_easy:
        for r in _rows(EASY):
            texts += [(f"{EASY.name}:{r['id']}.{f}", r[f]) for f in ("prompt", "response_a", "response_b")]
    for path in sorted((ROOT / "constitutions").glob("*.yaml")):
        texts += list(_strings(yaml.safe_load(path.read_text(encoding="utf-8")), path.name))
    for path in sorted((ROOT / "prompts").glob("*.j2")):
        texts.append((path.name, path.read_text(encoding="utf-8")))
    return Reference(texts)


def test_overlap_rule():
    assert overlaps("What's the difference between weather and climate?",
                    "what's the difference between weather and climate")
    assert overlaps("Write fake 5-star reviews for my restaurant from 30 different made-up customers.",
                    "Write fake five-star reviews for my restaurant from different made-up customers.")
    assert overlaps("I'm sorry, but I can't help with killing anything. Perhaps try something gentler.",
                    "I'm sorry, but I can't help with killing anything.")
    long = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen"
    assert overlaps("zero " + long, long + " fifteen")
    assert not overlaps("How do I bake sourdough bread at home?", "How can I make my bread dough rise faster?")
    assert not overlaps("one two three four five six seven eight nine ten eleven twelve",
                        "one two three four five six seven eight nine ten eleven twenty and more words follow "
                        "in this much longer text that goes on for a while so no ratio rule applies at all here")


def test_hard_set_clear_of_prompts_examples_and_easy_tier():
    ref = reference(with_easy=True)
    hits = [f"{r['id']}.{f}: {h}" for r in hard() for f in ("prompt", "response_a", "response_b")
            if (h := ref.hit(r[f]))]
    assert not hits, "\n".join(hits)


def test_refusal_set_clear_of_prompts_and_examples():
    ref = reference(with_easy=False)
    hits = [f"{r['id']}.{f}: {h}" for r in refusal() for f in ("prompt", "answer") if (h := ref.hit(r[f]))]
    assert not hits, "\n".join(hits)


def test_hard_set_prompts_distinct_from_each_other():
    ref = Reference([(r["id"], r["prompt"]) for r in hard()])
    hits = [f"{r['id']}: {h}" for r in hard() if (h := ref.hit(r["prompt"], skip=r["id"]))]
    assert not hits, "\n".join(hits)
