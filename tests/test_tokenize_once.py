"""Each request is tokenized once (issue 24 §1): the ids a backend's `count_tokens` computed for a
context check (`overflow()`) are the ids it sends, and a request that does not fit the context comes
back `too_long` at that render step while the rest of its batch is answered.

The fast tests run the backends on fake engines with a tokenizer that counts its calls; the slow
ones run the real vLLM CPU engine on the default model: the ids cai sends are the ones vLLM's own
chat path makes, and the old path (vLLM renders each conversation) and the new one (token prompts)
give the same outputs.
"""

from __future__ import annotations

import asyncio
import math
from types import SimpleNamespace

import pytest

from cai.backends.base import PromptTokens, SamplingParams, normalise_pair, overflow, request_key

PLAIN = [{"role": "user", "content": "What is the capital of France?"}]
MULTI = [{"role": "system", "content": "You are terse."},
         {"role": "user", "content": "Name a colour."},
         {"role": "assistant", "content": "Blue."},
         {"role": "user", "content": "Another one, please."}]
TURNS = [PLAIN, MULTI, [{"role": "user", "content": "Write one sentence about the sea."}]]
PREFIX = "The better response is ("
GREEDY = SamplingParams(max_tokens=8, temperature=0.0)


class CountingTokenizer:
    """A chat template of one token per word, counting its renders."""

    def __init__(self):
        self.calls = 0

    def apply_chat_template(self, conv, tokenize=False, add_generation_prompt=False, continue_final_message=False,
                            return_dict=True):
        assert tokenize and not return_dict
        self.calls += 1
        ids: list[int] = []
        for m in conv:
            ids += [1, 4 if m["role"] == "assistant" else 5] + [10 + len(w) for w in m["content"].split()] + [2]
        if continue_final_message:
            ids.pop()  # the last turn stays open
        if add_generation_prompt:
            ids += [1, 4]
        return ids


def words(n: int) -> list[dict]:
    return [{"role": "user", "content": " ".join(["word"] * n)}]


# ---------------------------------------------------------------- the cache itself


def test_a_counted_request_is_sent_without_rendering_it_again():
    tok = CountingTokenizer()
    p = PromptTokens(lambda c, prefix: tok.apply_chat_template(c, tokenize=True, add_generation_prompt=True,
                                                               return_dict=False))
    n = p.count(PLAIN)
    assert p.count(PLAIN) == n and tok.calls == 1  # a second check renders nothing either
    assert p.take(PLAIN) == tok.apply_chat_template(PLAIN, tokenize=True, add_generation_prompt=True,
                                                    return_dict=False)
    assert (p.renders, p.reused, len(p), p.held_tokens) == (1, 1, 0, 0)  # taken: the ids left with the request
    p.take(MULTI)  # never counted: rendered where it is sent, and not kept
    assert (p.renders, len(p)) == (2, 0)


def test_new_turn_and_continued_prefix_are_different_requests():
    seen = []
    p = PromptTokens(lambda c, prefix: seen.append(prefix) or [1, 2, 3])
    p.count(PLAIN), p.count(PLAIN, PREFIX), p.count(PLAIN, "")
    assert seen == [None, PREFIX, ""] and len(p) == 3
    assert request_key(PLAIN, None) != request_key(PLAIN, "") != request_key(PLAIN, PREFIX)
    # the key is the content, not the objects or the order of a message's fields
    same = [{"content": "What is the capital of France?", "role": "user"}]
    assert request_key(same, None) == request_key(PLAIN, None)


