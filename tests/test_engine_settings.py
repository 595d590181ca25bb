"""The vLLM engine settings a GPU user needs: --tensor-parallel-size, --data-parallel-size,
--gpu-memory-fraction, --max-model-len and --quantization (flags and recipe keys) reach vLLM's engine
arguments, a run records them, and a backend that cannot use them refuses them with exit 2.

vLLM's engine constructors are replaced by fakes that keep their arguments and answer every request
with a fixed text: the CPU build cannot run tensor or data parallelism."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest
import yaml
from click.testing import CliRunner

from cai.backends import check_engine, load_backend
from cai.backends.base import SamplingParams
from cai.cli import main
from cai.config import GenerateConfig, load_config
from cai.errors import UsageError

pytest.importorskip("vllm")

SETTINGS = {"tensor_parallel_size": 4, "data_parallel_size": 2, "gpu_memory_fraction": 0.6, "max_model_len": 4096,
            "quantization": "awq"}
FLAGS = ["--tensor-parallel-size", "4", "--data-parallel-size", "2", "--gpu-memory-fraction", "0.6",
         "--max-model-len", "4096", "--quantization", "awq"]
# the same settings as vLLM names its engine arguments
ENGINE = {"tensor_parallel_size": 4, "data_parallel_size": 2, "gpu_memory_utilization": 0.6, "max_model_len": 4096,
          "quantization": "awq"}
COMMANDS = {  # each command that runs a model, with what it needs besides the engine flags
    "chat": ["hi"],
    "generate": ["--limit", "1", "--rounds", "1", "--no-progress"],
    "judge": ["--no-progress"],
    "eval": ["--model", "smollm2-135m", "--no-progress"],
    "demo": [],
}


def _output(text: str = "A fine answer.") -> SimpleNamespace:
    return SimpleNamespace(outputs=[SimpleNamespace(text=text, token_ids=[1, 2, 3], finish_reason="stop",
                                                    logprobs=None)])


class FakeAsyncLLM:
    """Stands in for vllm.v1.engine.async_llm.AsyncLLM: keeps the engine arguments it was made from."""

    made: list = []

    @classmethod
    def from_engine_args(cls, args):
        cls.made.append(args)
        return cls()

    async def generate(self, prompt, params, request_id):
        await asyncio.sleep(0)
        out = _output()
        if params.logprobs:  # a judge's question: the first option is the likelier
            out.outputs[0].logprobs = [{1: SimpleNamespace(decoded_token="A", logprob=-0.4),
                                        2: SimpleNamespace(decoded_token="B", logprob=-1.2)}]
        yield out

    def shutdown(self):
        pass


class FakeLLM:
    """Stands in for vllm.LLM, the offline engine."""

    made: list = []

    def __init__(self, **kwargs):
        type(self).made.append(kwargs)

    def chat(self, conversations, params, **_):
        return [_output() for _ in conversations]

    def generate(self, prompts, params, **_):  # token prompts: the backend sends the ids it counted
        return [_output() for _ in prompts]


@pytest.fixture
def fake_vllm(monkeypatch):
    """Both vLLM engines faked; the process's engine slot is left empty afterwards."""
    import vllm
    import vllm.v1.engine.async_llm as async_llm

    from cai.backends import vllm_available
    from cai.backends.vllm import shutdown_all

    assert vllm_available()
    monkeypatch.setattr(async_llm, "AsyncLLM", FakeAsyncLLM)
    monkeypatch.setattr(vllm, "LLM", FakeLLM)
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "all")  # engine_args leaves this test's environment alone
    monkeypatch.delenv("CAI_VLLM_PIPELINE", raising=False)
    monkeypatch.delenv("CAI_BACKEND", raising=False)
    FakeAsyncLLM.made, FakeLLM.made = [], []
    shutdown_all()
    yield
    shutdown_all()


def _async_args(made) -> dict:
    assert len(made) == 1
    return {k: getattr(made[0], k) for k in ENGINE}


def test_the_flags_reach_the_async_engine(fake_vllm, model_path):
    res = CliRunner().invoke(main, ["chat", "--backend", "vllm", *FLAGS, "hello"])
    assert res.exit_code == 0, res.output
    assert "A fine answer." in res.output
    assert _async_args(FakeAsyncLLM.made) == ENGINE
    args = FakeAsyncLLM.made[0]
    assert args.model == model_path and args.enforce_eager  # the rest as on any CPU run


def test_the_settings_reach_the_offline_engine(fake_vllm, monkeypatch):
    monkeypatch.setenv("CAI_VLLM_PIPELINE", "0")
    be = load_backend("vllm", "smollm2-135m", **{**SETTINGS, "data_parallel_size": None})
    assert be.chat([[{"role": "user", "content": "hi"}]], SamplingParams())[0][0].text == "A fine answer."
    (kwargs,) = FakeLLM.made
    assert {k: kwargs.get(k) for k in ENGINE} == {**ENGINE, "data_parallel_size": None}
    # vLLM's offline engine cannot run data parallelism in one process: refused before it starts
    with pytest.raises(UsageError, match="--data-parallel-size needs the pipelined engine"):
        load_backend("vllm", "smollm2-135m", data_parallel_size=2)
    assert len(FakeLLM.made) == 1


def test_unset_settings_leave_the_engine_arguments_as_they_were(fake_vllm):
    from cai.backends.vllm import engine_args

    args = engine_args("m")
    assert args["tensor_parallel_size"] == 1 and args["max_model_len"] == 2048
    assert "data_parallel_size" not in args and "quantization" not in args


