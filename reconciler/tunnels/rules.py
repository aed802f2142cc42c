"""Tunnel routes -> cloudflared ingress rules (pure).

cloudflared matches a request against the ingress list top to bottom and takes the first rule
that matches, so the order is part of the meaning: exact hostnames before wildcards (a more
specific wildcard before a broader one), for one hostname the longer path before the shorter
and a path before none, the catch-all last. Sorting on that key makes the list both correct
and deterministic, whatever order the documents were declared in.

originRequest options exist at two levels, as in cloudflared: the Tunnel's are defaults, a
route's override them. The effective options are folded into every rule, so the list compared
(and shown in the plan) is exactly what each hostname gets, and a change of a tunnel default
shows on every rule it touches. Durations are kept in the API's form (seconds, an int when
whole) and written as Go durations only for a cloudflared YAML file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from reconciler.desired.durations import (
    duration_nanoseconds,
    format_go_duration,
    nanoseconds_to_seconds,
    parse_go_duration,
    seconds_to_nanoseconds,
)
from reconciler.desired.models import OriginRequest, Tunnel, TunnelRoute
from reconciler.planning.live import IngressRule

# originRequest keys whose value is a duration (seconds in the API, Go durations in YAML).
DURATION_KEYS = frozenset({"connectTimeout", "tlsTimeout", "tcpKeepAlive", "keepAliveTimeout"})


@dataclass(frozen=True)
class Waiting:
    """A route that cannot become a rule yet: its Service has no LoadBalancer IP."""

    route: str
    hostname: str
    service: str

    def __str__(self) -> str:
        return f"route {self.hostname} waits: Service {self.service} has no IP yet"


def seconds(value: str | int | float) -> int | float:
    """A duration as the API wants it: seconds, an int when whole."""
    return nanoseconds_to_seconds(duration_nanoseconds(value))


def go_duration(value: str | int | float) -> str:
    """A duration as cloudflared's YAML wants it (Go's ``time.Duration`` notation).

    A string is already Go notation (the model checked it) and is kept as the user wrote it;
    seconds are formatted as Go's ``Duration.String()`` does, which ``time.ParseDuration``
    reads back to the same number of nanoseconds (fractions and signs included).
    """
    if isinstance(value, str):
        parse_go_duration(value)  # raises for anything cloudflared could not read
        return value
    return format_go_duration(seconds_to_nanoseconds(value))


def origin_request_api(options: OriginRequest | Mapping[str, object] | None) -> dict[str, object]:
    """originRequest options as plain API JSON: unset options left out, durations in seconds."""
    if options is None:
        return {}
    raw = options.model_dump(exclude_none=True) if isinstance(options, OriginRequest) else dict(options)
    out: dict[str, object] = {}
    for key, value in sorted(raw.items()):
        if value is None:
            continue
        if key in DURATION_KEYS and isinstance(value, str | int | float) and not isinstance(value, bool):
            try:
                out[key] = seconds(value)
            except (ValueError, ArithmeticError):
                # Only live data can hold this (documents are validated): keep it as found, so
                # the plan shows it differing and rewrites it.
                out[key] = value
        else:
            out[key] = value
    return out


def origin_request_yaml(options: Mapping[str, object]) -> dict[str, object]:
    """originRequest options for a cloudflared YAML file: durations as Go durations."""
    out: dict[str, object] = {}
    for key, value in options.items():
        if key in DURATION_KEYS and isinstance(value, str | int | float) and not isinstance(value, bool):
            out[key] = go_duration(value)
        else:
            out[key] = value
    return out


def origin_url(scheme: str, ip: str, port: int) -> str:
    host = f"[{ip}]" if _is_ipv6(ip) else ip
    return f"{scheme}://{host}:{port}"


def pick_ip(ips: tuple[str, ...]) -> str | None:
    """The address a route targets: IPv4 first (what a dual-stack home network reaches surely)."""
    ordered = sorted(ips, key=lambda ip: (_is_ipv6(ip), ips.index(ip)))
    return ordered[0] if ordered else None


def _is_ipv6(ip: str) -> bool:
    # The planner's IPs are canonical addresses, and only IPv6 ones have a colon: parsing each
    # with ipaddress, twice per route, was a tenth of a 10,000-Service plan.
    return ":" in ip


def route_rule(
    route: TunnelRoute, defaults: Mapping[str, object], service_ips: Mapping[str, tuple[str, ...]]
) -> IngressRule | Waiting:
    """One route as one ingress rule, or Waiting when its Service has no IP in this plan."""
    spec = route.spec
    hostname = spec.hostname.lower()
    if spec.service is not None:
        ip = pick_ip(tuple(service_ips.get(spec.service.key, ())))
        if ip is None:
            return Waiting(route.metadata.name, hostname, spec.service.key)
        service = origin_url(spec.service.scheme, ip, spec.service.port)
    else:
        assert spec.url is not None  # the model allows exactly one of service/url
        service = spec.url
    options = {**defaults, **origin_request_api(spec.originRequest)}
    return IngressRule(service=service, hostname=hostname, path=spec.path, origin_request=options)


def rule_order(rule: IngressRule) -> tuple[int, int, str, int, int, str]:
    """Sort key giving first-match-correct order (the catch-all is appended separately)."""
    host = rule.hostname or ""
    wildcard = host.startswith("*")
    path = rule.path or ""
    return (
        1 if wildcard else 0,
        -len(host) if wildcard else 0,  # *.a.example.dev before *.example.dev
        host,
        1 if rule.path is None else 0,  # a path before no path, for one hostname
        -len(path),
        path,
    )


def tunnel_rules(
    tunnel: Tunnel, routes: list[TunnelRoute], service_ips: Mapping[str, tuple[str, ...]]
) -> tuple[tuple[IngressRule, ...], list[Waiting], list[str]]:
    """The tunnel's full ingress list (catch-all last), the waiting routes, and warnings.

    Two routes claiming the same hostname and path cannot both win; the first by name is kept
    and the other is reported (validation should have refused it already).
    """
    defaults = origin_request_api(tunnel.spec.originRequest)
    rules: dict[tuple[str | None, str | None], IngressRule] = {}
    waiting: list[Waiting] = []
    warnings: list[str] = []
    for route in sorted(routes, key=lambda r: r.metadata.name):
        made = route_rule(route, defaults, service_ips)
        if isinstance(made, Waiting):
            waiting.append(made)
            continue
        key = (made.hostname, made.path)
        if key in rules:
            warnings.append(
                f"route {route.metadata.name} ignored: tunnel {tunnel.metadata.name} already routes "
                f"{made.hostname}{made.path or ''} (first route by name wins)"
            )
            continue
        rules[key] = made
    ordered = sorted(rules.values(), key=rule_order)
    catch_all = IngressRule(service=tunnel.spec.catchAll, origin_request=dict(defaults))
    return (*ordered, catch_all), waiting, warnings


def same_routing(live: tuple[IngressRule, ...], wanted: tuple[IngressRule, ...]) -> bool:
    """True when two ingress lists route every request alike: the same rules, in an order that
    differs only between rules no request can match both of (different exact hostnames).

    cloudflared takes the first match, so only the relative order of overlapping rules means
    anything; a list written by hand (or by another tool) in another order than portside's need
    not be rewritten.
    """
    if live == wanted:
        return True
    if len(live) != len(wanted) or sorted(map(repr, live)) != sorted(map(repr, wanted)):
        return False
    position = {repr(rule): i for i, rule in enumerate(wanted)}
    for i, first in enumerate(live):
        for second in live[i + 1:]:
            if position[repr(first)] > position[repr(second)] and _may_overlap(first, second):
                return False
    return True


def _may_overlap(a: IngressRule, b: IngressRule) -> bool:
    """Whether one request could match both rules (paths are regexes: any two may overlap)."""
    if a.hostname is None or b.hostname is None:
        return True
    return _covers(a.hostname, b.hostname) or _covers(b.hostname, a.hostname)


def _covers(pattern: str, hostname: str) -> bool:
    if pattern == hostname:
        return True
    # cloudflared's wildcard: "*.example.dev" matches any name ending in ".example.dev".
    return pattern.startswith("*.") and hostname.removeprefix("*").endswith(pattern[1:])


def fold_defaults(rules: tuple[IngressRule, ...], defaults: Mapping[str, object]) -> tuple[IngressRule, ...]:
    """Rules as cloudflared applies them: the config's top-level originRequest under each rule's."""
    if not defaults:
        return rules
    return tuple(
        IngressRule(service=r.service, hostname=r.hostname, path=r.path,
                    origin_request={**defaults, **r.origin_request})
        for r in rules
    )


def rule_from_json(raw: Mapping[str, object]) -> IngressRule:
    """A rule as the API or a config file holds it (durations normalised to seconds)."""
    hostname = raw.get("hostname")
    path = raw.get("path")
    options = raw.get("originRequest")
    return IngressRule(
        service=str(raw.get("service", "")),
        hostname=str(hostname).lower() if hostname not in (None, "") else None,
        path=str(path) if path not in (None, "") else None,
        origin_request=origin_request_api(options if isinstance(options, Mapping) else None),
    )
