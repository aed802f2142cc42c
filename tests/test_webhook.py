"""Webhook signatures (a table) and the controller's HTTP endpoints over a real socket."""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.common.errors import UsageError
from reconciler.common.httpserve import HTTPService, Request
from reconciler.controller.server import controller_routes
from reconciler.controller.status import ControllerMetrics, StatusBoard
from reconciler.controller.webhook import Verdict, load_secret, sign, verify_signature

SECRET = b"It's a Secret to Everybody"
BODY = b"Hello, World!"
# GitHub's documented example: this secret and body give exactly this signature.
GITHUB_EXAMPLE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def test_sign_matches_githubs_documented_example() -> None:
    assert sign(SECRET, BODY) == GITHUB_EXAMPLE


@pytest.mark.parametrize(("headers", "verdict"), [
    ({"X-Hub-Signature-256": GITHUB_EXAMPLE}, Verdict.ACCEPTED),
    ({"x-hub-signature-256": GITHUB_EXAMPLE}, Verdict.ACCEPTED),  # header names are case-insensitive
    ({"X-Hub-Signature-256": GITHUB_EXAMPLE.upper().replace("SHA256=", "sha256=")}, Verdict.ACCEPTED),
    ({"X-Portside-Signature-256": GITHUB_EXAMPLE}, Verdict.ACCEPTED),
    ({"X-Hub-Signature-256": GITHUB_EXAMPLE, "X-Portside-Signature-256": GITHUB_EXAMPLE}, Verdict.ACCEPTED),
    ({}, Verdict.MISSING),
    ({"X-Hub-Signature": "sha1=0000"}, Verdict.MISSING),  # the SHA-1 header is not accepted
    ({"X-Hub-Signature-256": ""}, Verdict.BAD),
    ({"X-Hub-Signature-256": GITHUB_EXAMPLE[:-1] + "0"}, Verdict.BAD),
    ({"X-Hub-Signature-256": GITHUB_EXAMPLE.removeprefix("sha256=")}, Verdict.BAD),
    ({"X-Hub-Signature-256": "sha1=" + GITHUB_EXAMPLE.removeprefix("sha256=")}, Verdict.BAD),
    ({"X-Hub-Signature-256": GITHUB_EXAMPLE + "00"}, Verdict.BAD),
    ({"X-Hub-Signature-256": GITHUB_EXAMPLE, "X-Portside-Signature-256": "sha256=00"}, Verdict.BAD),
    ({"X-Hub-Signature-256": "sha256=" + hmac.new(b"other", BODY, hashlib.sha256).hexdigest()}, Verdict.BAD),
])
def test_verify_signature(headers: dict[str, str], verdict: Verdict) -> None:
    assert verify_signature(SECRET, BODY, headers) is verdict


def test_a_changed_body_fails() -> None:
    assert verify_signature(SECRET, BODY + b" ", {"X-Hub-Signature-256": GITHUB_EXAMPLE}) is Verdict.BAD


def test_load_secret(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("s3cret\n")
    assert load_secret(path, environ={}) == b"s3cret"
    assert load_secret(None, environ={"PORTSIDE_WEBHOOK_SECRET": "env"}) == b"env"
    assert load_secret(None, environ={}) is None
    path.write_text("\n")
    with pytest.raises(UsageError, match="empty"):
        load_secret(path, environ={})


class Server:
    def __init__(self, secret: bytes | None) -> None:
        self.pushes = 0
        self.status = StatusBoard(source="git file:///r")
        self.metrics = ControllerMetrics()
        self.ready = False

        def on_push(_: Request) -> None:
            self.pushes += 1

        routes = controller_routes(self.status, self.metrics, webhook_secret=secret, on_push=on_push,
                                   ready=lambda: self.ready)
        self.http = HTTPService("127.0.0.1:0", routes).start()

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{self.http.port}{path}"
        req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server(SECRET)
    yield s
    s.http.stop()


def test_webhook_endpoint(server: Server) -> None:
    assert server.request("POST", "/hooks/git", BODY, {"X-Hub-Signature-256": GITHUB_EXAMPLE})[0] == 202
    assert server.pushes == 1
    assert server.request("POST", "/hooks/git", BODY)[0] == 401
    assert server.request("POST", "/hooks/git", BODY, {"X-Hub-Signature-256": "sha256=00"})[0] == 401
    ping = {"X-Hub-Signature-256": GITHUB_EXAMPLE, "X-GitHub-Event": "ping"}
    assert server.request("POST", "/hooks/git", BODY, ping)[0] == 200
    assert server.pushes == 1, "refused deliveries and pings trigger nothing"
    assert server.request("GET", "/hooks/git")[0] == 405
    metrics = server.request("GET", "/metrics")[1].decode()
    assert 'portside_webhook_requests_total{result="accepted"} 2' in metrics
    assert 'portside_webhook_requests_total{result="bad_signature"} 1' in metrics
    assert 'portside_webhook_requests_total{result="missing_signature"} 1' in metrics


def test_webhooks_disabled_without_a_secret() -> None:
    s = Server(None)
    try:
        assert s.request("POST", "/hooks/git", BODY, {"X-Hub-Signature-256": GITHUB_EXAMPLE})[0] == 403
        assert s.pushes == 0
    finally:
        s.http.stop()


def test_health_readiness_and_status(server: Server) -> None:
    assert server.request("GET", "/healthz") == (200, b"ok\n")
    assert server.request("GET", "/readyz")[0] == 503
    server.ready = True
    assert server.request("GET", "/readyz")[0] == 200
    server.status.update(lastAppliedRevision="abc", errors=["a.yaml:1:1: bad"])
    status = json.loads(server.request("GET", "/status")[1])
    assert status["lastAppliedRevision"] == "abc" and status["errors"] == ["a.yaml:1:1: bad"]
    for key in ("lastAttemptedRevision", "lastPlanSummary", "leader", "lastReconcileTime"):
        assert key in status
