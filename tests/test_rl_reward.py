"""The AI judge as an RL reward (issue 25 §4): calibrated before training, as `cai judge` does, and
its probability mapped by a temperature fitted to the calibration labels.

Fast: a scripted judge (tests/scripted.py) says p = 0.9 for the answer holding GOOD, 0.1 for the
other, 0.5 when neither or both do, so every figure below is worked out by hand. No trainer is built.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from cai.cli import main
from cai.errors import Failure, UsageError
from cai.judge.calibration import floor_paragraph
from cai.train.data import read_data
from cai.train.recipe import load_recipe
from cai.train.reward_calibration import SERVED_JUDGE, RewardMap, fit_scale, log_loss
from cai.train.stage import Job
from tests.scripted import ScriptedBackend

PROMPT = "How should I answer my landlord's letter?"


def _pair(i, a, b, label):
    return {"id": f"c{i}", "prompt": PROMPT, "response_a": a, "response_b": b, "label": label}


# The judge is right on 3 of 4 (c4's label goes against GOOD): agreement 0.75, all four at |p - 0.5| = 0.4.
THREE_OF_FOUR = [_pair(1, "GOOD one", "plain one", "a"), _pair(2, "plain two", "GOOD two", "b"),
                 _pair(3, "GOOD three", "plain three", "a"), _pair(4, "GOOD four", "plain four", "b")]
# Right on 2 of 4: agreement 0.5, a coin flip.
TWO_OF_FOUR = THREE_OF_FOUR[:2] + [_pair(3, "GOOD three", "plain three", "b"), THREE_OF_FOUR[3]]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _data(tmp_path: Path) -> Path:
    rows = [{"prompt": [{"role": "user", "content": PROMPT}],
             "chosen": [{"role": "assistant", "content": "A calm, clear reply."}],
             "rejected": [{"role": "assistant", "content": "Ignore it."}]}]
    return _write(tmp_path / "prefs.jsonl", rows)


def _job(tmp_path, logs, **cai):
    recipe = load_recipe("rl", overrides={"reward": "judge", **cai}, device="cpu")
    rows, info = read_data(_data(tmp_path), "dpo")
    return Job(stage="rl", recipe=recipe, args=SimpleNamespace(seed=0), model="m", model_dir=Path("m"),
               tokenizer=None, rows=[{"prompt": r["prompt"], "reference": "Ignore it."} for r in rows], data=info,
               out=tmp_path / "o", log=logs.append)


def _reward(tmp_path, rows, backend=None, **cai):
    from cai.train.rl import _judge_reward

    logs: list[str] = []
    job = _job(tmp_path, logs, calibration=str(_write(tmp_path / "cal.jsonl", rows)), **cai)
    fn = _judge_reward(job, backend=backend or ScriptedBackend())
    return fn, job, logs


def _ask(fn, pairs):
    """The reward of each (completion, reference) for one prompt, as TRL calls the function."""
    prompt = [{"role": "user", "content": PROMPT}]
    return fn(prompts=[prompt] * len(pairs), completions=[[{"role": "assistant", "content": c}] for c, _ in pairs],
              reference=[r for _, r in pairs])


# ---------------------------------------------------------------- the fit, by hand

def test_fit_scale_by_hand():
    # Four points at |logit p| = ln 9, three on the label's side: the best sigmoid(a ln 9) is 3/4,
    # so a ln 9 = ln 3 and a = 1/2 (temperature 2).
    points = [(0.9, True), (0.1, False), (0.9, True), (0.9, False)]
    assert fit_scale(points) == pytest.approx(0.5, abs=1e-9)
    m = RewardMap.fitted(points)
    assert m.method == "temperature" and m.scale == 0.5 and m.temperature == 2.0 and m.pairs == 4
    assert m(0.9) == pytest.approx(0.75) and m(0.1) == pytest.approx(0.25) and m(0.5) == 0.5
    assert m.log_loss_raw == round((3 * math.log(10 / 9) + math.log(10)) / 4, 4)
    assert m.log_loss_calibrated == round((3 * math.log(4 / 3) + math.log(4)) / 4, 4)
    assert log_loss(points, m) < log_loss(points, lambda p: p)
    # Half right: the log-odds say nothing, weight 0; wrong more often than right: still 0, never a flip.
    assert fit_scale([(0.9, True), (0.9, False)]) == 0.0
    assert fit_scale([(0.9, False), (0.2, True), (0.7, True)]) == 0.0
    assert RewardMap.fitted([(0.9, False), (0.9, False)])(0.9) == 0.5
    # Every pair at 0.5: nothing to fit, the raw p it is.
    raw = RewardMap.fitted([(0.5, True), (0.5, False)])
    assert raw.method == "none" and "nothing to fit" in raw.reason and raw(0.8) == 0.8
    # A set the judge gets wholly right has no finite best: capped, every reward all but 0 or 1.
    assert fit_scale([(0.9, True), (0.2, False)]) == 50.0


# ---------------------------------------------------------------- the reward, both sides of the floor

def test_above_the_floor_the_reward_is_the_calibrated_probability(tmp_path):
    fn, job, logs = _reward(tmp_path, THREE_OF_FOUR)
    cal = job.extra["judge_calibration"]
    assert cal["agreement"] == 0.75 and cal["n"] == 4 and cal["min_agreement"] == 0.6 and cal["below_floor"] is False
    assert cal["ties"] == 0  # the reward's judge has no tie threshold: 0.9 and 0.1 are decided
    rc = job.extra["reward_calibration"]
    assert rc["method"] == "temperature" and rc["scale"] == 0.5 and rc["temperature"] == 2.0 and rc["pairs"] == 4
    # GOOD beats the reference: raw 0.9 → 0.75; the reference holds GOOD: 0.1 → 0.25; both: 0.5 stays 0.5.
    got = _ask(fn, [("GOOD answer", "plain reference"), ("plain answer", "GOOD reference"), ("GOOD a", "GOOD b")])
    assert got == pytest.approx([0.75, 0.25, 0.5])
    assert not any("BELOW THE FLOOR" in line for line in logs)
    assert any("agreement 0.750 on 4 labelled pairs" in line for line in logs)
    assert any("temperature T 2.000" in line for line in logs)


def test_below_the_floor_prints_the_paragraph_and_trains_on(tmp_path):
    fn, job, logs = _reward(tmp_path, THREE_OF_FOUR, min_agreement=0.8)
    cal = job.extra["judge_calibration"]
    assert cal["below_floor"] is True and cal["min_agreement"] == 0.8
    assert "rl: BELOW THE FLOOR      " + floor_paragraph(cal, SERVED_JUDGE) in logs
    assert "0.750 on 4 labelled pairs, below the floor of 0.800" in floor_paragraph(cal)
    assert "--judge-backend openai --judge-base-url" in floor_paragraph(cal, SERVED_JUDGE)
    # Below the floor the map is still the fitted one: the floor says how far to trust it, not what it is.
    assert _ask(fn, [("GOOD answer", "plain reference")]) == pytest.approx([0.75])


def test_strict_below_the_floor_stops_before_training(tmp_path):
    with pytest.raises(Failure) as err:
        _reward(tmp_path, THREE_OF_FOUR, min_agreement=0.8, strict=True)
    assert "below the floor of 0.800" in str(err.value) and str(err.value).endswith("(--strict: nothing was trained)")
    # --strict with a floor the judge clears: nothing stops
    fn, job, _ = _reward(tmp_path, THREE_OF_FOUR, strict=True)
    assert job.extra["judge_calibration"]["below_floor"] is False


def test_a_coin_flip_judge_gets_no_weight(tmp_path):
    fn, job, logs = _reward(tmp_path, TWO_OF_FOUR)
    cal = job.extra["judge_calibration"]
    assert cal["agreement"] == 0.5 and cal["below_floor"] is True
    rc = job.extra["reward_calibration"]
    assert rc["method"] == "temperature" and rc["scale"] == pytest.approx(0.0, abs=1e-6)
    assert _ask(fn, [("GOOD answer", "plain reference")]) == pytest.approx([0.5], abs=1e-6)
    assert any("every reward is 0.5" in line for line in logs)


def test_calibration_none_rewards_the_raw_probability(tmp_path):
    from cai.train.rl import _judge_reward

    logs: list[str] = []
    job = _job(tmp_path, logs, calibration="none")
    be = ScriptedBackend()
    fn = _judge_reward(job, backend=be)
    assert not be.calls  # nothing was measured
    assert job.extra["judge_calibration"]["skipped"] is True
    assert job.extra["reward_calibration"] == RewardMap.raw("calibration skipped (--calibration none)").model_dump()
    assert any("signal: not measured" in line for line in logs)
    assert _ask(fn, [("GOOD answer", "plain reference"), ("plain", "GOOD ref")]) == pytest.approx([0.9, 0.1])


def test_a_reused_calibration_is_fitted_from_the_same_pairs(tmp_path, monkeypatch):
    # A local judge folder is cached (cai/judge/calibration.py): the second run reuses the figures,
    # and judges the set once more for the fit, which comes out the same.
    monkeypatch.setenv("CAI_HOME", str(tmp_path / "home"))
    folder = tmp_path / "judge-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    runs = []
    for _ in range(2):
        be = ScriptedBackend()
        be.model = str(folder)
        fn, job, logs = _reward(tmp_path, THREE_OF_FOUR, backend=be)
        runs.append((job.extra, be.calls))
    assert any("reused" in line for line in logs)
    (first, calls1), (second, calls2) = runs
    # (as metrics.json holds them: the cache gives back lists where the measured figures have tuples)
    assert json.dumps(first) == json.dumps(second) and first["reward_calibration"]["scale"] == 0.5
    # the first judged the 4 pairs for the figures (and the fit with them), the second for the fit only
    assert sum(n for _, n in calls1) == sum(n for _, n in calls2) == 4 * 2


# ---------------------------------------------------------------- recipe keys, flags, card, summary

def test_recipe_keys_and_their_record(tmp_path):
    r = load_recipe("rl", overrides={"reward": "judge", "calibration": "none", "min_agreement": 0.7, "strict": True},
                    device="cpu")
    assert (r.cai.calibration, r.cai.min_agreement, r.cai.strict) == ("none", 0.7, True)
    assert {"calibration", "min_agreement", "strict"} <= set(r.as_dict()["cai"])
    # defaults as `cai judge`'s: the bundled set, the 0.6 floor, not strict
    d = load_recipe("rl", overrides={"reward": "judge"}, device="cpu").cai
    assert (d.calibration, d.min_agreement, d.strict) == (None, 0.6, False)
    # a reward-model run records none of the judge's keys
    assert "calibration" not in load_recipe("rl", device="cpu").as_dict()["cai"]
    cfg = tmp_path / "r.yaml"
    cfg.write_text("cai:\n  reward: judge\n  min_agreement: 1.5\n")
    with pytest.raises(UsageError, match="min_agreement"):
        load_recipe("rl", cfg, device="cpu")
    # a missing or malformed calibration file is refused with the recipe, before any model loads
    with pytest.raises(UsageError, match="no such file"):
        load_recipe("rl", overrides={"reward": "judge", "calibration": str(tmp_path / "nope.jsonl")}, device="cpu")
    bad = _write(tmp_path / "bad.jsonl", [{**THREE_OF_FOUR[0], "label": "left"}])
    with pytest.raises(UsageError, match=r"bad.jsonl: row 1 \(id 'c1'\): label"):
        load_recipe("rl", overrides={"reward": "judge", "calibration": str(bad)}, device="cpu")
    # with --reward model the judge's file is not read
    load_recipe("rl", overrides={"calibration": str(tmp_path / "nope.jsonl")}, device="cpu")


def test_flags_in_help_and_bad_values_exit_2(tmp_path):
    res = CliRunner().invoke(main, ["train", "rl", "--help"])
    assert res.exit_code == 0
    for flag in ("--calibration FILE|none", "--min-agreement", "--strict"):
        assert flag in res.output
    data = _data(tmp_path)
    base = ["train", "rl", "--data", str(data), "--out", str(tmp_path / "o"), "--reward", "judge"]
    res = CliRunner().invoke(main, base + ["--min-agreement", "1.5"])
    assert res.exit_code == 2 and "--min-agreement" in res.output
    res = CliRunner().invoke(main, base + ["--calibration", str(tmp_path / "nope.jsonl")])
    assert res.exit_code == 2 and "nope.jsonl: no such file" in res.output
    bad = _write(tmp_path / "bad.jsonl", [{**THREE_OF_FOUR[0], "label": "left"}])
    res = CliRunner().invoke(main, base + ["--calibration", str(bad)])
    assert res.exit_code == 2 and "bad.jsonl: row 1" in res.output and "label" in res.output
    assert not (tmp_path / "o").exists()  # refused before the output folder was touched


def test_strict_through_the_command_exits_1(tmp_path, monkeypatch):
    # The whole command up to the trainer: the policy's tokenizer loads (no weights, no trainer), the
    # judge's engine is the scripted one, and --strict below the floor stops with exit 1.
    import cai.backends as backends

    monkeypatch.setattr(backends, "load_backend", lambda *a, **k: ScriptedBackend())
    cal = _write(tmp_path / "cal.jsonl", THREE_OF_FOUR)
    res = CliRunner().invoke(main, ["train", "rl", "--data", str(_data(tmp_path)), "--out", str(tmp_path / "o"),
                                    "--device", "cpu", "--reward", "judge", "--calibration", str(cal),
                                    "--min-agreement", "0.8", "--strict"])
    assert res.exit_code == 1, res.output
    assert "below the floor of 0.800" in res.output and "--strict: nothing was trained" in res.output
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_card_and_summary_record_the_calibration(tmp_path):
    from cai.train.card import write_card
    from cai.train.output import summary_lines
    from cai.train.rl import card_rows

    _, job, _ = _reward(tmp_path, THREE_OF_FOUR, min_agreement=0.8)
    metrics = {"stage": "rl", "steps": 1, "saved": "merged", "output": "o", "train_rows": 1, **job.extra}
    rows = card_rows(job.cai, metrics)
    labels = dict(rows)
    assert labels["reward judge calibration"] == ("agreement 0.750, position consistency 1.000, longer wins 0.000, "
                                                  f"n=4 on {tmp_path / 'cal.jsonl'}, floor 0.800 (**below the floor**: "
                                                  "the labels are close to chance)")
    assert labels["reward calibration"].startswith("calibrated probability sigmoid(logit(p) / T), temperature T 2.000 "
                                                   "fitted on 4 labelled pairs")
    (tmp_path / "model").mkdir()
    card = write_card(tmp_path / "model", stage="rl", model="m", model_dir=Path("m"), data=job.data,
                      recipe=job.recipe, metrics=metrics, trainer_name="GRPOTrainer", rows=rows).read_text()
    assert "| reward calibration | calibrated probability" in card
    final = card.split("## Final metrics")[1].split("## Recipe")[0]
    assert "judge_calibration" not in final and "reward_calibration" not in final  # dicts: lines of their own
    lines = summary_lines(metrics)
    assert ("reward judge: agreement 0.750 on 4 labelled pairs, floor 0.800: BELOW THE FLOOR, its rewards are "
            "close to chance") in lines
    assert "reward: calibrated, temperature 2.000 (log-odds weight 0.500)" in lines
    # skipped: said as not measured, in the card and the summary
    from cai.train.rl import _judge_reward

    job = _job(tmp_path, [], calibration="none")
    _judge_reward(job, backend=ScriptedBackend())
    metrics = {**metrics, **job.extra}
    assert "signal: not measured" in dict(card_rows(job.cai, metrics))["reward judge calibration"]
    assert "reward: the judge's raw probability (calibration skipped (--calibration none))" in summary_lines(metrics)
