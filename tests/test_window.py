"""`--chunk-size auto`: records in flight sized from the engine (cai/window.py).

Fast tests run the stages on a scripted engine that reports a KV capacity and counts tokens, and
check the window against that capacity; the slow test checks the real CPU engine's choice against
the KV blocks it reports."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from click.testing import CliRunner

from cai.backends.base import SizedBackend
from cai.cli import main
from cai.config import GenerateConfig, load_config
from cai.constitution import load_constitution
from cai.errors import UsageError
from cai.generate import run_generate
from cai.judge import Judge, JudgeConfig
from cai.pairs import judge_run
from cai.prompts import Templates
from cai.records import RunFolder, read_rows
from cai.revise import Reviser, critique_conversation, revision_conversation
from cai.window import FIXED_DEFAULT, KV_SHARE, PROMPT_SAMPLE, RecordSize, Sizing, choose_window, kv_window
from tests.scripted import ScriptedBackend
from tests.test_generate import write_prompts


def words(conv, prefix=None) -> int:
    """The fake engine's tokens: 4 per message (role markers) and one per word."""
    return sum(4 + len(m["content"].split()) for m in conv) + 4 + len((prefix or "").split())


class KVEngine(ScriptedBackend):
    """A scripted engine with a KV cache of `blocks` × `block_size` tokens; records the largest
    batch it was sent and how many records were alive at once."""

    def __init__(self, blocks: int, block_size: int = 32, **kw):
        super().__init__(**kw)
        self.blocks, self.block_size = blocks, block_size
        self.widest = 0

    def kv_capacity(self):
        return self.blocks * self.block_size

    def max_in_flight(self):
        return None

    def count_tokens(self, conv, prefix=None):
        return words(conv, prefix)

    def chat(self, conversations, params):
        self.widest = max(self.widest, len(conversations))
        return super().chat(conversations, params)


def largest_round(c: GenerateConfig, prompts: Path) -> int:
    """The revision request of the longest prompt with the principle whose requests are longest,
    plus every budget of that request's conversation (computed here without cai.window)."""
    constitution, templates = load_constitution("default"), Templates()
    prefix = Reviser.build(None, constitution, templates, c.few_shot, None, None).prefix
    longest = max(([{"role": "user", "content": json.loads(line)["prompt"]}] for line in prompts.open()), key=words)
    request = max(words(revision_conversation(critique_conversation(prefix, longest, "", p, templates), "", p,
                                              templates)) for p in constitution.principles)
    return request + max(c.answer.max_tokens, c.revision.max_tokens) + c.critique.max_tokens + c.revision.max_tokens


def config(tmp_path, n=10, **kw) -> GenerateConfig:
    return GenerateConfig(prompts=str(write_prompts(tmp_path / "p.jsonl", n)), run_dir=str(tmp_path / "run"),
                          model="scripted-model", **kw)


# ---------------------------------------------------------------- the arithmetic

def test_the_window_is_the_planned_share_of_the_capacity_over_a_record():
    assert kv_window(32_000, RecordSize(1_000, 2)) == int(32_000 * KV_SHARE) // 2_000 == 14
    assert kv_window(1_000, RecordSize(5_000)) == 1  # larger than the whole cache: still one at a time
    with pytest.raises(ValueError):
        kv_window(0, RecordSize(10))
    w = choose_window(7, [Sizing(ScriptedBackend(), lambda: pytest.fail("a number is never sized"))], unit="prompt")
    assert (w.size, w.how) == (7, "set by --chunk-size (or chunk_size in the recipe)")


def test_each_backend_kind_picks_its_own_bound():
    from cai.backends.hf import HFBackend
    from cai.backends.openai import OpenAIBackend

    with OpenAIBackend("m", "http://127.0.0.1:9,http://127.0.0.1:10", concurrency=12) as be:
        w = choose_window("auto", [Sizing(be, lambda: pytest.fail("a server is not sized by tokens"))], unit="pair")
        assert w.size == 12 and "openai runs 12 requests at once" in w.how
    hf = HFBackend.__new__(HFBackend)  # its calls without loading a model
    hf.batch_size = 5
    assert isinstance(hf, SizedBackend) and choose_window("auto", [Sizing(hf, lambda: None)], unit="prompt").size == 5
    plain = ScriptedBackend()  # reports nothing: the window every stage had before auto
    assert not isinstance(plain, SizedBackend)
    w = choose_window("auto", [Sizing(plain, lambda: None)], unit="prompt")
    assert w.size == FIXED_DEFAULT and "reports no capacity" in w.how
    # several engines: the smallest window, each one named
    w = choose_window("auto", [Sizing(KVEngine(100), lambda: RecordSize(100), "policy"),
                               Sizing(KVEngine(100), lambda: RecordSize(400), "reviser")], unit="prompt")
    assert w.size == int(3200 * KV_SHARE) // 400 and w.how.startswith("the smallest of policy 28 (auto:")


