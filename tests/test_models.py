"""The model cache: built once, shared safely between processes, rebuilt when damaged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cai.cli import main
from cai.models import MANIFEST, check_entry, resolve, wheelhouse


def test_unknown_model_exits_2_and_lists_names():
    res = CliRunner().invoke(main, ["models", "path", "no-such-model"])
    assert res.exit_code == 2
    assert "smollm2-135m" in res.output and "no-such-model" in res.output


def test_local_folder_is_a_model(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert resolve(str(tmp_path)) == tmp_path.resolve()


def test_default_model_folder_is_bf16_safetensors(model_path):
    folder = Path(model_path)
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg.get("dtype", cfg.get("torch_dtype")) == "bfloat16"
    assert list(folder.glob("*.safetensors"))
    from safetensors import safe_open

    with safe_open(str(next(folder.glob("*.safetensors"))), "pt") as f:
        key = next(iter(f.keys()))
        assert str(f.get_slice(key).get_dtype()) in ("BF16", "bfloat16")


@pytest.mark.slow
def test_concurrent_pull_then_truncated_rebuild(tmp_path, model_path):
    """Two processes pull into an empty cache at once: one builds, the other waits and reuses it.
    Then a truncated weights file is detected and rebuilt."""
    env = {**os.environ, "CAI_HOME": str(tmp_path / "home"), "CAI_WHEELHOUSE": str(wheelhouse())}
    cmd = [sys.executable, "-m", "cai.cli", "models", "pull"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    folders = {o[0].strip() for o in outs}
    assert len(folders) == 1
    folder = Path(folders.pop())
    builds = sum("building" in o[1] for o in outs)
    assert builds == 1, outs  # the second process found the finished entry after the lock
    assert check_entry(folder) is None
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".smollm2-135m-")]  # no temp left

    weights = next(folder.glob("*.safetensors"))
    with open(weights, "r+b") as fh:
        fh.truncate(weights.stat().st_size // 2)
    assert check_entry(folder) is not None
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "building" in res.stderr
    assert check_entry(folder) is None
    assert json.loads((folder / MANIFEST).read_text())["files"]
