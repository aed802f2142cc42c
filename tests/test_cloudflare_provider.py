"""The Cloudflare provider through the official SDK against the fake v4 API, asserted from its request log."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from reconciler.desired.models import Tunnel, TunnelRoute
from reconciler.desired.state import DesiredState
from reconciler.planning.plan import Plan, ordered
from reconciler.providers.cloudflare import ApplyOutcome, CloudflareProvider
from reconciler.tunnels.plan import plan_tunnels
from tests.fakes.cloudflare_api import FakeCloudflare

TOKEN = "cf-token-5ecret-must-never-leak-0123456789"
OWNER = "home-cluster"
ZONES = ("example.dev", "example.org", "lab.example.dev")


def tunnel(name: str = "home", **spec: Any) -> Tunnel:
    return Tunnel.model_validate({"apiVersion": "portside.io/v1alpha1", "kind": "Tunnel",
                                  "metadata": {"name": name}, "spec": {"mode": "remote", **spec}})


def route(name: str, hostname: str, **spec: Any) -> TunnelRoute:
    spec.setdefault("tunnel", "home")
    if "service" not in spec and "url" not in spec:
        spec["url"] = f"http://{name}.lan:80"
    return TunnelRoute.model_validate({"apiVersion": "portside.io/v1alpha1", "kind": "TunnelRoute",
                                       "metadata": {"name": name}, "spec": {"hostname": hostname, **spec}})


@pytest.fixture
def cf() -> Iterator[FakeCloudflare]:
    with FakeCloudflare(token=TOKEN) as fake:
        yield fake


@pytest.fixture
def zones(cf: FakeCloudflare) -> dict[str, str]:
    return {name: cf.add_zone(name) for name in ZONES}


@pytest.fixture
def tid(cf: FakeCloudflare) -> str:
    return str(cf.add_tunnel(None, "home-tunnel")["id"])


def provider(cf: FakeCloudflare, budget: float = 5.0) -> CloudflareProvider:
    return CloudflareProvider(TOKEN, base_url=cf.base_url, retry_budget_s=budget)


def reconcile(cf: FakeCloudflare, ds: DesiredState, *, budget: float = 5.0,
              ips: dict[str, tuple[str, ...]] | None = None) -> tuple[Plan, ApplyOutcome]:
    """One run: read, plan, apply (what ``portside apply`` does for the Cloudflare part)."""
    p = provider(cf, budget)
    live_tunnels, live_zones = p.read(ds)
    tp = plan_tunnels(ds, live_tunnels, live_zones, ips or {}, OWNER)
    plan = Plan(changes=ordered(tp.changes), artifacts=tp.artifacts, warnings=tuple(tp.warnings))
    outcome = p.apply(plan.changes)
    p.close()
    return plan, outcome


def home(cf: FakeCloudflare, tid: str, **spec: Any) -> Tunnel:
    return tunnel(accountId=cf.account_id, tunnelId=tid, **spec)


A_ROUTE = [route("a", "a.example.dev")]


def many_routes(count: int) -> list[TunnelRoute]:
    return [route(f"r{i:03d}", f"h{i:03d}.{ZONES[i % 3]}", url=f"http://10.0.{i // 250}.{i % 250 + 1}:80")
            for i in range(count)]


def ds(t: Tunnel, routes: list[TunnelRoute]) -> DesiredState:
    return DesiredState(tunnels=(t,), routes=tuple(routes))


def puts(cf: FakeCloudflare) -> int:
    return len(cf.calls("PUT", r"/configurations$"))


def batches(cf: FakeCloudflare) -> int:
    return len(cf.calls("POST", r"/dns_records/batch$"))


def ours(cf: FakeCloudflare, zone_id: str) -> list[dict[str, Any]]:
    return [r for r in cf.records(zone_id) if (r["comment"] or "").startswith("managed by portside")]


# ------------------------------------------------------------------ the done-means runs


def test_500_routes_then_one_change_then_converged(cf: FakeCloudflare, zones: dict[str, str],
                                                   tid: str) -> None:
    desired = ds(home(cf, tid), many_routes(500))
    plan, outcome = reconcile(cf, desired)
    assert outcome.errors == []
    assert plan.summary() == {"create": 501, "update": 0, "delete": 0, "conflict": 0}
    assert (puts(cf), batches(cf), len(cf.writes())) == (1, 3, 4)
    config = cf.tunnel_config(None, tid)["config"]
    assert len(config["ingress"]) == 501 and config["ingress"][-1] == {"service": "http_status:404"}
    records = [r for z in zones.values() for r in cf.records(z)]
    assert len(records) == 500
    assert {(r["type"], r["content"], r["proxied"]) for r in records} == {
        ("CNAME", f"{tid}.cfargotunnel.com", True)}
    assert {r["comment"] for r in records} == {"managed by portside, owner=home-cluster"}
    # Longest zone wins: h*.lab.example.dev live in lab.example.dev, not in example.dev.
    assert {r["name"].partition(".")[2] for r in cf.records(zones["lab.example.dev"])} == {"lab.example.dev"}
    assert {r["name"].partition(".")[2] for r in cf.records(zones["example.dev"])} == {"example.dev"}

    # One route changes: exactly one configuration PUT and one DNS batch.
    cf.clear_log()
    routes = many_routes(500)
    routes[7] = route("r007", "renamed.example.org", url="http://10.0.0.8:80")
    plan, outcome = reconcile(cf, ds(desired.tunnels[0], routes))
    assert outcome.errors == [] and outcome.applied == 3
    assert plan.summary() == {"create": 1, "update": 1, "delete": 1, "conflict": 0}
    assert (puts(cf), batches(cf), len(cf.writes())) == (1, 1, 2)
    [batch] = cf.calls("POST", r"/dns_records/batch$")
    assert len(batch.body["deletes"]) == 1
    assert [p["name"] for p in batch.body["posts"]] == ["renamed.example.org"]

    # Converged: zero write calls.
    cf.clear_log()
    plan, outcome = reconcile(cf, ds(desired.tunnels[0], routes))
    assert not plan.has_changes and outcome.applied == 0
    assert cf.writes() == []


def test_foreign_record_is_a_conflict_and_left_untouched(cf: FakeCloudflare, zones: dict[str, str],
                                                          tid: str) -> None:
    foreign = cf.add_record(zones["example.dev"], "blog.example.dev", "A", "203.0.113.7", comment="my VPS")
    plan, outcome = reconcile(cf, ds(home(cf, tid),
                                     [route("blog", "blog.example.dev"), route("wiki", "wiki.example.dev")]))
    assert outcome.errors == []
    conflicts = [c for c in plan.changes if c.action == "conflict"]
    assert [c.target.id for c in conflicts] == ["blog.example.dev"]
    assert conflicts[0].before == {"type": "A", "content": "203.0.113.7", "proxied": False,
                                   "comment": "my VPS"}
    assert foreign in cf.records(zones["example.dev"])
    [batch] = cf.calls("POST", r"/dns_records/batch$")
    assert [p["name"] for p in batch.body["posts"]] == ["wiki.example.dev"]
    assert "patches" not in batch.body and "deletes" not in batch.body
    # Still a conflict next run, and still no write to it.
    cf.clear_log()
    plan, _ = reconcile(cf, ds(home(cf, tid),
                               [route("blog", "blog.example.dev"), route("wiki", "wiki.example.dev")]))
    assert [c.action for c in plan.visible] == ["conflict"] and cf.writes() == []


def test_adopt_takes_over_a_foreign_record(cf: FakeCloudflare, zones: dict[str, str], tid: str) -> None:
    foreign = cf.add_record(zones["example.dev"], "blog.example.dev", "A", "203.0.113.7")
    _, outcome = reconcile(cf, ds(home(cf, tid),
                                  [route("blog", "blog.example.dev", adopt=True)]))
    assert outcome.errors == []
    [record] = cf.records(zones["example.dev"])
    assert record["id"] == foreign["id"]
    assert (record["type"], record["content"]) == ("CNAME", f"{tid}.cfargotunnel.com")
    assert record["proxied"] is True
    assert record["comment"] == "managed by portside, owner=home-cluster"


def test_removed_route_deletes_only_our_record(cf: FakeCloudflare, zones: dict[str, str], tid: str) -> None:
    t = home(cf, tid)
    other = cf.add_record(zones["example.dev"], "x.example.dev", "CNAME", "y.cfargotunnel.com",
                          comment="managed by portside, owner=someone-else")
    reconcile(cf, ds(t, [route("a", "a.example.dev"), route("b", "b.example.dev")]))
    _, outcome = reconcile(cf, ds(t, [route("a", "a.example.dev")]))
    assert outcome.errors == []
    assert sorted(r["name"] for r in cf.records(zones["example.dev"])) == ["a.example.dev", "x.example.dev"]
    assert other in cf.records(zones["example.dev"])
    config = cf.tunnel_config(None, tid)["config"]
    assert [r.get("hostname") for r in config["ingress"]] == ["a.example.dev", None]


def test_records_of_a_tunnel_removed_from_git_are_deleted(cf: FakeCloudflare, zones: dict[str, str],
                                                           tid: str) -> None:
    reconcile(cf, ds(home(cf, tid), A_ROUTE))
    assert len(cf.records(zones["example.dev"])) == 1
    manual = cf.add_record(zones["example.dev"], "manual.example.dev", "A", "203.0.113.9")
    plan, outcome = reconcile(cf, DesiredState())
    assert [(c.target.id, c.action) for c in plan.visible] == [("a.example.dev", "delete")]
    assert outcome.errors == [] and cf.records(zones["example.dev"]) == [manual]


def test_live_rule_not_in_git_is_shown_and_replaced(cf: FakeCloudflare, zones: dict[str, str]) -> None:
    tid = cf.add_tunnel(None, "home-tunnel", config={"ingress": [
        {"hostname": "manual.example.dev", "service": "http://10.0.0.99:80"},
        {"service": "http_status:404"}]})["id"]
    t = tunnel(accountId=cf.account_id, tunnelName="home-tunnel", dns={"manage": False})
    plan, _ = reconcile(cf, ds(t, A_ROUTE))
    [change] = plan.visible
    assert change.action == "update" and "remove (live, not in Git) manual.example.dev" in change.reason
    ingress = cf.tunnel_config(None, tid)["config"]["ingress"]
    assert [r.get("hostname") for r in ingress] == ["a.example.dev", None]
    assert all(cf.records(z) == [] for z in zones.values())  # DNS management off


def test_put_keeps_warp_routing_and_empties_top_level_origin_request(cf: FakeCloudflare,
                                                                      zones: dict[str, str]) -> None:
    tid = cf.add_tunnel(None, "home-tunnel", config={
        "ingress": [{"service": "http_status:404"}], "warp-routing": {"enabled": True},
        "originRequest": {"connectTimeout": 5}})["id"]
    reconcile(cf, ds(home(cf, str(tid)), A_ROUTE))
    config = cf.tunnel_config(None, tid)["config"]
    assert config["warp-routing"] == {"enabled": True}
    assert config["originRequest"] == {}
    assert [r.get("hostname") for r in config["ingress"]] == ["a.example.dev", None]


def test_tunnel_created_when_asked(cf: FakeCloudflare, zones: dict[str, str]) -> None:
    t = tunnel(accountId=cf.account_id, tunnelName="made-by-portside", create=True)
    plan, outcome = reconcile(cf, ds(t, [route("a", "a.example.dev")]))
    assert outcome.errors == [] and outcome.applied == 3
    [made] = cf.tunnels()
    assert made["name"] == "made-by-portside" and made["config_src"] == "cloudflare"
    assert cf.tunnel_config(None, made["id"])["config"]["ingress"][0]["hostname"] == "a.example.dev"
    [record] = cf.records(zones["example.dev"])
    assert record["content"] == f"{made['id']}.cfargotunnel.com"
    cf.clear_log()
    plan, _ = reconcile(cf, ds(t, [route("a", "a.example.dev")]))
    assert not plan.has_changes and cf.writes() == []


def test_stale_tunnel_id_falls_back_to_the_name(cf: FakeCloudflare, zones: dict[str, str], tid: str) -> None:
    t = tunnel(accountId=cf.account_id, tunnelId="00000000-0000-0000-0000-000000000000",
               tunnelName="home-tunnel", create=True)
    tunnels, _ = provider(cf).read(ds(t, A_ROUTE))
    assert tunnels["home"].tunnel_id == tid


def test_missing_tunnel_without_create_is_a_conflict(cf: FakeCloudflare, zones: dict[str, str]) -> None:
    plan, outcome = reconcile(cf, ds(tunnel(accountId=cf.account_id, tunnelName="nope"),
                                     [route("a", "a.example.dev")]))
    assert [(c.target.kind, c.action) for c in plan.visible] == [("Tunnel", "conflict")]
    assert cf.writes() == [] and outcome.applied == 0


def test_service_ip_change_moves_the_route(cf: FakeCloudflare, zones: dict[str, str], tid: str) -> None:
    desired = ds(home(cf, tid),
                 [route("blog", "blog.example.dev", service={"name": "blog", "port": 80})])
    reconcile(cf, desired, ips={"default/blog": ("192.168.1.100",)})
    cf.clear_log()
    plan, _ = reconcile(cf, desired, ips={"default/blog": ("192.168.2.50",)})
    assert [(c.target.kind, c.action) for c in plan.visible] == [("TunnelConfiguration", "update")]
    assert cf.tunnel_config(None, tid)["config"]["ingress"][0]["service"] == "http://192.168.2.50:80"
    assert (puts(cf), batches(cf)) == (1, 0)


def test_durations_are_integer_seconds_in_the_api(cf: FakeCloudflare, zones: dict[str, str],
                                                  tid: str) -> None:
    t = home(cf, tid, originRequest={"connectTimeout": "1m30s"})
    routes = [route("a", "a.example.dev", originRequest={"tlsTimeout": "10s", "noTLSVerify": True})]
    reconcile(cf, ds(t, routes))
    rule = cf.tunnel_config(None, tid)["config"]["ingress"][0]
    assert rule["originRequest"] == {"connectTimeout": 90, "noTLSVerify": True, "tlsTimeout": 10}
    cf.clear_log()
    reconcile(cf, ds(t, routes))
    assert cf.writes() == []


# ------------------------------------------------------------------ errors and limits


def test_rate_limit_honours_retry_after(cf: FakeCloudflare, zones: dict[str, str], tid: str) -> None:
    cf.rate_limit(retry_after=1, times=1, method="POST", path=r"/dns_records/batch$")
    started = time.monotonic()
    _, outcome = reconcile(cf, ds(home(cf, tid), A_ROUTE))
    assert outcome.errors == []
    assert time.monotonic() - started >= 1.0
    assert [c.status for c in cf.calls("POST", r"/dns_records/batch$")] == [429, 200]
    assert len(cf.records(zones["example.dev"])) == 1


def test_retry_budget_is_per_run(cf: FakeCloudflare, zones: dict[str, str], tid: str) -> None:
    p = provider(cf, budget=1.5)  # one long-lived provider, as in `portside run`
    for hostname in ("a.example.dev", "b.example.dev"):
        cf.rate_limit(retry_after=1, times=1, method="POST", path=r"/dns_records/batch$")
        desired = ds(home(cf, tid), [route("r", hostname)])
        tunnels, live_zones = p.read(desired)
        outcome = p.apply(ordered(plan_tunnels(desired, tunnels, live_zones, {}, OWNER).changes))
        assert outcome.errors == []
    assert [r["name"] for r in cf.records(zones["example.dev"])] == ["b.example.dev"]


def test_rate_limit_past_budget_fails_that_zone_only_and_next_run_converges(
        cf: FakeCloudflare, zones: dict[str, str], tid: str) -> None:
    desired = ds(home(cf, tid), many_routes(30))
    cf.rate_limit(retry_after=60, times=1, method="POST",
                  path=rf"/zones/{zones['example.org']}/dns_records/batch$")
    started = time.monotonic()
    _, outcome = reconcile(cf, desired, budget=5.0)
    assert time.monotonic() - started < 5.0  # did not sleep 60s past its budget
    [error] = outcome.errors
    assert error.startswith("zone example.org: Cloudflare write 10 DNS records in zone example.org: HTTP 429")
    assert "retried next run" in error
    assert len(cf.records(zones["example.dev"])) == 10 and cf.records(zones["example.org"]) == []
    _, outcome = reconcile(cf, desired)
    assert outcome.errors == [] and outcome.applied == 10
    cf.clear_log()
    plan, _ = reconcile(cf, desired)
    assert not plan.has_changes and cf.writes() == []


@pytest.mark.parametrize("after_apply", [False, True], ids=["rejected", "done-but-5xx"])
def test_5xx_mid_apply_next_run_converges_without_duplicates(
        cf: FakeCloudflare, zones: dict[str, str], tid: str, after_apply: bool) -> None:
    desired = ds(home(cf, tid), many_routes(30))
    cf.fail(502, method="POST", path=rf"/zones/{zones['example.dev']}/dns_records/batch$",
            after_apply=after_apply)
    _, outcome = reconcile(cf, desired)
    assert [e.split(":")[0] for e in outcome.errors] == ["zone example.dev"]
    assert "HTTP 502" in outcome.errors[0]
    assert len(cf.records(zones["example.org"])) == 10  # the other zones went on
    _, outcome = reconcile(cf, desired)
    assert outcome.errors == []
    for zone in ("example.dev", "example.org"):
        names = [r["name"] for r in cf.records(zones[zone])]
        assert len(names) == 10 == len(set(names))
    cf.clear_log()
    plan, _ = reconcile(cf, desired)
    assert not plan.has_changes and cf.writes() == []


def test_5xx_on_read_is_retried(cf: FakeCloudflare, zones: dict[str, str], tid: str) -> None:
    cf.fail(503, method="GET", path=r"/configurations$", times=1)
    p = provider(cf)
    tunnels, _ = p.read(ds(home(cf, tid), []))
    assert tunnels["home"].error is None and tunnels["home"].tunnel_id == tid
    assert [c.status for c in cf.calls("GET", r"/configurations$")] == [503, 200]


def test_success_false_is_an_error(cf: FakeCloudflare, zones: dict[str, str], tid: str) -> None:
    cf.fail_success_false(method="PUT", path=r"/configurations$", message="Internal error")
    _, outcome = reconcile(cf, ds(home(cf, tid), A_ROUTE))
    [error] = outcome.errors
    assert re.fullmatch(r"tunnel home: Cloudflare write configuration of tunnel home: HTTP 200 with "
                        r"success: false: code \d+ Internal error", error), error
    assert len(cf.records(zones["example.dev"])) == 1  # DNS still went on


def test_success_false_on_read_marks_the_tunnel(cf: FakeCloudflare, zones: dict[str, str], tid: str) -> None:
    cf.fail_success_false(method="GET", path=r"/configurations$")
    tunnels, _ = provider(cf).read(ds(home(cf, tid), []))
    assert "success: false" in str(tunnels["home"].error)


@pytest.mark.parametrize(("denied", "needed"), [
    ("dns_records:edit", "Zone:DNS:Edit"), ("cfd_tunnel:edit", "Account:Cloudflare Tunnel:Edit")])
def test_missing_write_permission_is_named(cf: FakeCloudflare, zones: dict[str, str], tid: str,
                                            denied: str, needed: str) -> None:
    cf.deny(denied)
    _, outcome = reconcile(cf, ds(home(cf, tid), A_ROUTE))
    assert len(outcome.errors) == 1
    assert f"Cloudflare token lacks {needed}" in outcome.errors[0]
    assert "HTTP 403" in outcome.errors[0] and TOKEN not in outcome.errors[0]
    assert outcome.applied == 1  # the other write went through


@pytest.mark.parametrize(("denied", "needed", "where"), [
    ("cfd_tunnel:read", "Account:Cloudflare Tunnel:Read", "tunnel"),
    ("dns_records:read", "Zone:DNS:Read", "zone"),
    ("zone:read", "Zone:Zone:Read", "zones")])
def test_missing_read_permission_is_named_in_the_plan(cf: FakeCloudflare, zones: dict[str, str], tid: str,
                                                      denied: str, needed: str, where: str) -> None:
    cf.deny(denied)
    plan, outcome = reconcile(cf, ds(home(cf, tid), A_ROUTE))
    lacking = [w for w in plan.warnings if f"Cloudflare token lacks {needed}" in w]
    assert lacking, plan.warnings
    assert all(TOKEN not in w for w in plan.warnings)
    assert outcome.errors == []
    if where == "tunnel":
        assert puts(cf) == 0 and batches(cf) == 0  # nothing planned for an unread tunnel, DNS kept


def test_wrong_token_names_no_token(cf: FakeCloudflare, zones: dict[str, str], tid: str) -> None:
    wrong = "wrong-token-value-abcdef"
    p = CloudflareProvider(wrong, base_url=cf.base_url)
    tunnels, live_zones = p.read(ds(home(cf, tid), A_ROUTE))
    text = json.dumps([str(t) for t in tunnels.values()] + [str(z) for z in live_zones.values()])
    assert "Cloudflare token lacks Account:Cloudflare Tunnel:Read" in text
    assert wrong not in text and TOKEN not in text


def test_unreachable_api_is_temporary(cf: FakeCloudflare) -> None:
    base = cf.base_url
    cf.stop()
    tunnels, _ = CloudflareProvider(TOKEN, base_url=base).read(
        ds(tunnel(accountId="a" * 32, tunnelId="6ff42ae2-765d-4adf-8112-31c55c1551ef"), []))
    assert "could not connect" in str(tunnels["home"].error)


def test_pagination_reads_every_record_and_zone(cf: FakeCloudflare) -> None:
    zone_ids = [cf.add_zone(f"z{i:02d}.example") for i in range(55)]  # > 50 zones: two pages
    for i in range(7):
        cf.add_record(zone_ids[54], f"r{i}.z54.example", "A", f"10.0.0.{i + 1}")
    p = provider(cf)
    import reconciler.providers.cloudflare as module
    original = module.RECORDS_PER_PAGE
    module.RECORDS_PER_PAGE = 5  # the fake's minimum page size: records in two pages
    try:
        _, live_zones = p.read(ds(tunnel(accountId=cf.account_id, tunnelId="x"), []))
    finally:
        module.RECORDS_PER_PAGE = original
    assert len(live_zones) == 55
    assert len(live_zones["z54.example"].records) == 7
    assert len(cf.calls("GET", r"^/zones$")) == 2


def test_from_env(monkeypatch: pytest.MonkeyPatch, cf: FakeCloudflare) -> None:
    monkeypatch.delenv("CLOUDFLARE_API_TOKEN", raising=False)
    assert CloudflareProvider.from_env() is None
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", TOKEN)
    monkeypatch.setenv("CLOUDFLARE_BASE_URL", cf.base_url)
    p = CloudflareProvider.from_env()
    assert p is not None
    cf.add_zone("example.dev")
    _, live_zones = p.read(ds(tunnel(accountId=cf.account_id, tunnelId="x"), []))
    assert list(live_zones) == ["example.dev"]