# ---------------------------------------------------------------- the stages, on a fake engine's capacity

def test_generate_sizes_its_window_from_the_engines_capacity(tmp_path):
    c = config(tmp_path, samples=2, rounds=2)
    per_record = 2 * largest_round(c, Path(c.prompts))
    blocks = (3 * per_record) // 32 + 1  # room for three records, less the prefix cache's share
    be = KVEngine(blocks)
    s = run_generate(c, backend=be, progress=False)
    expected = int(blocks * 32 * KV_SHARE) // per_record
    assert 1 <= s.window.size == expected < 10
    assert s.window.how == (f"auto: scripted KV capacity {blocks * 32} tokens / {per_record} tokens per prompt "
                            f"(2 conversations of {per_record // 2}), 10% kept for the prefix cache")
    # the window bounds what is in flight: no batch holds more than its records' conversations
    assert s.written == 20 and be.widest <= expected * 2
    assert f"window         {expected} prompts in flight ({s.window.how})" in s.lines()
    info = RunFolder(tmp_path / "run").info()
    assert info["window"] == {"size": expected, "how": s.window.how} and info["config"]["chunk_size"] == "auto"


def test_without_rounds_a_record_is_its_prompt_and_answer(tmp_path):
    c = config(tmp_path, rounds=0)
    longest = max(words([{"role": "user", "content": json.loads(x)["prompt"]}]) for x in Path(c.prompts).open())
    s = run_generate(c, backend=KVEngine(50), progress=False)
    assert s.window.size == int(1600 * KV_SHARE) // (longest + c.answer.max_tokens)
    assert f"/ {longest + c.answer.max_tokens} tokens per conversation," in s.window.how


def test_sizing_reads_only_a_sample_and_the_window_bounds_what_is_alive(tmp_path):
    """Memory stays flat in the prompt count: the window is sized from the first PROMPT_SAMPLE prompts
    (read as a stream, apart from the run's own), and no more records than the window are alive."""
    class Counting(KVEngine):
        counted = 0

        def count_tokens(self, conv, prefix=None):
            self.counted += 1
            return super().count_tokens(conv, prefix)

    be = Counting(150)  # 4800 tokens: about 18 records of a prompt and its 200-token answer
    s = run_generate(config(tmp_path, n=600, rounds=0), backend=be, progress=False)
    assert s.written == 600 and be.counted == PROMPT_SAMPLE
    assert 1 < s.window.size < 600 and be.widest == s.window.size


def test_a_number_overrides_and_a_resumed_run_may_choose_another_window(tmp_path):
    s = run_generate(config(tmp_path, n=4, rounds=1, chunk_size=2), backend=KVEngine(4000), progress=False)
    assert s.window.size == 2 and s.written == 4
    # the window is not part of the run's identity: auto resumes the same run folder, rows kept
    s = run_generate(config(tmp_path, n=6, rounds=1), backend=KVEngine(4000), progress=False)
    assert s.written == 2 and s.skipped == 4 and s.window.size > 2
    assert RunFolder(tmp_path / "run").info()["window"]["size"] == s.window.size
    assert len(list(read_rows(tmp_path / "run" / "generations.jsonl"))) == 6