def test_recipe_keys_reach_the_engine_and_run_yaml_records_them(fake_vllm, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"question {i}"}) + "\n" for i in range(2)))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({**SETTINGS, "backend": "vllm", "prompts": str(prompts), "rounds": 1}))
    run = tmp_path / "run"
    res = CliRunner().invoke(main, ["generate", "--config", str(recipe), "--run-dir", str(run), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert _async_args(FakeAsyncLLM.made) == ENGINE
    config = yaml.safe_load((run / "run.yaml").read_text())["config"]
    assert {k: config[k] for k in SETTINGS} == SETTINGS and config["backend"] == "vllm"
    assert len((run / "generations.jsonl").read_text().splitlines()) == 2
    # the judge of that run, on the same engine settings given as flags: recorded with its settings
    res = CliRunner().invoke(main, ["judge", str(run), "--backend", "vllm", *FLAGS, "--calibration", "none",
                                    "--no-progress"])
    assert res.exit_code == 0, res.output
    assert yaml.safe_load((run / "run.yaml").read_text())["judge"]["engine"] == SETTINGS
    assert len(FakeAsyncLLM.made) == 1  # the same settings: the engine started for generate was reused


def test_an_unknown_quantization_lists_what_vllm_knows(fake_vllm):
    with pytest.raises(UsageError, match=r"--quantization 'nope': the installed vLLM knows .*awq.*fp8"):
        check_engine("vllm", "smollm2-135m", quantization="nope")
    assert FakeAsyncLLM.made == []


HF, OPENAI = ["--backend", "hf"], ["--backend", "openai", "--base-url", "http://127.0.0.1:9"]


@pytest.mark.parametrize("setting", range(0, len(FLAGS), 2))
@pytest.mark.parametrize("command,backend", [(c, b) for c in COMMANDS for b in (HF, OPENAI)
                                             if not (c == "demo" and b is OPENAI)])  # the demo runs local engines
def test_a_backend_that_cannot_use_a_setting_refuses_it(command, backend, setting, tmp_path):
    flag, value = FLAGS[setting : setting + 2]
    extra = list(COMMANDS[command])
    if command == "judge":
        pairs = tmp_path / "pairs.jsonl"
        pairs.write_text(json.dumps({"id": 1, "prompt": "p", "response_a": "a", "response_b": "b"}) + "\n")
        extra += ["--pairs", str(pairs), "--out", str(tmp_path / "out.jsonl")]
    elif command in ("generate", "demo", "eval"):
        extra += {"generate": ["--run-dir"], "demo": ["--out"], "eval": ["--out"]}[command] + [str(tmp_path / "o")]
    res = CliRunner().invoke(main, [command, *backend, flag, value, *extra])
    assert res.exit_code == 2, res.output
    assert f"{flag} is a vllm setting" in res.output and f"the {backend[1]} backend cannot use it" in res.output
    assert not (tmp_path / "o").exists() and not (tmp_path / "out.jsonl").exists()  # refused before any output


def test_the_environments_backend_refuses_them_too(monkeypatch, tmp_path):
    """Backend from CAI_BACKEND, not a flag: refused when the engine is checked, before a run folder."""
    monkeypatch.setenv("CAI_BACKEND", "hf")
    res = CliRunner().invoke(main, ["chat", "--tensor-parallel-size", "2", "hi"])
    assert res.exit_code == 2 and "the hf backend cannot use it" in res.output
    res = CliRunner().invoke(main, ["generate", "--quantization", "fp8", "--limit", "1", "--run-dir",
                                    str(tmp_path / "run"), "--no-progress"])
    assert res.exit_code == 2 and "--quantization is a vllm setting" in res.output, res.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_that_runs_a_model_has_the_flags(command):
    res = CliRunner().invoke(main, [command, "--help"])
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    for flag, metavar in (("--tensor-parallel-size", "N"), ("--data-parallel-size", "N"), ("--gpu-memory-fraction", "F"),
                          ("--max-model-len", "TOKENS"), ("--quantization", "METHOD")):
        assert f"{flag} {metavar}" in text, (command, flag)


def test_the_settings_go_to_the_engine_that_runs_on_vllm():
    """One process runs one vLLM engine: a policy on a server leaves them to a reviser on local GPUs;
    a policy on vLLM keeps them, and its reviser elsewhere gets only the server limits."""
    cfg = load_config(GenerateConfig, None, {"backend": "openai", "base_url": "http://a:1", "reviser_backend": "vllm",
                                             "reviser_model": "smollm2-135m", **SETTINGS})
    assert not set(SETTINGS) & set(cfg.backend_options())
    assert {k: cfg.reviser_options()[k] for k in SETTINGS} == SETTINGS
    cfg = load_config(GenerateConfig, None, {"backend": "vllm", "reviser_backend": "openai", "concurrency": 8,
                                             "reviser_base_url": "http://b:1", "reviser_model": "big", **SETTINGS})
    assert {k: cfg.backend_options()[k] for k in SETTINGS} == SETTINGS
    assert cfg.reviser_options() == {"base_url": "http://b:1", "concurrency": 8}
    assert cfg.engine_settings() == SETTINGS


def test_invalid_values_name_the_setting(tmp_path):
    recipe = tmp_path / "r.yaml"
    for key, bad in (("tensor_parallel_size", 0), ("data_parallel_size", -1), ("gpu_memory_fraction", 1.5),
                     ("max_model_len", 16)):
        recipe.write_text(f"{key}: {bad}\n")
        with pytest.raises(UsageError, match=key):
            load_config(GenerateConfig, recipe, {})
    res = CliRunner().invoke(main, ["chat", "--gpu-memory-fraction", "0", "hi"])
    assert res.exit_code == 2 and "--gpu-memory-fraction" in res.output
