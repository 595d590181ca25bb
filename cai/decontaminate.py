"""Decontamination: training prompts that overlap held-out eval prompts are left out.

`cai generate --decontaminate FILE...` reads each FILE as any prompt set cai reads (JSONL, CSV,
Parquet, text, a `datasets` folder; by the run's --prompt-field or `prompt`, whichever reads more
rows, with the usual `messages`/`turns` fallbacks) and leaves out every training prompt that
overlaps one of its prompts. The same `Decontaminator` serves `cai export` and `cai iterate`
(`hits`), and `eval_overlap` tells `cai eval` how many of its prompts a model's training data
holds.

Two prompts overlap (texts compared as `cai.dedup.tokens` gives them: NFKC, casefold, words, or
characters in scripts without spaces; user turns only) when

* they share a run of NGRAM (13) tokens: the usual choice since GPT-3's contamination study
  (Brown et al. 2020, app. C): long enough that a shared run is a copy, not shared phrasing; or
* the shorter of the two has fewer than 13 tokens and at least SHORT_RATIO (0.8) of its distinct
  3-token shingles occur in the other. A short prompt cannot hold a 13-gram, so this asks for
  what GPT-3 asked of test items shorter than its n-gram (the whole item present), allowing small
  edits: punctuation, case, a prefix or suffix on the longer side ("Please answer: What is the
  capital of France?" holds all of "What is the capital of France?"), one changed word at an end
  of a prompt of 10 or more tokens. Why shingles and not a token set: "How do I make a kite?"
  and "How do I make a bomb?" share 5 of 6 tokens (0.83) but only 3 of 4 shingles (0.75), and word
  order is what tells a paraphrase of a question from a question about something else. Why one
  side: a short training prompt fully inside an eval prompt, or an eval prompt fully inside a
  training prompt, both put the eval's text into training; leaving out a few training prompts too
  many costs little, an inflated eval score costs more.
* Prompts of one or two tokens overlap only when their tokens are equal (a one-word eval prompt
  such as "Hi" would otherwise claim every training prompt that says hi).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from cai.dedup import gram_hashes, tokens, user_text
from cai.errors import UsageError
from cai.inputs import FALLBACK_FIELDS, PromptRow, iter_prompts, iter_records, prompts_source

NGRAM = 13
SHORT_RATIO = 0.8
SHORT_GRAM = 3


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, or of a folder's files (relative names and contents, in name order)."""
    path = Path(path)
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        if f is not path:
            h.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _read_rows(path: str | Path, prompt_field: str) -> tuple[list[PromptRow], str]:
    """The file's prompt rows and the field they came from: the given field or `prompt`, whichever
    reads more rows (bad rows are skipped: an eval set's odd row should not stop a run)."""
    fields = list(dict.fromkeys([prompt_field, "prompt"]))
    best: tuple[list[PromptRow], str] = ([], prompt_field)
    last: UsageError | None = None
    for f in fields:
        try:
            rows = list(iter_prompts(path, prompt_field=f, on_bad_row="skip"))
        except UsageError as exc:  # a CSV or Parquet file without that column
            last = last or exc
            continue
        if len(rows) > len(best[0]):
            best = rows, f
    if best[0]:
        return best
    if last is not None:
        raise UsageError(f"--decontaminate: {last}") from None
    raise UsageError(f"--decontaminate {path}: no usable prompt (fields tried: {', '.join(fields)}, "
                     f"{', '.join(FALLBACK_FIELDS)})")


