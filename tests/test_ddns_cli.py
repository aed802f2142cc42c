"""Dynamic DNS through the CLI: an echo server on loopback plays the address source, the fake
Cloudflare API holds the zone. Create, follow an address change, converge with no writes, leave
foreign records alone, and change nothing when the source fails or lies."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from reconciler.backends.local import LocalBackend
from reconciler.planning.engine import ApplyPolicy, reconcile
from tests.conftest import run_cli, write_repo
from tests.fakes.cloudflare_api import FakeCloudflare

OLD, NEW = "93.184.216.34", "93.184.216.99"
V6 = "2a00:1450:4001:82b::200e"


@dataclass
class Echo:
    """What the address source answers next: a status, a body, and a delay before answering."""

    status: int = 200
    body: str = OLD
    delay: float = 0.0
    url: str = ""


@pytest.fixture
def echo() -> Iterator[Echo]:
    state = Echo()
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if state.delay:
                release.wait(state.delay)  # a slow source; the test's client gives up first
            data = state.body.encode()
            self.send_response(state.status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/"
    yield state
    release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def cloudflare(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCloudflare]:
    with FakeCloudflare() as cf:
        cf.zone = cf.add_zone("example.dev")  # type: ignore[attr-defined]
        monkeypatch.setenv("CLOUDFLARE_API_TOKEN", cf.token)
        monkeypatch.setenv("CLOUDFLARE_BASE_URL", cf.base_url)
        yield cf


def repo(root: Path, echo: Echo, *, ipv6: bool = False, timeout: str = "2s") -> Path:
    families = f"""
  ipv4:
    sources:
      - url: {echo.url}
        timeout: {timeout}"""
    if ipv6:
        families += f"""
  ipv6:
    sources:
      - url: {echo.url}v6
        timeout: {timeout}"""
    return write_repo(root, {"dns.yaml": f"""
apiVersion: portside.io/v1alpha1
kind: DynamicDNS
metadata: {{name: home}}
spec:
  zone: example.dev
  hostnames: [home.example.dev, vpn.example.dev]
  ttl: 120{families}
