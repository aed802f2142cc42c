"""Routes -> cloudflared ingress rules: resolution, first-match order, originRequest, durations."""

from __future__ import annotations

import random
from typing import Any

import pytest

from reconciler.desired.durations import parse_go_duration
from reconciler.desired.models import OriginRequest, Tunnel, TunnelRoute
from reconciler.planning.live import IngressRule
from reconciler.tunnels.rules import (
    Waiting,
    fold_defaults,
    go_duration,
    origin_request_api,
    origin_request_yaml,
    rule_from_json,
    seconds,
    tunnel_rules,
)


def tunnel(name: str = "home", **spec: Any) -> Tunnel:
    spec.setdefault("mode", "local")
    return Tunnel.model_validate({"apiVersion": "portside.io/v1alpha1", "kind": "Tunnel",
                                  "metadata": {"name": name}, "spec": spec})


def route(name: str, hostname: str, tunnel_name: str = "home", **spec: Any) -> TunnelRoute:
    if "service" not in spec and "url" not in spec:
        spec["url"] = "http://origin.lan:80"
    return TunnelRoute.model_validate({"apiVersion": "portside.io/v1alpha1", "kind": "TunnelRoute",
                                       "metadata": {"name": name},
                                       "spec": {"tunnel": tunnel_name, "hostname": hostname, **spec}})


def test_service_reference_resolves_to_assigned_ip_and_port() -> None:
    rules, waiting, _ = tunnel_rules(
        tunnel(), [route("blog", "blog.example.dev", service={"name": "blog", "port": 8080})],
        {"default/blog": ("192.168.1.100",)},
    )
    assert waiting == []
    assert rules[0] == IngressRule(service="http://192.168.1.100:8080", hostname="blog.example.dev")
    assert rules[-1] == IngressRule(service="http_status:404")


def test_scheme_namespace_and_ipv6_brackets() -> None:
    svc = {"namespace": "media", "name": "jelly", "port": 8443, "scheme": "https"}
    rules, _, _ = tunnel_rules(tunnel(), [route("j", "tv.example.dev", service=svc)],
                               {"media/jelly": ("fd00::10",)})
    assert rules[0].service == "https://[fd00::10]:8443"


def test_dual_stack_service_prefers_ipv4() -> None:
    rules, _, _ = tunnel_rules(tunnel(), [route("j", "tv.example.dev", service={"name": "s", "port": 80})],
                               {"default/s": ("fd00::10", "10.0.0.5")})
    assert rules[0].service == "http://10.0.0.5:80"


def test_service_without_ip_waits_and_is_not_guessed() -> None:
    rules, waiting, _ = tunnel_rules(
        tunnel(), [route("blog", "blog.example.dev", service={"name": "blog", "port": 80}),
                   route("wiki", "wiki.example.dev")], {})
    assert [r.hostname for r in rules] == ["wiki.example.dev", None]
    assert waiting == [Waiting("blog", "blog.example.dev", "default/blog")]
    assert str(waiting[0]) == "route blog.example.dev waits: Service default/blog has no IP yet"


def test_url_used_as_given() -> None:
    rules, _, _ = tunnel_rules(tunnel(), [route("r", "ssh.example.dev", url="ssh://10.0.0.2:22")], {})
    assert rules[0].service == "ssh://10.0.0.2:22"


# First-match order: (declared hostname, path) in shuffled order -> the only correct order.
EXPECTED_ORDER = [
    ("api.example.dev", "/v1/admin"),
    ("api.example.dev", "/v1"),
    ("api.example.dev", None),
    ("blog.example.dev", None),
    ("x.y.example.dev", None),
    ("*.a.example.dev", "/z"),
    ("*.a.example.dev", None),
    ("*.example.dev", "/static"),
    ("*.example.dev", None),
]


@pytest.mark.parametrize("seed", range(5))
def test_rule_order_is_first_match_correct_whatever_the_declaration_order(seed: int) -> None:
    declared = list(EXPECTED_ORDER)
    random.Random(seed).shuffle(declared)
    routes = [route(f"r{i}", host, path=path) if path else route(f"r{i}", host)
              for i, (host, path) in enumerate(declared)]
    rules, _, _ = tunnel_rules(tunnel(), routes, {})
    assert [(r.hostname, r.path) for r in rules[:-1]] == EXPECTED_ORDER
    assert (rules[-1].hostname, rules[-1].path) == (None, None)


