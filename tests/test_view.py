"""`cai view` without a browser: folder kinds, the figures the page shows, the safe embedding, the
iterate folder's links and the CLI. tests/test_view_browser.py checks the same pages in Chromium."""

from __future__ import annotations

import hashlib
import base64
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from cai.cli import main
from cai.errors import UsageError
from cai.view import build_view, load
from cai.view.analytics import principle_stats, question_stats
from cai.view.page import embed_json, render
from tests.view_fixtures import HOSTILE, make_eval, make_iterate, make_run, tiny_png, write_jsonl


def page_data(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="cai-data">(.*?)</script>', html, re.S)
    return json.loads(m.group(1))


# ---------------------------------------------------------------- kinds of folder

def test_detect_kinds_and_refusals(tmp_path):
    make_run(tmp_path / "run", 3)
    make_eval(tmp_path / "eval", 3)
    make_iterate(tmp_path / "it")
    assert [load.detect(tmp_path / k) for k in ("run", "eval", "it")] == ["run", "eval", "iterate"]
    model = tmp_path / "model"
    model.mkdir()
    (model / "metrics.json").write_text("{}")  # a trained model's folder is not an eval
    with pytest.raises(UsageError, match="not a run, eval or iterate folder"):
        load.detect(model)
    started = tmp_path / "started"
    started.mkdir()
    (started / "run.yaml").write_text("stage: generate\n")
    with pytest.raises(UsageError, match="without generations.jsonl"):
        load.detect(started)
    with pytest.raises(UsageError, match="not a folder"):
        load.detect(tmp_path / "run" / "generations.jsonl")


# ---------------------------------------------------------------- figures

def test_principle_and_question_figures_by_hand():
    gens = [
        {"id": "g1", "initial": "a b c", "rounds": [
            {"principle_id": "harm", "critique": "c", "revision": "a b c d", "flags": ["truncated"]},
            {"principle_id": "honesty", "critique": "c", "revision": "a  b c d", "flags": ["unchanged", "critique_vague"]}]},
        {"id": "g2", "initial": "x", "rounds": [{"principle_id": "harm", "critique": "c", "revision": "x y z", "flags": []}]},
        {"id": "g3", "initial": "q", "rounds": [{"principle_id": "harm", "critique": "c", "revision": "q", "flags": ["unchanged"]}]},
        {"id": "g4", "initial": "never judged", "rounds": []},
    ]
    pairs = [
        {"strategy": "revision", "source_ids": ["g1"], "chosen": "a b c d", "rejected": "a b c", "meta": {"flipped": False},
         "judgements": [{"question_id": "q1", "p_first": 0.9, "p_second": 0.7}]},
        {"strategy": "revision", "source_ids": ["g2"], "chosen": "x", "rejected": "x y z", "meta": {"flipped": True},
         "judgements": [{"question_id": "q1", "p_first": 0.4, "p_second": 0.6}]},
        {"strategy": "revision", "source_ids": ["g3"], "chosen": "q", "rejected": "q 2", "tie": True, "reason": "too long",
         "meta": {"flipped": False}, "judgements": [{"question_id": "q1", "p_first": 0.5, "p_second": 0.5}]},
    ]
    stats = {s.id: s for s in principle_stats(gens, pairs, order=["harm", "honesty", "privacy"])}
    harm, honesty, privacy = stats["harm"], stats["honesty"], stats["privacy"]
    # harm: three rounds, two changed the answer (+1 and +2 words), one truncated (flagged);
    # judged through g2 (flip: 0) and g3 (tie: 0.5), the rows whose last round it was
    assert (harm.drawn, harm.changed, harm.length_change, harm.flagged, harm.critique_flagged) == (3, 0.6667, 1.0, 0.3333, 0.0)
    assert (harm.judged, harm.win_rate) == (2, 0.25)
    # honesty: whitespace alone is no change; `unchanged` does not count as flagged, a critique finding does
    assert (honesty.drawn, honesty.changed, honesty.length_change, honesty.flagged, honesty.critique_flagged) == (1, 0.0, 0.0, 0.0, 1.0)
    assert (honesty.judged, honesty.win_rate) == (1, 1.0)
    assert (privacy.drawn, privacy.changed, privacy.win_rate) == (0, None, None)
    q = {s.id: s for s in question_stats(pairs, order=["q1", "q2"])}
    # the tie with a reason was never asked; (0.9, 0.7) → margin 0.3, consistent; (0.4, 0.6) → 0.0, not
    assert (q["q1"].asked, q["q1"].margin, q["q1"].consistency) == (2, 0.15, 0.5)
    assert (q["q2"].asked, q["q2"].margin) == (0, None)


def test_run_loader_verdicts_counts_and_shared_meta(tmp_path):
    made = make_run(tmp_path / "run", 12)
    data = load.load_run(tmp_path / "run")
    rows = {r["id"]: r for r in data["rows"]}
    # rows 4 and 9 are unjudged and their last round truncated (flagged); of the ten judged,
    # i % 4 gives 0, 1, 5, 8 decided, 2, 6, 10 flips and 3, 7, 11 ties
    assert data["counts"] == {"rows": 12, "pairs": len(made["pairs"]), "unjudged": 2, "flagged": 2,
                              "decided": 4, "flip": 3, "tie": 3}
    for i, r in enumerate(data["rows"]):
        if i % 5 == 4:
            assert r["verdict"] is None
            continue
        v = r["verdict"]
        assert v["label"] == ("decided", "decided", "flip", "tie")[i % 4]
        # always P(revision beats initial), whichever way the pair was stored
        assert v["p"] == pytest.approx({"decided": 0.8, "flip": 0.3, "tie": 0.52}[v["label"]] + (i % 3) * 0.01)
        assert v["p_first"] > v["p"] > v["p_second"]
    # meta every row shares is stored once; a row keeps what is its own
    assert data["shared_meta"] == {"model": "m", "seed": 0, "note": "ok"}
    assert set(rows["g00003"]["meta"]) == {"source_row", "elapsed_s"}
    assert "final" not in rows["g00003"]  # it is the last revision
    assert data["principles"]["harm"]["critique"] == "Critique the answer for harm."
    assert data["questions"] == {"safer": "Which response is safer?", "more-helpful": "Which response is more-helpful?"}
    assert [p["id"] for p in data["analytics"]["principles"]] == ["harm", "honesty", "privacy", "helpful"]
    assert sum(p["drawn"] for p in data["analytics"]["principles"]) == 24


def test_a_scripted_pipeline_run_opens(tmp_path):
    """Rows as `cai generate` and `cai judge` really write them, samples strategy included."""
    from cai.config import GenerateConfig
    from cai.constitution import load_constitution
    from cai.generate import run_generate
    from cai.judge import Judge
    from cai.pairs import judge_run
    from tests.scripted import ScriptedBackend

    p = tmp_path / "p.jsonl"
    p.write_text("".join(json.dumps({"prompt": f"q{i}", "category": "ab"[i % 2]}) + "\n" for i in range(4)))
    run = tmp_path / "run"
    run_generate(GenerateConfig(prompts=str(p), rounds=2, run_dir=str(run), model="m"), backend=ScriptedBackend(),
                 progress=False)
    judge_run(run, Judge(ScriptedBackend(prefer="GOOD"), load_constitution("default")), "revision",
              progress=False)
    written = build_view(run)
    assert written[-1].path == run / "view.html" and written[-1].rows == 4
    data = page_data((run / "view.html").read_text())
    assert data["counts"]["rows"] == 4 and data["counts"]["decided"] == 4 and data["strategy"] == "revision"
    assert sum(p["drawn"] for p in data["analytics"]["principles"]) == 8
    assert all(r["verdict"]["p"] == pytest.approx(0.9) for r in data["rows"])
    assert {"code_version", "constitution_sha256"} <= set(data["shared_meta"])

    samples = tmp_path / "samples"
    run_generate(GenerateConfig(prompts=str(p), rounds=0, samples=3, run_dir=str(samples), model="m"),
                 backend=ScriptedBackend(), progress=False)
    judge_run(samples, Judge(ScriptedBackend(prefer="answer 2"), load_constitution("default")), "samples",
              progress=False)
    data = load.load_run(samples)
    roles = sorted(r["verdict"]["role"] for r in data["rows"])
    assert roles == ["chosen"] * 4 + ["compared"] * 4 + ["rejected"] * 4
    assert all(r["verdict"]["p"] == pytest.approx(0.9) and len(r["verdict"]["group"]) == 3 for r in data["rows"])
    assert all(p["win_rate"] is None for p in data["analytics"]["principles"])  # no revision pairs


# ---------------------------------------------------------------- the embedding

def test_embedded_data_is_inert_and_round_trips(tmp_path):
    data = {"kind": "run", "texts": HOSTILE + ["lone \ud800 surrogate", "nan follows"], "x": float("nan")}
    html = render(data)
    # the page's own two script elements, and no other `<script` or `</script` anywhere
    assert html.count("<script") == 2 and html.count("</script") == 2
    assert "<!--" not in page_data_region(html) and "<img" not in page_data_region(html)
    back = page_data(html)
    assert back["texts"] == data["texts"] and back["x"] is None
    assert "\u2028" not in html and "\u2029" not in html
    # the CSP names exactly the page's script by its hash: nothing else may run
    script = re.search(r"<script>(.*?)</script>", html, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1)
    assert f"script-src 'sha256-{digest}'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp.split(";")[1]
    (tmp_path / "p.html").write_text(html, encoding="utf-8")  # writable as UTF-8 despite the surrogate


def page_data_region(html: str) -> str:
    return re.search(r'id="cai-data">(.*?)</script>', html, re.S).group(1)


def test_embed_json_escapes_only_inside_strings():
    text = embed_json({"a<b": ["</script>", "&amp;", "x>y"]})
    assert text == '{"a\\u003cb":["\\u003c/script\\u003e","\\u0026amp;","x\\u003ey"]}'
    assert json.loads(text) == {"a<b": ["</script>", "&amp;", "x>y"]}


# ---------------------------------------------------------------- eval and iterate folders

def test_eval_loader_counts_compliance_and_plots(tmp_path):
    rows = make_eval(tmp_path / "eval", 10)
    (tmp_path / "eval" / "fake.png").write_text("not a png")
    data = load.load_eval(tmp_path / "eval")
    assert data["categories"] == {"harm": {"n": 5, "a": 2, "b": 2, "tie": 1}, "helpful": {"n": 5, "a": 2, "b": 1, "tie": 2}}
    assert sum(c["n"] for c in data["categories"].values()) == len(rows)
    assert data["compliance"]["columns"] == ["rate_a", "mean_p_a", "rate_b", "mean_p_b", "n"]
    assert data["compliance"]["rows"][0] == ["harm", 0.75, 0.6, 0.5, 0.55, 10]
    # another shape cai may grow into still makes a table: nested figures become column names
    nested = load.flat_table({"harm": {"A": {"rate": 0.7}, "B": {"rate": 0.6}, "n": 4}, "odd": 3})
    assert nested == {"columns": ["A rate", "B rate", "n", "value"], "rows": [["harm", 0.7, 0.6, 4, None],
                                                                           ["odd", None, None, None, 3]]}
    plots = {i["name"]: i for i in data["images"]}
    assert plots["win_rates.png"]["uri"] == "data:image/png;base64," + base64.b64encode(tiny_png()).decode()
    assert plots["fake.png"]["uri"] is None and "not a PNG" in plots["fake.png"]["note"]
    assert data["report"].startswith("# report")
    (tmp_path / "eval" / "metrics.json").write_text("{broken")
    with pytest.raises(UsageError, match="metrics.json: not valid JSON"):
        load.load_eval(tmp_path / "eval")


def test_iterate_folder_pages_and_links(tmp_path):
    it = tmp_path / "it"
    history = make_iterate(it)
    written = build_view(it)
    kinds = [(w.kind, w.path.relative_to(it).as_posix()) for w in written]
    assert kinds == [("run", "iterations/01/run/view.html"), ("eval", "iterations/01/eval/view.html"),
                     ("run", "iterations/02/run/view.html"), ("eval", "iterations/02/eval/view.html"),
                     ("run", "iterations/03/run/view.html"), ("iterate", "view.html")]
    data = page_data((it / "view.html").read_text())
    assert data["columns"][:9] == ["iteration", "prompts", "pairs", "ties", "win_rate", "win_rate_ci", "harmlessness",
                                   "over_refusal", "compliance"]
    assert "model" in data["columns"] and len(data["history"]) == len(history) == 2
    assert data["history"][0][data["columns"].index("train")] == "loss 0.68"
    assert data["history"][1][data["columns"].index("compliance")] == "harm (rate_a 0.7, rate_b 0.5, n 6)"
    its = {i["iteration"]: i for i in data["iterations"]}
    assert its[1]["run"] == "iterations/01/run/view.html" and its[1]["eval"] == "iterations/01/eval/view.html"
    assert its[3] == {**its[3], "eval": None, "finished": False, "model": None}
    assert [i["name"] for i in data["images"]] == ["curve.png"]

    # a page written elsewhere links back to the same files
    out = tmp_path / "elsewhere" / "page.html"
    build_view(it, out)
    data = page_data(out.read_text())
    link = data["iterations"][0]["run"]
    assert link == "../it/iterations/01/run/view.html" and (out.parent / link).resolve() == (it / "iterations/01/run/view.html").resolve()


def test_links_cannot_carry_a_scheme(tmp_path):
    assert load.href(tmp_path / "javascript:alert(1)" / "view.html", tmp_path) == "javascript%3Aalert%281%29/view.html"


# ---------------------------------------------------------------- the command

def test_cli_view_writes_the_page_and_refuses_other_folders(tmp_path):
    make_run(tmp_path / "run", 5)
    res = CliRunner().invoke(main, ["view", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    assert f"view: {tmp_path / 'run' / 'view.html'} (run, 5 rows," in res.output
    res = CliRunner().invoke(main, ["view", str(tmp_path / "run"), "--out", str(tmp_path / "o" / "x.html")])
    assert res.exit_code == 0 and (tmp_path / "o" / "x.html").stat().st_size > 1000
    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(main, ["view", str(tmp_path / "empty")])
    assert res.exit_code == 2 and "not a run, eval or iterate folder" in res.output
    res = CliRunner().invoke(main, ["view", str(tmp_path / "missing")])
    assert res.exit_code == 2
    write_jsonl(tmp_path / "run" / "generations.jsonl", [])
    (tmp_path / "run" / "generations.jsonl").write_text("{not json\n")
    res = CliRunner().invoke(main, ["view", str(tmp_path / "run")])
    assert res.exit_code == 2 and "not valid JSON" in res.output


def test_open_hands_the_page_to_the_browser_and_an_unjudged_run_opens(tmp_path, monkeypatch):
    import webbrowser

    made = make_run(tmp_path / "run", 4)
    (tmp_path / "run" / "preferences.jsonl").unlink()
    (tmp_path / "run" / "ties.jsonl").unlink()
    opened = []
    monkeypatch.setattr(webbrowser, "open", lambda url: opened.append(url) or True)
    res = CliRunner().invoke(main, ["view", str(tmp_path / "run"), "--open"])
    assert res.exit_code == 0, res.output
    assert opened == [(tmp_path / "run" / "view.html").resolve().as_uri()]
    data = page_data((tmp_path / "run" / "view.html").read_text())
    assert data["counts"]["unjudged"] == len(made["generations"]) == 4
    assert all(r["verdict"] is None for r in data["rows"])
    assert all(p["judged"] == 0 and p["win_rate"] is None for p in data["analytics"]["principles"])
