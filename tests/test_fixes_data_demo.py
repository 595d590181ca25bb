"""`cai demo`'s closing figures, from metrics dicts shaped as cai/train and cai/evaluate write them."""

from __future__ import annotations

from cai.commands.demo import headline_lines, train_figures

# The names cai/train/common.py:summarize gives (first_/last_ + the logged figure).
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
