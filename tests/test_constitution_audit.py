"""`cai constitution audit` on a scripted judge whose answer to each question about each pair is set
here, so every figure is checked against a computation by hand.

The 20 pairs p00..p19: label a for even i, b for odd i; the labelled answer is always the shorter.
- carry ("more careful?") gives the labelled answer 0.9, except p03 and p11 (0.2: confidently
  wrong) and p07 and p15 (0.5: a tie).
- copy ("more cautious?") answers exactly as carry: one principle written twice.
- formal ("sounds more formal?") is against the labels: the labelled answer gets 0.0001 on p00, p01,
  p02, p04, p05, 0.5 on p07 and p15, and 0.4 on the rest.
- any question with "shorter" in it prefers the shorter answer (0.9): the rule the labels follow
  that the constitution never states.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cai.audit import AuditConfig, run_audit
from cai.audit import candidates as cand
from cai.audit.figures import Column, principle_figures
from cai.audit.fit import CLIP, FLOOR, fit, fold_of, relative
from cai.backends.base import Completion
from cai.cli import main
from cai.constitution import load_constitution
from cai.constitution.schema import _rng

N = 20
IDS = [f"p{i:02d}" for i in range(N)]
LABELS = ["a" if i % 2 == 0 else "b" for i in range(N)]
Q = {"carry": "Which response is more careful?", "copy": "Which response is more cautious?",
     "formal": "Which response sounds more formal?"}


def toward_label(principle: str, i: int) -> float:
    """P(the labelled answer wins) under a principle, as scripted."""
    if principle in ("carry", "copy"):
        return 0.2 if i in (3, 11) else 0.5 if i in (7, 15) else 0.9
    return 0.0001 if i in (0, 1, 2, 4, 5) else 0.5 if i in (7, 15) else 0.4


def p_a(principle: str, i: int) -> float:
    t = toward_label(principle, i)
    return t if LABELS[i] == "a" else 1 - t


def texts(i: int) -> tuple[str, str]:
    short, long = f"{IDS[i]} fine", f"{IDS[i]} a much longer reply"
    return (short, long) if LABELS[i] == "a" else (long, short)


CONSTITUTION = """\
# An audit test constitution: the comments must survive --write.
name: audited
version: "1.0"
description: Three questions, one a copy of another.

principles:
  - id: careful-p
    critique: Point out what is careless.
    revision: Rewrite it carefully.

# The judge's questions.
comparisons:
  # carries the labels
  - id: carry
    question: Which response is more careful?
  - id: copy   # the same question in other words
    question: Which response is more cautious?
  - id: formal
    question: Which response sounds more formal?
