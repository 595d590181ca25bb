"""Data you can trust: flags through generate → export → train data, judge calibration, the floor,
judge_stats, the eval's `signal`, the reviser model. Scripted backends here; the real engines in
the slow tests at the end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cai.backends.base import Completion
from cai.judge.calibration import score
from cai.cli import main
from cai.config import GenerateConfig
from cai.constitution import load_constitution
from cai.export import build_rows, export
from cai.generate import run_generate
from cai.judge import Judge, JudgeConfig, PairVerdict
from cai.pairs import judge_pairs_file, judge_run
from cai.quality import excluding
from cai.records import read_rows
from tests.scripted import ScriptedBackend

LOOP = " ".join(["The request is not helpful."] * 7)


class FlakyReviser(ScriptedBackend):
    """Scripted, except that prompts marked LOOP get a looping revision and prompts marked LONG an
    answer and revisions cut at max_tokens."""

    def chat(self, conversations, params):
        out = super().chat(conversations, params)
        for conv, comps in zip(conversations, out):
            first_user = next(m["content"] for m in conv if m["role"] == "user" and "fact" in m["content"])
            last = conv[-1]["content"]
            for k, c in enumerate(comps):
                if "LOOP" in first_user and "Reply with the rewritten response only" in last:
                    comps[k] = Completion(text=LOOP, tokens=35, finish_reason="stop")
                elif "LONG" in first_user and "critique" not in last.lower():
                    comps[k] = c.model_copy(update={"finish_reason": "length"})
        return out


def prompts_file(path: Path, marks: list[str]) -> Path:
    path.write_text("".join(json.dumps({"prompt": f"Tell me a fact number {i} {m}".strip()}) + "\n"
                            for i, m in enumerate(marks)))
    return path


@pytest.fixture
def flagged_run(tmp_path):
    p = prompts_file(tmp_path / "p.jsonl", ["", "LOOP", "LONG", ""])
    run = tmp_path / "run"
    s = run_generate(GenerateConfig(prompts=str(p), rounds=2, run_dir=str(run), model="m"),
                     backend=FlakyReviser(), progress=False)
    return run, s


def test_flags_are_recorded_per_round_and_row(flagged_run):
    run, s = flagged_run
    rows = {r["prompt"][0]["content"].split()[-1]: r for r in read_rows(run / "generations.jsonl")}
    assert rows["LOOP"]["flags"] == ["repetition", "unchanged"]
    assert all("repetition" in rd["flags"] for rd in rows["LOOP"]["rounds"])
    assert "unchanged" in rows["LOOP"]["rounds"][1]["flags"]  # the second loop equals the first
    assert rows["LONG"]["initial_flags"] == ["truncated"] and "truncated" in rows["LONG"]["flags"]
    # the scripted reviser gives the same text in both rounds: unchanged, which excludes nothing
    assert rows["0"]["flags"] == ["unchanged"] and excluding(rows["3"]["flags"]) == []
    # critique findings are kept apart: "critique of turn 3" names nothing from the answer
    assert "critique_vague" in rows["0"]["rounds"][0]["flags"] and "critique_vague" not in rows["0"]["flags"]
    info = yaml.safe_load((run / "run.yaml").read_text())
    assert info["flag_counts"] == {"truncated": 1, "repetition": 1, "echo": 0, "meta": 0, "empty": 0, "unchanged": 4}
    line = next(x for x in s.lines() if x.startswith("flags"))
    assert "truncated 1" in line and "echo 0" in line and "empty 0" in line
    assert any("2 of 4 rows have a flagged final answer" in x for x in s.lines())


def test_export_leaves_flagged_rows_out_and_keep_flagged_keeps_them(flagged_run, tmp_path):
    run, _ = flagged_run
    stats = export(run, "sft", "jsonl", tmp_path / "out" / "sft.jsonl")
    assert stats["rows"] == 2
    assert stats["left_out"].flagged == 2 and stats["left_out"].by_flag == {"repetition": 1, "truncated": 1}
    card = (tmp_path / "out" / "README.md").read_text()
    assert "2 left out: flagged by the quality checks (repetition 1, truncated 1)" in card
    res = CliRunner().invoke(main, ["export", str(run), "--format", "sft", "--out", str(tmp_path / "k.jsonl"),
                                    "--keep-flagged"])
    assert res.exit_code == 0, res.output
    assert len((tmp_path / "k.jsonl").read_text().splitlines()) == 4
    assert "2 flagged rows kept" in (tmp_path / "README.md").read_text()
    # every round of a flagged row but the flagged ones
    all_rounds = build_rows(run, "sft", all_rounds=True)
    assert len(all_rounds) == 4 and not any(r["source_id"] == "LOOP" for r in all_rounds)


def test_unchanged_alone_never_excludes(tmp_path):
    class Stubborn(ScriptedBackend):
        def chat(self, conversations, params):
            out = super().chat(conversations, params)
            for conv, comps in zip(conversations, out):
                if "Reply with the rewritten response only" in conv[-1]["content"]:
                    answer = conv[-4]["content"]  # the answer the critique was about
                    comps[0] = Completion(text=answer, tokens=3)
            return out

    p = prompts_file(tmp_path / "p.jsonl", [""])
    run_generate(GenerateConfig(prompts=str(p), rounds=1, run_dir=str(tmp_path / "run"), model="m"),
                 backend=Stubborn(), progress=False)
    (row,) = read_rows(tmp_path / "run" / "generations.jsonl")
    assert row["flags"] == ["unchanged"]
    assert len(build_rows(tmp_path / "run", "sft")) == 1


def test_dpo_export_drops_pairs_with_a_flagged_chosen_answer(flagged_run, tmp_path):
    run, _ = flagged_run
    # The judge prefers the answer with "fact number 1" in it: the LOOP prompt's pair is flipped to
    # its (unflagged) initial answer; every other pair has the final revision chosen.
    judge_run(run, Judge(ScriptedBackend(prefer="GOOD"), load_constitution("default")), "revision",
              progress=False)
    prefs = list(read_rows(run / "preferences.jsonl"))
    gens = list(read_rows(run / "generations.jsonl"))
    flagged = ({(g["id"], g["final"]) for g in gens if excluding(g["flags"])}
               | {(g["id"], g["initial"]) for g in gens if excluding(g["initial_flags"])})
    rows = build_rows(run, "dpo")
    ok = [p["id"] for p in prefs if (p["source_ids"][0], p["chosen"]) not in flagged]
    assert 0 < len(ok) < len(prefs) and [r["id"] for r in rows] == ok
    assert len(build_rows(run, "dpo", keep_flagged=True)) == len(prefs)


def test_filter_judged_keeps_the_revisions_the_judge_preferred(tmp_path):
    p = prompts_file(tmp_path / "p.jsonl", ["", "", "", ""])
    run = tmp_path / "run"
    run_generate(GenerateConfig(prompts=str(p), rounds=1, run_dir=str(run), model="m"), backend=ScriptedBackend(),
                 progress=False)
    with pytest.raises(Exception, match="not judged yet"):
        build_rows(run, "sft", filter="judged")
    class Choosy(ScriptedBackend):
        """Prefers the revisions (GOOD), except for prompt 1, where it prefers the initial answer."""

        def choice_logprobs(self, conversations, assistant_prefix, options):
            out = []
            for conv in conversations:
                self.prefer = "answer 0" if "number 1" in conv[-1]["content"] else "GOOD"
                out += super().choice_logprobs([conv], assistant_prefix, options)
            return out

    judge_run(run, Judge(Choosy(), load_constitution("default")), "revision", progress=False)
    res = CliRunner().invoke(main, ["export", str(run), "--format", "sft", "--filter", "judged",
                                    "--out", str(tmp_path / "f.jsonl")])
    assert res.exit_code == 0, res.output
    kept = [json.loads(x) for x in (tmp_path / "f.jsonl").read_text().splitlines()]
    assert len(kept) == 3 and not any("number 1" in r["messages"][0]["content"] for r in kept)
    assert "1 left out: the judge did not prefer" in res.output
    assert "rejection-sampled SFT" in (tmp_path / "README.md").read_text()


# ---------------------------------------------------------------- calibration

def labelled(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


CAL_ROWS = [
    # scripted judge prefers GOOD: right, wrong, tie (neither), tie (identical)
    {"id": "c1", "prompt": "q1", "response_a": "GOOD and long answer", "response_b": "bad", "label": "a"},
    {"id": "c2", "prompt": "q2", "response_a": "meh", "response_b": "GOOD but a longer one", "label": "a"},
    {"id": "c3", "prompt": "q3", "response_a": "one", "response_b": "two", "label": "b"},
    {"id": "c4", "prompt": "q4", "response_a": "same", "response_b": "same", "label": "a"},
]


def test_calibration_figures_by_hand(tmp_path):
    cal = labelled(tmp_path / "cal.jsonl", CAL_ROWS)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"id": "x", "prompt": "hi", "response_a": "GOOD", "response_b": "no"}) + "\n")
    out = tmp_path / "o.jsonl"
    s = judge_pairs_file(pairs, out, Judge(ScriptedBackend(), load_constitution("default")),
                         progress=False, calibration=str(cal))
    # agreement (1 + 0 + 0.5 + 0.5) / 4; consistency: the 3 non-identical pairs all name the same winner in
    # both orders (c3 is 0.5 in both, no winner either way); longer wins: c1 (longer won), c2 (longer won)
    c = s.calibration
    assert (c["agreement"], c["position_consistency"], c["longer_wins"], c["n"], c["ties"]) == (0.5, 1.0, 1.0, 4, 2)
    assert c["below_floor"] and c["sha256"] and c["source"] == str(cal)
    saved = json.loads((tmp_path / "o.jsonl.calibration.json").read_text())
    assert saved["judge_calibration"]["agreement"] == 0.5 and saved["judge_stats"]["decided"] == 1
    # the same figure as judging the calibration file with --pairs and scoring its winners
    judge_pairs_file(cal, tmp_path / "c.jsonl", Judge(ScriptedBackend(), load_constitution("default")),
                     progress=False)
    winners = {r["id"]: r["winner"] for r in read_rows(tmp_path / "c.jsonl")}
    by_hand = sum(0.5 if winners[r["id"]] == "tie" else float(winners[r["id"]] == r["label"]) for r in CAL_ROWS) / 4
    assert by_hand == c["agreement"]


def test_score_is_pure():
    v = PairVerdict(p_a=0.8, p_first=0.9, p_second=0.7, judgements=[])
    rows = [{"label": "a", "response_a": "short", "response_b": "much longer"}]
    f = score(rows, [v], 0.05, source="s", sha256="h")
    assert f.agreement == 1.0 and f.longer_wins == 0.0 and f.position_consistency == 1.0


def test_floor_paragraph_and_strict(tmp_path, monkeypatch):
    import cai.backends as backends

    monkeypatch.setattr(backends, "load_backend", lambda *a, **k: ScriptedBackend())
    cal = labelled(tmp_path / "cal.jsonl", CAL_ROWS)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"id": 1, "prompt": "hi", "response_a": "GOOD", "response_b": "x"}) + "\n")
    args = ["judge", "--pairs", str(pairs), "--calibration", str(cal), "--no-progress"]
    res = CliRunner().invoke(main, args + ["--out", str(tmp_path / "o.jsonl")])
    assert res.exit_code == 0, res.output
    assert "BELOW THE FLOOR" in res.output and "--judge-model" in res.output and "close to chance" in res.output
    res = CliRunner().invoke(main, args + ["--out", str(tmp_path / "s.jsonl"), "--strict"])
    assert res.exit_code == 1 and "--strict" in res.output
    assert not (tmp_path / "s.jsonl").exists()
    # a floor the judge clears: no paragraph
    res = CliRunner().invoke(main, args + ["--out", str(tmp_path / "m.jsonl"), "--min-agreement", "0.5"])
    assert res.exit_code == 0 and "BELOW THE FLOOR" not in res.output
    # a calibration row without its label: exit 2, file and row named, before any engine starts
    bad = labelled(tmp_path / "bad.jsonl", [{**CAL_ROWS[0], "label": "left"}])
    res = CliRunner().invoke(main, ["judge", "--pairs", str(pairs), "--out", str(tmp_path / "b.jsonl"),
                                    "--calibration", str(bad)])
    assert res.exit_code == 2 and "bad.jsonl: row 1" in res.output and "label" in res.output


class CountingJudge(ScriptedBackend):
    def __init__(self):
        super().__init__()
        self.asked = 0

    def choice_logprobs(self, conversations, assistant_prefix, options):
        self.asked += len(conversations)
        return super().choice_logprobs(conversations, assistant_prefix, options)


def test_run_calibration_is_recorded_reused_and_in_the_cards(tmp_path):
    p = prompts_file(tmp_path / "p.jsonl", ["", "", ""])
    run = tmp_path / "run"
    run_generate(GenerateConfig(prompts=str(p), rounds=1, run_dir=str(run), model="m"), backend=ScriptedBackend(),
                 progress=False)
    cal = labelled(tmp_path / "cal.jsonl", CAL_ROWS)
    be = CountingJudge()
    s = judge_run(run, Judge(be, load_constitution("default")), "revision", progress=False,
                  calibration=str(cal))
    info = yaml.safe_load((run / "run.yaml").read_text())
    assert info["judge_calibration"]["agreement"] == 0.5 and info["judge_calibration"]["n"] == 4
    # the GOOD revisions always win and are shorter than the initial answers here; the scripted judge
    # names the same winner in both orders, so the answer shown first wins half the single-order verdicts
    assert info["judge_stats"] == {"decided": 3, "longer_wins": 0.0, "first_wins": 0.5}
    assert any("calibration" in line and "0.500" in line for line in s.lines())
    asked = be.asked
    s2 = judge_run(run, Judge(be, load_constitution("default")), "revision", progress=False,
                   calibration=str(cal))
    assert be.asked == asked and s2.calibration["reused"]  # nothing judged again, calibration included
    export(run, "dpo", "jsonl", tmp_path / "d" / "dpo.jsonl")
    card = (tmp_path / "d" / "README.md").read_text()
    assert "Judge calibration" in card and "below the floor" in card
    row = json.loads((tmp_path / "d" / "dpo.jsonl").read_text().splitlines()[0])
    assert row["judge_agreement"] == 0.5


# ---------------------------------------------------------------- eval: signal both ways

def test_eval_signal_with_a_strong_and_a_chance_judge(tmp_path, monkeypatch):
    from tests.test_evaluate import FakeModel

    monkeypatch.setattr("cai.evaluate.load_backend", lambda name, model, **o: FakeModel(model))
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"HARM {i}", "category": "weapons"}) + "\n" for i in range(3))
                       + "".join(json.dumps({"prompt": f"SAFE {i}", "category": "helpful"}) + "\n" for i in range(3)))
    good = [{"id": f"g{i}", "prompt": "q", "response_a": "GOOD answer" if i % 2 else "plain",
             "response_b": "plain" if i % 2 else "GOOD answer", "label": "a" if i % 2 else "b"} for i in range(6)]
    refusals = tmp_path / "r.jsonl"
    refusals.write_text("".join(json.dumps(r) + "\n" for r in [
        {"prompt": "p", "answer": "I cannot do that.", "refuses": True},
        {"prompt": "p", "answer": "Sure: here it is.", "refuses": False}]))

    def run(cal_rows, out):
        cal = labelled(tmp_path / f"{out}.jsonl", cal_rows)
        res = CliRunner().invoke(main, ["eval", "--model", "model-a", "--baseline", "model-b", "--prompts",
                                        str(prompts), "--out", str(tmp_path / out), "--no-progress",
                                        "--calibration", str(cal), "--refusal-calibration", str(refusals)])
        assert res.exit_code == 0, res.output
        return json.loads((tmp_path / out / "metrics.json").read_text()), res.output

    m, out = run(good, "strong")
    assert m["signal"] is True and m["signal_reasons"] == []
    rel = m["judge_reliability"]
    assert rel["calibration"]["agreement"] == 1.0 and rel["refusal_reader"] == "model"
    assert rel["refusal_calibration"]["model"]["agreement"] == 1.0 and rel["position_consistency"] == 1.0
    assert "no signal" not in out and "win rate model-a over model-b: 1.000" in out

    wrong = [{**r, "label": "b" if r["label"] == "a" else "a"} for r in good]
    m, out = run(wrong, "chance")
    assert m["signal"] is False and "under the floor" in m["signal_reasons"][0]
    assert "no signal" in out and "noise, not a finding" in out
    assert (tmp_path / "chance" / "report.md").read_text().splitlines()[2].startswith("**No signal.**")


def test_refusal_reader_falls_back_to_phrases_below_the_floor():
    from cai.evaluate import choose_refusal_reader

    assert choose_refusal_reader({"model": {"agreement": 0.45}}, 0.6) == "phrases"
    assert choose_refusal_reader({"model": {"agreement": 0.8}}, 0.6) == "model"
    assert choose_refusal_reader(None, 0.6) == "phrases"


# ---------------------------------------------------------------- the reviser model

class Policy(ScriptedBackend):
    name, model = "policy-engine", "policy"


class Critic(ScriptedBackend):
    name, model = "critic-engine", "critic"

    def chat(self, conversations, params):
        out = super().chat(conversations, params)
        return [[c.model_copy(update={"text": "CRITIC " + c.text}) for c in comps] for comps in out]


def test_reviser_writes_critiques_and_revisions(tmp_path):
    p = prompts_file(tmp_path / "p.jsonl", ["", ""])
    policy, critic = Policy(), Critic()
    base = dict(prompts=str(p), rounds=2, model="policy", run_dir=str(tmp_path / "run"))
    run_generate(GenerateConfig(**base, reviser_model="critic"), backend=policy, reviser=critic, progress=False)
    rows = list(read_rows(tmp_path / "run" / "generations.jsonl"))
    assert all(r["initial"].startswith("answer") for r in rows)
    assert all(rd["critique"].startswith("CRITIC") and rd["revision"].startswith("CRITIC") for r in rows
               for rd in r["rounds"])
    assert [k for k, _ in policy.calls] == ["chat"] and len(critic.calls) == 4
    assert rows[0]["meta"]["reviser_model"] == "critic" and rows[0]["meta"]["model"] == "policy"
    # the reviser is part of the record ids: another reviser on the same folder is another run
    res = run_generate(GenerateConfig(**base, reviser_model="critic"), backend=Policy(), reviser=Critic(),
                       progress=False)
    assert res.skipped == 2
    with pytest.raises(Exception, match="different setup"):
        run_generate(GenerateConfig(**base, reviser_model="other"), backend=Policy(), reviser=Critic(), progress=False)


def test_two_local_vllm_engines_are_refused_with_exit_2(tmp_path):
    p = prompts_file(tmp_path / "p.jsonl", [""])
    res = CliRunner().invoke(main, ["generate", "--prompts", str(p), "--backend", "vllm", "--reviser-model",
                                    str(tmp_path / "other-model"), "--run-dir", str(tmp_path / "run")])
    assert res.exit_code == 2
    # the missing folder is found first; with a real second model, the engine rule speaks
    from cai.errors import UsageError
    from cai.generate import resolve_reviser

    import cai.generate as gen

    cfg = GenerateConfig(backend="vllm", reviser_model="smollm2-135m-other")
    gen_check = gen.check_engine
    try:
        gen.check_engine = lambda *a, **k: ("vllm", None)
        with pytest.raises(UsageError, match="one vLLM engine.*--reviser-backend openai"):
            resolve_reviser(cfg, "vllm")
        assert resolve_reviser(cfg.model_copy(update={"reviser_backend": "hf"}), "vllm") == "hf"
        assert resolve_reviser(GenerateConfig(backend="vllm", reviser_model=cfg.model), "vllm") is None
    finally:
        gen.check_engine = gen_check


def test_a_pairs_output_keeps_one_judge(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"id": "x", "prompt": "hi", "response_a": "GOOD", "response_b": "no"}) + "\n")
    out = tmp_path / "o.jsonl"
    judge_pairs_file(pairs, out, Judge(ScriptedBackend(), load_constitution("default")),
                     progress=False)
    from cai.errors import UsageError

    with pytest.raises(UsageError, match="other settings .*ensemble"):
        judge_pairs_file(pairs, out, Judge(ScriptedBackend(), load_constitution("default"), JudgeConfig(ensemble=2)),
                         progress=False)


def test_a_reviser_engine_without_a_reviser_model_serves_the_policy_model():
    from cai.generate import resolve_reviser

    import cai.generate as gen

    real = gen.check_engine
    try:
        gen.check_engine = lambda *a, **k: ("hf", None)
        cfg = GenerateConfig(backend="vllm", model="smollm2-135m", reviser_backend="hf")
        assert cfg.reviser_name == "smollm2-135m" and resolve_reviser(cfg, "vllm") == "hf"
        same = GenerateConfig(backend="openai", base_url="http://a:1", model="m", reviser_model="big")
        assert resolve_reviser(same, "openai") == "openai" and same.reviser_options()["base_url"] == "http://a:1"
    finally:
        gen.check_engine = real


def test_a_refusal_question_too_long_for_the_judge_is_undecided():
    from cai.judge import RefusalJudge
    from cai.prompts import Templates

    class Small(ScriptedBackend):
        context_window = 300

        def count_tokens(self, conv, prefix=None):
            return sum(len(m["content"].split()) for m in conv)

        def choice_logprobs(self, conversations, assistant_prefix, options):
            return [{options[0]: math.log(0.9), options[1]: math.log(0.1)} for _ in conversations]

    p = RefusalJudge(Small(), Templates()).probs([("q", "short answer"), ("q", "long " * 400)], window=8)
    assert p[("q", "long " * 400)] == 0.5 and p[("q", "short answer")] == pytest.approx(0.5)  # 0.9 and 1-0.9 averaged
