"""Synthetic run, eval and iterate folders for the `cai view` tests, written in the formats cai
writes (rows validated by cai's own record models), with known figures and, on request, hostile
text in every field a page shows."""

from __future__ import annotations

import json
import random
import struct
import zlib
from pathlib import Path

import yaml

from cai.records import GenerationRecord, PreferenceRecord, Round

# Each payload marks the page if it ever runs; the tests look for the mark.
MARK = "document.documentElement.setAttribute('data-pwned','{}')"
HOSTILE = [
    f"<script>{MARK.format('script')}</script>",
    f"<img src=x onerror=\"{MARK.format('img')}\">",
    f"</textarea><script>{MARK.format('textarea')}</script>",
    f"<a href=\"javascript:{MARK.format('link')}\">click me</a> javascript:{MARK.format('bare')}",
    f"</script><script>{MARK.format('breakout')}</script><!--",
    "line\u2028separator\u2029and & ampersand <b>bold</b>",
]

PRINCIPLES = ["harm", "honesty", "privacy", "helpful"]
QUESTIONS = ["safer", "more-helpful"]
CONSTITUTION = {
    "name": "viewtest", "version": "1.0", "description": "a test constitution",
    "principles": [{"id": p, "critique": f"Critique the answer for {p}.", "revision": f"Revise it for {p}.",
                    "weight": 1.0, "tags": []} for p in PRINCIPLES],
    "comparisons": [{"id": q, "question": f"Which response is {q}?"} for q in QUESTIONS],
    "few_shot": [], "system_prompt": None,
}
VOCAB = ("the a answer safe help user request clear careful model step plan water map route weather "
         "friend doctor money legal advice share private data check risk avoid explain simple short "
         "because often rather however instead maybe always never").split()


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(n)).capitalize() + "."


def write_jsonl(path: Path, rows) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            data = r.model_dump(mode="json") if hasattr(r, "model_dump") else r
            f.write(json.dumps(data, ensure_ascii=False) + "\n")


def make_run(path: Path, n: int = 12, *, seed: int = 0, hostile: bool = False, rounds: int = 2,
             long_text: bool = False) -> dict:
    """A judged run folder. Returns {"generations": [...], "pairs": [...]} as written (dicts).

    Rows cycle through categories a/b/c; row i's verdict is decided (i % 4 in 0, 1), a flip (2) or
    a tie (3); every fifth row is left unjudged; the last round of row i uses PRINCIPLES[i % 4]."""
    rng = random.Random(seed)
    path.mkdir(parents=True, exist_ok=True)
    sizes = (130, 55, 85) if long_text else (8, 5, 7)
    gens, prefs, ties = [], [], []
    for i in range(n):
        prompt_text = f"prompt {i} " + (HOSTILE[i % len(HOSTILE)] if hostile else _words(rng, 6))
        initial = (HOSTILE[(i + 1) % len(HOSTILE)] + " " if hostile else "") + _words(rng, sizes[0])
        rds, previous = [], initial
        for k in range(rounds):
            pid = PRINCIPLES[(i + k + 1 - rounds) % len(PRINCIPLES)]
            revision = previous if (i + k) % 7 == 0 else _words(rng, sizes[2] + (i % 3))
            flags = (["unchanged"] if revision == previous else []) + (["truncated"] if (i + k) % 5 == 0 else [])
            flags += ["critique_vague"] if (i + k) % 6 == 0 else []
            critique = (HOSTILE[(i + k + 2) % len(HOSTILE)] + " " if hostile else "") + _words(rng, sizes[1])
            rds.append(Round(principle_id=pid, critique=critique, revision=revision, flags=flags))
            previous = revision
        final_flags = [f for f in rds[-1].flags if not f.startswith("critique_")] if rds else []
        g = GenerationRecord(
            id=f"g{i:05d}", prompt=[{"role": "user", "content": prompt_text}], category="abc"[i % 3], sample=0,
            initial=initial, rounds=rds, final=rds[-1].revision if rds else initial, flags=final_flags,
            initial_flags=[], meta={"model": "m", "seed": 0, "source_row": i, "elapsed_s": round(rng.random(), 3),
                                    "note": HOSTILE[i % len(HOSTILE)] if hostile else "ok"})
        gens.append(g)
        if i % 5 == 4 or not rds:
            continue
        kind = ("decided", "decided", "flip", "tie")[i % 4]
        p_rev = {"decided": 0.8, "flip": 0.3, "tie": 0.52}[kind] + (i % 3) * 0.01
        p_first, p_second = min(1.0, p_rev + 0.05), max(0.0, p_rev - 0.05)
        flipped = p_rev < 0.5
        q = QUESTIONS[i % len(QUESTIONS)]
        rec = PreferenceRecord(
            id=f"p{i:05d}", prompt=g.prompt, category=g.category,
            chosen=g.initial if flipped else g.final, rejected=g.final if flipped else g.initial,
            p_chosen=1 - p_rev if flipped else p_rev,
            judgements=[{"question_id": q, "p_first": p_first, "p_second": p_second}], strategy="revision",
            source_ids=[g.id], meta={"judge_model": "j", "flipped": flipped, "p_first": p_first, "p_second": p_second})
        if kind == "tie":
            ties.append({**rec.model_dump(mode="json"), "tie": True})
        else:
            prefs.append(rec)
    write_jsonl(path / "generations.jsonl", gens)
    write_jsonl(path / "preferences.jsonl", prefs)
    write_jsonl(path / "ties.jsonl", ties)
    info = {"stage": "generate", "model": "synthetic-model", "constitution_name": CONSTITUTION["name"],
            "config": {"rounds": rounds, "samples": 1}, "constitution": CONSTITUTION,
            "judge": {"judge_model": "synthetic-judge", "strategy": "revision", "threshold": 0.05},
            "judge_calibration": {"agreement": 0.7, "n": 40, "min_agreement": 0.6, "below_floor": False}}
    (path / "run.yaml").write_text(yaml.safe_dump(info, sort_keys=False, allow_unicode=True))
    return {"generations": [g.model_dump(mode="json") for g in gens],
            "pairs": [p.model_dump(mode="json") for p in prefs] + ties}


