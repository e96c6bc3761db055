"""Headless Chromium driven over the DevTools protocol, for the dashboard's browser tests.

Why our own few lines and not a browser-automation package: those download a browser build of
their own; this drives Debian's ``chromium`` (installed by .ci/setup.d/50-chromium.sh) over
``--remote-debugging-pipe`` (DevTools messages on fds 3 and 4, NUL-separated JSON), so it
needs nothing but the standard library. Each :class:`Browser` has a fresh profile.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["Browser", "Page", "chromium"]

_NAVIGATING = ("Inspected target navigated or closed", "Execution context was destroyed")
"""DevTools errors that mean "the page is being replaced", not "the page is broken"."""


def chromium() -> str:
    """The Chromium binary (Debian's ``chromium``)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError("chromium not found: install Debian's `chromium` package")


class Browser:
    """One headless Chromium process; ``with Browser() as b: page = b.open(url)``."""

    def __init__(self, width: int = 1280, height: int = 720) -> None:
        self._profile = tempfile.TemporaryDirectory(prefix="lightspan-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def child_fds() -> None:  # in the child: its fd 3 reads commands, fd 4 writes answers
            hi_r, hi_w = os.dup(to_child_r), os.dup(from_child_w)
            os.dup2(hi_r, 3)
            os.dup2(hi_w, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        self.proc = subprocess.Popen(
            [
                chromium(),
                "--headless",
                "--no-sandbox",  # CI runs as root
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--hide-scrollbars",
                "--remote-debugging-pipe",
                f"--user-data-dir={self._profile.name}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=child_fds,
            close_fds=False,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._buf = b""
        self._next_id = 0
        self.width, self.height = width, height

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call("Browser.close", timeout=5)
            except (RuntimeError, OSError):
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for fd in (self._to_child, self._from_child):
            try:
                os.close(fd)
            except OSError:
                pass
        self._profile.cleanup()

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """Send one DevTools command and return its result (events in between are skipped)."""
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError("chromium did not answer in time")
            ready, _, _ = select.select([self._from_child], [], [], left)
            if ready:
                chunk = os.read(self._from_child, 1 << 16)
                if not chunk:
                    raise RuntimeError(f"chromium exited ({self.proc.poll()})")
                self._buf += chunk
        raw, _, self._buf = self._buf.partition(b"\0")
        return json.loads(raw)

    def open(self, url: str) -> Page:
        """A new tab at ``url``."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        page = Page(self, session)
        page.call(  # the viewport is the whole window size (no browser chrome to subtract)
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
        )
        page.call("Page.enable")
        page.call("Page.navigate", {"url": url})
        return page


class Page:
    """One tab: evaluate JavaScript, wait for text, click, take screenshots."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.browser.call(method, params, session=self.session)

    def eval(self, expression: str) -> Any:
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def text(self) -> str:
        """What the page shows as text: ``document.body.innerText`` plus the values of its
        input fields (a selected option of a searchable select is an input's value)."""
        return (
            self.eval(
                "document.body ? document.body.innerText + '\\n' + Array.from("
                "document.querySelectorAll('input')).map(e => e.value).join('\\n') : ''"
            )
            or ""
        )

    def url(self) -> str:
        return self.eval("location.href")

    def wait_text(self, *needles: str, timeout: float = 30.0) -> str:
        """Wait until every needle is in the rendered text; returns that text."""
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            try:
                text = self.text()
            except RuntimeError as e:
                # A page that is navigating (a submitted form, a redirect) has no document to
                # read for a moment: read again once the new one is there.
                if not any(m in str(e) for m in _NAVIGATING):
                    raise
                time.sleep(0.2)
                continue
            if all(n in text for n in needles):
                return text
            time.sleep(0.2)
        missing = [n for n in needles if n not in text]
        raise AssertionError(f"not rendered within {timeout}s: {missing}; page text:\n{text}")

    def click(self, selector: str) -> None:
        """Click the first element matching the CSS selector (as a user's click would)."""
        found = self.eval(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " if (!e) return false; e.click(); return true; })()"
        )
        if not found:
            raise AssertionError(f"no element matches {selector!r}")

    def click_button(self, label: str, row_text: str | None = None) -> None:
        """Click the button labelled ``label`` (aria-label), in the table row whose text
        contains ``row_text`` when given."""
        found = self.eval(
            f"""(() => {{
                const rows = {json.dumps(row_text)} === null ? [document] :
                    Array.from(document.querySelectorAll('tr'))
                        .filter(r => r.innerText.includes({json.dumps(row_text)}));
                for (const r of rows) {{
                    const b = r.querySelector('[aria-label={json.dumps(label)}]');
                    if (b) {{ b.click(); return true; }}
                }}
                return false;
            }})()"""
        )
        if not found:
            raise AssertionError(f"no {label!r} button (row with {row_text!r})")

    def screenshot(self, out: Path) -> None:
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        out.write_bytes(base64.b64decode(data))
