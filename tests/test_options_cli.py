"""Flags shared by several commands (cai/commands/options.py), as `--help` shows them."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from cai.cli import main


@pytest.mark.parametrize("command", ["chat", "generate", "judge", "eval"])
def test_the_limits_are_documented_flags(command):
    res = CliRunner().invoke(main, [command, "--help"])
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    assert "--request-timeout SECONDS" in text and "CAI_OPENAI_TIMEOUT" in text
    assert "--concurrency N" in text and "CAI_OPENAI_CONCURRENCY" in text
    assert "--max-retries N" in text
