"""OpenAI-compatible HTTP backend: one or more servers (vLLM's own server is the one that matters).

All traffic runs on one private event loop in a daemon thread, with one `httpx.AsyncClient` and one
semaphore. The synchronous calls (`chat`, `choice_logprobs`) submit a batch to that loop and wait;
the asynchronous ones (`achat_one`, `achoice_logprobs_one`) may be awaited from any other event
loop (e.g. the `Batcher`'s), and are bridged to the private loop. Keeping a single loop means a
single connection pool (keep-alive survives between batches), one concurrency bound for the whole
process, and a clean `close()`, whichever loop the caller runs.

Failure model: every request ends either with an answer or with a recorded error, exactly once.
Transient failures (429, 5xx, 408, timeouts, connection errors, unreadable replies) are retried
with exponential backoff and jitter, honouring `Retry-After`; each retry goes to the next base URL.
A request still failing after `max_retries` retries, or failing with another 4xx at once, becomes
`Completion(text="", finish_reason="error", error=...)`, one per sample, for `chat`; for
`choice_logprobs` it becomes -inf for every option (which the judge reads as "no preference",
p = 0.5) and a warning in the log. `failed_requests` counts them.

The API key is read once from the named environment variable, sent as `Authorization: Bearer`, and
scrubbed from every error text; it never appears in a repr.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import itertools
import json
import logging
import math
import os
import random
import threading
import time
from typing import Any, Callable, Sequence, TypeVar

import httpx

from pydantic import model_validator

from cai.backends.base import (BackendOptions, Completion, Conversation, Engine, SamplingParams, conversation_seed,
                               merge_option_logprobs, option, prefixes_for)
from cai.errors import UsageError

log = logging.getLogger(__name__)
T = TypeVar("T")

# Alternatives asked for at the judged position; vLLM's default cap (`--max-logprobs`) is 20 too.
TOP_LOGPROBS = 20
# Status codes worth another try: overload, rate limits, and server-side failures.
RETRY_STATUS = frozenset({408, 409, 425, 429}) | frozenset(range(500, 600))
# vLLM reports these when it gave up on a sequence (engine shutdown, internal error): transient.
FAILED_FINISH = frozenset({"abort", "error"})


class _Secret:
    """Holds the API key so that no repr, vars() dump or traceback local shows it."""

    __slots__ = ("_value",)

    def __init__(self, value: str | None):
        self._value = value or None

    def get(self) -> str | None:
        return self._value

    def __repr__(self) -> str:
        return "<secret>" if self._value else "<none>"

    __str__ = __repr__


class _Failure(Exception):
    """One failed attempt. `retry` says whether another attempt could succeed."""

    def __init__(self, reason: str, *, retry: bool, wait: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry = retry
        self.wait = wait


def _normalise_url(url: str) -> str:
    """Accept both `http://host:8000` and `http://host:8000/v1` (how OpenAI clients spell it)."""
    url = url.strip().rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"base URL must start with http:// or https://: {url!r}")
    return url


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def split_tokens(total: int, texts: Sequence[str]) -> list[int]:
    """Share a request's completion-token total among its samples, by text length.

    The OpenAI response reports usage for the whole request only; without the server's tokenizer
    the exact per-sample count is unknown, so split in proportion to characters (largest
    remainder), keeping the sum exact and giving any non-empty text at least one token.
    """
    if not texts:
        return []
    if len(texts) == 1:
        return [max(total, 0)]
    weights = [len(t) for t in texts]
    mass = sum(weights)
    if mass == 0 or total <= 0:
        base, extra = divmod(max(total, 0), len(texts))
        return [base + (i < extra) for i in range(len(texts))]
    exact = [total * w / mass for w in weights]
    out = [int(x) for x in exact]
    order = sorted(range(len(texts)), key=lambda i: exact[i] - out[i], reverse=True)
    for i in order[: total - sum(out)]:
        out[i] += 1
    # Rounding must not leave a visible sample at zero tokens; take from the largest share.
    for i, w in enumerate(weights):
        if w and out[i] == 0:
            j = max(range(len(out)), key=out.__getitem__)
            if out[j] > 1:
                out[j] -= 1
                out[i] = 1
    return out


def _per_sample_tokens(total: int, texts: Sequence[str], finishes: Sequence[Any], max_tokens: int) -> list[int]:
    """Per-sample counts from the request total: a sample cut by the length limit used exactly
    `max_tokens`, so only the rest is estimated (by `split_tokens`)."""
    if len(texts) == 1:
        return [max(total, 0)]
    cut = [f == "length" for f in finishes]
    rest = total - max_tokens * sum(cut)
    others = [t for t, c in zip(texts, cut) if not c]
    if not any(cut) or rest < 0 or (not others and rest != 0):
        return split_tokens(total, texts)
    shares = iter(split_tokens(rest, others))
    return [max_tokens if c else next(shares) for c in cut]


def _finish(reason: Any) -> str:
    return "length" if reason == "length" else "stop"


def _error_completions(n: int, reason: str) -> list[Completion]:
    return [Completion(text="", tokens=0, finish_reason="error", error=reason) for _ in range(n)]


# Environment settings, read when neither a flag nor a recipe sets them: (variable, type).
ENV = {"base_url": ("CAI_OPENAI_BASE_URL", str), "timeout": ("CAI_OPENAI_TIMEOUT", float),
       "concurrency": ("CAI_OPENAI_CONCURRENCY", int), "max_retries": ("CAI_OPENAI_MAX_RETRIES", int)}


class OpenAIOptions(BackendOptions):
    """The client's settings. A command hands its server settings to whichever engine it starts (a
    local reviser inherits the policy's), so another backend drops them without a word."""

    base_url: list[str] = option(..., elsewhere="drop", description="Server URL(s); requests go round-robin.")
    timeout: float = option(120.0, elsewhere="drop", gt=0, description="Seconds per attempt of a request.")
    concurrency: int = option(64, elsewhere="drop", ge=1, description="Requests in flight, over all servers.")
    max_retries: int = option(5, elsewhere="drop", ge=0, description="Retries of a failed request.")
    api_key_env: str = option("OPENAI_API_KEY", description="The variable holding the API key.")
    backoff: float = option(0.5, ge=0, description="First retry delay in seconds (doubled each time).")

    @model_validator(mode="before")
    @classmethod
    def _from_environment(cls, given: dict) -> dict:
        """Unset settings from CAI_OPENAI_*; a bad value is a UsageError naming where it came from
        (raised as is: pydantic passes on what is not a ValueError)."""
        out = {k: v for k, v in given.items() if v is not None}
        for key, (env, kind) in ENV.items():
            value, source = out.get(key), f"--{key.replace('_', '-')}"
            if value is None and os.environ.get(env):
                value, source = os.environ[env], env
            if value is None:
                continue
            if key == "base_url":
                value = [u.strip() for u in value.split(",") if u.strip()] if isinstance(value, str) else list(value)
            else:
                try:
                    value = kind(value)
                except (TypeError, ValueError):
                    raise UsageError(f"{source}: {value!r} is not a "
                                     f"{'number' if kind is float else 'whole number'}") from None
                if (key == "max_retries" and value < 0) or (key != "max_retries" and value <= 0):
                    raise UsageError(f"{source}: must be {'>= 0' if key == 'max_retries' else 'positive'}, not {value}")
            out[key] = value
        if not out.get("base_url"):
            raise UsageError("the openai backend needs --base-url (or CAI_OPENAI_BASE_URL): e.g. http://127.0.0.1:8000")
        return out


