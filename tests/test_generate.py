"""`cai generate`: the critique → revision loop, its records, resume and crash safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cai.backends.base import Completion
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


class BlockingBackend(ScriptedBackend):
    """Blocks inside its `after`-th chat call the way transformers does while generating a batch:
    no await, so only a signal can get the run out of it."""

    def __init__(self, after: int):
        super().__init__()
        self.after, self.blocking, self.interrupted_inside = after, threading.Event(), False

    def chat(self, conversations, params):
        if len(self.calls) < self.after:
            return super().chat(conversations, params)
        self.blocking.set()
        try:
            for _ in range(600):  # 60 s at most, should the interrupt never come
                time.sleep(0.1)
        except KeyboardInterrupt:
            self.interrupted_inside = True
            raise
        return super().chat(conversations, params)


def test_ctrl_c_stops_inside_a_blocking_engine_call_and_keeps_finished_rows(tmp_path):
    c = cfg(tmp_path, n=6, chunk_size=2, samples=1, rounds=1)
    be = BlockingBackend(after=4)  # chunk 1 (answer, critique, revision) done, chunk 2 blocks
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=lambda: be.blocking.wait(60) and os.kill(os.getpid(), signal.SIGINT), daemon=True).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_generate(c, backend=be, progress=False)
    finally:
        signal.signal(signal.SIGINT, old)
    # the first Ctrl-C got out of the engine call itself, not only at the next await
    assert be.interrupted_inside
    assert signal.getsignal(signal.SIGINT) is old
    saved = rows(tmp_path)
    assert len(saved) == 2
    s = run_generate(c, backend=ScriptedBackend(), progress=False)
    assert s.skipped == 2 and len(rows(tmp_path)) == 6 == len({r["id"] for r in rows(tmp_path)})


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
    # the row's number in its own words (the tmp path alone may hold a "2") and the field at fault
    assert f"{p}: line 2: prompt: must be a string or a list of messages" in res.output
    assert not (tmp_path / "r" / "generations.jsonl").exists()


def test_bad_constitution_names_file_line_field(tmp_path):
    c = tmp_path / "c.yaml"
    c.write_text("name: x\nversion: '1'\ndescription: d\nprinciples:\n  - id: a\n    critique: c\n    revision: r\n    weight: -1\ncomparisons:\n  - id: q\n    question: which?\n")
    res = CliRunner().invoke(main, ["generate", "--constitution", str(c), "--run-dir", str(tmp_path / "r")])
    assert res.exit_code == 2
    assert "c.yaml:8" in res.output and "weight" in res.output


GOOD_YAML = """\
name: small
version: "1.0"
description: A small constitution.
principles:
  - id: harm
    critique: Point out anything harmful in your last response.
    revision: Rewrite your last response without the harmful parts.
    weight: 2
comparisons:
  - id: safer
    question: Which response is less harmful?
"""


@pytest.mark.parametrize("text, where", [
    # bad YAML: an unclosed flow list
    (GOOD_YAML.replace("comparisons:\n", "comparisons: [\n"), ":10: yaml: not valid YAML"),
    (GOOD_YAML.replace("    question: Which response is less harmful?\n", ""),
     ":10: comparisons[0].question: required field is missing"),
    (GOOD_YAML.replace("id: safer", "id: harm"), ":10: comparisons[0].id: duplicate id 'harm' (first used at line 5)"),
    (GOOD_YAML.replace("weight: 2", "weight: [2]"), ":8: principles[0].weight: must be a number"),
])
def test_malformed_constitution_exits_2_with_file_line_and_field(tmp_path, text, where):
    c = tmp_path / "c.yaml"
    c.write_text(text)
    res = CliRunner().invoke(main, ["generate", "--constitution", str(c), "--run-dir", str(tmp_path / "r"), "--no-progress"])
    assert res.exit_code == 2, res.output
    assert f"Error: {c}{where}" in res.output
    assert not (tmp_path / "r").exists()


class RecordingBackend(ScriptedBackend):
    """Keeps every conversation it was sent."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.seen: list[list[dict]] = []

    def chat(self, conversations, params):
        self.seen += [list(c) for c in conversations]
        return super().chat(conversations, params)


class FailingBackend(RecordingBackend):
    """Answers like ScriptedBackend, except that requests whose prompt mentions `marker` fail at
    `step` ("answer", "critique" or "revision") the way the openai backend reports a request
    that ran out of retries."""

    def __init__(self, marker: str, step: str):
        super().__init__()
        self.marker, self.step = marker, step

    def chat(self, conversations, params):
        out = super().chat(conversations, params)
        for i, conv in enumerate(conversations):
            last = conv[-1]["content"]
            step = ("revision" if "Reply with the rewritten response only" in last
                    else "critique" if "critique" in last.lower() else "answer")
            if step == self.step and any(self.marker in m["content"] for m in conv if m["role"] == "user"):
                out[i] = [Completion(text="", tokens=0, finish_reason="error", error="HTTP 503 from http://x: busy (6 attempts)")
                          for _ in out[i]]
        return out


