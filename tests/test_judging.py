"""The judging package: the mode objects and their registry, the one tie rule, the refusal call on the
batcher, the rule choosing the judge's constitution, JudgeSettings, run_judge and the run loop."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import ClassVar

import pytest
import yaml

from cai.batching import Batcher, run_interruptible
from cai.constitution import load_constitution
from cai.errors import UsageError
from cai.judge import (Judge, JudgeConfig, JudgeSettings, PairInput, PairVerdict, RefusalJudge, build_judge,
                       choose_constitution, is_tie, outcome)
from cai.judge.modes import (ANSWER_PREFIX, COT_SUFFIX, PAIRWISE_MODES, REFUSAL_PREFIX, CotClamped, LogProbs,
                             PairwiseMode, RefusalQuestion, pairwise_mode)
from cai.prompts import Templates
from cai.records import read_rows
from tests.scripted import ScriptedBackend

PROMPT = [{"role": "user", "content": "How do I stay safe when hiking alone?"}]


class Recording(ScriptedBackend):
    """Scripted, and keeps every request: (kind, conversations, prefixes, params)."""

    def __init__(self, p_a: float = 0.8, **kw):
        super().__init__(**kw)
        self.p_a = p_a
        self.requests: list[tuple] = []

    def chat(self, conversations, params):
        self.requests.append(("chat", conversations, None, params))
        return super().chat(conversations, params)

    def choice_logprobs(self, conversations, assistant_prefix, options):
        self.requests.append(("logprobs", conversations, assistant_prefix, None))
        self._tick("logprobs", len(conversations))
        return [{options[0]: math.log(self.p_a), options[1]: math.log(1 - self.p_a)} for _ in conversations]


def ask(mode, backend, conv):
    """One question through a Batcher, as the judges ask it."""
    batcher = Batcher(backend)
    out = []

    async def job():
        out.append(await mode.p_option_a(batcher, conv))

    run_interruptible(batcher.run([job], window=1, on_done=lambda _: None))
    return out[0]


# ---------------------------------------------------------------- the modes

def test_the_registry_holds_the_pairwise_modes_with_their_ids_and_templates():
    assert list(PAIRWISE_MODES) == ["logprobs", "cot-clamped"]
    assert (LogProbs.template, CotClamped.template, RefusalQuestion.template) == ("judge.j2", "judge_cot.j2",
                                                                                  "refusal.j2")
    assert RefusalQuestion.id not in PAIRWISE_MODES  # asked of one answer, not of a pair


def test_logprobs_mode_reads_the_letter_after_its_prefix():
    be = Recording(p_a=0.8)
    mode = LogProbs()
    conv = mode.question(Templates(), PROMPT, "Which is kinder?", "first answer", "second answer")
    text = conv[0]["content"]
    assert "(A) first answer" in text and "(B) second answer" in text and "Which is kinder?" in text
    assert ask(mode, be, conv) == pytest.approx(0.8)
    assert [r[0] for r in be.requests] == ["logprobs"] and be.requests[0][2] == [ANSWER_PREFIX]
    assert mode.reply_tokens() == 1 and mode.rationale_tokens() is None


def test_cot_mode_writes_a_rationale_then_clamps():
    mode = CotClamped.from_config(JudgeConfig(mode="cot-clamped", cot_max_tokens=17, seed=5))
    assert (mode.max_tokens, mode.seed, mode.reply_tokens(), mode.rationale_tokens()) == (17, 5, 18, 17)
    conv = mode.question(Templates(), PROMPT, "Which is kinder?", "a", "b")
    assert "step by step" in conv[0]["content"]
    for p, clamped in ((0.99, 0.6), (0.01, 0.4), (0.55, 0.55)):
        be = Recording(p_a=p)
        assert ask(mode, be, conv) == pytest.approx(clamped)
        (kind, _, _, params), (kind2, _, prefixes, _) = be.requests
        assert (kind, kind2) == ("chat", "logprobs")
        assert (params.max_tokens, params.temperature, params.seed) == (17, 0.0, 5)
        assert prefixes[0].endswith(COT_SUFFIX)  # the letter is read after the judge's own rationale


def test_refusal_question_swaps_its_options():
    mode = RefusalQuestion()
    first = mode.question(Templates(), "q", "an answer", True)[0]["content"]
    second = mode.question(Templates(), "q", "an answer", False)[0]["content"]
    assert "(A) It refuses" in first and "(B) It refuses" in second and "an answer" in first
    assert mode.prefix == REFUSAL_PREFIX


def test_too_long_counts_each_modes_reply():
    class Small(ScriptedBackend):
        context_window = 100

        def count_tokens(self, conv, prefix=None):
            return 90

    conv = [{"role": "user", "content": "x"}]
    assert LogProbs().too_long(Small(), conv) is None  # 90 + 1
    assert CotClamped(max_tokens=20).too_long(Small(), conv) == (90, 100)  # 90 + 21
    assert RefusalQuestion().too_long(ScriptedBackend(), conv) is None  # an engine that cannot count never overflows


def test_config_mode_and_cot_stay_in_step():
    assert JudgeConfig().mode == "logprobs" and not JudgeConfig().cot
    assert JudgeConfig(cot=True).mode == "cot-clamped"
    assert JudgeConfig(mode="cot-clamped").cot
    with pytest.raises(UsageError, match="--cot is the judge mode cot-clamped"):
        JudgeConfig(cot=True, mode="logprobs")
    with pytest.raises(UsageError, match="unknown judge mode 'nope': choose one of logprobs, cot-clamped"):
        JudgeConfig(mode="nope")
    assert isinstance(pairwise_mode(JudgeConfig(cot=True, cot_max_tokens=7)), CotClamped)


def test_the_judge_records_its_modes_id_and_template():
    c = load_constitution("default")
    for cfg, mode, template in ((JudgeConfig(), "logprobs", "judge.j2"), (JudgeConfig(cot=True), "cot-clamped",
                                                                          "judge_cot.j2")):
        d = Judge(ScriptedBackend(), c, cfg).describe()
        assert d["mode"] == mode and list(d["templates"]) == [template]


@dataclass(frozen=True)
class FirstAlways(PairwiseMode):
    """A mode made up for the test: always prefers the response shown as (A)."""

    id: ClassVar[str] = "first-always"
    template: ClassVar[str] = "judge.j2"
    prefix: ClassVar[str | None] = ANSWER_PREFIX

    async def p_option_a(self, batcher, conv) -> float:
        return 1.0


def test_a_new_mode_is_one_class_and_one_registry_line(monkeypatch):
    monkeypatch.setitem(PAIRWISE_MODES, FirstAlways.id, FirstAlways)
    j = Judge(ScriptedBackend(), load_constitution("default"), JudgeConfig(mode="first-always"))
    (v,) = j.compare([PairInput(key="k", prompt=PROMPT, a="one", b="two")])
    # The position preference the two orders exist for: all of it cancels out.
    assert (v.p_first, v.p_second, v.p_a) == (1.0, 0.0, 0.5) and v.same_winner(0.05) is False
    assert j.describe()["mode"] == "first-always"
    assert JudgeSettings(mode="first-always").mode == "first-always"


# ---------------------------------------------------------------- the tie rule

@pytest.mark.parametrize("p_a, identical, threshold, expected", [
    (0.9, False, 0.05, "a"), (0.1, False, 0.05, "b"), (0.53, False, 0.05, "tie"), (0.5, False, 0.0, "tie"),
    (0.99, True, 0.05, "tie"), (0.56, False, 0.05, "a")])
def test_one_tie_rule_for_every_reader(p_a, identical, threshold, expected):
    v = PairVerdict(p_a=p_a, p_first=p_a, p_second=p_a, judgements=[], identical=identical)
    assert outcome(p_a, identical, threshold) == expected == v.winner(threshold)
    assert v.is_tie(threshold) == (expected == "tie") == is_tie(p_a, threshold, unasked=identical)


def test_an_unasked_pair_is_a_tie_and_swapping_turns_the_verdict():
    v = PairVerdict.unasked(["q1", "q2"], reason="too long")
    assert v.is_tie(0.0) and v.winner(0.0) == "tie" and not v.asked and v.question_ids == ["q1", "q2"]
    w = PairVerdict(p_a=0.7, p_first=0.9, p_second=0.5, judgements=[]).swapped()
    assert (w.p_a, w.p_first, w.p_second) == pytest.approx((0.3, 0.5, 0.1))


# ---------------------------------------------------------------- the refusal call

def test_refusals_go_through_the_batcher_in_both_orders():
    be = Recording(p_a=0.9)
    pairs = [("q", f"answer {i}") for i in range(5)] + [("q", "answer 0")]
    probs = RefusalJudge(be, Templates()).probs(pairs, window=16)
    assert set(probs) == {("q", f"answer {i}") for i in range(5)}
    # P("A") is 0.9 in both orders: refusing in one, complying in the other, so no opinion either way.
    assert all(p == pytest.approx(0.5) for p in probs.values())
    # Ten questions (five answers, two orders), gathered into one engine call.
    assert [(r[0], len(r[1])) for r in be.requests] == [("logprobs", 10)]
    assert be.requests[0][2] == [REFUSAL_PREFIX] * 10


def test_a_refusal_judge_that_reads_the_answer():
    class Reader(ScriptedBackend):
        def choice_logprobs(self, conversations, assistant_prefix, options):
            out = []
            for conv in conversations:
                text = conv[-1]["content"]
                refuses = "cannot" in text.split("The assistant answered:")[1]
                p_refuse = 0.8 if refuses else 0.3
                pa = p_refuse if "(A) It refuses" in text else 1 - p_refuse
                out.append({options[0]: math.log(pa), options[1]: math.log(1 - pa)})
            return out

    judge = RefusalJudge(Reader())
    probs = judge.probs([("q", "I cannot help."), ("q", "Sure, here it is.")])
    assert probs == {("q", "I cannot help."): pytest.approx(0.8), ("q", "Sure, here it is."): pytest.approx(0.3)}


# ---------------------------------------------------------------- the constitution rule

def _snapshot_run(tmp_path, name="bank", edit=None):
    c = load_constitution(name)
    data = c.model_dump(mode="json", exclude={"source"})
    if edit:
        data = edit(data)
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.yaml").write_text(yaml.safe_dump({"constitution_name": name, "constitution": data}))
    return run


def test_an_explicit_constitution_wins(tmp_path):
    run = _snapshot_run(tmp_path)
    chosen = choose_constitution("clinic", run_dir=run, data_name="bank",
                                 data_sha256=load_constitution("bank").sha256())
    assert chosen.constitution.name == "clinic" and chosen.how == "clinic"


def test_the_runs_snapshot_comes_next_even_when_its_file_changed(tmp_path):
    def edited(data):
        data["comparisons"] = data["comparisons"][:1]  # what the run was made with, not today's file
        return data

    run = _snapshot_run(tmp_path, edit=edited)
    chosen = choose_constitution(None, run_dir=run)
    assert chosen.constitution.name == "bank" and len(chosen.constitution.comparisons) == 1
    assert "run.yaml snapshot" in chosen.how and chosen.constitution.sha256()[:12] in chosen.how


def test_then_the_constitution_the_data_names_when_its_hash_matches(tmp_path):
    sha = load_constitution("bank").sha256()
    said: list[str] = []
    chosen = choose_constitution(None, data_name="bank", data_sha256=sha, log=said.append)
    assert chosen.constitution.name == "bank" and "named by the data" in chosen.how and not said
    # another hash: the named file is not what the data was made with
    chosen = choose_constitution(None, data_name="bank", data_sha256="0" * 64, log=said.append)
    assert chosen.constitution.name == "default" and chosen.how == "default"
    assert len(said) == 1 and "bank" in said[0] and "--constitution" in said[0]
    # a name no constitution has, the same
    assert choose_constitution(None, data_name="nowhere", data_sha256=sha, log=said.append).how == "default"
    # rows from several runs name several hashes: no one constitution, nothing to say
    said.clear()
    assert choose_constitution(None, data_name="bank", data_sha256=f"{sha},{sha[::-1]}",
                               log=said.append).how == "default"
    assert not said


def test_else_default(tmp_path):
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    assert choose_constitution(None).constitution.name == "default"
    assert choose_constitution(None, run_dir=empty).how == "default"


# ---------------------------------------------------------------- settings, run_judge, eval's judge

def test_judge_settings_make_the_judge_they_describe(monkeypatch):
    import cai.backends as backends

    started = []
    monkeypatch.setattr(backends, "load_backend", lambda name, model, **o: started.append((name, model)) or
                        ScriptedBackend())
    s = JudgeSettings(model="judge-m", backend="hf", ensemble=3, cot=True, threshold=0.08, cot_max_tokens=20, seed=4)
    j = build_judge(s, load_constitution("default"))
    assert started == [("hf", "judge-m")]
    assert (j.cfg.ensemble, j.cfg.threshold, j.mode) == (3, 0.08, CotClamped(max_tokens=20, seed=4))
    assert type(j.cfg) is JudgeConfig  # the judge keeps the part of the settings that changes verdicts
    given = ScriptedBackend()
    assert build_judge(s, load_constitution("default"), backend=given).backend is given and len(started) == 1


def test_eval_asks_the_judge_its_settings_describe():
    from cai.evaluate import EvalConfig

    cfg = EvalConfig(model="a", baseline="b", backend="hf", ensemble=2, judge_mode="cot-clamped", threshold=0.08,
                     seed=3, calibration="none", min_agreement=0.7)
    s = cfg.judge_settings()
    assert (s.model, s.backend, s.ensemble, s.mode, s.cot, s.threshold, s.seed) == ("b", "hf", 2, "cot-clamped", True,
                                                                                     0.08, 3)
    assert (s.constitution, s.calibration, s.min_agreement) == ("default", "none", 0.7)
    assert EvalConfig(model="a", judge_model="j").judge_settings().model == "j"


def test_eval_refuses_a_bad_judge_mode_before_any_engine(tmp_path, monkeypatch):
    from cai.evaluate import EvalConfig, run_eval

    def no_engine(*a, **k):
        raise AssertionError("no engine before the settings are checked")

    monkeypatch.setattr("cai.evaluate.load_backend", no_engine)
    with pytest.raises(UsageError, match="--cot is the judge mode"):
        run_eval(EvalConfig(model="a", cot=True, judge_mode="logprobs", out=str(tmp_path / "e")), progress=False)


def test_run_judge_checks_its_inputs_then_judges(tmp_path):
    from cai.pairs import JudgeRunConfig, run_judge

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"id": 1, "prompt": "hi", "response_a": "GOOD one", "response_b": "plain"}) + "\n")
    for cfg, message in ((JudgeRunConfig(), "give either RUN_DIR"),
                         (JudgeRunConfig(pairs=str(pairs)), "--pairs needs --out"),
                         (JudgeRunConfig(pairs=str(pairs), out="o", force_new=True), "--force-new applies to RUN_DIR"),
                         (JudgeRunConfig(run_dir=str(tmp_path)), "not a run folder")):
        with pytest.raises(UsageError, match=message):
            run_judge(cfg, backend=ScriptedBackend(), progress=False)
    out = tmp_path / "o.jsonl"
    s = run_judge(JudgeRunConfig(pairs=str(pairs), out=str(out), calibration="none"), backend=ScriptedBackend(),
                  progress=False)
    (row,) = read_rows(out)
    assert s.judged == 1 and row["winner"] == "a" and row["question_ids"]


# ---------------------------------------------------------------- the run loop

def test_map_batched_keeps_input_order_and_batches():
    from cai.runloop import map_batched

    be = Recording(p_a=0.6)
    mode = LogProbs()
    convs = [mode.question(Templates(), PROMPT, "q", f"a{i}", "b") for i in range(7)]
    got = map_batched(be, mode.p_option_a, convs, window=4)
    assert got == pytest.approx([0.6] * 7)
    assert [len(r[1]) for r in be.requests] == [4, 3]  # at most `window` in flight: two engine calls


def test_batch_run_counts_skips_flushes_and_calls():
    from cai.runloop import BatchRun

    be = Recording()
    batcher = Batcher(be)
    flushed, done = [], []
    loop = BatchRun(batcher, total=3, unit="x", progress=False, flush=lambda: flushed.append(1))

    def jobs():
        loop.skip()
        for i in range(2):
            async def job(i=i):
                await batcher.choice_logprobs([{"role": "user", "content": "(A) x (B) y Answer with"}], "p", ("A", "B"))
                return i
            yield job

    loop.run(jobs(), done.append, window=8)
    assert sorted(done) == [0, 1] and loop.calls == 1 and flushed and loop.seconds >= 0
    assert (loop.skipped, loop.finished) == (1, 2)
