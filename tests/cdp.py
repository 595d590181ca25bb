"""Headless Chromium driven over the DevTools protocol, for browser tests that click, type and
download (tests/test_view_browser.py only reads the document `--dump-dom` prints).

The protocol runs over a pipe (`--remote-debugging-pipe`: Chromium reads commands on fd 3 and
writes replies and events on fd 4, each a JSON message ending in a NUL byte), so it needs no port,
no websocket library and nothing past the standard library. Clicks are real mouse events at the
element's place on the page and keys real key events, so the page sees what a person's input makes
(a download started by a click has its user activation).
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.test_view_browser import chromium

TIMEOUT_S = 30.0
# Key events as Chromium wants them: the key, its code and the Windows virtual key number.
SPECIAL_KEYS = {"ArrowLeft": ("ArrowLeft", 37), "ArrowRight": ("ArrowRight", 39), "Enter": ("Enter", 13),
                "Escape": ("Escape", 27)}


class BrowserError(RuntimeError):
    pass


class Browser:
    """One headless Chromium with its own profile (kept across reloads, so localStorage persists)
    and downloads saved into `downloads`."""

    def __init__(self, downloads: Path):
        self.profile = tempfile.mkdtemp(prefix="cai-cdp-")
        self.downloads = Path(downloads)
        self.downloads.mkdir(parents=True, exist_ok=True)
        to_browser_r, self._out = os.pipe()
        self._in, from_browser_w = os.pipe()

        def onto_3_and_4():  # in the child, before exec: the pipe ends Chromium expects
            r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
            w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
            os.dup2(r, 3)
            os.dup2(w, 4)

        self.proc = subprocess.Popen(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             f"--user-data-dir={self.profile}", "--remote-debugging-pipe", "--no-first-run", "about:blank"],
            preexec_fn=onto_3_and_4, close_fds=False, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buf = b""
        self._next = 0
        self.events: list[dict] = []
        self.send("Browser.setDownloadBehavior", {"behavior": "allowAndName", "downloadPath": str(self.downloads),
                                                  "eventsEnabled": True})

    # ---------------------------------------------------------------- the protocol

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise BrowserError("no reply from Chromium in time")
            chunk = os.read(self._in, 1 << 16)
            if not chunk:
                raise BrowserError("Chromium closed the pipe (it exited)")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._next += 1
        msg = {"id": self._next, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._out, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, match=lambda params: True, timeout: float = TIMEOUT_S) -> dict:
        """The first event `method` whose params `match` (kept or yet to come), removed from the list."""
        deadline = time.monotonic() + timeout
        k = 0
        while True:
            while k < len(self.events):
                e = self.events[k]
                if e.get("method") == method and match(e.get("params") or {}):
                    del self.events[k]
                    return e["params"]
                k += 1
            self.events.append(self._read(deadline))

    def open(self, url: str) -> "Page":
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        for domain in ("Page", "Runtime", "Network"):
            page.send(f"{domain}.enable")
        page.send("Page.navigate", {"url": url})
        return page

    def download(self, timeout: float = TIMEOUT_S) -> tuple[str, Path]:
        """(suggested file name, the file) of the next download, once the browser says it completed."""
        begun = self.wait_event("Browser.downloadWillBegin", timeout=timeout)
        self.wait_event("Browser.downloadProgress",
                        lambda p: p.get("guid") == begun["guid"] and p.get("state") in ("completed", "canceled"),
                        timeout=timeout)
        done = self.downloads / begun["guid"]
        if not done.is_file():
            raise BrowserError(f"download {begun['suggestedFilename']!r} was not saved")
        return begun["suggestedFilename"], done

    def close(self) -> None:
        try:
            self.send("Browser.close")
            self.proc.wait(timeout=15)
        except (BrowserError, OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(timeout=15)
        finally:
            os.close(self._in)
            os.close(self._out)
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Page:
    def __init__(self, browser: Browser, session: str):
        self.browser, self.session = browser, session

    def send(self, method: str, params: dict | None = None) -> dict:
        return self.browser.send(method, params, self.session)

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (an exception in it fails the test)."""
        res = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in res:
            raise BrowserError(f"{expression!r}: {res['exceptionDetails'].get('exception', res['exceptionDetails'])}")
        return res["result"].get("value")

    def wait_for(self, expression: str, timeout: float = TIMEOUT_S):
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.evaluate(expression)
            except BrowserError:
                value = None  # the page is still loading: its globals are not there yet
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"still false after {timeout} s: {expression}")
            time.sleep(0.05)

    def ready(self) -> None:
        self.wait_for("document.readyState === 'complete' && document.body && document.body.dataset.ready === '1'")

    def click(self, selector: str) -> None:
        """A left click, as mouse events at the middle of the element (scrolled into view first)."""
        box = self.evaluate(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return null;"
                            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
                            " return [r.x + r.width / 2, r.y + r.height / 2, e.disabled === true]; })()")
        if box is None:
            raise BrowserError(f"nothing on the page matches {selector}")
        x, y, disabled = box
        if disabled:
            raise BrowserError(f"{selector} is disabled")
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left",
                                                   "clickCount": 0 if kind == "mouseMoved" else 1})

    def key(self, key: str) -> None:
        """One key pressed and released: a character ("a", "1") or a name in SPECIAL_KEYS."""
        if key in SPECIAL_KEYS:
            code, vk = SPECIAL_KEYS[key]
            down = {"key": key, "code": code, "windowsVirtualKeyCode": vk}
        else:
            down = {"key": key, "text": key, "code": ("Key" + key.upper()) if key.isalpha() else f"Digit{key}",
                    "windowsVirtualKeyCode": ord(key.upper())}
        self.send("Input.dispatchKeyEvent", {"type": "keyDown", **down})
        self.send("Input.dispatchKeyEvent", {"type": "keyUp", **{k: v for k, v in down.items() if k != "text"}})

    def reload(self) -> None:
        self.evaluate("window.__before_reload = true")  # gone once the new document is there
        self.send("Page.reload", {"ignoreCache": True})
        self.wait_for("!window.__before_reload")
        self.ready()

    def requested_urls(self) -> list[str]:
        """Every URL the page asked the network layer for so far (Network.requestWillBeSent)."""
        return [e["params"]["request"]["url"] for e in self.browser.events
                if e.get("method") == "Network.requestWillBeSent" and e.get("sessionId") == self.session]
