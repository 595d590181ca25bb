"""Do soft labels help when the judge's labels are noisy? A controlled experiment where the truth is known.

    python benchmarks/label_noise.py [--stages dpo,reward] [--noise 0,0.2,0.4] [--seeds 0] [--steps 30]
                                     [--work DIR] [--json FILE]

1. The default model answers the bundled prompts (greedy, vLLM): these clean answers are the true
   `chosen`. Each gets a damaged copy, the true `rejected`, by one of three damages in turn: cut off
   mid-sentence, looped (a phrase of it repeated), or the answer to a different prompt.
2. Prompts are split into train and held-out pairs (by prompt, so no held-out prompt is trained on).
3. For each noise rate a share of the train pairs is flipped (chosen and rejected swapped: the
   label is wrong), with two judges giving each pair a `p_chosen`:
   - calibrated: flipped pairs get p in [0.50, 0.60], correct ones p spread over [0.55, 0.95]
     (the judge's confidence carries information about whether it is right);
   - uninformative: every pair, flipped or not, draws p from the same [0.55, 0.95] (confidence
     says nothing).
   Hard labels ignore p, so one hard run per noise rate serves both judges.
4. `cai train dpo` (and `cai train reward`) trains with hard labels and with `--soft-labels`, the
   same steps, seed and rows; the held-out pairs are scored with the true labels:
   - dpo: preference accuracy, the share of held-out pairs whose implicit reward margin
     beta * [(log pi(c) - log ref(c)) - (log pi(r) - log ref(r))] favours the true chosen answer
     (a zero margin counts half), and the mean margin;
   - reward: pairwise accuracy, the share with r(chosen) > r(rejected), and the mean r margin.

The goals (issue 25): soft >= hard - 0.02 at 0% noise and with the uninformative judge, and
soft > hard at 40% noise with the calibrated judge. One seed on a 2-core CPU moves these
accuracies by a few points: the table prints each cell's 95% interval over held-out pairs, and
--seeds 0,1,2 repeats every cell (the table then shows the mean over seeds).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BETA = 0.1  # the DPO recipe's beta (recipes/dpo-cpu.yaml): the implicit reward's scale
JUDGES = ("calibrated", "uninformative")


# ---------------------------------------------------------------- pairs with a known truth


def bundled_prompts() -> list[str]:
    from cai.resources import bundled_file

    seen, out = set(), []
    for name in ("eval_prompts.jsonl", "red_team.jsonl"):
        for line in bundled_file("data", name).read_text().splitlines():
            p = json.loads(line)["prompt"]
            if p not in seen:
                seen.add(p)
                out.append(p)
    return out


def clean_answers(prompts: list[str], model: str, max_tokens: int) -> list[str]:
    from cai.backends import load_backend
    from cai.backends.base import SamplingParams

    backend = load_backend("vllm", model)
    try:
        outs = backend.chat([[{"role": "user", "content": p}] for p in prompts],
                            SamplingParams(max_tokens=max_tokens, temperature=0.0))
    finally:
        backend.close()
    return [o[0].text.strip() for o in outs]


def _cut(answer: str, rng: random.Random) -> str:
    """Cut off mid-sentence: a prefix of 30-60% of its words, ending on no punctuation."""
    words = answer.split()
    k = max(2, int(len(words) * rng.uniform(0.3, 0.6)))
    return " ".join(words[:k]).rstrip(".,;:!?")


def _loop(answer: str, rng: random.Random) -> str:
    """Looped: the start of the answer, then one phrase of it repeated until the length is used up."""
    words = answer.split()
    start = rng.randrange(0, max(1, len(words) // 3))
    phrase = " ".join(words[start:start + rng.randint(3, 6)])
    head = " ".join(words[:start])
    reps = max(3, (len(words) - start) // max(1, len(phrase.split())))
    return (head + " " + " ".join([phrase] * reps)).strip()


def damaged(i: int, answers: list[str], rng: random.Random) -> tuple[str, str]:
    """(damage kind, damaged copy) of answer i; the kinds rotate so each is a third of the pairs."""
    kind = ("cut", "loop", "other")[i % 3]
    if kind == "cut":
        return kind, _cut(answers[i], rng)
    if kind == "loop":
        return kind, _loop(answers[i], rng)
    j = (i + 1 + rng.randrange(len(answers) - 1)) % len(answers)  # any other prompt's answer
    return kind, answers[j]


def whole_sentences(answer: str) -> str:
    ends = [m.end() for m in re.finditer(r"(?<!\d)[.!?](?=\s|$)", answer)]
    return answer[:ends[-1]].strip() if ends else ""


def true_pairs(prompts: list[str], answers: list[str], seed: int = 0) -> list[dict]:
    rng = random.Random(f"damage:{seed}")
    # An answer the token limit cut off is trimmed back to its last full sentence, so every clean
    # answer ends as an answer ends (the "cut" damage is then the only unfinished text).
    answers = [whole_sentences(a) for a in answers]
    keep = [i for i, a in enumerate(answers) if len(a.split()) >= 12]
    rows = []
    for i in keep:
        kind, bad = damaged(i, answers, rng)
        if bad.strip() and bad.strip() != answers[i].strip():
            rows.append({"id": f"p{i}", "prompt": prompts[i], "chosen": answers[i], "rejected": bad, "damage": kind})
    return rows


def split(rows: list[dict], heldout: float) -> tuple[list[dict], list[dict]]:
    order = sorted(rows, key=lambda r: random.Random(f"split:{r['id']}").random())
    n_held = max(1, round(len(order) * heldout))
    return order[n_held:], order[:n_held]


def noisy(train: list[dict], rate: float, judge: str, seed: int) -> list[dict]:
    """The train pairs as a judge at this noise rate labels them: a `rate` share flipped, each with p_chosen."""
    rng = random.Random(f"noise:{rate}:{seed}")
    flipped = set(rng.sample(range(len(train)), round(rate * len(train))))
    prng = random.Random(f"p:{judge}:{rate}:{seed}")
    out = []
    for i, r in enumerate(train):
        wrong = i in flipped
        if judge == "calibrated" and wrong:
            p = prng.uniform(0.50, 0.60)
        else:
            p = prng.uniform(0.55, 0.95)
        c, rj = (r["rejected"], r["chosen"]) if wrong else (r["chosen"], r["rejected"])
        out.append({"prompt": r["prompt"], "chosen": c, "rejected": rj, "p_chosen": round(p, 4), "flipped": wrong})
    return out


# ---------------------------------------------------------------- training and scoring


def train(stage: str, data: Path, out: Path, *, soft: bool, steps: int, seed: int, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "cai.cli", "train", stage, "--data", str(data), "--out", str(out), "--device", "cpu",
           "--max-steps", str(steps), "--seed", str(seed), *extra]
    if soft:
        cmd.append("--soft-labels")
    shutil.rmtree(out, ignore_errors=True)  # a run cut short leaves a folder `cai train` would refuse
    t0 = time.monotonic()
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    return {"wall_s": round(time.monotonic() - t0, 1), "trained_with": metrics.get("labels")}


def _answer_logprobs(model, tok, rows: list[dict], key: str) -> list[float]:
    """Sum of the answer's token log-probabilities after the chat-templated prompt, per row."""
    import torch

    out = []
    for r in rows:
        prompt = tok.apply_chat_template([{"role": "user", "content": r["prompt"]}], tokenize=False,
                                         add_generation_prompt=True)
        full = tok.apply_chat_template([{"role": "user", "content": r["prompt"]},
                                        {"role": "assistant", "content": r[key]}], tokenize=False)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        ids = tok(full, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, :-1].float()
        lp = torch.log_softmax(logits, -1).gather(1, torch.tensor(ids[1:]).unsqueeze(1)).squeeze(1)
        out.append(float(lp[len(p_ids) - 1:].sum()))
    return out