"""})


def address_records(cf: FakeCloudflare) -> dict[tuple[str, str], tuple[str, int, str]]:
    zone = cf.zone  # type: ignore[attr-defined]
    return {(r["name"], r["type"]): (r["content"], r["ttl"], r["comment"]) for r in cf.records(zone)
            if r["type"] in ("A", "AAAA")}


def test_records_follow_the_public_address_and_converge(
        cloudflare: FakeCloudflare, echo: Echo, tmp_path: Path) -> None:
    path, state = str(repo(tmp_path / "repo", echo)), str(tmp_path / "state")
    first = run_cli("apply", path, "--state", state)
    assert first.code == 0, first.err
    assert "+ DNSRecord home.example.dev A" in first.out
    records = address_records(cloudflare)
    assert set(records) == {("home.example.dev", "A"), ("vpn.example.dev", "A")}
    content, ttl, comment = records[("home.example.dev", "A")]
    assert (content, ttl) == (OLD, 120) and comment.startswith("managed by portside")

    cloudflare.clear_log()
    assert "No changes" in run_cli("apply", path, "--state", state).out
    assert cloudflare.writes() == []

    echo.body = NEW  # the ISP hands out a new address
    moved = run_cli("apply", path, "--state", state)
    assert moved.code == 0, moved.err
    assert f"the address is now {NEW}" in moved.out
    assert {v[0] for v in address_records(cloudflare).values()} == {NEW}


@pytest.mark.parametrize(("status", "body", "delay", "said"), [
    (503, "busy", 0.0, "HTTP 503"),
    (200, "<html>not an address</html>", 0.0, "'<html>not an address</html>' is not an IP address"),
    (200, "192.168.1.1", 0.0, "192.168.1.1 is a private or reserved address"),
    (200, "", 5.0, "no answer within 0.5s"),
])
def test_a_source_that_fails_or_lies_changes_nothing_and_says_why(
        cloudflare: FakeCloudflare, echo: Echo, tmp_path: Path, status: int, body: str, delay: float,
        said: str) -> None:
    path, state = str(repo(tmp_path / "repo", echo, timeout="500ms")), str(tmp_path / "state")
    assert run_cli("apply", path, "--state", state).code == 0
    before = address_records(cloudflare)
    echo.status, echo.body, echo.delay = status, body, delay
    cloudflare.clear_log()
    result = run_cli("apply", path, "--state", state)
    assert result.code == 0, result.err
    assert f"{echo.url}: {said}" in result.out + result.err
    assert "its A records are left as they are" in result.out + result.err
    assert cloudflare.writes() == []
    assert address_records(cloudflare) == before


def test_foreign_records_are_a_conflict_and_left_alone(
        cloudflare: FakeCloudflare, echo: Echo, tmp_path: Path) -> None:
    zone = cloudflare.zone  # type: ignore[attr-defined]
    cloudflare.add_record(zone, "vpn.example.dev", "A", "93.184.216.1", comment="my router's script")
    path, state = str(repo(tmp_path / "repo", echo)), str(tmp_path / "state")
    result = run_cli("apply", path, "--state", state)
    assert result.code == 0, result.err
    assert "DNSRecord vpn.example.dev A" in result.out and "not managed by portside" in result.out
    records = address_records(cloudflare)
    assert records[("vpn.example.dev", "A")][:2] == ("93.184.216.1", 1)
    assert records[("home.example.dev", "A")][0] == OLD


def test_a_family_dropped_from_the_document_loses_only_its_records(
        cloudflare: FakeCloudflare, echo: Echo, tmp_path: Path) -> None:
    root = tmp_path / "repo"
    echo.body = OLD
    path, state = str(repo(root, echo)), str(tmp_path / "state")
    assert run_cli("apply", path, "--state", state).code == 0
    zone = cloudflare.zone  # type: ignore[attr-defined]
    # An AAAA that portside wrote when the document still followed IPv6.
    marker = next(iter(address_records(cloudflare).values()))[2]
    cloudflare.add_record(zone, "home.example.dev", "AAAA", V6, comment=marker, ttl=120)
    result = run_cli("apply", path, "--state", state)
    assert "- DNSRecord home.example.dev AAAA" in result.out
    assert ("home.example.dev", "AAAA") not in address_records(cloudflare)
    (root / "dns.yaml").unlink()
    gone = run_cli("apply", path, "--state", state, "--allow-mass-delete")
    assert gone.code == 0, gone.err
    assert address_records(cloudflare) == {}


def test_without_a_token_nothing_is_asked_and_the_plan_says_so(
        echo: Echo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLOUDFLARE_API_TOKEN", raising=False)
    echo.delay = 30.0  # a source that would hang: it must not even be asked
    result = run_cli("diff", str(repo(tmp_path / "repo", echo)), "--state", str(tmp_path / "state"))
    assert result.code == 0, result.err
    assert "DynamicDNS home skipped: Cloudflare DNS was not read" in result.out + result.err


def test_the_controller_is_told_how_often_to_look_again(echo: Echo, tmp_path: Path) -> None:
    root = repo(tmp_path / "repo", echo)
    backend = LocalBackend(tmp_path / "state")
    assert reconcile(root, backend, None, policy=ApplyPolicy(dry_run=True)).recheck_after == 300
    (root / "dns.yaml").write_text((root / "dns.yaml").read_text().replace("ttl: 120", "ttl: 120\n  interval: 90s"))
    assert reconcile(root, backend, None, policy=ApplyPolicy(dry_run=True)).recheck_after == 90
    (root / "dns.yaml").unlink()
    assert reconcile(root, backend, None, policy=ApplyPolicy(dry_run=True)).recheck_after is None