class OpenAIBackend(Engine):
    """Client for `/v1/chat/completions` on one or more OpenAI-compatible servers.

    `base_urls`: one URL or several (a list, or one comma-separated string); requests are spread
    round-robin and a retry goes to the next URL. `concurrency` bounds requests in flight for the
    whole backend; `timeout` is the total per-attempt limit in seconds; `max_retries` the retries
    after the first attempt; `backoff` the first retry delay in seconds (doubled each time, with
    jitter, capped at `max_delay`).

    `choice_logprobs` relies on vLLM's extensions to the chat API: the conversation is sent with a
    final assistant message holding the prefix and `add_generation_prompt: false,
    continue_final_message: true`, plus `max_tokens: 1, temperature: 0, logprobs: true,
    top_logprobs: 20`; the answer is read from `choices[0].logprobs.content[0].top_logprobs`.
    Servers without those two flags (OpenAI's own API, which rejects unknown fields with 400, or
    servers that silently ignore them and start a new assistant turn) cannot score a prefix this
    way: expect every judgement to fail (a 400, logged, giving -inf) or to be meaningless. Use a
    vLLM server, or the vllm/hf backends, for judging.
    """

    name = "openai"
    Options = OpenAIOptions
    # Longest single wait between attempts, Retry-After included: a server asking for more is
    # treated as asking for this much, so a run never sleeps unbounded on one header.
    max_delay = 60.0

    def __init__(self, model: str, base_urls: list[str] | str, *, api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 64, timeout: float = 120.0, max_retries: int = 5, backoff: float = 0.5):
        if isinstance(base_urls, str):
            base_urls = [u for u in base_urls.split(",") if u.strip()]
        if not base_urls:
            raise ValueError("OpenAIBackend needs at least one base URL")
        if concurrency < 1 or timeout <= 0 or max_retries < 0 or backoff < 0:
            raise ValueError("concurrency >= 1, timeout > 0, max_retries >= 0 and backoff >= 0 are required")
        self.model = model
        self.base_urls = [_normalise_url(u) for u in base_urls]
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.backoff = float(backoff)
        self.failed_requests = 0
        self._key = _Secret(os.environ.get(api_key_env))
        self._rr = itertools.count()
        self._jitter = random.Random()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: httpx.AsyncClient | None = None
        self._sem: asyncio.Semaphore | None = None
        self._closed = False

    @classmethod
    def open(cls, model: str, options: OpenAIOptions) -> "OpenAIBackend":
        opts = options.model_dump()
        return cls(model, opts.pop("base_url"), **opts)

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.model!r}, base_urls={self.base_urls!r}, concurrency={self.concurrency})"

    def kv_capacity(self) -> int | None:
        return None  # the servers' caches are theirs; the client sees only its own bound

    def max_in_flight(self) -> int | None:
        return self.concurrency  # over all servers together

    # -- the private loop ------------------------------------------------------------------------

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise RuntimeError("OpenAIBackend is closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=run, name="cai-openai-http", daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    def _get_client(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        # Built lazily on the private loop, since both bind to the loop that first uses them.
        if self._client is None:
            headers = {"Content-Type": "application/json"}
            key = self._key.get()
            if key:
                headers["Authorization"] = f"Bearer {key}"
            limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
            self._client = httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(self.timeout), limits=limits)
            self._sem = asyncio.Semaphore(self.concurrency)
        return self._client, self._sem

    def _loop_for(self, coro) -> asyncio.AbstractEventLoop:
        try:
            return self._ensure_loop()
        except BaseException:
            coro.close()  # never started: say so quietly rather than "never awaited"
            raise

    def _run_sync(self, coro) -> Any:
        loop = self._loop_for(coro)
        fut = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return fut.result()
        except BaseException:
            # Ctrl-C in the caller: stop the batch's requests instead of leaving them running.
            fut.cancel()
            raise

    async def _bridge(self, coro) -> Any:
        """Await `coro` on the private loop from whatever loop the caller is on."""
        loop = self._loop_for(coro)
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        if current is loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, thread = self._loop, self._thread
        if loop is None:
            return

        async def shutdown() -> None:
            if self._client is not None:
                await self._client.aclose()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=10)
        except (concurrent.futures.TimeoutError, RuntimeError):
            pass
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=10)
        if not loop.is_running():
            loop.close()

    def __del__(self) -> None:
        # Forgotten without close(): at least stop the idle loop thread. Nothing that waits here,
        # since the last reference may drop on that very thread.
        loop = getattr(self, "_loop", None)
        if loop is not None and not getattr(self, "_closed", True) and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(loop.stop)
            except RuntimeError:
                pass

    def __enter__(self) -> "OpenAIBackend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- one request, with retries ---------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        key = self._key.get()
        return text.replace(key, "***") if key else text

    def _delay(self, attempt: int, wait: float | None) -> float:
        base = min(self.max_delay, self.backoff * (2 ** attempt))
        # "Equal jitter": at least half the exponential step, so a crowd of retries spreads out
        # without any of them coming back immediately.
        delay = base / 2 + self._jitter.uniform(0, base / 2)
        if wait is not None:
            delay = max(delay, min(wait, self.max_delay))
        return delay

    async def _attempt(self, url: str, body: dict, parse: Callable[[dict], T]) -> T:
        client, sem = self._get_client()
        async with sem:
            try:
                async with asyncio.timeout(self.timeout):
                    resp = await client.post(url + "/v1/chat/completions", json=body)
            except (TimeoutError, httpx.TimeoutException):
                raise _Failure(f"timed out after {self.timeout:g}s at {url}", retry=True) from None
            except httpx.TransportError as exc:
                raise _Failure(f"{type(exc).__name__} at {url}: {exc}", retry=True) from None
        if resp.status_code != 200:
            snippet = resp.text[:300].strip().replace("\n", " ")
            reason = f"HTTP {resp.status_code} from {url}: {snippet}"
            retry = resp.status_code in RETRY_STATUS
            raise _Failure(reason, retry=retry, wait=_retry_after(resp.headers.get("retry-after")) if retry else None)
        try:
            data = resp.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _Failure(f"unreadable JSON from {url}", retry=True) from None
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list) or not data["choices"]:
            raise _Failure(f"no choices in the reply from {url}", retry=True)
        return parse(data)

    async def _request(self, body: dict, parse: Callable[[dict], T]) -> T:
        """POST `body` and `parse` the reply until both succeed or the retries run out; raises
        `_Failure` with the last reason. Each attempt goes to the next URL in the round-robin."""
        start = next(self._rr)
        last: _Failure | None = None
        for attempt in range(self.max_retries + 1):
            url = self.base_urls[(start + attempt) % len(self.base_urls)]
            try:
                return await self._attempt(url, body, parse)
            except _Failure as exc:
                last = exc
                if not exc.retry or attempt == self.max_retries:
                    break
                delay = self._delay(attempt, exc.wait)
                log.debug("retrying in %.2fs after: %s", delay, self._scrub(exc.reason))
                await asyncio.sleep(delay)
        assert last is not None
        tries = attempt + 1
        reason = self._scrub(f"{last.reason} ({tries} attempt{'s' if tries > 1 else ''})")
        raise _Failure(reason, retry=False)

    # -- chat ------------------------------------------------------------------------------------

    def _chat_body(self, conversation: Conversation, params: SamplingParams) -> dict:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [dict(m) for m in conversation],
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "n": params.n,
        }
        if params.seed is not None:
            # Per conversation, as the offline engines do: a sample must not depend on which
            # other requests share its batch, server or retry.
            body["seed"] = conversation_seed(params.seed, conversation)
        if params.stop:
            body["stop"] = list(params.stop)
        return body

    @staticmethod
    def _parse_chat(data: dict, n: int, max_tokens: int) -> list[Completion]:
        choices = sorted(data["choices"], key=lambda c: c.get("index", 0) if isinstance(c, dict) else 0)
        if any(not isinstance(c, dict) for c in choices):
            raise _Failure("malformed choices in the reply", retry=True)
        if any(c.get("finish_reason") in FAILED_FINISH for c in choices):
            raise _Failure(f"server gave up on the request (finish_reason={choices[0].get('finish_reason')!r})",
                           retry=True)
        texts = [((c.get("message") or {}).get("content") or "") for c in choices]
        ids = [c.get("token_ids") for c in choices]
        if all(isinstance(t, list) for t in ids):
            # vLLM with return_token_ids: exact counts per sample.
            counts = [len(t) for t in ids]
        else:
            usage = data.get("usage") or {}
            total = usage.get("completion_tokens")
            if isinstance(total, int):
                counts = _per_sample_tokens(total, texts, [c.get("finish_reason") for c in choices], max_tokens)
            else:
                # No usage block: a rough characters-per-token estimate beats reporting zero.
                counts = [max(1, math.ceil(len(t) / 4)) if t else 0 for t in texts]
        out = [Completion(text=t, tokens=k, finish_reason=_finish(c.get("finish_reason")))
               for t, k, c in zip(texts, counts, choices)]
        if len(out) > n:
            out = out[:n]
        elif len(out) < n:
            out += _error_completions(n - len(out), f"server returned {len(out)} of {n} samples")
        return out

    async def _chat_one(self, conversation: Conversation, params: SamplingParams) -> list[Completion]:
        body = self._chat_body(conversation, params)
        try:
            return await self._request(body, lambda data: self._parse_chat(data, params.n, params.max_tokens))
        except _Failure as exc:
            self.failed_requests += 1
            log.warning("chat request failed: %s", exc.reason)
            return _error_completions(params.n, exc.reason)

    async def achat_one(self, conversation: Conversation, params: SamplingParams) -> list[Completion]:
        """`params.n` completions for one conversation; never raises for a failed request."""
        return await self._bridge(self._chat_one(list(conversation), params))

    def chat(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[list[Completion]]:
        if not conversations:
            return []
        convs = [list(c) for c in conversations]

        async def batch() -> list[list[Completion]]:
            return list(await asyncio.gather(*(self._chat_one(c, params) for c in convs)))

        return self._run_sync(batch())

    # -- choice log-probabilities ----------------------------------------------------------------

    def _logprob_body(self, conversation: Conversation, prefix: str) -> dict:
        return {
            "model": self.model,
            "messages": [dict(m) for m in conversation] + [{"role": "assistant", "content": prefix}],
            "add_generation_prompt": False,
            "continue_final_message": True,
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": True,
            "top_logprobs": TOP_LOGPROBS,
        }

    @staticmethod
    def _parse_logprobs(data: dict) -> dict[str, float]:
        """{token text: logprob} at the first generated position."""
        choice = data["choices"][0]
        content = ((choice.get("logprobs") or {}) if isinstance(choice, dict) else {}).get("content")
        if not content or not isinstance(content[0], dict):
            raise _Failure("the reply has no logprobs (does the server support them?)", retry=False)
        first = content[0]
        out: dict[str, float] = {}
        entries = list(first.get("top_logprobs") or []) + [first]
        for e in entries:
            tok, lp = e.get("token"), e.get("logprob")
            if isinstance(tok, str) and isinstance(lp, (int, float)) and not math.isnan(lp):
                # Two token ids may decode to the same text; keep the likelier, as the vLLM
                # offline backend does, so both backends agree on one engine.
                out[tok] = max(out.get(tok, -math.inf), float(lp))
        return out

    async def _logprobs_one(self, conversation: Conversation, prefix: str, options: Sequence[str]) -> dict[str, float]:
        body = self._logprob_body(conversation, prefix)
        try:
            token_lps = await self._request(body, self._parse_logprobs)
        except _Failure as exc:
            self.failed_requests += 1
            log.warning("choice_logprobs request failed, options get -inf: %s", exc.reason)
            return {opt: -math.inf for opt in options}
        return merge_option_logprobs(token_lps, options)

    async def achoice_logprobs_one(self, conversation: Conversation, assistant_prefix: str,
                                   options: Sequence[str]) -> dict[str, float]:
        """Log-probability of each option after `assistant_prefix`; -inf for all on failure."""
        return await self._bridge(self._logprobs_one(list(conversation), assistant_prefix, list(options)))

    def choice_logprobs(self, conversations: Sequence[Conversation], assistant_prefix: str | Sequence[str],
                        options: Sequence[str]) -> list[dict[str, float]]:
        if not conversations:
            return []
        prefixes = prefixes_for(assistant_prefix, len(conversations))
        convs = [list(c) for c in conversations]
        opts = list(options)

        async def batch() -> list[dict[str, float]]:
            return list(await asyncio.gather(*(self._logprobs_one(c, p, opts) for c, p in zip(convs, prefixes))))

        return self._run_sync(batch())
