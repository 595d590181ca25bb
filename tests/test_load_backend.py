"""Choosing and loading an engine (cai/backends/__init__.py): the default when vLLM does not
import, the model checked before the default is picked, each engine given only its own options."""

from __future__ import annotations

import sys

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


def test_a_default_backend_from_the_environment_gets_only_its_own_options(monkeypatch):
    monkeypatch.setenv("CAI_BACKEND", "openai")
    cfg = EngineConfig(model="served", base_url="http://127.0.0.1:9")  # max_model_len is set too
    assert cfg.backend_options()["max_model_len"] == 2048
    be = load_backend(cfg.backend, cfg.model, **cfg.backend_options())
    assert be.name == "openai"
    be.close()


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
