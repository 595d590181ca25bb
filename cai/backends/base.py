"""The inference backend protocol every stage talks to.

Stages hand a whole batch of conversations to one call; backends decide how to keep their engine
full. Nothing here imports torch or vllm, so stage logic stays testable with a scripted backend.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from array import array
from collections import OrderedDict
from typing import Callable, Literal, Protocol, Sequence, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

Message = dict[str, str]
Conversation = list[Message]


class SamplingParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: int = Field(256, ge=1, description="Upper bound on generated tokens per completion.")
    temperature: float = Field(0.7, ge=0.0, description="0 means greedy decoding.")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, description="Completions per conversation, sampled in one call.")
    seed: int | None = Field(None, description="Makes sampling reproducible per conversation.")
    stop: list[str] = Field(default_factory=list)


class Completion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str
    tokens: int = Field(ge=0, description="Generated tokens.")
    # "too_long": the request, with the tokens it may generate, does not fit the model's context; it
    # was never sent (empty text, no tokens; `error` says by how much). Backends that run the model
    # themselves find it where they tokenize the request; a server answers such a request with an
    # HTTP error instead ("error").
    finish_reason: Literal["stop", "length", "error", "too_long"] = "stop"
    error: str | None = Field(None, description="Why a request failed or was not sent.")


@runtime_checkable
class Backend(Protocol):
    """What every engine provides. Both calls are batched: one call per chunk of work."""

    name: str
    model: str

    def chat(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[list[Completion]]:
        """One list of `params.n` completions per conversation, in input order. A conversation that
        does not fit the context with `params.max_tokens` more gets `finish_reason="too_long"`
        completions (the rest of the batch is answered) where the backend can tell."""
        ...

    def choice_logprobs(
        self,
        conversations: Sequence[Conversation],
        assistant_prefix: str | Sequence[str],
        options: Sequence[str],
    ) -> list[dict[str, float]]:
        """Log-probability of each option as the next token after `assistant_prefix`.

        The prefix is the start of the assistant's reply (e.g. "The better response is ("), one for
        all conversations or one each (a judge's own rationale goes there in CoT mode). An option
        the engine gives no probability for gets -inf; so does every option of a request that does
        not fit the context (never sent: `normalise_pair` reads it as 0.5, no opinion, and
        `overflow()` says why).
        """
        ...

    def close(self) -> None: ...


@runtime_checkable
class PipelinedBackend(Backend, Protocol):
    """A Backend that also takes requests one at a time, without waiting for a batch (an HTTP
    server, vLLM's async engine). The Batcher sends each record's next request the moment its last
    one returns, so the engine stays full across step boundaries; a plain Backend gets gathered
    batches instead, since a synchronous engine is only efficient when it sees them whole."""

    async def achat_one(self, conversation: Conversation, params: SamplingParams) -> list[Completion]:
        """`chat` for one conversation."""
        ...

    async def achoice_logprobs_one(self, conversation: Conversation, assistant_prefix: str,
                                   options: Sequence[str]) -> dict[str, float]:
        """`choice_logprobs` for one conversation."""
        ...


@runtime_checkable
class SizedBackend(Protocol):
    """A backend that says how much work it holds at once: what `--chunk-size auto` sizes the number
    of records in flight from (cai/window.py). Every built-in backend is one.

    Not part of `Backend`: a runtime protocol check needs every member, so a backend without these
    calls (a user's own, a test's) would stop counting as a Backend at all. Without them it gets the
    fixed default window."""

    def kv_capacity(self) -> int | None:
        """Tokens the engine's KV cache holds over all its sequences (blocks × block size, summed over
        data-parallel copies), known once it has started; None when it does not size work in KV tokens."""
        ...

    def max_in_flight(self) -> int | None:
        """Requests the backend runs at once by its own setting (a server's concurrency bound, a batch
        size); None when its KV capacity bounds it instead."""
        ...


Elsewhere = Literal["refuse", "note", "drop"]


def option(default, *, elsewhere: Elsewhere = "refuse", **field):
    """A field of a backend's `Options`. `elsewhere` is what happens when a command hands the option,
    set to something other than its default, to another backend: refused (exit 2), a note that it is
    ignored, or dropped without a word (an option a config hands to whichever engine it starts)."""
    return Field(default, json_schema_extra={"elsewhere": elsewhere}, **field)


def elsewhere(info) -> Elsewhere:
    extra = info.json_schema_extra
    return extra.get("elsewhere", "refuse") if isinstance(extra, dict) else "refuse"


class BackendOptions(BaseModel):
    """Exactly the options one backend takes; `load_backend` validates against it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def given(self) -> dict:
        """The options set to something other than their default (what a run records)."""
        return {k: v for k, v in self.model_dump().items() if v != type(self).model_fields[k].default}


class Engine:
    """What a registered backend class provides besides the Backend calls: its `Options` and how to
    start it from them. The defaults fit a class whose constructor takes the options as keywords."""

    name: str
    Options: type[BackendOptions] = BackendOptions

    @classmethod
    def check(cls, options: BackendOptions) -> None:
        """Raise UsageError when this backend cannot run here with `options` (checked before a run
        folder is touched, without starting anything)."""

    @classmethod
    def open(cls, model: str, options: BackendOptions) -> Backend:
        """Start the backend: `model` is a local folder for a backend that runs the model itself, else
        the name a server serves."""
        return cls(model, **options.model_dump(exclude_none=True))  # type: ignore[call-arg,return-value]


def normalise_pair(logprobs: dict[str, float], first: str, second: str) -> float:
    """P(first) renormalised over the two options; 0.5 when the engine saw neither."""
    a, b = logprobs.get(first, -math.inf), logprobs.get(second, -math.inf)
    if a == -math.inf and b == -math.inf:
        return 0.5
    m = max(a, b)
    ea, eb = math.exp(a - m), math.exp(b - m)
    return ea / (ea + eb)


def conversation_seed(seed: int, conversation: Conversation) -> int:
    """A stable per-request seed derived from the run seed and the conversation's content."""
    h = hashlib.sha256(json.dumps([seed, conversation], sort_keys=True).encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


def prefixes_for(assistant_prefix: str | Sequence[str], n: int) -> list[str]:
    if isinstance(assistant_prefix, str):
        return [assistant_prefix] * n
    if len(assistant_prefix) != n:
        raise ValueError(f"{len(assistant_prefix)} assistant prefixes for {n} conversations")
    return list(assistant_prefix)


def option_token_variants(option: str) -> tuple[str, ...]:
    """Decoded token texts that count as `option` (tokenizers often glue a leading space)."""
    return (option, " " + option)


def merge_option_logprobs(token_logprobs: dict[str, float], options: Sequence[str]) -> dict[str, float]:
    """Sum probability mass of the token variants of each option (e.g. "A" and " A")."""
    out: dict[str, float] = {}
    for opt in options:
        mass = 0.0
        for variant in option_token_variants(opt):
            lp = token_logprobs.get(variant)
            if lp is not None and lp > -math.inf:
                mass += math.exp(lp)
        out[opt] = math.log(mass) if mass > 0 else -math.inf
    return out


def overflow(backend, conversation: Conversation, max_new: int, prefix: str | None = None) -> tuple[int, int] | None:
    """(prompt tokens, context window) when `conversation` plus `max_new` generated tokens does not fit
    the backend's context, else None. Backends that cannot count (a remote server: it answers an
    over-long request with a 400, which is that record's failure) never overflow here. The built-in
    engines keep the ids they count and send those (PromptTokens): the check costs no second
    tokenization, and a request sent without one comes back `too_long` all the same."""
    window = getattr(backend, "context_window", None)
    count = getattr(backend, "count_tokens", None)
    if not window or count is None:
        return None
    tokens = count(conversation, prefix)
    return (tokens, window) if tokens + max_new > window else None


# ---------------------------------------------------------------- each request tokenized once

def tokenize_once() -> bool:
    """Whether backends keep the token ids their context check computed for the send (default);
    CAI_TOKENIZE_ONCE=0 renders every request again where it is sent (what cai did before: for
    comparing the two, as benchmarks/tokenize_once.py does)."""
    return os.environ.get("CAI_TOKENIZE_ONCE", "1") != "0"


def request_key(conversation: Conversation, prefix: str | None) -> bytes:
    """Digest of a request as a backend renders it: the conversation, and either a new assistant
    turn (`prefix` None) or the start of the assistant's reply to continue."""
    text = json.dumps([prefix, conversation], sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


Render = Callable[[Conversation, "str | None"], Sequence[int]]


class PromptTokens:
    """The token ids of requests a backend has rendered, from its context check to the send.

    Callers ask `overflow()` (the backend's `count_tokens`) before they send a request, and the
    backend then renders and tokenizes it again to send it. Here `count` keeps the ids it computed,
    keyed by a digest of (conversation, prefix), and `take` hands them to the send, so each request
    is tokenized once whether or not a check ran; `take` renders only a request it holds no ids for.

    Bounded: at most `max_entries` requests and `max_tokens` ids (4 bytes each), the least recently
    counted dropped first. A request taken is dropped (its ids are in the engine now), so what stays
    is what was counted and not yet sent: a window's worth of records. A request dropped before its
    send is rendered again there: slower, never different. `keep=False` keeps nothing (every `take`
    renders): the behaviour before this class, for comparisons.
    """

    def __init__(self, render: Render, *, max_entries: int = 4096, max_tokens: int = 1 << 22, keep: bool = True):
        self.render = render
        self.max_entries, self.max_tokens, self.keep = max_entries, max_tokens, keep
        self._ids: OrderedDict[bytes, array] = OrderedDict()
        self._held = 0  # ids held, over all entries
        self._lock = threading.Lock()  # count and take may come from the caller's and the engine's threads
        self.renders = 0  # requests rendered and tokenized, by either call
        self.reused = 0  # sends that took ids a count had kept

    def sized_for(self, kv_tokens: int | None) -> "PromptTokens":
        """Room for what a window of that KV capacity puts in flight: its tokens twice over (the ids
        of requests counted for a window sample, or for a check, and never sent, age out)."""
        if kv_tokens:
            self.max_tokens = max(self.max_tokens, 2 * kv_tokens)
            self.max_entries = max(self.max_entries, self.max_tokens // 128)
        return self

    def __len__(self) -> int:
        return len(self._ids)

    def clear(self) -> None:
        with self._lock:
            self._ids.clear()
            self._held = 0

    @property
    def held_tokens(self) -> int:
        return self._held

    def _render(self, conversation: Conversation, prefix: str | None) -> Sequence[int]:
        self.renders += 1
        return self.render(conversation, prefix)

    def count(self, conversation: Conversation, prefix: str | None = None) -> int:
        """Tokens of the request (what `count_tokens` answers), its ids kept for `take`."""
        if not self.keep:
            return len(self._render(conversation, prefix))
        key = request_key(conversation, prefix)
        with self._lock:
            ids = self._ids.get(key)
            if ids is not None:
                self._ids.move_to_end(key)
                return len(ids)
        ids = array("I", self._render(conversation, prefix))
        with self._lock:
            if key not in self._ids:
                self._ids[key] = ids
                self._held += len(ids)
                while self._ids and (len(self._ids) > self.max_entries or self._held > self.max_tokens):
                    _, old = self._ids.popitem(last=False)
                    self._held -= len(old)
        return len(ids)

    def take(self, conversation: Conversation, prefix: str | None = None) -> list[int]:
        """The request's token ids, to send: the ones `count` kept (dropped from here now), else
        rendered."""
        if self.keep:
            with self._lock:
                ids = self._ids.pop(request_key(conversation, prefix), None)
                if ids is not None:
                    self._held -= len(ids)
                    self.reused += 1
                    return ids.tolist()
        return list(self._render(conversation, prefix))

    def split(self, conversations: Sequence[Conversation], prefixes: Sequence[str | None], new_tokens: int,
              window: int | None) -> tuple[list[tuple[int, list[int]]], dict[int, int]]:
        """The requests to send, [(index, ids)], and those that do not fit `window` with
        `new_tokens` generated, {index: prompt tokens}."""
        send: list[tuple[int, list[int]]] = []
        over: dict[int, int] = {}
        for i, (conv, prefix) in enumerate(zip(conversations, prefixes)):
            ids = self.take(conv, prefix)
            if window and len(ids) + new_tokens > window:
                over[i] = len(ids)
            else:
                send.append((i, ids))
        return send, over


def too_long_completions(n: int, prompt_tokens: int, max_tokens: int, window: int) -> list[Completion]:
    """What `chat` answers for a request that does not fit the context: `n` empty completions."""
    why = (f"the request has {prompt_tokens} tokens, and with {max_tokens} to generate it does not fit the "
           f"model's context of {window}")
    return [Completion(text="", tokens=0, finish_reason="too_long", error=why) for _ in range(n)]


def unasked(options: Sequence[str]) -> dict[str, float]:
    """What `choice_logprobs` answers for a request that does not fit the context."""
    return {o: -math.inf for o in options}