def policy_scores(folder: str, rows: list[dict]) -> tuple[list[float], list[float]]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return _answer_logprobs(model, tok, rows, "chosen"), _answer_logprobs(model, tok, rows, "rejected")


def reward_scores(folder: str, rows: list[dict]) -> list[float]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1, dtype=torch.float32).eval()
    model.config.pad_token_id = tok.pad_token_id
    margins = []
    for r in rows:
        scores = []
        for key in ("chosen", "rejected"):
            text = tok.apply_chat_template([{"role": "user", "content": r["prompt"]},
                                            {"role": "assistant", "content": r[key]}], tokenize=False)
            with torch.no_grad():
                scores.append(float(model(**tok(text, return_tensors="pt", add_special_tokens=False)).logits[0, 0]))
        margins.append(scores[0] - scores[1])
    return margins


def accuracy(margins: list[float]) -> float:
    return sum(1.0 if m > 0 else 0.5 if m == 0 else 0.0 for m in margins) / len(margins)


def interval(acc: float, n: int) -> tuple[float, float]:
    from cai.judge.figures import wilson

    return wilson(acc * n, n)


# ---------------------------------------------------------------- the experiment


def cells(noise: list[float]) -> list[tuple[float, str, bool]]:
    """(noise, judge, soft) of every training run; one hard run per noise rate."""
    out = []
    for rate in noise:
        out.append((rate, "-", False))
        for judge in (JUDGES[:1] if rate == 0 else JUDGES):  # at 0% no pair is flipped: the judges agree
            out.append((rate, judge, True))
    return out


