"""`cai demo`'s closing figures, from metrics dicts shaped as cai/train and cai/evaluate write them."""

from __future__ import annotations

from cai.commands.demo import headline_lines, train_figures

# The names cai/train/output.py:summarize gives (first_/last_ + the logged figure).
SFT = {"stage": "sft", "steps": 12, "first_loss": 2.5, "last_loss": 1.75, "output": "o", "saved": "merged"}
DPO = {"stage": "dpo", "steps": 12, "first_loss": 0.6931, "last_loss": 0.61, "first_reward_margin": 0.0,
       "last_reward_margin": 0.125, "first_reward_accuracy": 0.0, "last_reward_accuracy": 0.75,
       "output": "o", "saved": "merged"}
EVAL = {"win_rate": 0.52, "win_rate_ci": [0.4, 0.64], "n": 32, "harmlessness": 0.25, "harmlessness_baseline": 0.125,
        "over_refusal": 0.1, "over_refusal_baseline": 0.0}


def test_train_figures_use_the_trainer_metric_names():
    assert train_figures(SFT) == "loss 2.500 → 1.750"
    line = train_figures(DPO)
    assert "reward margin 0.000 → 0.125" in line and "reward accuracy 0.000 → 0.750" in line
    assert train_figures({"first_loss": 0.7, "last_loss": 0.5, "heldout_accuracy": 0.75, "heldout_pairs": 4}) == \
        "loss 0.700 → 0.500, held-out accuracy 0.750 on 4 pairs"


def test_headline_shows_dpo_margin_and_safety_figures():
    lines = headline_lines(SFT, DPO, EVAL)
    text = "\n".join(lines)
    assert lines[1].startswith("DPO") and "reward margin 0.000 → 0.125" in lines[1]
    assert "win rate aligned vs base  0.520  (95% CI 0.400-0.640, n=32)" in text
    assert "harmlessness (refuses harmful)  aligned 0.250, base 0.125" in text
    assert "over-refusal (refuses benign)   aligned 0.100, base 0.000" in text
    # DPO skipped (too few pairs) and figures missing: still a headline, never a KeyError
    lines = headline_lines(SFT, {}, {"win_rate": None, "win_rate_ci": None, "n": 0})
    assert "DPO  skipped" in lines[1] and "n/a" in lines[2]


def test_headline_says_no_signal_and_how_to_get_one():
    ev = {**EVAL, "signal": False, "refusal_reader": "phrases",
          "signal_reasons": ["the judge agreed with known answers on 0.512 of calibration pairs, under the floor of 0.60"]}
    text = "\n".join(headline_lines(SFT, DPO, ev))
    assert "win rate aligned vs base  no signal: the judge agreed with known answers on 0.512" in text
    assert "noise, not a finding" in text and "0.520  (95% CI" not in text
    assert "too small to critique or judge" in text and "cai demo --model DIR" in text
    assert "read by the phrase detector" in text


def test_quality_lines_give_flags_calibration_and_length_bias():
    from types import SimpleNamespace

    from cai.commands.demo import quality_lines

    gsum = SimpleNamespace(flag_counts={"truncated": 3, "repetition": 2, "_excluded": 4}, rows_total=10)
    jsum = SimpleNamespace(calibration={"agreement": 0.5125, "n": 160, "min_agreement": 0.6, "longer_wins": 0.7},
                           stats={"longer_wins": 0.8})
    flags, judge = quality_lines(gsum, jsum)
    assert flags.startswith("flags    truncated 3  repetition 2  echo 0") and "4 of 10 final answers flagged" in flags
    assert "agreement 0.512 on 160" in judge and "longer answer wins 0.700" in judge and "0.800 on this run" in judge
