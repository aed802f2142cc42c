"""Webhook signatures (a table) and the controller's HTTP endpoints over a real socket."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.common.errors import UsageError
from reconciler.common.httpserve import HTTPService, Request
from reconciler.controller.server import controller_routes
from reconciler.controller.status import ControllerMetrics, StatusBoard
from reconciler.controller.webhook import (
    Admission,
    Decision,
    DeliveryGate,
    DeliveryKeys,
    Verdict,
    delivery_keys,
    load_secret,
    sign,
    verify_signature,
)
from tests.netns import wait_for

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
    def __init__(self, secret: bytes | None, **options: Any) -> None:
        self.pushes = 0
        self.status = StatusBoard(source="git file:///r")
        self.metrics = ControllerMetrics()
        self.ready = False
        self._lock = threading.Lock()

        def on_push(_: Request) -> None:
            with self._lock:
                self.pushes += 1

        routes = controller_routes(self.status, self.metrics, webhook_secret=secret, on_push=on_push,
                                   ready=lambda: self.ready, **options)
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


# --- replays and rate (issue 11) -----------------------------------------------------------------


def push_body(n: int) -> bytes:
    # GitHub push bodies differ per event: the commits and the push time are in them.
    return json.dumps({"ref": "refs/heads/main", "after": f"{n:040x}", "repository": {"pushed_at": n}}).encode()


def github(body: bytes, delivery: str | None) -> dict[str, str]:
    headers = {"X-Hub-Signature-256": sign(SECRET, body), "X-GitHub-Event": "push"}
    if delivery is not None:
        headers["X-GitHub-Delivery"] = delivery
    return headers


def test_a_replayed_delivery_is_acted_on_once(server: Server) -> None:
    body = push_body(1)
    headers = github(body, "72d3162e-cc78-11e3-81ab-4c9367dc0958")
    replies = [server.request("POST", "/hooks/git", body, headers)[0] for _ in range(20)]
    assert replies[0] == 202
    assert server.pushes == 1, "twenty copies of one signed delivery trigger one fetch"
    # The id is not signed: a new one, or none, on the same body is the same delivery.
    assert server.request("POST", "/hooks/git", body, github(body, "forged-new-id"))[0] != 202
    assert server.request("POST", "/hooks/git", body, github(body, None))[0] != 202
    assert server.pushes == 1
    metrics = server.request("GET", "/metrics")[1].decode()
    assert 'portside_webhook_requests_total{result="replayed"} 21.0' in metrics


def test_a_redelivery_is_answered_as_handled(server: Server) -> None:
    body = push_body(2)
    assert server.request("POST", "/hooks/git", body, github(body, "d-2"))[0] == 202
    status, reply = server.request("POST", "/hooks/git", body, github(body, "d-2"))
    assert (status, json.loads(reply)) == (200, {"status": "duplicate"})


def test_distinct_deliveries_each_count(server: Server) -> None:
    for n in range(3):
        body = push_body(100 + n)
        assert server.request("POST", "/hooks/git", body, github(body, f"d-{n}"))[0] == 202
    assert server.pushes == 3


def test_a_fixed_body_without_an_id_may_be_sent_again(server: Server) -> None:
    # A CI job sending the same signed body on each push cannot be told from its replay: it is
    # not refused (the rate limit still applies).
    body = b'{"ref": "refs/heads/main"}'
    for _ in range(3):
        assert server.request("POST", "/hooks/git", body, {"X-Portside-Signature-256": sign(SECRET, body)})[0] == 202
    assert server.pushes == 3


def timestamped(body: bytes, timestamp: int) -> dict[str, str]:
    return {"X-Portside-Timestamp": str(timestamp),
            "X-Portside-Signature-256": sign(SECRET, str(timestamp).encode() + b"." + body)}


def test_a_signed_timestamp_makes_id_less_deliveries_replay_proof(server: Server) -> None:
    body = b'{"ref": "refs/heads/main"}'
    now = int(time.time())
    assert server.request("POST", "/hooks/git", body, timestamped(body, now))[0] == 202
    assert server.request("POST", "/hooks/git", body, timestamped(body, now))[0] == 200  # the replay
    assert server.request("POST", "/hooks/git", body, timestamped(body, now + 1))[0] == 202  # the next one
    assert server.pushes == 2
    assert server.request("POST", "/hooks/git", body, timestamped(body, now - 3600))[0] == 401
    # The timestamp must be what was signed.
    forged = {"X-Portside-Timestamp": str(now + 2), "X-Portside-Signature-256": sign(SECRET, body)}
    assert server.request("POST", "/hooks/git", body, forged)[0] == 401
    assert server.pushes == 2


@pytest.mark.parametrize(("offset", "verdict"), [
    (0, Verdict.ACCEPTED), (299, Verdict.ACCEPTED), (-299, Verdict.ACCEPTED),
    (301, Verdict.STALE), (-301, Verdict.STALE),
])
def test_timestamp_window(offset: int, verdict: Verdict) -> None:
    now = 1_800_000_000
    assert verify_signature(SECRET, BODY, timestamped(BODY, now + offset), now=now) is verdict


@pytest.mark.parametrize("headers", [
    {"X-Portside-Timestamp": "abc", "X-Portside-Signature-256": sign(SECRET, BODY)},
    {"X-Portside-Timestamp": "-5", "X-Portside-Signature-256": sign(SECRET, b"-5." + BODY)},
    # A timestamp that only an unrelated (body-only) signature comes with is not covered by it.
    {"X-Portside-Timestamp": "1800000000", "X-Hub-Signature-256": GITHUB_EXAMPLE},
])
def test_timestamps_that_prove_nothing_are_refused(headers: dict[str, str]) -> None:
    assert verify_signature(SECRET, BODY, headers, now=1_800_000_000) is Verdict.BAD


def keys(n: int) -> DeliveryKeys:
    return delivery_keys({"X-GitHub-Delivery": f"d-{n}"}, push_body(n))


def test_gate_burst_then_one_deferred_trigger_per_interval() -> None:
    gate = DeliveryGate(burst=3, interval=10.0)
    T, C = Admission.TRIGGER, Admission.COALESCED
    # (time, delivery, expected decision); a burst coalesces into one deferred trigger.
    steps = [
        (0.0, 1, Decision(T)), (0.0, 2, Decision(T)), (0.0, 3, Decision(T)),
        (0.0, 4, Decision(C, defer_s=10.0)),  # the next token comes in 10 s: fire then
        (1.0, 5, Decision(C)), (2.0, 6, Decision(C)),  # ride on the pending deferred trigger
    ]
    for now, n, expected in steps:
        assert gate.admit(keys(n), now) == expected, (now, n)
    gate.deferred_fired()  # at t=10: the token it spent is used up
    assert gate.admit(keys(7), 10.0) == Decision(C, defer_s=10.0)
    gate.deferred_fired()
    assert gate.admit(keys(8), 45.0) == Decision(T)  # refilled (capped at the burst)
    assert gate.admit(keys(1), 45.0) == Decision(Admission.REPLAYED)  # rate never forgets replays


def test_gate_memory_is_bounded() -> None:
    gate = DeliveryGate(memory=10, burst=1000, interval=1.0)
    for n in range(100):
        assert gate.admit(keys(n), 0.0).admission is Admission.TRIGGER
    assert gate.admit(keys(99), 0.0).admission is Admission.REPLAYED
    assert gate.admit(keys(0), 0.0).admission is Admission.TRIGGER  # long forgotten: 2 keys each, 10 kept


def test_a_burst_of_pushes_coalesces_into_a_later_trigger() -> None:
    s = Server(SECRET, gate=DeliveryGate(burst=2, interval=0.5))
    try:
        replies = []
        for n in range(10):
            body = push_body(1000 + n)
            replies.append(json.loads(s.request("POST", "/hooks/git", body, github(body, f"b-{n}"))[1])["status"])
        assert replies == ["accepted"] * 2 + ["coalesced"] * 8
        assert s.pushes <= 3
        metrics = s.request("GET", "/metrics")[1].decode()
        assert 'portside_webhook_requests_total{result="coalesced"} 8.0' in metrics
        wait_for(lambda: s.pushes == 3, 5, "the coalesced pushes to trigger once")
        # Later pushes trigger again once tokens come back.
        counter = iter(range(3000, 4000))

        def new_push_triggered() -> bool:
            body = push_body(next(counter))
            s.request("POST", "/hooks/git", body, github(body, None))
            return s.pushes > 3

        wait_for(new_push_triggered, 5, "a later push to trigger", interval=0.3)
    finally:
        s.http.stop()
