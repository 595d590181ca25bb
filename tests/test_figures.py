"""Every figure right: the defects of issue 23 §1-2, each through the public function or the CLI.

Each test here failed on the code before the fix (the input and the old output are in its comment).
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from cai.cli import main
from cai.constitution import load_constitution
from cai.evaluate import harmful_flag, headline, pair_row, reliability, summarise
from cai.generate import GenerateConfig, run_generate
from cai.judge import Judge, JudgeConfig, PairVerdict
from cai.judge.calibration import floor_figure, score, with_floor
from cai.judge.figures import PositionTally
from cai.judge.refusal import refusal_agreement, refusal_call, refusal_figures
from cai.pairs import JudgeSummary, check_decided, judge_run
from cai.records import PreferenceRecord, read_rows
from tests.scripted import ScriptedBackend


class NonTransitive(ScriptedBackend):
    """A judge with a cycle: sample 0 beats 1 (0.9), 1 beats 2 (0.9), but 2 beats 0 (0.6)."""

    P = {(0, 1): 0.9, (1, 2): 0.9, (0, 2): 0.4}

    def choice_logprobs(self, conversations, assistant_prefix, options):
        self._tick("logprobs", len(conversations))
        out = []
        for conv in conversations:
            text = conv[-1]["content"]
            a = int(text.split("(A)")[1].split("answer ")[1][0])
            b = int(text.split("(B)")[1].split("answer ")[1][0])
            pa = self.P[(a, b)] if (a, b) in self.P else 1 - self.P[(b, a)]
            out.append({options[0]: math.log(pa), options[1]: math.log(1 - pa)})
        return out


def test_a_non_transitive_judge_gives_a_tie_not_a_pair_whose_chosen_lost(tmp_path):
    # Before: chosen "answer 0", rejected "answer 2", p_chosen 0.4, written to preferences.jsonl.
    p = tmp_path / "p.jsonl"
    p.write_text(json.dumps({"prompt": "q"}) + "\n")
    run = tmp_path / "run"
    run_generate(GenerateConfig(prompts=str(p), rounds=0, samples=3, run_dir=str(run), model="m"),
                 backend=ScriptedBackend(), progress=False)
    s = judge_run(run, Judge(NonTransitive(), load_constitution("default")), "samples", progress=False)
    assert list(read_rows(run / "preferences.jsonl")) == []
    (tie,) = list(read_rows(run / "ties.jsonl"))
    assert s.ties == 1 and tie["tie"] and "not transitive" in tie["reason"]
    assert tie["chosen"].startswith("answer 0") and tie["rejected"].startswith("answer 2")


def test_every_written_pair_is_past_the_threshold(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text("".join(json.dumps({"prompt": f"q{i}"}) + "\n" for i in range(3)))
    run = tmp_path / "run"
    run_generate(GenerateConfig(prompts=str(p), rounds=0, samples=3, run_dir=str(run), model="m"),
                 backend=ScriptedBackend(), progress=False)
    judge_run(run, Judge(ScriptedBackend(prefer="answer 2"), load_constitution("default")), "samples", progress=False)
    prefs = list(read_rows(run / "preferences.jsonl"))
    assert prefs and all(r["p_chosen"] >= 0.55 - 1e-9 for r in prefs)
    rec = PreferenceRecord.model_validate({**prefs[0], "p_chosen": 0.52})
    with pytest.raises(RuntimeError, match="tie threshold"):
        check_decided(rec, 0.05)


@pytest.mark.parametrize("category", ["coding", "math", "Travel"])
def test_a_category_cai_does_not_know_is_neither_harmful_nor_benign(category):
    # Before: harmful_flag({}, "coding") was True, so harmlessness became a refusal rate on coding prompts.
    assert harmful_flag({}, category) is None
    assert harmful_flag({"harmful": True}, category) is True
    assert harmful_flag({}, "illegal") is True and harmful_flag({}, "helpful") is False


def _verdict(p_a, p_first=None, p_second=None, identical=False):
    p_first = p_a if p_first is None else p_first
    p_second = p_a if p_second is None else p_second
    return SimpleNamespace(p_a=p_a, p_first=p_first, p_second=p_second, identical=identical, reason=None)


def test_the_eval_counts_the_prompts_it_could_not_place():
    rows = [pair_row(0, "p0", "coding", None, "x", "y", _verdict(0.9), 0.05, 0.9, 0.1),
            pair_row(1, "p1", "math", None, "x", "z", _verdict(0.9), 0.05, 0.9, 0.1),
            pair_row(2, "p2", "illegal", True, "x", "w", _verdict(0.9), 0.05, 0.9, 0.1)]
    m = summarise(rows, model="A", baseline="B", resamples=200)
    assert m["models"]["A"]["n_harmful"] == 1 and m["unplaced"] == 2
    assert m["unplaced_categories"] == ["coding", "math"]
    m.update(judge_reliability={}, signal=True, signal_reasons=[], win_rate_ci=[0.0, 1.0])
    assert any("2 of 3 prompts are neither harmful nor benign" in line for line in headline(m))


def test_cot_threshold_the_mode_cannot_exceed_is_a_usage_error(tmp_path, monkeypatch):
    # Before: --cot --threshold 0.1 made every pair a tie, and the calibration blamed the judge.
    import cai.backends as backends

    monkeypatch.setattr(backends, "load_backend", lambda *a, **k: pytest.fail("no engine before the check"))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"id": 1, "prompt": "hi", "response_a": "a", "response_b": "b"}) + "\n")
    res = CliRunner().invoke(main, ["judge", "--pairs", str(pairs), "--out", str(tmp_path / "o.jsonl"), "--cot",
                                    "--threshold", "0.1", "--calibration", "none", "--no-progress"])
    assert res.exit_code == 2, res.output
    assert "--threshold 0.1" in res.output and "cot-clamped" in res.output
    assert JudgeConfig(cot=True, threshold=0.09).threshold == 0.09
    assert JudgeConfig(threshold=0.3).threshold == 0.3  # log-probabilities reach past it


def test_a_judge_that_never_answers_is_not_position_consistent(tmp_path):
    # Before: 10 verdicts of exactly 0.5 in both orders gave position_consistency 1.0 (three ways).
    undecided = [PairVerdict(p_a=0.5, p_first=0.5, p_second=0.5, judgements=[]) for _ in range(10)]
    rows = [{"id": str(i), "response_a": "a" * i, "response_b": "b", "label": "a"} for i in range(10)]
    cal = score(rows, undecided, 0.05, source="x", sha256="y")
    assert cal.position_consistency is None and cal.undecided_orders == 1.0

    summary = JudgeSummary()
    for v in undecided:
        summary.count(v, True)
    assert summary.position_consistency is None and summary.orders.undecided_orders == 1.0

    evals = [pair_row(i, "p", "helpful", False, "x", f"y{i}", v, 0.05, 0.1, 0.1) for i, v in enumerate(undecided)]
    m = summarise(evals, model="A", baseline="B", resamples=100)
    assert m["position_consistency"] is None and m["undecided_orders"] == 1.0


def test_consistency_counts_only_pairs_decided_in_both_orders():
    tally = PositionTally(0.05)
    for pf, ps in [(0.9, 0.8), (0.9, 0.2), (0.9, 0.52), (0.5, 0.5)]:
        tally.add(pf, ps)
    tally.add(0.9, 0.9, asked=False)  # identical answers: not asked, not counted
    assert (tally.asked, tally.decided, tally.consistent) == (4, 2, 1)
    assert tally.position_consistency == 0.5 and tally.undecided_orders == 0.5


def test_an_unmeasured_judge_gives_signal_null_and_says_so():
    # Before: --calibration none gave signal: true, and the headline read like a finding.
    rows = [pair_row(0, "p", "illegal", True, "x", "y", _verdict(0.9), 0.05, 0.9, 0.1)]
    m = summarise(rows, model="A", baseline="B", resamples=100)
    rel, signal, reasons = reliability(m, {"skipped": True}, None, 0.6)
    assert signal is None and "not calibrated" in reasons[0]
    m.update(judge_reliability=rel, signal=signal, signal_reasons=reasons)
    assert "signal not measured" in headline(m)[0]
    _, signal, _ = reliability(m, None, None, 0.6)
    assert signal is None
    _, signal, reasons = reliability(m, {"agreement": 0.8, "n": 10}, None, 0.6)
    assert signal is True and reasons == []
    _, signal, _ = reliability(m, {"agreement": 0.5, "n": 10}, None, 0.6)
    assert signal is False


def test_an_undecided_refusal_call_counts_half_in_both_places():
    # Before: 0.52 counted half in the agreement but as a refusal (p > 0.5) in the refusal rate.
    assert refusal_call(0.52, 0.05) == 0.5 and refusal_call(0.9, 0.05) == 1.0 and refusal_call(0.1, 0.05) == 0.0
    f = refusal_figures([0.52, 0.53, 0.9], [True, True, True])
    assert f["refusal_rate_harmful"] == pytest.approx((0.5 + 0.5 + 1) / 3, abs=1e-4)
    assert refusal_agreement([0.52, 0.53, 0.9], [True, True, True], 0.05)["agreement"] == f["refusal_rate_harmful"]
    benign = refusal_figures([0.54, 0.2], [False, False])
    assert benign["over_refusal_rate_benign"] == 0.25 and benign["undecided"] == 0.5


def test_calibration_by_kind_and_the_floor_on_the_kinds_mean():
    # A judge that prefers the longer answer: right on the content kind (better answer longer),
    # wrong on the length kind. Pooled agreement 0.75 passes a 0.6 floor; the kinds' mean 0.5 does not.
    rows, verdicts = [], []
    for i in range(6):
        rows.append({"id": f"c{i}", "response_a": "long better answer " * 3, "response_b": "short", "label": "a",
                     "kind": "content"})
        verdicts.append(PairVerdict(p_a=0.9, p_first=0.9, p_second=0.9, judgements=[]))
    for i in range(2):
        rows.append({"id": f"l{i}", "response_a": "long padded worse answer " * 3, "response_b": "tight",
                     "label": "b", "kind": "length"})
        verdicts.append(PairVerdict(p_a=0.9, p_first=0.9, p_second=0.9, judgements=[]))
    cal = score(rows, verdicts, 0.05, source="x", sha256="y").model_dump()
    assert cal["agreement"] == 0.75
    assert cal["by_kind"] == {"content": {"n": 6, "agreement": 1.0}, "length": {"n": 2, "agreement": 0.0}}
    assert cal["balanced_agreement"] == 0.5 and cal["longer_wins"] == 1.0
    assert floor_figure(cal) == (0.5, "agreement averaged over the set's kinds")
    assert with_floor(cal, 0.6)["below_floor"] is True
    no_kinds = score([{k: v for k, v in r.items() if k != "kind"} for r in rows], verdicts, 0.05, source="x",
                     sha256="y").model_dump()
    assert no_kinds["by_kind"] is None and with_floor(no_kinds, 0.6)["below_floor"] is False


def test_preference_rows_carry_both_answers_flags(tmp_path):
    """Export reads a pair's flags from the pair itself: no join over the whole generations file."""
    p = tmp_path / "p.jsonl"
    p.write_text(json.dumps({"prompt": "q"}) + "\n")
    run = tmp_path / "run"
    run_generate(GenerateConfig(prompts=str(p), rounds=1, run_dir=str(run), model="m"), backend=ScriptedBackend(),
                 progress=False)
    gen = next(read_rows(run / "generations.jsonl"))
    judge_run(run, Judge(ScriptedBackend(prefer="answer 0"), load_constitution("default")), "revision", progress=False)
    pref = next(read_rows(run / "preferences.jsonl"))
    assert pref["meta"]["flipped"] and pref["chosen"] == gen["initial"]
    assert pref["chosen_flags"] == gen["initial_flags"] and pref["rejected_flags"] == gen["flags"]
    # a flipped pair's probabilities are about (chosen, rejected), as a pair that was not flipped
    assert pref["meta"]["p_first"] > 0.5 and pref["meta"]["p_second"] > 0.5


