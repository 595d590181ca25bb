"""How many records a stage keeps in flight: `--chunk-size N`, or `auto`, sized from the engine.

A record is the unit a stage's loop runs (a prompt's answer and rounds in `cai generate`, a judged
pair in `cai judge`, one request in `cai eval`); while in flight its conversations hold KV cache.
Too few records and a large engine idles; far too many and vLLM preempts sequences and computes
them again. `auto` asks the backend (the `SizedBackend` calls):

- a vLLM engine knows its KV capacity once it has started (blocks × block size): the window is that
  capacity, less a share kept for the prefix cache, divided by the tokens one record holds at its
  largest;
- a backend that runs a set number of requests at once says so (openai's --concurrency, which
  bounds all servers together; hf's batch size), and that is the window;
- any other backend gets FIXED_DEFAULT, the window the stages had before `auto`.

A number (flag or recipe key) is used as given. The window is never part of a run's identity: a
resumed run may well choose another one on another machine, and its rows are the same.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Annotated, Callable, Iterable, Literal, Sequence, Union

from pydantic import PlainValidator

from cai.backends.base import SizedBackend

AUTO = "auto"


def _chunk_size(value) -> int | str:
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    number = value if isinstance(value, int) and not isinstance(value, bool) else None
    if isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    if number is None or number < 1:
        raise ValueError(f"a whole number of at least 1, or auto (not {value!r})")
    return number


# What `--chunk-size` and the recipes' `chunk_size` take: one error message, not one per alternative.
ChunkSize = Annotated[Union[int, Literal["auto"]], PlainValidator(_chunk_size, json_schema_input_type=Union[int, str])]

FIXED_DEFAULT = 64
# The share of the KV cache the window plans to fill. The rest stays free for the prefix cache: the
# blocks a finished request leaves behind are kept (evictable) and the next request of the same
# conversation reuses them (a revision request repeats its critique request and the critique), so
# a cache planned full would evict exactly what the next step needs.
KV_SHARE = 0.9
# Prompts whose token counts estimate the longest one: the first this many of the stream. A later,
# longer prompt does not fail anything: vLLM schedules what fits and queues (or preempts) the rest
# for a while. Reading the whole stream once more would double the start-up read of a large file,
# and counting 256 chat-templated prompts takes a fraction of a second.
PROMPT_SAMPLE = 256


@dataclass(frozen=True)
class RecordSize:
    """The KV tokens one record holds at its largest: `conversations` at once (samples, both option
    orders, an ensemble's questions), each of at most `tokens` (its longest request's prompt, plus
    what that request may generate). Every step's full max_tokens is counted and a shared few-shot
    prefix is counted in every conversation: the window never plans on outputs stopping early."""

    tokens: int
    conversations: int = 1

    @property
    def total(self) -> int:
        return self.tokens * self.conversations


@dataclass(frozen=True)
class Window:
    """The records in flight and how that number was chosen (what run.yaml and the summary say)."""

    size: int
    how: str

    def record(self) -> dict:
        return {"size": self.size, "how": self.how}


@dataclass(frozen=True)
class Sizing:
    """One engine a stage's records send to, and what a record holds there (computed only when
    `auto` meets a KV capacity: counting tokens costs a pass over a sample of the inputs)."""

    backend: object
    record: Callable[[], RecordSize]
    label: str = ""  # which engine, when a stage has several ("policy", "reviser")


def kv_window(capacity: int, record: RecordSize, share: float = KV_SHARE) -> int:
    """The records that fit `share` of `capacity` KV tokens at `record`'s size each; at least 1 (a
    record larger than the whole cache still runs: its requests rarely all reach max_tokens)."""
    if capacity < 1 or record.total < 1:
        raise ValueError(f"capacity and record size must be positive, not {capacity} and {record.total}")
    return max(1, int(capacity * share) // record.total)


def _auto(sizing: Sizing, unit: str) -> Window:
    backend = sizing.backend
    name = getattr(backend, "name", "the backend")
    if not isinstance(backend, SizedBackend):
        return Window(FIXED_DEFAULT, f"auto: {name} reports no capacity; the fixed {FIXED_DEFAULT}")
    capacity = backend.kv_capacity()
    if capacity:
        rec = sizing.record()
        per = (f"{rec.total} tokens per conversation" if rec.conversations == 1 else
               f"{rec.total} tokens per {unit} ({rec.conversations} conversations of {rec.tokens})")
        return Window(kv_window(capacity, rec), f"auto: {name} KV capacity {capacity} tokens / {per}, "
                                                f"{round((1 - KV_SHARE) * 100)}% kept for the prefix cache")
    bound = backend.max_in_flight()
    if bound:
        # openai: --concurrency, over all servers; hf: its batch size
        return Window(bound, f"auto: {name} runs {bound} requests at once by its own setting")
    return Window(FIXED_DEFAULT, f"auto: {name} reports no capacity; the fixed {FIXED_DEFAULT}")


def choose_window(setting: int | str, sizings: Sequence[Sizing], *, unit: str) -> Window:
    """The window for `setting` (a number, or "auto"); with several engines, the smallest of theirs:
    every record goes through each of them."""
    if setting != AUTO:
        return Window(int(setting), "set by --chunk-size (or chunk_size in the recipe)")
    windows = [(s.label, _auto(s, unit)) for s in sizings]
    if len(windows) == 1:
        return windows[0][1]
    size = min(w.size for _, w in windows)
    return Window(size, "the smallest of " + "; ".join(f"{label} {w.size} ({w.how})" for label, w in windows))


def longest_prompt(count: Callable[[list], int], conversations: Iterable[list]) -> tuple[int, list]:
    """(tokens, conversation) of the longest of `conversations` (a sample: at most PROMPT_SAMPLE of
    them are counted); (0, []) for none."""
    most, longest = 0, []
    for conv in itertools.islice(conversations, PROMPT_SAMPLE):
        tokens = count(conv)
        if tokens > most:
            most, longest = tokens, conv
    return most, longest
