"""DynamicDNS documents: what is refused, and where the error points."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli, write_repo

HEAD = """apiVersion: portside.io/v1alpha1
kind: DynamicDNS
metadata: {name: home}
spec:
"""


@pytest.mark.parametrize(("spec", "where", "message"), [
    ("  hostnames: [home.example.dev]\n", "dns.yaml:4:1", "declare ipv4, ipv6 or both"),
    ("  hostnames: [home.example.dev]\n  ttl: 30\n  ipv4: {sources: [{url: 'http://x/'}]}\n",
     "dns.yaml:4:1", "ttl must be 1 (automatic) or 60 to 86400"),
    ("  hostnames: [home.example.dev]\n  proxied: true\n  ipv4: {sources: [{url: 'http://x/'}]}\n",
     "dns.yaml:4:1", "a proxied record's TTL is Cloudflare's"),
    ("  hostnames: [home.example.dev]\n  ipv4: {sources: [{url: 'http://x/', interface: eth0}]}\n",
     "dns.yaml:6:10", "give exactly one of url"),
    ("  hostnames: [home.example.dev]\n  ipv4: {sources: [{url: 'ftp://x/'}]}\n",
     "dns.yaml:6:26", "spec.ipv4.sources[0].url"),
    ("  hostnames: [home.example.dev]\n  ipv4: {sources: [{url: 'http://x/', timeout: 2m}]}\n",
     "dns.yaml:6:10", "timeout must be more than 0s and at most 60s"),
    ("  hostnames: [home.example.dev]\n  ipv4: {sources: [], agreement: first}\n",
     "dns.yaml:6:19", "spec.ipv4.sources: needs at least 1 entry"),
    ("  zone: example.dev\n  hostnames: [home.example.org]\n  ipv4: {sources: [{url: 'http://x/'}]}\n",
     "dns.yaml:6:15", "home.example.org is outside zone example.dev"),
    ("  hostnames: ['-bad-.example.dev']\n  ipv4: {sources: [{url: 'http://x/'}]}\n",
     "dns.yaml:5:15", "spec.hostnames[0]"),
])
def test_refused_with_file_line_and_field(tmp_path: Path, spec: str, where: str, message: str) -> None:
    write_repo(tmp_path, {"dns.yaml": HEAD + spec})
    result = run_cli("validate", str(tmp_path))
    assert result.code == 1
    assert where in result.out + result.err, result.out + result.err
    assert message in result.out + result.err


def test_a_hostname_is_either_routed_or_dynamic_and_kept_once(tmp_path: Path) -> None:
    write_repo(tmp_path, {
        "dns.yaml": HEAD + "  hostnames: [blog.example.dev, home.example.dev]\n"
                           "  ipv4: {sources: [{url: 'http://x/'}]}\n",
        "more.yaml": HEAD.replace("home}", "other}") + "  hostnames: [home.example.dev]\n"
                                                       "  ipv6: {sources: [{interface: eth0}]}\n",
        "tunnel.yaml": """
            apiVersion: portside.io/v1alpha1
            kind: Tunnel
            metadata: {name: t}
            spec: {mode: local, tunnelId: 6ff42ae2-765d-4adf-8112-31c55c1551ef}
            ---
            apiVersion: portside.io/v1alpha1
            kind: TunnelRoute
            metadata: {name: blog}
            spec: {tunnel: t, hostname: blog.example.dev, url: "http://10.0.0.1:80"}
            """,
    })
    result = run_cli("validate", str(tmp_path))
    text = result.out + result.err
    assert result.code == 1
    assert "dns.yaml:5:15: spec.hostnames[0]: blog.example.dev is routed through a tunnel" in text
    assert 'home.example.dev is already kept by DynamicDNS "home"' in text


def test_a_valid_document_passes(tmp_path: Path) -> None:
    write_repo(tmp_path, {"dns.yaml": HEAD + """  zone: example.dev
  hostnames: [home.example.dev]
  ttl: 1
  proxied: true
  interval: 2m
  ipv4:
    agreement: majority
    sources:
      - url: https://cloudflare.com/cdn-cgi/trace
        format: trace
      - url: https://api.ipify.org?format=json
        format: json
      - url: https://ifconfig.me/ip
  ipv6:
    sources: [{interface: eth0}]
"""})
    result = run_cli("validate", str(tmp_path))
    assert result.code == 0, result.out + result.err
