"""The backends cai can run, one line each: a name, the class, and where the model runs.

A class is imported only when its backend is used (the HTTP client alone adds 0.2 s to every
command's start), so the CLI's choices and the config's names come from here without loading any.
Adding a backend: its module (a class with `name`, `Options`, the Backend calls, and `open`/`check`
where `Engine`'s defaults do not fit) plus one line below.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass

from cai.backends.base import BackendOptions, Engine, elsewhere


@dataclass(frozen=True)
class Entry:
    path: str  # "module:Class"
    local: bool  # runs the model in this process from a local folder; else a server serves it by name


REGISTRY: dict[str, Entry] = {
    "vllm": Entry("cai.backends.vllm:VLLMBackend", local=True),
    "hf": Entry("cai.backends.hf:HFBackend", local=True),
    "openai": Entry("cai.backends.openai:OpenAIBackend", local=False),
}

NAMES: tuple[str, ...] = tuple(REGISTRY)
# The backends that run a model from a local folder (what `cai demo` can train and evaluate on).
LOCAL: tuple[str, ...] = tuple(n for n, e in REGISTRY.items() if e.local)


@functools.cache
def backend_class(name: str) -> type[Engine]:
    module, _, cls = REGISTRY[name].path.partition(":")
    return getattr(importlib.import_module(module), cls)


def options_model(name: str) -> type[BackendOptions]:
    return backend_class(name).Options


def owners(option: str) -> list[str]:
    """The backends whose Options have `option`, in registry order."""
    return [n for n in REGISTRY if option in options_model(n).model_fields]


def owner_policy(option: str) -> str:
    """What a backend that does not take `option` does with it: its first owner's declaration."""
    return elsewhere(options_model(owners(option)[0]).model_fields[option])


def is_owner_default(option: str, value) -> bool:
    """Whether `value` is every owner's default: a config hands such a setting over without asking
    for anything, so another backend drops it silently."""
    return all(options_model(n).model_fields[option].default == value for n in owners(option))