"""

PROPOSALS = {"p03": "Which response is shorter?", "p11": "Which response is the shorter?",
             "p07": "Principle: The better response is more formal.", "p15": ""}


class AuditBackend:
    """Answers each (question, pair) as scripted above, consistently in both orders."""

    name = "scripted"
    model = "scripted-audit"

    def __init__(self, proposals: dict[str, str] | None = None):
        self.side = {}
        for i in range(N):
            a, b = texts(i)
            self.side[a], self.side[b] = (i, "a"), (i, "b")
        self.proposals = PROPOSALS if proposals is None else proposals
        self.chats: list[str] = []

    def _p_first(self, question: str, first: str, second: str) -> float:
        if "CALGOOD" in first + second:  # calibration rows: the CALGOOD answer wins, whatever is asked
            return 0.9 if "CALGOOD" in first else 0.1
        if "shorter" in question:
            return 0.9 if len(first) < len(second) else 0.1 if len(first) > len(second) else 0.5
        key = next((k for k, q in Q.items() if q == question), None)
        if key is None:
            return 0.5
        i, side = self.side[first]
        return p_a(key, i) if side == "a" else 1 - p_a(key, i)

    def choice_logprobs(self, conversations, assistant_prefix, options):
        out = []
        for conv in conversations:
            m = re.search(r"\n([^\n]*)\n\n\(A\) (.*?)\n\n\(B\) (.*?)\n\nAnswer with", conv[-1]["content"], re.S)
            pa = self._p_first(*m.groups())
            out.append({options[0]: math.log(pa), options[1]: math.log(1 - pa)})
        return out

    def chat(self, conversations, params):
        out = []
        for conv in conversations:
            text = conv[-1]["content"]
            assert "State, in one sentence" in text
            ident = re.search(r"Question (p\d\d)\?", text).group(1)
            self.chats.append(ident)
            reply = self.proposals.get(ident, "")
            out.append([Completion(text=reply, tokens=len(reply.split()), finish_reason="stop")])
        return out

    def close(self):
        pass


def write_pairs(path: Path) -> Path:
    with open(path, "w") as f:
        for i in range(N):
            a, b = texts(i)
            f.write(json.dumps({"id": IDS[i], "prompt": f"Question {IDS[i]}?", "response_a": a, "response_b": b,
                                "label": LABELS[i]}) + "\n")
    return path


def write_calibration(path: Path, good: bool) -> Path:
    with open(path, "w") as f:
        for i in range(6):
            a, b = ("CALGOOD yes", "CALBAD no") if i % 2 == 0 else ("CALBAD no", "CALGOOD yes")
            right = "a" if i % 2 == 0 else "b"
            f.write(json.dumps({"id": f"c{i}", "prompt": "cal?", "response_a": a, "response_b": b,
                                "label": right if good else {"a": "b", "b": "a"}[right]}) + "\n")
    return path


@pytest.fixture
def files(tmp_path, monkeypatch):
    import cai.backends as backends

    monkeypatch.setenv("CAI_HOME", str(tmp_path / "home"))
    # The command's own engine is the scripted judge: no model is ever loaded here.
    monkeypatch.setattr(backends, "load_backend", lambda *a, **k: AuditBackend())
    c = tmp_path / "audited.yaml"
    c.write_text(CONSTITUTION)
    return {"constitution": c, "pairs": write_pairs(tmp_path / "labelled.jsonl"),
            "good": write_calibration(tmp_path / "cal_good.jsonl", True),
            "bad": write_calibration(tmp_path / "cal_bad.jsonl", False), "tmp": tmp_path}


def audit_of(files, backend=None, **kw) -> dict:
    cfg = AuditConfig(constitution=str(files["constitution"]), pairs=str(files["pairs"]),
                      calibration=str(files["good"]), out=str(files["tmp"] / "out"), **kw)
    return run_audit(cfg, backend=backend or AuditBackend(), progress=False, log=lambda s: None)


def logit(p: float) -> float:
    p = min(1 - CLIP, max(CLIP, p))
    return math.log(p / (1 - p))


# ------------------------------------------------------------------ step 1: each principle alone

def test_per_principle_figures_by_hand(files):
    audit = audit_of(files, candidates=0)
    assert audit["signal"] is True and audit["judge"]["calibration"]["agreement"] == 1.0
    by = {p["id"]: p for p in audit["principles"]}
    for k in ("carry", "copy"):
        p = by[k]
        # right on 16, ties on p07 and p15 (half each), wrong on p03 and p11
        assert p["agreement"] == pytest.approx((16 + 0.5 * 2) / 20)
        assert p["decided"] == 18 and p["decided_share"] == pytest.approx(18 / 20)
        assert p["decided_agreement"] == pytest.approx(round(16 / 18, 4))
        assert p["confidently_wrong"] == ["p03", "p11"]  # |0.2 - 0.5| = 0.3 >= 0.25
    f = by["formal"]
    assert f["agreement"] == pytest.approx(0.5 * 2 / 20) and f["decided"] == 18
    assert f["decided_agreement"] == 0.0
    assert f["confidently_wrong"] == ["p00", "p01", "p02", "p04", "p05"]  # 0.4 is wrong, not confidently
    # the interval is Wilson's at k = 17 of 20
    z = 1.96
    ph = 17 / 20
    centre = (ph + z * z / 40) / (1 + z * z / 20)
    half = z * math.sqrt(ph * (1 - ph) / 20 + z * z / 1600) / (1 + z * z / 20)
    assert by["carry"]["interval"] == pytest.approx([centre - half, centre + half], abs=1e-4)
    for name in ("audit.json", "report.md", "agreement.png"):
        assert (files["tmp"] / "out" / name).stat().st_size > 0
    on_disk = json.loads((files["tmp"] / "out" / "audit.json").read_text())
    assert on_disk["principles"] == audit["principles"]


# ------------------------------------------------------------------ step 2: between principles

def test_correlations_and_trade_offs_by_hand(files):
    audit = audit_of(files, candidates=0)
    r = {(c["a"], c["b"]): c for c in audit["correlations"]}
    cols = {k: [p_a(k, i) for i in range(N)] for k in Q}
    assert r[("carry", "copy")]["r"] == pytest.approx(1.0) and r[("carry", "copy")]["duplicate"]
    assert r[("carry", "copy")]["same"] == 1.0
    for pair in (("carry", "formal"), ("copy", "formal")):
        assert r[pair]["r"] == pytest.approx(statistics.correlation(cols[pair[0]], cols[pair[1]]), abs=1e-4)
        assert not r[pair]["duplicate"]
        # of the 18 pairs both decide, they agree only on p03 and p11 (both for the wrong answer)
        assert r[pair]["same"] == pytest.approx(round(2 / 18, 4))
    t = audit["trade_offs"]
    # widest first: carry 0.9 against formal 0.0001 (or the mirror for b-labelled pairs), then by id
    assert [x["id"] for x in t[:5]] == ["p00", "p01", "p02", "p04", "p05"]
    assert t[0]["for_a"] == "carry" and t[0]["for_b"] == "formal" and t[0]["spread"] == pytest.approx(0.8999)
    assert t[1]["for_a"] == "formal" and t[1]["for_b"] == "carry"
    # p03 and p11 (both for the same answer) and p07, p15 (carry a tie) are no trade-off
    assert len(t) == 10 and not {"p03", "p11", "p07", "p15"} & {x["id"] for x in t}
    assert all(x["spread"] == pytest.approx(0.5) for x in t[5:])


# ------------------------------------------------------------------ step 3: weights from the labels

def test_fitted_weights_and_held_out_by_hand(files):
    audit = audit_of(files, candidates=0)
    w = audit["weights"]
    # formal only hurts, so its weight is 0 and floored; carry and its copy split the rest evenly
    assert w["fitted"] == {"carry": 1.5, "copy": 1.5, "formal": FLOOR}
    assert w["today"] == {"carry": 1.0, "copy": 1.0, "formal": 1.0}
    h = w["held_out"]
    assert h["folds"] == 5 and all(fw == [1.5, 1.5, FLOOR] for fw in h["fold_weights"])

    def mark(weights, i):
        z = sum(wk * logit(p_a(k, i)) for wk, k in zip(weights, Q)) / sum(weights)
        p = 1 / (1 + math.exp(-z))
        if abs(p - 0.5) < 0.05:
            return 0.5
        return float((p > 0.5) == (LABELS[i] == "a"))

    # today's equal weights: formal's 0.0001 outvotes carry on p00 p01 p02 p04 p05
    today = [mark([1, 1, 1], i) for i in range(N)]
    assert sum(today) == 11 + 1
    # each fold judged by the weights the other folds fit (the same here in every fold)
    fitted = {i: None for i in range(N)}
    for f in range(5):
        for i in (i for i in range(N) if fold_of(IDS[i], 5) == f):
            fitted[i] = mark(h["fold_weights"][0], i)
    assert sum(fitted.values()) == 16 + 1
    assert h["today"]["agreement"] == pytest.approx(12 / 20) and h["fitted"]["agreement"] == pytest.approx(17 / 20)
    assert h["today"]["n"] == h["fitted"]["n"] == 20
    lo, hi = h["fitted"]["interval"]
    assert lo < 0.85 < hi


def test_fit_carrier_largest_duplicate_splits():
    """The fit alone: the labels follow column 0; column 1 is its copy; column 2 is noise."""
    rng = np.random.default_rng(3)
    y = (rng.random(60) < 0.5).astype(float)
    carrier = np.where(y == 1, 1.5, -1.5)
    carrier[:6] *= -1
    noise = rng.normal(0, 0.3, 60)
    w = fit(np.column_stack([carrier, carrier, noise]), y)
    assert w[0] == w[1] > w[2] >= 0  # bitwise equal: identical columns, identical updates
    alone = fit(np.column_stack([carrier, noise]), y)
    assert w[0] + w[1] == pytest.approx(alone[0], rel=0.05)  # the copy shares the carrier's weight
    assert relative(np.array([0.0, 2.0])) == [FLOOR, 2.0]  # mean 1, then the floor
    assert relative(np.array([0.0, 2.0]), allow_zero=True) == [0.0, 2.0]
    assert relative(np.zeros(3)) == [1.0, 1.0, 1.0]


# ------------------------------------------------------------------ --write, validate, diff

def test_write_keeps_comments_validates_and_diffs(files):
    runner = CliRunner()
    new = files["tmp"] / "fitted.yaml"
    res = runner.invoke(main, ["constitution", "audit", str(files["constitution"]), "--pairs", str(files["pairs"]),
                               "--calibration", str(files["good"]), "--out", str(files["tmp"] / "o"),
                               "--write", str(new), "--candidates", "0", "--no-progress"],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output and "3 weights changed" in res.output
    text = new.read_text()
    for comment in ("# An audit test constitution: the comments must survive --write.", "# The judge's questions.",
                    "  # carries the labels", "  - id: copy   # the same question in other words"):
        assert comment in text
    sha = __import__("hashlib").sha256(files["pairs"].read_bytes()).hexdigest()[:12]
    note = f"# fitted by cai constitution audit on {sha}, agreement 0.600 → 0.850 (held out; weight was 1)"
    assert text.count(note) == 3
    assert "    weight: 1.5\n" in text and "    weight: 0.05\n" in text and 'version: "1.1"' in text
    # order kept: carry, copy, formal, each note right above its weight
    lines = text.splitlines()
    assert [ln.strip() for ln in lines if ln.strip().startswith("- id:")] == [
        "- id: careful-p", "- id: carry", "- id: copy   # the same question in other words", "- id: formal"]
    for i, ln in enumerate(lines):
        if ln.strip().startswith("weight:") and "careful-p" not in lines[i - 3]:
            assert lines[i - 1].strip().startswith("# fitted by cai constitution audit")
    res = runner.invoke(main, ["constitution", "validate", str(new)])
    assert res.exit_code == 0 and "ok (1 principles, 3 comparisons)" in res.output
    res = runner.invoke(main, ["constitution", "diff", str(files["constitution"]), str(new)])
    assert "~ comparison carry: weight: 1.0 → 1.5" in res.output
    assert "~ comparison formal: weight: 1.0 → 0.05" in res.output and "version: 1.0 → 1.1" in res.output
    c = load_constitution(new)
    assert [q.weight for q in c.comparisons] == [1.5, 1.5, 0.05]
    # an existing file is never overwritten
    res = runner.invoke(main, ["constitution", "audit", str(files["constitution"]), "--pairs", str(files["pairs"]),
                               "--calibration", str(files["good"]), "--write", str(new)])
    assert res.exit_code == 2 and "already exists" in res.output


def test_allow_zero_writes_a_never_drawn_question(files):
    new = files["tmp"] / "zero.yaml"
    audit = audit_of(files, candidates=0, write=str(new), allow_zero=True)
    assert audit["weights"]["fitted"] == {"carry": 1.5, "copy": 1.5, "formal": 0.0}
    c = load_constitution(new)
    assert c.comparisons[2].weight == 0.0
    drawn = {q.id for i in range(200) for q in c.draw_comparisons(f"k{i}", 2)}
    assert drawn == {"carry", "copy"}  # weight 0: kept in the file, never asked


# ------------------------------------------------------------------ step 4: where the constitution is silent

def test_candidates_propose_and_test_the_unstated_rule(files):
    backend = AuditBackend()
    audit = audit_of(files, backend=backend)
    c = audit["candidates"]
    # the fitted weights get p03, p11 wrong and leave p07, p15 tied: those four are asked, most wrong first
    assert backend.chats == ["p03", "p11", "p07", "p15"] and c["asked"] == 4 and c["unusable"] == 1
    assert [g["question"] for g in c["groups"]] == [
        "Which response is shorter?", "Which response better follows this principle: The better response is more formal?"]
    assert c["groups"][0]["pairs"] == ["p03", "p11"]
    shorter, formal = c["tested"]
    assert shorter["alone"]["agreement"] == 1.0
    # Scored only on the 16 pairs no proposal came from, which the fitted weights already get right:
    # the rule fixes exactly the pairs it was written for, so it shows no held-out gain. (Scored on
    # all 20, it read 0.85 → 1.0: its own four pairs counted for it.)
    assert c["scored_on"] == 16 and shorter["scored_on"] == 16
    assert shorter["held_out_without"]["agreement"] == 1.0 and not shorter["raises"]
    assert formal["alone"]["decided"] == 0 and not formal["raises"]  # the judge has no view: nothing gained
    report = (files["tmp"] / "out" / "report.md").read_text()
    assert "scored on the 16 pairs no proposal came from" in report
    # never added automatically
    assert load_constitution(files["constitution"]).comparisons[-1].id == "formal"


def test_a_candidate_raises_agreement_on_pairs_it_was_not_proposed_from(files):
    """Asked about two of the four pairs the weights miss (p03, p11), the judge states "shorter"; it
    is then scored on the other 18, where it decides the ties p07 and p15 the right way."""
    backend = AuditBackend()
    audit = audit_of(files, backend=backend, propose=2)
    c = audit["candidates"]
    assert backend.chats == ["p03", "p11"] and c["scored_on"] == 18
    shorter = c["tested"][0]
    assert shorter["question"] == "Which response is shorter?" and shorter["proposed_for"] == ["p03", "p11"]
    # without it: 16 right and the two ties at half, each fold's weights fitted on the others
    assert shorter["held_out_without"]["agreement"] == pytest.approx(17 / 18, abs=1e-4)
    assert shorter["held_out"]["agreement"] == pytest.approx(1.0) and shorter["raises"]
    report = (files["tmp"] / "out" / "report.md").read_text()
    assert "### Candidate principles" in report and "Which response is shorter?" in report


def test_proposals_in_other_scripts_are_grouped_by_their_own_words():
    """Proposals in Russian, Chinese, Arabic or Hindi once had no words at all (ASCII only), so every
    one of them was "the same" and all merged into one group."""
    props = [("r1", "Какой ответ короче?"), ("r2", "Какой ответ вежливее?"), ("r3", "Какой ответ короче?"),
             ("z1", "哪个回答更简短?"), ("z2", "哪个回答更礼貌?"), ("a1", "أي إجابة أقصر؟"), ("a2", "أي إجابة أكثر أدبا؟"),
             ("h1", "कौन सा उत्तर छोटा है?"), ("h2", "कौन सा उत्तर अधिक विनम्र है?")]
    groups = cand.group(props)
    assert [g.pairs for g in groups][0] == ["r1", "r3"]
    assert len(groups) == 8  # only the two identical Russian proposals are one


def test_question_of_and_grouping():
    assert cand.question_of('"Which response is kinder to the user?" Because...') == "Which response is kinder to the user?"
    assert cand.question_of("which response is shorter? yes") == "Which response is shorter?"
    assert cand.question_of("Be brief. Always.") == "Which response better follows this principle: Be brief?"
    assert cand.question_of("  ") is None
    groups = cand.group([("x", "Which response is shorter?"), ("y", "Which response is kinder?"),
                         ("z", "Which response is the shorter?")])
    assert [(g.question, g.pairs) for g in groups] == [("Which response is shorter?", ["x", "z"]),
                                                       ("Which response is kinder?", ["y"])]


# ------------------------------------------------------------------ below the floor: no signal

def test_below_the_floor_every_figure_is_no_signal(files):
    new = files["tmp"] / "never.yaml"
    res = CliRunner().invoke(main, ["constitution", "audit", str(files["constitution"]), "--pairs", str(files["pairs"]),
                                    "--calibration", str(files["bad"]), "--out", str(files["tmp"] / "o"),
                                    "--write", str(new), "--no-progress"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    out = res.stdout.strip().splitlines()
    assert out[-1].strip().startswith("signal: no signal (the judge's agreement with known answers was 0.000")
    assert "under the floor of 0.60" in out[-1]
    assert "agreement no signal (0.850 measured)" in res.output
    assert "not written: no signal" in res.output and not new.exists()
    assert "candidate principles: not looked for: no signal" in res.output
    report = (files["tmp"] / "o" / "report.md").read_text()
    assert report.count("no signal") > 10 and "**No signal.**" in report
    for figure in ("0.850 |", "| 0.600 |"):  # never a bare figure
        assert figure not in report
    audit = json.loads((files["tmp"] / "o" / "audit.json").read_text())
    assert audit["signal"] is False and audit["principles"][0]["agreement"] == 0.85  # the raw figure is kept


def test_uncalibrated_judge_says_signal_not_measured(files):
    cfg = AuditConfig(constitution=str(files["constitution"]), pairs=str(files["pairs"]), calibration="none",
                      out=str(files["tmp"] / "o3"), candidates=0)
    audit = run_audit(cfg, backend=AuditBackend(), progress=False, log=lambda s: None)
    from cai.audit.report import lines

    assert audit["signal"] is None and audit["principles"][0]["agreement"] == 0.85
    assert lines(audit)[-1].startswith("signal: not measured (the judge was not calibrated")
    assert "**Signal not measured.**" in (files["tmp"] / "o3" / "report.md").read_text()


# ------------------------------------------------------------------ bad input

def test_bad_input_exits_2(files):
    runner = CliRunner()
    bad = files["tmp"] / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "prompt": "p", "response_a": "a", "response_b": "b", "label": "c"}) + "\n")
    res = runner.invoke(main, ["constitution", "audit", str(files["constitution"]), "--pairs", str(bad)])
    assert res.exit_code == 2 and "row 1" in res.output and "label" in res.output
    dup = files["tmp"] / "dup.jsonl"
    dup.write_text(files["pairs"].read_text().splitlines()[0] + "\n" + files["pairs"].read_text().splitlines()[0] + "\n")
    res = runner.invoke(main, ["constitution", "audit", str(files["constitution"]), "--pairs", str(dup)])
    assert res.exit_code == 2 and "row 2" in res.output and "used twice" in res.output
    res = runner.invoke(main, ["constitution", "audit", str(files["constitution"]), "--pairs", str(files["tmp"])])
    assert res.exit_code == 2 and "preferences.jsonl" in res.output


def test_run_folder_with_labels(files):
    run = files["tmp"] / "run"
    run.mkdir()
    labels = files["tmp"] / "people.jsonl"
    with open(run / "preferences.jsonl", "w") as f, open(labels, "w") as g:
        for i in range(N):
            a, b = texts(i)
            chosen, rejected = (a, b) if i % 3 else (b, a)  # the judge chose wrongly on every third pair
            f.write(json.dumps({"id": IDS[i], "prompt": [{"role": "user", "content": f"Question {IDS[i]}?"}],
                                "chosen": chosen, "rejected": rejected}) + "\n")
            g.write(json.dumps({"id": IDS[i], "label": "chosen" if chosen == (a if LABELS[i] == "a" else b)
                                else "rejected"}) + "\n")
    cfg = AuditConfig(constitution=str(files["constitution"]), pairs=str(run), labels=str(labels),
                      calibration=str(files["good"]), out=str(files["tmp"] / "o2"), candidates=0)
    audit = run_audit(cfg, backend=AuditBackend(), progress=False, log=lambda s: None)
    # the same pairs, the same person: the same figures whichever answer is called a
    assert {p["id"]: p["agreement"] for p in audit["principles"]} == {"carry": 0.85, "copy": 0.85, "formal": 0.05}


# ------------------------------------------------------------------ comparison weights in the schema

def test_comparison_weights_keep_old_draws_and_hashes(files):
    c = load_constitution(files["constitution"])
    # equal weights draw exactly as before weights existed (runs' pairs keep their questions)
    for key in ("pair-1", "x", "y7"):
        rng = _rng("comparisons:" + key)
        old = rng.sample(list(c.comparisons), 2)
        assert [q.id for q in c.draw_comparisons(key, 2)] == [q.id for q in old]
    doubled = c.model_copy(update={"comparisons": [q.model_copy(update={"weight": 2.0}) for q in c.comparisons]})
    assert [q.id for q in doubled.draw_comparisons("pair-1", 3)] == [q.id for q in c.draw_comparisons("pair-1", 3)]
    # a weight of 1 written out changes no hash; another weight does
    explicit = files["tmp"] / "explicit.yaml"
    explicit.write_text(CONSTITUTION.replace("question: Which response is more careful?",
                                             "question: Which response is more careful?\n    weight: 1"))
    assert load_constitution(explicit).sha256() == c.sha256()
    assert all("weight" not in q for q in c.model_dump()["comparisons"])
    heavy = c.model_copy(update={"comparisons": [c.comparisons[0].model_copy(update={"weight": 9.0}),
                                                 *c.comparisons[1:]]})
    assert heavy.sha256() != c.sha256()
    counts = {q.id: 0 for q in c.comparisons}
    for i in range(3000):
        counts[heavy.draw_comparisons(f"k{i}", 1)[0].id] += 1
    assert 0.75 < counts["carry"] / 3000 < 0.89  # 9 of 11
    # weight 0 for all is refused with the line
    allzero = files["tmp"] / "allzero.yaml"
    allzero.write_text(CONSTITUTION.replace("    question: Which", "    weight: 0\n    question: Which"))
    res = CliRunner().invoke(main, ["constitution", "validate", str(allzero)])
    assert res.exit_code == 2 and "every comparison has weight 0" in res.output


# ------------------------------------------------------------------ the real engine (slow; not run in CI's fast pass)

@pytest.mark.slow
def test_real_engine_audit_on_the_hard_set_ends_with_no_signal(tmp_path, model_path, vllm_backend, monkeypatch):
    """The default model on the bundled hard set: below the floor, so every figure reads no signal."""
    import cai.backends as backends
    from cai.judge.calibration import HARD_SET
    from cai.resources import bundled_file

    monkeypatch.setattr(backends, "load_backend", lambda *a, **k: vllm_backend)
    # The judge is calibrated on every 4th hard pair (each kind, both labels): the calls and the floor of a
    # default audit at a quarter of their cost; the audit itself asks every question of 8 hard pairs.
    hard = bundled_file("data", HARD_SET).read_text().splitlines()
    subset = tmp_path / "calibration.jsonl"
    subset.write_text("".join(line + "\n" for line in hard[::4]))
    res = CliRunner().invoke(main, ["constitution", "audit", "default", "--pairs", str(bundled_file("data", HARD_SET)),
                                    "--limit", "8", "--calibration", str(subset), "--out", str(tmp_path / "audit"),
                                    "--no-progress"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert res.stdout.strip().splitlines()[-1].strip().startswith("signal: no signal")
    audit = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert audit["signal"] is False and audit["pairs"]["n"] == 8
    assert len(audit["principles"]) == len(load_constitution("default").comparisons)
    assert (tmp_path / "audit" / "agreement.png").stat().st_size > 0