def test_the_cache_is_bounded_in_requests_and_in_tokens():
    p = PromptTokens(lambda c, prefix: [7] * len(c[0]["content"].split()), max_entries=3, max_tokens=1000)
    for n in range(1, 6):
        p.count(words(n))
    assert len(p) == 3 and p.held_tokens == 3 + 4 + 5  # the least recently counted went first
    p.count(words(3))  # counted again: now the most recent
    p.count(words(6))
    assert len(p) == 3 and p.renders == 6
    p.take(words(3))
    assert p.reused == 1  # kept through the eviction of words(4)
    p = PromptTokens(lambda c, prefix: [7] * len(c[0]["content"].split()), max_entries=100, max_tokens=10)
    for n in (4, 4, 5, 3, 11):
        p.count(words(n))
    assert p.held_tokens <= 10 and len(p) == 0  # one request over the whole budget is not kept at all
    p.count(words(4)), p.count(words(5))
    assert (len(p), p.held_tokens) == (2, 9)
    p.clear()
    assert (len(p), p.held_tokens) == (0, 0)
    assert PromptTokens(lambda c, p: []).sized_for(10_000_000).max_tokens == 20_000_000
    assert PromptTokens(lambda c, p: []).sized_for(None).max_tokens == 1 << 22


def test_keep_off_renders_at_every_check_and_send():
    p = PromptTokens(lambda c, prefix: [1, 2], keep=False)
    p.count(PLAIN), p.count(PLAIN), p.take(PLAIN)
    assert (p.renders, p.reused, len(p)) == (3, 0, 0)


def test_split_marks_what_does_not_fit():
    p = PromptTokens(lambda c, prefix: [0] * len(c[0]["content"].split()))
    send, over = p.split([words(3), words(9), words(6)], [None] * 3, 4, 10)
    assert [i for i, _ in send] == [0, 2] and over == {1: 9}  # 9 + 4 > 10, 6 + 4 fits exactly


# ---------------------------------------------------------------- the vLLM backends on fake engines


def _output(prompt_ids, sp):
    out = SimpleNamespace(text=f"reply to {len(prompt_ids)} ids", token_ids=[5, 6, 7], finish_reason="stop",
                          logprobs=None)
    if sp.max_tokens == 1 and sp.logprobs:
        out.logprobs = [{1: SimpleNamespace(decoded_token="A", logprob=-0.5),
                         2: SimpleNamespace(decoded_token=" B", logprob=-1.0)}]
    return SimpleNamespace(outputs=[out] * sp.n)


class FakeLLM:
    """vllm.LLM as far as the offline backend calls it."""

    def __init__(self):
        self.sent: list[list[int]] = []
        self.chats = 0

    def generate(self, prompts, params, use_tqdm=True):
        params = params if isinstance(params, list) else [params] * len(prompts)
        self.sent += [list(p["prompt_token_ids"]) for p in prompts]
        return [_output(p["prompt_token_ids"], sp) for p, sp in zip(prompts, params)]

    def chat(self, conversations, params, use_tqdm=True, **_):
        self.chats += len(conversations)
        params = params if isinstance(params, list) else [params] * len(conversations)
        return [_output([0] * 3, sp) for sp in params]


class FakeAsyncLLM:
    """AsyncLLM as far as the async backend calls it."""

    sent: list = []

    @classmethod
    def from_engine_args(cls, args):
        return cls()

    async def generate(self, prompt, sp, request_id):
        await asyncio.sleep(0)
        FakeAsyncLLM.sent.append(list(prompt["prompt_token_ids"]))
        yield _output(prompt["prompt_token_ids"], sp)

    def shutdown(self):
        pass


@pytest.fixture
def fake_engines(monkeypatch):
    pytest.importorskip("vllm")
    import transformers
    import vllm.v1.engine.async_llm as async_llm

    import cai.backends.vllm as offline
    from cai.backends.vllm_engine import shutdown_all

    llm = FakeLLM()
    monkeypatch.setattr(offline, "engine", lambda model, **opts: llm)
    monkeypatch.setattr(async_llm, "AsyncLLM", FakeAsyncLLM)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: CountingTokenizer())
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "all")
    monkeypatch.delenv("CAI_TOKENIZE_ONCE", raising=False)
    FakeAsyncLLM.sent = []
    shutdown_all()
    yield llm
    shutdown_all()


def make(kind: str, window: int = 64):
    """A backend of `kind` on the fake engine, its context `window` tokens, its tokenizer counting."""
    from cai.backends.vllm import VLLMBackend
    from cai.backends.vllm_async import AsyncVLLMBackend
    from cai.models import resolve

    # vLLM's engine arguments read the model's config (the weights are never loaded)
    be = (VLLMBackend if kind == "offline" else AsyncVLLMBackend)(str(resolve("smollm2-135m")), max_model_len=window)
    if kind == "offline":
        be._tok = CountingTokenizer()
    return be


