"""The tunnel planner: configurations, tunnel creation and the DNS ownership matrix (pure)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from reconciler.common.errors import StateError
from reconciler.desired.models import ServiceExposure, Tunnel, TunnelRoute
from reconciler.desired.state import DesiredState
from reconciler.planning.live import DNSRecord, IngressRule, LiveTunnel, LiveZone
from reconciler.planning.plan import Change
from reconciler.tunnels import tunnels_from_json, tunnels_to_json, zones_from_json, zones_to_json
from reconciler.tunnels.dns import PENDING_TUNNEL_ID, owner_of
from reconciler.tunnels.plan import OWNER_MARKER, TunnelPlan, plan_tunnels

ACCOUNT = "a" * 32
TID = "6ff42ae2-765d-4adf-8112-31c55c1551ef"
OTHER_TID = "11111111-2222-3333-4444-555555555555"
OWNER = "home-cluster"
OURS = OWNER_MARKER.format(owner=OWNER)
CNAME = f"{TID}.cfargotunnel.com"


def tunnel(name: str = "home", **spec: Any) -> Tunnel:
    spec.setdefault("mode", "remote")
    if spec["mode"] == "remote":
        spec.setdefault("accountId", ACCOUNT)
        spec.setdefault("tunnelId", TID)
    return Tunnel.model_validate({"apiVersion": "portside.io/v1alpha1", "kind": "Tunnel",
                                  "metadata": {"name": name}, "spec": spec})


def route(name: str, hostname: str, tunnel_name: str = "home", **spec: Any) -> TunnelRoute:
    if "service" not in spec and "url" not in spec:
        spec["url"] = f"http://{name}.lan:80"
    return TunnelRoute.model_validate({"apiVersion": "portside.io/v1alpha1", "kind": "TunnelRoute",
                                       "metadata": {"name": name},
                                       "spec": {"tunnel": tunnel_name, "hostname": hostname, **spec}})


def desired(tunnels: list[Tunnel], routes: list[TunnelRoute]) -> DesiredState:
    return DesiredState(tunnels=tuple(tunnels), routes=tuple(routes))


def live_tunnel(rules: list[IngressRule] | None, name: str = "home",
                tunnel_id: str | None = TID) -> LiveTunnel:
    return LiveTunnel(name=name, tunnel_id=tunnel_id, ingress=None if rules is None else tuple(rules))


def zone(name: str = "example.dev", *records: DNSRecord, error: str | None = None) -> dict[str, LiveZone]:
    return {name: LiveZone(name=name, zone_id=f"z-{name}", records=records, error=error)}


def record(name: str, content: str = CNAME, comment: str = OURS, type: str = "CNAME", proxied: bool = True,
           rid: str = "r1", zone_name: str = "example.dev") -> DNSRecord:
    return DNSRecord(zone=zone_name, name=name, type=type, content=content, proxied=proxied,
                     comment=comment, record_id=rid)


def by_kind(plan: TunnelPlan, kind: str) -> list[Change]:
    return [c for c in plan.changes if c.target.kind == kind]


def actions(plan: TunnelPlan, kind: str) -> list[tuple[str, str]]:
    return [(c.target.id, c.action) for c in by_kind(plan, kind)]


A_RULE = IngressRule(service="http://a.lan:80", hostname="a.example.dev")
CATCH_ALL = IngressRule(service="http_status:404")


# ------------------------------------------------------------------ remote configurations


def test_remote_converged_is_no_op() -> None:
    plan = plan_tunnels(desired([tunnel()], [route("a", "a.example.dev")]),
                        {"home": live_tunnel([A_RULE, CATCH_ALL])},
                        zone("example.dev", record("a.example.dev")), {}, OWNER)
    assert [c.action for c in plan.changes] == ["no-op", "no-op"]
    assert plan.warnings == []


def test_remote_live_rule_not_in_git_shows_as_removed() -> None:
    stray = IngressRule(service="http://10.0.0.3:80", hostname="old.example.dev")
    plan = plan_tunnels(desired([tunnel()], [route("a", "a.example.dev")]),
                        {"home": live_tunnel([stray, A_RULE, CATCH_ALL])}, {}, {}, OWNER)
    [change] = by_kind(plan, "TunnelConfiguration")
    assert change.action == "update"
    assert change.before == [stray.as_dict(), A_RULE.as_dict(), CATCH_ALL.as_dict()]
    assert change.after == [A_RULE.as_dict(), CATCH_ALL.as_dict()]
    assert "remove (live, not in Git) old.example.dev" in change.reason
    assert change.detail == {"mode": "remote", "account_id": ACCOUNT, "tunnel_id": TID, "tunnel_name": None}


def test_remote_wrong_order_is_an_update() -> None:
    wildcard = IngressRule(service="http://b.lan:80", hostname="*.example.dev")
    plan = plan_tunnels(desired([tunnel()], [route("a", "a.example.dev"), route("b", "*.example.dev",
                                                                                url="http://b.lan:80")]),
                        {"home": live_tunnel([wildcard, A_RULE, CATCH_ALL])}, {}, {}, OWNER)
    [change] = by_kind(plan, "TunnelConfiguration")
    assert (change.action, change.reason) == ("update", "reorder rules for first-match order")


def test_remote_order_of_rules_no_request_can_both_match_is_left_alone() -> None:
    b = IngressRule(service="http://b.lan:80", hostname="b.example.dev")
    plan = plan_tunnels(desired([tunnel()], [route("a", "a.example.dev"), route("b", "b.example.dev",
                                                                                url="http://b.lan:80")]),
                        {"home": live_tunnel([b, A_RULE, CATCH_ALL])}, {}, {}, OWNER)
    [change] = by_kind(plan, "TunnelConfiguration")
    assert change.action == "no-op"


def test_remote_top_level_origin_request_is_folded_before_comparing() -> None:
    t = tunnel(originRequest={"connectTimeout": "30s"})
    live = LiveTunnel("home", TID, (IngressRule("http://a.lan:80", "a.example.dev"), CATCH_ALL),
                      origin_request={"connectTimeout": 30})
    plan = plan_tunnels(desired([t], [route("a", "a.example.dev")]), {"home": live}, {}, {}, OWNER)
    assert actions(plan, "TunnelConfiguration") == [("home", "no-op")]


def test_service_ip_change_changes_the_route_in_the_same_plan() -> None:
    routes = [route("blog", "blog.example.dev", service={"name": "blog", "port": 80})]
    live = live_tunnel([IngressRule("http://192.168.1.100:80", "blog.example.dev"), CATCH_ALL])
    ips = {"default/blog": ("10.9.0.1",)}
    plan = plan_tunnels(desired([tunnel()], routes), {"home": live}, {}, ips, OWNER)
    [change] = by_kind(plan, "TunnelConfiguration")
    assert change.action == "update"
    assert change.after[0] == {"hostname": "blog.example.dev", "service": "http://10.9.0.1:80"}
    assert change.reason == "change blog.example.dev"


def test_remote_without_configuration_is_created() -> None:
    plan = plan_tunnels(desired([tunnel()], [route("a", "a.example.dev")]),
                        {"home": live_tunnel(None)}, {}, {}, OWNER)
    assert actions(plan, "TunnelConfiguration") == [("home", "create")]


def test_remote_tunnel_created_when_asked_and_dns_waits_for_its_id() -> None:
    t = tunnel(tunnelId=None, tunnelName="home-tunnel", create=True)
    plan = plan_tunnels(desired([t], [route("a", "a.example.dev")]),
                        {"home": live_tunnel(None, tunnel_id=None)}, zone(), {}, OWNER)
    assert [(c.target.kind, c.action) for c in plan.changes] == [
        ("Tunnel", "create"), ("TunnelConfiguration", "create"), ("DNSRecord", "create")]
    assert plan.changes[0].after == {"name": "home-tunnel", "accountId": ACCOUNT}
    dns = plan.changes[2]
    assert dns.after["content"] == f"{PENDING_TUNNEL_ID}.cfargotunnel.com"
    assert dns.detail["tunnel"] == "home" and dns.detail["tunnel_id"] is None


def test_remote_tunnel_missing_without_create_is_a_conflict_and_dns_untouched() -> None:
    plan = plan_tunnels(desired([tunnel(tunnelId=None, tunnelName="gone")], [route("a", "a.example.dev")]),
                        {"home": live_tunnel(None, tunnel_id=None)},
                        zone("example.dev", record("a.example.dev")), {}, OWNER)
    assert actions(plan, "Tunnel") == [("home", "conflict")]
    assert "set create: true" in plan.changes[0].reason
    assert by_kind(plan, "DNSRecord") == []  # protected: no delete of the record


def test_unreadable_tunnel_is_skipped_with_warning_and_its_records_kept() -> None:
    plan = plan_tunnels(desired([tunnel()], [route("a", "a.example.dev")]),
                        {"home": LiveTunnel("home", None, None, error="HTTP 503 from Cloudflare")},
                        zone("example.dev", record("a.example.dev")), {}, OWNER)
    assert plan.changes == []
    assert plan.warnings == ["tunnel home skipped: HTTP 503 from Cloudflare"]


def test_remote_tunnel_not_read_at_all_warns() -> None:
    plan = plan_tunnels(desired([tunnel()], [route("a", "a.example.dev")]), {}, {}, {}, OWNER)
    assert plan.changes == []
    assert "CLOUDFLARE_API_TOKEN" in plan.warnings[0]


# ------------------------------------------------------------------ local tunnels


def test_local_tunnel_config_artifact_and_create() -> None:
    t = tunnel(mode="local", tunnelId=TID, credentialsFile="/etc/cloudflared/home.json",
               originRequest={"connectTimeout": "30s"})
    routes = [route("blog", "blog.example.dev", service={"name": "blog", "port": 8080},
                    originRequest={"noTLSVerify": True, "connectTimeout": 10})]
    plan = plan_tunnels(desired([t], routes), {"home": live_tunnel(None, tunnel_id=None)}, {},
                        {"default/blog": ("192.168.1.100",)}, OWNER)
    assert actions(plan, "TunnelConfiguration") == [("home", "create")]
    assert plan.changes[0].detail == {"mode": "local", "path": "cloudflared/home.yml"}
    assert plan.artifacts["cloudflared/home.yml"] == {
        "tunnel": TID,
        "credentials-file": "/etc/cloudflared/home.json",
        "originRequest": {"connectTimeout": "30s"},
        "ingress": [
            {"hostname": "blog.example.dev", "service": "http://192.168.1.100:8080",
             "originRequest": {"connectTimeout": "10s", "noTLSVerify": True}},
            {"service": "http_status:404"},
        ],
    }
    assert plan.warnings == ["DNS for local tunnel home skipped: Cloudflare DNS was not read "
                             "(set CLOUDFLARE_API_TOKEN to manage its records)"]


def test_local_tunnel_equal_file_is_no_op_and_tunnel_ref_change_is_update() -> None:
    t = tunnel(mode="local", tunnelName="home-tunnel")
    live = LiveTunnel("home", "home-tunnel", (A_RULE, CATCH_ALL))
    plan = plan_tunnels(desired([t], [route("a", "a.example.dev")]), {"home": live}, {}, {}, OWNER)
    assert actions(plan, "TunnelConfiguration") == [("home", "no-op")]
    moved = LiveTunnel("home", "old-tunnel", (A_RULE, CATCH_ALL))
    plan = plan_tunnels(desired([t], [route("a", "a.example.dev")]), {"home": moved}, {}, {}, OWNER)
    [change] = plan.changes
    assert change.action == "update" and "tunnel old-tunnel -> home-tunnel" in change.reason


def test_local_tunnel_unreadable_file_is_rewritten() -> None:
    t = tunnel(mode="local")
    live = LiveTunnel("home", None, None, error="home.yml: not valid YAML")
    plan = plan_tunnels(desired([t], [route("a", "a.example.dev")]), {"home": live}, {}, {}, OWNER)
    assert [(c.action, c.reason) for c in plan.changes] == [("update", "rewrite cloudflared/home.yml: "
                                                                        "home.yml: not valid YAML")]


def test_local_tunnel_dns_planned_when_zones_were_read() -> None:
    t = tunnel(mode="local", tunnelId=TID)
    plan = plan_tunnels(desired([t], [route("a", "a.example.dev")]), {}, zone(), {}, OWNER)
    assert actions(plan, "DNSRecord") == [("a.example.dev", "create")]


# ------------------------------------------------------------------ DNS matrix


def dns_plan(routes: list[TunnelRoute], zones: dict[str, LiveZone], t: Tunnel | None = None,
             ips: dict[str, tuple[str, ...]] | None = None) -> TunnelPlan:
    t = t or tunnel()
    rules = [IngressRule(f"http://{r.metadata.name}.lan:80", r.spec.hostname) for r in routes]
    return plan_tunnels(desired([t], routes), {"home": live_tunnel([*rules, CATCH_ALL])}, zones, ips or {},
                        OWNER)


def test_dns_create_is_proxied_cname_with_owner_marker() -> None:
    plan = dns_plan([route("a", "a.example.dev")], zone())
    [change] = by_kind(plan, "DNSRecord")
    assert change.action == "create"
    assert change.after == {"type": "CNAME", "content": CNAME, "proxied": True,
                            "comment": "managed by portside, owner=home-cluster"}
    assert change.detail == {"zone": "example.dev", "zone_id": "z-example.dev", "record_id": None,
                             "tunnel": "home", "tunnel_id": TID}


def test_dns_longest_zone_wins() -> None:
    zones = {**zone("example.dev"), **zone("lab.example.dev")}
    plan = dns_plan([route("a", "a.lab.example.dev"), route("b", "b.example.dev")], zones)
    assert {c.target.id: c.detail["zone"] for c in by_kind(plan, "DNSRecord")} == {
        "a.lab.example.dev": "lab.example.dev", "b.example.dev": "example.dev"}


def test_dns_zone_restriction_and_no_zone_warning() -> None:
    zones = {**zone("example.dev"), **zone("lab.example.dev")}
    t = tunnel(dns={"zones": ["example.dev"]})
    plan = dns_plan([route("a", "a.lab.example.dev"), route("b", "b.other.org")], zones, t)
    assert {c.target.id: c.detail["zone"] for c in by_kind(plan, "DNSRecord")} == {
        "a.lab.example.dev": "example.dev"}
    assert plan.warnings == ["tunnel home: no Cloudflare zone the token can see holds b.other.org; "
                             "no DNS record planned"]


def test_dns_ours_differs_is_update() -> None:
    plan = dns_plan([route("a", "a.example.dev")],
                    zone("example.dev", record("a.example.dev", content=f"{OTHER_TID}.cfargotunnel.com",
                                               proxied=False)))
    [change] = by_kind(plan, "DNSRecord")
    assert (change.action, change.detail["record_id"]) == ("update", "r1")
    assert change.reason == "now points to tunnel home, proxied through Cloudflare"


@pytest.mark.parametrize("comment", ["", "hand-made", "managed by portside, owner=other-cluster"])
def test_dns_foreign_record_is_a_conflict(comment: str) -> None:
    foreign = record("a.example.dev", type="A", content="203.0.113.7", comment=comment)
    plan = dns_plan([route("a", "a.example.dev")], zone("example.dev", foreign))
    [change] = by_kind(plan, "DNSRecord")
    assert change.action == "conflict"
    assert change.before == {"type": "A", "content": "203.0.113.7", "proxied": True, "comment": comment}
    assert "set adopt: true on route a" in change.reason


def test_dns_foreign_record_adopted_when_route_says_so() -> None:
    foreign = record("a.example.dev", type="A", content="203.0.113.7", comment="hand-made")
    plan = dns_plan([route("a", "a.example.dev", adopt=True)], zone("example.dev", foreign))
    [change] = by_kind(plan, "DNSRecord")
    assert change.action == "update"
    assert change.after == {"type": "CNAME", "content": CNAME, "proxied": True, "comment": OURS}


def test_dns_adopt_refuses_several_records() -> None:
    recs = (record("a.example.dev", type="A", content="203.0.113.7", comment="", rid="1"),
            record("a.example.dev", type="AAAA", content="2001:db8::1", comment="", rid="2"))
    plan = dns_plan([route("a", "a.example.dev", adopt=True)], zone("example.dev", *recs))
    [change] = by_kind(plan, "DNSRecord")
    assert change.action == "conflict" and "adopt needs exactly one record" in change.reason


def test_dns_duplicates_of_ours_are_deleted() -> None:
    recs = (record("a.example.dev", rid="1"), record("a.example.dev", rid="2"))
    plan = dns_plan([route("a", "a.example.dev")], zone("example.dev", *recs))
    assert [(c.action, c.detail["record_id"]) for c in by_kind(plan, "DNSRecord")] == [
        ("no-op", "1"), ("delete", "2")]


def test_dns_removed_route_deletes_only_our_record() -> None:
    recs = (record("gone.example.dev", rid="1"),
            record("theirs.example.dev", comment="managed by portside, owner=home-cluster-2", rid="2"),
            record("manual.example.dev", comment="", rid="3"))
    plan = dns_plan([route("a", "a.example.dev")], zone("example.dev", *recs))
    assert actions(plan, "DNSRecord") == [("a.example.dev", "create"), ("gone.example.dev", "delete")]


def test_dns_management_off_touches_nothing() -> None:
    plan = dns_plan([route("a", "a.example.dev")],
                    zone("example.dev", record("a.example.dev", content="x.cfargotunnel.com")),
                    tunnel(dns={"manage": False}))
    assert by_kind(plan, "DNSRecord") == []


def test_dns_records_of_a_tunnel_with_management_off_are_never_deleted() -> None:
    managed = tunnel()
    unmanaged = tunnel("lab", tunnelId=OTHER_TID, dns={"manage": False})
    recs = (record("old-lab.example.dev", content=f"{OTHER_TID}.cfargotunnel.com", rid="1"),
            record("old-home.example.dev", rid="2"))
    plan = plan_tunnels(desired([managed, unmanaged], []),
                        {"home": live_tunnel([CATCH_ALL]), "lab": live_tunnel([CATCH_ALL], "lab", OTHER_TID)},
                        zone("example.dev", *recs), {}, OWNER)
    assert actions(plan, "DNSRecord") == [("old-home.example.dev", "delete")]


def test_dns_records_of_a_removed_tunnel_are_deleted() -> None:
    plan = plan_tunnels(desired([], []), {}, zone("example.dev", record("gone.example.dev")), {}, OWNER)
    assert actions(plan, "DNSRecord") == [("gone.example.dev", "delete")]


def test_dns_waiting_route_keeps_its_record() -> None:
    routes = [route("blog", "blog.example.dev", service={"name": "blog", "port": 80})]
    plan = plan_tunnels(desired([tunnel()], routes), {"home": live_tunnel([CATCH_ALL])},
                        zone("example.dev", record("blog.example.dev")), {}, OWNER)
    assert by_kind(plan, "DNSRecord") == []
    [waiting] = by_kind(plan, "TunnelRoute")
    assert waiting.action == "conflict"
    assert waiting.reason.startswith("route blog (blog.example.dev) waits for Service default/blog to get an IP")


@pytest.mark.parametrize(("exposed", "live", "why"), [
    (False, False, "no ServiceExposure in the repo exposes it and it was not found live"),
    (False, True, "it has no LoadBalancer IP yet"),
    (True, False, "its ServiceExposure gets no IP in this plan"),
])
def test_a_route_waiting_for_its_service_is_shown_not_dropped(exposed: bool, live: bool, why: str) -> None:
    """The route is left out of the ingress rules, and the plan says so on the route itself."""
    routes = [route("blog", "blog.example.dev", service={"name": "blog", "port": 80}),
              route("wiki", "wiki.example.dev")]
    state = desired([tunnel()], routes)
    if exposed:
        exposure = ServiceExposure.model_validate({
            "apiVersion": "portside.io/v1alpha1", "kind": "ServiceExposure", "metadata": {"name": "blog"},
            "spec": {"service": {"name": "blog"}}})
        state = replace(state, exposures=(exposure,))
    plan = plan_tunnels(state, {"home": live_tunnel([CATCH_ALL])}, {}, {}, OWNER,
                        live_services={"default/blog"} if live else set())
    [config] = by_kind(plan, "TunnelConfiguration")
    assert [r["hostname"] for r in config.after if "hostname" in r] == ["wiki.example.dev"]
    [waiting] = by_kind(plan, "TunnelRoute")
    assert waiting.action == "conflict"
    assert waiting.after == {"hostname": "blog.example.dev", "service": "default/blog", "tunnel": "home"}
    assert waiting.reason == (f"route blog (blog.example.dev) waits for Service default/blog to get an IP: {why}; "
                              "it is left out of tunnel home's ingress rules until then")


def test_dns_unreadable_zone_is_skipped_with_warning() -> None:
    plan = dns_plan([route("a", "a.example.dev")], zone(error="Cloudflare token lacks Zone:DNS:Read"))
    assert by_kind(plan, "DNSRecord") == []
    assert plan.warnings == ["zone example.dev skipped: Cloudflare token lacks Zone:DNS:Read"]


def test_dns_wildcard_hostname() -> None:
    plan = dns_plan([route("w", "*.apps.example.dev")], zone())
    assert actions(plan, "DNSRecord") == [("*.apps.example.dev", "create")]


def test_owner_of() -> None:
    assert owner_of("managed by portside, owner=home-cluster") == "home-cluster"
    assert owner_of("note; managed by portside, owner=home-cluster; x") == "home-cluster"
    assert owner_of("managed by portside, owner=home-cluster-2") == "home-cluster-2"
    assert owner_of("hand-made") is None and owner_of(None) is None


def test_applied_state_read_back_plans_nothing() -> None:
    """Idempotency: the records and rules a plan asks for, once live, plan only no-ops."""
    routes = [route("a", "a.example.dev"), route("b", "b.example.dev", path="/api")]
    first = plan_tunnels(desired([tunnel()], routes), {"home": live_tunnel(None)}, zone(), {}, OWNER)
    cfg = by_kind(first, "TunnelConfiguration")[0].after
    live = {"home": live_tunnel([IngressRule(r["service"], r.get("hostname"), r.get("path")) for r in cfg])}
    recs = tuple(record(c.target.id, rid=str(i), comment=c.after["comment"])
                 for i, c in enumerate(by_kind(first, "DNSRecord")))
    again = plan_tunnels(desired([tunnel()], routes), live, zone("example.dev", *recs), {}, OWNER)
    assert {c.action for c in again.changes} == {"no-op"}


# ------------------------------------------------------------------ snapshot


def test_snapshot_round_trip() -> None:
    tunnels = {"home": LiveTunnel("home", TID, (IngressRule("http://x:1", "a.example.dev", "/p",
                                                            {"connectTimeout": 30}), CATCH_ALL),
                                  origin_request={"noTLSVerify": True}),
               "new": LiveTunnel("new", None, None, error="boom")}
    zones = {**zone("example.dev", record("a.example.dev"), record("b.example.dev", comment="", rid="2")),
             **zone("other.org", error="denied")}
    import json
    assert tunnels_from_json(json.loads(json.dumps(tunnels_to_json(tunnels)))) == tunnels
    assert zones_from_json(json.loads(json.dumps(zones_to_json(zones)))) == zones
    with pytest.raises(StateError, match=r"snapshot tunnels.home: expected an object"):
        tunnels_from_json({"home": []})
