"""A judge that measures itself: agreement with labelled pairs, with exactly the settings it labels with.

Before `cai judge` or `cai eval` trusts a judge, it judges a calibration set whose answers are
known, in the same way `cai judge --pairs` judges any file (the row id draws the comparison
questions; ties by the same threshold), so the figure is what the judge would score on that file.
The bundled hard set (cai/data/judge_calibration.jsonl) holds pairs whose answers are both
plausible and differ in one respect the constitution cares about, balanced so that preferring the
longer answer, or the one in position A, scores 50%; the old clear-cut pairs are an easier tier
reported beside it. A judge below the floor (`min_agreement`) is labelling close to chance.

The refusal call of `cai eval` is calibrated the same way (cai/judge/refusal.py).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

from pydantic import BaseModel, Field

from cai.errors import UsageError
from cai.judge.pairfile import read_labelled_pairs
from cai.judge.pairwise import Judge, PairInput
from cai.judge.verdict import PairVerdict
from cai.models import sha256_file
from cai.resources import bundled_file

HARD_SET = "judge_calibration.jsonl"
EASY_SET = "judge_pairs.jsonl"
REFUSAL_SET = "refusal_calibration.jsonl"
# RLAIF's AI labellers agreed with people 69-72% on helpfulness and harmlessness (Lee et al. 2023);
# 0.6 sits between that and a coin flip: below it the labels are closer to chance than to a judge.
MIN_AGREEMENT = 0.6


class CalibrationFigures(BaseModel):
    agreement: float | None = Field(description="Share of pairs whose winner matches the label; ties count half.")
    position_consistency: float | None = Field(description="Share of non-identical pairs with the same winner in both orders.")
    longer_wins: float | None = Field(description="Share of decided pairs won by the longer response.")
    ties: int = 0
    n: int
    source: str
    sha256: str


def score(rows: Sequence[dict], verdicts: Sequence[PairVerdict], threshold: float, *, source: str,
          sha256: str) -> CalibrationFigures:
    """The figures of judged rows against their labels (pure: tests compute them by hand)."""
    right = 0.0
    ties = consistent = asked = longer = decided_unequal = 0
    for row, v in zip(rows, verdicts):
        w = v.winner(threshold)  # what `cai judge --pairs` writes as `winner`
        if w == "tie":
            ties += 1
            right += 0.5
        else:
            right += float(w == row["label"])
            la, lb = len(row["response_a"].strip()), len(row["response_b"].strip())
            if la != lb:
                decided_unequal += 1
                longer += (w == "a") == (la > lb)
        if v.asked:  # a pair the judge was not shown says nothing of bias
            asked += 1
            consistent += v.consistent
    n = len(rows)
    return CalibrationFigures(
        agreement=round(right / n, 4) if n else None,
        position_consistency=round(consistent / asked, 4) if asked else None,
        longer_wins=round(longer / decided_unequal, 4) if decided_unequal else None,
        ties=ties, n=n, source=source, sha256=sha256)


def judge_file(judge: Judge, path: Path, threshold: float, window: int) -> CalibrationFigures:
    pairs = read_labelled_pairs(path)
    items = [PairInput(key=str(row["id"]), prompt=prompt, a=row["response_a"], b=row["response_b"])
             for row, prompt in pairs]
    verdicts = judge.compare(items, window=window)
    return score([r for r, _ in pairs], verdicts, threshold, source=str(path), sha256=sha256_file(path))


def settings_key(judge: Judge, threshold: float, source: str | None) -> str:
    """What a calibration depends on: reused only when all of it is the same."""
    path = resolve_source(source)
    parts = {"judge": judge.describe(), "threshold": threshold, "constitution": judge.constitution.sha256(),
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
    agreement = cal.get("agreement")
    return {**cal, "min_agreement": min_agreement, "below_floor": agreement is not None and agreement < min_agreement}


def calibrate(judge: Judge, source: str | None, *, threshold: float, window: int = 128,
              min_agreement: float = MIN_AGREEMENT, key: str | None = None) -> dict:
    """The judge's calibration record (what run.yaml's `judge_calibration` holds). `key`: its
    settings_key, when the caller has it already."""
    path = resolve_source(source)
    key = key or settings_key(judge, threshold, source)
    if path is None:
        return {"skipped": True, "settings": key}
    hit = cached(key)
    if hit is not None:
        return with_floor({**hit, "reused": True}, min_agreement)
    figures = judge_file(judge, path, threshold, window).model_dump()
    if source in (None, "default"):
        easy = judge_file(judge, bundled_file("data", EASY_SET), threshold, window).model_dump()
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
        return ["calibration          none (--calibration none): the judge's agreement with people is unknown"]
    out = [f"calibration          agreement {_f(cal['agreement'])} on {cal['n']} labelled pairs "
           f"({cal['source']}; ties half), position consistency {_f(cal['position_consistency'])}, "
           f"longer wins {_f(cal['longer_wins'])}"]
    if cal.get("easy"):
        e = cal["easy"]
        out.append(f"                     easy tier: agreement {_f(e['agreement'])} on {e['n']} clear-cut pairs")
    if cal.get("reused"):
        out.append("                     (measured earlier with the same settings, reused)")
    return out


def floor_paragraph(cal: dict) -> str:
    return (
        f"The judge agreed with the known answers on {_f(cal['agreement'])} of {cal['n']} labelled pairs, below the "
        f"floor of {_f(cal['min_agreement'])} (0.5 is a coin flip). Labels from this judge are close to chance: "
        "preference pairs, win rates and training on them carry little or no signal. Bring a stronger judge: "
        "--judge-model DIR (a bigger local model), or a served one with --backend openai --base-url "
        "http://HOST:PORT --judge-model NAME. --min-agreement sets the floor; --strict stops here instead.")


def _f(x) -> str:
    return f"{x:.3f}" if isinstance(x, (int, float)) else "n/a"
