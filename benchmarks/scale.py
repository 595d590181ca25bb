"""Memory and time at the sizes users run: every stage that reads a run folder, at 1k, 10k and 100k rows.

    python benchmarks/scale.py [--from RUN] [--sizes 1000,10000,100000] [--million] [--json OUT]

Builds run folders of each size from a real run's rows (default `runs/demo/run`, what `make demo`
leaves; any judged run folder will do): its generations, preferences and ties are repeated with
new ids, and each copy's texts carry a short copy tag, so no row duplicates another (the export
would leave duplicates out) while every row keeps a real row's shape and length. Then runs each
command as its own process, one at a time, and prints its seconds and peak resident memory (from
`wait4`, the child's own peak), the page size of `cai view`, and per command the ratio
peak(largest) / peak(smallest), whose goal is <= 1.5: memory flat in the run's size. Time should
grow linearly with the rows (the s/1k-rows column). `cai judge` runs over a run whose pairs are all
judged already (a resume: the streamed passes over the run, not the engine, which is the same at
every size) with an instant stand-in engine, because a real judge on 100k pairs takes hours. The
exports keep flagged rows (`--keep-flagged`), so every size writes rows whatever the source's flags.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
FILES = ("generations.jsonl", "preferences.jsonl", "ties.jsonl")

# The judge over a run folder, resumed, with an instant engine: everything `cai judge RUN` does
# around the engine (reading run.yaml, the streamed units, the done-pair ids, the summary).
JUDGE = """
import sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
from scale import resumed_judge
from cai.pairs import judge_run

run = Path(sys.argv[1])
s = judge_run(run, resumed_judge(run), "revision", progress=False, window=8, calibration="none", log=lambda s: None)
print(f"judge: {s.skipped} pairs already judged, {s.judged} judged now")
"""


class Instant:
    """Named as the judge that judged the run, so its pairs are this judge's to resume; never asked."""

    context_window = None

    def __init__(self, judged: dict):
        self.name, self.model = judged.get("backend", "instant"), judged.get("judge_model", "instant")

    def chat(self, convs, params):
        raise SystemExit("the resumed judge asked the engine")

    def choice_logprobs(self, convs, prefix, options):
        raise SystemExit("the resumed judge asked the engine")

    def close(self):
        pass


def resumed_judge(run: Path):
    from cai.constitution import load_constitution
    from cai.judge import Judge
    from cai.records import RunFolder

    return Judge(Instant(RunFolder(run).info().get("judge") or {}), load_constitution("default"))


def _tag(text: str, k: int) -> str:
    return text if k == 0 else f"{text} [{k}]"


def replicate(src: Path, dst: Path, rows: int) -> None:
    """A run folder of `rows` generation rows made from `src`'s, with new ids and tagged texts."""
    dst.mkdir(parents=True)
    info = yaml.safe_load((src / "run.yaml").read_text())
    (dst / "run.yaml").write_text(yaml.safe_dump(info, sort_keys=False, allow_unicode=True))
    gens = [json.loads(x) for x in (src / "generations.jsonl").read_text().splitlines() if x.strip()]
    by_source: dict[str, list[tuple[str, dict]]] = {}
    for name in FILES[1:]:
        path = src / name
        for line in (path.read_text().splitlines() if path.exists() else []):
            if line.strip():
                p = json.loads(line)
                for sid in p.get("source_ids") or []:
                    by_source.setdefault(sid, []).append((name, p))
    from cai.records import record_id

    judge = resumed_judge(dst)
    ident = record_id(judge.describe(), judge.constitution.sha256(), (info.get("judge") or {}).get("strategy"))
    outs = {name: open(dst / name, "w", encoding="utf-8") for name in FILES}
    try:
        for n in range(rows):
            g, k = gens[n % len(gens)], n // len(gens)
            new = {**g, "id": f"{g['id']}-{k}", "initial": _tag(g["initial"], k), "final": _tag(g["final"], k),
                   "prompt": [{**m, "content": _tag(m["content"], k)} for m in g["prompt"]],
                   "rounds": [{**r, "revision": _tag(r.get("revision", ""), k)} for r in g.get("rounds") or []]}
            outs["generations.jsonl"].write(json.dumps(new, ensure_ascii=False) + "\n")
            for name, p in by_source.get(g["id"], []):
                sources = [f"{s}-{k}" for s in p.get("source_ids") or []]
                pair = {**p, "id": record_id("pref", sources, ident), "source_ids": sources,
                        "chosen": _tag(p["chosen"], k), "rejected": _tag(p["rejected"], k),
                        "prompt": [{**m, "content": _tag(m["content"], k)} for m in p["prompt"]]}
                outs[name].write(json.dumps(pair, ensure_ascii=False) + "\n")
    finally:
        for fh in outs.values():
            fh.close()