def test_judge_sizes_pairs_by_their_questions(tmp_path):
    run_generate(config(tmp_path, n=6, rounds=1), backend=ScriptedBackend(), progress=False)
    be = KVEngine(300, prefer="GOOD")
    judge = Judge(be, load_constitution("default"), JudgeConfig(ensemble=2))
    s = judge_run(tmp_path / "run", judge, "revision", progress=False)
    gens = list(read_rows(tmp_path / "run" / "generations.jsonl"))
    longest = max(len(q.question) for q in judge.constitution.comparisons)
    q = next(q for q in judge.constitution.comparisons if len(q.question) == longest)
    tokens = max(words(judge.mode.question(judge.templates, g["prompt"], q.question, g["final"], g["initial"]),
                       judge.mode.prefix) + 1 for g in gens)
    # both orders of each of the ensemble's two questions: four conversations per pair
    assert s.window.size == int(9600 * KV_SHARE) // (4 * tokens)
    assert f"{4 * tokens} tokens per pair (4 conversations of {tokens})" in s.window.how
    info = RunFolder(tmp_path / "run").info()
    assert info["judge_window"]["size"] == s.window.size and "window" not in info["judge"]
    assert any(line.startswith(f"window               {s.window.size} pairs in flight") for line in s.lines())
    # another window resumes the same judging: nothing judged twice, nothing refused
    again = judge_run(tmp_path / "run", Judge(be, load_constitution("default"), JudgeConfig(ensemble=2)), "revision",
                      progress=False, window=3)
    assert again.skipped == 6 and again.judged == 0 and again.window.size == 3


def test_eval_records_each_engines_window(tmp_path, monkeypatch):
    from tests.test_evaluate import FakeModel

    class SizedModel(FakeModel):
        def kv_capacity(self):
            return 64_000

        def max_in_flight(self):
            return None

        def count_tokens(self, conv, prefix=None):
            return words(conv, prefix)

    monkeypatch.setattr("cai.evaluate.load_backend", lambda name, model, **_: SizedModel(model))
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p, "category": "helpful"}) + "\n"
                               for p in ("SAFE one", "SAFE two two", "HARM three")))
    args = ["eval", "--model", "model-a", "--baseline", "model-b", "--prompts", str(prompts), "--out",
            str(tmp_path / "eval"), "--no-progress", "--calibration", "none", "--refusal-calibration", "none",
            "--compliance", "none"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    settings = json.loads((tmp_path / "eval" / "metrics.json").read_text())["settings"]
    windows = settings["window"]
    assert settings["chunk_size"] == "auto" and set(windows) == {"answers A", "answers B", "judge"}
    longest = words([{"role": "user", "content": "SAFE two two"}])
    assert windows["answers A"]["size"] == int(64_000 * KV_SHARE) // (longest + 160)
    # the judge's window is its pairwise question's: both answers, in both orders
    assert windows["judge"]["size"] >= 1 and "tokens per pair (2 conversations of" in windows["judge"]["how"]
    assert "requests in flight: answers A" in res.output
    res = CliRunner().invoke(main, [*args, "--chunk-size", "5"])  # a number keeps its meaning everywhere
    windows = json.loads((tmp_path / "eval" / "metrics.json").read_text())["settings"]["window"]
    assert res.exit_code == 0 and {w["size"] for w in windows.values()} == {5}


# ---------------------------------------------------------------- flags and recipes

def test_chunk_size_flags_and_recipes(tmp_path):
    assert load_config(GenerateConfig, None, {}).chunk_size == "auto"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"chunk_size": "auto"}))
    assert load_config(GenerateConfig, recipe, {"chunk_size": None}).chunk_size == "auto"
    recipe.write_text(yaml.safe_dump({"chunk_size": 96}))
    assert load_config(GenerateConfig, recipe, {}).chunk_size == 96
    recipe.write_text(yaml.safe_dump({"chunk_size": 0}))
    with pytest.raises(UsageError, match="chunk_size: .*a whole number of at least 1, or auto"):
        load_config(GenerateConfig, recipe, {})
    for command in (["generate"], ["judge", str(tmp_path)], ["eval", "--model", "m"]):
        res = CliRunner().invoke(main, [*command, "--chunk-size", "0"])
        assert res.exit_code == 2 and "0 is below 1" in res.output, command
        res = CliRunner().invoke(main, [*command, "--chunk-size", "lots"])
        assert res.exit_code == 2 and "neither a whole number nor auto" in res.output, command
        assert "[default: auto]" in " ".join(CliRunner().invoke(main, [*command[:1], "--help"]).output.split())


# ---------------------------------------------------------------- the vLLM backends read the engine's blocks

