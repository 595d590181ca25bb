"""Backends: `load_backend(name, model, **options)` starts one; each engine lives in its own module and
is listed in `registry`, with the pydantic `Options` it takes."""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from cai.backends.base import Backend, BackendOptions, Completion, Conversation, PipelinedBackend, SamplingParams
from cai.backends.registry import NAMES, REGISTRY, backend_class, is_owner_default, owner_policy, owners
from cai.errors import UsageError

BACKENDS = NAMES  # every backend's name, from the registry

__all__ = ["BACKENDS", "Backend", "Completion", "Conversation", "PipelinedBackend", "SamplingParams", "check_engine",
           "default_backend", "load_backend", "resolve_backend_name"]


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
    if name not in REGISTRY:
        where = " (from CAI_BACKEND)" if name == os.environ.get("CAI_BACKEND") else ""
        raise UsageError(f"unknown backend {name!r}{where}: choose one of {', '.join(REGISTRY)}")
    return name


def _flag(option: str) -> str:
    return "--" + option.replace("_", "-")


def _engine_options(name: str, opts: dict, *, notes: bool = True) -> dict:
    """The options of `opts` that backend `name` takes (None values dropped: the default applies).

    A command hands all of its engine settings over, since the backend may be chosen later (from
    CAI_BACKEND, or by what imports). Another backend's option at that backend's default asks for
    nothing and is dropped; set to something else, it is refused (UsageError), noted as ignored, or
    dropped, as the backend that takes it declares."""
    take = backend_class(name).Options.model_fields
    own = {}
    for key, value in opts.items():
        if value is None:
            continue
        if key in take:
            own[key] = value
            continue
        who = owners(key)
        if not who:
            raise TypeError(f"no backend takes the option {key!r}")
        if is_owner_default(key, value):
            continue
        policy, setting = owner_policy(key), f"{_flag(key)} is a {' and '.join(who)} setting"
        if policy == "refuse":
            raise UsageError(f"{setting} ({key} in a recipe); the {name} backend cannot use it")
        if policy == "note" and notes:
            print(f"note: {setting}; the {name} backend ignores it", file=sys.stderr)
    return own


def backend_options(name: str, opts: dict, *, notes: bool = True) -> BackendOptions:
    """`opts` validated against backend `name`'s Options (a bad value is a UsageError)."""
    own = _engine_options(name, opts, notes=notes)
    try:
        return backend_class(name).Options.model_validate(own)
    except ValidationError as exc:
        msgs = "; ".join(f"{_flag('.'.join(map(str, e['loc'])))}: {e['msg']}" for e in exc.errors())
        raise UsageError(f"{name} backend: {msgs}") from None


def check_engine(name: str | None, model: str, **opts) -> tuple[str, Path | None]:
    """(engine name, local model folder or None for a server), checked without starting anything: a
    bad backend name, option, model or server setting fails here, before a run folder is touched."""
    chosen = name or os.environ.get("CAI_BACKEND")
    if chosen:
        chosen = resolve_backend_name(chosen)
        backend_class(chosen).check(backend_options(chosen, opts, notes=False))
        if not REGISTRY[chosen].local:
            return chosen, None
    from cai.models import resolve

    # The model first: choosing between vllm and hf may import vLLM, which takes seconds.
    folder = resolve(model)
    if not chosen:
        chosen = default_backend()
        backend_class(chosen).check(backend_options(chosen, opts, notes=False))
    return chosen, folder


def load_backend(name: str | None, model: str, **opts) -> Backend:
    """Start (or reuse) a backend for `model`: a known model name or a local folder, or for a server
    backend the name the server serves. `opts` are engine settings, validated against the backend's
    Options (e.g. openai: `base_url=` or CAI_OPENAI_BASE_URL, comma-separated for several;
    `timeout=`, `concurrency=`, `max_retries=` or CAI_OPENAI_TIMEOUT/_CONCURRENCY/_MAX_RETRIES).
    """
    name = resolve_backend_name(name)
    cls = backend_class(name)
    options = backend_options(name, opts)
    cls.check(options)
    if not REGISTRY[name].local:
        return cls.open(model, options)
    from cai.models import resolve

    return cls.open(str(resolve(model)), options)
