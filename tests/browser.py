"""Headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`:
JSON messages ended by NUL on file descriptors 3 and 4), standard library only.

`--dump-dom` needs scripts to run, so a page with JavaScript disabled cannot be dumped that
way; over the protocol the page is loaded with script execution disabled
(Emulation.setScriptExecutionDisabled) and its DOM read with DOM.getOuterHTML, which needs
no page script. Screenshots (Page.captureScreenshot) are of the whole page.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SKIP_REASON = "no chromium: install Debian's chromium (tests/setup-system.sh does as root)"


class Browser:
    """One headless Chromium; `page(url, javascript)` loads a page in a fresh tab."""

    def __init__(self, home: Path, timeout: float = 120.0) -> None:
        assert CHROMIUM is not None, SKIP_REASON
        self.timeout = timeout
        to_child, self._out = os.pipe()  # we write commands, it reads fd 3
        self._in, from_child = os.pipe()  # it writes answers on fd 4

        def pipes() -> None:  # in the child, before exec: the pipes as fds 3 and 4
            high_in, high_out = os.dup(to_child), os.dup(from_child)
            os.dup2(high_in, 3)
            os.dup2(high_out, 4)

        args = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--remote-debugging-pipe"]
        self.log = home / "chromium.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [CHROMIUM, *args, f"--user-data-dir={home / 'chromium-profile'}", "about:blank"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=pipes,
                pass_fds=(3, 4),
                env={**os.environ, "HOME": str(home)},
            )
        os.close(to_child)
        os.close(from_child)
        self._buffer = b""
        self._next = 0
        self.events: list[dict[str, Any]] = []

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._out)
        os.close(self._in)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._in], [], [], max(0.0, left))
            if not ready:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise AssertionError(f"chromium did not answer within {self.timeout}s; its log: {tail}")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise AssertionError(f"chromium exited; its log: {tail}")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            answer = self._message(deadline)
            if answer.get("id") == self._next:
                if "error" in answer:
                    raise AssertionError(f"{method}: {answer['error']}")
                result: dict[str, Any] = answer.get("result", {})
                return result
            self.events.append(answer)

    def wait_event(self, method: str, session: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method and event.get("sessionId") == session:
                    return self.events.pop(i)
            self.events.append(self._message(deadline))

    def page(self, url: str, javascript: bool = True, width: int = 1200, height: int = 900) -> Page:
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Emulation.setScriptExecutionDisabled", session, value=not javascript)
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        self.call("Emulation.setDeviceMetricsOverride", session, **metrics)
        self.call("Page.enable", session)
        self.events.clear()
        self.call("Page.navigate", session, url=url)
        self.wait_event("Page.loadEventFired", session)
        return Page(self, session)


class Page:
    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session

    def dom(self) -> str:
        """The DOM as it is now (after scripts ran, where they may), as HTML."""
        root = self.browser.call("DOM.getDocument", self.session, depth=-1)["root"]["nodeId"]
        html: str = self.browser.call("DOM.getOuterHTML", self.session, nodeId=root)["outerHTML"]
        return html

    def reload_dom(self) -> str:
        """Reload, as the page's own refresh does, and the DOM after."""
        self.browser.events.clear()
        self.browser.call("Page.reload", self.session)
        self.browser.wait_event("Page.loadEventFired", self.session)
        return self.dom()

    def screenshot(self, path: Path) -> None:
        """The whole page as PNG (beyond the window's height)."""
        size = self.browser.call("Page.getLayoutMetrics", self.session)["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 12000), "scale": 1}
        options = {"format": "png", "captureBeyondViewport": True, "clip": clip}
        shot = self.browser.call("Page.captureScreenshot", self.session, **options)
        path.write_bytes(base64.b64decode(shot["data"]))
