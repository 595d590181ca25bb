"""`cai view` against the size of the run: seconds, peak memory, page size and first paint.

    python benchmarks/view_scale.py [--source RUN] [--sizes 1000,10000,100000] [--rows auto] [--loads 3]

Replicates a run folder (--source; default: a synthetic judged run of 500 rows with answers of
about 130 words, two rounds, four rows in five judged, as tests/view_fixtures.py makes them) to
each size, with new row ids and the pairs that judge them, runs the real `cai view` on it in a
subprocess (peak RSS from getrusage of that child), then opens the page in headless Chromium
(--loads times, fresh profile each) and reads the page's own timing element: when the table
first showed (frame_ms, since navigation start), JSON.parse and first contentful paint.
--budgets 10,20,30,40 also measures pages of those many MB of rows (one run of the largest size)
to pick a default byte budget from.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def replicate_run(source: Path, dest: Path, n: int) -> None:
    """dest: a run folder of n rows made of source's rows over and over, each copy with new ids
    (`ID~k`), its pairs renamed to match; run.yaml as it is."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(source / "run.yaml", dest / "run.yaml")
    base = [json.loads(line) for line in (source / "generations.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()]
    pairs = {}
    for name in ("preferences.jsonl", "ties.jsonl"):
        f = source / name
        pairs[name] = [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines()
                       if line.strip()] if f.exists() else []
    copies = -(-n // len(base))
    ids = set()
    with open(dest / "generations.jsonl", "w", encoding="utf-8") as out:
        for k in range(copies):
            for g in base:
                if len(ids) == n:
                    break
                g = {**g, "id": f"{g['id']}~{k}"}
                ids.add(g["id"])
                out.write(json.dumps(g, ensure_ascii=False) + "\n")
    for name, rows in pairs.items():
        with open(dest / name, "w", encoding="utf-8") as out:
            for k in range(copies):
                for p in rows:
                    sources = [f"{s}~{k}" for s in p.get("source_ids") or []]
                    if sources and all(s in ids for s in sources):
                        out.write(json.dumps({**p, "id": f"{p['id']}~{k}", "source_ids": sources},
                                             ensure_ascii=False) + "\n")


def synthetic_base(folder: Path, n: int = 500) -> Path:
    sys.path.insert(0, str(ROOT))
    from tests.view_fixtures import make_run

    make_run(folder, n, long_text=True)
    return folder


def cai_view(run: Path, out: Path, rows: str) -> dict:
    """The real `cai view` in a child process: its seconds and peak RSS (getrusage of the child)."""
    code = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
            "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
            "print(r.returncode, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
            "print(r.stdout + r.stderr, file=sys.stderr)")
    res = subprocess.run([sys.executable, "-c", code, sys.executable, "-m", "cai.cli", "view", str(run), "--out",
                          str(out), "--rows", rows], capture_output=True, text=True, cwd=ROOT)
    rc, seconds, rss_kb = res.stdout.split()
    if rc != "0":
        raise SystemExit(f"cai view failed: {res.stderr}")
    return {"seconds": float(seconds), "peak_rss_mb": int(rss_kb) / 1024, "page_mb": out.stat().st_size / 1e6,
            "said": res.stderr.strip()}


def chromium() -> str:
    found = os.environ.get("CAI_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise SystemExit("no Chromium found (set CAI_CHROMIUM)")
    return found


def first_paint(page: Path, loads: int) -> dict:
    """Median over `loads` fresh loads of the page's own timing (ms since navigation start)."""
    runs = []
    for _ in range(loads):
        with tempfile.TemporaryDirectory() as profile:
            t = time.perf_counter()
            res = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                  f"--user-data-dir={profile}", "--virtual-time-budget=3000", "--dump-dom",
                                  page.resolve().as_uri()], capture_output=True, text=True, timeout=600)
            wall = time.perf_counter() - t
        m = re.search(r'<output id="cai-perf"[^>]*>(.*?)</output>', res.stdout, re.S)
        if not m:
            raise SystemExit(f"no timing from the page: {res.stderr[-1000:]}")
        perf = json.loads(m.group(1).replace("&quot;", '"'))
        perf["browser_s"] = wall
        runs.append(perf)
    keys = ("frame_ms", "parse_ms", "render_ms", "first_contentful_paint_ms", "browser_s")
    return {k: statistics.median(r[k] for r in runs if k in r) for k in keys if any(k in r for r in runs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, help="a judged run folder to replicate [default: a synthetic one]")
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--rows", default="auto", help="cai view --rows")
    ap.add_argument("--loads", type=int, default=3)
    ap.add_argument("--budgets", default="", help="also: pages of these many MB of rows, e.g. 10,20,30,40")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    results = {"sizes": [], "budgets": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = args.source or synthetic_base(tmp / "base")
        sizes = [int(s) for s in args.sizes.split(",") if s]
        for n in sizes:
            run = tmp / f"run{n}"
            replicate_run(source, run, n)
            got = {"rows": n, **cai_view(run, tmp / f"view{n}.html", args.rows)}
            got.update(first_paint(tmp / f"view{n}.html", args.loads))
            results["sizes"].append(got)
            print(json.dumps(got), flush=True)
            if args.budgets and n == max(sizes):
                for mb in [b for b in args.budgets.split(",") if b]:
                    page = tmp / f"budget{mb}.html"
                    got = {"budget_mb": float(mb), **cai_view(run, page, f"{mb}MB")}
                    got.update(first_paint(page, args.loads))
                    results["budgets"].append(got)
                    print(json.dumps(got), flush=True)
            if n != max(sizes):
                shutil.rmtree(run)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
