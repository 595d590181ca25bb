"""Weights over the comparison questions that best predict a person's labels, and how well they hold.

The model: P(label a) = sigmoid(sum_k w_k x_k), x_k the log-odds of question k's P(a wins), w_k >= 0.
No intercept: which answer a labelled file calls `a` carries no meaning, and without one the model
is symmetric (swapping a and b flips every x and the label, and the prediction flips exactly). A
small ridge term keeps the weights finite when a question separates the labels, and splits weight
evenly between two questions that say the same. Solved by projected accelerated gradient descent
from zero (FISTA) in numpy: deterministic, and two identical columns get bitwise identical weights.

A weight vector is judged the way a constitution uses it: the weighted mean of the questions'
log-odds, read with the judge's tie rule, ties half. Only the ratios of the weights matter, so
fitted weights are written relative (mean 1) with a floor, so that no question silently vanishes
(`allow_zero` lifts the floor: a weight of 0 keeps the question in the file, never drawn).
Held-out agreement comes from K folds fixed by a hash of each pair's id.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np
from pydantic import BaseModel, Field

from cai.audit.figures import Column, marks
from cai.judge.figures import ratio, wilson

CLIP = 1e-4  # P(a) is clipped to [CLIP, 1 - CLIP]: a judge's 1.0 is not infinite evidence
FLOOR = 0.05  # the smallest relative weight written without --allow-zero (mean weight 1)
L2 = 0.01
FOLDS = 5


def log_odds(p: float, asked: bool) -> float:
    if not asked:
        return 0.0
    p = min(1 - CLIP, max(CLIP, p))
    return float(np.log(p / (1 - p)))


def features(cols: Sequence[Column]) -> np.ndarray:
    """(pairs, questions) of log-odds."""
    return np.column_stack([[log_odds(p, a) for p, a in zip(c.p_a, c.asked)] for c in cols]).astype(float)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def fit(X: np.ndarray, y: np.ndarray, *, l2: float = L2, iters: int = 20000, tol: float = 1e-12) -> np.ndarray:
    """Non-negative weights minimising mean log loss + l2/2 |w|^2 (raw scale, not yet relative)."""
    n, k = X.shape
    if n == 0:
        return np.zeros(k)
    step = 1.0 / (np.linalg.norm(X, 2) ** 2 / (4 * n) + l2)
    w = np.zeros(k)
    v, t = w.copy(), 1.0
    for _ in range(iters):
        r = _sigmoid(X @ v) - y
        # Summed per column in the same order, so identical columns get identical gradients.
        g = (X * r[:, None]).sum(axis=0) / n + l2 * v
        w_new = np.maximum(v - step * g, 0.0)
        t_new = (1 + (1 + 4 * t * t) ** 0.5) / 2
        v = w_new + ((t - 1) / t_new) * (w_new - w)
        done = np.max(np.abs(w_new - w)) < tol
        w, t = w_new, t_new
        if done:
            break
    return w


def relative(raw: np.ndarray, *, allow_zero: bool = False, floor: float = FLOOR) -> list[float]:
    """Weights of mean 1, floored unless `allow_zero`, rounded to 3 decimals; equal weights when
    the fit found nothing (every weight 0)."""
    k = len(raw)
    total = float(np.sum(raw))
    if total <= 0:
        return [1.0] * k
    out = [float(x) * k / total for x in raw]
    if not allow_zero:
        out = [max(x, floor) for x in out]
    return [round(x, 3) for x in out]


def combined(X: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """P(a wins) of the weighted mean of the questions' log-odds."""
    w = np.asarray(weights, dtype=float)
    if X.shape[0] == 0:
        return np.zeros(0)
    return _sigmoid(X @ w / w.sum())


def agreement_marks(X: np.ndarray, weights: Sequence[float], labels: Sequence[str], threshold: float) -> list[float]:
    p = combined(X, weights)
    return marks([float(x) for x in p], [True] * len(labels), labels, threshold)


def fold_of(ident: str, folds: int) -> int:
    return int(hashlib.sha256(f"audit-fold:{ident}".encode()).hexdigest()[:12], 16) % folds


class Score(BaseModel):
    agreement: float | None
    interval: tuple[float, float] | None
    n: int


def score(m: Sequence[float]) -> Score:
    return Score(agreement=ratio(sum(m), len(m)), interval=wilson(sum(m), len(m)), n=len(m))


class HeldOut(BaseModel):
    folds: int
    today: Score = Field(description="The constitution's weights (nothing is fitted, so every pair is held out).")
    fitted: Score = Field(description="Each fold's pairs judged by weights fitted on the other folds.")
    fold_weights: list[list[float]] = Field(description="The relative weights fitted in each fold.")
    marks: list[float] = Field([], exclude=True)


def held_out(X: np.ndarray, labels: Sequence[str], ids: Sequence[str], today: Sequence[float], threshold: float,
             *, folds: int = FOLDS, allow_zero: bool = False) -> HeldOut:
    n = len(ids)
    k = max(1, min(folds, n))
    y = np.array([float(label == "a") for label in labels])
    fold = np.array([fold_of(i, k) for i in ids])
    fitted = [0.0] * n
    fold_weights = []
    for f in range(k):
        test = np.flatnonzero(fold == f)
        train = np.flatnonzero(fold != f)
        if not len(test):
            continue
        w = relative(fit(X[train], y[train]), allow_zero=allow_zero) if len(train) else [1.0] * X.shape[1]
        fold_weights.append(w)
        for i, m in zip(test, agreement_marks(X[test], w, [labels[i] for i in test], threshold)):
            fitted[i] = m
    return HeldOut(folds=k, today=score(agreement_marks(X, today, labels, threshold)), fitted=score(fitted),
                   fold_weights=fold_weights, marks=fitted)
