"""The loop every stage runs: record coroutines through a Batcher, with a progress bar, Ctrl-C that
stops at once, output flushed after each engine step, and the time it took.

A stage writes one coroutine per record (a prompt's rounds, a judged pair, a refusal question) and
a `done` callback that writes its result; `BatchRun` does the rest. `map_batched` is the same loop
for a list whose results are wanted in input order.
"""

from __future__ import annotations

import sys
import time
from typing import Awaitable, Callable, Iterable, Sequence, TypeVar

from cai.backends.base import Backend
from cai.batching import Batcher, run_interruptible

T = TypeVar("T")
R = TypeVar("R")


class BatchRun:
    """One pass of jobs through `batcher` (and the `also` batchers its records send to)."""

    def __init__(self, batcher: Batcher, *, total: int, unit: str, progress: bool, desc: str | None = None,
                 flush: Callable[[], None] | None = None, also: Sequence[Batcher] = (),
                 status: Callable[[float], str] | None = None):
        from tqdm import tqdm

        self.batcher = batcher
        self.also = [b for b in also if b is not batcher]
        self.flush = flush or (lambda: None)
        self.status = status  # the bar's postfix, from the seconds elapsed
        self.bar = tqdm(total=total, desc=desc, unit=unit, disable=not progress, file=sys.stderr, dynamic_ncols=True)
        self.seconds = 0.0
        self.finished = self.skipped = 0  # records, as the bar counts them (a disabled bar counts nothing)

    @property
    def calls(self) -> int:
        """Batched engine calls made, over every batcher of the run."""
        return self.batcher.calls + sum(b.calls for b in self.also)

    def skip(self, n: int = 1) -> None:
        """Records counted on the bar without a job (resumed, duplicate, left out)."""
        self.skipped += n
        self.bar.update(n)

    def run(self, jobs: Iterable[Callable[[], Awaitable[T]]], done: Callable[[T], None], *, window: int) -> None:
        """Run the jobs, at most `window` alive; `done(result)` as each finishes, in finishing order.
        The bar is closed and `flush` called however the run ends."""
        def finished(result: T) -> None:
            done(result)
            self.finished += 1
            self.bar.update(1)
            if self.status is not None:
                elapsed = self.bar.format_dict.get("elapsed") or 0
                if elapsed:
                    self.bar.set_postfix_str(self.status(elapsed), refresh=False)

        t0 = time.perf_counter()
        try:
            run_interruptible(self.batcher.run(jobs, window=window, on_done=finished, on_step=self.flush,
                                               also=self.also))
        finally:
            self.seconds = time.perf_counter() - t0
            self.flush()
            self.bar.close()


def map_batched(backend: Backend, ask: Callable[[Batcher, T], Awaitable[R]], items: Sequence[T], *, window: int,
                progress: bool = False, unit: str = "item", desc: str | None = None) -> list[R]:
    """`ask(batcher, item)` for every item, in batched engine calls; results in input order."""
    out: list = [None] * len(items)
    batcher = Batcher(backend)

    def jobs():
        for i, item in enumerate(items):
            async def job(i=i, item=item) -> None:
                out[i] = await ask(batcher, item)
            yield job

    BatchRun(batcher, total=len(items), unit=unit, desc=desc, progress=progress).run(jobs(), lambda _: None,
                                                                                      window=window)
    return out
