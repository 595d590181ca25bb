"""Which rows a page embeds when its folder holds more than one page can carry.

The page of a big run holds a sample; every figure on it (counts, per-principle and per-question
analytics, flags) is still computed over all rows. The sample, given a limit (a number of rows, or
a budget in bytes of the rows' JSON on the page):

1. every *priority* row (a run's flagged or flipped rows), lowest hash first, up to half the limit;
2. then the other rows, stratified (a run: by category, last round's principle and verdict):
   first the `MIN_PER_STRATUM` lowest-hashed rows of every stratum, then the rest in order of
   their quantile inside their stratum, so that wherever the limit cuts, each stratum has its
   minimum or its share in proportion to its size, whichever is more;
3. stopped at the limit: a row that would pass it ends the sample.

A row's hash is a keyed BLAKE2b of its id, so the sample depends only on which rows the folder
holds: the same on a rerun, whatever order the files list them in. The page shows the chosen
rows in file order.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

from cai.errors import UsageError

# The default limit: bytes of row JSON on the page. Measured in headless Chromium here (docs/view.md,
# benchmarks/view_scale.py): about 30 MB of rows is where the first paint reaches about 2 s.
DEFAULT_BUDGET = 30_000_000
MIN_PER_STRATUM = 5
_PERSON = b"cai-view-sample"


def row_hash(rid) -> int:
    """A row's rank inside its stratum: 64 bits of a keyed hash of its id (never Python's hash(),
    which changes between processes)."""
    data = str(rid).encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8, person=_PERSON).digest(), "big")


@dataclass(frozen=True)
class Limit:
    """At most `rows` rows and at most `bytes` bytes of row JSON; neither: every row."""
    rows: int | None = None
    bytes: int | None = None

    @property
    def everything(self) -> bool:
        return self.rows is None and self.bytes is None

    def describe(self) -> str:
        if self.rows is not None:
            return f"--rows {self.rows}"
        if self.bytes is not None:
            return f"the page's {self.bytes / 1e6:g} MB budget"
        return "--rows all"


ALL = Limit()
DEFAULT = Limit(bytes=DEFAULT_BUDGET)


def parse_limit(value) -> Limit:
    """`--rows`: a number of rows, `all`, `auto` (the default byte budget) or a size such as 20MB."""
    if isinstance(value, Limit):
        return value
    if value is None:
        return DEFAULT
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise UsageError(f"--rows {value}: give a number of rows of at least 1, `all`, or a size such as 20MB")
        return Limit(rows=value)
    text = str(value).strip().lower().replace("_", "").replace(",", "")
    if text == "all":
        return ALL
    if text == "auto":
        return DEFAULT
    if text.isdigit():
        return parse_limit(int(text))
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(kb|mb|gb)", text)
    if m and float(m.group(1)) > 0:
        return Limit(bytes=int(float(m.group(1)) * {"kb": 1e3, "mb": 1e6, "gb": 1e9}[m.group(2)]))
    raise UsageError(f"--rows {value}: give a number of rows, `all`, `auto`, or a size such as 20MB")


@dataclass
class Chosen:
    """The rows a page embeds: (row index, its JSON) in file order, and how they were chosen."""
    rows: list[tuple[int, bytes]]
    priority: int          # of them, rows taken as priority rows
    priority_total: int    # priority rows in the folder
    stratum_shown: np.ndarray  # rows shown per stratum


def choose(hashes: np.ndarray, strata: np.ndarray, priority: np.ndarray, limit: Limit,
           build: Callable[[int], bytes]) -> Chosen:
    """Walk the rows in the order the module docstring defines and build each one (`build(i)`:
    row i's JSON) until the limit; the limit in bytes counts the JSON `build` returns."""
    n = len(hashes)
    n_strata = int(strata.max()) + 1 if n else 0
    shown = np.zeros(n_strata, dtype=np.int64)
    if limit.everything:
        rows = [(i, build(i)) for i in range(n)]
        np.add.at(shown, strata, 1)
        return Chosen(rows, 0, int(priority.sum()), shown)

    out: list[tuple[int, bytes]] = []
    used = 0

    def take(order: np.ndarray, max_rows: int | None, max_bytes: int | None) -> None:
        nonlocal used
        start_rows, start_bytes = len(out), used
        for i in order.tolist():
            if max_rows is not None and len(out) - start_rows >= max_rows:
                return
            text = build(i)
            if max_bytes is not None and used - start_bytes + len(text) + 1 > max_bytes:
                return
            out.append((i, text))
            used += len(text) + 1  # and a comma
            shown[strata[i]] += 1

    # 1. priority rows, up to half the limit
    pri = np.flatnonzero(priority)
    pri = pri[np.argsort(hashes[pri], kind="stable")]
    take(pri, None if limit.rows is None else limit.rows // 2, None if limit.bytes is None else limit.bytes // 2)
    taken = np.zeros(n, dtype=bool)
    taken[[i for i, _ in out]] = True
    n_priority = len(out)

    # 2. the rest, stratified: the minimum of every stratum first, then by quantile in the stratum
    rest = np.flatnonzero(~taken)
    del taken, pri
    order = rest[np.lexsort((hashes[rest], strata[rest]))]
    del rest
    if len(order):
        s = strata[order]
        starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
        del s
        sizes = np.diff(np.r_[starts, len(order)])
        # rank inside the stratum; rows past the minimum are keyed by their quantile, plus one so
        # that they come after every stratum's minimum (keys 0 .. MIN_PER_STRATUM - 1)
        key = (np.arange(len(order)) - np.repeat(starts, sizes)).astype(np.float64)
        later = key >= MIN_PER_STRATUM
        key[later] = MIN_PER_STRATUM + (key[later] + 0.5) / np.repeat(sizes, sizes)[later]
        del later, starts, sizes
        order = order[np.lexsort((hashes[order], key))]
        del key
    take(order, None if limit.rows is None else limit.rows - len(out),
         None if limit.bytes is None else limit.bytes - used)
    out.sort()
    return Chosen(out, n_priority, int(priority.sum()), shown)
