"""A sampled `cai view` page in headless Chromium: it opens, says "showing N of M rows (how
chosen)", numbers each row by its place in the file, filters the rows it holds, shows the figures
as over every row and lists its strata. tests/test_view_scale.py checks the sample itself."""

from __future__ import annotations

import pytest

from cai.view import build_view, load
from tests.test_view_browser import body_rows, count, dump
from tests.view_fixtures import make_eval, make_run

pytestmark = pytest.mark.slow  # each page load starts a browser (1-3 s)


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scale") / "run"
    made = make_run(folder, 3000)
    written = build_view(folder, rows=400)[-1]
    return written, made


def test_a_sampled_page_says_how_many_rows_it_shows_and_how_chosen(sampled):
    written, made = sampled
    assert (written.rows, written.total) == (400, 3000)
    data = load.load_run(written.path.parent, 400)
    dom = dump(written.path)
    note = dom.by_id("sample-note")
    assert note.attrs["data-shown"] == "400" and note.attrs["data-of"] == "3000"
    text = note.text()
    assert text.startswith("showing 400 of 3,000 rows (every flagged or flipped row first") and text.endswith(")")
    assert "stratified by category, principle and verdict" in text and "--rows all" in text
    assert count(dom) == {"matching": 400, "total": 400, "shown": 50}
    # each row is numbered by its place in generations.jsonl, not on the page
    numbers = [int(tr.all("td")[0].text()) for tr in body_rows(dom, "rows")]
    assert numbers == data["row_numbers"][:50] and numbers != list(range(1, 51))
    ids = {g["id"]: k + 1 for k, g in enumerate(made["generations"])}
    assert [ids[tr.attrs["data-id"]] for tr in body_rows(dom, "rows")] == numbers
    # the header counts are the run's; the filters work on the rows the page holds
    assert "3000 rows (400 on this page)" in dom.by_id("top").text()
    flips = sum(r["verdict"] is not None and r["verdict"]["label"] == "flip" for r in data["rows"])
    dom = dump(written.path, {"verdict": "flip"})
    assert count(dom)["matching"] == flips > 0


def test_a_sampled_page_shows_its_figures_over_every_row_and_its_strata(sampled):
    written, _ = sampled
    data = load.load_run(written.path.parent, 400)
    dom = dump(written.path, {"tab": "principles"})
    assert "over all 3000 rows of the run, not only the 400" in dom.by_id("figures-over").text()
    drawn = {tr.attrs["data-id"]: int(tr.all("td")[1].text()) for tr in body_rows(dom, "principles")}
    assert sum(drawn.values()) == 2 * 3000  # two rounds a row, every row counted
    dom = dump(written.path, {"tab": "info"})
    strata = body_rows(dom, "strata")
    assert len(strata) == len(data["sample"]["strata"]) > 0
    assert sum(int(tr.all("td")[4].text()) for tr in strata) == 400
    assert sum(int(tr.all("td")[3].text()) for tr in strata) == 3000


def test_a_sampled_eval_page_opens_its_pairs(tmp_path):
    rows = make_eval(tmp_path / "eval", 600)
    build_view(tmp_path / "eval", rows=90)
    page = tmp_path / "eval" / "view.html"
    dom = dump(page)
    assert dom.by_id("sample-note").text().startswith("showing 90 of 600 rows (a sample stratified by category")
    assert count(dom)["total"] == 90
    first = body_rows(dom, "rows")[0].attrs["data-id"]
    dom = dump(page, {"open": first})
    assert dom.by_id("answer-a").all("pre")[0].text() == rows[int(first)]["answer_a"]


def test_an_unsampled_page_has_no_note(tmp_path):
    make_run(tmp_path / "run", 30)
    build_view(tmp_path / "run")
    dom = dump(tmp_path / "run" / "view.html")
    assert dom.by_id("sample-note") is None and count(dom)["total"] == 30
