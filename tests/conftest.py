"""Shared fixtures. Real engines are started once per test session (an engine start costs ~20-30 s
on 2 cores); tests that need one carry the `slow` marker. Tests that only read from an engine use
`vllm_backend` (or load the same model with the default settings, which finds the same engine)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

import pytest

from tests.scripted import ScriptedBackend


def _pin_cpu_kv_share() -> None:
    """One KV-cache share for every CPU engine of the session (and of the processes it starts).

    Unset, cai sizes a CPU engine's KV cache from the memory free when each backend is built, and
    that share is part of the key under which the process keeps its engine: once an engine has taken
    its memory (or another process has moved), the next `load_backend` of the same model computes
    another share and restarts the engine, and the fixture's backend restarts it again on its next
    call. Measured once here, with cai's own rule, every load of the session asks for the same
    engine. A GPU's share does not depend on free memory, so it is left alone."""
    if "CAI_VLLM_MEMORY" in os.environ or os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia"):
        return
    from cai.backends.vllm_engine import cpu_kv_fraction

    os.environ["CAI_VLLM_MEMORY"] = str(cpu_kv_fraction())


_pin_cpu_kv_share()


def _pin_cpu_inference_dtype() -> None:
    """Inference in float32 on a CPU, whatever its bf16 instructions, unless CAI_DTYPE is set.

    The real-engine tests check exact things: greedy answers equal across engines and across the
    token and chat paths, one model against itself answering identically, both answer orders of
    a pair mirroring each other. On a CPU with AMX or AVX512-BF16 cai picks bfloat16 (the fast
    choice, tested without an engine in test_hardware.py), and there vLLM's bf16 kernels and
    torch's round differently and a prefix-cache hit changes the sums: the default model's greedy
    answers then differ at the first token. float32 makes every machine run the same checks."""
    if "CAI_DTYPE" not in os.environ and not (os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia")):
        os.environ["CAI_DTYPE"] = "float32"


_pin_cpu_inference_dtype()


def pytest_collection_modifyitems(config, items):
    """The fast tests first, then the slow ones, then those that start an engine of their own.

    A process holds one vLLM engine, and many fast tests stop it (`shutdown_all`, so a fake engine
    is never mistaken for a real one): run between the slow tests, each of them made the next
    real-engine test start the session's engine again (~20-25 s a time on 2 cores). An engine
    other than the session's (`own_engine`) stops it too, so those go last. The order within each
    group is pytest's own."""
    def group(item) -> int:
        return 2 if item.get_closest_marker("own_engine") else 1 if item.get_closest_marker("slow") else 0

    items.sort(key=group)  # stable: file and definition order kept inside a group


@pytest.fixture(scope="session")
def model_path() -> str:
    from cai.models import resolve

    return str(resolve("smollm2-135m"))


@pytest.fixture(scope="session")
def vllm_backend(model_path):
    from cai.backends import load_backend
    from cai.backends.vllm import shutdown_all

    yield load_backend("vllm", "smollm2-135m")
    shutdown_all()


@pytest.fixture(scope="session")
def hf_backend(model_path):
    from cai.backends import load_backend

    return load_backend("hf", "smollm2-135m")


@pytest.fixture
def scripted() -> ScriptedBackend:
    return ScriptedBackend()
