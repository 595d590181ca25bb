"""`cai view`: one self-contained HTML page for a run, eval or iterate folder.

load.py reads a folder into plain data, streaming its files (analytics.py computes the run's
per-principle figures over every row; sample.py chooses the rows a big folder's page embeds);
page.py embeds that data, safely, into page.html with its inline style and script. An iterate
folder's page links to a page for each iteration's run and eval, written beside their data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cai.errors import UsageError
from cai.view import load, page, sample

PAGE_NAME = "view.html"


@dataclass
class Written:
    path: Path
    kind: str
    rows: int    # rows (or iterations) on the page
    bytes: int
    total: int = 0  # rows in the folder: more than `rows` where the page holds a sample


def _one(folder: Path, kind: str, out: Path, written: list[Written], limit: sample.Limit) -> None:
    if kind == load.RUN:
        data = load.load_run(folder, limit)
    elif kind == load.EVAL:
        data = load.load_eval(folder, limit)
    else:
        pages: dict[Path, Path] = {}
        for _, d in load.iteration_dirs(folder):
            for part in ("run", "eval"):
                sub = d / part
                try:
                    sub_kind = load.detect(sub)
                except UsageError:
                    continue  # not there yet (an iteration in progress): no link
                if sub_kind == (load.RUN if part == "run" else load.EVAL):
                    _one(sub, sub_kind, sub / PAGE_NAME, written, limit)
                    pages[sub] = sub / PAGE_NAME
        data = load.load_iterate(folder, out.parent, pages)
    size = page.write(data, out)
    shown = len(data.get("rows") or data.get("history") or [])
    written.append(Written(out, kind, shown, size, (data.get("sample") or {}).get("of", shown)))


def build_view(path: str | Path, out: str | Path | None = None,
               rows: sample.Limit | str | int | None = None) -> list[Written]:
    """Write the page for PATH (default: PATH/view.html); an iterate folder also gets one page per
    iteration's run and eval. Returns every page written, the one for PATH last.

    `rows`: how many rows a page embeds (`--rows`): a number, "all", or by default as many as fit
    the page's byte budget (sample.DEFAULT_BUDGET); the figures are over every row regardless."""
    folder = Path(path)
    limit = sample.parse_limit(rows)
    kind = load.detect(folder)
    target = Path(out) if out else folder / PAGE_NAME
    if target.exists() and target.is_dir():
        raise UsageError(f"--out {target}: a folder; give a file name such as {target / PAGE_NAME}")
    written: list[Written] = []
    _one(folder, kind, target, written, limit)
    return written
