"""`cai view` pages in a real browser: headless Chromium runs the page's script, `--dump-dom` prints
the document it built, and the tests read that document. The page keeps its state (tab, filters,
open row) in the URL hash, which is how these tests click.

A missing browser is an error here, not a skip: `scripts/install.sh test` installs Debian's
`chromium` where it runs as root; elsewhere install it (or point CAI_CHROMIUM at a Chromium).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

import pytest

from cai.view import build_view, load
from tests.view_fixtures import HOSTILE, make_eval, make_iterate, make_run

pytestmark = pytest.mark.slow  # each page load starts a browser (1-3 s)

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def chromium() -> str:
    found = os.environ.get("CAI_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise RuntimeError("the browser tests need Chromium and none was found: `scripts/install.sh test` installs "
                           "Debian's chromium when run as root (apt-get install -y chromium), or set CAI_CHROMIUM "
                           "to a Chromium binary")
    return found


class Node:
    def __init__(self, tag: str, attrs: dict, parent: "Node | None"):
        self.tag, self.attrs, self.parent, self.children = tag, attrs, parent, []

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def iter(self):
        for c in self.children:
            if isinstance(c, Node):
                yield c
                yield from c.iter()

    def all(self, tag: str | None = None, **attrs) -> list["Node"]:
        return [n for n in self.iter() if (tag is None or n.tag == tag)
                and all(n.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())]

    def by_id(self, id_: str) -> "Node | None":
        return next((n for n in self.iter() if n.attrs.get("id") == id_), None)


class Dom(HTMLParser):
    """The dumped document as a tree (the standard library's parser; no new dependency)."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {}, None)
        self.cur = self.root
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {k: (v if v is not None else "") for k, v in attrs}, self.cur)
        self.cur.children.append(node)
        if tag not in VOID:
            self.cur = node

    def handle_endtag(self, tag):
        n = self.cur
        while n is not None and n.tag != tag:
            n = n.parent
        if n is not None and n.parent is not None:
            self.cur = n.parent

    def handle_data(self, data):
        self.cur.children.append(data)


def dump(page: Path, state: dict | None = None) -> Node:
    url = page.resolve().as_uri() + ("#" + "&".join(f"{k}={quote(str(v))}" for k, v in state.items()) if state else "")
    with tempfile.TemporaryDirectory() as profile:
        res = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                              f"--user-data-dir={profile}", "--virtual-time-budget=3000", "--dump-dom", url],
                             capture_output=True, text=True, encoding="utf-8", timeout=180)
    assert res.returncode == 0 and "<html" in res.stdout, res.stderr[-2000:]
    dom = Dom(res.stdout).root
    body = dom.all("body")[0]
    assert body.attrs.get("data-ready") == "1", "the page's script did not finish: " + res.stderr[-2000:]
    return dom


def count(dom: Node) -> dict:
    c = dom.by_id("row-count").attrs
    return {k: int(c[f"data-{k}"]) for k in ("matching", "total", "shown")}


def body_rows(dom: Node, table_id: str) -> list[Node]:
    return dom.by_id(table_id).all("tbody")[0].all("tr")


def python_search(rows: list[dict], needle: str) -> int:
    """The page's search, in Python: a case-insensitive substring of any text of the row."""
    n = 0
    for r in rows:
        texts = [r["id"], r["initial"], r.get("final")] + [m["content"] for m in r["prompt"]]
        texts += [t for rd in r["rounds"] for t in (rd["critique"], rd["revision"])]
        n += needle.lower() in "\n".join(t for t in texts if t).lower()
    return n


# ---------------------------------------------------------------- run pages

@pytest.fixture(scope="module")
def run_page(tmp_path_factory):
    folder = tmp_path_factory.mktemp("view") / "run"
    made = make_run(folder, 120)
    build_view(folder)
    return folder / "view.html", made


