"""`cai chat` (cai/commands/chat.py) through click's CliRunner."""

from __future__ import annotations

import socket
import time

from click.testing import CliRunner

from cai.cli import main


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
