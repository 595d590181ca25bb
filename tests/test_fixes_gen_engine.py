"""Choosing and configuring engines: the default when vLLM does not import, the openai backend's
limits from flags, recipes and the environment."""

from __future__ import annotations

import socket
import sys
import time

import pytest
from click.testing import CliRunner

from cai import backends
from cai.backends import default_backend, load_backend
from cai.cli import main
from cai.config import EngineConfig, GenerateConfig, load_config
from cai.errors import UsageError


@pytest.fixture
def fresh_import_check():
    backends.vllm_imports.cache_clear()
    yield
    backends.vllm_imports.cache_clear()


def test_default_backend_falls_back_to_hf_when_vllm_does_not_import(monkeypatch, capsys, fresh_import_check):
    monkeypatch.delenv("CAI_BACKEND", raising=False)
    monkeypatch.setattr(backends, "vllm_available", lambda: True)  # installed...
    monkeypatch.setitem(sys.modules, "vllm", None)  # ...but `import vllm` raises
    assert default_backend() == "hf"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "vLLM is installed but does not import" in err and "using hf" in err
    assert default_backend() == "hf" and capsys.readouterr().err == ""  # said once
    monkeypatch.setenv("CAI_BACKEND", "openai")
    assert default_backend() == "openai"


def test_default_backend_is_hf_without_vllm(monkeypatch, capsys, fresh_import_check):
    monkeypatch.delenv("CAI_BACKEND", raising=False)
    monkeypatch.setattr(backends, "vllm_available", lambda: False)
    assert default_backend() == "hf" and capsys.readouterr().err == ""


def test_openai_limits_reach_the_backend(monkeypatch):
    for var in ("CAI_OPENAI_TIMEOUT", "CAI_OPENAI_CONCURRENCY", "CAI_OPENAI_MAX_RETRIES", "CAI_BACKEND"):
        monkeypatch.delenv(var, raising=False)
    cfg = EngineConfig(model="served", backend="openai", base_url="http://127.0.0.1:9", request_timeout=3.5,
                       concurrency=2, max_retries=1)
    be = load_backend(cfg.backend, cfg.model, **cfg.backend_options())
    assert (be.timeout, be.concurrency, be.max_retries) == (3.5, 2, 1)
    be.close()
    # unset: the environment, then the backend's own defaults; a flag beats the environment
    monkeypatch.setenv("CAI_OPENAI_TIMEOUT", "7")
    monkeypatch.setenv("CAI_OPENAI_CONCURRENCY", "3")
    be = load_backend("openai", "served", base_url="http://127.0.0.1:9")
    assert (be.timeout, be.concurrency, be.max_retries) == (7.0, 3, 5)
    be.close()
    be = load_backend("openai", "served", base_url="http://127.0.0.1:9", concurrency=9)
    assert be.concurrency == 9
    be.close()
    monkeypatch.setenv("CAI_OPENAI_CONCURRENCY", "many")
    with pytest.raises(UsageError, match="CAI_OPENAI_CONCURRENCY: 'many' is not a whole number"):
        load_backend("openai", "served", base_url="http://127.0.0.1:9")


def test_a_default_backend_from_the_environment_gets_only_its_own_options(monkeypatch):
    monkeypatch.setenv("CAI_BACKEND", "openai")
    cfg = EngineConfig(model="served", base_url="http://127.0.0.1:9")  # max_model_len is set too
    assert cfg.backend_options()["max_model_len"] == 2048
    be = load_backend(cfg.backend, cfg.model, **cfg.backend_options())
    assert be.name == "openai"
    be.close()