def test_run_rows_filters_and_paging(run_page):
    page, made = run_page
    gens = made["generations"]
    dom = dump(page)
    assert count(dom) == {"matching": 120, "total": 120, "shown": 50}  # one page of 50
    assert len(body_rows(dom, "rows")) == 50
    assert dom.by_id("page-of").text() == "page 1 of 3"

    cat_a = sum(g["category"] == "a" for g in gens)
    dom = dump(page, {"category": "a"})
    assert count(dom)["matching"] == cat_a == 40
    # two filters narrow further: category a and a flip verdict (i % 4 == 2, judged)
    flips_a = sum(g["category"] == "a" and i % 4 == 2 and i % 5 != 4 for i, g in enumerate(gens))
    dom = dump(page, {"category": "a", "verdict": "flip"})
    assert count(dom)["matching"] == flips_a < cat_a
    assert {tr.all("td")[5].text() for tr in body_rows(dom, "rows")} == {"flip"}

    dom = dump(page, {"q": "PROMPT 7"})
    assert count(dom)["matching"] == python_search(gens, "prompt 7") == 11  # 7 and 70-79
    dom = dump(page, {"flag": "final:truncated", "page": 2})
    assert count(dom)["matching"] == sum("truncated" in g["flags"] for g in gens)
    dom = dump(page, {"principle": "privacy", "flag": "round:critique_vague"})
    assert count(dom)["matching"] == sum(any(r["principle_id"] == "privacy" for r in g["rounds"])
                                         and any("critique_vague" in r["flags"] for r in g["rounds"]) for g in gens) > 0
    dom = dump(page, {"page": 3})
    assert count(dom)["shown"] == 20 and body_rows(dom, "rows")[0].all("td")[0].text() == "101"


def test_run_chain_opens_with_its_rounds(run_page):
    page, made = run_page
    g = made["generations"][6]  # a flip: the judge preferred the initial answer
    dom = dump(page, {"open": g["id"]})
    panel = dom.by_id("panel")
    assert "hidden" not in panel.attrs
    rounds = panel.all("section", **{"class": "round"})
    assert [r.attrs["data-principle"] for r in rounds] == [rd["principle_id"] for rd in g["rounds"]]
    assert [r.attrs["data-round"] for r in rounds] == ["1", "2"]
    previous = g["initial"]
    for node, rd in zip(rounds, g["rounds"]):
        critique = node.all("div", **{"class": "block critique"})[0]
        assert critique.all("pre")[0].text() == rd["critique"]
        # the word diff: unmarked and <ins> words are the revision, unmarked and <del> the answer before
        diff = node.all("pre", **{"class": "text-body diff"})[0]
        same = "".join(c if isinstance(c, str) else " " for c in diff.children)
        ins = " ".join(n.text() for n in diff.all("ins"))
        dels = " ".join(n.text() for n in diff.all("del"))
        assert sorted((same + " " + ins).split()) == sorted(rd["revision"].split())
        assert sorted((same + " " + dels).split()) == sorted(previous.split())
        assert (ins.strip() != "") == (rd["revision"].split() != previous.split())
        previous = rd["revision"]
    assert dom.by_id("initial").all("pre")[0].text() == g["initial"]
    verdict = dom.by_id("verdict")
    assert verdict.attrs["data-label"] == "flip"
    cells = {tr.all("td")[0].text(): tr.all("td")[1].text() for tr in verdict.all("tr")}
    assert cells["averaged"] == "0.300" and cells["P(revision better than initial), shown first"] == "0.350"
    assert json.loads(dom.by_id("meta-row").text()) == {"source_row": 6, "elapsed_s": g["meta"]["elapsed_s"]}


