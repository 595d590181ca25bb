"""The AI judge: pairwise comparisons and the refusal question, read from option probabilities.

- verdict.py   what a question comes to: verdicts in both orders and the one tie rule
- modes.py     how a question is asked and scored (logprobs, cot-clamped, refusal), and the registry
- pairwise.py  the pairwise Judge over a constitution's comparison questions (JudgeConfig, PairInput)
- refusal.py   the refusal call `cai eval` makes of each answer
- settings.py  JudgeSettings, the rule choosing the judge's constitution, and build_judge

How pairs are formed from a run and written (`cai judge`, `run_judge`) is cai/pairs.py.
"""

from cai.judge.modes import ANSWER_PREFIX, COT_CLAMP, COT_SUFFIX, OPTIONS, PAIRWISE_MODES
from cai.judge.pairwise import Judge, JudgeConfig, PairInput
from cai.judge.refusal import RefusalJudge
from cai.judge.settings import ChosenConstitution, JudgeSettings, build_judge, choose_constitution
from cai.judge.verdict import PairVerdict, RefusalVerdict, is_tie, outcome

__all__ = ["ANSWER_PREFIX", "COT_CLAMP", "COT_SUFFIX", "OPTIONS", "PAIRWISE_MODES", "ChosenConstitution", "Judge",
           "JudgeConfig", "JudgeSettings", "PairInput", "PairVerdict", "RefusalJudge", "RefusalVerdict",
           "build_judge", "choose_constitution", "is_tie", "outcome"]