class Decontaminator:
    """An index of eval prompts; `hits(text)` names the ones a training prompt overlaps.

    Build it with `from_files(paths)` (any prompt sets) or `from_prompts([(id, prompt), ...])`.
    Eval ids: a row's `id` column where it has one, else `PATH:ROW` (ROW counted from 1)."""

    def __init__(self, *, ngram: int = NGRAM, ratio: float = SHORT_RATIO):
        self.ngram, self.ratio = ngram, ratio
        self.ids: list[str] = []
        self.files: list[dict] = []
        self._long: dict[int, list[int]] = {}  # ngram hash → eval prompts holding it
        self._tri: dict[int, list[int]] = {}  # 3-gram hash → eval prompts holding it
        self._tri_short: dict[int, list[int]] = {}  # the same, of eval prompts under `ngram` tokens
        self._ntok: list[int] = []
        self._ntri: list[int] = []
        self._tiny: dict[tuple[str, ...], list[int]] = {}  # eval prompts of 1-2 tokens, by their tokens

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_files(cls, paths: Iterable[str | Path], *, prompt_field: str = "prompt") -> "Decontaminator":
        dec = cls()
        for path in paths:
            src = prompts_source(path)
            rows, used = _read_rows(path, prompt_field)
            for row in rows:
                rid = row.meta.get("id")
                dec.add(str(rid) if rid is not None else f"{path}:{row.index + 1}", row.messages)
            dec.files.append({"path": str(path), "sha256": file_sha256(src), "prompts": len(rows),
                              **({"prompt_field": used} if used != "prompt" else {})})
        return dec

    @classmethod
    def from_prompts(cls, prompts: Iterable[tuple[str, str | list[dict]]]) -> "Decontaminator":
        dec = cls()
        for eval_id, prompt in prompts:
            dec.add(str(eval_id), prompt)
        return dec

    def add(self, eval_id: str, prompt: str | list[dict]) -> None:
        toks = tokens(user_text(prompt))
        e = len(self.ids)
        self.ids.append(eval_id)
        self._ntok.append(len(toks))
        for g in set(gram_hashes(toks, self.ngram)):
            self._long.setdefault(g, []).append(e)
        tri = set(gram_hashes(toks, SHORT_GRAM))
        self._ntri.append(len(tri))
        for g in tri:
            self._tri.setdefault(g, []).append(e)
            if len(toks) < self.ngram:
                self._tri_short.setdefault(g, []).append(e)
        if 0 < len(toks) < SHORT_GRAM:
            self._tiny.setdefault(tuple(toks), []).append(e)

    def hits_tokens(self, toks: list[str]) -> list[int]:
        """The eval prompts (indices into `ids`) that a prompt of these tokens overlaps."""
        n = len(toks)
        found: set[int] = set()
        if n >= self.ngram:
            for g in gram_hashes(toks, self.ngram):
                found.update(self._long.get(g, ()))
        if n < SHORT_GRAM:
            if n:
                found.update(self._tiny.get(tuple(toks), ()))
            return sorted(found)
        tri = set(gram_hashes(toks, SHORT_GRAM))
        index = self._tri if n < self.ngram else self._tri_short
        shared: Counter[int] = Counter()
        for g in tri:
            shared.update(index.get(g, ()))
        for e, c in shared.items():
            if e in found:
                continue
            shorter = len(tri) if n <= self._ntok[e] else self._ntri[e]
            if shorter and c >= self.ratio * shorter - 1e-9:
                found.add(e)
        return sorted(found)

    def hits(self, prompt: str | list[dict]) -> list[str]:
        """Ids of the eval prompts this prompt (a text, or messages: their user turns) overlaps."""
        return [self.ids[e] for e in self.hits_tokens(tokens(user_text(prompt)))]

    def record(self) -> dict:
        """What run.yaml records of the index."""
        return {"files": self.files, "ngram": self.ngram, "short_ratio": self.ratio}


# ---------------------------------------------------------------------------------------------
# How many eval prompts a model's training data holds (`cai eval`'s warning).


def _record_texts(raw: dict, prompt_field: str) -> Iterable[str]:
    """The user text of one data row: a prompt set's row, an SFT row ({"messages"}), a DPO or KTO
    row ({"prompt": text or messages, ...}), an MT-Bench row ({"turns"})."""
    for f in dict.fromkeys((prompt_field, "prompt", "messages", "turns")):
        v = raw.get(f)
        if isinstance(v, str) and v.strip():
            yield v
            return
        if isinstance(v, list) and v:
            if all(isinstance(t, str) for t in v):
                yield "\n".join(v)
            else:
                yield user_text([m for m in v if isinstance(m, dict) and isinstance(m.get("content"), str)])
            return


def training_texts(training: str | Path | Iterable, *, prompt_field: str = "prompt") -> Iterable[str]:
    """The user texts of training data, streamed: a run folder (its generations' prompts), any data
    file or folder cai reads or writes (prompt sets, `cai export` output: JSONL, Parquet, a
    `datasets` folder), or an iterable of texts or message lists."""
    if not isinstance(training, (str, Path)):
        for t in training:
            yield t if isinstance(t, str) else user_text(t)
        return
    path = Path(training)
    from cai.records import GENERATIONS, read_rows

    if path.is_dir() and (path / GENERATIONS).exists():
        for row in read_rows(path / GENERATIONS):
            yield user_text(row.get("prompt") or [])
        return
    for raw in iter_records(path, prompt_field=prompt_field):
        yield from _record_texts(raw, prompt_field)


@dataclass
class Overlap:
    """Eval prompts found in training data."""

    n: int  # eval prompts that some training prompt overlaps
    total: int  # eval prompts checked
    ids: list[str] = field(default_factory=list)  # which (in eval order)
    training_rows: int = 0  # training rows read

    def line(self) -> str:
        shown = ", ".join(self.ids[:5]) + (", ..." if len(self.ids) > 5 else "")
        return (f"{self.n} of {self.total} eval prompts appear in the training data ({self.training_rows} rows read)"
                + (f": {shown}" if self.n else ""))


def eval_overlap(eval_prompts: str | Path | Iterable, training: str | Path | Iterable, *,
                 prompt_field: str = "prompt") -> Overlap:
    """How many of `eval_prompts` (a prompt file, or PromptRows, texts or message lists) overlap
    some prompt of `training` (see `training_texts`), by the rule of the module doc. The eval side
    is indexed, the training side streamed once."""
    if isinstance(eval_prompts, (str, Path)):
        dec = Decontaminator.from_files([eval_prompts], prompt_field=prompt_field)
    else:
        def items():
            for i, p in enumerate(eval_prompts):
                if isinstance(p, PromptRow):
                    yield str(p.meta.get("id", p.index + 1)), p.messages
                else:
                    yield str(i + 1), p
        dec = Decontaminator.from_prompts(items())
    hit: set[int] = set()
    rows = 0
    for text in training_texts(training, prompt_field=prompt_field):
        rows += 1
        if len(hit) < len(dec):
            hit.update(dec.hits_tokens(tokens(text)))
    return Overlap(n=len(hit), total=len(dec), ids=[dec.ids[e] for e in sorted(hit)], training_rows=rows)