def run(args) -> dict:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    from cai.models import resolve

    model = str(resolve(args.model))
    answers_file = work / f"answers-{args.max_tokens}.json"
    prompts = bundled_prompts()
    if answers_file.exists():
        answers = json.loads(answers_file.read_text())
    else:
        print(f"label_noise: the default model answers {len(prompts)} bundled prompts (vLLM, greedy)", flush=True)
        answers = clean_answers(prompts, model, args.max_tokens)
        answers_file.write_text(json.dumps(answers))
    rows = true_pairs(prompts, answers)
    train_rows, held = split(rows, args.heldout)
    damages = ", ".join(f"{k} {sum(r['damage'] == k for r in rows)}" for k in ("cut", "loop", "other"))
    print(f"label_noise: {len(rows)} pairs with a known truth ({len(train_rows)} train, {len(held)} held out); "
          f"damages: {damages}",
          flush=True)
    base_c = base_r = None
    results = []
    for stage in args.stages:
        if stage == "dpo" and base_c is None:
            base_c, base_r = policy_scores(model, held)
        for seed in args.seeds:
            for rate, judge, soft in cells(args.noise):
                tag = f"{stage}-n{int(rate * 100)}-{judge}-{'soft' if soft else 'hard'}-s{seed}"
                data = work / f"{tag}.jsonl"
                labelled = noisy(train_rows, rate, judge if judge != "-" else JUDGES[0], seed)
                data.write_text("".join(json.dumps(r) + "\n" for r in labelled))
                out = work / tag
                extra = [*args.extra, "--set", "eval_fraction=0.05"] if stage == "reward" else list(args.extra)
                info = train(stage, data, out, soft=soft, steps=args.steps, seed=seed, extra=extra)
                if stage == "dpo":
                    pc, pr = policy_scores(str(out), held)
                    margins = [BETA * ((a - b) - (c - d)) for a, b, c, d in zip(pc, base_c, pr, base_r, strict=True)]
                else:
                    margins = reward_scores(str(out), held)
                acc = accuracy(margins)
                cell = {"stage": stage, "noise": rate, "judge": judge, "labels": "soft" if soft else "hard",
                        "seed": seed, "accuracy": round(acc, 4), "interval": [round(x, 3) for x in interval(acc, len(held))],
                        "mean_margin": round(statistics.fmean(margins), 5), "n_heldout": len(held), **info}
                results.append(cell)
                print(f"  {tag}: held-out accuracy {acc:.3f}, mean margin {cell['mean_margin']:+.4f} "
                      f"({info['wall_s']} s)", flush=True)
    return {"model": args.model, "steps": args.steps, "seeds": args.seeds, "noise": args.noise,
            "train_pairs": len(train_rows), "heldout_pairs": len(held), "extra": args.extra, "results": results}