def sent(kind: str, llm: FakeLLM) -> list[list[int]]:
    return llm.sent if kind == "offline" else FakeAsyncLLM.sent


def fresh(conv, prefix=None) -> list[int]:
    from cai.backends.vllm_engine import render_ids

    return render_ids(CountingTokenizer(), conv, prefix)


KINDS = ["offline", "async"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("checked", [True, False])
def test_each_request_is_tokenized_once(fake_engines, kind, checked):
    be = make(kind)
    if checked:  # what every stage does before it sends a request
        assert all(overflow(be, c, GREEDY.max_tokens) is None for c in TURNS)
        assert all(overflow(be, c, 1, PREFIX) is None for c in TURNS)
    out = be.chat(TURNS, GREEDY)
    lps = be.choice_logprobs(TURNS, PREFIX, ["A", "B"])
    assert be.tok.calls == 2 * len(TURNS)  # one render per request, checked or not
    assert be.prompts.reused == (2 * len(TURNS) if checked else 0) and len(be.prompts) == 0
    assert sent(kind, fake_engines) == [fresh(c) for c in TURNS] + [fresh(c, PREFIX) for c in TURNS]
    assert [o[0].text for o in out] == [f"reply to {len(fresh(c))} ids" for c in TURNS]
    assert all(o[0].finish_reason == "stop" and o[0].tokens == 3 for o in out)
    assert all(lp["A"] == -0.5 and lp["B"] == -1.0 for lp in lps)


def test_one_request_at_a_time_too(fake_engines):
    be = make("async")
    assert overflow(be, PLAIN, 8) is None and overflow(be, MULTI, 1, PREFIX) is None
    out = asyncio.run(be.achat_one(PLAIN, GREEDY))
    lp = asyncio.run(be.achoice_logprobs_one(MULTI, PREFIX, ["A", "B"]))
    assert be.tok.calls == 2 and be.prompts.reused == 2
    assert out[0].text == f"reply to {len(fresh(PLAIN))} ids" and lp == {"A": -0.5, "B": -1.0}
    assert FakeAsyncLLM.sent == [fresh(PLAIN), fresh(MULTI, PREFIX)]


@pytest.mark.parametrize("kind", KINDS)
def test_an_over_long_request_comes_back_too_long_and_the_rest_is_answered(fake_engines, kind):
    be = make(kind, window=40)
    convs = [PLAIN, words(35), MULTI]  # 35 words + markers + 8 to generate > 40
    out = be.chat(convs, SamplingParams(max_tokens=8, temperature=0.7, n=2, seed=1))
    assert [len(o) for o in out] == [2, 2, 2]
    assert [c.finish_reason for c in out[1]] == ["too_long", "too_long"]
    assert out[1][0].text == "" and out[1][0].tokens == 0
    assert "has 40 tokens, and with 8 to generate it does not fit the model's context of 40" in out[1][0].error
    assert all(c.finish_reason == "stop" and c.text for i in (0, 2) for c in out[i])
    assert sent(kind, fake_engines) == [fresh(PLAIN), fresh(MULTI)]  # never sent
    # the judge's question: no opinion, and the overflow check says why
    lps = be.choice_logprobs([PLAIN, words(37)], PREFIX, ["A", "B"])
    assert lps[1] == {"A": -math.inf, "B": -math.inf} and normalise_pair(lps[1], "A", "B") == 0.5
    assert lps[0] == {"A": -0.5, "B": -1.0}
    assert overflow(be, words(37), 1, PREFIX) == (len(fresh(words(37), PREFIX)), 40)
    if kind == "async":
        assert asyncio.run(be.achat_one(words(35), GREEDY))[0].finish_reason == "too_long"
        assert asyncio.run(be.achoice_logprobs_one(words(37), PREFIX, ["A", "B"]))["A"] == -math.inf
    # chat 3, choice_logprobs 2, overflow 1 (its ids kept for the next send of that question)
    assert be.tok.calls == {"offline": 6, "async": 6 + 1}[kind]


@pytest.mark.parametrize("kind", KINDS)
def test_tokenize_once_off_renders_again_as_before(fake_engines, monkeypatch, kind):
    monkeypatch.setenv("CAI_TOKENIZE_ONCE", "0")
    be = make(kind)
    assert all(overflow(be, c, 8) is None for c in TURNS)
    out = be.chat(TURNS, GREEDY)
    assert len(out) == 3 and be.prompts.reused == 0 and len(be.prompts) == 0
    if kind == "offline":  # vLLM renders each conversation itself, as the backend did before
        assert be.tok.calls == 3 and fake_engines.chats == 3 and fake_engines.sent == []
    else:
        assert be.tok.calls == 6


@pytest.mark.parametrize("kind", KINDS)
def test_the_stages_tokenize_each_request_once(fake_engines, kind):
    """The judge and the critique → revision rounds as the stages run them, unchanged: each checks
    every request with overflow() before it sends it."""
    from cai.batching import Batcher
    from cai.constitution import load_constitution
    from cai.judge import Judge, JudgeConfig
    from cai.judge.pairwise import PairInput
    from cai.prompts import Templates
    from cai.revise import Reviser

    be = make(kind, window=4096)
    pairs = [PairInput(key=f"k{i}", prompt=PLAIN, a=f"Paris {i}.", b="Rome.") for i in range(3)]
    verdicts = Judge(be, load_constitution("default"), JudgeConfig(ensemble=2)).compare(pairs)
    assert len(verdicts) == 3 and be.tok.calls == 3 * 2 * 2  # pairs × questions × orders
    assert be.prompts.reused == be.tok.calls

    be = make(kind, window=4096)
    params = SamplingParams(max_tokens=16, temperature=0.0)
    batcher = Batcher(be)
    reviser = Reviser.build(batcher, load_constitution("default"), Templates(), 0, params, params)
    results: list = []
    jobs = (lambda i=i: reviser.rounds(f"r{i}", [{"role": "user", "content": f"question {i}"}], "An answer.", 2)
            for i in range(3))
    asyncio.run(batcher.run(jobs, window=3, on_done=results.append))
    assert all(len(rounds) == 2 for rounds, _ in results)
    assert be.tok.calls == 3 * 2 * 2 and be.prompts.reused == be.tok.calls  # records × rounds × (critique, revision)


# ---------------------------------------------------------------- the real engines (slow)


def counting(monkeypatch, tok) -> list:
    """Count the renders of a real tokenizer."""
    calls: list = []
    real = tok.apply_chat_template

    def wrapped(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(tok, "apply_chat_template", wrapped)
    return calls


CASES = [(PLAIN, None), (MULTI, None), (TURNS[2], None), (PLAIN, PREFIX), (MULTI, "Blue, and"),
         ([{"role": "user", "content": "Héllo — ça va? 你好"}], None)]


@pytest.mark.slow
def test_async_engine_outputs_and_tokenizer_calls(vllm_backend, monkeypatch):
    from cai.backends.vllm_async import AsyncVLLMBackend

    be = vllm_backend
    assert isinstance(be, AsyncVLLMBackend)
    calls = counting(monkeypatch, be.tok)
    params = SamplingParams(max_tokens=16, temperature=0.0)
    assert all(overflow(be, c, params.max_tokens) is None for c in TURNS)
    once = be.chat(TURNS, params)
    assert len(calls) == len(TURNS)
    monkeypatch.setattr(be.prompts, "keep", False)  # the send renders again (what cai did before)
    assert all(overflow(be, c, params.max_tokens) is None for c in TURNS)
    twice = be.chat(TURNS, params)
    assert len(calls) == 3 * len(TURNS)
    assert [[(c.text, c.tokens, c.finish_reason) for c in o] for o in once] == \
           [[(c.text, c.tokens, c.finish_reason) for c in o] for o in twice]
    monkeypatch.setattr(be.prompts, "keep", True)
    # a request over the context: too_long at the render step, the rest of the batch answered
    long = [{"role": "user", "content": "sea " * 2100}]
    out = be.chat([TURNS[0], long, TURNS[2]], params)
    assert out[1][0].finish_reason == "too_long" and out[1][0].text == ""
    assert out[0][0].text and out[2][0].text and out[0][0].finish_reason != "too_long"
    lps = be.choice_logprobs([long, PLAIN], PREFIX, ["A", "B"])
    assert lps[0] == {"A": -math.inf, "B": -math.inf} and all(math.isfinite(x) for x in lps[1].values())


@pytest.mark.slow
def test_hf_runs_the_ids_it_counted(hf_backend, monkeypatch):
    be = hf_backend
    convs = [c for c, p in CASES if p is None]
    texts = [be._render(c) for c in convs]
    by_text = be.tok(texts, padding=True, add_special_tokens=False, return_tensors="pt")
    by_ids = be._encode([be._ids(c) for c in convs])
    assert by_ids["input_ids"].tolist() == by_text["input_ids"].tolist()  # what the backend ran before
    assert by_ids["attention_mask"].tolist() == by_text["attention_mask"].tolist()
    calls = counting(monkeypatch, be.tok)
    assert all(overflow(be, c, 8) is None for c in convs)
    out = be.chat(convs, GREEDY)
    be.choice_logprobs(convs, PREFIX, ["A", "B"])
    assert len(calls) == 2 * len(convs) and all(o[0].text for o in out)
    monkeypatch.setattr(be, "context_window", 60)  # PLAIN is 37 tokens in this template
    out = be.chat([PLAIN, words(60)], GREEDY)
    assert out[1][0].finish_reason == "too_long" and out[0][0].finish_reason != "too_long"


# The offline engine: starting it stops the session's async engine, so its tests carry `own_engine`
# (the session runs them after every other test).
@pytest.fixture(scope="module")
def offline(model_path):
    from cai.backends import load_backend
    from cai.backends.vllm_engine import shutdown_all

    yield load_backend("vllm", "smollm2-135m", pipeline=False)
    shutdown_all()


@pytest.mark.slow
@pytest.mark.own_engine
def test_the_ids_sent_are_the_ones_vllms_chat_path_makes(offline):
    llm = offline.llm
    for conv, prefix in CASES:
        if prefix is None:
            theirs = llm._preprocess_chat_one(conv)
        else:
            theirs = llm._preprocess_chat_one(conv + [{"role": "assistant", "content": prefix}],
                                              add_generation_prompt=False, continue_final_message=True)
        assert offline._render(conv, prefix) == list(theirs["prompt_token_ids"]), (conv, prefix)


@pytest.mark.slow
@pytest.mark.own_engine
def test_offline_outputs_match_vllms_chat_path(offline, monkeypatch):
    convs = [c for c, p in CASES if p is None]
    prefixes = [p or PREFIX for _, p in CASES]
    judged = [c for c, _ in CASES]
    calls = counting(monkeypatch, offline.tok)
    rendered = []
    monkeypatch.setattr(offline.llm.renderer, "render_chat",
                        lambda *a, real=offline.llm.renderer.render_chat, **k: rendered.append(1) or real(*a, **k))

    def run():
        for c in convs:
            assert overflow(offline, c, 24) is None
        greedy = offline.chat(convs, SamplingParams(max_tokens=24, temperature=0.0))
        seeded = offline.chat(convs, SamplingParams(max_tokens=24, temperature=0.8, n=2, seed=5))
        lps = offline.choice_logprobs(judged, prefixes, ["A", "B"])
        texts = [[(c.text, c.tokens, c.finish_reason) for c in o] for o in greedy + seeded]
        return texts, lps

    new = run()
    assert len(calls) == len(convs) + len(convs) + len(judged) and rendered == []  # vLLM rendered nothing
    monkeypatch.setattr(offline.prompts, "keep", False)  # the old path: llm.chat renders each again
    old = run()
    assert len(rendered) == 2 * len(convs) + len(judged)
    assert new == old  # the same prompts to the same engine: the same texts and log-probabilities
