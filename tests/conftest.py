"""Shared fixtures. Real engines are started once per test session (an engine start costs ~20-30 s
on 2 cores); tests that need one carry the `slow` marker."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

import pytest

from tests.scripted import ScriptedBackend


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
