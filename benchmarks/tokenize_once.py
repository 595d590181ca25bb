"""Host CPU per generated token, each request tokenized once against twice (issue 24 §1).

    python benchmarks/tokenize_once.py [--n 32] [--max-tokens 32] [--engines async,offline] [--repeats 3]

Every stage checks a request against the context (`overflow()` → `count_tokens`: chat template and
tokenizer) before it sends it. Before, the backend then rendered and tokenized the request again to
send it (the offline engine through `LLM.chat`, the async one with its own tokenizer); now the ids
of the check are the ones sent (cai/backends/base.py, PromptTokens). This runs cai's own loop on
the default model — `cai generate` (answer, one critique → revision round) then `cai judge`
(revision against the initial answer, both orders) — through one backend object per engine, with
the kept ids off (`prompts.keep = False`, what CAI_TOKENIZE_ONCE=0 sets: the old path) and on, in
alternating order, side by side in one process. It measures `time.process_time()` of this process
(cai, vLLM's front-end and its output threads; not the engine core, a process of its own) per
generated token, and prints the ratio before / after. Outputs are the same either way (greedy, and
seeded sampling: tests/test_tokenize_once.py checks it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


def one_pass(args, be, keep: bool) -> dict:
    from cai.config import GenerateConfig, StepSampling
    from cai.constitution import load_constitution
    from cai.generate import run_generate
    from cai.judge import Judge, JudgeConfig
    from cai.pairs import judge_run

    be.prompts.keep = keep
    be.prompts.clear()  # each pass a fresh run: nothing counted by an earlier pass of the same prompts
    renders0, reused0 = be.prompts.renders, be.prompts.reused
    render_cpu = [0.0]  # this process's CPU in cai's chat-template renders and tokenizer calls
    render = be.prompts.render

    def timed(conv, prefix):
        t = time.thread_time()
        try:
            return render(conv, prefix)
        finally:
            render_cpu[0] += time.thread_time() - t

    be.prompts.render = timed
    run_dir = Path(tempfile.mkdtemp(prefix="bench-tok-"))
    step = StepSampling(max_tokens=args.max_tokens, temperature=0.7, top_p=0.95)
    cfg = GenerateConfig(prompts=args.prompts, limit=args.n, rounds=1, run_dir=str(run_dir), backend="vllm",
                         model=args.model, seed=0, answer=step, critique=step, revision=step, chunk_size=args.n,
                         force_new=True)
    try:
        c0, w0 = time.process_time(), time.perf_counter()
        g = run_generate(cfg, backend=be, progress=False, log=lambda s: None)
        c1, w1 = time.process_time(), time.perf_counter()
        j = judge_run(run_dir, Judge(be, load_constitution("default"), JudgeConfig(threshold=0.0)), "revision",
                      window=args.n, progress=False, log=lambda s: None)
        c2, w2 = time.process_time(), time.perf_counter()
    finally:
        be.prompts.render = render
        shutil.rmtree(run_dir, ignore_errors=True)
    questions = 2 * (j.judged - j.identical - j.too_long)  # asked in both orders, one token each
    requests = 3 * g.written + questions
    # what tokenized the requests: cai's renders, and vLLM's own where the offline engine renders them
    by_vllm = requests if not keep and not hasattr(be, "_engine") else 0
    return {"keep": keep, "generate_cpu_s": c1 - c0, "generate_wall_s": w1 - w0, "generate_tokens": g.tokens,
            "judge_cpu_s": c2 - c1, "judge_wall_s": w2 - w1, "judge_questions": questions,
            "cpu_s": c2 - c0, "tokens": g.tokens + questions, "requests": requests,
            "renders": be.prompts.renders - renders0 + by_vllm, "reused": be.prompts.reused - reused0,
            "cai_render_cpu_s": render_cpu[0]}


def median_pass(passes: list[dict]) -> dict:
    """One setting's passes: the median pass of each figure (a noisy machine: a pass that shared the
    cores with something else counts once, not in a sum)."""
    out = {k: statistics.median(p[k] for p in passes) for k in passes[0] if k != "keep"}
    out["cpu_ms_per_token"] = 1000 * statistics.median(p["cpu_s"] / p["tokens"] for p in passes)
    out["generate_cpu_ms_per_token"] = 1000 * statistics.median(p["generate_cpu_s"] / p["generate_tokens"]
                                                                for p in passes)
    out["judge_cpu_ms_per_question"] = 1000 * statistics.median(p["judge_cpu_s"] / p["judge_questions"]
                                                                for p in passes)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", default=None, help="Prompt set (any format cai reads); default: the bundled set.")
    ap.add_argument("--n", type=int, default=32, help="Prompts, all in flight at once.")
    ap.add_argument("--max-tokens", type=int, default=32, help="Most tokens per step (answer, critique, revision).")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--engines", default="async,offline", help="Comma-separated: async (the default engine), offline.")
    ap.add_argument("--repeats", type=int, default=3, help="Passes per setting (alternating which goes first); "
                    "each figure is the median pass.")
    ap.add_argument("--json", default=None, help="Write the figures here.")
    args = ap.parse_args()

    from cai.backends import load_backend
    from cai.backends.base import SamplingParams
    from cai.backends.vllm import shutdown_all

    results = {}
    for engine in [e.strip() for e in args.engines.split(",") if e.strip()]:
        be = load_backend("vllm", args.model, pipeline=engine == "async")
        be.chat([[{"role": "user", "content": "Hello."}]], SamplingParams(max_tokens=4))
        # one pass first, uncounted: what the first pass alone would pay (imports, template
        # compiles, the engine's first batch shapes) is in neither setting's figures
        one_pass(args, be, True)
        passes = []
        for r in range(args.repeats):
            for keep in ((False, True) if r % 2 == 0 else (True, False)):
                p = one_pass(args, be, keep)
                passes.append(p)
                print(f"  {engine:<8} {'once' if keep else 'twice':<6} host CPU {p['cpu_s']:6.2f} s for "
                      f"{p['tokens']} tokens ({p['requests']} requests, {p['renders']} tokenizations, "
                      f"{p['reused']} sent as counted; cai's renders {p['cai_render_cpu_s']:.2f} s), "
                      f"wall {p['generate_wall_s'] + p['judge_wall_s']:.1f} s",
                      flush=True)
        before, after = (median_pass([p for p in passes if p["keep"] is k]) for k in (False, True))
        results[engine] = {"before": before, "after": after, "passes": passes,
                           "ratio": before["cpu_ms_per_token"] / after["cpu_ms_per_token"]}
        shutdown_all()

    print(f"\nhost CPU per generated token, {args.n} prompts, {args.max_tokens} tokens a step, "
          f"median of {args.repeats} passes each (generate: answer + critique + revision; judge: both orders)")
    print("| engine | tokenized | host CPU ms/token | generate ms/token | judge ms/question | host CPU s | "
          "in cai's renders s | tokenizations / requests |")
    print("|---|---|---|---|---|---|---|---|")
    for engine, res in results.items():
        for label, key in (("twice (before)", "before"), ("once (after)", "after")):
            s = res[key]
            print(f"| {engine} | {label} | {s['cpu_ms_per_token']:.3f} | {s['generate_cpu_ms_per_token']:.3f} | "
                  f"{s['judge_cpu_ms_per_question']:.3f} | {s['cpu_s']:.2f} | {s['cai_render_cpu_s']:.2f} | "
                  f"{s['renders']:.0f} / {s['requests']:.0f} |")
    for engine, res in results.items():
        print(f"{engine}: before / after = {res['ratio']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"n": args.n, "max_tokens": args.max_tokens, "results": results},
                                              indent=2) + "\n")


if __name__ == "__main__":
    main()
