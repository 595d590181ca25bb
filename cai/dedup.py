"""Prompt dedup for `cai generate --dedup exact|near|none`, decided before any engine starts.

exact (the default): two prompts are the same when their messages are equal after normalising
each text: Unicode NFKC, Unicode casefold, every run of whitespace one space, stripped. "Tell me
a JOKE " and "tell me a joke" are one prompt; identical copies (the old `duplicates` count) are
a subset.

near: also prompts whose user turns are nearly the same text: the Jaccard similarity of their
sets of 3-token shingles is at least THRESHOLD (0.8), estimated with MinHash. Tokens are the
quality checks' words (cai/quality.py `words`): the NFKC-casefolded text's runs of Unicode word
characters, combining marks included (so Devanagari or Thai vowel signs do not split a word); in
scripts written without spaces between words (Han, Hiragana, Katakana, Thai, Lao, Khmer, Myanmar)
every character is a token, so shingles there are character 3-grams.

Why 3 tokens and 0.8: a shingle of 3 keeps word order (a bag of words would call "dog bites man"
and "man bites dog" one prompt), while one changed word disturbs only the 3 shingles around it:
a 30-word prompt with one word changed keeps J = 25/31 ~ 0.81, one of 40 words 0.85, and
"Please answer:" before a 12-word prompt gives J = 10/12. Lower, prompts that merely share a
template and a topic start to merge ("How do I bake bread?" / "How do I bake a cake?" are at J =
0.4, "Write a short poem about the sea at night" / "... about the mountains in winter" at 0.4),
which would throw away the variety a prompt set is for. Prompts of a few words have few
shingles, so for them near dedup is close to exact dedup (punctuation aside): deliberately, as a
changed word in a 5-word prompt usually changes what it asks.

Why a maintained library (datasketch) rather than our own hashing: MinHash needs hash families
whose minima are independent and unbiased (datasketch's affine permutations over a SHA-1 input
hash, tested for its estimates and the same on every platform; run.yaml records the library and
its scheme, `dedup.minhash`, since datasketch 2.0 changed it), and the banding of
LSH (b bands of r rows, chosen so that the S-curve 1 - (1 - J^r)^b cuts at the threshold) is math
that is easy to get subtly wrong; `MinHashLSH(threshold, num_perm, weights)` picks b and r by
integrating the false positive and false negative areas. We weight false negatives 0.95, since
every LSH candidate is verified: with 64 permutations that gives 10 bands of 6 rows, which makes a
pair at J = 0.8 a candidate with probability 0.95 (0.99 at 0.85, 0.15 at 0.5, 0.007 at 0.3).
A candidate is a near duplicate when the two signatures' estimated Jaccard is >= THRESHOLD
(b-bit MinHash, Li & König 2010: the top 8 bits of each of the 64 minima; the estimate corrects
for the 1/256 chance agreement).

Memory, bounded for a million prompts and more: nothing per row is a Python object. During the
one streamed pass every row adds to flat arrays: 16 bytes of exact key, 8 of messages key (to tell
identical copies), 8 of source row and 1 of flags; with --dedup near also its 10 band hashes (80
bytes) and its 64-byte b-bit signature. MinHashLSH's own in-memory index (a dict of sets per band)
measured ~1.8 KB a row with its default 5 bands, so the bands are not kept in it: after the pass each band's hashes are
sorted (numpy), rows that share a bucket with nobody drop out, and only the rows that do share one
are walked in input order, a bucket remembering at most BUCKET_CANDIDATES of its kept rows.
Measured on a million synthetic prompts (RSS): 34 bytes a row held during the pass and 85 at the
peak while deciding for exact, 179 and 345 for near; what stays for the run is 1 byte a row (each
row's decision).

Deterministic and resume-safe: a row's fate depends only on the rows before it in the input
(the first of a set of duplicates is kept, a later one names it), never on what a run folder
already holds, so a resumed run, and every shard of `--shard I/N`, computes the same decisions.
Dedup comes first, then decontamination of what is left, then the shard's share of the rest.
"""

from __future__ import annotations

import functools
import hashlib
import json
import unicodedata
from array import array
from dataclasses import dataclass, field
from typing import Callable, Iterable, Literal

from cai.inputs import PromptRow, Shard, messages_key
from cai.quality import words

