"""The OpenAI-compatible HTTP backend: fault handling against a scripted local server (fast), and
the real thing against vLLM's own server on 127.0.0.1 (slow)."""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import httpx
import pytest

from cai.backends import load_backend
from cai.backends.base import SamplingParams, normalise_pair
from cai.backends.openai import OpenAIBackend, _per_sample_tokens, _retry_after, split_tokens
from cai.config import EngineConfig
from cai.errors import UsageError

KEY_ENV = "CAI_TEST_OPENAI_KEY"
SECRET = "sk-test-5f2b9c1e-do-not-leak"

# ---------------------------------------------------------------------------------------------
# A scripted server. `plan(cid, attempt)` decides each request's fate; `cid` is the content of the
# conversation's last user message, so the server can tell which conversation is retrying.
# ---------------------------------------------------------------------------------------------

HANG_S = 1.5  # longer than the client timeouts used below


class Log:
    def __init__(self):
        self.lock = threading.Lock()
        self.attempts: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()  # successful replies written, per conversation
        self.ports: dict[str, list[int]] = defaultdict(list)
        self.auth: list[str | None] = []
        self.bodies: list[dict] = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers do

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, payload: dict | str, headers: dict | None = None) -> None:
        raw = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        self._send(200, {"ok": True})

    def do_POST(self) -> None:
        srv = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        users = [m["content"] for m in body["messages"] if m["role"] == "user"]
        cid = users[-1]
        log: Log = srv.log
        with log.lock:
            attempt = log.attempts[cid]
            log.attempts[cid] += 1
            log.ports[cid].append(srv.server_address[1])
            log.auth.append(self.headers.get("Authorization"))
            log.bodies.append(body)
        action = srv.plan(cid, attempt)
        if action == "500":
            self._send(500, {"error": "internal"})
        elif action == "429":
            self._send(429, {"error": "slow down"}, {"Retry-After": srv.retry_after})
        elif action == "400":
            # A careless server that echoes the credentials back: the client must scrub them.
            self._send(400, {"error": f"bad request; you sent {self.headers.get('Authorization')}"})
        elif action == "hang":
            time.sleep(HANG_S)
            self.close_connection = True
        elif action == "drop":
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
        else:
            if action == "ok_slow":
                time.sleep(random.Random(cid).uniform(0.0, 0.05))  # shuffle completion order
            with log.lock:
                log.answered[cid] += 1
            self._send(200, reply(body))


