"""`cai view`'s judge calibration tab and labelling mode (issue 25 §1 and §5) in headless Chromium.

The labelling test clicks and types like a person (tests/cdp.py drives the browser over the
DevTools protocol), takes the calibration file the page downloads, and checks it three ways: it is
read by `read_labelled_pairs` with each label on the answer that was clicked; the judge's own
scoring on a scripted judge gives the figures computed here by hand; and `cai judge RUN
--calibration FILE` accepts it and records those figures in run.yaml, which the page then shows.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cai.cli import main
from cai.config import GenerateConfig
from cai.constitution import load_constitution
from cai.generate import run_generate
from cai.judge import Judge
from cai.judge.calibration import judge_file
from cai.judge.pairfile import read_labelled_pairs
from cai.view import build_view
from tests.cdp import Browser
from tests.scripted import ScriptedBackend
from tests.test_view_browser import assert_inert, body_rows, dump
from tests.view_fixtures import make_run

pytestmark = pytest.mark.slow  # each test starts a browser

N_PROMPTS = 16
# What the test marks, pair by pair in the page's order: the judge's chosen answer (here always the
# revision: the scripted judge prefers "GOOD"), its rejected one, or skip.
PLAN = ["chosen", "rejected", "chosen", "skip", "chosen", "rejected"]


def judged_run(tmp_path: Path, monkeypatch) -> Path:
    """A run generated and judged (`cai judge`, calibration none) with the scripted backend."""
    import cai.backends as backends

    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"question {i}: how do I plan a trip?", "category": "ab"[i % 2]})
                               + "\n" for i in range(N_PROMPTS)))
    run = tmp_path / "run"
    run_generate(GenerateConfig(prompts=str(prompts), rounds=1, run_dir=str(run), model="m"),
                 backend=ScriptedBackend(), progress=False)
    monkeypatch.setattr(backends, "load_backend", lambda *a, **k: ScriptedBackend())
    res = CliRunner().invoke(main, ["judge", str(run), "--calibration", "none", "--no-progress"])
    assert res.exit_code == 0, res.output
    return run


def shown(page) -> dict:
    """The pair on the page now: its id, its mark and the texts shown as A and B."""
    return page.evaluate("""(() => { const p = document.getElementById('label-pair');
        return {id: p.dataset.id, mark: p.dataset.mark,
                a: document.querySelector('#label-a pre').textContent, b: document.querySelector('#label-b pre').textContent}; })()""")


def progress(page) -> dict:
    return page.evaluate("(() => { const e = document.getElementById('label-progress'); return {...e.dataset,"
                         " button: document.getElementById('label-download').textContent}; })()")


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson interval, written out here from its formula."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def test_labelled_pairs_download_as_a_calibration_file_the_judge_scores(tmp_path, monkeypatch):
    run = judged_run(tmp_path, monkeypatch)
    pairs = {p["id"]: p for p in map(json.loads, (run / "preferences.jsonl").read_text().splitlines())}
    assert len(pairs) == N_PROMPTS and all("GOOD" in p["chosen"] and "GOOD" not in p["rejected"] for p in pairs.values())
    build_view(run)
    page_url = (run / "view.html").resolve().as_uri() + "#tab=label"

    with Browser(tmp_path / "downloads") as browser:
        page = browser.open(page_url)
        page.ready()
        assert progress(page)["total"] == str(N_PROMPTS) and progress(page)["marked"] == "0"
        assert page.evaluate("document.getElementById('label-download').disabled") is True

        # Every pair shows its own two answers; the revision is A on some and B on others (drawn at
        # random per pair: all 16 on one side would happen 2 in 65,536 times).
        seen, revision_first = [], []
        for _ in range(N_PROMPTS):
            now = shown(page)
            pair = pairs[now["id"]]
            assert {now["a"], now["b"]} == {pair["chosen"], pair["rejected"]}
            seen.append(now["id"])
            revision_first.append(now["a"] == pair["chosen"])
            page.key("ArrowRight")
        assert len(set(seen)) == N_PROMPTS and shown(page)["id"] == seen[0]  # and round to the first again
        assert set(revision_first) == {True, False}

        # Mark pairs in order, by mouse and by key; each mark moves on to the next unmarked pair.
        clicked = {}
        for k, what in enumerate(PLAN):
            now = shown(page)
            assert now["id"] == seen[k]
            if what == "skip":
                page.click("#mark-skip") if k % 2 else page.key("s")
                continue
            target = pairs[now["id"]][what]
            side = "a" if now["a"] == target else "b"
            clicked[now["id"]] = (target, pairs[now["id"]]["rejected" if what == "chosen" else "chosen"])
            if k % 2:
                page.click(f"#mark-{side}")
            else:
                page.key({"a": "1", "b": "b"}[side])  # both the digit and the letter keys
        marked_ab = sum(w != "skip" for w in PLAN)
        assert progress(page) == {"marked": str(len(PLAN)), "skipped": "1", "total": str(N_PROMPTS),
                                  "written": str(marked_ab), "button": f"Download calibration file ({marked_ab} marked)"}
        assert shown(page)["id"] == seen[len(PLAN)]

        # A reload keeps the marks and the order each pair was marked in.
        first = seen[0]
        before = shown_at(page, first)
        page.reload()
        assert progress(page)["marked"] == str(len(PLAN)) and progress(page)["written"] == str(marked_ab)
        assert shown_at(page, first) == before and before["mark"] in ("a", "b")
        assert shown_at(page, seen[PLAN.index("skip")])["mark"] == "skip"

        page.click("#label-download")
        name, path = browser.download()
        assert name == "calibration-run.jsonl"
        # Nothing left the page: the only URLs it asked for are its own file and the download's blob.
        assert {u.split(":")[0] for u in page.requested_urls()} <= {"file", "blob", "data"}

        # Forgetting takes a second click; then nothing is marked, after a reload too.
        page.click("#label-forget")
        assert progress(page)["marked"] == str(len(PLAN)) and "click again" in page.evaluate(
            "document.getElementById('label-forget').textContent")
        page.click("#label-forget")
        page.reload()
        assert progress(page)["marked"] == "0" and page.evaluate("document.getElementById('label-download').disabled")

    text = path.read_text(encoding="utf-8")
    cal = tmp_path / "mine.jsonl"
    cal.write_text(text, encoding="utf-8")

    # (a) the --calibration format, each label on the answer that was clicked
    rows = read_labelled_pairs(cal)
    assert [r["id"] for r, _ in rows] == [seen[k] for k, w in enumerate(PLAN) if w != "skip"]
    gens = {g["id"]: g for g in map(json.loads, (run / "generations.jsonl").read_text().splitlines())}
    for row, prompt in rows:
        assert set(row) == {"id", "prompt", "response_a", "response_b", "label"}
        picked, other = clicked[row["id"]]
        assert row["response_" + row["label"]] == picked
        assert row["response_" + ("b" if row["label"] == "a" else "a")] == other
        source = gens[pairs[row["id"]]["source_ids"][0]]
        assert row["prompt"] == prompt == source["prompt"] == pairs[row["id"]]["prompt"]

    # (b) the judge's calibration scoring, on a judge whose verdicts are known: the scripted judge
    # gives P(A) 0.9 in both orders where A holds "GOOD" and 0.1 where B does.
    judge = Judge(ScriptedBackend(), load_constitution("default"))
    figures = judge_file(judge, cal, window=8)
    agree = sum(w == "chosen" for w in PLAN)  # the user sided with the judge on the pairs marked "chosen"
    assert figures.n == marked_ab == 5 and figures.ties == 0
    assert figures.agreement == pytest.approx(agree / marked_ab) == pytest.approx(0.6)
    p_a = [0.9 if "GOOD" in r["response_a"] else 0.1 for r, _ in rows]
    brier = sum((p - (r["label"] == "a")) ** 2 for p, (r, _) in zip(p_a, rows)) / marked_ab
    assert brier == pytest.approx((3 * 0.1 ** 2 + 2 * 0.9 ** 2) / 5) == pytest.approx(0.33)
    assert figures.brier == pytest.approx(brier, abs=1e-4)
    # every verdict is 0.4 from 0.5: one bucket, 3 of 5 right, against a confidence of 0.9
    lo, hi = wilson(agree, marked_ab)
    assert list(figures.by_confidence) == ["0.3-0.5"]
    bucket = figures.by_confidence["0.3-0.5"]
    assert bucket["n"] == 5 and bucket["agreement"] == pytest.approx(0.6)
    assert bucket["interval"] == pytest.approx((lo, hi), abs=1e-4)
    assert figures.ece == pytest.approx(abs(0.6 - 0.9), abs=1e-4)
    assert figures.confidence_informative is None  # one bucket: nothing to compare it with

    # (c) `cai judge RUN --calibration FILE` measures the judge on the file (its pairs already judged)
    res = CliRunner().invoke(main, ["judge", str(run), "--calibration", str(cal), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "agreement 0.600 on 5 labelled pairs" in res.output and "skipped (resumed)    16" in res.output
    recorded = yaml.safe_load((run / "run.yaml").read_text())["judge_calibration"]
    assert recorded["source"] == str(cal) and recorded["n"] == 5 and recorded["agreement"] == pytest.approx(0.6)
    assert recorded["brier"] == pytest.approx(figures.brier) and not recorded["below_floor"]

    # ... and the run's page shows that calibration, its confidence table included
    build_view(run)
    dom = dump(run / "view.html", {"tab": "judge"})
    assert dom.by_id("calibration-status").attrs["data-status"] == "measured"
    table = {tr.all("td")[0].text(): tr.all("td")[1].text() for tr in dom.by_id("calibration").all("tr")}
    assert table["labelled set"] == str(cal) and table["pairs"] == "5" and table["agreement (ties half)"] == "0.600"
    [row] = body_rows(dom, "confidence")
    assert [td.text() for td in row.all("td")] == ["0.3-0.5", "5", "0.600", f"[{bucket['interval'][0]:.3f}, {bucket['interval'][1]:.3f}]"]
    assert f"[{lo:.3f}, {hi:.3f}]" == row.all("td")[3].text()
    extra = {tr.all("td")[0].text(): tr.all("td")[1].text() for tr in dom.by_id("confidence-figures").all("tr")}
    assert extra["expected calibration error (ece)"] == "0.300" and extra["Brier score"] == "0.330"
    assert extra["agreement rises with confidence"].startswith("not measurable")


def shown_at(page, pair_id: str) -> dict:
    """The pair `pair_id` as the page shows it, reached through the URL hash as a link would."""
    page.evaluate(f"location.hash = 'tab=label&pair=' + encodeURIComponent({json.dumps(pair_id)})")
    page.wait_for(f"document.getElementById('label-pair').dataset.id === {json.dumps(pair_id)}")
    return shown(page)


# ---------------------------------------------------------------- the calibration tab

def _with_calibration(folder: Path, cal: dict | None) -> Path:
    info = yaml.safe_load((folder / "run.yaml").read_text())
    if cal is None:
        info.pop("judge_calibration", None)
    else:
        info["judge_calibration"] = cal
    (folder / "run.yaml").write_text(yaml.safe_dump(info, sort_keys=False))
    build_view(folder)
    return folder / "view.html"


def test_calibration_tab_says_not_measured_and_no_signal(tmp_path):
    run = tmp_path / "run"
    make_run(run, 8)
    # skipped (--calibration none): not measured, no figures
    dom = dump(_with_calibration(run, {"skipped": True, "settings": "k"}), {"tab": "judge"})
    status = dom.by_id("calibration-status")
    assert status.attrs["data-status"] == "skipped" and "(signal: not measured)" in status.text()
    assert dom.by_id("confidence") is None and "calibration: not measured" in dom.by_id("top").text()
    # a header without a warning or a sample note holds no stray "null" for the parts left out
    assert "null" not in dom.by_id("top").text() and "null" not in dom.by_id("main").text()
    # never calibrated (no judge_calibration at all)
    dom = dump(_with_calibration(run, None), {"tab": "judge"})
    assert dom.by_id("calibration-status").attrs["data-status"] == "absent"
    assert "signal: not measured" in dom.by_id("calibration-status").text()
    # under the floor: "no signal", with the table still there to read; the floor's figure is the mean
    # over kinds when the set has kinds
    below = {"agreement": 0.62, "balanced_agreement": 0.55, "by_kind": {"x": {"n": 20, "agreement": 0.7},
                                                                         "y": {"n": 20, "agreement": 0.4}},
             "n": 40, "min_agreement": 0.6, "below_floor": True, "source": "bundled:judge_calibration.jsonl",
             "position_consistency": 0.8, "undecided_orders": 0.1, "longer_wins": 0.7, "ties": 2,
             "by_confidence": {"0-0.05": {"n": 6, "agreement": 0.3333, "interval": [0.0968, 0.7]},
                               "0.3-0.5": {"n": 12, "agreement": 1.0, "interval": [0.7575, 1.0]}},
             "ece": 0.1234, "brier": 0.2101, "confidence_informative": True}
    dom = dump(_with_calibration(run, below), {"tab": "judge"})
    status = dom.by_id("calibration-status")
    assert status.attrs["data-status"] == "no-signal"
    assert status.text().startswith("No signal: the judge's agreement averaged over the set's kinds") and "0.550" in status.text()
    assert [[td.text() for td in tr.all("td")] for tr in body_rows(dom, "confidence")] == [
        ["0-0.05", "6", "0.333", "[0.097, 0.700]"], ["0.3-0.5", "12", "1.000", "[0.757, 1.000]"]]
    extra = {tr.all("td")[0].text(): tr.all("td")[1].text() for tr in dom.by_id("confidence-figures").all("tr")}
    assert extra["expected calibration error (ece)"] == "0.123" and extra["Brier score"] == "0.210"
    assert extra["agreement rises with confidence"].startswith("yes")
    # a calibration recorded before the confidence figures: they are not measured, not zero
    old = {k: v for k, v in below.items() if k not in ("by_confidence", "ece", "brier", "confidence_informative")}
    dom = dump(_with_calibration(run, {**old, "below_floor": False, "balanced_agreement": None, "by_kind": None}),
               {"tab": "judge"})
    assert dom.by_id("calibration-status").attrs["data-status"] == "measured"
    assert dom.by_id("confidence").attrs["data-status"] == "not-measured"


def test_labelling_mode_keeps_hostile_text_inert(tmp_path):
    made = make_run(tmp_path / "run", 12, hostile=True)
    build_view(tmp_path / "run")
    dom = dump(tmp_path / "run" / "view.html", {"tab": "label"})
    assert_inert(dom)
    pair = dom.by_id("label-pair")
    first = next(p for p in made["pairs"] if p["id"] == pair.attrs["data-id"])
    texts = {dom.by_id("label-a").all("pre")[0].text(), dom.by_id("label-b").all("pre")[0].text()}
    assert texts == {first["chosen"], first["rejected"]}
    assert first["prompt"][0]["content"] in pair.text()


def test_a_samples_pair_is_labelled_on_its_chosen_and_rejected_samples(tmp_path):
    from cai.pairs import judge_run

    p = tmp_path / "p.jsonl"
    p.write_text("".join(json.dumps({"prompt": f"q{i}"}) + "\n" for i in range(3)))
    run = tmp_path / "samples"
    run_generate(GenerateConfig(prompts=str(p), rounds=0, samples=3, run_dir=str(run), model="m"),
                 backend=ScriptedBackend(), progress=False)
    judge_run(run, Judge(ScriptedBackend(prefer="answer 2"), load_constitution("default")), "samples",
              progress=False)
    pairs = {r["id"]: r for r in map(json.loads, (run / "preferences.jsonl").read_text().splitlines())}
    build_view(run)
    for pid, pair in pairs.items():  # one pair per prompt, on three rows each: labelled once
        dom = dump(run / "view.html", {"tab": "label", "pair": pid})
        assert dom.by_id("label-progress").attrs["data-total"] == str(len(pairs)) == "3"
        assert dom.by_id("label-pair").attrs["data-id"] == pid
        assert {dom.by_id(s).all("pre")[0].text() for s in ("label-a", "label-b")} == {pair["chosen"], pair["rejected"]}
