"""Peak resident memory of `cai generate` against the number of prompts: it should stay flat.

    python benchmarks/memory.py [--sizes 250,1000] [--backend vllm] [--rounds 0] [--max-tokens 8]

Writes a prompt file of N distinct prompts for each size, runs the real `cai generate` on it in a
subprocess, and samples the peak resident memory (VmHWM) of the cai process itself: the engine's
worker processes hold a fixed KV-cache reservation that does not depend on the prompt count, so
they are reported apart. Prompts are read and rows written as streams, so the cai process should
need about the same memory for 1,000 prompts as for 250. Short outputs keep the run quick; the
figure is about cai's own bookkeeping, not the engine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUBJECTS = ["a garden", "a small bakery", "a train timetable", "a chess club", "a tax form", "a hiking trip",
            "a bicycle repair", "a job interview", "a science fair", "a birthday party", "a rainy weekend",
            "a new laptop", "a library visit", "a football match", "a cooking class", "a moving day"]
ASKS = ["Give me three tips for {s}.", "Write two sentences about {s}.", "What could go wrong with {s}?",
        "How do I plan {s} on a budget?", "Explain {s} to a ten-year-old.", "List the costs of {s}."]


def prompt_file(n: int, folder: Path) -> Path:
    path = folder / f"prompts-{n}.jsonl"
    with path.open("w") as f:
        for i in range(n):
            s, a = SUBJECTS[i % len(SUBJECTS)], ASKS[(i // len(SUBJECTS)) % len(ASKS)]
            f.write(json.dumps({"prompt": f"{a.format(s=s)} (request {i})"}) + "\n")
    return path


def status_kib(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def children(pid: int) -> list[int]:
    """Every descendant of `pid` (the engine's processes are spawned from other threads, so the
    main thread's own `children` list misses them: walk the parent links of all processes)."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                # the command name may hold spaces and parentheses: the parent pid follows the last ")"
                parent[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    out, frontier = [], {pid}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier}
        out += sorted(frontier)
    return out


def run_once(n: int, args, folder: Path) -> dict:
    recipe = folder / "recipe.yaml"
    step = f"{{max_tokens: {args.max_tokens}, temperature: 0.7, top_p: 0.95}}"
    recipe.write_text(f"answer: {step}\ncritique: {step}\nrevision: {step}\nchunk_size: {args.chunk_size}\n")
    cmd = [sys.executable, "-m", "cai.cli", "generate", "--prompts", str(prompt_file(n, folder)), "--rounds",
           str(args.rounds), "--backend", args.backend, "--run-dir", str(folder / f"run-{n}"), "--config", str(recipe),
           "--model", args.model]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = engine_peak = 0
    while proc.poll() is None:
        peak = max(peak, status_kib(proc.pid, "VmHWM") or 0)
        # the engine processes together, at their largest
        engine_peak = max(engine_peak, sum(status_kib(k, "VmRSS") or 0 for k in children(proc.pid)))
        time.sleep(0.25)
    err = proc.stderr.read()
    if proc.returncode != 0:
        raise SystemExit(f"cai generate failed for {n} prompts:\n{err[-2000:]}")
    rows = sum(1 for _ in open(folder / f"run-{n}" / "generations.jsonl"))
    return {"prompts": n, "rows": rows, "seconds": round(time.perf_counter() - t, 1),
            "cai_peak_rss_mib": round(peak / 1024, 1), "engine_processes_peak_rss_mib": round(engine_peak / 1024, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="250,1000", help="Prompt counts, comma-separated.")
    ap.add_argument("--backend", default="vllm")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--rounds", type=int, default=0)
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--chunk-size", type=int, default=64)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    runs = []
    with tempfile.TemporaryDirectory(prefix="cai-mem-") as tmp:
        for n in sizes:
            r = run_once(n, args, Path(tmp))
            runs.append(r)
            print(f"  {n:>6} prompts: {r['rows']} rows in {r['seconds']} s; cai process peak {r['cai_peak_rss_mib']} MiB, "
                  f"engine processes {r['engine_processes_peak_rss_mib']} MiB", flush=True)
    growth = runs[-1]["cai_peak_rss_mib"] / runs[0]["cai_peak_rss_mib"] if len(runs) > 1 else 1.0
    print(f"cai peak memory, {sizes[-1]} prompts over {sizes[0]}: {growth:.3f}x "
          f"(prompts {sizes[-1] / sizes[0]:.1f}x)")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "growth": round(growth, 3), "settings": vars(args)}, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