Mode = Literal["exact", "near", "none"]
MODES: tuple[str, ...] = ("exact", "near", "none")
THRESHOLD = 0.8  # Jaccard of 3-token shingle sets at which two prompts are one (near)
SHINGLE = 3  # tokens per shingle
NUM_PERM = 64  # MinHash permutations
MINHASH_SEED = 1
LSH_WEIGHTS = (0.05, 0.95)  # (false positive, false negative) weights for MinHashLSH's choice of bands
BUCKET_CANDIDATES = 8  # kept rows a bucket remembers as candidates for later rows
SHOWN = 100  # skipped and decontaminated rows listed in run.yaml (the counts are complete)
_CHANCE = 1 / 256  # two different 8-bit values agree by chance
_SEP = "\x1f"

# A row's decision (Selection.reasons): kept, or why not.
KEPT, EXACT, NEAR, DECONTAMINATED, OTHER_SHARD = 0, 1, 2, 3, 4
_HAS_SIG, _CONTAMINATED, _NOT_MINE = 1, 2, 4  # flags collected in the pass

def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


def normalise(text: str) -> str:
    """NFKC, Unicode casefold, whitespace runs as one space, stripped: what exact dedup compares."""
    return " ".join(_fold(text).split())


def exact_key(messages: list[dict[str, str]]) -> bytes:
    """16 bytes: equal for prompts whose messages are equal after `normalise`."""
    norm = [[m["role"], normalise(m["content"])] for m in messages]
    return hashlib.blake2b(json.dumps(norm, ensure_ascii=False).encode(), digest_size=16).digest()


def user_text(prompt: str | list[dict[str, str]]) -> str:
    """The text near dedup and decontamination compare: the user turns (a system prompt shared by
    every row would otherwise make all of them alike)."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(m.get("content") or "" for m in prompt if m.get("role", "user") == "user")


def tokens(text: str) -> list[str]:
    """The tokens dedup and decontamination compare: the quality checks' words (cai/quality.py,
    one tokeniser for the project): the NFKC-casefolded text's runs of Unicode word characters,
    combining marks included and apostrophes inside a word kept ("don't"), and every character
    (with its marks) in scripts written without spaces."""
    return words(text)


def shingles(toks: list[str], k: int = SHINGLE) -> list[str]:
    """The k-token shingles of a token list; a text of fewer than k tokens is one shingle."""
    if not toks:
        return []
    if len(toks) < k:
        return [_SEP.join(toks)]
    return [_SEP.join(toks[i:i + k]) for i in range(len(toks) - k + 1)]


@functools.lru_cache(maxsize=1 << 16)
def _token_hash(tok: str) -> int:
    return int.from_bytes(hashlib.blake2b(tok.encode(), digest_size=8).digest(), "little")


def gram_hashes(toks: list[str], n: int) -> list[int]:
    """A hash of every n-token window (the same in every process: tuples of ints hash
    deterministically in Python, unlike strings)."""
    th = [_token_hash(t) for t in toks]
    return [hash(tuple(th[i:i + n])) for i in range(len(th) - n + 1)]


@functools.cache
def lsh_params(threshold: float = THRESHOLD, num_perm: int = NUM_PERM) -> tuple[int, int]:
    """(bands, rows per band) as datasketch's MinHashLSH chooses them for the threshold."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=LSH_WEIGHTS)
    return lsh.b, lsh.r


def minhash_version() -> str:
    """The library and scheme the signatures come from: shards must agree on it (run.yaml records it)."""
    from importlib.metadata import version

    from datasketch import MinHash

    return f"datasketch {version('datasketch')} {MinHash(num_perm=1).scheme}"


class _Signer:
    """A prompt's shingles → (band hashes, 8-bit signature)."""

    def __init__(self, threshold: float):
        from datasketch import MinHash

        self.bands, self.rows = lsh_params(threshold)
        self._m = MinHash(num_perm=NUM_PERM, seed=MINHASH_SEED)

    def __call__(self, sh: list[str]) -> tuple[list[int], bytes]:
        m = self._m
        m.clear()
        m.update_batch([s.encode() for s in set(sh)])
        hv = m.hashvalues.astype("<u4")
        raw, step = hv.tobytes(), 4 * self.rows
        bands = [int.from_bytes(hashlib.blake2b(raw[i * step:(i + 1) * step], digest_size=8).digest(), "little")
                 for i in range(self.bands)]
        return bands, (hv >> 24).astype("u1").tobytes()


