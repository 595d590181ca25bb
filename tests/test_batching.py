"""The Batcher (cai/batching.py): records that wait at the same moment share one engine call, a
native async backend gets each request at once, and a run keeps its window and stops loudly."""

from __future__ import annotations

import asyncio
import signal
import threading

import pytest

from cai.backends.base import SamplingParams
from cai.batching import Batcher, run_interruptible
from tests.scripted import ScriptedBackend

GREEDY = SamplingParams(max_tokens=8, temperature=0.0)
JUDGE_PROMPT = "Which is better? (A) GOOD one (B) bad one Answer with A or B."


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def run(batcher: Batcher, jobs, *, window: int = 64, **kw) -> list:
    results: list = []
    asyncio.run(batcher.run(jobs, window=window, on_done=results.append, **kw))
    return results


def test_waiting_records_share_one_call_per_step():
    be = ScriptedBackend()
    b = Batcher(be)

    def record(i: int):
        async def go():
            first = await b.chat(ask(f"q{i}"), GREEDY)
            second = await b.chat(ask(f"critique q{i}") + [{"role": "assistant", "content": first[0].text}], GREEDY)
            return i, first[0].text, second[0].text
        return go

    out = run(b, (record(i) for i in range(5)))
    assert sorted(i for i, _, _ in out) == list(range(5))
    # five records, two steps each: two engine calls of five conversations
    assert be.calls == [("chat", 5), ("chat", 5)] and b.calls == 2
    # each record got the answer to its own request, not a neighbour's
    assert all(first == f"answer 0 to: q{i}" for i, first, _ in out)


def test_requests_group_by_kind_and_sampling_and_split_at_max_batch():
    be = ScriptedBackend()
    seen: list[tuple[str, int]] = []
    b = Batcher(be, max_batch=3, on_batch=lambda kind, n: seen.append((kind, n)))
    hot = SamplingParams(max_tokens=8, temperature=1.0)

    def record(i: int):
        async def go():
            if i % 3 == 0:
                return await b.choice_logprobs(ask(JUDGE_PROMPT), "(", ["A", "B"])
            return await b.chat(ask(f"q{i}"), GREEDY if i % 3 == 1 else hot)
        return go

    out = run(b, (record(i) for i in range(9)))
    assert len(out) == 9
    # 3 judge requests, 3 greedy chats, 3 sampled chats: never mixed in one call, none over 3
    assert sorted(be.calls) == [("chat", 3), ("chat", 3), ("logprobs", 3)]
    assert sorted(seen) == sorted(be.calls)
    picks = [max(r, key=r.get) for r in out if isinstance(r, dict)]
    assert picks == ["A", "A", "A"]

    be = ScriptedBackend()
    b = Batcher(be, max_batch=2)
    run(b, (lambda i=i: b.chat(ask(f"q{i}"), GREEDY) for i in range(5)))
    assert be.calls == [("chat", 2), ("chat", 2), ("chat", 1)]


def test_the_window_bounds_live_records_and_jobs_are_pulled_lazily():
    be = ScriptedBackend()
    b = Batcher(be)
    pulled = 0

    def jobs():
        nonlocal pulled
        for i in range(10):
            pulled += 1
            yield lambda i=i: b.chat(ask(f"q{i}"), GREEDY)

    steps: list[int] = []
    run(b, jobs(), window=4, on_step=lambda: steps.append(pulled))
    assert [n for _, n in be.calls] == [4, 4, 2]
    # when the first batch went out, only the first window of jobs had been taken from the stream
    assert steps[0] == 4 and pulled == 10


def test_an_engine_error_reaches_the_waiting_records_and_stops_the_run():
    be = ScriptedBackend(fail_after_calls=1)
    b = Batcher(be)
    finished: list = []

    def record(i: int):
        async def go():
            await b.chat(ask(f"q{i}"), GREEDY)
            return await b.chat(ask(f"critique q{i}"), GREEDY)
        return go

    with pytest.raises(RuntimeError, match="scripted crash"):
        asyncio.run(b.run((record(i) for i in range(3)), window=8, on_done=finished.append))
    assert finished == [] and be.calls == [("chat", 3)] and b.calls == 1


class NativeBackend(ScriptedBackend):
    """Answers each request on its own, the way the HTTP backend does."""

    def __init__(self):
        super().__init__()
        self.one_by_one: list[str] = []

    async def achat_one(self, conversation, params):
        self.one_by_one.append("chat")
        await asyncio.sleep(0)
        return self.chat([conversation], params)[0]

    async def achoice_logprobs_one(self, conversation, prefix, options):
        self.one_by_one.append("logprobs")
        await asyncio.sleep(0)
        return self.choice_logprobs([conversation], prefix, options)[0]


def test_a_native_backend_gets_each_request_without_gathering():
    be = NativeBackend()
    b = Batcher(be)
    steps: list[int] = []

    def record(i: int):
        async def go():
            await b.chat(ask(f"q{i}"), GREEDY)
            return await b.choice_logprobs(ask(JUDGE_PROMPT), "(", ["A", "B"])
        return go

    out = run(b, (record(i) for i in range(4)), window=2, on_step=lambda: steps.append(1))
    assert len(out) == 4 and sorted(be.one_by_one) == ["chat"] * 4 + ["logprobs"] * 4
    assert all(n == 1 for _, n in be.calls) and b.calls == 0  # nothing went through the gathering path
    # the caller still gets its flush points: after each wait that finished records
    assert 1 <= len(steps) <= 4


def test_a_record_moving_from_a_native_engine_to_a_gathered_one_wakes_the_loop():
    """The policy behind a native backend, the reviser on a synchronous engine: the loop waits on
    the native engine and must still send the reviser's gathered batch."""
    policy, reviser_be = NativeBackend(), ScriptedBackend()
    pb, rb = Batcher(policy), Batcher(reviser_be)

    def record(i: int):
        async def go():
            answer = await pb.chat(ask(f"q{i}"), GREEDY)
            revision = await rb.chat(ask(f"Reply with the rewritten response only: {answer[0].text}"), GREEDY)
            return revision[0].text
        return go

    out = run(pb, (record(i) for i in range(3)), also=[rb])
    assert len(out) == 3 and all(t.startswith("Sure, here is a revised response") for t in out)
    assert policy.one_by_one == ["chat"] * 3
    assert sum(n for _, n in reviser_be.calls) == 3 and rb.calls == len(reviser_be.calls)


def test_run_interruptible_returns_the_result_and_puts_the_handler_back():
    async def answer():
        await asyncio.sleep(0)
        return 42

    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert run_interruptible(answer()) == 42
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        # someone else's handler is left in place, and the coroutine still runs
        mine = lambda signum, frame: None  # noqa: E731
        signal.signal(signal.SIGINT, mine)
        assert run_interruptible(answer()) == 42
        assert signal.getsignal(signal.SIGINT) is mine
    finally:
        signal.signal(signal.SIGINT, old)

    # off the main thread signals cannot be set at all: a plain asyncio.run
    got: list = []
    t = threading.Thread(target=lambda: got.append(run_interruptible(answer())))
    t.start()
    t.join(10)
    assert got == [42]
