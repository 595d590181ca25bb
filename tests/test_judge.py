"""The judge: both orders, soft labels, ties; `cai judge` over a run and over outside pairs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cai.cli import main
from cai.config import GenerateConfig
from cai.constitution import load_constitution
from cai.generate import run_generate
from cai.judge import Judge, JudgeConfig, PairInput
from cai.pairs import judge_run
from cai.records import read_rows
from tests.scripted import ScriptedBackend

PROMPT = [{"role": "user", "content": "How do I stay safe when hiking alone?"}]
GOOD = "Tell someone your route, carry water and a map, and turn back if the weather changes."
BAD = "Who cares, just go. If you get lost that's your problem, idiot."


def items(n: int = 4):
    return [PairInput(key=f"k{i}", prompt=PROMPT, a=GOOD if i % 2 else BAD, b=BAD if i % 2 else GOOD) for i in range(n)]


def swap(it: PairInput) -> PairInput:
    return it.model_copy(update={"a": it.b, "b": it.a})


def check_swap_and_identical(backend, ensemble=1, tol=1e-9):
    j = Judge(backend, load_constitution("default"), JudgeConfig(ensemble=ensemble))
    its = items()
    v = j.compare(its)
    vs = j.compare([swap(i) for i in its])
    for a, b in zip(v, vs):
        assert abs(a.p_a - (1 - b.p_a)) <= tol
        assert len(a.judgements) == ensemble
    same = j.compare([PairInput(key="s", prompt=PROMPT, a=GOOD, b=GOOD)])[0]
    assert same.p_a == 0.5 and same.is_tie(0.0)
    return v


def test_swap_and_identical_scripted():
    v = check_swap_and_identical(ScriptedBackend(prefer="Tell someone"), ensemble=3)
    assert [round(x.p_a, 3) for x in v] == [0.1, 0.9, 0.1, 0.9]
    assert all(x.consistent for x in v)


def test_cot_is_clamped():
    j = Judge(ScriptedBackend(prefer="Tell someone"), load_constitution("default"), JudgeConfig(cot=True))
    v = j.compare(items(2))
    assert all(0.4 <= x.p_first <= 0.6 and 0.4 <= x.p_second <= 0.6 for x in v)
    assert v[1].p_a == pytest.approx(0.6)


def test_judge_run_revision_strategy_and_resume(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text("".join(json.dumps({"prompt": f"q{i}"}) + "\n" for i in range(5)))
    run = tmp_path / "run"
    run_generate(GenerateConfig(prompts=str(p), rounds=1, run_dir=str(run), model="m"), backend=ScriptedBackend(), progress=False)
    j = Judge(ScriptedBackend(prefer="GOOD"), load_constitution("default"))
    s = judge_run(run, j, "revision", threshold=0.05, progress=False)
    prefs = list(read_rows(run / "preferences.jsonl"))
    assert s.judged == 5 and len(prefs) == 5 and s.flips == 0 and s.consistent == 5
    for r in prefs:
        assert r["chosen"].startswith("GOOD") and r["chosen"] != r["rejected"]
        assert r["p_chosen"] > 0.5 and r["judgements"][0]["question_id"]
        assert {"judge_model", "backend", "mode", "code_version"} <= set(r["meta"])
    # an interrupted judge resumes: drop two rows and rerun
    lines = (run / "preferences.jsonl").read_text().splitlines(keepends=True)
    (run / "preferences.jsonl").write_text("".join(lines[:3]) + lines[3][:20])
    s2 = judge_run(run, j, "revision", threshold=0.05, progress=False)
    again = list(read_rows(run / "preferences.jsonl"))
    assert s2.skipped == 3 and s2.judged == 2 and len(again) == 5 == len({r["id"] for r in again})


def test_judge_flips_when_judge_prefers_initial(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text(json.dumps({"prompt": "q"}) + "\n")
    run = tmp_path / "run"
    run_generate(GenerateConfig(prompts=str(p), rounds=1, run_dir=str(run), model="m"), backend=ScriptedBackend(), progress=False)
    s = judge_run(run, Judge(ScriptedBackend(prefer="answer 0"), load_constitution("default")), "revision",
                  threshold=0.05, progress=False)
    pref = next(read_rows(run / "preferences.jsonl"))
    assert s.flips == 1 and pref["chosen"].startswith("answer 0") and pref["meta"]["flipped"]


def test_samples_strategy_and_ties(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text("".join(json.dumps({"prompt": f"q{i}"}) + "\n" for i in range(3)))
    run = tmp_path / "run"
    run_generate(GenerateConfig(prompts=str(p), rounds=0, samples=3, run_dir=str(run), model="m"),
                 backend=ScriptedBackend(), progress=False)
    # the scripted judge prefers the sample numbered 2 over the others, 0/1 are a tie
    s = judge_run(run, Judge(ScriptedBackend(prefer="answer 2"), load_constitution("default")), "samples",
                  threshold=0.05, progress=False)
    prefs = list(read_rows(run / "preferences.jsonl"))
    assert s.judged == 3 and len(prefs) == 3
    assert all(r["chosen"].startswith("answer 2") and r["strategy"] == "samples" for r in prefs)


def test_pairs_file_cli_scripted(tmp_path, monkeypatch):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"id": 1, "prompt": "hi", "response_a": "same", "response_b": "same"}) + "\n")
    import cai.backends as backends

    monkeypatch.setattr(backends, "load_backend", lambda *a, **k: ScriptedBackend())
    res = CliRunner().invoke(main, ["judge", "--pairs", str(pairs), "--out", str(tmp_path / "o.jsonl"), "--no-progress"])
    assert res.exit_code == 0, res.output
    row = json.loads((tmp_path / "o.jsonl").read_text())
    assert row["winner"] == "tie" and row["p_a"] == 0.5 and row["question_ids"]
    assert "ties" in res.output


def test_pairs_file_bad_row(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"id": 1, "prompt": "hi", "response_a": "x"}) + "\n")
    res = CliRunner().invoke(main, ["judge", "--pairs", str(pairs), "--out", str(tmp_path / "o.jsonl")])
    assert res.exit_code == 2 and "line 1" in res.output and "response_b" in res.output


# ---------------------------------------------------------------- real engines
@pytest.mark.slow
def test_real_judges_swap_identical_and_agree(vllm_backend, hf_backend):
    v = check_swap_and_identical(vllm_backend, tol=0.02)  # batch composition may nudge bf16 sums
    h = check_swap_and_identical(hf_backend, tol=0.02)
    # vLLM and transformers judges agree on p_a within this tolerance on the same pairs
    for a, b in zip(v, h):
        assert abs(a.p_a - b.p_a) < 0.1


@pytest.mark.slow
def test_real_pairs_file_cli(tmp_path, vllm_backend):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"id": f"p{i}", "prompt": PROMPT, "response_a": a, "response_b": b}) + "\n"
                             for i, (a, b) in enumerate([(GOOD, BAD), (BAD, GOOD), (GOOD, GOOD)])))
    out = tmp_path / "out.jsonl"
    res = CliRunner().invoke(main, ["judge", "--pairs", str(pairs), "--out", str(out), "--backend", "vllm",
                                    "--ensemble", "2", "--no-progress"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 3
    for r in rows:
        assert {"p_a", "p_first", "p_second", "winner", "question_ids"} <= set(r) and len(r["question_ids"]) == 2
        assert 0 <= r["p_a"] <= 1
    assert next(r for r in rows if r["id"] == "p2")["winner"] == "tie"
    assert "position consistency" in res.output