def estimated_jaccard(sig_a: bytes, sig_b: bytes) -> float:
    """The Jaccard similarity two 8-bit signatures estimate."""
    same = sum(a == b for a, b in zip(sig_a, sig_b)) / len(sig_a)
    return (same - _CHANCE) / (1 - _CHANCE)


def near_signature(text: str, threshold: float = THRESHOLD) -> bytes | None:
    """The 8-bit signature near dedup compares a prompt by (None: no word in it); for checks and
    tests: `estimated_jaccard(near_signature(a), near_signature(b))`."""
    sh = shingles(tokens(text))
    return _Signer(threshold)(sh)[1] if sh else None


@dataclass
class Selection:
    """Which prompt rows a run generates, by position in the input's stream of good rows."""

    mode: str
    threshold: float
    total: int
    reasons: bytes  # one decision per row (KEPT, EXACT, NEAR, DECONTAMINATED, OTHER_SHARD)
    exact: int = 0
    near: int = 0
    identical: int = 0  # exact duplicates whose messages are byte-for-byte the same
    decontaminated: int = 0
    other_shard: int = 0
    kept: int = 0
    skipped: list[dict] = field(default_factory=list)  # the first SHOWN duplicates, each naming its original
    contaminated: list[dict] = field(default_factory=list)  # the first SHOWN decontaminated rows
    digest: str = ""  # of the rows read, in order: shards of one run read the same
    shard: Shard | None = None
    decontaminator: object | None = None
    bands: tuple[int, int] | None = None

    def keep(self, position: int) -> bool:
        return self.reasons[position] == KEPT

    def dedup_record(self) -> dict:
        rec: dict = {"mode": self.mode}
        if self.mode == "none":
            return rec
        rec.update(exact=self.exact, near=self.near, identical=self.identical)
        if self.mode == "near":
            rec.update(threshold=self.threshold, shingle=SHINGLE, num_perm=NUM_PERM,
                       bands=list(self.bands or lsh_params(self.threshold)), minhash=minhash_version())
        rec["skipped"] = self.skipped
        if self.exact + self.near > len(self.skipped):
            rec["skipped_shown"] = f"the first {len(self.skipped)} of {self.exact + self.near}"
        return rec

    def decontam_record(self) -> dict | None:
        dec = self.decontaminator
        if dec is None:
            return None
        rec = {**dec.record(), "n": self.decontaminated, "ids": self.contaminated}
        if self.decontaminated > len(self.contaminated):
            rec["ids_shown"] = f"the first {len(self.contaminated)} of {self.decontaminated}"
        return rec

    def shard_record(self) -> dict | None:
        return {**self.shard.record(), "prompts": self.kept} if self.shard else None

    def lines(self) -> list[str]:
        out = []
        if self.mode != "none" and (self.exact or self.near or self.mode == "near"):
            same = f"; {self.identical} of them identical" if self.identical else ""
            exact = f"{self.exact} exact (same text up to case, spacing and Unicode form{same})"
            near = (f", {self.near} near (estimated Jaccard >= {self.threshold} of {SHINGLE}-token shingles)"
                    if self.mode == "near" else "")
            out.append(f"dedup          {self.exact + self.near} duplicate prompts left out: {exact}{near}; "
                       "run.yaml `dedup` names each one's original")
        if self.decontaminator is not None:
            files = ", ".join(f["path"] for f in self.decontaminator.files)
            out.append(f"decontaminated {self.decontaminated} prompts left out for overlapping {files} (a shared "
                       f"{self.decontaminator.ngram}-token run, or {self.decontaminator.ratio:g} of a short prompt's "
                       "3-token shingles); run.yaml `decontaminated` lists them")
        if self.shard:
            out.append(f"shard          {self.shard}: {self.kept} of the {self.kept + self.other_shard} prompts left "
                       "(the others belong to the other shards)")
        return out


