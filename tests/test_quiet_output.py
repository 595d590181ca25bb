"""What the CLI prints is cai's own lines and progress bars: the libraries under it (vLLM, torch,
transformers, datasets) are told to keep to their errors, unless CAI_LIBRARY_LOGS=1 asks for their
own logging and progress bars back."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import cai.cli
from cai.cli import LIBRARY_LOGS, QUIET_ENV, TRITON_LOGGER, TRITON_NOTICE, main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def clean_env(monkeypatch):
    """None of the variables set; each put back as it was after the test (setenv first, so that
    monkeypatch also removes what the CLI group sets)."""
    for key in (*QUIET_ENV, LIBRARY_LOGS):
        monkeypatch.setenv(key, "x")
        monkeypatch.delenv(key)
    return monkeypatch


def _group_runs():
    res = CliRunner().invoke(main, ["models", "list"])
    assert res.exit_code == 0, res.output


def test_the_group_sets_every_variable_by_default(clean_env):
    _group_runs()
    for key, value in QUIET_ENV.items():
        assert os.environ.get(key) == value, key
    assert "HF_DATASETS_DISABLE_PROGRESS_BARS" in QUIET_ENV and "VLLM_LOGGING_LEVEL" in QUIET_ENV
    # the Trainer's step bar (a training stage's own progress) is decided by this logger's level
    assert logging.getLogger("transformers.training_args").getEffectiveLevel() == logging.WARNING


def test_a_value_already_set_is_kept(clean_env):
    clean_env.setenv("VLLM_LOGGING_LEVEL", "INFO")
    clean_env.setenv("HF_DATASETS_DISABLE_PROGRESS_BARS", "0")
    _group_runs()
    assert os.environ["VLLM_LOGGING_LEVEL"] == "INFO" and os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] == "0"
    assert os.environ["TRANSFORMERS_VERBOSITY"] == "error"


@pytest.mark.parametrize("value", ["1", "true", "yes"])
def test_cai_library_logs_sets_none_of_them(clean_env, value):
    clean_env.setenv(LIBRARY_LOGS, value)
    _group_runs()
    assert [k for k in QUIET_ENV if k in os.environ] == []


def test_cai_library_logs_0_is_the_default(clean_env):
    clean_env.setenv(LIBRARY_LOGS, "0")
    _group_runs()
    assert os.environ.get("DATASETS_VERBOSITY") == "error"


def test_datasets_progress_bars_are_off_after_the_group_runs(clean_env):
    """`datasets` already imported (the test suite, a program embedding cai): told directly, since
    it read its variable when it was imported."""
    import datasets
    from datasets import config
    from datasets.utils import are_progress_bars_disabled

    settable = config.HF_DATASETS_DISABLE_PROGRESS_BARS is None  # imported without the variable
    if settable:
        datasets.enable_progress_bars()
        assert not are_progress_bars_disabled()
    _group_runs()
    assert are_progress_bars_disabled()
    assert datasets.logging.get_verbosity() == datasets.logging.ERROR
    if settable:
        datasets.enable_progress_bars()  # as it was


def _record(msg: str) -> logging.LogRecord:
    return logging.LogRecord(TRITON_LOGGER, logging.WARNING, "importing.py", 1, msg, None, None)


def test_the_triton_notice_is_filtered_at_its_logger(clean_env):
    logger = logging.getLogger(TRITON_LOGGER)
    notice = _record(TRITON_NOTICE + ". Disabling Triton.")
    assert not logger.filter(notice)
    assert logger.filter(_record("Triton is installed but 2 active driver(s) found"))  # other messages still show
    clean_env.setenv(LIBRARY_LOGS, "1")
    assert logger.filter(notice)
    cai.cli._quiet_triton_notice()  # idempotent: one filter
    assert sum(isinstance(f, cai.cli._TritonNotice) for f in logger.filters) == 1


# ---------------------------------------------------------------- slow: real subprocesses

def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in (*QUIET_ENV, LIBRARY_LOGS)}
    env.update(extra)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _cai(args, **extra) -> subprocess.CompletedProcess:
    code = "import sys; from cai.cli import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], env=_env(**extra), capture_output=True, text=True,
                          timeout=300)


@pytest.fixture
def tiny_run(tmp_path):
    from cai.config import GenerateConfig
    from cai.generate import run_generate
    from tests.scripted import ScriptedBackend

    p = tmp_path / "p.jsonl"
    p.write_text("".join(json.dumps({"prompt": f"Question {i}?"}) + "\n" for i in range(4)))
    run = tmp_path / "run"
    run_generate(GenerateConfig(prompts=str(p), rounds=1, run_dir=str(run), model="m"), backend=ScriptedBackend(),
                 progress=False)
    return run


NOISE = ("Flattening", "Map", "Saving the dataset", "Creating parquet", "Triton", "Warning", "it/s]")


@pytest.mark.slow
def test_cai_export_prints_only_its_own_lines(tiny_run, tmp_path):
    for to, out in (("hf", tmp_path / "sft_hf"), ("parquet", tmp_path / "sft.parquet")):
        res = _cai(["export", str(tiny_run), "--format", "sft", "--to", to, "--out", str(out)])
        assert res.returncode == 0, res.stderr
        assert not [n for n in NOISE if n in res.stderr], res.stderr
        assert res.stderr.strip() == "" and res.stdout.startswith("export: 4 sft rows"), (res.stdout, res.stderr)
    # the variable brings datasets' own bars back (so the check above would see them)
    res = _cai(["export", str(tiny_run), "--format", "sft", "--to", "hf", "--out", str(tmp_path / "again")],
               **{LIBRARY_LOGS: "1"})
    assert res.returncode == 0 and "Saving the dataset" in res.stderr, res.stderr


MAP_AFTER_THE_GROUP = """
import sys
from cai.cli import main
main(["models", "list"], standalone_mode=False)
import datasets
ds = datasets.Dataset.from_list([{"a": i} for i in range(20)]).shuffle(seed=0)
ds = ds.flatten_indices()
ds.map(lambda r: {"b": r["a"] + 1})
print("mapped", file=sys.stderr)
from transformers import TrainingArguments
print("trainer bar", "off" if TrainingArguments(output_dir=sys.argv[1], report_to="none").disable_tqdm else "on",
      file=sys.stderr)