def test_confidence_figures_by_hand():
    """by_confidence, ece and brier of a small labelled set, computed by hand."""
    rows, verdicts = [], []
    spec = [(0.58, "a"), (0.42, "a"), (0.54, "b"), (0.65, "a"), (0.9, "a"), (0.1, "b"), (0.15, "a"), (0.5, "b")]
    for i, (p, label) in enumerate(spec):
        rows.append({"id": str(i), "response_a": "x", "response_b": "y", "label": label})
        verdicts.append(PairVerdict(p_a=p, p_first=p, p_second=p, judgements=[]))
    cal = score(rows, verdicts, 0.05, source="x", sha256="y")
    # decided: 0.58 (c .08, right), 0.42 (.08, wrong), 0.65 (.15, right), 0.9 (.4, right), 0.1 (.4, right),
    # 0.15 (.35, wrong); 0.54 and 0.5 are ties
    assert {k: (v["n"], v["agreement"]) for k, v in cal.by_confidence.items()} == {
        "0.05-0.1": (2, 0.5), "0.1-0.2": (1, 1.0), "0.3-0.5": (3, 0.6667)}
    conf = {"0.05-0.1": (0.58 + 0.58) / 2, "0.1-0.2": 0.65, "0.3-0.5": (0.9 + 0.9 + 0.85) / 3}
    acc = {"0.05-0.1": 0.5, "0.1-0.2": 1.0, "0.3-0.5": 2 / 3}
    n = {"0.05-0.1": 2, "0.1-0.2": 1, "0.3-0.5": 3}
    ece = sum(abs(acc[k] - conf[k]) * n[k] for k in n) / 6
    assert cal.ece == pytest.approx(ece, abs=1e-4)
    truth = [float(lab == "a") for _, lab in spec]
    assert cal.brier == pytest.approx(sum((p - y) ** 2 for (p, _), y in zip(spec, truth)) / 8, abs=1e-4)
    assert cal.confidence_informative is None  # no two buckets of 5 pairs: not measurable


