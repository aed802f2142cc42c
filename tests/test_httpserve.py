"""The HTTP server behind /healthz, /metrics, /status and the webhook, over real sockets.

The attack cases of issue 11 are here in-process (fast, with short timeouts); the same attacks
on `portside run` and the speaker as separate processes, with their memory measured, are in
test_http_attacks.py.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from reconciler.common.errors import UsageError
from reconciler.common.httpserve import MAX_BODY, HTTPService, Limits, Request, Response, parse_listen
from tests.httpattack import Slowloris, exchange, get, status_of, stream_body, tcp
from tests.netns import wait_for


def _boom(_: Request) -> Response:
    raise RuntimeError("handler bug")


ROUTES = {
    ("GET", "/ok"): lambda r: Response.text(200, "ok\n"),
    ("GET", "/healthz"): lambda r: Response.text(200, "ok\n"),
    ("POST", "/echo"): lambda r: Response(200, r.body),
    ("GET", "/headers"): lambda r: Response.json(200, dict(r.headers)),
    ("GET", "/page"): lambda r: Response(200, b"<p>hi</p>", "text/html; charset=utf-8",
                                         {"Content-Security-Policy": "default-src 'none'"}),
    ("GET", "/boom"): _boom,
}


def fetch(url: str, data: bytes | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def server() -> Iterator[HTTPService]:
    service = HTTPService("127.0.0.1:0", ROUTES, Limits(idle_timeout=2, request_timeout=2)).start()
    yield service
    service.stop()


def test_routes_methods_and_errors(server: HTTPService) -> None:
    base = f"http://127.0.0.1:{server.port}"
    assert fetch(f"{base}/ok") == (200, b"ok\n")
    assert fetch(f"{base}/ok?x=1") == (200, b"ok\n")
    assert fetch(f"{base}/echo", b"hello") == (200, b"hello")
    assert fetch(f"{base}/nope")[0] == 404
    assert fetch(f"{base}/ok", b"x")[0] == 405
    assert fetch(f"{base}/boom")[0] == 500  # a handler bug answers 500 and the server lives on
    assert fetch(f"{base}/ok")[0] == 200


def test_routes_set_headers_and_content_type(server: HTTPService) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/page", timeout=5) as response:
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        assert response.headers["Content-Security-Policy"] == "default-src 'none'"
        assert response.read() == b"<p>hi</p>"


def test_handlers_see_request_headers(server: HTTPService) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}/headers",
                                     headers={"X-GitHub-Delivery": "d-1"})
    with urllib.request.urlopen(request, timeout=5) as response:
        headers = {k.lower(): v for k, v in json.loads(response.read()).items()}
    assert headers["x-github-delivery"] == "d-1"


def test_oversized_bodies_are_refused(server: HTTPService) -> None:
    head = f"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {MAX_BODY + 1}\r\n\r\n".encode()
    assert status_of(exchange(tcp("127.0.0.1", server.port), head + b"x" * 1000)) == 413
    # A client that sends the whole body anyway may see the reset of the closed connection
    # before the 413; never a 200.
    try:
        assert fetch(f"http://127.0.0.1:{server.port}/echo", b"x" * (MAX_BODY + 1))[0] == 413
    except urllib.error.URLError as exc:
        assert isinstance(exc.reason, ConnectionError), exc
    assert fetch(f"http://127.0.0.1:{server.port}/echo", b"x" * MAX_BODY) == (200, b"x" * MAX_BODY)


@pytest.mark.parametrize(("header", "status"), [
    ("Content-Length: abc", 400),
    ("Content-Length: -1", 400),
    ("Content-Length: +5", 400),
    ("Content-Length: 5, 6", 400),
    ("Content-Length: 1e3", 400),
    ("Transfer-Encoding: gzip", 501),
])
def test_malformed_framing_is_a_clean_4xx(server: HTTPService, header: str, status: int,
                                          capfd: pytest.CaptureFixture[str],
                                          caplog: pytest.LogCaptureFixture) -> None:
    reply = exchange(tcp("127.0.0.1", server.port), f"POST /echo HTTP/1.1\r\nHost: x\r\n{header}\r\n\r\nhello".encode())
    assert status_of(reply) == status, reply[:200]
    assert get(tcp("127.0.0.1", server.port), "/ok")[0] == 200
    err = capfd.readouterr().err
    assert "Traceback" not in err
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def test_garbage_and_oversized_headers(server: HTTPService, capfd: pytest.CaptureFixture[str]) -> None:
    connect = tcp("127.0.0.1", server.port)
    assert status_of(exchange(connect, b"\x00\x01\x02 garbage\r\n\r\n")) == 400
    assert status_of(exchange(connect, b"GET /ok HTTP/1.1\r\nBad Header\r\n\r\n")) == 400
    big = b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (64 * 1024) + b"\r\n\r\n"
    assert status_of(exchange(connect, big)) == 431
    assert "Traceback" not in capfd.readouterr().err


def test_a_body_is_never_read_for_a_route_without_one(server: HTTPService) -> None:
    # The old server read 100 MB announced here before looking at the route; this one answers
    # from the headers alone, without waiting for a byte of the body.
    reply = exchange(tcp("127.0.0.1", server.port),
                     b"GET /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n", timeout=3)
    assert status_of(reply) == 413


def test_an_announced_oversized_body_is_refused_before_it_is_sent(server: HTTPService) -> None:
    reply = exchange(tcp("127.0.0.1", server.port),
                     f"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {MAX_BODY + 1}\r\n\r\n".encode(), timeout=3)
    assert status_of(reply) == 413


def test_a_chunked_body_is_cut_at_the_limit(server: HTTPService) -> None:
    sent, reply = stream_body(tcp("127.0.0.1", server.port),
                              b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                              total=64 * MAX_BODY, chunked=True, timeout=20)
    assert status_of(reply) == 413
    assert sent < 16 * MAX_BODY, "the server stopped reading soon after the limit"


def test_bodies_arriving_at_once_are_bounded() -> None:
    service = HTTPService("127.0.0.1:0", ROUTES, Limits(bodies_in_flight=2, idle_timeout=5)).start()
    try:
        connect = tcp("127.0.0.1", service.port)
        slow = [connect(), connect()]
        for sock in slow:  # two bodies half sent
            sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)

        def third() -> int:
            return status_of(exchange(connect, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"))

        assert wait_for(lambda: third() == 503, 5, "the third body to be refused")
        for sock in slow:
            sock.close()
        assert wait_for(lambda: third() == 200, 5, "bodies to be taken again")
    finally:
        service.stop()


def test_slowloris_connections_do_not_starve_healthz_and_are_closed_when_idle() -> None:
    service = HTTPService("127.0.0.1:0", ROUTES, Limits(idle_timeout=1, request_timeout=30)).start()
    connect = tcp("127.0.0.1", service.port)
    try:
        with Slowloris(connect, 300) as attack:
            status, seconds = get(connect, "/healthz")
            assert status == 200 and seconds < 1.0, (status, seconds)
            assert attack.open_count() == 300
            wait_for(lambda: attack.open_count() == 0, 10, "the idle half-sent requests to be closed")
    finally:
        service.stop()


def test_a_trickling_request_is_cut_at_its_deadline() -> None:
    # One byte every 0.2 s keeps an idle timer from firing; the request deadline still applies.
    service = HTTPService("127.0.0.1:0", ROUTES, Limits(idle_timeout=30, request_timeout=1)).start()
    try:
        with Slowloris(tcp("127.0.0.1", service.port), 20) as attack:
            started = time.monotonic()

            def closed() -> bool:
                attack.trickle()
                return attack.open_count() == 0

            wait_for(closed, 10, "trickling requests to be cut", interval=0.2)
            assert time.monotonic() - started >= 0.9
    finally:
        service.stop()


def test_at_the_connection_limit_the_oldest_waiting_connection_makes_room() -> None:
    # Five times the limit in half-sent requests that no timeout will end soon: /healthz is still
    # answered at once, and the server never holds many more than the limit.
    limits = Limits(connection_limit=20, idle_timeout=60, request_timeout=60)
    service = HTTPService("127.0.0.1:0", ROUTES, limits).start()
    connect = tcp("127.0.0.1", service.port)
    try:
        with Slowloris(connect, 100) as attack:
            for _ in range(5):
                status, seconds = get(connect, "/healthz")
                assert status == 200 and seconds < 1.0, (status, seconds)
            wait_for(lambda: attack.open_count() <= limits.connection_limit, 5, "the oldest to be closed")
            assert attack.open_count() >= limits.connection_limit // 2, "room is made one at a time"
    finally:
        service.stop()


def test_stop_closes_open_connections() -> None:
    service = HTTPService("127.0.0.1:0", ROUTES).start()
    sock = socket.create_connection(("127.0.0.1", service.port), timeout=5)
    sock.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n")
    stopper = threading.Thread(target=service.stop)
    stopper.start()
    stopper.join(timeout=10)
    assert not stopper.is_alive()
    # Closed before it read what we sent, the kernel resets rather than ends the connection.
    with contextlib.suppress(ConnectionResetError):
        assert sock.recv(100) == b""
    sock.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", service.port), timeout=1).close()


def test_ipv6_listen() -> None:
    service = HTTPService("[::1]:0", ROUTES).start()
    try:
        assert fetch(f"http://[::1]:{service.port}/ok") == (200, b"ok\n")
    finally:
        service.stop()


def test_the_any_address_of_ipv6_serves_ipv4_too() -> None:
    service = HTTPService("[::]:0", ROUTES).start()
    try:
        assert fetch(f"http://127.0.0.1:{service.port}/ok") == (200, b"ok\n")
    finally:
        service.stop()


def test_a_taken_port_is_a_usage_error(server: HTTPService) -> None:
    with pytest.raises(UsageError, match="cannot listen there"):
        HTTPService(f"127.0.0.1:{server.port}", ROUTES)


def test_limits_from_the_environment() -> None:
    limits = Limits.from_environ({"PORTSIDE_HTTP_IDLE_TIMEOUT": "0.5", "PORTSIDE_HTTP_REQUEST_TIMEOUT": "2"})
    assert (limits.idle_timeout, limits.request_timeout) == (0.5, 2.0)
    assert Limits.from_environ({}).idle_timeout == Limits().idle_timeout
    for bad in ("abc", "-1", "0", "inf"):
        with pytest.raises(UsageError, match="PORTSIDE_HTTP_IDLE_TIMEOUT"):
            Limits.from_environ({"PORTSIDE_HTTP_IDLE_TIMEOUT": bad})


@pytest.mark.parametrize(("listen", "expected"), [
    (":7473", ("0.0.0.0", 7473)), ("127.0.0.1:80", ("127.0.0.1", 80)), ("[::]:9", ("::", 9)),
])
def test_parse_listen(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["7473", "host:", "host:99999", "host:http"])
def test_parse_listen_refuses_nonsense(listen: str) -> None:
    with pytest.raises(UsageError, match="--listen"):
        parse_listen(listen)
