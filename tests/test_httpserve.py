"""The small HTTP server behind /healthz, /metrics, /status and the webhook, over real sockets."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from reconciler.common.errors import UsageError
from reconciler.common.httpserve import MAX_BODY, HTTPService, Request, Response, parse_listen


def _boom(_: Request) -> Response:
    raise RuntimeError("handler bug")


ROUTES = {
    ("GET", "/ok"): lambda r: Response.text(200, "ok\n"),
    ("POST", "/echo"): lambda r: Response(200, r.body),
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
    service = HTTPService("127.0.0.1:0", ROUTES).start()
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


def test_oversized_bodies_are_refused(server: HTTPService) -> None:
    assert fetch(f"http://127.0.0.1:{server.port}/echo", b"x" * (MAX_BODY + 1))[0] == 413


def test_ipv6_listen() -> None:
    service = HTTPService("[::1]:0", ROUTES).start()
    try:
        assert fetch(f"http://[::1]:{service.port}/ok") == (200, b"ok\n")
    finally:
        service.stop()


@pytest.mark.parametrize(("listen", "expected"), [
    (":7473", ("0.0.0.0", 7473)), ("127.0.0.1:80", ("127.0.0.1", 80)), ("[::]:9", ("::", 9)),
])
def test_parse_listen(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["7473", "host:", "host:99999", "host:http"])
def test_parse_listen_refuses_nonsense(listen: str) -> None:
    with pytest.raises(UsageError, match="--listen"):
        parse_listen(listen)
