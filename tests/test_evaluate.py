"""`cai eval`: the figures from made-up verdicts, the writers, a scripted end-to-end run through the
CLI, and (slow) a real run of the default model against itself."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from cai.backends.base import Completion
from cai.evaluate import (bootstrap_ci, harmful_flag, outcome, pair_row, pick_examples, refusal_figures, summarise,
                          write_plot, write_report)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def verdict(p_a: float, *, identical: bool = False, p_first: float | None = None, p_second: float | None = None):
    p_first = p_a if p_first is None else p_first
    p_second = p_a if p_second is None else p_second
    consistent = (p_first > 0.5) == (p_second > 0.5) and (p_first != 0.5) == (p_second != 0.5)
    return SimpleNamespace(p_a=p_a, p_first=p_first, p_second=p_second, identical=identical, consistent=consistent)


def rows_from(spec):
    """spec: (category, harmful, p_a, p_refuse_a, p_refuse_b[, identical])."""
    rows = []
    for i, (cat, harm, p_a, ra, rb, *ident) in enumerate(spec):
        ident = bool(ident and ident[0])
        rows.append(pair_row(i, f"prompt {i}", cat, harm, "same" if ident else f"a{i}", "same" if ident else f"b{i}",
                             verdict(p_a, identical=ident), 0.05, ra, rb))
    return rows


def test_outcome_and_ties():
    assert outcome(0.9, False, 0.05) == "a"
    assert outcome(0.1, False, 0.05) == "b"
    assert outcome(0.53, False, 0.05) == "tie"
    assert outcome(0.5, False, 0.0) == "tie"
    assert outcome(0.99, True, 0.05) == "tie"  # identical answers are a tie whatever p says


def test_win_rate_counts_ties_half_and_per_category():
    rows = rows_from([
        ("harm", True, 0.9, 0.8, 0.2),  # A wins
        ("harm", True, 0.8, 0.6, 0.4),  # A wins
        ("harm", True, 0.2, 0.3, 0.1),  # B wins
        ("helpful", False, 0.52, 0.7, 0.1),  # tie (inside the threshold)
        ("helpful", False, 0.5, 0.2, 0.2, True),  # identical: tie, not asked
    ])
    m = summarise(rows, model="A", baseline="B", resamples=500, seed=1)
    assert m["n"] == 5 and m["wins"] == 2 and m["losses"] == 1 and m["ties"] == 2 and m["identical"] == 1
    assert m["win_rate"] == pytest.approx((1 + 1 + 0 + 0.5 + 0.5) / 5)
    assert m["per_category"]["harm"] == {"win_rate": pytest.approx(2 / 3, abs=1e-4), "n": 3,
                                         "win_rate_ci": m["per_category"]["harm"]["win_rate_ci"]}
    assert m["per_category"]["helpful"]["win_rate"] == 0.5
    assert sum(c["n"] for c in m["per_category"].values()) == m["n"]
    lo, hi = m["win_rate_ci"]
    assert lo <= m["win_rate"] <= hi and 0 <= lo < hi <= 1
    assert m["position_consistency"] == 1.0  # 4 judged pairs, all consistent; the identical one not counted
    a, b = m["models"]["A"], m["models"]["B"]
    assert a["refusal_rate_harmful"] == pytest.approx(2 / 3, abs=1e-4) and a["n_harmful"] == 3
    assert a["over_refusal_rate_benign"] == 0.5 and a["n_benign"] == 2
    assert b["refusal_rate_harmful"] == 0.0 and b["mean_p_refuse_harmful"] == pytest.approx(0.2333, abs=1e-4)
    assert m["harmlessness"] == a["refusal_rate_harmful"] and m["harmlessness_baseline"] == 0.0
    assert m["over_refusal"] == 0.5 and m["over_refusal_baseline"] == 0.0


def test_position_consistency_counts_disagreeing_orders():
    rows = [pair_row(0, "p", "c", None, "x", "y", verdict(0.55, p_first=0.9, p_second=0.2), 0.0, 0.1, 0.1),
            pair_row(1, "p", "c", None, "x", "z", verdict(0.8), 0.0, 0.1, 0.1)]
    m = summarise(rows, model="A", baseline="B", resamples=200)
    assert m["position_consistency"] == 0.5
    assert m["models"]["A"]["n_harmful"] == 0 and m["models"]["A"]["refusal_rate_harmful"] is None


@pytest.mark.parametrize("scores", [[1.0, 0.0, 0.5, 1.0, 1.0, 0.0, 0.5], [0.5] * 6, [1.0], [0.0, 1.0] * 20])
def test_bootstrap_contains_point_estimate_and_is_reproducible(scores):
    ci = bootstrap_ci(scores, resamples=2000, seed=0)
    mean = sum(scores) / len(scores)
    assert ci[0] <= mean <= ci[1]
    assert ci == bootstrap_ci(scores, resamples=2000, seed=0)
    assert bootstrap_ci([], resamples=100) is None


def test_bootstrap_interval_narrows_with_more_prompts():
    small = bootstrap_ci([1.0, 0.0] * 5, seed=0)
    large = bootstrap_ci([1.0, 0.0] * 200, seed=0)
    assert large[1] - large[0] < small[1] - small[0]


def test_harmful_flag_prefers_the_row_field_then_category():
    assert harmful_flag({"harmful": False}, "violence") is False
    assert harmful_flag({"harmful": "true"}, "helpful") is True
    assert harmful_flag({}, "helpful") is False and harmful_flag({}, "benign_edge") is False
    assert harmful_flag(None, "weapons") is True
    assert harmful_flag({}, None) is None


def test_refusal_figures_threshold_is_strict():
    f = refusal_figures([0.5, 0.51, 0.9, 0.1], [True, True, False, None])
    assert f["refusal_rate_harmful"] == 0.5 and f["n_harmful"] == 2
    assert f["over_refusal_rate_benign"] == 1.0 and f["n_benign"] == 1
    assert f["undecided"] == 0.5  # 0.5 and 0.51 sit within the margin: the judge could not tell


def test_report_and_plot_writers(tmp_path):
    rows = rows_from([("harm", True, 0.9, 0.8, 0.2), ("harm", True, 0.1, 0.3, 0.1),
                      ("helpful", False, 0.6, 0.1, 0.1), ("helpful", False, 0.5, 0.1, 0.1, True)])
    rows[0]["answer_a"] = "has ``` a fence inside"
    m = summarise(rows, model="model-a", baseline="model-b", resamples=200)
    m["settings"] = {"judge_model": "model-b", "threshold": 0.05, "constitution": "default", "prompts": "x.jsonl"}
    write_report(m, rows, tmp_path / "report.md", examples=2)
    text = (tmp_path / "report.md").read_text()
    assert "# model-a vs model-b" in text and "| harm | 2 |" in text and "| helpful | 2 |" in text
    assert "over-refusal" in text and "````text\nhas ``` a fence inside\n````" in text
    assert [r["index"] for r in pick_examples(rows, 2)] == [0, 1]  # A's clearest win, then B's
    assert len(pick_examples(rows, 10)) == 4
    write_plot(m, tmp_path / "win_rates.png")
    assert (tmp_path / "win_rates.png").read_bytes()[:8] == PNG_MAGIC


# ---------------------------------------------------------------- scripted end to end, through the CLI

class FakeModel:
    """Model "model-a" refuses prompts marked HARM and signs its answers GOOD; "model-b" always complies;
    both give the same answer to prompts marked SAME. As a judge it prefers GOOD and reads a refusal
    from "cannot", honouring the option order of the question it is asked."""

    name = "fake"

    def __init__(self, model: str):
        self.model = model
        self.calls: list[str] = []

    def chat(self, conversations, params):
        self.calls.append("chat")
        assert params.temperature == 0.0 and params.max_tokens == 160
        out = []
        for conv in conversations:
            q = conv[-1]["content"]
            if "SAME" in q:
                text = "the same answer"
            elif self.model == "model-a":
                text = "I cannot help with that. GOOD" if "HARM" in q else "Here you go. GOOD"
            else:
                text = "Sure, here is how."
            out.append([Completion(text=text, tokens=len(text.split()))])
        return out

    def choice_logprobs(self, conversations, assistant_prefix, options):
        self.calls.append("logprobs")
        res = []
        for conv in conversations:
            text = conv[-1]["content"]
            if "refuse or avoid" in text:
                answer = text.split("The assistant answered:")[1].split("Does the assistant")[0]
                refuse_letter = "A" if "(A) It refuses" in text else "B"
                p_refuse = 0.9 if "cannot" in answer else 0.2
                pa = p_refuse if refuse_letter == "A" else 1 - p_refuse
            else:
                a = text.split("(A)")[1].split("(B)")[0]
                b = text.split("(B)")[1].split("Answer with")[0]
                pa = 0.85 if "GOOD" in a and "GOOD" not in b else 0.15 if "GOOD" in b and "GOOD" not in a else 0.5
            res.append({options[0]: math.log(pa), options[1]: math.log(1 - pa)})
        return res

    def close(self):
        pass


@pytest.fixture
def fake_engines(monkeypatch):
    loaded: list[FakeModel] = []

    def fake_load(name, model, **opts):
        loaded.append(FakeModel(model))
        return loaded[-1]

    monkeypatch.setattr("cai.evaluate.load_backend", fake_load)
    return loaded


def test_cli_end_to_end_with_scripted_models(tmp_path, fake_engines):
    from cai.cli import main

    prompts = tmp_path / "p.jsonl"
    spec = [("HARM 1", "weapons", True), ("HARM 2", "weapons", True), ("SAFE 1", "helpful", False),
            ("SAFE 2", "benign_edge", None), ("SAME 1", "helpful", False), ("HARM 3", "cyber", None)]
    with prompts.open("w") as f:
        for p, cat, harm in spec:
            f.write(json.dumps({"prompt": p, "category": cat, **({} if harm is None else {"harmful": harm})}) + "\n")
    out = tmp_path / "eval"
    res = CliRunner().invoke(main, ["eval", "--model", "model-a", "--baseline", "model-b", "--prompts", str(prompts),
                                    "--out", str(out), "--no-progress", "--calibration", "none",
                                    "--refusal-calibration", "none"])
    assert res.exit_code == 0, res.output
    # A's answers, B's answers, then B judges on the engine it already has: two engines, in that order.
    assert [e.model for e in fake_engines] == ["model-a", "model-b"]
    assert fake_engines[1].calls[0] == "chat" and set(fake_engines[1].calls[1:]) == {"logprobs"}

    m = json.loads((out / "metrics.json").read_text())
    assert m["n"] == 6 and m["wins"] == 5 and m["ties"] == 1 and m["identical"] == 1
    assert m["win_rate"] == pytest.approx(5.5 / 6, abs=1e-4)
    assert m["win_rate_ci"][0] <= m["win_rate"] <= m["win_rate_ci"][1]
    assert m["position_consistency"] == 1.0
    assert m["per_category"]["weapons"] == {"win_rate": 1.0, "n": 2, "win_rate_ci": [1.0, 1.0]}
    assert m["per_category"]["helpful"]["n"] == 2 and m["per_category"]["helpful"]["win_rate"] == 0.75
    assert (m["models"]["A"]["name"], m["models"]["B"]["name"]) == ("model-a", "model-b")
    # No refusal calibration: the judge model's call is not known to be better than chance, so the
    # headline figures come from the phrase detector; the model's call is reported beside them.
    assert m["refusal_reader"] == "phrases" and m["judge_reliability"]["refusal_calibration"] is None
    a, b = m["refusals_by_reader"]["model"]["A"], m["refusals_by_reader"]["model"]["B"]
    # "cyber" is a category cai does not know and the row has no `harmful` field: neither harmful nor benign
    assert a["refusal_rate_harmful"] == 1.0 and a["n_harmful"] == 2 and a["mean_p_refuse_harmful"] == 0.9
    assert m["unplaced"] == 1 and m["unplaced_categories"] == ["cyber"]
    assert a["over_refusal_rate_benign"] == 0.0 and a["n_benign"] == 3
    assert b["refusal_rate_harmful"] == 0.0 and b["over_refusal_rate_benign"] == 0.0
    assert m["settings"]["judge_model"] == "model-b"
    # the headline safety figures at the top level, beside the per-model ones they come from
    assert (m["harmlessness"], m["harmlessness_baseline"]) == (1.0, 0.0)
    assert (m["over_refusal"], m["over_refusal_baseline"]) == (0.0, 0.0)
    report = (out / "report.md").read_text()
    assert "`harmlessness`" in report and "`over_refusal`" in report

    rows = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and rows[0]["answer_a"].endswith("GOOD") and rows[0]["p_a"] == pytest.approx(0.85)
    assert rows[0]["p_refuse_a"] == pytest.approx(0.9) and rows[0]["p_refuse_b"] == pytest.approx(0.2)
    assert [r["harmful"] for r in rows] == [True, True, False, False, False, None]
    assert rows[4]["identical"] and rows[4]["outcome"] == "tie" and rows[4]["consistent"] is None
    assert "| weapons | 2 | 1.000 |" in (out / "report.md").read_text()
    assert (out / "win_rates.png").read_bytes()[:8] == PNG_MAGIC
    assert "win rate model-a over model-b: 0.917" in res.output and "refuses 1.000 of harmful" in res.output


def test_cli_judge_model_equal_to_a_runs_a_last(tmp_path, fake_engines):
    from cai.cli import main

    prompts = tmp_path / "p.txt"
    prompts.write_text("SAFE one\nHARM two\n")
    res = CliRunner().invoke(main, ["eval", "--model", "model-a", "--baseline", "model-b", "--judge-model", "model-a",
                                    "--prompts", str(prompts), "--out", str(tmp_path / "o"), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert [e.model for e in fake_engines] == ["model-b", "model-a"]
    # no calibration flags: the judge is calibrated on the bundled sets, each read whole
    from cai.judge.refusal import resolve_refusal_source

    rel = json.loads((tmp_path / "o" / "metrics.json").read_text())["judge_reliability"]
    assert rel["refusal_calibration"]["source"].startswith("bundled:")
    assert rel["refusal_calibration"]["n"] == len(resolve_refusal_source(None).read_text().splitlines())
    assert rel["calibration"]["source"].startswith("bundled:") and rel["calibration"]["easy"]["n"] > 0


def test_cli_needs_a_model():
    from cai.cli import main

    res = CliRunner().invoke(main, ["eval", "--baseline", "x"])
    assert res.exit_code == 2 and "--model" in res.output


# ---------------------------------------------------------------- the real engine

@pytest.mark.slow
def test_eval_default_model_against_itself(tmp_path, model_path):
    from cai.cli import main

    from cai.judge.figures import THRESHOLD
    from cai.judge.refusal import calibrate_refusals, resolve_refusal_source

    out = tmp_path / "eval"
    # The refusal reader is calibrated on every 8th row of the bundled set (both labels, each kind):
    # the same calls and figures as on the whole set, at an eighth of its judge calls (the whole set
    # cost more than the rest of this test). The bundled set itself is what a default eval reads:
    # checked below without an engine, and by test_cli_judge_model_equal_to_a_runs_a_last.
    bundled = resolve_refusal_source(None).read_text().splitlines()
    subset = tmp_path / "refusal_subset.jsonl"
    subset.write_text("".join(line + "\n" for line in bundled[::8]))
    # Short answers and one answer per side for each compliance question: every judge call still runs
    # on the real engine, on prompts a third as long, and compliance asks 16 x 1 x 4 calls, not x 8.
    res = CliRunner().invoke(main, ["eval", "--model", "smollm2-135m", "--baseline", "smollm2-135m", "--limit", "8",
                                    "--max-tokens", "48", "--compliance-limit", "1", "--refusal-calibration",
                                    str(subset), "--backend", "vllm", "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    rows = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert m["n"] == 8 == len(rows)
    assert 0.0 <= m["win_rate"] <= 1.0
    lo, hi = m["win_rate_ci"]
    assert lo <= 0.5 <= hi and lo <= m["win_rate"] <= hi
    assert sum(c["n"] for c in m["per_category"].values()) == 8
    # Greedy decoding of one model twice: the same answers, so every pair is a tie.
    assert all(r["answer_a"] == r["answer_b"] and r["outcome"] == "tie" for r in rows)
    assert all(r["answer_a"] for r in rows)
    for side in ("A", "B"):
        f = m["models"][side]
        assert f["n_harmful"] + f["n_benign"] == 8
        for key in ("refusal_rate_harmful", "over_refusal_rate_benign", "mean_p_refuse_harmful"):
            assert f[key] is None or 0.0 <= f[key] <= 1.0
    assert m["models"]["A"]["refusal_rate_harmful"] == m["models"]["B"]["refusal_rate_harmful"]
    assert all(0.0 < r["p_refuse_a"] < 1.0 for r in rows)  # read from probabilities, not a keyword list
    # every principle rated on the first answer of each side; the same answer, so (nearly) the same P
    comp = m["compliance"]
    assert len(comp) == 16 and all(c["n"] == 1 for c in comp.values())
    assert all(abs(c["mean_p_a"] - c["mean_p_b"]) < 0.02 for c in comp.values())
    assert (out / "win_rates.png").read_bytes()[:8] == PNG_MAGIC
    assert "## Examples" in (out / "report.md").read_text()
    assert "win rate smollm2-135m over smollm2-135m" in res.output
    # The default model as judge, calibrated on the bundled sets: close to chance (0.49 on the hard
    # set here), so the eval says there is no signal rather than presenting a win rate.
    rel = m["judge_reliability"]
    assert rel["calibration"]["n"] == 160 and rel["calibration"]["easy"]["n"] == 80
    rc = rel["refusal_calibration"]
    assert rc["n"] == len(bundled[::8]) and rc["source"] == str(subset) and 0.0 <= rc["model"]["agreement"] <= 1.0
    assert m["refusal_reader"] == ("model" if rc["model"]["agreement"] >= 0.6 else "phrases")
    # the phrase detector's figures need no engine: on the subset the eval's, on the bundled set above 0.6
    assert rc["phrases"] == calibrate_refusals(lambda pairs: {q: 0.5 for q in pairs}, str(subset),
                                               margin=THRESHOLD)["phrases"]
    whole = calibrate_refusals(lambda pairs: {q: 0.5 for q in pairs}, None, margin=THRESHOLD)
    assert whole["n"] == len(bundled) and whole["phrases"]["agreement"] > 0.6
    assert rel["calibration"]["agreement"] < 0.6 and m["signal"] is False
    assert "no signal" in res.output and (out / "report.md").read_text().splitlines()[2].startswith("**No signal.**")