def reply(body: dict) -> dict:
    cid = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
    if body.get("continue_final_message"):
        top = [{"token": "A", "logprob": -0.5}, {"token": " A", "logprob": -2.0}, {"token": "B", "logprob": -1.25},
               {"token": "The", "logprob": -3.0}]
        return {"choices": [{"index": 0, "message": {"role": "assistant", "content": "A"}, "finish_reason": "length",
                             "logprobs": {"content": [{"token": "A", "logprob": -0.5, "top_logprobs": top}]}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 1}}
    n = body.get("n", 1)
    # Reversed index order: the client must sort choices, not trust their position.
    choices = [{"index": i, "message": {"role": "assistant", "content": f"echo:{cid}#{i}" + "x" * i},
                "finish_reason": "length" if body["max_tokens"] <= 4 else "stop"} for i in reversed(range(n))]
    return {"choices": choices, "usage": {"prompt_tokens": 5, "completion_tokens": 7 * n}}


class FakeServer:
    def __init__(self, log: Log, plan: Callable[[str, int], str], retry_after: str = "0.05"):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.log, self.httpd.plan, self.httpd.retry_after = log, plan, retry_after
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers():
    made: list[FakeServer] = []

    def make(plan, count: int = 1, retry_after: str = "0.05"):
        log = Log()
        group = [FakeServer(log, plan, retry_after) for _ in range(count)]
        made.extend(group)
        return log, group

    yield make
    for s in made:
        s.stop()


def conv(cid: str) -> list[dict]:
    return [{"role": "system", "content": "be brief"}, {"role": "user", "content": cid}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# Fast tests
# ---------------------------------------------------------------------------------------------

ALWAYS_500 = {"c05", "c18", "c31"}
BAD_REQUEST = "c22"
MAX_RETRIES = 4


def chaos_plan(cid: str, attempt: int) -> str:
    """Seeded faults per (conversation, attempt), independent of arrival order; every conversation
    outside the two failing sets succeeds by its fourth attempt."""
    if cid in ALWAYS_500:
        return "500"
    if cid == BAD_REQUEST:
        return "400"
    if attempt >= 3:
        return "ok_slow"
    r = random.Random(f"1234:{cid}:{attempt}").random()
    if r < 0.15:
        return "500"
    if r < 0.27:
        return "429"
    if r < 0.35:
        return "hang"
    if r < 0.47:
        return "drop"
    return "ok_slow"


def test_chaos_every_request_answered_or_failed_once(servers, monkeypatch, caplog):
    monkeypatch.setenv(KEY_ENV, SECRET)
    log, (s1, s2) = servers(chaos_plan, count=2)
    ids = [f"c{i:02d}" for i in range(40)]
    planned = Counter(chaos_plan(c, a) for c in ids for a in range(3))
    assert all(planned[k] > 0 for k in ("500", "429", "hang", "drop", "ok_slow"))

    be = OpenAIBackend("fake-model", [s1.url, s2.url + "/v1/"], api_key_env=KEY_ENV, concurrency=16,
                       timeout=0.5, max_retries=MAX_RETRIES, backoff=0.01)
    try:
        t0 = time.monotonic()
        with caplog.at_level("DEBUG", logger="cai.backends.openai"):
            out = be.chat([conv(c) for c in ids], SamplingParams(max_tokens=16, n=2, seed=3))
        assert time.monotonic() - t0 < 30
    finally:
        be.close()

    assert len(out) == len(ids)
    failed = ALWAYS_500 | {BAD_REQUEST}
    for cid, comps in zip(ids, out):
        assert len(comps) == 2
        if cid in failed:
            assert all(c.finish_reason == "error" and c.text == "" and c.tokens == 0 and c.error for c in comps)
            assert log.answered[cid] == 0
        else:
            # Order preserved, samples in index order, each conversation answered exactly once.
            assert [c.text for c in comps] == [f"echo:{cid}#0", f"echo:{cid}#1x"]
            assert all(c.finish_reason == "stop" and c.error is None for c in comps)
            assert sum(c.tokens for c in comps) == 14
            assert log.answered[cid] == 1
    for cid in ALWAYS_500:
        assert log.attempts[cid] == MAX_RETRIES + 1
        assert "HTTP 500" in out[ids.index(cid)][0].error
        # Each retry goes to the next URL.
        assert set(log.ports[cid]) == {s1.port, s2.port}
        assert all(a != b for a, b in zip(log.ports[cid], log.ports[cid][1:]))
    assert log.attempts[BAD_REQUEST] == 1  # a 4xx other than 429 is not retried
    assert "HTTP 400" in out[ids.index(BAD_REQUEST)][0].error
    assert be.failed_requests == len(failed)

    # Both servers got traffic; every request carried the key; it leaked nowhere.
    hits = Counter(p for ports in log.ports.values() for p in ports)
    assert hits[s1.port] > 5 and hits[s2.port] > 5
    assert set(log.auth) == {f"Bearer {SECRET}"}
    texts = [c.error or "" for comps in out for c in comps] + [repr(be), str(be), str(vars(be))]
    texts += [r.getMessage() for r in caplog.records]
    assert not any(SECRET in t for t in texts)
    assert any("***" in t for t in texts)  # the echoed header was scrubbed, not dropped silently

    # Sampling fields as sent; a per-conversation seed, as the offline engines use.
    b = log.bodies[0]
    assert b["model"] == "fake-model" and b["n"] == 2 and b["max_tokens"] == 16 and "stop" not in b
    seeds = {tuple(x["messages"][-1].values()): x["seed"] for x in log.bodies}
    assert len(set(seeds.values())) > 30


def test_retry_goes_to_the_next_url(servers):
    log, (live,) = servers(lambda cid, a: "ok")
    dead = f"http://127.0.0.1:{free_port()}"
    with OpenAIBackend("m", f"{dead},{live.url}", concurrency=4, timeout=2, max_retries=1, backoff=0.01) as be:
        out = be.chat([conv(f"q{i}") for i in range(10)], SamplingParams(max_tokens=8))
    assert [c[0].text for c in out] == [f"echo:q{i}#0" for i in range(10)]
    assert be.failed_requests == 0


def test_retry_after_is_honoured(servers):
    log, (s,) = servers(lambda cid, a: "429" if a == 0 else "ok", retry_after="1")
    with OpenAIBackend("m", s.url, timeout=5, max_retries=2, backoff=0.001) as be:
        t0 = time.monotonic()
        out = be.chat([conv("only")], SamplingParams(max_tokens=8))
        elapsed = time.monotonic() - t0
    assert out[0][0].text == "echo:only#0"
    assert elapsed >= 0.95
    assert log.attempts["only"] == 2


def test_timeout_then_error_after_retries(servers):
    log, (s,) = servers(lambda cid, a: "hang")
    with OpenAIBackend("m", s.url, timeout=0.3, max_retries=1, backoff=0.01) as be:
        t0 = time.monotonic()
        out = be.chat([conv("slow")], SamplingParams(max_tokens=8, n=3))
        assert time.monotonic() - t0 < HANG_S
    assert [c.finish_reason for c in out[0]] == ["error"] * 3
    assert "timed out" in out[0][0].error and "2 attempts" in out[0][0].error
    assert log.attempts["slow"] == 2


def test_dropped_connections_are_retried(servers):
    log, (s,) = servers(lambda cid, a: "drop" if a < 2 else "ok")
    with OpenAIBackend("m", s.url, timeout=2, max_retries=2, backoff=0.01) as be:
        out = be.chat([conv(f"d{i}") for i in range(5)], SamplingParams(max_tokens=2))
    assert [c[0].text for c in out] == [f"echo:d{i}#0" for i in range(5)]
    assert all(c[0].finish_reason == "length" for c in out)
    assert all(log.attempts[f"d{i}"] == 3 and log.answered[f"d{i}"] == 1 for i in range(5))


def test_no_key_no_header_and_stop_sent(servers, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    log, (s,) = servers(lambda cid, a: "ok")
    with OpenAIBackend("m", s.url, api_key_env=KEY_ENV) as be:
        be.chat([conv("k")], SamplingParams(max_tokens=8, stop=["\n\n"], temperature=0.0))
    assert log.auth == [None]
    assert log.bodies[0]["stop"] == ["\n\n"] and log.bodies[0]["temperature"] == 0.0 and "seed" not in log.bodies[0]


def test_achat_one_from_a_foreign_loop(servers):
    log, (s,) = servers(lambda cid, a: "ok_slow")

    async def main(be):
        params = SamplingParams(max_tokens=8, n=2)
        results = await asyncio.gather(*(be.achat_one(conv(f"a{i}"), params) for i in range(12)))
        lp = await be.achoice_logprobs_one(conv("j"), "The answer is (", ["A", "B"])
        return results, lp

    with OpenAIBackend("m", s.url, concurrency=3) as be:
        results, lp = asyncio.run(main(be))
        # A second loop (e.g. a second asyncio.run) works too: the traffic lives on the backend's.
        results2, _ = asyncio.run(main(be))
    assert [r[0].text for r in results] == [f"echo:a{i}#0" for i in range(12)]
    assert [r[0].text for r in results2] == [r[0].text for r in results]
    assert set(lp) == {"A", "B"} and math.isfinite(lp["A"])


def test_choice_logprobs_request_and_merge(servers):
    log, (s,) = servers(lambda cid, a: "500" if cid == "broken" else "ok")
    with OpenAIBackend("m", s.url, max_retries=1, backoff=0.01) as be:
        out = be.choice_logprobs([conv("j1"), conv("broken"), conv("j2")], ["P1 (", "P2 (", "P3 ("], ["A", "B", "C"])
        failed = be.failed_requests
    body = next(b for b in log.bodies if b["messages"][1]["content"] == "j1")
    assert body["messages"][-1] == {"role": "assistant", "content": "P1 ("}
    assert body["add_generation_prompt"] is False and body["continue_final_message"] is True
    assert body["max_tokens"] == 1 and body["temperature"] == 0 and body["logprobs"] is True
    assert body["top_logprobs"] == 20
    for lp in (out[0], out[2]):
        assert lp["A"] == pytest.approx(math.log(math.exp(-0.5) + math.exp(-2.0)))
        assert lp["B"] == pytest.approx(-1.25)
        assert lp["C"] == -math.inf
    assert out[1] == {"A": -math.inf, "B": -math.inf, "C": -math.inf}
    assert normalise_pair(out[1], "A", "B") == 0.5
    assert failed == 1


def test_reviser_behind_the_openai_backend(servers, tmp_path):
    """The policy answers, a served reviser critiques and revises (the scripted server echoes)."""
    from cai.config import GenerateConfig
    from cai.generate import run_generate
    from cai.records import read_rows
    from tests.scripted import ScriptedBackend

    log, (s,) = servers(lambda cid, a: "ok")
    p = tmp_path / "p.jsonl"
    p.write_text(json.dumps({"prompt": "Tell me about owls."}) + "\n")
    cfg = GenerateConfig(prompts=str(p), rounds=2, run_dir=str(tmp_path / "run"), model="scripted-model",
                         reviser_model="served-critic", reviser_backend="openai", reviser_base_url=s.url)
    from cai.generate import resolve_reviser

    assert resolve_reviser(cfg, "hf") == "openai"
    reviser = OpenAIBackend("served-critic", [s.url], max_retries=0)
    run_generate(cfg, backend=ScriptedBackend(), reviser=reviser, progress=False)
    (row,) = read_rows(tmp_path / "run" / "generations.jsonl")
    assert row["initial"].startswith("answer 0 to:")  # the policy's
    assert all(r["critique"].startswith("echo:") and r["revision"].startswith("echo:") for r in row["rounds"])
    assert sum(log.answered.values()) == 4 and {b["model"] for b in log.bodies} == {"served-critic"}
    assert row["meta"]["reviser_backend"] == "openai"


def test_an_over_long_request_is_that_records_failure_not_a_retry_loop(servers, tmp_path):
    """A server's 400 for a prompt past its context: the row fails once, the others are written."""
    from cai.config import GenerateConfig
    from cai.generate import run_generate
    from cai.records import read_rows

    log, (s,) = servers(lambda cid, a: "400" if "LONG" in cid else "ok")
    p = tmp_path / "p.jsonl"
    p.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in ["short one", "LONG " * 3000, "short two"]))
    be = OpenAIBackend("served", [s.url], max_retries=3)
    cfg = GenerateConfig(prompts=str(p), rounds=0, run_dir=str(tmp_path / "run"), model="served")
    summary = run_generate(cfg, backend=be, progress=False)
    assert summary.written == 2 and summary.failed == 1
    assert len(list(read_rows(tmp_path / "run" / "generations.jsonl"))) == 2
    (long_cid,) = [c for c in log.attempts if "LONG" in c]
    assert log.attempts[long_cid] == 1  # asked once: a 400 is not retried
    assert "HTTP 400" in summary.errors[0]


def test_closed_backend_refuses():
    be = OpenAIBackend("m", "http://127.0.0.1:9")
    be.close()
    with pytest.raises(RuntimeError):
        be.chat([conv("x")], SamplingParams())
    assert be.chat([], SamplingParams()) == []


def test_helpers():
    assert split_tokens(10, ["a"]) == [10]
    assert split_tokens(10, ["aaaa", "a"]) == [8, 2]
    assert sum(split_tokens(7, ["abc", "", "abcdefgh"])) == 7
    assert split_tokens(3, ["x" * 100, "y"]) == [2, 1]
    assert split_tokens(4, ["", ""]) == [2, 2]
    # Samples cut by the limit used exactly max_tokens; the rest is shared among the others.
    assert _per_sample_tokens(30, ["ab", "abcdefghij", "abcdefghijkl"], ["stop", "length", "length"], 12) == [6, 12, 12]
    assert _per_sample_tokens(5, ["a", "b"], ["length", "length"], 12) == split_tokens(5, ["a", "b"])
    assert _retry_after("2") == 2.0 and _retry_after("0.5") == 0.5 and _retry_after(None) is None
    assert _retry_after("soon") is None
    future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 < _retry_after(future) <= 31
    with pytest.raises(ValueError):
        OpenAIBackend("m", [])
    with pytest.raises(ValueError):
        OpenAIBackend("m", "127.0.0.1:8000")


def test_openai_limits_reach_the_backend(monkeypatch):
    for var in ("CAI_OPENAI_TIMEOUT", "CAI_OPENAI_CONCURRENCY", "CAI_OPENAI_MAX_RETRIES", "CAI_BACKEND"):
        monkeypatch.delenv(var, raising=False)
    cfg = EngineConfig(model="served", backend="openai", base_url="http://127.0.0.1:9", request_timeout=3.5,
                       concurrency=2, max_retries=1)
    be = load_backend(cfg.backend, cfg.model, **cfg.backend_options())
    assert (be.timeout, be.concurrency, be.max_retries) == (3.5, 2, 1)
    be.close()
    # unset: the environment, then the backend's own defaults; a flag beats the environment
    monkeypatch.setenv("CAI_OPENAI_TIMEOUT", "7")
    monkeypatch.setenv("CAI_OPENAI_CONCURRENCY", "3")
    be = load_backend("openai", "served", base_url="http://127.0.0.1:9")
    assert (be.timeout, be.concurrency, be.max_retries) == (7.0, 3, 5)
    be.close()
    be = load_backend("openai", "served", base_url="http://127.0.0.1:9", concurrency=9)
    assert be.concurrency == 9
    be.close()
    monkeypatch.setenv("CAI_OPENAI_CONCURRENCY", "many")
    with pytest.raises(UsageError, match="CAI_OPENAI_CONCURRENCY: 'many' is not a whole number"):
        load_backend("openai", "served", base_url="http://127.0.0.1:9")


# ---------------------------------------------------------------------------------------------
# Slow: vLLM's own OpenAI-compatible server, on the CPU
# ---------------------------------------------------------------------------------------------

SERVED = "smollm2-135m"


@pytest.fixture(scope="module")
def vllm_server(model_path, tmp_path_factory):
    pytest.importorskip("vllm")
    port = free_port()
    logfile = tmp_path_factory.mktemp("vllm-server") / "server.log"
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_path,
           "--host", "127.0.0.1", "--port", str(port), "--gpu-memory-utilization", "0.3",
           "--max-model-len", "2048", "--enforce-eager", "--served-model-name", SERVED]
    env = dict(os.environ, HF_HUB_OFFLINE="1", VLLM_LOGGING_LEVEL="WARNING")
    with open(logfile, "wb") as fh:
        # Own process group: teardown must reach the engine process the server spawns.
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited with {proc.returncode}:\n{_tail(logfile)}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM server not healthy after 180 s:\n{_tail(logfile)}")
            time.sleep(1)
        yield url
    finally:
        _kill_group(proc)


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def remote(vllm_server):
    be = OpenAIBackend(SERVED, vllm_server, concurrency=8, timeout=120, max_retries=2)
    yield be
    be.close()