INJECTION = "{{ ''.__class__ }}"


def test_template_injection_in_a_constitution_file_reaches_the_model_as_text(tmp_path):
    c = tmp_path / "inj.yaml"
    c.write_text(GOOD_YAML.replace("Point out anything harmful in your last response.",
                                   f"\"Point out {INJECTION} and {{% for x in y %}} in your last response.\""))
    notes: list[str] = []
    be = RecordingBackend()
    s = run_generate(cfg(tmp_path, constitution=str(c), n=2, samples=1, rounds=1), backend=be, progress=False,
                     log=notes.append)
    assert s.written == 2
    critiques = [conv[-1]["content"] for conv in be.seen if "critique only" in conv[-1]["content"]]
    assert len(critiques) == 2
    assert all(f"Point out {INJECTION} and {{% for x in y %}} in your last response." in t for t in critiques)
    # the run goes on, but says where the suspicious text is
    assert any(n.startswith(f"warning: {c}:6: principles[0].critique: contains template syntax") for n in notes), notes
    assert [r["rounds"][0]["principle_id"] for r in rows(tmp_path)] == ["harm", "harm"]


def test_template_injection_through_the_cli(tmp_path, monkeypatch):
    c = tmp_path / "inj.yaml"
    c.write_text(GOOD_YAML.replace("Point out anything harmful in your last response.", f'"{INJECTION}"'))
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    be = RecordingBackend()
    monkeypatch.setattr("cai.generate.load_backend", lambda *a, **k: be)
    res = CliRunner().invoke(main, ["generate", "--constitution", str(c), "--prompts", str(write_prompts(tmp_path / "p.jsonl", 1)),
                                    "--model", str(model), "--backend", "hf", "--rounds", "1",
                                    "--run-dir", str(tmp_path / "run"), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert f"{c}:6: principles[0].critique: contains template syntax" in res.output
    assert any(conv[-1]["content"].startswith(INJECTION + "\n") for conv in be.seen)


@pytest.mark.parametrize("step", ["answer", "critique", "revision"])
def test_failed_requests_are_not_written_and_are_retried(tmp_path, step):
    c = cfg(tmp_path, n=6, samples=2, rounds=2)
    notes: list[str] = []
    s = run_generate(c, backend=FailingBackend("(3)", step), progress=False, log=notes.append)
    out = rows(tmp_path)
    assert s.failed == 2 and s.written == len(out) == 10
    assert not any("(3)" in r["prompt"][-1]["content"] for r in out)
    failures = [n for n in notes if n.startswith("failed sample")]
    assert len(failures) == 2 and all("HTTP 503" in n and "not written" in n for n in failures)
    if step != "answer":
        assert all(f"round 1 {step}:" in n for n in failures)
    assert any("2 failed samples not written" in line for line in s.lines())
    # the rerun retries exactly the failed samples
    again = run_generate(c, backend=ScriptedBackend(), progress=False)
    assert again.failed == 0 and again.written == 2 and again.skipped == 10
    assert len(rows(tmp_path)) == 12


def test_failed_samples_make_the_cli_exit_1(tmp_path, monkeypatch):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    monkeypatch.setattr("cai.generate.load_backend", lambda *a, **k: FailingBackend("(1)", "critique"))
    args = ["generate", "--prompts", str(write_prompts(tmp_path / "p.jsonl", 3)), "--model", str(model),
            "--backend", "hf", "--rounds", "1", "--run-dir", str(tmp_path / "run"), "--no-progress"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1, res.output
    assert "failed         1" in res.output and "failed sample" in res.output
    assert len(rows(tmp_path)) == 2


def test_a_failed_start_leaves_the_run_folder_usable(tmp_path):
    run_dir = tmp_path / "run"
    res = CliRunner().invoke(main, ["generate", "--model", "bogus", "--run-dir", str(run_dir), "--no-progress"])
    assert res.exit_code == 2 and "unknown model 'bogus'" in res.output
    assert not (run_dir / "run.yaml").exists()
    # A run.yaml left by an older failed start, with no rows written: nothing to protect.
    run_dir.mkdir(exist_ok=True)
    (run_dir / "run.yaml").write_text("stage: generate\nmodel: bogus\nconstitution_sha256: x\nidentity_hash: y\n")
    (run_dir / "generations.jsonl").write_text("")
    s = run_generate(cfg(tmp_path), backend=ScriptedBackend(), progress=False)
    assert s.written == 12
    assert yaml.safe_load((run_dir / "run.yaml").read_text())["model"] == "scripted-model"
    # With rows on disk, another setup is still refused.
    from cai.errors import UsageError

    with pytest.raises(UsageError, match="different setup"):
        run_generate(cfg(tmp_path, model="other-model"), backend=ScriptedBackend(), progress=False)


def test_an_unusable_backend_setting_fails_before_the_run_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("CAI_OPENAI_BASE_URL", raising=False)
    res = CliRunner().invoke(main, ["generate", "--backend", "openai", "--run-dir", str(tmp_path / "r"), "--no-progress"])
    assert res.exit_code == 2 and "--base-url" in res.output
    monkeypatch.setenv("CAI_BACKEND", "bogus")
    res = CliRunner().invoke(main, ["generate", "--run-dir", str(tmp_path / "r"), "--no-progress"])
    assert res.exit_code == 2 and "unknown backend 'bogus' (from CAI_BACKEND)" in res.output
    assert not (tmp_path / "r").exists()


def test_run_yaml_holds_the_resolved_configuration(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    c = GenerateConfig(model="scripted-model", limit=2, rounds=1)
    s = run_generate(c, backend=ScriptedBackend(), progress=False)
    info = yaml.safe_load((s.run_dir / "run.yaml").read_text())
    from cai.inputs import default_prompts_path

    assert s.run_dir == Path("runs/default-scripted-model")
    assert info["config"]["backend"] == "scripted"
    assert info["config"]["prompts"] == str(default_prompts_path()) and Path(info["config"]["prompts"]).is_file()
    assert info["config"]["run_dir"] == "runs/default-scripted-model"
    assert None not in (info["config"]["backend"], info["config"]["prompts"], info["config"]["run_dir"])


def test_run_yaml_names_the_engine_and_the_model_folder(tmp_path, monkeypatch):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    monkeypatch.setattr("cai.generate.load_backend", lambda *a, **k: ScriptedBackend())
    monkeypatch.setenv("CAI_BACKEND", "hf")
    res = CliRunner().invoke(main, ["generate", "--prompts", str(write_prompts(tmp_path / "p.jsonl", 1)),
                                    "--model", str(model), "--rounds", "0", "--run-dir", str(tmp_path / "run"),
                                    "--no-progress"])
    assert res.exit_code == 0, res.output
    info = yaml.safe_load((tmp_path / "run" / "run.yaml").read_text())
    assert info["config"]["backend"] == "hf" and info["model_path"] == str(model.resolve())


def test_duplicate_prompts_are_reported(tmp_path):
    p = tmp_path / "dup.jsonl"
    lines = ["alpha", "beta", "alpha", "gamma", "beta", "alpha"]
    p.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in lines))
    s = run_generate(cfg(tmp_path, prompts=str(p), samples=2, rounds=1), backend=ScriptedBackend(), progress=False)
    assert s.duplicates == 3 and s.written == 6 == len(rows(tmp_path))
    # with the default --dedup exact, the dedup line counts them (once): no second line says it again
    assert any("3 of them identical" in line for line in s.lines())
    assert not any(line.startswith("duplicates ") for line in s.lines())
    none = run_generate(cfg(tmp_path, prompts=str(p), samples=2, rounds=1, dedup="none", run_dir=str(tmp_path / "n")),
                        backend=ScriptedBackend(), progress=False)
    assert "duplicates     3 duplicate prompts (same messages) written once" in none.lines()
    again = run_generate(cfg(tmp_path, prompts=str(p), samples=2, rounds=1), backend=ScriptedBackend(), progress=False)
    assert again.duplicates == 3 and again.skipped == 6 and again.written == 0


def test_unknown_recipe_key(tmp_path):
    r = tmp_path / "recipe.yaml"
    r.write_text("rounds: 1\nbogus: 3\n")
    res = CliRunner().invoke(main, ["generate", "--config", str(r)])
    assert res.exit_code == 2 and "bogus" in res.output


# ---------------------------------------------------------------- real engine
@pytest.mark.slow
def test_real_vllm_8_prompts_2_rounds_2_samples(tmp_path, vllm_backend):
    p = write_prompts(tmp_path / "p.jsonl", 8)
    res = CliRunner().invoke(main, [
        "generate", "--prompts", str(p), "--rounds", "2", "--samples", "2", "--backend", "vllm",
        "--run-dir", str(tmp_path / "run"), "--max-tokens", "24", "--no-progress", "--seed", "3"])
    assert res.exit_code == 0, res.output
    out = rows(tmp_path)
    assert len(out) == 16 and len({r["id"] for r in out}) == 16
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
    assert len(by_prompt) == 8 and sum(len(set(v)) == 2 for v in by_prompt.values()) >= 6
    assert "rows written   16" in res.output


def _descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _alive(pids: list[int]) -> list[int]:
    import psutil

    return [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


def _start_and_wait_for_rows(cmd, out: Path, more_than: int):
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if out.exists() and len(out.read_bytes().splitlines()) > more_than:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be stopped"
    engines = _descendants(proc.pid)
    assert engines, "no engine process found under the cai process"
    return proc, engines


def _wait_gone(pids: list[int], seconds: float = 20) -> list[int]:
    deadline = time.time() + seconds
    while _alive(pids) and time.time() < deadline:
        time.sleep(0.2)
    return _alive(pids)


@pytest.mark.slow
def test_sigkill_then_sigterm_then_resume(tmp_path, vllm_backend):
    """SIGKILL to the cai process alone: its engine process ends by itself, the rerun resumes. SIGTERM
    (a scheduler's preemption) stops the rerun like Ctrl-C: exit 143, rows kept, engine gone. The two
    stopped runs are processes of their own (each with its engine); the last rerun, which only has to
    finish the rows they left, runs the same command in this process on the shared engine."""
    p = write_prompts(tmp_path / "p.jsonl", 8)
    args = ["generate", "--prompts", str(p), "--rounds", "1", "--backend", "vllm", "--run-dir", str(tmp_path / "run"),
            "--chunk-size", "2", "--few-shot", "0", "--max-tokens", "24", "--no-progress"]
    cmd = [sys.executable, "-m", "cai.cli", *args]
    out = tmp_path / "run" / "generations.jsonl"
    proc, engines = _start_and_wait_for_rows(cmd, out, 0)
    os.kill(proc.pid, signal.SIGKILL)  # the CLI only: its engine must notice on its own
    proc.wait()
    assert _wait_gone(engines) == [], "the engine outlived the process that owned it"
    first = list(read_rows(out))
    assert 0 < len(first) < 8

    proc, engines = _start_and_wait_for_rows(cmd, out, len(first))
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    assert time.time() - t0 < 30 and "rerun the same command to resume" in err
    assert _wait_gone(engines) == []
    second = list(read_rows(out))
    assert len(first) < len(second) <= 8

    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    final = list(read_rows(out))
    assert len(final) == 8 == len({r["id"] for r in final})
    assert out.read_text().endswith("\n")
    assert f"skipped        {len(second)}" in res.output


@pytest.mark.slow
def test_real_policy_on_vllm_with_the_reviser_on_transformers(tmp_path, vllm_backend):
    """Both real engines in one process: vLLM answers, transformers critiques and revises."""
    c = cfg(tmp_path, n=3, samples=1, rounds=1, backend="vllm", model="smollm2-135m", reviser_model="smollm2-135m",
            reviser_backend="hf", few_shot=0, answer={"max_tokens": 16}, critique={"max_tokens": 12},
            revision={"max_tokens": 16})
    s = run_generate(c, progress=False)
    out = rows(tmp_path)
    assert s.written == 3 == len(out)
    for r in out:
        assert r["meta"]["backend"] == "vllm" and r["meta"]["reviser_backend"] == "hf"
        assert r["meta"]["reviser_model"] == "smollm2-135m"
        assert r["initial"] and r["rounds"][0]["critique"] and isinstance(r["rounds"][0]["flags"], list)
    info = yaml.safe_load((tmp_path / "run" / "run.yaml").read_text())
    assert info["config"]["reviser_backend"] == "hf" and set(info["flag_counts"]) >= {"truncated", "unchanged"}


@pytest.mark.slow
def test_real_vllm_over_long_prompt_is_a_bad_row(tmp_path, vllm_backend):
    """A 20,000-token prompt among ordinary ones: counted and skipped before the engine sees it."""
    p = tmp_path / "p.jsonl"
    rows_in = [{"prompt": f"Name a colour ({i})."} for i in range(4)]
    rows_in.insert(1, {"prompt": "Summarise this. " + "word " * 20000})
    p.write_text("".join(json.dumps(r) + "\n" for r in rows_in))
    c = GenerateConfig(prompts=str(p), rounds=1, run_dir=str(tmp_path / "run"), model="smollm2-135m",
                       backend="vllm", few_shot=0, on_bad_row="skip", answer={"max_tokens": 12},
                       critique={"max_tokens": 8}, revision={"max_tokens": 12})
    s = run_generate(c, backend=vllm_backend, progress=False)
    assert s.written == 4 and s.too_long == 1 and s.failed == 0
    assert len(rows(tmp_path)) == 4