def test_confidence_is_informative_only_past_the_buckets_noise():
    from cai.judge.figures import confidence_figures

    sure = [(0.9, "a", "a")] * 20  # confident and right
    unsure = [(0.56, "a", "a")] * 10 + [(0.56, "a", "b")] * 10  # hesitant and a coin flip
    assert confidence_figures(sure + unsure)["confidence_informative"] is True
    flat = [(0.9, "a", "a")] * 10 + [(0.9, "a", "b")] * 10
    assert confidence_figures(flat + unsure)["confidence_informative"] is False


def test_eval_warns_when_its_prompts_are_in_the_models_training_data(tmp_path):
    from cai.evaluate import training_overlap
    from cai.inputs import iter_prompts

    train = tmp_path / "sft.jsonl"
    train.write_text(json.dumps({"messages": [{"role": "user", "content": "How do I pick a lock?"},
                                              {"role": "assistant", "content": "..."}]}) + "\n")
    model = tmp_path / "model"
    model.mkdir()
    (model / "metrics.json").write_text(json.dumps({"data": {"sources": [{"name": "sft", "path": str(train)}]}}))
    evals = tmp_path / "eval.jsonl"
    evals.write_text(json.dumps({"prompt": "how do i pick a LOCK?"}) + "\n" + json.dumps({"prompt": "Bake bread?"}) + "\n")
    o = training_overlap(str(model), list(iter_prompts(str(evals))))
    assert (o["n"], o["total"], o["training_rows"]) == (1, 2, 1) and "1 of 2 eval prompts" in o["line"]
    assert training_overlap(str(tmp_path / "not-a-model"), []) is None
    m = {"contamination": o, "model": "A", "baseline": "B", "n": 2, "win_rate": 0.5, "win_rate_ci": [0.4, 0.6],
         "ties": 0, "position_consistency": None, "signal": None, "signal_reasons": [],
         "models": {s: {"name": s, "refusal_rate_harmful": None, "n_harmful": 0, "over_refusal_rate_benign": None,
                        "n_benign": 0} for s in "AB"}}
    assert any(line.startswith("warning: 1 of 2 eval prompts") for line in headline(m))
