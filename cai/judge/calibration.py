"""A judge that measures itself: agreement with labelled pairs, with exactly the settings it labels with.

Before `cai judge` or `cai eval` trusts a judge, it judges a calibration set whose answers are
known, in the same way `cai judge --pairs` judges any file (the row id draws the comparison
questions; ties by the same threshold), so the figure is what the judge would score on that file.
The bundled hard set (cai/data/judge_calibration.jsonl) holds pairs whose answers are both
plausible and differ in one respect the constitution cares about, in kinds; inside each kind,
preferring the longer answer, or the one in position A, scores about 50%, so the floor is checked on
the mean over kinds (`floor_figure`), which a length-preferring judge cannot pass on length alone.
The old clear-cut pairs are an easier tier reported beside it. A judge below the floor
(`min_agreement`) is labelling close to chance.

The refusal call of `cai eval` is calibrated the same way (cai/judge/refusal.py).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Sequence

from pydantic import BaseModel, Field

from cai.errors import UsageError
from cai.judge.pairfile import read_labelled_pairs
from cai.judge.pairwise import Judge, PairInput
from cai.judge.figures import MIN_AGREEMENT, PositionTally, confidence_figures, fmt, longer_wins, ratio
from cai.judge.verdict import PairVerdict
from cai.models import sha256_file
from cai.resources import bundled_file

HARD_SET = "judge_calibration.jsonl"
EASY_SET = "judge_pairs.jsonl"
REFUSAL_SET = "refusal_calibration.jsonl"


class KindFigures(BaseModel):
    n: int
    agreement: float


class CalibrationFigures(BaseModel):
    agreement: float | None = Field(description="Share of pairs whose winner matches the label; ties count half.")
    balanced_agreement: float | None = Field(
        None, description="Mean of the kinds' agreements (each kind weighs the same): the floor's figure when the "
                          "set has kinds, since length and other surface tells are balanced inside kinds, not "
                          "across them.")
    by_kind: dict[str, KindFigures] | None = Field(None, description="Agreement per `kind` of the set's rows.")
    position_consistency: float | None = Field(
        description="Share of pairs decided in both orders with the same winner in both.")
    undecided_orders: float | None = Field(
        None, description="Share of asked pairs undecided (a tie) in at least one order.")
    longer_wins: float | None = Field(description="Share of decided pairs won by the longer response.")
    by_confidence: dict[str, dict] | None = Field(
        None, description="Decided pairs in buckets of |p - 0.5|: n, agreement and its 95% interval.")
    ece: float | None = Field(None, description="Expected calibration error of the decided pairs' confidence.")
    brier: float | None = Field(None, description="Mean squared error of p against the 0/1 label, every pair.")
    confidence_informative: bool | None = Field(
        None, description="Agreement rises with confidence past the buckets' 95% intervals (None: not measurable).")
    ties: int = 0
    n: int
    source: str
    sha256: str


def score(rows: Sequence[dict], verdicts: Sequence[PairVerdict], threshold: float, *, source: str,
          sha256: str) -> CalibrationFigures:
    """The figures of judged rows against their labels (pure: tests compute them by hand)."""
    right = 0.0
    ties = 0
    tally = PositionTally(threshold)
    won: list[tuple[str, str]] = []
    kinds: dict[str, list[float]] = {}
    calls: list[tuple[float, str, str]] = []
    for row, v in zip(rows, verdicts):
        w = v.winner(threshold)  # what `cai judge --pairs` writes as `winner`
        calls.append((v.p_a, w, row["label"]))
        if w == "tie":
            ties += 1
            mark = 0.5
        else:
            mark = float(w == row["label"])
            a, b = row["response_a"], row["response_b"]
            won.append((a, b) if w == "a" else (b, a))
        right += mark
        if row.get("kind"):
            kinds.setdefault(str(row["kind"]), []).append(mark)
        tally.add(v.p_first, v.p_second, asked=v.asked)  # a pair the judge was not shown says nothing of bias
    n = len(rows)
    by_kind = {k: KindFigures(n=len(m), agreement=round(sum(m) / len(m), 4)) for k, m in sorted(kinds.items())}
    return CalibrationFigures(
        agreement=ratio(right, n),
        balanced_agreement=round(sum(f.agreement for f in by_kind.values()) / len(by_kind), 4) if by_kind else None,
        by_kind=by_kind or None,
        position_consistency=tally.position_consistency, undecided_orders=tally.undecided_orders,
        longer_wins=longer_wins(won), **confidence_figures(calls), ties=ties, n=n, source=source, sha256=sha256)


def floor_figure(cal: dict) -> tuple[float | None, str]:
    """(figure, its name): what the floor is checked against. The mean over kinds when the set has
    kinds: a judge that only prefers longer answers scores well on kinds where the better answer is
    usually longer, and pooled figures hide that."""
    if cal.get("balanced_agreement") is not None:
        return cal["balanced_agreement"], "agreement averaged over the set's kinds"
    return cal.get("agreement"), "agreement"


# Sees the labelled rows and the verdicts of a set judged now (a caller fitting more than the figures to them).
Seen = Callable[[list[dict], list[PairVerdict]], None]


def judge_file(judge: Judge, path: Path, window: int, seen: Seen | None = None) -> CalibrationFigures:
    pairs = read_labelled_pairs(path)
    items = [PairInput(key=str(row["id"]), prompt=prompt, a=row["response_a"], b=row["response_b"])
             for row, prompt in pairs]
    verdicts = judge.compare(items, window=window)
    if seen is not None:
        seen([r for r, _ in pairs], verdicts)
    return score([r for r, _ in pairs], verdicts, judge.threshold, source=str(path), sha256=sha256_file(path))


def settings_key(judge: Judge, source: str | None) -> str:
    """What a calibration depends on: reused only when all of it is the same (the judge's tie
    threshold is in its description)."""
    path = resolve_source(source)
    parts = {"judge": judge.describe(), "constitution": judge.constitution.sha256(),
             "source": str(path) if path else None, "sha256": sha256_file(path) if path else None,
             "weights": _weights_fingerprint(judge.describe().get("judge_model")),
             # What else changes verdicts: a served judge's servers, the context (which pairs are too
             # long), the rationale's length in CoT mode.
             "servers": getattr(judge.backend, "base_urls", None), "context": getattr(judge.backend, "context_window", None),
             "cot_max_tokens": judge.mode.rationale_tokens()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def _weights_fingerprint(model) -> list | None:
    """Names, sizes and times of a local model folder's weight files: a folder trained again in place
    is another judge. None for a served model (only its name is known)."""
    folder = Path(str(model))
    if not folder.is_dir():
        return None
    return sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in folder.iterdir()
                  if f.suffix in (".safetensors", ".bin", ".json") and f.is_file())


def _cache_file(key: str) -> Path:
    from cai.models import cai_home

    return cai_home() / "calibrations" / f"{key}.json"


def cached(key: str) -> dict | None:
    """A calibration measured earlier, by any command, of a local judge with exactly these settings.
    Judging is greedy (log-probabilities), so measuring again would give the same figures."""
    f = _cache_file(key)
    try:
        data = json.loads(f.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("settings") == key else None


def store(key: str, figures: dict, judge: Judge) -> None:
    if _weights_fingerprint(judge.describe().get("judge_model")) is None:
        return  # a served model can change behind its name: measured again each time
    f = _cache_file(key)
    try:
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.with_name(f".{f.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(figures, indent=1))
        os.replace(tmp, f)
    except OSError:
        pass  # a read-only cache only costs time


def resolve_source(source: str | None, bundled: str = HARD_SET, flag: str = "--calibration") -> Path | None:
    """None → the bundled set; "none" → no calibration; else the file, which must exist."""
    if source is None or source == "default":
        return bundled_file("data", bundled)
    if source == "none":
        return None
    path = Path(source)
    if not path.is_file():
        raise UsageError(f"{flag} {source}: no such file (or `none` to skip it)")
    return path


def with_floor(cal: dict, min_agreement: float) -> dict:
    """The calibration judged against this run's floor (a reused one may have had another)."""
    figure, _ = floor_figure(cal)
    return {**cal, "min_agreement": min_agreement, "below_floor": figure is not None and figure < min_agreement}


