"""The real engines agree: vLLM (CPU build) against transformers, the reference."""

from __future__ import annotations

import math

import pytest

from cai.backends.base import SamplingParams, normalise_pair

pytestmark = pytest.mark.slow

CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Name three primary colors."}],
    [{"role": "user", "content": "Write one sentence about the sea."}],
]
JUDGE = [
    [{"role": "user", "content": "Which answer is correct? (A) Paris is the capital of France. (B) Rome is the capital of France."}],
    [{"role": "user", "content": "Which reply is kinder? (A) You are an idiot. (B) Thanks for asking, here is how it works."}],
]
# The same weights in two different kernels: greedy paths agree at first, option probabilities within
# this much (absolute, after normalising over A/B).
P_TOLERANCE = 0.12


def test_greedy_answers_agree(vllm_backend, hf_backend):
    params = SamplingParams(max_tokens=24, temperature=0.0)
    v = vllm_backend.chat(CHATS, params)
    h = hf_backend.chat(CHATS, params)
    for cv, ch in zip(v, h):
        assert cv[0].text and ch[0].text
        # Compare the first few words: later tokens may drift on rounding ties.
        assert cv[0].text.split()[:4] == ch[0].text.split()[:4]
        assert cv[0].tokens > 0 and ch[0].tokens > 0
        assert cv[0].finish_reason in ("stop", "length")


def test_choice_logprobs_agree(vllm_backend, hf_backend):
    v = vllm_backend.choice_logprobs(JUDGE, "The better answer is (", ["A", "B"])
    h = hf_backend.choice_logprobs(JUDGE, "The better answer is (", ["A", "B"])
    for lv, lh in zip(v, h):
        assert all(math.isfinite(x) and x < 0 for x in lv.values())
        assert all(math.isfinite(x) and x < 0 for x in lh.values())
        assert abs(normalise_pair(lv, "A", "B") - normalise_pair(lh, "A", "B")) < P_TOLERANCE


def test_per_conversation_prefixes(vllm_backend):
    prefixes = ["The better answer is (", "My choice: ("]
    out = vllm_backend.choice_logprobs(JUDGE, prefixes, ["A", "B"])
    assert len(out) == 2 and all(set(o) == {"A", "B"} for o in out)


@pytest.mark.parametrize("which", ["vllm", "hf"])
def test_n_samples_and_seed(which, vllm_backend, hf_backend):
    be = vllm_backend if which == "vllm" else hf_backend
    params = SamplingParams(max_tokens=12, temperature=1.0, n=3, seed=7)
    first = be.chat(CHATS[:2], params)
    again = be.chat(CHATS[:2], params)
    assert [len(c) for c in first] == [3, 3]
    assert [[c.text for c in cs] for cs in first] == [[c.text for c in cs] for cs in again]
    assert len({c.text for c in first[0]}) > 1  # n samples, not one answer three times


def test_stop_strings(vllm_backend, hf_backend):
    params = SamplingParams(max_tokens=30, temperature=0.0, stop=["Paris"])
    for be in (vllm_backend, hf_backend):
        out = be.chat(CHATS[:1], params)[0][0]
        assert "Paris" not in out.text