class FakeAsyncLLM:
    """vLLM's AsyncLLM as far as cai reads it: the config its front-end holds after the handshake."""

    blocks = 700

    def __init__(self):
        self.vllm_config = SimpleNamespace(cache_config=SimpleNamespace(num_gpu_blocks=self.blocks, block_size=32))

    @classmethod
    def from_engine_args(cls, args):
        return cls()

    async def generate(self, prompt, params, request_id):
        yield SimpleNamespace(outputs=[SimpleNamespace(text="An answer.", token_ids=[1, 2], finish_reason="stop",
                                                       logprobs=None)])

    def shutdown(self):
        pass


class FakeLLM:
    def __init__(self, **kwargs):
        self.llm_engine = SimpleNamespace(vllm_config=FakeAsyncLLM().vllm_config)


@pytest.fixture
def fake_vllm(monkeypatch):
    pytest.importorskip("vllm")
    import vllm
    import vllm.v1.engine.async_llm as async_llm

    from cai.backends.vllm import shutdown_all

    monkeypatch.setattr(async_llm, "AsyncLLM", FakeAsyncLLM)
    monkeypatch.setattr(vllm, "LLM", FakeLLM)
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "all")
    monkeypatch.delenv("CAI_BACKEND", raising=False)
    shutdown_all()
    yield
    shutdown_all()


@pytest.mark.parametrize("pipelined", ["1", "0"])
def test_vllm_backends_report_blocks_times_block_size(fake_vllm, monkeypatch, model_path, tmp_path, pipelined):
    from cai.backends import load_backend

    monkeypatch.setenv("CAI_VLLM_PIPELINE", pipelined)
    be = load_backend("vllm", "smollm2-135m")
    assert isinstance(be, SizedBackend) and be.kv_capacity() == 700 * 32 and be.max_in_flight() is None
    if pipelined == "1":  # the whole command: its summary says the window and how it was chosen
        res = CliRunner().invoke(main, ["generate", "--backend", "vllm", "--prompts",
                                        str(write_prompts(tmp_path / "p.jsonl", 3)), "--rounds", "1",
                                        "--run-dir", str(tmp_path / "run"), "--no-progress"])
        assert res.exit_code == 0, res.output
        line = next(x for x in res.output.splitlines() if x.strip().startswith("window"))
        assert "prompts in flight (auto: vllm KV capacity 22400 tokens / " in line
        assert RunFolder(tmp_path / "run").info()["window"]["how"] in line


# ---------------------------------------------------------------- the real CPU engine

@pytest.mark.slow
def test_the_cpu_engines_window_comes_from_its_kv_blocks(vllm_backend, tmp_path):
    import re

    engine = vllm_backend._engine.llm if hasattr(vllm_backend, "_engine") else vllm_backend.llm.llm_engine
    cache = engine.vllm_config.cache_config
    blocks, size = cache.num_gpu_blocks, cache.block_size
    assert blocks > 0 and size == 32  # cai's CPU block size (engine_defaults)
    assert vllm_backend.kv_capacity() == blocks * size
    # the engine core's own figure for the same cache (tokens over its full-attention layers)
    assert abs(cache.kv_cache_size_tokens - blocks * size) <= size
    c = GenerateConfig(prompts=str(write_prompts(tmp_path / "p.jsonl", 4)), run_dir=str(tmp_path / "run"), rounds=1,
                       answer={"max_tokens": 16}, critique={"max_tokens": 16}, revision={"max_tokens": 16})
    s = run_generate(c, backend=vllm_backend, progress=False)
    assert s.written == 4
    assert s.window.how.startswith(f"auto: vllm KV capacity {blocks * size} tokens / ")
    per = int(re.search(r"/ (\d+) tokens per conversation", s.window.how).group(1))
    assert s.window.size == int(blocks * size * KV_SHARE) // per
    # a conversation at its largest: the real revision request of the longest prompt, plus the budgets
    constitution, templates = load_constitution("default"), Templates()
    prefix = Reviser.build(None, constitution, templates, c.few_shot, None, None).prefix
    longest = max(([{"role": "user", "content": json.loads(x)["prompt"]}] for x in Path(c.prompts).open()),
                  key=vllm_backend.count_tokens)
    request = max(vllm_backend.count_tokens(revision_conversation(
        critique_conversation(prefix, longest, "", p, templates), "", p, templates)) for p in constitution.principles)
    assert per == request + 3 * 16
    print(f"KV blocks {blocks} x {size} = {blocks * size} tokens; {per} tokens per conversation; "
          f"window {s.window.size}")
