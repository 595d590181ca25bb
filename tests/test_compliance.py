"""Per-principle compliance in `cai eval` (cai/judge/compliance.py): a scripted judge with known
answers gives exact rates, both option orders are asked, and --compliance picks or skips principles."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from cai.backends.base import Completion
from cai.cli import main
from cai.constitution import load_constitution
from cai.errors import UsageError
from cai.evaluate import compliance_principles

PRINCIPLES = [p.id for p in load_constitution("default").principles]


class Judged:
    """Model "a" signs its answers GOOD, "b" does not. As a judge: an answer signed GOOD follows every
    principle with P 0.8, an unsigned one with P 0.3, except the first principle, which nothing
    follows (P 0.2), honouring the option order of each question."""

    name = "fake"

    def __init__(self, model: str):
        self.model = model
        self.orders: list[bool] = []

    def chat(self, conversations, params):
        text = "Here you go. GOOD" if self.model == "a" else "Sure, here it is."
        return [[Completion(text=text, tokens=4)] for _ in conversations]

    def choice_logprobs(self, conversations, assistant_prefix, options):
        first = load_constitution("default").principles[0].critique
        out = []
        for conv in conversations:
            text = conv[-1]["content"]
            if "does the answer follow it?" in text:
                answer = text.split("The assistant answered:")[1].split("A principle")[0]
                p = 0.2 if first in text else 0.8 if "GOOD" in answer else 0.3
                follows_first = "(A) Yes" in text
                self.orders.append(follows_first)
                pa = p if follows_first else 1 - p
            elif "refuse or avoid" in text:
                pa = 0.5
            else:
                pa = 0.5
            out.append({options[0]: math.log(pa), options[1]: math.log(1 - pa)})
        return out

    def close(self):
        pass


@pytest.fixture
def engines(monkeypatch):
    made: list[Judged] = []

    def load(name, model, **opts):
        made.append(Judged(model))
        return made[-1]

    monkeypatch.setattr("cai.evaluate.load_backend", load)
    return made


def _prompts(tmp_path, n=5):
    p = tmp_path / "p.jsonl"
    p.write_text("".join(json.dumps({"prompt": f"Question {i}?", "category": "helpful"}) + "\n" for i in range(n)))
    return p


def _eval(tmp_path, *extra):
    out = tmp_path / "eval"
    res = CliRunner().invoke(main, ["eval", "--model", "a", "--baseline", "b", "--prompts", str(_prompts(tmp_path)),
                                    "--out", str(out), "--no-progress", "--calibration", "none",
                                    "--refusal-calibration", "none", *extra])
    assert res.exit_code == 0, res.output
    return json.loads((out / "metrics.json").read_text()), res.output, out


def test_rates_are_exact_for_a_judge_with_known_answers(tmp_path, engines):
    m, output, out = _eval(tmp_path, "--compliance-limit", "4")
    comp = m["compliance"]
    assert list(comp) == PRINCIPLES
    first, *rest = PRINCIPLES
    assert comp[first] == {"rate_a": 0.0, "mean_p_a": pytest.approx(0.2), "undecided_a": 0.0,
                           "rate_b": 0.0, "mean_p_b": pytest.approx(0.2), "undecided_b": 0.0, "n": 4}
    for pid in rest:
        assert (comp[pid]["rate_a"], comp[pid]["rate_b"], comp[pid]["n"]) == (1.0, 0.0, 4)
        assert comp[pid]["mean_p_a"] == pytest.approx(0.8) and comp[pid]["mean_p_b"] == pytest.approx(0.3)
    judge = engines[-1]
    # both option orders, equally often: principles x 4 answers x 2 models x 2 orders
    assert judge.orders.count(True) == judge.orders.count(False) == len(PRINCIPLES) * 4 * 2
    assert "compliance:" in output
    report = (out / "report.md").read_text()
    assert "## Compliance by principle" in report and f"| {rest[0]} | 4 | 1.000 |" in report


def test_named_principles_only_and_none_skips(tmp_path, engines):
    m, _, _ = _eval(tmp_path, "--compliance", f"{PRINCIPLES[1]},{PRINCIPLES[0]}")
    assert list(m["compliance"]) == [PRINCIPLES[1], PRINCIPLES[0]] and m["compliance"][PRINCIPLES[0]]["n"] == 5
    m, _, _ = _eval(tmp_path, "--compliance", "none")
    assert "compliance" not in m


def test_an_unknown_principle_exits_2_before_any_engine(tmp_path, engines):
    res = CliRunner().invoke(main, ["eval", "--model", "a", "--prompts", str(_prompts(tmp_path)), "--out",
                                    str(tmp_path / "e"), "--compliance", "nope", "--no-progress"])
    assert res.exit_code == 2 and "no principle 'nope'" in res.output and PRINCIPLES[0] in res.output
    assert engines == []
    with pytest.raises(UsageError):
        compliance_principles("x,y", load_constitution("default"))


def test_history_appends_a_row_per_eval_and_draws_its_plot(tmp_path, engines):
    hist = tmp_path / "h.jsonl"
    for _ in range(2):
        _eval(tmp_path, "--compliance-limit", "2", "--history", str(hist))
    rows = [json.loads(x) for x in hist.read_text().splitlines()]
    assert len(rows) == 2 and rows[0]["model"] == "a" and rows[0]["baseline"] == "b"
    for key in ("date", "win_rate", "win_rate_ci", "harmlessness", "over_refusal", "compliance", "judge_reliability"):
        assert key in rows[1]
    assert rows[1]["compliance"][PRINCIPLES[1]]["rate_a"] == 1.0
    assert hist.with_suffix(".png").stat().st_size > 1000
