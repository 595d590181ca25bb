"""`cai view` of big folders without a browser: the page holds a bounded, reproducible, stratified
sample with every flagged and flipped row up to a cap; every figure is still over all rows (and
equals what the whole-list code computed); memory does not grow with the run.
tests/test_view_scale_browser.py opens such a page in Chromium."""

from __future__ import annotations

import importlib.util
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cai.cli import main
from cai.quality import excluding
from cai.view import build_view, load, sample
from cai.view.analytics import RunningSum, principle_stats, question_stats
from tests.view_fixtures import make_eval, make_iterate, make_run

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("view_scale", ROOT / "benchmarks" / "view_scale.py")
view_scale = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(view_scale)


def page_data(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="cai-data">(.*?)</script>', html, re.S)
    return json.loads(m.group(1))


def rows_of(path: Path, name: str = "generations.jsonl") -> list[dict]:
    return [json.loads(line) for line in (path / name).read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    """20,000 rows replicated from a 200-row judged run in cai's formats (four rows in five judged,
    flips and ties, truncated finals): 8,000 of them flagged or flipped."""
    tmp = tmp_path_factory.mktemp("scale")
    make_run(tmp / "base", 200, seed=3)
    view_scale.replicate_run(tmp / "base", tmp / "run", 20_000)
    return tmp / "run"


def verdicts(run: Path) -> dict[str, str]:
    """Each row's verdict label, the old way (the last pair naming it)."""
    out = {}
    for name, tie in (("preferences.jsonl", False), ("ties.jsonl", True)):
        for p in rows_of(run, name):
            for sid in p["source_ids"]:
                out[sid] = "tie" if tie else "flip" if p["meta"].get("flipped") else "decided"
    return out


@pytest.fixture(scope="module")
def truth(big) -> tuple[dict[str, tuple], set[str]]:
    return strata_of(big)


def strata_of(run: Path) -> tuple[dict[str, tuple], set[str]]:
    """Each row's stratum (category, last principle, verdict) and the flagged-or-flipped ids."""
    v = verdicts(run)
    strata, priority = {}, set()
    for g in rows_of(run):
        label = v.get(g["id"], "unjudged")
        strata[g["id"]] = (g["category"], g["rounds"][-1]["principle_id"] if g["rounds"] else None, label)
        if excluding(g["flags"]) or label == "flip":
            priority.add(g["id"])
    return strata, priority


# ---------------------------------------------------------------- the sample

def test_the_page_holds_at_most_n_rows_stratified_with_the_flagged_and_flipped_first(big, truth):
    data = load.load_run(big, 2000)
    rows = list(data["rows"])
    strata, priority = truth
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) == 2000 and data["counts"]["rows"] == 20_000
    # in file order, each with its number in the file
    order = {g["id"]: k + 1 for k, g in enumerate(rows_of(big))}
    assert data["row_numbers"] == [order[i] for i in ids] == sorted(data["row_numbers"])
    # half the page, at most, for the 8,000 flagged or flipped rows: the 1,000 of lowest hash
    assert len(priority) == 8000
    cap = sorted(priority, key=sample.row_hash)[:1000]
    assert set(cap) <= set(ids)
    assert data["sample"]["priority"] == 1000 and data["sample"]["priority_total"] == 8000
    # every stratum has its minimum, and the rest is in proportion to the strata's sizes
    size: dict[tuple, int] = {}
    for sid, key in strata.items():
        if sid not in cap:
            size[key] = size.get(key, 0) + 1
    shown: dict[tuple, int] = {}
    for i in ids:
        if i not in cap:
            shown[strata[i]] = shown.get(strata[i], 0) + 1
    assert set(shown) == set(size) and len(size) >= 12
    share = 1000 / sum(size.values())
    for key, n in size.items():
        assert shown[key] >= min(n, sample.MIN_PER_STRATUM)
        assert abs(shown[key] - max(sample.MIN_PER_STRATUM, share * n)) <= 2, key
    # the table of strata on the page says the same
    listed = {(c, p, v): (n, s) for c, p, v, n, s in data["sample"]["strata"]}
    for key in size:
        assert listed[key][0] == size[key] + sum(strata[c] == key for c in cap)
    assert data["sample"]["text"].startswith("showing 2,000 of 20,000 rows (every flagged or flipped row first")


def test_every_flagged_and_flipped_row_is_in_under_the_cap(big, truth):
    data = load.load_run(big, 16_000)
    _, priority = truth
    ids = {r["id"] for r in data["rows"]}
    assert len(ids) == 16_000 and priority <= ids
    for r in data["rows"]:
        if r["id"] in priority:
            assert excluding(r.get("flags") or []) or r["verdict"]["label"] == "flip"


def test_the_sample_is_the_same_on_a_rerun_and_whatever_the_file_order(big, tmp_path):
    first = build_view(big, tmp_path / "a.html", 1500)[-1]
    again = build_view(big, tmp_path / "b.html", 1500)[-1]
    assert (tmp_path / "a.html").read_bytes() == (tmp_path / "b.html").read_bytes()
    assert first.rows == 1500 and first.total == 20_000
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    (shuffled / "run.yaml").write_text((big / "run.yaml").read_text())
    rng = random.Random(7)
    for name in ("generations.jsonl", "preferences.jsonl", "ties.jsonl"):
        lines = (big / name).read_text(encoding="utf-8").splitlines(keepends=True)
        rng.shuffle(lines)
        (shuffled / name).write_text("".join(lines), encoding="utf-8")
    a = page_data((tmp_path / "a.html").read_text())
    b = load.load_run(shuffled, 1500)
    assert sorted(a["rows"], key=lambda r: r["id"]) == sorted(b["rows"], key=lambda r: r["id"])
    assert a["counts"] == b["counts"] and a["flag_names"] == b["flag_names"]
    assert a["sample"] == b["sample"]
    # figures over all rows do not depend on the order either (principles first seen: from the constitution)
    assert a["analytics"] == b["analytics"]


def test_a_byte_budget_stops_the_rows_at_that_size(big):
    data = load.load_run(big, "2MB")
    assert 1.9e6 < data["rows"].nbytes <= 2e6
    assert 0 < len(data["rows"]) < 20_000 and data["sample"]["limit"] == "the page's 2 MB budget"
    default = load.load_run(big)  # the default: the page's 30 MB budget, which 20,000 small rows fit
    assert len(default["rows"]) == 20_000 and "row_numbers" not in default
    assert default["sample"]["text"] == "showing 20,000 of 20,000 rows (every row)"


def test_rows_all_embeds_every_row_in_file_order(big, tmp_path):
    res = CliRunner().invoke(main, ["view", str(big), "--out", str(tmp_path / "all.html"), "--rows", "all"])
    assert res.exit_code == 0, res.output
    assert "(run, 20000 rows," in res.output
    data = page_data((tmp_path / "all.html").read_text())
    assert [r["id"] for r in data["rows"]] == [g["id"] for g in rows_of(big)]
    res = CliRunner().invoke(main, ["view", str(big), "--out", str(tmp_path / "s.html"), "--rows", "300"])
    assert res.exit_code == 0 and "(run, 300 of 20000 rows: a sample" in res.output
    for bad in ("0", "-3", "many", "0MB"):
        res = CliRunner().invoke(main, ["view", str(big), "--rows", bad])
        assert res.exit_code == 2 and "--rows" in res.output, (bad, res.output)


# ---------------------------------------------------------------- figures over every row

def _norm(text):
    return " ".join((text or "").split())


def _words(text):
    return len((text or "").split())


def old_principle_stats(generations, pairs, order=()):
    """analytics.principle_stats as it was before the streamed tallies (verbatim, as dicts)."""
    acc = {pid: {"n": 0, "changed": 0, "dlen": [], "flagged": 0, "crit": 0, "scores": []} for pid in order}
    last_used = {}
    for g in generations:
        previous = g.get("initial", "")
        rounds = g.get("rounds") or []
        for rd in rounds:
            a = acc.setdefault(rd["principle_id"], {"n": 0, "changed": 0, "dlen": [], "flagged": 0, "crit": 0,
                                                    "scores": []})
            revision = rd.get("revision", "")
            flags = rd.get("flags") or []
            a["n"] += 1
            a["changed"] += _norm(revision) != _norm(previous)
            a["dlen"].append(_words(revision) - _words(previous))
            a["flagged"] += bool(excluding(flags))
            a["crit"] += any(f.startswith("critique_") for f in flags)
            previous = revision
        if rounds:
            last_used[g["id"]] = rounds[-1]["principle_id"]
    score = {"decided": 1.0, "tie": 0.5, "flip": 0.0}
    for p in pairs:
        if p.get("strategy") != "revision" or not p.get("source_ids"):
            continue
        pid = last_used.get(p["source_ids"][0])
        if pid is not None:
            label = "tie" if p.get("tie") else "flip" if (p.get("meta") or {}).get("flipped") else "decided"
            acc[pid]["scores"].append(score[label])
    share = lambda k, n: round(k / n, 4) if n else None  # noqa: E731
    mean = lambda xs: round(sum(xs) / len(xs), 4) if xs else None  # noqa: E731
    return [{"id": pid, "drawn": a["n"], "changed": share(a["changed"], a["n"]), "length_change": mean(a["dlen"]),
             "flagged": share(a["flagged"], a["n"]), "critique_flagged": share(a["crit"], a["n"]),
             "judged": len(a["scores"]), "win_rate": mean(a["scores"])} for pid, a in acc.items()]


def old_question_stats(pairs, order=()):
    acc = {q: [] for q in order}
    for p in pairs:
        if p.get("reason") or _norm(p.get("chosen", "")) == _norm(p.get("rejected", "")):
            continue
        for j in p.get("judgements") or []:
            acc.setdefault(j["question_id"], []).append((j["p_first"], j["p_second"]))
    out = []
    for qid, asks in acc.items():
        margins = [abs((a + b) / 2 - 0.5) for a, b in asks]
        same = sum((a > 0.5) == (b > 0.5) and (a != 0.5) == (b != 0.5) for a, b in asks)
        out.append({"id": qid, "asked": len(asks), "margin": round(sum(margins) / len(margins), 4) if margins else None,
                    "consistency": round(same / len(asks), 4) if asks else None})
    return out


def old_figures(run: Path) -> dict:
    """What load_run computed before, holding every row: counts, analytics, flags, shared meta."""
    import yaml

    gens = rows_of(run)
    pairs = rows_of(run, "preferences.jsonl") + [{**t, "tie": True} for t in rows_of(run, "ties.jsonl")]
    snapshot = yaml.safe_load((run / "run.yaml").read_text())["constitution"]
    by_source = {sid: p for p in pairs for sid in p["source_ids"]}
    counts = {"rows": len(gens), "pairs": len(pairs), "unjudged": sum(g["id"] not in by_source for g in gens),
              "flagged": sum(bool(excluding(g.get("flags") or [])) for g in gens), "decided": 0, "flip": 0, "tie": 0}
    for p in pairs:
        counts["tie" if p.get("tie") else "flip" if p["meta"].get("flipped") else "decided"] += 1
    metas = [g.get("meta") or {} for g in gens]
    shared = dict(metas[0])
    for m in metas[1:]:
        same = lambda k: json.dumps(shared[k], sort_keys=True) == json.dumps(m[k], sort_keys=True)  # noqa: E731
        for k in [k for k in shared if k not in m or not same(k)]:
            del shared[k]
    flags = sorted({f for g in gens for f in (g.get("flags") or []) + (g.get("initial_flags") or [])}
                   | {f for g in gens for r in g.get("rounds") or [] for f in r.get("flags") or []})
    return {"counts": counts, "shared_meta": shared, "flag_names": flags,
            "analytics": {"principles": old_principle_stats(gens, pairs, [p["id"] for p in snapshot["principles"]]),
                          "questions": old_question_stats(pairs, [c["id"] for c in snapshot["comparisons"]])}}


def test_the_figures_are_over_all_rows_and_equal_the_old_way(big, tmp_path):
    small = tmp_path / "small"
    made = make_run(small, 130, seed=11)
    want = old_figures(small)
    for limit in (7, None, "all"):
        data = load.load_run(small, limit)
        assert {k: data[k] for k in want} == want
    data = load.load_run(big, 500)
    want = old_figures(big)
    assert {k: data[k] for k in want} == want and len(data["rows"]) == 500
    # the module's own list-taking functions give the same figures as before
    pairs = made["pairs"]
    got = [vars(s) for s in principle_stats(made["generations"], pairs, order=["harm", "honesty"])]
    assert got == old_principle_stats(made["generations"], pairs, ["harm", "honesty"])
    assert [vars(s) for s in question_stats(iter(pairs))] == old_question_stats(pairs)


def test_a_running_sum_adds_as_the_builtin_sum_does():
    rng = random.Random(5)
    for _ in range(200):
        xs = [abs(rng.random() ** rng.choice((1, 3, 9)) * 10 ** rng.randint(-8, 8)) for _ in range(rng.randint(1, 400))]
        s = RunningSum()
        for x in xs:
            s.add(x)
        assert s.value() == sum(xs) and s.n == len(xs)
    s = RunningSum()
    for x in (1e100, 1.0, -1e100):
        s.add(x)
    assert s.value() == sum([1e100, 1.0, -1e100])


# ---------------------------------------------------------------- memory

def peak_rss_kb(run: Path, out: Path, *args: str) -> int:
    """Peak RSS of a `cai view` child process, from getrusage(RUSAGE_CHILDREN) in a parent of its
    own (this test process has other children)."""
    code = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
            "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    res = subprocess.run([sys.executable, "-c", code, sys.executable, "-m", "cai.cli", "view", str(run), "--out",
                          str(out), *args], capture_output=True, text=True, cwd=ROOT, timeout=600)
    rc, rss = res.stdout.split()[-2:]
    assert rc == "0", res.stderr
    return int(rss)