def test_a_recipe_sets_the_limits(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("backend: openai\nrequest_timeout: 30\nconcurrency: 8\nmax_retries: 2\n")
    cfg = load_config(GenerateConfig, recipe, {"concurrency": 16})
    assert cfg.backend_options() == {"max_model_len": 2048, "timeout": 30.0, "concurrency": 16, "max_retries": 2}
    recipe.write_text("request_timeout: 0\n")
    with pytest.raises(UsageError, match="request_timeout"):
        load_config(GenerateConfig, recipe, {})


@pytest.mark.parametrize("command", ["chat", "generate", "judge", "eval"])
def test_the_limits_are_documented_flags(command):
    res = CliRunner().invoke(main, [command, "--help"])
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    assert "--request-timeout SECONDS" in text and "CAI_OPENAI_TIMEOUT" in text
    assert "--concurrency N" in text and "CAI_OPENAI_CONCURRENCY" in text
    assert "--max-retries N" in text


def test_chat_passes_the_limits_to_the_openai_backend(monkeypatch):
    """A server that accepts connections and never answers: with a 0.3 s limit and no retries the
    request fails in well under the 120 s default."""
    monkeypatch.delenv("CAI_OPENAI_TIMEOUT", raising=False)
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)  # never accepted: the kernel completes the handshake, nobody replies
        url = f"http://127.0.0.1:{srv.getsockname()[1]}"
        t = time.monotonic()
        res = CliRunner().invoke(main, ["chat", "--backend", "openai", "--base-url", url, "--model", "served",
                                        "--request-timeout", "0.3", "--max-retries", "0", "--concurrency", "1", "hi"])
        elapsed = time.monotonic() - t
    assert res.exit_code == 1, res.output
    assert "timed out after 0.3s" in res.output and "(1 attempt)" in res.output
    assert elapsed < 10


def test_check_engine_checks_the_model_before_picking_the_default_engine(monkeypatch, tmp_path):
    """Picking the default may import vLLM (seconds); a bad model name must fail before that."""
    from cai.backends import check_engine

    monkeypatch.delenv("CAI_BACKEND", raising=False)
    monkeypatch.setattr(backends, "default_backend", lambda: pytest.fail("default picked before the model was checked"))
    with pytest.raises(UsageError, match="unknown model 'bogus'"):
        check_engine(None, "bogus")
    monkeypatch.setenv("CAI_BACKEND", "nope")
    with pytest.raises(UsageError, match="unknown backend 'nope' \\(from CAI_BACKEND\\)"):
        check_engine(None, "bogus")
    monkeypatch.setenv("CAI_BACKEND", "hf")
    (tmp_path / "config.json").write_text("{}")
    assert check_engine(None, str(tmp_path)) == ("hf", tmp_path.resolve())


def test_speculative_decoding_reaches_only_the_vllm_engine(tmp_path, monkeypatch, capsys):
    from cai.backends import _engine_options
    from cai.backends.vllm import engine_args

    recipe = tmp_path / "r.yaml"
    recipe.write_text("speculative_tokens: 3\n")
    cfg = load_config(GenerateConfig, recipe, {})
    opts = cfg.backend_options()
    assert opts["speculative_tokens"] == 3
    assert "speculative_tokens" not in _engine_options("openai", opts)
    assert "speculative_tokens" not in _engine_options("hf", opts)
    vllm_opts = _engine_options("vllm", opts)
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "all")  # engine_args must not touch this test's environment
    spec = engine_args("m", **vllm_opts)["speculative_config"]
    assert spec["method"] == "ngram" and spec["num_speculative_tokens"] == 3
    assert "speculative_config" not in engine_args("m", max_model_len=2048)
    assert "speculative_tokens" not in load_config(GenerateConfig, None, {}).backend_options()  # off by default
    recipe.write_text("speculative_tokens: -1\n")
    with pytest.raises(UsageError, match="speculative_tokens"):
        load_config(GenerateConfig, recipe, {})
    res = CliRunner().invoke(main, ["generate", "--help"])
    assert "--speculative-tokens N" in " ".join(res.output.split())
    monkeypatch.delenv("CAI_BACKEND", raising=False)
    load_backend("openai", "served", base_url="http://127.0.0.1:9", speculative_tokens=3).close()
    assert "the openai backend ignores it" in capsys.readouterr().err
