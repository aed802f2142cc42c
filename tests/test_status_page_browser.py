"""The status page in a real browser: Debian's Chromium, headless, driven over the DevTools protocol.

`portside run`'s own HTTP routes serve the page for the example repo (through the controller
loop and the local backend), with their Content-Security-Policy. Chromium loads it; the test
reads every request the page made, every console message and every log entry (a CSP violation
is one), checks the stylesheet really applied, and takes a full-page screenshot.

Run as a script to refresh the README's screenshot:

    PYTHONPATH=. python3 tests/test_status_page_browser.py docs/status-page.png
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script
    sys.path.insert(0, str(ROOT))

from reconciler.backends.local import LocalBackend  # noqa: E402
from reconciler.common.httpserve import HTTPService  # noqa: E402
from reconciler.controller.loop import Controller, Trigger  # noqa: E402
from reconciler.controller.server import controller_routes  # noqa: E402
from reconciler.controller.status import ControllerMetrics, StatusBoard  # noqa: E402
from reconciler.planning.engine import ApplyPolicy, ReconcileResult, reconcile  # noqa: E402
from reconciler.source import Checkout  # noqa: E402
from reconciler.source.directory import DirectorySource  # noqa: E402

EXAMPLE = ROOT / "example-repo"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-default-apps", "--disable-extensions", "--disable-dev-shm-usage",
                  "--hide-scrollbars", "--mute-audio", "--remote-debugging-address=127.0.0.1",
                  "--remote-debugging-port=0")
DEADLINE = 30.0
# Three nodes declared in the local state directory, so the map shows an election.
NODES = {"node-a": {"address": "192.168.1.10"}, "node-b": {"address": "192.168.1.11"},
         "node-c": {"address": "192.168.1.12"}}


def find_chromium() -> str | None:
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


@dataclass
class PageLoad:
    """What the browser saw while loading one page."""

    requests: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)  # console messages, log entries, exceptions
    errors: list[str] = field(default_factory=list)  # the ones at error level
    screenshot: bytes = b""
    evaluated: dict[str, Any] = field(default_factory=dict)


class DevTools:
    """A minimal Chrome DevTools protocol client over one page target's websocket."""

    def __init__(self, ws_url: str) -> None:
        import websocket  # websocket-client, a dependency of the kubernetes client

        self._ws = websocket.create_connection(ws_url, timeout=DEADLINE, suppress_origin=True)
        self._next = 0
        self.events: list[dict[str, Any]] = []

    def close(self) -> None:
        self._ws.close()

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next += 1
        ident = self._next
        self._ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            message = json.loads(self._ws.recv())
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))
            self.events.append(message)
        raise TimeoutError(f"no answer to {method}")

    def wait_for(self, event: str) -> dict[str, Any]:
        deadline = time.monotonic() + DEADLINE
        for message in self.events:
            if message.get("method") == event:
                return message
        while time.monotonic() < deadline:
            message = json.loads(self._ws.recv())
            self.events.append(message)
            if message.get("method") == event:
                return message
        raise TimeoutError(f"no {event} event")