def test_analytics_table_matches_python(run_page):
    page, _ = run_page
    data = load.load_run(page.parent)
    dom = dump(page, {"tab": "principles"})
    table = body_rows(dom, "principles")
    shown = {tr.attrs["data-id"]: {td.attrs["data-key"]: (td.attrs["data-value"], td.text()) for td in tr.all("td")}
             for tr in table}
    expected = {p["id"]: p for p in data["analytics"]["principles"]}
    assert set(shown) == set(expected) == {"harm", "honesty", "privacy", "helpful"}
    for pid, cells in shown.items():
        for key, value in expected[pid].items():
            raw, text = cells[key]
            if isinstance(value, float):
                assert float(raw) == pytest.approx(value), (pid, key)
            else:
                assert raw == ("" if value is None else str(value)), (pid, key)
        assert cells["win_rate"][1] == f"{expected[pid]['win_rate']:.3f}"
        assert cells["changed"][1] == f"{100 * expected[pid]['changed']:.1f}%"
    # default order: most drawn first; the bar chart has one bar per principle
    assert [tr.attrs["data-id"] for tr in table] == [p["id"] for p in sorted(expected.values(), key=lambda p: -p["drawn"])]
    assert len(dom.by_id("bars").all("div", **{"class": "bar-row"})) == 4
    qs = {tr.attrs["data-id"]: tr for tr in body_rows(dom, "questions")}
    for q in data["analytics"]["questions"]:
        cells = {td.attrs["data-key"]: td.attrs["data-value"] for td in qs[q["id"]].all("td")}
        assert int(cells["asked"]) == q["asked"] and float(cells["margin"]) == pytest.approx(q["margin"])
    # sorting by a column through the page
    dom = dump(page, {"tab": "principles", "sort": "win_rate", "dir": "asc"})
    order = [tr.attrs["data-id"] for tr in body_rows(dom, "principles")]
    assert order == [p["id"] for p in sorted(expected.values(), key=lambda p: p["win_rate"])]


# ---------------------------------------------------------------- eval and iterate pages

def test_eval_page_pairs_tables_and_plot(tmp_path):
    rows = make_eval(tmp_path / "eval", 10)
    build_view(tmp_path / "eval")
    page = tmp_path / "eval" / "view.html"
    dom = dump(page)
    assert count(dom) == {"matching": 10, "total": 10, "shown": 10}
    dom = dump(page, {"outcome": "a"})
    assert count(dom)["matching"] == sum(r["outcome"] == "a" for r in rows) == 4
    dom = dump(page, {"open": 4})
    assert dom.by_id("answer-a").all("pre")[0].text() == rows[4]["answer_a"]
    assert dom.by_id("answer-b").all("pre")[0].text() == rows[4]["answer_b"]
    assert dom.by_id("verdict").attrs["data-label"] == rows[4]["outcome"]
    dom = dump(page, {"tab": "tables"})
    shown = {tr.attrs["data-id"]: [td.text() for td in tr.all("td")] for tr in body_rows(dom, "categories")}
    for cat, c in load.outcome_counts(rows).items():
        assert shown[cat][1:5] == [str(c["n"]), str(c["a"]), str(c["b"]), str(c["tie"])]
    assert [td.text() for td in body_rows(dom, "compliance")[0].all("td")] == ["harm", "0.750", "0.600", "0.500", "0.550", "10"]
    imgs = dom.all("img")
    assert len(imgs) == 1 and imgs[0].attrs["src"].startswith("data:image/png;base64,")


def test_iterate_page_history_and_links(tmp_path):
    it = tmp_path / "it"
    history = make_iterate(it)
    build_view(it)
    dom = dump(it / "view.html")
    rows = body_rows(dom, "history")
    assert [tr.attrs["data-id"] for tr in rows] == ["1", "2", "3"]
    assert rows[0].all("td")[4].text() == f"{history[0]['win_rate']:.3f}"
    assert "in progress" in rows[2].text()
    links = [a.attrs["href"] for a in dom.all("a")]
    assert links == ["iterations/01/run/view.html", "iterations/01/eval/view.html", "iterations/02/run/view.html",
                     "iterations/02/eval/view.html", "iterations/03/run/view.html"]
    assert len(dom.all("img")) == 1
    linked = dump(it / links[1])  # a link leads to that iteration's eval page
    assert count(linked)["total"] == 6


# ---------------------------------------------------------------- hostile text

