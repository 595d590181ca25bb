"""Run many per-record coroutines against one backend, with batched engine calls.

Each record (one prompt's answer → critique → revision rounds, or one judged pair) is written as a
plain coroutine that awaits `chat(...)` and `choice_logprobs(...)` one request at a time: the
stage logic reads like the method. The `Batcher` gathers the requests of all records that are
waiting at the same moment and sends them to the backend as one batched call per kind of request,
so a synchronous engine (vLLM's offline `LLM`, transformers) always sees full batches.

A `PipelinedBackend` (one that also takes requests one at a time, e.g. the OpenAI-compatible HTTP
backend or the async vLLM engine) skips the gathering: each record sends its next request the moment its last one
returns, which keeps the engine full across step boundaries instead of idling at a barrier.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections import defaultdict
from typing import Any, Awaitable, Callable, Iterable, Sequence

from cai.backends.base import Backend, Completion, Conversation, PipelinedBackend, SamplingParams


class Batcher:
    def __init__(self, backend: Backend, *, max_batch: int = 512, on_batch: Callable[[str, int], None] | None = None):
        self.backend = backend
        self.max_batch = max_batch
        self.on_batch = on_batch
        self.native = isinstance(backend, PipelinedBackend)
        self._pending: list[tuple[tuple, Any, asyncio.Future]] = []
        self._wake: asyncio.Event | None = None
        self.calls = 0

    async def chat(self, conversation: Conversation, params: SamplingParams) -> list[Completion]:
        if self.native:
            return await self.backend.achat_one(conversation, params)
        return await self._enqueue(("chat", params.model_dump_json()), (conversation, params))

    async def choice_logprobs(self, conversation: Conversation, prefix: str, options: Sequence[str]) -> dict[str, float]:
        if self.native:
            return await self.backend.achoice_logprobs_one(conversation, prefix, options)
        return await self._enqueue(("logprobs", tuple(options)), (conversation, prefix))

    def _enqueue(self, key: tuple, payload: Any) -> Awaitable:
        fut = asyncio.get_running_loop().create_future()
        self._pending.append((key, payload, fut))
        if self._wake is not None:
            self._wake.set()
        return fut

    def _flush(self) -> None:
        groups: dict[tuple, list[tuple[Any, asyncio.Future]]] = defaultdict(list)
        for key, payload, fut in self._pending:
            groups[key].append((payload, fut))
        self._pending = []
        for key, items in groups.items():
            for s in range(0, len(items), self.max_batch):
                part = items[s : s + self.max_batch]
                try:
                    if key[0] == "chat":
                        results = self.backend.chat([p[0] for p, _ in part], part[0][0][1])
                    else:
                        results = self.backend.choice_logprobs(
                            [p[0] for p, _ in part], [p[1] for p, _ in part], list(key[1])
                        )
                except BaseException as exc:  # noqa: BLE001 - handed to the waiting records
                    for _, fut in part:
                        if not fut.done():
                            fut.set_exception(exc)
                    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                        raise
                    continue
                self.calls += 1
                if self.on_batch:
                    self.on_batch(key[0], len(part))
                for (_, fut), res in zip(part, results):
                    fut.set_result(res)

    async def run(self, jobs: Iterable[Callable[[], Awaitable[Any]]], *, window: int,
                  on_done: Callable[[Any], None], on_step: Callable[[], None] | None = None,
                  also: Sequence["Batcher"] = ()) -> None:
        """Run job coroutines with at most `window` alive; `on_done(result)` as each finishes.

        Jobs are pulled lazily from `jobs`, so a stream of a million prompts never sits in memory.
        `on_step` runs after each batched engine call (where the caller flushes its output).
        `also`: other batchers the same records send requests to (a reviser model on its own
        engine); gathered batches of every synchronous one are sent from this loop.
        """
        batchers = [self, *(b for b in also if b is not self)]
        sync = [b for b in batchers if not b.native]
        # With native and gathering batchers mixed, a record that moves from a native request to a
        # gathered one must wake the loop, which may be waiting on the native engine.
        wake = asyncio.Event() if sync and len(sync) < len(batchers) else None
        for b in sync:
            b._wake = wake
        it = iter(jobs)
        live: set[asyncio.Task] = set()
        exhausted = False

        def top_up() -> None:
            nonlocal exhausted
            while not exhausted and len(live) < window:
                try:
                    job = next(it)
                except StopIteration:
                    exhausted = True
                    return
                live.add(asyncio.ensure_future(job()))

        top_up()
        while live:
            if not sync:
                done, _ = await asyncio.wait(live, return_when=asyncio.FIRST_COMPLETED)
            else:
                await _settle()
                done = {t for t in live if t.done()}
                if not done:
                    waiting = [b for b in sync if b._pending]
                    if waiting:
                        for b in waiting:
                            b._flush()
                        if on_step:
                            on_step()
                        continue
                    if wake is None:
                        raise RuntimeError("records are waiting on something other than the engine")
                    wake.clear()
                    waiter = asyncio.ensure_future(wake.wait())
                    done, _ = await asyncio.wait(live | {waiter}, return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    done = {t for t in done if t is not waiter}
                    if not done:
                        continue
            for t in done:
                live.discard(t)
                on_done(t.result())  # re-raises a record's exception: the run stops loudly
            top_up()
            if (not sync or wake is not None) and on_step:
                on_step()


async def _settle() -> None:
    """Let every live record run until it waits on an engine (or finishes). Records fan out into
    nested coroutines (samples, both orders, ensembles), so wait until nothing at all is runnable:
    CPython's loop keeps its runnable callbacks in `_ready`; elsewhere, wait for quiet."""
    loop = asyncio.get_running_loop()
    ready = getattr(loop, "_ready", None)
    quiet = 0
    while True:
        await asyncio.sleep(0)
        if ready is not None:
            if not ready:
                return
        else:
            quiet += 1
            if quiet > 64:
                return


def run_interruptible(coro) -> Any:
    """`asyncio.run(coro)`, except that Ctrl-C stops it at once.

    asyncio.run turns the first Ctrl-C into a cancellation that lands only at the next `await`; a
    synchronous engine call (transformers generating a batch, vLLM's offline engine) does not await,
    so the user would wait minutes with no sign of life. Raising KeyboardInterrupt straight away
    loses only the batch in flight: finished records are already written.
    """
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return asyncio.run(coro)  # Ctrl-C ignored or handled by someone else: leave it so

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    try:
        return asyncio.run(coro)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