def table(report: dict) -> str:
    """Per stage, noise and judge: hard and soft accuracy (mean over seeds), their ratio and the goal."""
    lines = []
    res = report["results"]
    for stage in sorted({r["stage"] for r in res}):
        lines += [f"\n{stage}: held-out {'preference' if stage == 'dpo' else 'pairwise'} accuracy "
                  f"({report['heldout_pairs']} pairs, {report['steps']} steps, seeds {report['seeds']})",
                  "| noise | judge | hard | soft | soft/hard | soft - hard | hard margin | soft margin | goal |",
                  "|---|---|---|---|---|---|---|---|---|"]

        def mean(rate, judge, labels, key):
            vals = [r[key] for r in res if r["stage"] == stage and r["noise"] == rate
                    and r["labels"].split()[0] == labels
                    and (labels == "hard" or r["judge"] == judge)]
            return statistics.fmean(vals) if vals else math.nan

        for rate in report["noise"]:
            for judge in (JUDGES[:1] if rate == 0 else JUDGES):
                hard, soft = mean(rate, judge, "hard", "accuracy"), mean(rate, judge, "soft", "accuracy")
                if rate == 0 or judge == "uninformative":
                    goal, met = "soft >= hard - 0.02", soft >= hard - 0.02
                elif rate >= 0.4:
                    goal, met = "soft > hard", soft > hard
                else:
                    goal, met = "-", None
                mark = "" if met is None else (" (met)" if met else " (NOT met)")
                lines.append(f"| {int(rate * 100)}% | {judge if rate else 'any'} | {hard:.3f} | {soft:.3f} | "
                             f"{soft / hard if hard else math.nan:.2f}x | {soft - hard:+.3f} | "
                             f"{mean(rate, judge, 'hard', 'mean_margin'):+.4f} | "
                             f"{mean(rate, judge, 'soft', 'mean_margin'):+.4f} | {goal}{mark} |")
    n = report["heldout_pairs"]
    half = 1.96 * math.sqrt(0.25 / n) if n else math.nan
    lines.append(f"\nNoise of one cell: a held-out accuracy near 0.5 on {n} pairs has a 95% interval of about "
                 f"±{half:.2f}; differences smaller than that between hard and soft are not a result.")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stages", default="dpo,reward", type=lambda s: s.split(","))
    ap.add_argument("--noise", default="0,0.2,0.4", type=lambda s: [float(x) for x in s.split(",")])
    ap.add_argument("--seeds", default="0", type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--max-tokens", type=int, default=64, help="Length of the clean answers.")
    ap.add_argument("--heldout", type=float, default=0.25, help="Share of the pairs held out.")
    ap.add_argument("--work", default="runs/label-noise")
    ap.add_argument("--json", default=None)
    ap.add_argument("--set", dest="sets", action="append", default=[],
                    help="Passed to every `cai train` as --set KEY=VALUE.")
    args = ap.parse_args()
    args.extra = ["--batch-size", "8", "--max-length", "192", "--learning-rate", "2e-4",
                  "--set", "gradient_checkpointing=false"]
    for s in args.sets:
        args.extra += ["--set", s]
    report = run(args)
    text = table(report)
    print(text)
    report["table"] = text
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
