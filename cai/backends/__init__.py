"""Backends: `load_backend(name, model)` picks one; each engine lives in its own module."""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from pathlib import Path

from cai.backends.base import Backend, Completion, Conversation, SamplingParams
from cai.errors import UsageError

BACKENDS = ("vllm", "hf", "openai")
# Options that only one engine takes: a config hands all of its options over, and each engine
# keeps its own (so `backend: null` plus CAI_BACKEND=openai does not pass max_model_len to httpx).
OPENAI_OPTIONS = ("base_url", "timeout", "concurrency", "max_retries")
VLLM_OPTIONS = ("max_model_len", "speculative_tokens")
# Environment settings of the openai backend, read when neither a flag nor a recipe sets them.
OPENAI_ENV = {"timeout": ("CAI_OPENAI_TIMEOUT", float), "concurrency": ("CAI_OPENAI_CONCURRENCY", int),
              "max_retries": ("CAI_OPENAI_MAX_RETRIES", int)}

__all__ = ["BACKENDS", "Backend", "Completion", "Conversation", "SamplingParams", "check_engine", "default_backend",
           "load_backend", "resolve_backend_name"]


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


@functools.cache
def vllm_imports() -> bool:
    """Whether `import vllm` works here. Installed is not enough: a torch or torchvision clash makes
    the import itself raise, and then the default must be transformers, not a crash later."""
    if not vllm_available():
        return False
    try:
        import vllm  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means "not usable"
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        print(f"note: vLLM is installed but does not import ({type(exc).__name__}: {first}); using hf",
              file=sys.stderr)
        return False
    return True


def default_backend() -> str:
    """vLLM where it imports, else transformers; `CAI_BACKEND` overrides."""
    return os.environ.get("CAI_BACKEND") or ("vllm" if vllm_imports() else "hf")


def resolve_backend_name(name: str | None) -> str:
    """The engine a run will use: `name`, or the default; an unknown name is a UsageError."""
    name = name or default_backend()
    if name not in BACKENDS:
        where = " (from CAI_BACKEND)" if name == os.environ.get("CAI_BACKEND") else ""
        raise UsageError(f"unknown backend {name!r}{where}: choose one of {', '.join(BACKENDS)}")
    return name


def _openai_urls(opts: dict) -> list[str]:
    urls = opts.get("base_url") or os.environ.get("CAI_OPENAI_BASE_URL")
    if not urls:
        raise UsageError("the openai backend needs --base-url (or CAI_OPENAI_BASE_URL): e.g. http://127.0.0.1:8000")
    if isinstance(urls, str):
        urls = [u.strip() for u in urls.split(",") if u.strip()]
    return list(urls)


def _openai_settings(opts: dict) -> dict:
    """timeout/concurrency/max_retries: the given ones, else the environment's, else the backend's
    defaults. A bad value is a UsageError that names its variable."""
    out = {}
    for key, (env, kind) in OPENAI_ENV.items():
        value = opts.get(key)
        source = f"--{key.replace('_', '-')}"
        if value is None and os.environ.get(env):
            value, source = os.environ[env], env
        if value is None:
            continue
        try:
            value = kind(value)
        except (TypeError, ValueError):
            raise UsageError(f"{source}: {value!r} is not a {'number' if kind is float else 'whole number'}") from None
        if (key == "max_retries" and value < 0) or (key != "max_retries" and value <= 0):
            raise UsageError(f"{source}: must be {'>= 0' if key == 'max_retries' else 'positive'}, not {value}")
        out[key] = value
    return out


def _engine_options(name: str, opts: dict) -> dict:
    """The options meant for engine `name` (None values dropped: the engine's default applies)."""
    foreign = {"openai": VLLM_OPTIONS, "vllm": OPENAI_OPTIONS, "hf": OPENAI_OPTIONS + VLLM_OPTIONS}[name]
    return {k: v for k, v in opts.items() if k not in foreign and v is not None}


def check_engine(name: str | None, model: str, **opts) -> tuple[str, Path | None]:
    """(engine name, local model folder or None for openai), checked without starting anything: a
    bad backend name, model or server setting fails here, before a run folder is touched."""
    chosen = name or os.environ.get("CAI_BACKEND")
    if chosen:
        chosen = resolve_backend_name(chosen)
    if chosen == "openai":
        _openai_urls(opts)
        _openai_settings(opts)
        return chosen, None
    if chosen == "vllm" and not vllm_available():
        raise UsageError("vLLM is not installed here: install cai[cpu] or cai[gpu], or use --backend hf")
    from cai.models import resolve

    # The model first: choosing between vllm and hf may import vLLM, which takes seconds.
    folder = resolve(model)
    return chosen or default_backend(), folder


def load_backend(name: str | None, model: str, **opts) -> Backend:
    """Start (or reuse) a backend for `model`: a known model name, a local folder, or for `openai`
    the name the server serves (`base_url=` or `CAI_OPENAI_BASE_URL`, comma-separated for several;
    `timeout=`, `concurrency=`, `max_retries=` or CAI_OPENAI_TIMEOUT/_CONCURRENCY/_MAX_RETRIES).
    """
    name = resolve_backend_name(name)
    if name != "vllm" and opts.get("speculative_tokens"):
        print(f"note: --speculative-tokens is a vllm setting; the {name} backend ignores it", file=sys.stderr)
    opts = _engine_options(name, opts)
    if name == "openai":
        from cai.backends.openai import OpenAIBackend

        urls = _openai_urls(opts)
        rest = {k: v for k, v in opts.items() if k not in OPENAI_OPTIONS}
        return OpenAIBackend(model, urls, **_openai_settings(opts), **rest)
    name, folder = check_engine(name, model)
    path = str(folder)
    if name == "vllm":
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
    from cai.backends.hf import HFBackend

    return HFBackend(path, **opts)
