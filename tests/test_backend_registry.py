"""The backend registry: names, classes and their Options, where the CLI and configs read them, how
an option meant for another backend is treated, and that a new backend is one module plus one line."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import click
import pytest

from cai import backends
from cai.backends import load_backend
from cai.backends.base import Backend, BackendOptions, Engine, PipelinedBackend, option
from cai.backends.registry import LOCAL, NAMES, REGISTRY, Entry, backend_class, owners
from cai.batching import Batcher
from cai.cli import main
from cai.config import EngineConfig, GenerateConfig
from cai.errors import UsageError
from tests.scripted import ScriptedBackend

CAI = Path(__file__).resolve().parents[1] / "cai"


def test_every_registered_backend_is_a_class_with_its_options():
    assert set(NAMES) == {"vllm", "hf", "openai"} and LOCAL == ("vllm", "hf")
    for name in NAMES:
        cls = backend_class(name)
        assert cls.name == name and issubclass(cls, Engine)
        assert issubclass(cls.Options, BackendOptions) and cls.Options.model_config["extra"] == "forbid"
        for member in ("chat", "choice_logprobs", "close"):
            assert callable(getattr(cls, member)), (name, member)
    # the server backend and the async vLLM engine take requests one at a time, the others batches
    assert {"achat_one", "achoice_logprobs_one"} <= set(dir(backend_class("openai")))
    assert not hasattr(backend_class("hf"), "achat_one") and not hasattr(backend_class("vllm"), "achat_one")


def _choices(command: click.Command, flag: str) -> tuple[str, ...]:
    param = next(p for p in command.params if flag in p.opts)
    return tuple(param.type.choices)


def test_every_backend_choice_comes_from_the_registry():
    assert typing.get_args(EngineConfig.model_fields["backend"].annotation)[0] == typing.Literal[NAMES]
    assert typing.get_args(GenerateConfig.model_fields["reviser_backend"].annotation)[0] == typing.Literal[NAMES]
    for command in ("chat", "generate", "judge", "eval"):
        assert _choices(main.commands[command], "--backend") == NAMES, command
    assert _choices(main.commands["generate"], "--reviser-backend") == NAMES
    assert _choices(main.commands["train"].commands["rl"], "--judge-backend") == NAMES
    assert _choices(main.commands["demo"], "--backend") == LOCAL  # the demo trains, so its engine is local


def test_no_command_spells_out_the_backend_names():
    """A hard-coded list would go stale when a backend is added: only the registry names them."""
    pattern = re.compile(r"""\[\s*["'](vllm|hf|openai)["']\s*,\s*["'](vllm|hf|openai)["']""")
    files = [*CAI.rglob("*.py"), *(CAI.parent / "benchmarks").glob("*.py")]
    found = [f"{p.relative_to(CAI.parent)}:{i}" for p in files if p.name != "registry.py"
             for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert found == []


def test_another_backends_option_is_refused_naming_the_backend_that_takes_it():
    with pytest.raises(UsageError, match=r"--tensor-parallel-size is a vllm setting .*the openai backend cannot use"):
        load_backend("openai", "served", base_url="http://127.0.0.1:9", tensor_parallel_size=2)
    with pytest.raises(UsageError, match=r"--quantization is a vllm setting .*the hf backend cannot use it"):
        backends.check_engine("hf", "smollm2-135m", quantization="awq")
    with pytest.raises(UsageError, match="--api-key-env is a openai setting"):
        backends.check_engine("hf", "smollm2-135m", api_key_env="MY_KEY")
    assert owners("dtype") == ["vllm", "hf"]  # shared options belong to both
    with pytest.raises(UsageError, match="--dtype is a vllm and hf setting"):
        load_backend("openai", "served", base_url="http://127.0.0.1:9", dtype="float16")


def test_options_handed_to_every_engine_stay_as_they_were(capsys):
    """A config hands all its settings over: the server limits are dropped by a local engine without
    a word, a setting at its default asks for nothing, and speculation is noted as ignored."""
    opts = {"base_url": "http://a:1", "timeout": 3.0, "concurrency": 2, "max_retries": 1, "max_model_len": 2048}
    assert backends._engine_options("hf", opts) == {}
    assert backends._engine_options("vllm", opts) == {"max_model_len": 2048}
    assert backends._engine_options("openai", opts) == {k: v for k, v in opts.items() if k != "max_model_len"}
    assert capsys.readouterr().err == ""
    assert backends._engine_options("hf", {"speculative_tokens": 3}) == {}
    assert "note: --speculative-tokens is a vllm setting; the hf backend ignores it" in capsys.readouterr().err


def test_bad_values_and_unknown_options():
    with pytest.raises(UsageError, match="vllm backend: --tensor-parallel-size: Input should be greater"):
        backends.backend_options("vllm", {"tensor_parallel_size": 0})
    with pytest.raises(UsageError, match="hf backend: --dtype"):
        backends.backend_options("hf", {"dtype": "int3"})
    with pytest.raises(TypeError, match="no backend takes the option 'bogus'"):
        backends.backend_options("hf", {"bogus": 1})
    options = backends.backend_options("vllm", {"tensor_parallel_size": 2, "max_model_len": 2048})
    assert options.given() == {"tensor_parallel_size": 2}  # what differs from the defaults


def test_the_batcher_reads_the_protocol():
    from cai.backends.openai import OpenAIBackend

    with OpenAIBackend("m", "http://127.0.0.1:9") as be:
        assert isinstance(be, PipelinedBackend) and Batcher(be).native
    scripted = ScriptedBackend()
    assert isinstance(scripted, Backend) and not isinstance(scripted, PipelinedBackend)
    assert not Batcher(scripted).native
    assert "hasattr" not in (CAI / "batching.py").read_text()


# ------------------------------------------------------------ a backend added with one registry line

class EchoOptions(BackendOptions):
    greeting: str = option("hello", description="What every answer starts with.")


class EchoBackend(Engine):
    """A server backend that answers with its greeting and the last message."""

    name = "echo"
    Options = EchoOptions

    def __init__(self, model: str, *, greeting: str):
        self.model, self.greeting = model, greeting

    def chat(self, conversations, params):
        from cai.backends.base import Completion

        return [[Completion(text=f"{self.greeting}: {c[-1]['content']}", tokens=2)] * params.n for c in conversations]

    def choice_logprobs(self, conversations, assistant_prefix, options):
        return [{o: -1.0 for o in options} for _ in conversations]

    def close(self):
        pass


@pytest.fixture
def echo_registered(monkeypatch):
    monkeypatch.setitem(REGISTRY, "echo", Entry(f"{__name__}:EchoBackend", local=False))
    backend_class.cache_clear()
    yield
    backend_class.cache_clear()


def test_a_new_backend_is_one_registry_line(echo_registered):
    from cai.backends.base import SamplingParams

    be = load_backend("echo", "any", greeting="hi")
    assert isinstance(be, Backend) and be.chat([[{"role": "user", "content": "x"}]], SamplingParams())[0][0].text == "hi: x"
    assert backends.check_engine("echo", "not-a-local-model") == ("echo", None)  # a server backend: no folder
    # its option is its own: another backend refuses it by the new backend's name, and a bad value fails
    with pytest.raises(UsageError, match="--greeting is a echo setting"):
        load_backend("openai", "m", base_url="http://127.0.0.1:9", greeting="hi")
    with pytest.raises(UsageError, match="echo backend: --greeting"):
        load_backend("echo", "any", greeting=3)
    with pytest.raises(UsageError, match="choose one of vllm, hf, openai, echo"):
        load_backend("nope", "any")
