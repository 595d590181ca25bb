"""One self-contained HTML file: the template, its inline style and script, and the data as JSON.

Every text in the data came from a model or a user file. It reaches the page only as JSON inside
`<script type="application/json">`, with `<`, `>` and `&` written as \\u escapes so no `</script>`
or `<!--` in a string can end the element; the script reads it with JSON.parse and shows it with
textContent only. A Content-Security-Policy allows the page's own script alone (by its hash), no
inline event handlers and no network requests, so even a mistake in the script could not run an
injected one or call home.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Iterator

HERE = Path(__file__).resolve().parent
TEMPLATE, STYLE, SCRIPT = "page.html", "page.css", "page.js"
# What JSON.parse reads back unchanged but the HTML parser cannot mistake for markup; U+2028/2029
# are escaped too, for any consumer that still treats them as line ends inside script text.
_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def embed_json(data) -> str:
    """JSON that is safe inside a <script> element. Characters that only occur inside JSON strings
    are the ones replaced, so the replacement never touches the structure. A lone surrogate (which
    UTF-8 cannot hold; a JSONL file can spell one as an escape) goes back to its \\u escape."""
    try:
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str, allow_nan=False)
    except ValueError:  # NaN or infinity, which JSON.parse would refuse: shown as n/a
        text = json.dumps(_finite(data), ensure_ascii=False, separators=(",", ":"), default=str)
    for ch, esc in _ESCAPES.items():
        text = text.replace(ch, esc)
    return text.encode("utf-8", errors="backslashreplace").decode("utf-8")


def _finite(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


class JsonRows(Sequence):
    """A page's rows already embedded (embed_json's text, as UTF-8): the page is written from these
    bytes as they are, so a big page is never held twice, and Python reads a row back as the dict
    the page's script will see."""

    def __init__(self, texts: list[bytes]):
        self.texts = texts

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [json.loads(t) for t in self.texts[i]]
        return json.loads(self.texts[i])

    @property
    def nbytes(self) -> int:
        """The rows as the page holds them, with the comma after each."""
        return sum(len(t) + 1 for t in self.texts)


def _data_chunks(data) -> Iterator[bytes]:
    """embed_json(data) as UTF-8, in pieces: JsonRows in data["rows"] go in as they are."""
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, JsonRows):
        yield embed_json(data).encode("utf-8")
        return
    while True:  # a marker no string in the data holds (64 random bits; checked)
        marker = f"@@ROWS-{secrets.token_hex(8)}@@"
        parts = embed_json({**data, "rows": marker}).split(json.dumps(marker))
        if len(parts) == 2:
            break
    yield parts[0].encode("utf-8") + b"["
    for k, t in enumerate(rows.texts):
        yield b"," + t if k else t
    yield b"]" + parts[1].encode("utf-8")


def _chunks(data: dict) -> Iterator[bytes]:
    template = (HERE / TEMPLATE).read_text(encoding="utf-8")
    style = (HERE / STYLE).read_text(encoding="utf-8")
    script = (HERE / SCRIPT).read_text(encoding="utf-8")
    if "</" in script or "</" in style:  # would end the element early; the assets are ours to fix
        raise AssertionError("the view's inline script or style contains '</'")
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    # The data goes in last, so nothing in it is ever taken for one of the other placeholders.
    html = (template.replace("@@CSP_SCRIPT@@", f"'sha256-{digest}'")
            .replace("/*@@STYLE@@*/", style)
            .replace("/*@@SCRIPT@@*/", script))
    head, tail = html.split("@@DATA@@")
    yield head.encode("utf-8")
    yield from _data_chunks(data)
    yield tail.encode("utf-8")


def render(data: dict) -> str:
    return b"".join(_chunks(data)).decode("utf-8")


def write(data: dict, out: Path) -> int:
    """Write the page atomically, piece by piece; returns its size in bytes."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    size = 0
    with open(tmp, "wb") as fh:
        for chunk in _chunks(data):
            fh.write(chunk)
            size += len(chunk)
    tmp.replace(out)
    return size