@contextmanager
def chromium(binary: str) -> Iterator[str]:
    """A headless Chromium with a fresh profile; yields its DevTools HTTP address."""
    # Chromium's helper processes may still write into the profile as the browser exits: the whole
    # process group is ended, and what they leave behind does not fail the test.
    with tempfile.TemporaryDirectory(prefix="portside-chromium-", ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + DEADLINE
            while not (port_file.exists() and port_file.read_text().strip()):
                if proc.poll() is not None:
                    raise RuntimeError(f"chromium exited {proc.returncode}: {proc.stderr.read().decode()[-2000:]}"
                                       if proc.stderr else f"chromium exited {proc.returncode}")
                if time.monotonic() > deadline:
                    raise TimeoutError("chromium did not open its DevTools port")
                time.sleep(0.05)  # polling a file Chromium writes once, under a deadline
            yield f"127.0.0.1:{port_file.read_text().split()[0]}"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # helpers still alive after the browser


def load_page(binary: str, url: str, width: int = 1280) -> PageLoad:
    """Load ``url`` in a fresh headless Chromium; record requests, console and a full-page screenshot."""
    seen = PageLoad()
    with chromium(binary) as devtools:
        with urllib.request.urlopen(f"http://{devtools}/json/list", timeout=DEADLINE) as answer:
            targets = json.load(answer)
        page = next(t for t in targets if t.get("type") == "page")
        tools = DevTools(page["webSocketDebuggerUrl"])
        try:
            for domain in ("Page", "Network", "Runtime", "Log"):
                tools.call(f"{domain}.enable")
            tools.call("Emulation.setDeviceMetricsOverride", width=width, height=900, deviceScaleFactor=1,
                       mobile=False)
            tools.call("Page.navigate", url=url)
            tools.wait_for("Page.loadEventFired")
            # Evaluated by DevTools, not by the page: the page itself may run no script at all.
            seen.evaluated = tools.call("Runtime.evaluate", returnByValue=True, expression="""({
                background: getComputedStyle(document.body).backgroundColor,
                tables: document.querySelectorAll('table').length,
                rows: document.querySelectorAll('tbody tr').length,
                svgs: document.querySelectorAll('svg').length,
                scripts: document.scripts.length,
                title: document.title})""")["result"]["value"]
            metrics = tools.call("Page.getLayoutMetrics")
            size = metrics.get("cssContentSize") or metrics["contentSize"]
            shot = tools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                              clip={"x": 0, "y": 0, "width": width, "height": size["height"], "scale": 1})
            seen.screenshot = base64.b64decode(shot["data"])
        finally:
            tools.close()
    for event in tools.events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Network.requestWillBeSent":
            seen.requests.append(params["request"]["url"])
        elif method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            seen.console.append(f"console.{params.get('type')}: {text}")
            if params.get("type") in ("error", "assert"):
                seen.errors.append(text)
        elif method == "Log.entryAdded":
            entry = params["entry"]
            seen.console.append(f"log {entry.get('level')}: {entry.get('text')} {entry.get('url', '')}")
            if entry.get("level") == "error":
                seen.errors.append(f"{entry.get('text')} {entry.get('url', '')}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            seen.errors.append(str(details.get("text")))
            seen.console.append(f"exception: {details}")
    return seen


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@contextmanager
def example_server(tmp: Path, source_label: str = "") -> Iterator[str]:
    """`portside run`'s routes serving the example repo after one real reconcile; yields the page URL."""
    state = tmp / "state"
    state.mkdir()
    (state / "state.json").write_text(json.dumps({"version": 1, "services": {}, "nodes": NODES}))
    backend = LocalBackend(state)
    source = DirectorySource(EXAMPLE, cache_dir=tmp / "cache")
    board = StatusBoard(source=source_label or source.describe(), identity="portside-0")

    def reconcile_checkout(checkout: Checkout) -> ReconcileResult:
        return reconcile(checkout.root, backend, checkout.revision, policy=ApplyPolicy())

    controller = Controller(source, reconcile_checkout, status=board)
    controller.step(frozenset({Trigger.STARTUP}))
    assert board.snapshot()["errors"] == []
    routes = controller_routes(board, ControllerMetrics(), webhook_secret=b"hook-secret-never-shown",
                               on_push=lambda _: None, ready=lambda: True)
    server = HTTPService("127.0.0.1:0", routes).start()
    try:
        yield f"http://127.0.0.1:{server.port}/"
    finally:
        server.stop()


CHROMIUM = find_chromium()


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium; "
                    "./scripts/test installs it as root)")
def test_the_example_page_in_chromium(tmp_path: Path) -> None:
    assert CHROMIUM is not None
    with example_server(tmp_path) as url:
        seen = load_page(CHROMIUM, url)
    # Nothing but the page itself was fetched: no script, font, image or stylesheet from anywhere.
    origin = url.rstrip("/")
    assert seen.requests and all(r == url for r in seen.requests), seen.requests
    assert not [r for r in seen.requests if not r.startswith(origin)]
    assert seen.errors == [], seen.console
    # The hashed stylesheet applied under the CSP (a wrong hash would leave the default white).
    assert seen.evaluated["background"] == "rgb(244, 246, 249)", seen.evaluated
    assert seen.evaluated["scripts"] == 0
    assert seen.evaluated["tables"] >= 3 and seen.evaluated["rows"] >= 3 and seen.evaluated["svgs"] >= 2
    width, height = png_size(seen.screenshot)
    assert width == 1280 and height > 600


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_chromium_reports_a_csp_violation(tmp_path: Path) -> None:
    """The check above can fail: a page whose inline style the policy does not allow is reported."""
    from reconciler.common.httpserve import Request, Response
    from reconciler.pages.style import PAGE_HEADERS

    page = b"<!DOCTYPE html><title>x</title><style>body{background:red}</style><p>x</p>"

    def handler(_: Request) -> Response:
        return Response(200, page, "text/html; charset=utf-8", PAGE_HEADERS)

    assert CHROMIUM is not None
    server = HTTPService("127.0.0.1:0", {("GET", "/"): handler}).start()
    try:
        seen = load_page(CHROMIUM, f"http://127.0.0.1:{server.port}/")
    finally:
        server.stop()
    assert any("Content Security Policy" in e for e in seen.errors), seen.console
    assert seen.evaluated["background"] != "rgb(255, 0, 0)"


def main(out: Path) -> int:
    binary = find_chromium()
    if binary is None:
        print("Chromium is not installed", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp, \
            example_server(Path(tmp), "directory example-repo") as url:
        seen = load_page(binary, url)
    if seen.errors:
        print("\n".join(seen.console), file=sys.stderr)
        return 1
    out.write_bytes(seen.screenshot)
    print(f"{out}: {png_size(seen.screenshot)}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TZ", "UTC")
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/status-page.png")))
