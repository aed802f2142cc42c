"""Issue 11's HTTP attacks on the real programs: `portside run` and `portside speaker` as separate
processes (the speaker alone in a network namespace), each with a descriptor limit of 1024, their
memory read from /proc while the attack runs.

Before waitress each of these failed: a ``Content-Length: -1`` body was read to the end (RSS grew
by what was sent), half-sent requests were held forever, ``Content-Length: abc`` got no answer and a
traceback on stderr.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.common.httpserve import IDLE_TIMEOUT_ENV, MAX_BODY, REQUEST_TIMEOUT_ENV
from tests.httpattack import (
    Connect,
    Process,
    RssSampler,
    Slowloris,
    exchange,
    get,
    start_portside_run,
    start_speaker,
    status_of,
    stream_body,
    tcp,
)
from tests.netns import Topology, wait_for

pytestmark = pytest.mark.timeout(120)

MiB = 1 << 20
STREAMED = 64 * MiB  # per attack; the bench streams 128 MiB
GROWTH_LIMIT = 50 * MiB
SHORT = {IDLE_TIMEOUT_ENV: "1", REQUEST_TIMEOUT_ENV: "2"}  # so the tests wait seconds, not minutes


@dataclass
class Target:
    name: str
    process: Process
    connect: Connect
    body_path: str | None  # a route that takes a body, if the program has one


@pytest.fixture(params=["run", "speaker"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    if request.param == "run":
        process, port = start_portside_run(tmp_path, SHORT, b"attack-test-webhook-secret")
        try:
            yield Target("run", process, tcp("127.0.0.1", port), "/hooks/git")
        finally:
            process.stop()
        return
    if os.geteuid() != 0:
        pytest.skip("the speaker runs in a network namespace: needs root")
    with Topology(["a"]) as topology:
        process, connect = start_speaker(topology["a"], tmp_path, SHORT)
        try:
            yield Target("speaker", process, connect, None)
        finally:
            process.stop()


def attacks(target: Target) -> list[tuple[str, bytes, bool]]:
    """(what, request head, chunked): each streams STREAMED bytes of body after its head."""
    body_path = target.body_path or "/healthz"
    return [
        ("length -1 on GET", b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", False),
        ("huge length on GET", b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1099511627776\r\n\r\n", False),
        ("huge length on the body route",
         f"POST {body_path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1099511627776\r\n\r\n".encode(), False),
        ("chunked without end", f"POST {body_path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode(),
         True),
    ]


def test_streamed_bodies_leave_memory_bounded(target: Target) -> None:
    with RssSampler(target.process.pid) as rss:
        for what, head, chunked in attacks(target):
            sent, reply = stream_body(target.connect, head, STREAMED, chunked=chunked, timeout=60)
            assert 400 <= status_of(reply) < 500 or not reply, (what, reply[:100])
            assert sent < STREAMED, f"{what}: the server read all {sent} bytes"
        # Many bodies at once, each within the limit: at most a few are taken in at a time.
        if target.body_path is not None:
            head = f"POST {target.body_path} HTTP/1.1\r\nHost: x\r\nContent-Length: {MAX_BODY}\r\n\r\n".encode()
            threads = [threading.Thread(target=stream_body, args=(target.connect, head, MAX_BODY))
                       for _ in range(32)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
    assert rss.peak - rss.baseline < GROWTH_LIMIT, (rss.baseline >> 20, rss.peak >> 20)
    assert get(target.connect, "/healthz")[0] == 200


def test_slowloris_leaves_healthz_prompt_and_is_closed(target: Target) -> None:
    with Slowloris(target.connect, 300) as attack:
        status, seconds = get(target.connect, "/healthz")
        assert status == 200 and seconds < 1.0, (status, seconds)
        # Silent half-sent requests go after the idle timeout (1 s here) ...
        wait_for(lambda: attack.open_count() == 0, 15, "the half-open connections to be closed")
    with Slowloris(target.connect, 50) as attack:
        # ... and trickling ones at their request deadline (2 s here).
        def cut() -> bool:
            attack.trickle()
            return attack.open_count() == 0

        wait_for(cut, 15, "the trickling requests to be cut", interval=0.3)
    assert get(target.connect, "/healthz")[0] == 200


def test_bad_content_length_is_a_400_without_a_traceback(target: Target) -> None:
    for value in ("abc", "-1", "1.5", ""):
        head = f"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: {value}\r\n\r\n".encode()
        assert status_of(exchange(target.connect, head)) == 400, value
    assert get(target.connect, "/healthz")[0] == 200
    assert "Traceback" not in target.process.output()