"""


@pytest.mark.slow
def test_datasets_map_after_the_group_draws_no_bars(tmp_path):
    """What training data prep does (TRL's maps, a shuffled set's "Flattening the indices"); the
    Trainer's own bar of steps stays on."""
    args = [sys.executable, "-c", MAP_AFTER_THE_GROUP, str(tmp_path / "t")]
    quiet = subprocess.run(args, env=_env(), capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    assert "Flattening" not in quiet.stderr and "Map" not in quiet.stderr and "mapped" in quiet.stderr, quiet.stderr
    assert "trainer bar on" in quiet.stderr, quiet.stderr
    loud = subprocess.run(args, env=_env(**{LIBRARY_LOGS: "1"}), capture_output=True, text=True, timeout=300)
    assert "Flattening the indices" in loud.stderr and "Map" in loud.stderr, loud.stderr


TRITON_IMPORT = "import cai.cli, vllm.triton_utils"


@pytest.mark.slow
def test_the_triton_notice_is_gone_at_import():
    pytest.importorskip("vllm")
    loud = subprocess.run([sys.executable, "-c", TRITON_IMPORT], env=_env(**{LIBRARY_LOGS: "1"}),
                          capture_output=True, text=True, timeout=300)
    assert loud.returncode == 0, loud.stderr
    if TRITON_NOTICE not in loud.stderr:
        pytest.skip("this vLLM build does not print the Triton notice (a CUDA build, or triton with its CPU backend)")
    quiet = subprocess.run([sys.executable, "-c", TRITON_IMPORT], env=_env(), capture_output=True, text=True,
                           timeout=300)
    assert quiet.returncode == 0 and TRITON_NOTICE not in quiet.stderr, quiet.stderr
