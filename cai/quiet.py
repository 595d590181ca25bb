"""Whether the user asked for the libraries' own output (`CAI_LIBRARY_LOGS=1`).

A leaf module: the CLI quiets vLLM, torch, transformers and datasets by default, and code below the
CLI (the model builder's progress bars) asks the same question without importing the CLI.
"""

from __future__ import annotations

import os

LIBRARY_LOGS = "CAI_LIBRARY_LOGS"


def library_logs() -> bool:
    """Whether CAI_LIBRARY_LOGS asks for the libraries' own output."""
    return os.environ.get(LIBRARY_LOGS, "").strip().lower() not in ("", "0", "false", "no", "off")
