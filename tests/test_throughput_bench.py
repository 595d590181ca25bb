"""benchmarks/throughput.py's own parts that need no engine: the width the loop gave the engine, the
engine's capacity in conversations, the stride sample of the width rows, and the width runner held
to its width (on a fake offline engine that steps its requests)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "throughput.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("throughput_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class SlowInner:
    """A batch backend whose every call takes one second of the fake clock."""

    name, model = "fake", "m"

    def __init__(self, clock: Clock):
        self.clock = clock

    def chat(self, convs, params):
        self.clock.t += 1.0
        return [[SimpleNamespace(tokens=3)] for _ in convs]


def test_the_recorder_averages_the_requests_in_flight_over_time(bench, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(bench.time, "perf_counter", clock)
    rec = bench.Recorder(SlowInner(clock))
    rec.chat([["a"]] * 4, None)  # 4 in flight for 1 s
    clock.t += 2.0  # the loop does something else for 2 s: none in flight
    rec.chat([["b"]] * 8, None)  # 8 for 1 s
    assert rec.mean_in_flight() == pytest.approx((4 + 8) / 4)
    assert [t for _, t in rec.requests] == [[3]] * 12


def test_capacity_is_kv_tokens_over_the_longest_request(bench):
    limits = {"kv_tokens": 1000, "max_num_seqs": 256}
    rendered = [([1] * 90, 10), ([1] * 40, 20)]
    eng = bench.capacity_of(limits, rendered)
    assert eng["tokens_per_conversation"] == 100 and eng["capacity"] == 10
    assert bench.capacity_of({"kv_tokens": 50}, rendered)["capacity"] == 1  # never 0


def test_the_stride_sample_keeps_the_mix_and_order(bench):
    items = list(range(100))
    assert bench.stride_sample(items, 200) == items
    sample = bench.stride_sample(items, 10)
    assert sample == list(range(0, 100, 10))


class FakeEngine:
    """Stands in for vLLM's LLMEngine: each step, every live request makes one token, and the ones
    that reach their length finish; keeps the most requests it ever held at once."""

    def __init__(self):
        self.live: dict[str, list] = {}
        self.most = 0
        self.added: list[str] = []

    def add_request(self, rid, prompt, params):
        assert params.output_kind.name == "FINAL_ONLY" and params.ignore_eos
        self.live[rid] = [params.max_tokens, 0]
        self.added.append(rid)
        self.most = max(self.most, len(self.live))

    def step(self):
        done = []
        for rid, st in list(self.live.items()):
            st[1] += 1
            if st[1] == st[0]:
                del self.live[rid]
                done.append(SimpleNamespace(finished=True, outputs=[SimpleNamespace(token_ids=[0] * st[0])]))
        return done


def fake_offline(engine: FakeEngine):
    llm = SimpleNamespace(llm_engine=engine, reset_prefix_cache=lambda: None)
    return SimpleNamespace(llm=llm)


def test_the_width_runner_holds_the_engine_at_its_width(bench):
    pytest.importorskip("vllm")
    eng = FakeEngine()
    rendered = [([1, 2, 3], 1 + i % 5) for i in range(40)]
    tokens, secs = bench.at_width(fake_offline(eng), rendered, 8)
    assert tokens == sum(n for _, n in rendered) and secs >= 0
    assert eng.most == 8 and len(eng.added) == 40 and not eng.live


def test_the_width_table_ends_at_the_capacity_with_every_request(bench):
    pytest.importorskip("vllm")
    eng = FakeEngine()
    rendered = [([1], 2)] * 300
    engine = {"capacity": 24, "max_num_seqs": 16}
    rows = bench.width_table(fake_offline(eng), rendered, engine, widths=(8, 16, 32))
    assert [r["width"] for r in rows] == [8, 16, 24]  # 32 is past the capacity
    assert rows[-1]["capacity"] and rows[-1]["requests"] == 300  # the capped replay: all of them
    assert rows[0]["requests"] == bench.MIN_SAMPLE and rows[1]["requests"] == bench.PER_SLOT * 16
    assert rows[-1]["runs_at"] == 16  # the scheduler's limit caps what runs
    replay = bench.capped_replay(rows[-1], 10)
    assert replay["tokens"] == 600 and "capped at capacity (24" in replay["name"]