def tiny_png(width: int = 4, height: int = 3) -> bytes:
    """A valid PNG without matplotlib: the tests only need a real image to embed."""
    raw = b"".join(b"\x00" + bytes([200, 80, 40]) * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def make_eval(path: Path, n: int = 10, *, hostile: bool = False, compliance: bool = True) -> list[dict]:
    """An eval folder as `cai eval` writes it (answers.jsonl, metrics.json, report.md, a plot)."""
    path.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        outcome = ("a", "b", "tie")[i % 3]
        p_a = {"a": 0.8, "b": 0.2, "tie": 0.5}[outcome]
        rows.append({"index": i, "prompt": f"eval prompt {i} " + (HOSTILE[i % len(HOSTILE)] if hostile else "plain"),
                     "category": ("helpful", "harm")[i % 2], "harmful": bool(i % 2),
                     "answer_a": "A says " + (HOSTILE[(i + 1) % len(HOSTILE)] if hostile else f"yes {i}"),
                     "answer_b": "B says " + (HOSTILE[(i + 2) % len(HOSTILE)] if hostile else f"no {i}"),
                     "p_a": p_a, "p_first": p_a + 0.05, "p_second": p_a - 0.05, "identical": False,
                     "consistent": outcome != "tie", "outcome": outcome, "p_refuse_a": 0.1 * (i % 10),
                     "p_refuse_b": 0.2, "finish_a": "stop", "finish_b": "length",
                     "refuses_phrase_a": i % 4 == 0, "refuses_phrase_b": False})
    write_jsonl(path / "answers.jsonl", rows)
    side = {"name": "A-model", "refusal_rate_harmful": 0.4, "mean_p_refuse_harmful": 0.45, "n_harmful": n // 2,
            "over_refusal_rate_benign": 0.1, "mean_p_refuse_benign": 0.2, "n_benign": n - n // 2, "undecided": 0.0}
    wins, losses = sum(r["outcome"] == "a" for r in rows), sum(r["outcome"] == "b" for r in rows)
    metrics = {"model": "A-model" + (HOSTILE[0] if hostile else ""), "baseline": "B-model", "n": n,
               "win_rate": round((wins + 0.5 * (n - wins - losses)) / n, 4), "win_rate_ci": [0.3, 0.7],
               "wins": wins, "losses": losses, "ties": n - wins - losses, "identical": 0, "mean_p_a": 0.5,
               "position_consistency": 0.66, "per_category": {"harm": {"win_rate": 0.5, "n": n // 2,
                                                                       "win_rate_ci": [0.2, 0.8]},
                                                              "helpful": {"win_rate": 0.6, "n": n - n // 2,
                                                                          "win_rate_ci": [0.3, 0.9]}},
               "harmlessness": 0.4, "harmlessness_baseline": 0.3, "over_refusal": 0.1, "over_refusal_baseline": 0.2,
               "models": {"A": side, "B": {**side, "name": "B-model"}}, "refusal_reader": "model",
               "signal": True, "signal_reasons": []}
    if compliance:
        metrics["compliance"] = {p: {"rate_a": 0.75, "mean_p_a": 0.6, "rate_b": 0.5, "mean_p_b": 0.55, "n": n}
                                 for p in PRINCIPLES[:2]}
    (path / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (path / "report.md").write_text("# report\n\n" + (HOSTILE[4] if hostile else "all fine") + "\n")
    (path / "win_rates.png").write_bytes(tiny_png())
    return rows


def make_iterate(path: Path, *, hostile: bool = False) -> list[dict]:
    """An iterate folder in the layout issue 17 documents: two finished iterations and a third in
    progress (its run only), history.jsonl, curve.png and report.md."""
    history = []
    for it in (1, 2, 3):
        d = path / "iterations" / f"{it:02d}"
        make_run(d / "run", 6, seed=it, hostile=hostile)
        if it == 3:
            continue
        (d / "model").mkdir(parents=True)
        (d / "model" / "metrics.json").write_text("{}")
        make_eval(d / "eval", 6, hostile=hostile)
        history.append({"iteration": it, "prompts": 6, "pairs": 4 - it, "ties": it, "train": {"loss": 0.69 - 0.01 * it},
                        "win_rate": 0.5 + 0.05 * it, "win_rate_ci": [0.4, 0.6 + 0.05 * it], "harmlessness": 0.1 * it,
                        "over_refusal": 0.05, "compliance": {"harm": {"rate_a": 0.5 + 0.1 * it, "rate_b": 0.5, "n": 6}},
                        "model": ("javascript:" + MARK.format("model")) if hostile else str(d / "model")})
    write_jsonl(path / "history.jsonl", history)
    (path / "curve.png").write_bytes(tiny_png(6, 4))
    (path / "report.md").write_text("# iterations\n\n" + (HOSTILE[0] if hostile else "two done") + "\n")
    return history