@pytest.mark.slow
def test_vllm_server_chat(remote):
    out = remote.chat([[{"role": "user", "content": "What is the capital of France?"}]],
                      SamplingParams(max_tokens=24, temperature=0.0))
    (c,) = out[0]
    assert c.error is None and c.finish_reason in ("stop", "length")
    assert c.text.strip() and c.tokens > 0
    assert remote.failed_requests == 0


@pytest.mark.slow
def test_vllm_server_n_samples(remote):
    chats = [[{"role": "user", "content": "Write one sentence about the sea."}],
             [{"role": "user", "content": "Name a color."}]]
    out = remote.chat(chats, SamplingParams(max_tokens=12, temperature=1.0, n=3, seed=5))
    assert [len(c) for c in out] == [3, 3]
    assert all(x.error is None and x.tokens > 0 for c in out for x in c)
    assert all(x.tokens <= 12 for c in out for x in c)
    assert all(x.tokens == 12 for c in out for x in c if x.finish_reason == "length")


@pytest.mark.slow
def test_vllm_server_choice_logprobs(remote):
    judge = [[{"role": "user", "content": "Which answer is correct? (A) Paris is the capital of France. "
                                          "(B) Rome is the capital of France."}]]
    (lp,) = remote.choice_logprobs(judge, "The better answer is (", ["A", "B"])
    assert set(lp) == {"A", "B"}
    assert all(math.isfinite(x) and x < 0 for x in lp.values())
    assert math.exp(lp["A"]) + math.exp(lp["B"]) <= 1.0 + 1e-6
    assert remote.failed_requests == 0


@pytest.mark.slow
def test_vllm_server_as_the_reviser_of_a_transformers_policy(vllm_server, tmp_path):
    """Real parts on both sides: transformers answers, vLLM's server critiques and revises."""
    from cai.config import GenerateConfig
    from cai.generate import run_generate
    from cai.records import read_rows

    p = tmp_path / "p.jsonl"
    p.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in ("Name a bird.", "How do I boil an egg?")))
    cfg = GenerateConfig(prompts=str(p), rounds=1, run_dir=str(tmp_path / "run"), backend="hf", model=SERVED,
                         reviser_model=SERVED, reviser_backend="openai", reviser_base_url=vllm_server, few_shot=0,
                         answer={"max_tokens": 16}, critique={"max_tokens": 12}, revision={"max_tokens": 16})
    s = run_generate(cfg, progress=False)
    rows = list(read_rows(tmp_path / "run" / "generations.jsonl"))
    assert s.written == 2 == len(rows) and s.failed == 0
    assert all(r["meta"]["backend"] == "hf" and r["meta"]["reviser_backend"] == "openai" for r in rows)
    assert all(r["rounds"][0]["critique"] for r in rows)