def measure(cmd: list[str], env: dict) -> tuple[float, float, str]:
    """(seconds, peak RSS in MB, the last line printed) of one command as its own process."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    out = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    secs = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-2000:]}")
    return secs, usage.ru_maxrss / 1024, (out.strip().splitlines() or [""])[-1]


def commands(run: Path, work: Path) -> list[tuple[str, list[str], Path | None]]:
    cai = str(BIN / "cai")
    out = []
    for fmt in ("sft", "dpo", "kto"):
        out.append((f"export {fmt} jsonl", [cai, "export", str(run), "--format", fmt, "--keep-flagged", "--out",
                                             str(work / f"{fmt}.jsonl")], None))
    out.append(("export dpo parquet", [cai, "export", str(run), "--format", "dpo", "--keep-flagged", "--to", "parquet",
                                        "--out", str(work / "dpo.parquet")], None))
    out.append(("export sft hf", [cai, "export", str(run), "--format", "sft", "--keep-flagged", "--to", "hf", "--out",
                                   str(work / "sft_hf")], None))
    out.append(("judge (resumed)", [sys.executable, "-c", JUDGE, str(run)], None))
    out.append(("view", [cai, "view", str(run), "--out", str(work / "view.html")], work / "view.html"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from", dest="src", default=str(ROOT / "runs" / "demo" / "run"),
                    help="A judged run folder whose rows are replicated [default: runs/demo/run].")
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--million", action="store_true", help="Add a run of 1,000,000 rows (several GB on disk).")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    src = Path(args.src)
    if not (src / "generations.jsonl").exists() or not (src / "preferences.jsonl").exists():
        raise SystemExit(f"{src}: not a judged run folder; run `make demo` first, or pass --from RUN")
    sizes = [int(s) for s in args.sizes.split(",")] + ([1_000_000] if args.million else [])
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    results: dict[str, dict[int, dict]] = {}
    with tempfile.TemporaryDirectory(prefix="cai-scale-") as tmp:
        for size in sizes:
            run, work = Path(tmp) / f"run-{size}", Path(tmp) / f"out-{size}"
            replicate(src, run, size)
            work.mkdir()
            gen_mb = (run / "generations.jsonl").stat().st_size / 2**20
            print(f"{size} rows: generations.jsonl {gen_mb:.0f} MB", file=sys.stderr)
            for name, cmd, page in commands(run, work):
                secs, peak, last = measure(cmd, env)
                row = {"seconds": round(secs, 2), "peak_mb": round(peak, 1), "generations_mb": round(gen_mb, 1)}
                if page is not None:
                    row["page_mb"] = round(page.stat().st_size / 2**20, 1)
                results.setdefault(name, {})[size] = row
                print(f"  {name:20s} {secs:7.2f} s  {peak:7.1f} MB  {last[:90]}", file=sys.stderr)
            shutil.rmtree(run)
            shutil.rmtree(work)
    lo, hi = sizes[0], sizes[-1]
    head = " | ".join(f"{s:,} rows" for s in sizes)
    print(f"| command | {head} | peak {hi:,}/{lo:,} | s per 1k rows at {hi:,} |")
    print("|---|" + "---|" * len(sizes) + "---|---|")
    for name, by_size in results.items():
        cells = []
        for s in sizes:
            r = by_size[s]
            cells.append(f"{r['seconds']:.1f} s, {r['peak_mb']:.0f} MB" + (f", page {r['page_mb']:.0f} MB"
                                                                            if "page_mb" in r else ""))
        ratio = by_size[hi]["peak_mb"] / by_size[lo]["peak_mb"]
        print(f"| `{name}` | " + " | ".join(cells) + f" | {ratio:.2f} | {by_size[hi]['seconds'] / hi * 1000:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"sizes": sizes, "source": str(src), "results": results}, indent=2))


if __name__ == "__main__":
    main()