def calibrate(judge: Judge, source: str | None, *, window: int = 128, min_agreement: float = MIN_AGREEMENT,
              key: str | None = None, seen: Seen | None = None) -> dict:
    """The judge's calibration record (what run.yaml's `judge_calibration` holds). `key`: its
    settings_key, when the caller has it already. `seen`: called with the main set's rows and
    verdicts when they are judged now (not for a reused calibration, nor for the easy tier)."""
    path = resolve_source(source)
    key = key or settings_key(judge, source)
    if path is None:
        return {"skipped": True, "settings": key}
    hit = cached(key)
    if hit is not None:
        return with_floor({**hit, "reused": True}, min_agreement)
    figures = judge_file(judge, path, window, seen).model_dump()
    if source in (None, "default"):
        easy = judge_file(judge, bundled_file("data", EASY_SET), window).model_dump()
        figures["easy"] = easy
        figures["source"] = f"bundled:{HARD_SET}"
        easy["source"] = f"bundled:{EASY_SET}"
    figures = with_floor({**figures, "settings": key}, min_agreement)
    store(key, figures, judge)
    return figures


def calibration_lines(cal: dict | None) -> list[str]:
    """The summary's lines about a calibration."""
    if not cal:
        return []
    if cal.get("skipped"):
        return ["calibration          none (--calibration none): the judge is not measured, so its labels' "
                "agreement with people is unknown (signal: not measured)"]
    out = [f"calibration          agreement {fmt(cal['agreement'])} on {cal['n']} labelled pairs "
           f"({cal['source']}; ties half), position consistency {fmt(cal['position_consistency'])} "
           f"(undecided in an order: {fmt(cal.get('undecided_orders'))}), longer wins {fmt(cal['longer_wins'])}"]
    if cal.get("by_kind"):
        kinds = ", ".join(f"{k} {fmt(f['agreement'])}" for k, f in cal["by_kind"].items())
        out.append(f"                     by kind: {kinds}; mean over kinds {fmt(cal.get('balanced_agreement'))} "
                   "(the floor's figure)")
    if cal.get("by_confidence") is not None:
        buckets = ", ".join(f"{k} {fmt(f['agreement'])} (n={f['n']})" for k, f in cal["by_confidence"].items())
        informative = {True: "yes", False: "no", None: "not measurable"}[cal.get("confidence_informative")]
        out.append(f"                     confidence: ece {fmt(cal.get('ece'))}, brier {fmt(cal.get('brier'))}; "
                   f"agreement by |p - 0.5|: {buckets or 'no decided pairs'}; rises with confidence: {informative}")
    if cal.get("easy"):
        e = cal["easy"]
        out.append(f"                     easy tier: agreement {fmt(e['agreement'])} on {e['n']} clear-cut pairs")
    if cal.get("reused"):
        out.append("                     (measured earlier with the same settings, reused)")
    return out


SERVED_JUDGE = "--backend openai --base-url http://HOST:PORT --judge-model NAME"


def floor_paragraph(cal: dict, served: str = SERVED_JUDGE) -> str:
    """`served`: the flags that choose a served judge in the command printing it (`cai train rl`
    names its judge's engine --judge-backend, since its other flags are the policy's)."""
    figure, name = floor_figure(cal)
    return (
        f"The judge's {name} with the known answers was {fmt(figure)} on {cal['n']} labelled pairs, below the "
        f"floor of {fmt(cal['min_agreement'])} (0.5 is a coin flip). Labels from this judge are close to chance: "
        "preference pairs, win rates and training on them carry little or no signal. Bring a stronger judge: "
        f"--judge-model DIR (a bigger local model), or a served one with {served}. --min-agreement sets the "
        "floor; --strict stops here instead.")
