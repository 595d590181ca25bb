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
from cai.errors import UsageError
from cai.prompts import Templates
from cai.records import RunFolder, read_rows
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
    assert all(x.same_winner(0.05) for x in v)


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
    s = judge_run(run, j, "revision", progress=False)
    prefs = list(read_rows(run / "preferences.jsonl"))
    assert s.judged == 5 and len(prefs) == 5 and s.flips == 0 and s.consistent == 5
    for r in prefs:
        assert r["chosen"].startswith("GOOD") and r["chosen"] != r["rejected"]
        assert r["p_chosen"] > 0.5 and r["judgements"][0]["question_id"]
        assert {"judge_model", "backend", "mode", "code_version"} <= set(r["meta"])
    # an interrupted judge resumes: drop two rows and rerun
    lines = (run / "preferences.jsonl").read_text().splitlines(keepends=True)
    (run / "preferences.jsonl").write_text("".join(lines[:3]) + lines[3][:20])
    s2 = judge_run(run, j, "revision", progress=False)
    again = list(read_rows(run / "preferences.jsonl"))
    assert s2.skipped == 3 and s2.judged == 2 and len(again) == 5 == len({r["id"] for r in again})


def test_judge_flips_when_judge_prefers_initial(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text(json.dumps({"prompt": "q"}) + "\n")
    run = tmp_path / "run"
    run_generate(GenerateConfig(prompts=str(p), rounds=1, run_dir=str(run), model="m"), backend=ScriptedBackend(), progress=False)
    s = judge_run(run, Judge(ScriptedBackend(prefer="answer 0"), load_constitution("default")), "revision",
                  progress=False)
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
                  progress=False)
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
    # the summary issue 4 asks for, flips included; pairs mode writes no ties.jsonl, so it says where ties are
    assert "flips                0  (pairs mode compares" in res.output
    assert 'winner "tie" in' in res.output and "ties.jsonl" not in res.output
    assert not (tmp_path / "ties.jsonl").exists()


def test_pairs_file_bad_row(tmp_path, monkeypatch):
    import cai.backends as backends

    def no_engine(*a, **k):
        raise AssertionError("a bad pairs file is refused before any engine starts")

    monkeypatch.setattr(backends, "load_backend", no_engine)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"id": 1, "prompt": "hi", "response_a": "x"}) + "\n")
    res = CliRunner().invoke(main, ["judge", "--pairs", str(pairs), "--out", str(tmp_path / "o.jsonl")])
    assert res.exit_code == 2 and "line 1" in res.output and "response_b" in res.output


def _run(tmp_path, n=5, rounds=1):
    p = tmp_path / "p.jsonl"
    p.write_text("".join(json.dumps({"prompt": f"q{i}"}) + "\n" for i in range(n)))
    run = tmp_path / "run"
    run_generate(GenerateConfig(prompts=str(p), rounds=rounds, run_dir=str(run), model="m"), backend=ScriptedBackend(),
                 progress=False)
    return run


def test_position_consistency_leaves_identical_pairs_out(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    rows = [("same", "same"), ("plain", "GOOD two"), ("GOOD one", "plain")]
    pairs.write_text("".join(json.dumps({"id": i, "prompt": "hi", "response_a": a, "response_b": b}) + "\n"
                             for i, (a, b) in enumerate(rows)))
    from cai.pairs import judge_pairs_file

    j = Judge(ScriptedBackend(prefer="GOOD"), load_constitution("default"))
    s = judge_pairs_file(pairs, tmp_path / "o.jsonl", j, progress=False)
    # pair 0 is identical (a tie without asking the judge); the scripted judge is consistent on the others
    assert (s.judged, s.identical, s.consistent) == (3, 1, 2)
    assert s.position_consistency == 1.0  # of the 2 pairs the judge was asked about, not 2/3
    assert "100.0%" in "\n".join(s.lines()) and "1 identical pairs left out" in "\n".join(s.lines())


def test_rejudging_with_other_settings_needs_force_new(tmp_path):
    run = _run(tmp_path)
    default = Judge(ScriptedBackend(prefer="GOOD"), load_constitution("default"))
    judge_run(run, default, "revision", progress=False)
    (run / "ties.jsonl").write_text(json.dumps({"id": "t1", "tie": True}) + "\n")  # a tie from that judging
    recorded = RunFolder(run).info()["judge"]
    assert (recorded["ensemble"], recorded["strategy"], recorded["threshold"]) == (1, "revision", 0.05)

    ens2 = Judge(ScriptedBackend(prefer="GOOD"), load_constitution("default"), JudgeConfig(ensemble=2))
    with pytest.raises(UsageError, match="ensemble: 1 -> 2.*--force-new"):
        judge_run(run, ens2, "revision", progress=False)
    assert len(list(read_rows(run / "preferences.jsonl"))) == 5  # nothing appended
    # the same settings resume as before
    assert judge_run(run, default, "revision", progress=False).skipped == 5
    # --force-new starts over: one set of pairs, the old ties gone, the new settings recorded
    s = judge_run(run, ens2, "revision", progress=False, force_new=True)
    prefs = list(read_rows(run / "preferences.jsonl"))
    assert s.judged == 5 and len(prefs) == 5 and all(len(r["judgements"]) == 2 for r in prefs)
    assert not list(read_rows(run / "ties.jsonl"))
    assert RunFolder(run).info()["judge"]["ensemble"] == 2


def test_judge_cli_force_new_and_config_templates(tmp_path, monkeypatch):
    import cai.backends as backends

    monkeypatch.setattr(backends, "load_backend", lambda *a, **k: ScriptedBackend(prefer="GOOD"))
    run = _run(tmp_path)
    assert CliRunner().invoke(main, ["judge", str(run), "--no-progress"]).exit_code == 0
    res = CliRunner().invoke(main, ["judge", str(run), "--ensemble", "2", "--no-progress"])
    assert res.exit_code == 2 and "--force-new" in res.output
    res = CliRunner().invoke(main, ["judge", str(run), "--ensemble", "2", "--force-new", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert len(list(read_rows(run / "preferences.jsonl"))) == 5

    # `templates` in a --config file reaches the judge: this judge.j2 shows the responses swapped,
    # so the scripted judge (which prefers GOOD) now picks response_b
    tdir = tmp_path / "tpl"
    tdir.mkdir()
    (tdir / "judge.j2").write_text("{{ question }}\n\n(A) {{ response_b }}\n\n(B) {{ response_a }}\n\nAnswer with (A) or (B).\n")
    cfg = tmp_path / "judge.yaml"
    cfg.write_text(f"templates: {tdir}\n")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"id": 1, "prompt": "hi", "response_a": "GOOD answer", "response_b": "bad answer"}) + "\n")
    for extra, winner in (([], "a"), (["--config", str(cfg)], "b")):
        out = tmp_path / f"o{len(extra)}.jsonl"
        res = CliRunner().invoke(main, ["judge", "--pairs", str(pairs), "--out", str(out), "--no-progress", *extra])
        assert res.exit_code == 0, res.output
        assert json.loads(out.read_text())["winner"] == winner


