"""Judge quality: agreement with labelled pairs, five judging methods side by side in one run.

    python benchmarks/judge_agreement.py --pairs FILE [--judge-model M] [--backend B] [--limit N] [--json OUT]

FILE rows: {"id", "prompt" (string or messages), "response_a", "response_b", "label": "a"|"b"}
(default: the bundled clear-cut set cai/data/judge_pairs.jsonl). Methods:
  1. naive: the judge writes its answer and the letter is parsed from the text, one order only
     (what common tools do);
  2. log-probabilities of "A"/"B", one order;
  3. log-probabilities, both orders averaged (cai's default);
  4. both orders with an ensemble of 3 comparison questions;
  5. chain of thought, then clamped probabilities, both orders.
Agreement counts a tie (or an unparseable naive answer) as half right. Position consistency is the
share of pairs whose winner is the same when the two responses trade places.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

_LETTER = re.compile(r"\(?\b([AB])\b\)?")


def parse_letter(text: str) -> str | None:
    m = _LETTER.search(text)
    return m.group(1) if m else None


def load_pairs(path: Path, limit: int | None) -> list[dict]:
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        r = json.loads(line)
        if r.get("label") not in ("a", "b"):
            sys.exit(f"{path}: line {n}: label: must be \"a\" or \"b\"")
        if isinstance(r["prompt"], str):
            r["prompt"] = [{"role": "user", "content": r["prompt"]}]
        rows.append(r)
    return rows[:limit] if limit else rows


def naive(judge, rows) -> dict:
    """Generated text parsed for a letter, in the order given and in the swapped order."""
    from cai.backends.base import SamplingParams

    q = judge.constitution.comparisons[0].question
    params = SamplingParams(max_tokens=16, temperature=0.0)
    convs1 = [judge._question_conv(r["prompt"], q, r["response_a"], r["response_b"]) for r in rows]
    convs2 = [judge._question_conv(r["prompt"], q, r["response_b"], r["response_a"]) for r in rows]
    t = time.perf_counter()
    out1 = judge.backend.chat(convs1, params)
    out2 = judge.backend.chat(convs2, params)
    secs = time.perf_counter() - t
    right = consistent = unparsed = 0.0
    for r, o1, o2 in zip(rows, out1, out2):
        l1, l2 = parse_letter(o1[0].text), parse_letter(o2[0].text)
        w1 = {"A": "a", "B": "b"}.get(l1)
        w2 = {"A": "b", "B": "a"}.get(l2)
        unparsed += l1 is None
        right += 0.5 if w1 is None else float(w1 == r["label"])
        consistent += w1 is not None and w1 == w2
    n = len(rows)
    return {"method": "1 naive: parsed text, one order", "agreement": right / n, "position_consistency": consistent / n,
            "unparsed": unparsed / n, "seconds": secs}


def soft(judge_cls, backend, constitution, rows, *, name, ensemble=1, cot=False, one_order=False) -> dict:
    from cai.judge import JudgeConfig, PairInput

    j = judge_cls(backend, constitution, JudgeConfig(ensemble=ensemble, cot=cot))
    items = [PairInput(key=str(r["id"]), prompt=r["prompt"], a=r["response_a"], b=r["response_b"]) for r in rows]
    t = time.perf_counter()
    verdicts = j.compare(items)
    secs = time.perf_counter() - t
    right = consistent = 0.0
    for r, v in zip(rows, verdicts):
        p = v.p_first if one_order else v.p_a
        right += 0.5 if p == 0.5 else float(("a" if p > 0.5 else "b") == r["label"])
        consistent += v.consistent
    n = len(rows)
    return {"method": name, "agreement": right / n, "position_consistency": consistent / n, "seconds": secs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", default=None, help="Labelled pairs (JSONL); default: the bundled set.")
    ap.add_argument("--judge-model", default="smollm2-135m")
    from cai.backends.registry import NAMES

    ap.add_argument("--backend", default=None, choices=NAMES)
    ap.add_argument("--base-url", default=None)
    ap.add_argument("--constitution", default="default")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from cai.backends import load_backend
    from cai.constitution import load_constitution
    from cai.judge import Judge
    from cai.resources import bundled_file

    path = Path(args.pairs) if args.pairs else bundled_file("data", "judge_pairs.jsonl")
    rows = load_pairs(path, args.limit)
    constitution = load_constitution(args.constitution)
    backend = load_backend(args.backend, args.judge_model, **({"base_url": args.base_url} if args.base_url else {}))
    judge = Judge(backend, constitution)
    results = [
        naive(judge, rows),
        # one order: p_first alone; consistency still compares it with the swapped order
        soft(Judge, backend, constitution, rows, name="2 log-probs, one order", one_order=True),
        soft(Judge, backend, constitution, rows, name="3 log-probs, both orders"),
        soft(Judge, backend, constitution, rows, name="4 both orders, ensemble of 3", ensemble=3),
        soft(Judge, backend, constitution, rows, name="5 CoT, clamped, both orders", cot=True),
    ]
    print(f"judge agreement on {len(rows)} labelled pairs from {path}")
    print(f"judge {args.judge_model} via {getattr(backend, 'name', args.backend)}\n")
    print("| method | agreement with labels | position consistency | time (s) |")
    print("|---|---|---|---|")
    for r in results:
        print(f"| {r['method']} | {r['agreement']:.1%} | {r['position_consistency']:.1%} | {r['seconds']:.1f} |")
    print("\nBoth-order methods are position-consistent by construction of p_a; the column shows how often the "
          "judge's two single-order answers agreed.")
    if args.json:
        Path(args.json).write_text(json.dumps({"pairs": len(rows), "judge": args.judge_model, "results": results}, indent=2))


if __name__ == "__main__":
    main()
