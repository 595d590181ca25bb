"""The AI judge as an RL reward, calibrated: measured before training, and its probability mapped.

`cai train rl --reward judge` measures its judge as `cai judge` does (cai/judge/calibration.py:
the same labelled set, the judge's own settings, the same floor, `--strict` exits 1 before
anything trains). The judge's P(completion beats the reference) is a raw probability: a small
judge is often far too sure or far too timid. What "calibrated" means here: one parameter, a
temperature on the judge's log-odds, fitted by maximum likelihood to the calibration set's labels,

    reward = sigmoid(scale * logit(p)),   scale = 1 / temperature >= 0,

over every labelled pair (decided or not: a pair at p = 0.5 has log-odds 0 and weighs nothing).
One parameter keeps the map monotone, so the judge's order of completions is never changed, only
how far apart their rewards are; a judge whose log-odds point the wrong way on the labelled set
gets scale 0, every reward 0.5, rather than a reward that flips its verdicts. Where calibration is
skipped (`--calibration none`) or every labelled pair sits at p = 0.5 (nothing to fit), the reward
is the raw p, and the record says so.
"""

from __future__ import annotations

import math
from typing import Callable, Literal

from pydantic import BaseModel, Field

from cai.errors import Failure
from cai.judge.calibration import calibrate, calibration_lines, floor_paragraph, resolve_source
from cai.judge.figures import MIN_AGREEMENT, fmt
from cai.judge.pairfile import read_labelled_pairs
from cai.judge.pairwise import Judge, PairInput
from cai.judge.verdict import PairVerdict

# A judge's p of exactly 0 or 1 (a rounded softmax) would have infinite log-odds.
EPS = 1e-6
# A set the judge gets wholly right has no finite best scale; past this every reward is 0 or 1 anyway.
MAX_SCALE = 50.0
# The served-judge flags the floor paragraph names in `cai train rl`.
SERVED_JUDGE = "--judge-backend openai --judge-base-url http://HOST:PORT --judge-model NAME"


def logit(p: float) -> float:
    p = min(max(p, EPS), 1 - EPS)
    return math.log(p / (1 - p))


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def fit_scale(points: list[tuple[float, bool]]) -> float | None:
    """The maximum-likelihood scale a >= 0 of sigmoid(a * logit(p)) for (p, label is a) points; None
    when no point has log-odds other than 0. The negative log-likelihood is convex in a, so its
    derivative sum(x * (sigmoid(a x) - y)) rises with a and is halved to its zero."""
    xs = [(logit(p), float(y)) for p, y in points]
    if not any(x for x, _ in xs):
        return None

    def slope(a: float) -> float:
        return sum(x * (sigmoid(a * x) - y) for x, y in xs)

    if slope(0.0) >= 0:
        return 0.0  # the judge's log-odds point away from the labels (or nowhere): no weight at all
    if slope(MAX_SCALE) <= 0:
        return MAX_SCALE
    lo, hi = 0.0, MAX_SCALE
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if slope(mid) < 0 else (lo, mid)
    return (lo + hi) / 2


def log_loss(points: list[tuple[float, bool]], prob: Callable[[float], float]) -> float:
    """Mean -log P(the label) under `prob` of each point's p."""
    total = 0.0
    for p, y in points:
        q = min(max(prob(p), EPS), 1 - EPS)
        total -= math.log(q if y else 1 - q)
    return round(total / len(points), 4)


class RewardMap(BaseModel):
    """How the judge's probability becomes the reward (metrics.json's `reward_calibration`)."""

    method: Literal["temperature", "none"] = Field(
        description="temperature: sigmoid(scale * logit(p)) fitted to the calibration labels; none: the raw p.")
    scale: float | None = Field(None, description="The weight of the judge's log-odds (1 / temperature).")
    temperature: float | None = Field(None, description="1 / scale; None when scale is 0 (every reward 0.5).")
    pairs: int = Field(0, description="Labelled pairs the map was fitted on.")
    log_loss_raw: float | None = Field(None, description="Mean log loss of the raw p against the labels.")
    log_loss_calibrated: float | None = Field(None, description="The same, of the mapped probability.")
    reason: str | None = Field(None, description="Why the raw p is the reward (method none).")

    def __call__(self, p: float) -> float:
        if self.method == "none":
            return p
        return sigmoid(self.scale * logit(p))

    @classmethod
    def raw(cls, reason: str) -> RewardMap:
        return cls(method="none", reason=reason)

    @classmethod
    def fitted(cls, points: list[tuple[float, bool]]) -> RewardMap:
        a = fit_scale(points)
        if a is None:
            return cls.raw(f"every one of the {len(points)} calibration pairs was at p = 0.5: nothing to fit")
        a = round(a, 6)  # the recorded scale is the one the rewards use, so the card reproduces them
        out = cls(method="temperature", scale=a, temperature=round(1 / a, 6) if a else None, pairs=len(points),
                  log_loss_raw=log_loss(points, lambda p: p))
        out.log_loss_calibrated = log_loss(points, out)
        return out

    def describe(self) -> str:
        """The card's and the log's line."""
        if self.method == "none":
            return f"the judge's raw probability ({self.reason})"
        if not self.scale:
            return (f"temperature fitted on {self.pairs} labelled pairs gave the judge's log-odds weight 0 (they "
                    "do not point towards the labels): every reward is 0.5 and the policy gets no signal")
        return (f"calibrated probability sigmoid(logit(p) / T), temperature T {fmt(self.temperature)} fitted on "
                f"{self.pairs} labelled pairs (log loss {fmt(self.log_loss_raw)} raw, "
                f"{fmt(self.log_loss_calibrated)} calibrated)")


def _points(rows: list[dict], verdicts: list[PairVerdict]) -> list[tuple[float, bool]]:
    return [(v.p_a, row["label"] == "a") for row, v in zip(rows, verdicts, strict=True)]


def calibrate_reward(judge: Judge, source: str | None, *, min_agreement: float = MIN_AGREEMENT,
                     strict: bool = False, window: int = 128,
                     log: Callable[[str], None] = print) -> tuple[dict, RewardMap]:
    """(the judge's calibration record, the map of its p to the reward), before training starts.
    Below the floor: the floor paragraph is logged and training goes on, or with `strict` this
    raises Failure (exit 1)."""
    if source == "none":
        cal = calibrate(judge, source)
        for line in calibration_lines(cal):
            log(f"rl: {line}")
        return cal, RewardMap.raw("calibration skipped (--calibration none)")
    seen: list[tuple[float, bool]] = []
    log("rl: calibrating the reward judge on labelled pairs with its own settings (--calibration none skips it)")
    cal = calibrate(judge, source, window=window, min_agreement=min_agreement,
                    seen=lambda rows, verdicts: seen.extend(_points(rows, verdicts)))
    for line in calibration_lines(cal):
        log(f"rl: {line}")
    if cal.get("below_floor"):
        if strict:
            raise Failure(floor_paragraph(cal, SERVED_JUDGE) + " (--strict: nothing was trained)")
        log("rl: BELOW THE FLOOR      " + floor_paragraph(cal, SERVED_JUDGE))
    if not seen:
        # The figures were measured earlier with these settings; the fit needs the verdicts themselves.
        pairs = read_labelled_pairs(resolve_source(source))
        items = [PairInput(key=str(row["id"]), prompt=prompt, a=row["response_a"], b=row["response_b"])
                 for row, prompt in pairs]
        seen = _points([r for r, _ in pairs], judge.compare(items, window=window))
    reward_map = RewardMap.fitted(seen)
    log(f"rl: reward: {reward_map.describe()}")
    return cal, reward_map