def test_peak_memory_does_not_grow_with_the_run(tmp_path):
    make_run(tmp_path / "base", 200, seed=5)
    rss = {}
    for n in (5000, 40_000):
        view_scale.replicate_run(tmp_path / "base", tmp_path / f"r{n}", n)
        rss[n] = peak_rss_kb(tmp_path / f"r{n}", tmp_path / f"v{n}.html", "--rows", "1000")
        assert len(page_data((tmp_path / f"v{n}.html").read_text())["rows"]) == 1000
    print(f"\npeak RSS of cai view --rows 1000: 5,000 rows {rss[5000] / 1024:.0f} MB, "
          f"40,000 rows {rss[40_000] / 1024:.0f} MB")
    assert rss[40_000] / rss[5000] < 1.5


# ---------------------------------------------------------------- eval and iterate folders

def test_an_eval_folder_gets_the_same_cap(tmp_path):
    rows = make_eval(tmp_path / "eval", 3000)
    data = load.load_eval(tmp_path / "eval", 300)
    shown = list(data["rows"])
    assert len(shown) == 300 and data["sample"]["of"] == 3000
    assert data["categories"] == load.outcome_counts(rows)  # counted over every row
    assert data["row_numbers"] == [r["index"] + 1 for r in shown] == sorted(data["row_numbers"])
    keys = {(r["category"], r["outcome"], r["harmful"]) for r in rows}
    assert {(r["category"], r["outcome"], r["harmful"]) for r in shown} == keys
    assert data["sample"]["text"].startswith("showing 300 of 3,000 rows (a sample stratified by category, outcome")
    assert len(load.load_eval(tmp_path / "eval")["rows"]) == 3000  # small rows: all under the budget


def test_iterate_pages_pass_the_limit_on_and_still_link(tmp_path):
    make_iterate(tmp_path / "it")
    written = build_view(tmp_path / "it", rows=4)
    assert [(w.kind, w.rows, w.total) for w in written[:-1]] == [("run", 4, 6), ("eval", 4, 6), ("run", 4, 6),
                                                                  ("eval", 4, 6), ("run", 4, 6)]
    data = page_data((tmp_path / "it" / "view.html").read_text())
    assert data["iterations"][0]["run"] == "iterations/01/run/view.html"