def assert_inert(dom: Node) -> None:
    html = dom.all("html")[0]
    assert "data-pwned" not in html.attrs, f"an injected script ran: {html.attrs['data-pwned']}"
    assert len(dom.all("script")) == 2  # the page's data and its own script
    for img in dom.all("img"):
        assert img.attrs["src"].startswith("data:image/png;base64,")
    for a in dom.all("a"):
        assert ":" not in a.attrs.get("href", "").split("/")[0]
    assert not dom.all("textarea") and not dom.all("b")


def test_the_payloads_do_run_when_text_is_taken_for_html(tmp_path):
    """The control: written into a page as markup (no escaping, no CSP), the payloads mark it. So the
    absence of the mark below means they were kept as text, not that they could not have run."""
    page = tmp_path / "control.html"
    page.write_text("<!DOCTYPE html><html><body><div id='x'></div><script>document.getElementById('x').innerHTML = "
                    + json.dumps(HOSTILE[1]) + "; document.body.dataset.ready = '1';</script>" + HOSTILE[0]
                    + "</body></html>", encoding="utf-8")
    assert dump(page).all("html")[0].attrs.get("data-pwned") in ("script", "img")


def test_injected_text_never_runs(tmp_path):
    made = make_run(tmp_path / "run", 12, hostile=True)
    make_eval(tmp_path / "eval", 6, hostile=True)
    make_iterate(tmp_path / "it", hostile=True)
    for f in ("run", "eval", "it"):
        build_view(tmp_path / f)
    for i in (0, 1, 2, 3, 4):  # every payload in a prompt, an initial answer and a critique
        g = made["generations"][i]
        dom = dump(tmp_path / "run" / "view.html", {"open": g["id"]})
        assert_inert(dom)
        panel = dom.by_id("panel").text()
        assert g["prompt"][0]["content"] in panel and g["initial"] in panel
        assert all(rd["critique"] in panel for rd in g["rounds"])
    dom = dump(tmp_path / "run" / "view.html", {"q": "<script>"})
    assert_inert(dom)
    assert count(dom)["matching"] == python_search(made["generations"], "<script>")
    assert_inert(dump(tmp_path / "run" / "view.html", {"tab": "info"}))
    for state in ({"open": 0}, {"open": 4}, {"tab": "tables"}, {"tab": "report"}):
        dom = dump(tmp_path / "eval" / "view.html", state)
        assert_inert(dom)
    assert HOSTILE[4] in dom.by_id("report").text()
    dom = dump(tmp_path / "it" / "view.html")
    assert_inert(dom)
    assert "javascript:" in dom.by_id("history").text()  # the model folder is shown, as text


# ---------------------------------------------------------------- scale

def test_ten_thousand_rows_open_and_filter(tmp_path):
    folder = tmp_path / "big"
    made = make_run(folder, 10_000, long_text=True)
    t = time.perf_counter()
    written = build_view(folder, rows="all")[-1]
    build_s = time.perf_counter() - t
    dom = dump(written.path)
    perf = json.loads(dom.by_id("cai-perf").text())
    assert count(dom) == {"matching": 10_000, "total": 10_000, "shown": 50}
    dom = dump(written.path, {"q": "prompt 123", "verdict": "tie"})
    filtered = json.loads(dom.by_id("cai-perf").text())
    expected = sum(i % 4 == 3 and i % 5 != 4 and "prompt 123" in g["prompt"][0]["content"]
                   for i, g in enumerate(made["generations"]))
    assert count(dom)["matching"] == expected > 0
    print(f"\n10,000 rows: page {written.bytes / 1e6:.1f} MB, built in {build_s:.1f} s; first load: script start "
          f"{perf['script_start_ms']} ms, JSON.parse {perf['parse_ms']} ms, table drawn {perf['render_ms']} ms, "
          f"first frame {perf['frame_ms']} ms, first contentful paint {perf.get('first_contentful_paint_ms', 'n/a')} ms; "
          f"with a search and a verdict filter: drawn {filtered['render_ms']} ms")
    # Generous bounds (a shared 2-core machine): the page must stay usable, not win a race.
    assert written.bytes < 60e6
    assert perf["render_ms"] < 3000 and filtered["render_ms"] < 3000
