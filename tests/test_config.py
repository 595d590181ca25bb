"""Recipes and configs (cai/config.py): a recipe's engine limits, overridden by flags and checked."""

from __future__ import annotations

import pytest

from cai.config import GenerateConfig, load_config
from cai.errors import UsageError


def test_a_recipe_sets_the_limits(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("backend: openai\nrequest_timeout: 30\nconcurrency: 8\nmax_retries: 2\n")
    cfg = load_config(GenerateConfig, recipe, {"concurrency": 16})
    assert cfg.backend_options() == {"max_model_len": 2048, "timeout": 30.0, "concurrency": 16, "max_retries": 2}
    recipe.write_text("request_timeout: 0\n")
    with pytest.raises(UsageError, match="request_timeout"):
        load_config(GenerateConfig, recipe, {})
