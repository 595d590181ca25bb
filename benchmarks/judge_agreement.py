"""Judge quality: agreement with labelled pairs, five judging methods side by side in one run.

    python benchmarks/judge_agreement.py [--pairs FILE] [--judge-model M] [--backend B] [--limit N] [--json OUT]

FILE rows: {"id", "prompt" (string or messages), "response_a", "response_b", "label": "a"|"b"[, "kind"]}
(default: the bundled hard set cai/data/judge_calibration.jsonl, the set `cai judge` calibrates on;
`--pairs easy` takes the clear-cut tier). Methods:
  1. naive: the judge writes its answer and the letter is parsed from the text, one order only
     (what common tools do);
  2. log-probabilities of "A"/"B", one order;
  3. log-probabilities, both orders averaged (cai's default);
  4. both orders with an ensemble of 3 comparison questions;
  5. chain of thought, then clamped probabilities, both orders.
Every method is scored exactly as the calibration scores a judge (cai/judge/calibration.py `score`:
ties by the judge's threshold count half, agreement by kind and its mean over kinds, position
consistency over pairs decided in both orders, cai/judge/figures.py). A method that reads one order
gets the same verdict in both orders' fields, so its consistency is the one-order reading against the
swapped one.
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


def naive(judge, rows, prompts) -> tuple[list, float]:
    """Verdicts from generated text parsed for a letter, in the order given and swapped: P(a) is 1, 0,
    or 0.5 when no letter is found (a tie, as the calibration counts one)."""
    from cai.backends.base import SamplingParams
    from cai.judge import PairVerdict

    q = judge.constitution.comparisons[0].question
    params = SamplingParams(max_tokens=16, temperature=0.0)
    ask = lambda prompt, x, y: judge.mode.question(judge.templates, prompt, q, x, y)  # noqa: E731
    convs1 = [ask(p, r["response_a"], r["response_b"]) for r, p in zip(rows, prompts)]
    convs2 = [ask(p, r["response_b"], r["response_a"]) for r, p in zip(rows, prompts)]
    t = time.perf_counter()
    out1, out2 = judge.backend.chat(convs1, params), judge.backend.chat(convs2, params)
    secs = time.perf_counter() - t
    verdicts = []
    for o1, o2 in zip(out1, out2):
        p1 = {"A": 1.0, "B": 0.0}.get(parse_letter(o1[0].text), 0.5)  # P(a) shown first
        p2 = {"A": 0.0, "B": 1.0}.get(parse_letter(o2[0].text), 0.5)  # P(a) shown second
        verdicts.append(PairVerdict(p_a=p1, p_first=p1, p_second=p2, judgements=[]))
    return verdicts, secs


def soft(judge, items, *, one_order=False) -> tuple[list, float]:
    t = time.perf_counter()
    verdicts = judge.compare(items)
    secs = time.perf_counter() - t
    if one_order:  # the verdict is the first order's reading alone
        verdicts = [v.model_copy(update={"p_a": v.p_first}) for v in verdicts]
    return verdicts, secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", default=None, help="Labelled pairs (JSONL), or easy; default: the bundled hard set.")
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
    from cai.judge import Judge, JudgeConfig, PairInput
    from cai.judge.calibration import EASY_SET, HARD_SET, score
    from cai.judge.pairfile import read_labelled_pairs
    from cai.models import sha256_file
    from cai.resources import bundled_file

    path = (bundled_file("data", EASY_SET) if args.pairs == "easy" else Path(args.pairs) if args.pairs
            else bundled_file("data", HARD_SET))
    pairs = read_labelled_pairs(path)[: args.limit or None]
    rows, prompts = [r for r, _ in pairs], [p for _, p in pairs]
    items = [PairInput(key=str(r["id"]), prompt=p, a=r["response_a"], b=r["response_b"]) for r, p in pairs]
    constitution = load_constitution(args.constitution)
    backend = load_backend(args.backend, args.judge_model, **({"base_url": args.base_url} if args.base_url else {}))
    default = Judge(backend, constitution)
    methods = [
        ("1 naive: parsed text, one order", lambda: naive(default, rows, prompts)),
        ("2 log-probs, one order", lambda: soft(default, items, one_order=True)),
        ("3 log-probs, both orders", lambda: soft(default, items)),
        ("4 both orders, ensemble of 3", lambda: soft(Judge(backend, constitution, JudgeConfig(ensemble=3)), items)),
        ("5 CoT, clamped, both orders", lambda: soft(Judge(backend, constitution, JudgeConfig(cot=True)), items)),
    ]
    sha = sha256_file(path)
    results = []
    for name, run in methods:
        verdicts, secs = run()
        figures = score(rows, verdicts, default.threshold, source=str(path), sha256=sha).model_dump()
        results.append({"method": name, **figures, "seconds": round(secs, 1)})
    print(f"judge agreement on {len(rows)} labelled pairs from {path}, scored as the calibration scores them")
    print(f"judge {args.judge_model} via {getattr(backend, 'name', args.backend)}\n")
    print("| method | agreement (ties half) | mean over kinds | position consistency | undecided in an order "
          "| longer wins | time (s) |")
    print("|---|---|---|---|---|---|---|")
    from cai.judge.figures import fmt

    for r in results:
        print(f"| {r['method']} | {fmt(r['agreement'])} | {fmt(r['balanced_agreement'])} | "
              f"{fmt(r['position_consistency'])} | {fmt(r['undecided_orders'])} | {fmt(r['longer_wins'])} | "
              f"{r['seconds']:.1f} |")
    print("\n0.5 is a coin flip; the floor cai holds a judge to is 0.6 on the mean over kinds (or on the "
          "agreement for a set without kinds).")
    if args.json:
        Path(args.json).write_text(json.dumps({"pairs": len(rows), "judge": args.judge_model, "source": str(path),
                                               "results": results}, indent=2))


if __name__ == "__main__":
    main()
