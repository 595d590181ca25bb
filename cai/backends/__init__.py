"""Backends: `load_backend(name, model)` picks one; each engine lives in its own module."""

from __future__ import annotations

import importlib.util
import os

from cai.backends.base import Backend, Completion, Conversation, SamplingParams
from cai.errors import UsageError

BACKENDS = ("vllm", "hf", "openai")

__all__ = ["BACKENDS", "Backend", "Completion", "Conversation", "SamplingParams", "default_backend", "load_backend"]


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def default_backend() -> str:
    """vLLM where it imports, else transformers; `CAI_BACKEND` overrides."""
    return os.environ.get("CAI_BACKEND") or ("vllm" if vllm_available() else "hf")


def load_backend(name: str | None, model: str, **opts) -> Backend:
    """Start (or reuse) a backend for `model`: a known model name, a local folder, or for `openai`
    the name the server serves (`base_url=` or `CAI_OPENAI_BASE_URL`, comma-separated for several).
    """
    name = name or default_backend()
    if name == "openai":
        from cai.backends.openai import OpenAIBackend

        urls = opts.pop("base_url", None) or os.environ.get("CAI_OPENAI_BASE_URL")
        if not urls:
            raise UsageError("the openai backend needs --base-url (or CAI_OPENAI_BASE_URL): e.g. http://127.0.0.1:8000")
        if isinstance(urls, str):
            urls = [u.strip() for u in urls.split(",") if u.strip()]
        return OpenAIBackend(model, urls, **opts)
    opts.pop("base_url", None)
    from cai.models import resolve

    path = str(resolve(model))
    if name == "vllm":
        if not vllm_available():
            raise UsageError("vLLM is not installed here: install cai[cpu] or cai[gpu], or use --backend hf")
        pipeline = opts.pop("pipeline", None)
        if pipeline is None:
            pipeline = os.environ.get("CAI_VLLM_PIPELINE", "1") != "0"
        if pipeline:
            # The async engine in-process: each conversation's next request goes in as soon as its
            # last one returns, so the engine never idles at a step boundary.
            from cai.backends.vllm_async import AsyncVLLMBackend

            return AsyncVLLMBackend(path, **opts)
        from cai.backends.vllm import VLLMBackend

        return VLLMBackend(path, **opts)
    if name == "hf":
        from cai.backends.hf import HFBackend

        return HFBackend(path, **opts)
    raise UsageError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