def test_revision_strategy_without_rounds_is_a_clear_usage_error(tmp_path, monkeypatch):
    run = _run(tmp_path, n=3, rounds=0)
    with pytest.raises(UsageError, match="none of the 3 generations has a revision round"):
        judge_run(run, Judge(ScriptedBackend(), load_constitution("default")), "revision",
                  progress=False)
    import cai.backends as backends

    monkeypatch.setattr(backends, "load_backend", lambda *a, **k: ScriptedBackend())
    res = CliRunner().invoke(main, ["judge", str(run), "--no-progress"])
    assert res.exit_code == 2 and "--rounds" in res.output
    assert not (run / "preferences.jsonl").exists()


def test_force_new_generation_clears_ties_too(tmp_path):
    run = _run(tmp_path, n=2)
    (run / "ties.jsonl").write_text(json.dumps({"id": "t"}) + "\n")
    (run / "preferences.jsonl").write_text(json.dumps({"id": "p"}) + "\n")
    folder = RunFolder(run)
    folder.start({"model": "other"}, identity=("model",), force_new=True)
    assert not (run / "ties.jsonl").exists() and not (run / "preferences.jsonl").exists()


def test_resumed_generation_keeps_the_judge_settings(tmp_path):
    run = _run(tmp_path, n=2)
    judge_run(run, Judge(ScriptedBackend(), load_constitution("default")), "revision", progress=False)
    info = RunFolder(run).info()
    RunFolder(run).start({k: v for k, v in info.items() if k != "judge"}, identity=("model",), force_new=False)
    assert RunFolder(run).info()["judge"] == info["judge"]


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
    # A small labelled file keeps the calibration short (the bundled sets run in the eval test).
    cal = tmp_path / "cal.jsonl"
    cal.write_text("".join(json.dumps({"id": f"c{i}", "prompt": PROMPT, "response_a": a, "response_b": b,
                                       "label": "a" if a == GOOD else "b"}) + "\n"
                           for i, (a, b) in enumerate([(GOOD, BAD), (BAD, GOOD)])))
    res = CliRunner().invoke(main, ["judge", "--pairs", str(pairs), "--out", str(out), "--backend", "vllm",
                                    "--ensemble", "2", "--no-progress", "--calibration", str(cal)])
    assert res.exit_code == 0, res.output
    saved = json.loads((tmp_path / "out.jsonl.calibration.json").read_text())
    assert saved["judge_calibration"]["n"] == 2 and saved["judge_calibration"]["source"] == str(cal)
    assert saved["judge"]["ensemble"] == 2 and "calibration" in res.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 3
    for r in rows:
        assert {"p_a", "p_first", "p_second", "winner", "question_ids"} <= set(r) and len(r["question_ids"]) == 2
        assert 0 <= r["p_a"] <= 1
    assert next(r for r in rows if r["id"] == "p2")["winner"] == "tie"
    assert "position consistency" in res.output


def test_rejudging_through_an_edited_template_needs_force_new(tmp_path):
    run = _run(tmp_path)
    judge_run(run, Judge(ScriptedBackend(prefer="GOOD"), load_constitution("default")), "revision",
              progress=False)
    first_ids = {r["id"] for r in read_rows(run / "preferences.jsonl")}
    tdir = tmp_path / "tpl"
    tdir.mkdir()
    (tdir / "judge.j2").write_text("{{ question }}\n\n(A) {{ response_a }}\n\n(B) {{ response_b }}\n\nPick (A) or (B).\n")
    edited = Judge(ScriptedBackend(prefer="GOOD"), load_constitution("default"), templates=Templates(tdir))
    with pytest.raises(UsageError, match="templates: .*--force-new"):
        judge_run(run, edited, "revision", progress=False)
    assert len(list(read_rows(run / "preferences.jsonl"))) == 5
    s = judge_run(run, edited, "revision", progress=False, force_new=True)
    assert s.judged == 5
    # the pair ids depend on the template, so no id of the first judging is reused
    assert not first_ids & {r["id"] for r in read_rows(run / "preferences.jsonl")}
    assert RunFolder(run).info()["judge"]["templates"] == edited.templates.fingerprint(("judge.j2",))