class Selector:
    """Collects the rows of one streamed pass (`add`), then decides them all (`finish`).

    `decontaminator` (cai.decontaminate.Decontaminator): rows overlapping its eval prompts are left
    out. `shard`: only the rows whose prompt key falls in it are kept."""

    def __init__(self, mode: str = "exact", *, decontaminator=None, shard: Shard | None = None,
                 threshold: float = THRESHOLD):
        if mode not in MODES:
            from cai.errors import UsageError

            raise UsageError(f"dedup must be one of {', '.join(MODES)}, not {mode!r}")
        self.mode, self.threshold, self.shard = mode, threshold, shard
        self.dec = decontaminator if decontaminator is not None and len(decontaminator) else None
        self._keep_dec = decontaminator
        self.n = 0
        self._exact = bytearray()  # 16 bytes a row
        self._raw = array("Q")  # 8 bytes of the messages key a row
        self._source = array("q")  # the row's index in its source
        self._flags = bytearray()
        self._bands = array("Q")
        self._sigs = bytearray()
        self._hits: dict[int, list[str]] = {}  # position → eval ids, for the first rows found
        self._has_ids = False
        self._digest = hashlib.sha256()
        self._signer = _Signer(threshold) if mode == "near" else None
        if self._signer:
            self._no_bands = [0] * self._signer.bands
            self._no_sig = bytes(NUM_PERM)

    def add(self, row: PromptRow) -> None:
        pos = self.n
        self.n += 1
        raw = messages_key(row.messages)
        self._digest.update(raw)
        self._source.append(row.index)
        flags = 0
        if self.shard is not None and not self.shard.takes(raw.hex()):
            flags |= _NOT_MINE
        if self.mode != "none":
            self._exact += exact_key(row.messages)
            self._raw.append(int.from_bytes(raw[:8], "little"))
        if self._signer or self.dec:
            toks = tokens(user_text(row.messages))
        if self._signer:
            sh = shingles(toks)
            if sh:
                bands, sig = self._signer(sh)
                flags |= _HAS_SIG
            else:
                bands, sig = self._no_bands, self._no_sig
            self._bands.extend(bands)
            self._sigs += sig
        if self.dec:
            hits = self.dec.hits_tokens(toks)
            if hits:
                flags |= _CONTAMINATED
                if len(self._hits) < 4 * SHOWN:
                    self._hits[pos] = [self.dec.ids[e] for e in hits]
        if not self._has_ids and row.meta.get("id") is not None:
            self._has_ids = True
        self._flags.append(flags)

    def finish(self, reread: Callable[[], Iterable[PromptRow]] | None = None) -> Selection:
        """Decide every row. `reread` streams the same rows again; given, and when the rows have an
        `id` column, the listed rows are named by it too."""
        import numpy as np

        n = self.n
        reason = np.zeros(n, np.uint8)
        dup_of = np.full(n, -1, np.int64)
        identical = 0
        if self.mode != "none" and n:
            key = np.frombuffer(self._exact, dtype=">u8").reshape(n, 2)
            order = np.lexsort((np.arange(n), key[:, 1], key[:, 0]))
            ks = key[order]
            new = np.ones(n, bool)
            new[1:] = (ks[1:] != ks[:-1]).any(axis=1)
            first = order[np.maximum.accumulate(np.where(new, np.arange(n), 0))]
            dup_of[order] = first
            is_dup = dup_of != np.arange(n)
            dup_of[~is_dup] = -1
            reason[is_dup] = EXACT
            raw = np.frombuffer(self._raw, np.uint64)
            identical = int((raw[is_dup] == raw[dup_of[is_dup]]).sum())
            del key, order, ks, new, first, is_dup, raw
        self._exact = bytearray()
        flags = np.frombuffer(self._flags, np.uint8)
        if self.mode == "near":
            self._near(reason, dup_of, flags)
        reason[(reason == KEPT) & ((flags & _CONTAMINATED) != 0)] = DECONTAMINATED
        reason[(reason == KEPT) & ((flags & _NOT_MINE) != 0)] = OTHER_SHARD
        counts = np.bincount(reason, minlength=5)
        sel = Selection(mode=self.mode, threshold=self.threshold, total=n, reasons=reason.tobytes(),
                        exact=int(counts[EXACT]), near=int(counts[NEAR]), identical=identical,
                        decontaminated=int(counts[DECONTAMINATED]), other_shard=int(counts[OTHER_SHARD]),
                        kept=int(counts[KEPT]), digest=self._digest.hexdigest()[:16], shard=self.shard,
                        decontaminator=self._keep_dec,
                        bands=lsh_params(self.threshold) if self.mode == "near" else None)
        src = self._source
        listed = np.flatnonzero((reason == EXACT) | (reason == NEAR))[:SHOWN].tolist()
        sel.skipped = [{"source_row": src[p], "kind": "exact" if reason[p] == EXACT else "near",
                        "duplicate_of": src[int(dup_of[p])]} for p in listed]
        dec_listed = [p for p in sorted(self._hits) if reason[p] == DECONTAMINATED][:SHOWN]
        sel.contaminated = [{"source_row": src[p], "matches": self._hits[p]} for p in dec_listed]
        if self._has_ids and reread is not None and (listed or dec_listed):
            self._name(sel, reread, listed + [int(dup_of[p]) for p in listed] + dec_listed)
        self._bands, self._sigs, self._raw = array("Q"), bytearray(), array("Q")
        return sel

    def _near(self, reason, dup_of, flags) -> None:
        """Near duplicates among the rows exact dedup kept, in input order (see the module doc)."""
        import numpy as np

        n = self.n
        b = self._signer.bands
        elig = np.flatnonzero(((flags & _HAS_SIG) != 0) & (reason == KEPT))
        m = len(elig)
        if m < 2:
            return
        bands = np.frombuffer(self._bands, np.uint64).reshape(n, b)[elig]
        sigs = np.frombuffer(self._sigs, np.uint8).reshape(n, NUM_PERM)
        runs = np.full((m, b), -1, np.int32)
        shared = np.zeros(m, bool)
        for k in range(b):
            col = bands[:, k]
            order = np.argsort(col, kind="stable")
            cs = col[order]
            new = np.ones(m, bool)
            new[1:] = cs[1:] != cs[:-1]
            rid_sorted = np.cumsum(new) - 1
            sizes = np.bincount(rid_sorted)
            rid = np.empty(m, np.int64)
            rid[order] = rid_sorted
            alone = sizes[rid] == 1
            rid[alone] = -1
            runs[:, k] = rid
            shared |= ~alone
            del col, order, cs, new, rid_sorted, sizes, rid, alone
        del bands
        rows = np.flatnonzero(shared)
        kept_in: list[dict[int, list[int]]] = [{} for _ in range(b)]
        # The same cut as estimated_jaccard(...) >= threshold, on the count of equal bytes.
        need = int(np.ceil((self.threshold * (1 - _CHANCE) + _CHANCE) * NUM_PERM - 1e-9))
        for j, rids in zip(rows.tolist(), runs[rows].tolist()):
            cands: set[int] = set()
            for k, rid in enumerate(rids):
                if rid >= 0:
                    cands.update(kept_in[k].get(rid, ()))
            original = -1
            if cands:
                ordered = sorted(cands)
                same = (sigs[elig[ordered]] == sigs[elig[j]]).sum(axis=1)
                hit = np.flatnonzero(same >= need)
                if len(hit):
                    original = ordered[int(hit[0])]
            if original >= 0:
                reason[elig[j]] = NEAR
                dup_of[elig[j]] = elig[original]
                continue
            for k, rid in enumerate(rids):
                if rid >= 0:
                    bucket = kept_in[k].setdefault(rid, [])
                    if len(bucket) < BUCKET_CANDIDATES:
                        bucket.append(j)

    @staticmethod
    def _name(sel: Selection, reread: Callable[[], Iterable[PromptRow]], positions: list[int]) -> None:
        wanted = set(positions)
        last = max(wanted)
        ids: dict[int, object] = {}
        for pos, row in enumerate(reread()):
            if pos in wanted and row.meta.get("id") is not None:
                ids[row.index] = row.meta["id"]
            if pos >= last:
                break
        for entry in sel.skipped:
            if entry["source_row"] in ids:
                entry["id"] = ids[entry["source_row"]]
            if entry["duplicate_of"] in ids:
                entry["duplicate_of_id"] = ids[entry["duplicate_of"]]
        for entry in sel.contaminated:
            if entry["source_row"] in ids:
                entry["id"] = ids[entry["source_row"]]