def test_tunnel_catch_all_is_last() -> None:
    rules, _, _ = tunnel_rules(tunnel(catchAll="http://10.0.0.9:80"), [route("a", "a.example.dev")], {})
    assert rules[-1] == IngressRule(service="http://10.0.0.9:80")


def test_duplicate_hostname_and_path_keeps_first_by_name_and_warns() -> None:
    rules, _, warnings = tunnel_rules(
        tunnel(), [route("b", "a.example.dev", url="http://b:1"), route("a", "a.example.dev", url="http://a:1")],
        {})
    assert [r.service for r in rules] == ["http://a:1", "http_status:404"]
    assert warnings == [
        "route b ignored: tunnel home already routes a.example.dev (first route by name wins)"]


def test_hostname_is_lowercased() -> None:
    rules, _, _ = tunnel_rules(tunnel(), [route("a", "Blog.Example.DEV")], {})
    assert rules[0].hostname == "blog.example.dev"


def test_origin_request_tunnel_defaults_under_route_overrides() -> None:
    t = tunnel(originRequest={"connectTimeout": "30s", "noTLSVerify": True, "httpHostHeader": "a"})
    r = route("r", "a.example.dev", originRequest={
        "connectTimeout": "1m30s", "originServerName": "origin.lan", "matchSNItoHost": True, "tlsTimeout": 10,
        "http2Origin": True, "caPool": "/ca.pem", "disableChunkedEncoding": True})
    rules, _, _ = tunnel_rules(t, [r], {})
    assert rules[0].origin_request == {
        "caPool": "/ca.pem", "connectTimeout": 90, "disableChunkedEncoding": True, "http2Origin": True,
        "httpHostHeader": "a", "matchSNItoHost": True, "noTLSVerify": True,
        "originServerName": "origin.lan", "tlsTimeout": 10,
    }
    # The catch-all gets the tunnel's defaults too, as cloudflared applies them.
    assert rules[-1].origin_request == {"connectTimeout": 30, "noTLSVerify": True, "httpHostHeader": "a"}


@pytest.mark.parametrize(("value", "api", "go"), [
    ("30s", 30, "30s"), (30, 30, "30s"), ("1m30s", 90, "1m30s"), (90, 90, "1m30s"),
    ("1h", 3600, "1h"), (3600, 3600, "1h0m0s"), ("1500ms", 1.5, "1500ms"), (0, 0, "0s"),
])
def test_duration_forms(value: str | int, api: float, go: str) -> None:
    assert seconds(value) == api
    assert type(seconds(value)) is type(api)
    assert go_duration(value) == go
    # Both forms mean the same number of seconds.
    assert seconds(go_duration(value)) == api


def test_cloudflared_file_gets_go_durations_that_parse_back() -> None:
    """What the local tunnel's config file says is what cloudflared computes: fractions and all."""
    api = origin_request_api(OriginRequest(connectTimeout="1500ms", tlsTimeout=90, tcpKeepAlive="0.25s"))
    assert api == {"connectTimeout": 1.5, "tlsTimeout": 90, "tcpKeepAlive": 0.25}
    written = origin_request_yaml(api)
    assert written == {"connectTimeout": "1.5s", "tlsTimeout": "1m30s", "tcpKeepAlive": "250ms"}
    assert {k: parse_go_duration(str(v)) for k, v in written.items()} == {
        "connectTimeout": 1_500_000_000, "tlsTimeout": 90_000_000_000, "tcpKeepAlive": 250_000_000}


def test_origin_request_api_from_file_form() -> None:
    assert origin_request_api({"connectTimeout": "2m", "keepAliveConnections": 4, "noTLSVerify": False}) == {
        "connectTimeout": 120, "keepAliveConnections": 4, "noTLSVerify": False}


def test_rule_from_json_and_fold_defaults() -> None:
    live = (rule_from_json({"hostname": "A.example.dev", "service": "http://x:1",
                            "originRequest": {"tlsTimeout": "10s"}}),
            rule_from_json({"service": "http_status:404", "hostname": ""}))
    assert live[0] == IngressRule("http://x:1", "a.example.dev", None, {"tlsTimeout": 10})
    assert live[1] == IngressRule("http_status:404")
    folded = fold_defaults(live, {"tlsTimeout": 5, "noTLSVerify": True})
    assert folded[0].origin_request == {"tlsTimeout": 10, "noTLSVerify": True}
    assert folded[1].origin_request == {"tlsTimeout": 5, "noTLSVerify": True}
