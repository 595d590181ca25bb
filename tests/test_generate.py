"""`cai generate`: the critique → revision loop, its records, resume and crash safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from cai.cli import main
from cai.config import GenerateConfig
from cai.constitution import load_constitution
from cai.generate import run_generate
from cai.prompts import Templates
from cai.records import read_rows
from cai.revise import clean_revision, critique_conversation
from tests.scripted import ScriptedBackend

META_KEYS = {"model", "backend", "sampling", "seed", "templates", "constitution_sha256", "code_version",
             "finish_reasons", "tokens", "rounds"}


def write_prompts(path: Path, n: int) -> Path:
    topics = ["bread", "rivers", "chess", "tax forms", "knots", "bees", "rain", "glass", "maps", "tea",
              "ships", "clocks", "salt", "moss", "owls", "wool", "iron", "kites", "jazz", "ice"]
    with open(path, "w") as fh:
        for i in range(n):
            fh.write(json.dumps({"prompt": f"Tell me one fact about {topics[i % len(topics)]} ({i}).",
                                 "category": "helpful" if i % 2 else "physical_harm"}) + "\n")
    return path


def cfg(tmp_path, **kw) -> GenerateConfig:
    base = dict(prompts=str(write_prompts(tmp_path / "p.jsonl", kw.pop("n", 6))), rounds=2, samples=2,
                run_dir=str(tmp_path / "run"), model="scripted-model")
    base.update(kw)
    return GenerateConfig(**base)


def rows(tmp_path) -> list[dict]:
    return list(read_rows(tmp_path / "run" / "generations.jsonl"))


def test_loop_writes_complete_records(tmp_path):
    be = ScriptedBackend()
    s = run_generate(cfg(tmp_path), backend=be, progress=False)
    out = rows(tmp_path)
    assert s.written == len(out) == 12
    constitution = load_constitution("default")
    ids = {p.id for p in constitution.principles}
    for r in out:
        assert len(r["rounds"]) == 2 and all(rd["principle_id"] in ids for rd in r["rounds"])
        assert META_KEYS <= set(r["meta"])
        assert r["final"] == r["rounds"][-1]["revision"]
        assert r["final"].startswith("GOOD revision")  # chatter line cleaned
    assert s.cleaned == 24
    assert len({r["id"] for r in out}) == 12
    assert len({rd["principle_id"] for r in out for rd in r["rounds"]}) > 1
    # batched: answers in one call, then one call per critique/revision step
    assert [k for k, _ in be.calls] == ["chat"] * 5 and be.calls[0][1] == 6


def test_rerun_skips_everything(tmp_path):
    run_generate(cfg(tmp_path), backend=ScriptedBackend(), progress=False)
    s = run_generate(cfg(tmp_path), backend=ScriptedBackend(), progress=False)
    assert s.written == 0 and s.skipped == 12 and len(rows(tmp_path)) == 12


def test_crash_mid_run_then_resume(tmp_path):
    c = cfg(tmp_path, n=10, chunk_size=3, samples=1, rounds=1)
    with pytest.raises(RuntimeError, match="scripted crash"):
        run_generate(c, backend=ScriptedBackend(fail_after_calls=7), progress=False)
    partial = rows(tmp_path)
    assert 0 < len(partial) < 10
    # a crash in the middle of a write leaves a torn line: the next run cuts it off
    with open(tmp_path / "run" / "generations.jsonl", "a") as fh:
        fh.write('{"id": "torn')
    s = run_generate(c, backend=ScriptedBackend(), progress=False)
    out = rows(tmp_path)
    assert s.torn_line_repaired and len(out) == 10 == len({r["id"] for r in out})
    assert s.skipped == len(partial)


def test_other_constitution_is_refused(tmp_path):
    run_generate(cfg(tmp_path), backend=ScriptedBackend(), progress=False)
    other = Path(__file__).resolve().parent.parent / "constitutions"
    alt = next(p for p in other.glob("*.yaml") if p.stem != "default")
    from cai.errors import UsageError

    with pytest.raises(UsageError, match="different setup"):
        run_generate(cfg(tmp_path, constitution=str(alt)), backend=ScriptedBackend(), progress=False)
    s = run_generate(cfg(tmp_path, constitution=str(alt), force_new=True), backend=ScriptedBackend(), progress=False)
    assert s.written == 12


def test_template_injection_stays_literal():
    constitution = load_constitution("default")
    evil = constitution.principles[0].model_copy(update={"critique": "{{ ''.__class__ }} {% for x in y %}"})
    conv = critique_conversation([], [{"role": "user", "content": "{{ 7*7 }}"}], "answer", evil, Templates())
    assert "{{ ''.__class__ }} {% for x in y %}" in conv[-1]["content"]
    assert conv[0]["content"] == "{{ 7*7 }}"


@pytest.mark.parametrize("raw,clean,changed", [
    ("Sure, here is a revised response:\nDrink water.", "Drink water.", True),
    ("Here's the rewritten answer:\n\nCall a doctor.", "Call a doctor.", True),
    ("Revised response: Hello there", "Hello there", True),
    ("Paris is the capital of France.", "Paris is the capital of France.", False),
    ("Sure! Here is an improved version of my answer.\nUse a lock.", "Use a lock.", True),
])
def test_clean_revision(raw, clean, changed):
    assert clean_revision(raw) == (clean, changed)


def test_bad_prompt_row_names_the_row(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"prompt": "ok"}\n{"prompt": 5}\n')
    res = CliRunner().invoke(main, ["generate", "--prompts", str(p), "--run-dir", str(tmp_path / "r")])
    assert res.exit_code == 2
    assert "bad.jsonl" in res.output and "2" in res.output and "prompt" in res.output
    assert not (tmp_path / "r" / "generations.jsonl").exists()


def test_bad_constitution_names_file_line_field(tmp_path):
    c = tmp_path / "c.yaml"
    c.write_text("name: x\nversion: '1'\ndescription: d\nprinciples:\n  - id: a\n    critique: c\n    revision: r\n    weight: -1\ncomparisons:\n  - id: q\n    question: which?\n")
    res = CliRunner().invoke(main, ["generate", "--constitution", str(c), "--run-dir", str(tmp_path / "r")])
    assert res.exit_code == 2
    assert "c.yaml:8" in res.output and "weight" in res.output


def test_unknown_recipe_key(tmp_path):
    r = tmp_path / "recipe.yaml"
    r.write_text("rounds: 1\nbogus: 3\n")
    res = CliRunner().invoke(main, ["generate", "--config", str(r)])
    assert res.exit_code == 2 and "bogus" in res.output


# ---------------------------------------------------------------- real engine
@pytest.mark.slow
def test_real_vllm_16_prompts_2_rounds_2_samples(tmp_path, vllm_backend):
    p = write_prompts(tmp_path / "p.jsonl", 16)
    res = CliRunner().invoke(main, [
        "generate", "--prompts", str(p), "--rounds", "2", "--samples", "2", "--backend", "vllm",
        "--run-dir", str(tmp_path / "run"), "--max-tokens", "40", "--no-progress", "--seed", "3"])
    assert res.exit_code == 0, res.output
    out = rows(tmp_path)
    assert len(out) == 32 and len({r["id"] for r in out}) == 32
    ids = {p.id for p in load_constitution("default").principles}
    assert all(len(r["rounds"]) == 2 and {rd["principle_id"] for rd in r["rounds"]} <= ids for r in out)
    assert len({rd["principle_id"] for r in out for rd in r["rounds"]}) >= 4
    for r in out:
        assert META_KEYS <= set(r["meta"]) and r["meta"]["backend"] == "vllm"
        assert r["initial"] and r["final"] and r["meta"]["tokens"]["total"] > 0
    # the two samples of a prompt differ
    by_prompt = {}
    for r in out:
        by_prompt.setdefault(r["prompt"][-1]["content"], []).append(r["initial"])
    assert sum(len(set(v)) == 2 for v in by_prompt.values()) >= 12
    assert "rows written   32" in res.output


@pytest.mark.slow
def test_sigkill_after_first_chunk_then_resume(tmp_path):
    p = write_prompts(tmp_path / "p.jsonl", 12)
    cmd = [sys.executable, "-m", "cai.cli", "generate", "--prompts", str(p), "--rounds", "1", "--backend", "vllm",
           "--run-dir", str(tmp_path / "run"), "--chunk-size", "2", "--max-tokens", "48", "--no-progress"]
    out = tmp_path / "run" / "generations.jsonl"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if out.exists() and out.stat().st_size > 0:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its engine process
    proc.wait()
    first = list(read_rows(out))
    assert 0 < len(first) < 12
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    final = list(read_rows(out))
    assert len(final) == 12 == len({r["id"] for r in final})
    assert out.read_text().endswith("\n")
    assert f"skipped        {len(first)}" in res.stdout
