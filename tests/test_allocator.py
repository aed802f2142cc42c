"""The allocator, walked through many steps like MetalLB's allocator_test.go.

Every step changes the live world (Services come, go, change), runs ``service_requests`` +
``allocate`` over it, applies the result the way apply would (status ingress + pool
annotation), and checks what every Service holds. Expectations are written by hand.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pytest

from reconciler.allocator import Allocation, ServiceRequest, allocate, service_requests
from reconciler.desired.models import IPAddressPool, ServiceExposure
from reconciler.planning.live import ANNOTATION_POOL, LOADBALANCER_CLASS, LiveService, ServicePort

# --- helpers --------------------------------------------------------------------------------


def pool(name: str, *addresses: str, labels: Mapping[str, str] | None = None, **spec: Any) -> IPAddressPool:
    return IPAddressPool.model_validate({
        "apiVersion": "portside.io/v1alpha1", "kind": "IPAddressPool",
        "metadata": {"name": name, "labels": dict(labels or {})},
        "spec": {"addresses": list(addresses), **spec},
    })


def svc(key: str, *ports: int | str, **fields: Any) -> LiveService:
    """A LoadBalancer Service; ports as 80 (TCP) or "53/UDP"."""
    namespace, name = key.split("/")
    parsed = []
    for p in ports:
        number, _, proto = str(p).partition("/")
        parsed.append(ServicePort(int(number), proto or "TCP"))  # type: ignore[arg-type]
    annotations = dict(fields.pop("annotations", {}))
    if "share" in fields:
        annotations["metallb.io/allow-shared-ip"] = fields.pop("share")
    if "pin" in fields:
        annotations["metallb.io/address-pool"] = fields.pop("pin")
    if "ips" in fields:
        annotations["metallb.io/loadBalancerIPs"] = fields.pop("ips")
    return LiveService(namespace=namespace, name=name, ports=tuple(parsed), annotations=annotations, **fields)


def exposure(key: str, **spec: Any) -> ServiceExposure:
    namespace, name = key.split("/")
    return ServiceExposure.model_validate({
        "apiVersion": "portside.io/v1alpha1", "kind": "ServiceExposure",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"service": {"namespace": namespace, "name": name}, **spec},
    })


class World:
    """Live Services as apply leaves them; ``step`` allocates and applies, like one reconcile."""

    def __init__(self, *pools: IPAddressPool,
                 namespace_labels: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self.pools = list(pools)
        self.namespace_labels = dict(namespace_labels or {})
        self.services: dict[str, LiveService] = {}
        self.exposures: list[ServiceExposure] = []
        self.last: dict[str, Allocation] = {}

    def put(self, *services: LiveService) -> None:
        """Create or change Services; status and the pool annotation carry over, as in a cluster."""
        for s in services:
            old = self.services.get(s.key)
            if old is not None:
                annotations = dict(s.annotations)
                if ANNOTATION_POOL in old.annotations:
                    annotations[ANNOTATION_POOL] = old.annotations[ANNOTATION_POOL]
                s = replace(s, ingress=old.ingress, annotations=annotations)
            self.services[s.key] = s

    def delete(self, *keys: str) -> None:
        for key in keys:
            del self.services[key]

    def step(self) -> dict[str, Allocation]:
        requests, rejected = service_requests(list(self.services.values()), self.exposures)
        allocations = [*rejected, *allocate(self.pools, requests, self.namespace_labels)]
        assert len({a.key for a in allocations}) == len(allocations)
        for a in allocations:
            s = self.services[a.key]
            annotations = {k: v for k, v in s.annotations.items() if k != ANNOTATION_POOL}
            if a.ips:
                annotations[ANNOTATION_POOL] = a.pool or ""
            self.services[a.key] = replace(s, ingress=a.ips, annotations=annotations)
        self.last = {a.key: a for a in allocations}
        return self.last


Expected = tuple[str, ...] | str  # the IPs, or "pending: <part of the reason>"


def check(world: World, expected: Mapping[str, Expected], revoked: Mapping[str, str] | None = None) -> None:
    """Run one step; every Service named must hold what is expected, and only named ones lose IPs."""
    result = world.step()
    for key, want in expected.items():
        got = result[key]
        if isinstance(want, str):
            assert want.startswith("pending: ")
            assert got.ips == (), f"{key}: expected pending, got {got}"
            assert got.pending_reason is not None and want[len("pending: "):] in got.pending_reason, \
                f"{key}: {got.pending_reason!r}"
        else:
            assert got.ips == want, f"{key}: {got}"
            assert got.pending_reason is None
    revoked = revoked or {}
    for key, got in result.items():
        if key in revoked:
            assert got.revoked, f"{key} should lose its IPs: {got}"
            assert got.revoke_reason is not None and revoked[key] in got.revoke_reason, got.revoke_reason
        else:
            assert got.revoked == (), f"{key} lost {got.revoked}: {got.revoke_reason}"


# --- one pool, many steps (MetalLB's TestAssignment, made deterministic) --------------------------


@dataclass(frozen=True)
class Step:
    desc: str
    change: Callable[[World], None]
    expected: Mapping[str, Expected]
    revoked: Mapping[str, str] | None = None


def _put(*services: LiveService) -> Callable[[World], None]:
    return lambda w: w.put(*services)


def _delete(*keys: str) -> Callable[[World], None]:
    return lambda w: w.delete(*keys)


ONE_POOL_STEPS = [
    Step("first Service gets the lowest IP", _put(svc("ns/s1", 80)), {"ns/s1": ("1.2.3.4",)}),
    Step("nothing changes: the IP is sticky", _put(), {"ns/s1": ("1.2.3.4",)}),
    Step("second Service gets the next IP", _put(svc("ns/s2", 80)), {"ns/s2": ("1.2.3.5",)}),
    Step("third Service: the IPv4 range is exhausted", _put(svc("ns/s3", 80)),
         {"ns/s1": ("1.2.3.4",), "ns/s2": ("1.2.3.5",), "ns/s3": "pending: pool exhausted"}),
    Step("an IPv6 Service still gets an address", _put(svc("ns/v6", 80, ip_families=("IPv6",))),
         {"ns/v6": ("1000::4",), "ns/s3": "pending: no free IPv4 address in test"}),
    Step("s1 deleted: its IP goes to the pending s3", _delete("ns/s1"),
         {"ns/s2": ("1.2.3.5",), "ns/s3": ("1.2.3.4",)}),
    Step("a sharing Service finds no IP with its key", _put(svc("ns/s1", 443, share="web")),
         {"ns/s1": "pending: pool exhausted", "ns/s3": ("1.2.3.4",)}),
    Step("s3 takes the key in place (sole holder) and s1 joins it on another port",
         _put(svc("ns/s3", 80, share="web")), {"ns/s1": ("1.2.3.4",), "ns/s3": ("1.2.3.4",)}),
    Step("same key, but port 80 is taken on the shared IP", _put(svc("ns/s4", 80, share="web")),
         {"ns/s4": "pending: exhausted"}),
    Step("same key, free port: shares", _put(svc("ns/s4", 8080, share="web")),
         {"ns/s4": ("1.2.3.4",), "ns/s1": ("1.2.3.4",), "ns/s3": ("1.2.3.4",)}),
    Step("same port number, other protocol: shares", _put(svc("ns/dns", "80/UDP", share="web")),
         {"ns/dns": ("1.2.3.4",)}),
    Step("another key cannot join", _put(svc("ns/s5", 9000, share="other")),
         {"ns/s5": "pending: exhausted"}),
    Step("Local policy with other pods cannot join Cluster Services",
         _put(svc("ns/s6", 7000, share="web", external_traffic_policy="Local", selector={"app": "a"})),
         {"ns/s6": "pending: exhausted"}),
    Step("s2 deleted: s5 (key 'other') takes 1.2.3.5, s6 still has no place", _delete("ns/s2"),
         {"ns/s5": ("1.2.3.5",), "ns/s6": "pending: exhausted"}),
    Step("s5 becomes Local on app=a in place (sole holder)",
         _put(svc("ns/s5", 9000, share="other", external_traffic_policy="Local", selector={"app": "a"})),
         {"ns/s5": ("1.2.3.5",)}),
    Step("Local on other pods cannot share s5's IP",
         _put(svc("ns/s7", 9001, share="other", external_traffic_policy="Local", selector={"app": "b"})),
         {"ns/s7": "pending: exhausted"}),
    Step("Local on the same pods shares it",
         _put(svc("ns/s7", 9001, share="other", external_traffic_policy="Local", selector={"app": "a"})),
         {"ns/s7": ("1.2.3.5",), "ns/s5": ("1.2.3.5",)}),
    Step("s3 moves to s1's port: the lower key keeps the port, s3 loses the IP, visibly",
         _put(svc("ns/s3", 443, share="web")),
         {"ns/s1": ("1.2.3.4",), "ns/s3": "pending: exhausted"},
         revoked={"ns/s3": "port TCP/443 on 1.2.3.4 is already used by ns/s1"}),
    Step("s1 stops sharing while others are on its IP: it loses it",
         _put(svc("ns/s1", 443)), {"ns/s1": "pending: exhausted", "ns/s3": ("1.2.3.4",)},
         revoked={"ns/s1": "1.2.3.4 is held by ns/dns, and ns/s1 has no sharing key"}),
    Step("everyone on 1.2.3.4 goes: s1 gets it alone", _delete("ns/s3", "ns/s4", "ns/dns"),
         {"ns/s1": ("1.2.3.4",), "ns/s5": ("1.2.3.5",), "ns/s7": ("1.2.3.5",)}),
]


def test_one_pool_walk() -> None:
    world = World(pool("test", "1.2.3.4/31", "1000::4/127"))
    for step in ONE_POOL_STEPS:
        step.change(world)
        try:
            check(world, step.expected, step.revoked)
        except AssertionError as exc:
            raise AssertionError(f"step {step.desc!r}: {exc}") from exc
    # A reconciler restarted now reads the same live state and changes nothing.
    before = dict(world.last)
    check(world, {k: a.ips for k, a in before.items() if a.ips})
    assert world.last == before


# --- restart stability and determinism ------------------------------------------------------------


def _requests_from(world: World) -> list[ServiceRequest]:
    requests, rejected = service_requests(list(world.services.values()), world.exposures)
    assert rejected == []
    return requests


def test_restart_and_input_order_change_nothing() -> None:
    world = World(pool("b", "10.0.1.0/29"), pool("a", "10.0.0.0/30"), pool("c", "fd00::/126"))
    world.put(*(svc(f"ns{i % 3}/s{i:02d}", 80, share="k" if i % 4 == 0 else None) for i in range(12)))
    world.put(svc("ns0/dual", 80, ip_family_policy="RequireDualStack"))
    first = world.step()
    requests = _requests_from(world)
    for seed in range(5):
        random.Random(seed).shuffle(requests)
        again = {a.key: a for a in allocate(list(reversed(world.pools)), requests, {})}
        assert again == {k: a._replace(revoked=(), revoke_reason=None) for k, a in first.items()}
        assert all(not a.revoked for a in again.values())


def test_fresh_allocation_is_deterministic_whatever_the_order() -> None:
    pools = [pool("a", "10.0.0.0/28"), pool("b", "10.0.1.0/28")]
    requests = [ServiceRequest(key=f"ns/s{i}", namespace="ns") for i in range(20)]
    expected = allocate(pools, requests, {})
    # Keys in string order: s0, s1, s10, s11, ...
    assert [(a.key, a.ips) for a in expected[:3]] == [
        ("ns/s0", ("10.0.0.0",)), ("ns/s1", ("10.0.0.1",)), ("ns/s10", ("10.0.0.2",))]
    shuffled = requests[:]
    random.Random(1).shuffle(shuffled)
    assert allocate(pools[::-1], shuffled, {}) == expected


# --- pools: autoAssign, pinning, serviceAllocation, priority ----------------------------------------


def test_pool_choice() -> None:
    world = World(
        pool("a-expensive", "42.0.0.0/30", autoAssign=False),
        pool("b-cheap", "10.0.0.0/30"),
        pool("c-cheap", "10.0.1.0/30"),
        pool("prod-low", "10.1.0.0/30", serviceAllocation={"priority": 20, "namespaces": ["prod"]}),
        pool("prod-high", "10.2.0.0/30", serviceAllocation={"priority": 10, "namespaces": ["prod"]}),
        pool("prod-any", "10.3.0.0/30", serviceAllocation={"namespaces": ["prod"]}),
        pool("team", "10.4.0.0/31",
             serviceAllocation={"namespaceSelectors": [{"matchLabels": {"team": "a"}}]}),
        pool("premium", "10.5.0.0/31",
             serviceAllocation={"namespaces": ["dev"],
                                "serviceSelectors": [{"matchLabels": {"tier": "gold"}}]}),
        namespace_labels={"team-a": {"team": "a"}, "team-b": {"team": "b"}},
    )
    world.put(
        svc("dev/plain", 80),
        svc("dev/pinned", 80, pin="a-expensive"),
        svc("prod/app", 80),
        svc("team-a/app", 80),
        svc("team-b/app", 80),
        svc("dev/gold", 80, labels={"tier": "gold"}),
        svc("web/gold", 80, labels={"tier": "gold"}),
        svc("dev/wants-prod", 80, pin="prod-high"),
        svc("dev/wants-ghost", 80, pin="ghost"),
        svc("dev/requests-prod", 80, load_balancer_ip="10.2.0.3"),
    )
    check(world, {
        "dev/plain": ("10.0.0.0",),  # autoAssign false skipped; b-cheap before c-cheap by name
        "dev/pinned": ("42.0.0.0",),  # naming a pool overrides autoAssign: false
        "prod/app": ("10.2.0.0",),  # priority 10 before 20 before unset
        "team-a/app": ("10.4.0.0",),  # namespaceSelectors over the namespaces' labels
        "team-b/app": ("10.0.0.1",),
        "dev/gold": ("10.5.0.0",),  # namespace and Service selector both match
        "web/gold": ("10.0.0.2",),  # selector matches but namespace does not
        "dev/wants-prod": "pending: pool prod-high serves only namespaces prod",
        "dev/wants-ghost": "pending: pool ghost does not exist",
        "dev/requests-prod":
            "pending: requested 10.2.0.3 is in pool prod-high, which serves only namespaces prod",
    })


def test_scoped_pools_fall_back_to_general_pools_when_full() -> None:
    world = World(pool("general", "10.0.0.0/30"),
                  pool("prod", "10.9.0.0/32", serviceAllocation={"namespaces": ["prod"]}))
    world.put(svc("prod/a", 80), svc("prod/b", 80))
    check(world, {"prod/a": ("10.9.0.0",), "prod/b": ("10.0.0.0",)})


def test_equal_priority_pools_go_by_name() -> None:
    scope = {"priority": 5, "namespaces": ["ns"]}
    world = World(pool("zeta", "10.0.2.0/31", serviceAllocation=scope),
                  pool("alpha", "10.0.1.0/31", serviceAllocation=scope))
    world.put(svc("ns/a", 80), svc("ns/b", 80), svc("ns/c", 80))
    check(world, {"ns/a": ("10.0.1.0",), "ns/b": ("10.0.1.1",), "ns/c": ("10.0.2.0",)})


def test_no_automatic_pool() -> None:
    world = World(pool("manual", "10.0.0.0/30", autoAssign=False))
    world.put(svc("ns/a", 80), svc("ns/b", 80, ips="10.0.0.2"))
    check(world, {"ns/a": "pending: no pool assigns addresses automatically", "ns/b": ("10.0.0.2",)})


def test_pool_with_addresses_of_the_other_family_only() -> None:
    world = World(pool("v4", "10.0.0.0/30"))
    world.put(svc("ns/a", 80, ip_families=("IPv6",)))
    check(world, {"ns/a": "pending: no pool available to ns/a has IPv6 addresses"})


# --- avoidBuggyIPs ---------------------------------------------------------------------------


def test_avoid_buggy_ips() -> None:
    world = World(pool("p", "10.0.0.254-10.0.1.1", avoidBuggyIPs=True))
    world.put(svc("ns/a", 80), svc("ns/b", 80), svc("ns/c", 80), svc("ns/d", 80, load_balancer_ip="10.0.1.0"))
    check(world, {"ns/a": ("10.0.0.254",), "ns/b": ("10.0.1.1",), "ns/c": "pending: pool exhausted",
                  "ns/d": "pending: requested 10.0.1.0 is a .0/.255 address and pool p avoids buggy IPs"})


def test_turning_avoid_buggy_ips_on_revokes_buggy_ips() -> None:
    world = World(pool("p", "10.0.0.254/31"))
    world.put(svc("ns/a", 80), svc("ns/b", 80))
    check(world, {"ns/a": ("10.0.0.254",), "ns/b": ("10.0.0.255",)})
    world.pools = [pool("p", "10.0.0.254/31", "10.0.2.1/32", avoidBuggyIPs=True)]
    check(world, {"ns/a": ("10.0.0.254",), "ns/b": ("10.0.2.1",)},
          revoked={"ns/b": "pool p avoids buggy IPs (.0 and .255)"})


def test_avoid_buggy_ips_does_not_touch_ipv6() -> None:
    world = World(pool("p", "fd00::ff/128", avoidBuggyIPs=True))
    world.put(svc("ns/a", 80, ip_families=("IPv6",)))
    check(world, {"ns/a": ("fd00::ff",)})


# --- requested IPs ---------------------------------------------------------------------------------


def test_requested_ips() -> None:
    world = World(pool("p", "10.0.0.0/29", "fd00::/125"), pool("q", "10.0.1.0/30"))
    world.put(
        svc("ns/auto", 80),  # sorts before "ns/field", but requested IPs are served first
        svc("ns/field", 80, load_balancer_ip="10.0.0.0"),
        svc("ns/annotation", 80, ips="10.0.0.5"),
        svc("ns/both", 80, ips="10.0.0.6", load_balancer_ip="10.0.0.6"),
        svc("ns/dual", 80, ips="fd00::3, 10.0.0.3", ip_family_policy="RequireDualStack"),
        svc("ns/dual-one", 80, ips="10.0.0.4", ip_family_policy="RequireDualStack"),
        svc("ns/outside", 80, ips="192.168.9.9"),
        svc("ns/taken", 80, ips="10.0.0.5"),
        svc("ns/two-pools", 80, ips="10.0.0.7,fd00::7", ip_family_policy="RequireDualStack"),
        svc("ns/wrong-family", 80, ips="fd00::1"),
        svc("ns/pinned-elsewhere", 80, ips="10.0.0.2", pin="q"),
        svc("ns/garbage", 80, ips="10.0.0.300"),
    )
    check(world, {
        "ns/auto": ("10.0.0.1",),
        "ns/field": ("10.0.0.0",),
        "ns/annotation": ("10.0.0.5",),
        "ns/both": "pending: sets both spec.loadBalancerIP and the metallb.io/loadBalancerIPs annotation",
        "ns/dual": ("10.0.0.3", "fd00::3"),
        "ns/dual-one": "pending: RequireDualStack needs one IPv4 and one IPv6 address",
        "ns/outside": "pending: requested 192.168.9.9 is in no pool",
        "ns/taken": "pending: requested 10.0.0.5 is held by ns/annotation, and ns/taken has no sharing key",
        "ns/two-pools": ("10.0.0.7", "fd00::7"),
        "ns/wrong-family": "pending: requested fd00::1 is IPv6, but ns/wrong-family is IPv4 single-stack",
        "ns/pinned-elsewhere":
            "pending: requested 10.0.0.2 is in pool p, but ns/pinned-elsewhere is pinned to pool q",
        "ns/garbage": "pending: '10.0.0.300' is not an IP address",
    })
    # Asking for another IP moves the Service there, and says so.
    world.put(svc("ns/field", 80, load_balancer_ip="10.0.0.2"))
    check(world, {"ns/field": ("10.0.0.2",), "ns/auto": ("10.0.0.1",)},
          revoked={"ns/field": "ns/field requests 10.0.0.2"})
    # Asking for an IP someone holds: the Service loses its own and waits, visibly.
    world.put(svc("ns/field", 80, load_balancer_ip="10.0.0.1"))
    check(world, {"ns/field": "pending: requested 10.0.0.1 is held by ns/auto", "ns/auto": ("10.0.0.1",)},
          revoked={"ns/field": "ns/field requests 10.0.0.1"})


def test_requested_ips_in_different_pools() -> None:
    world = World(pool("p", "10.0.0.0/30"), pool("q", "fd00::/126"))
    world.put(svc("ns/a", 80, ips="10.0.0.1,fd00::1", ip_family_policy="RequireDualStack"))
    check(world, {"ns/a": "pending: requested addresses are in pools p and q; "
                          "a Service's addresses come from one pool"})


def test_lowest_usable_address_wins_over_a_higher_shareable_one() -> None:
    # MetalLB scans from the first address and takes the first free or shareable one.
    world = World(pool("p", "10.0.0.0/30"))
    world.put(svc("ns/a", 80, share="k", ips="10.0.0.2"), svc("ns/b", 443, share="k"))
    check(world, {"ns/a": ("10.0.0.2",), "ns/b": ("10.0.0.0",)})
    world.put(svc("ns/c", 8443, share="k"), svc("ns/d", 9443, share="k"))
    check(world, {"ns/c": ("10.0.0.0",), "ns/d": ("10.0.0.0",)})


def test_requested_ip_shared_with_a_key() -> None:
    world = World(pool("p", "10.0.0.0/30"))
    world.put(svc("ns/a", 80, share="k", ips="10.0.0.3"), svc("ns/b", 443, share="k", ips="10.0.0.3"),
              svc("ns/c", 443, share="k", ips="10.0.0.3"))
    check(world, {"ns/a": ("10.0.0.3",), "ns/b": ("10.0.0.3",),
                  "ns/c": "pending: port TCP/443 on requested 10.0.0.3 is already used by ns/b"})


# --- dual stack ---------------------------------------------------------------------------------


def test_dual_stack() -> None:
    world = World(pool("a-v4", "10.0.0.0/30"), pool("b-dual", "10.0.1.0/30", "fd00:1::/126"),
                  pool("c-v6", "fd00:2::/126"))
    both = ("IPv4", "IPv6")
    world.put(
        svc("ns/require", 80, ip_family_policy="RequireDualStack", ip_families=both),
        svc("ns/require-v6-first", 80, ip_family_policy="RequireDualStack", ip_families=("IPv6", "IPv4")),
        svc("ns/prefer", 80, ip_family_policy="PreferDualStack", ip_families=both),
        svc("ns/prefer-single-stack-cluster", 80, ip_family_policy="PreferDualStack", ip_families=("IPv4",)),
        svc("ns/single-v6", 80, ip_families=("IPv6",)),
    )
    check(world, {
        "ns/prefer": ("10.0.1.0", "fd00:1::"),  # a-v4 comes first by name but has no IPv6
        "ns/require": ("10.0.1.1", "fd00:1::1"),
        "ns/require-v6-first": ("fd00:1::2", "10.0.1.2"),
        "ns/prefer-single-stack-cluster": ("10.0.0.0",),
        "ns/single-v6": ("fd00:1::3",),
    })
    # b-dual has IPv4 .3 left and no IPv6: RequireDualStack waits, PreferDualStack takes both
    # from nowhere, so it falls back to the first pool with its preferred family.
    world.put(svc("ns/require-2", 80, ip_family_policy="RequireDualStack"),
              svc("ns/prefer-2", 80, ip_family_policy="PreferDualStack", ip_families=("IPv6", "IPv4")))
    check(world, {"ns/require-2": "pending: no free IPv4 and IPv6 address pair in a-v4, b-dual, c-v6",
                  "ns/prefer-2": ("fd00:2::",)})


def test_require_dual_stack_without_a_dual_pool() -> None:
    world = World(pool("a", "10.0.0.0/30"), pool("b", "fd00::/126"))
    world.put(svc("ns/r", 80, ip_family_policy="RequireDualStack"))
    check(world, {"ns/r": "pending: RequireDualStack, but no pool available to ns/r has both IPv4 and IPv6"})


def test_prefer_dual_stack_holder_gains_the_missing_family_from_its_pool() -> None:
    world = World(pool("p", "10.0.0.0/30"), pool("q", "10.0.1.0/30", "fd00:9::/126"))
    world.put(svc("ns/a", 80, ip_family_policy="PreferDualStack", ip_families=("IPv4", "IPv6")))
    check(world, {"ns/a": ("10.0.1.0", "fd00:9::")})
    world.put(svc("ns/b", 80, ip_family_policy="PreferDualStack", ip_families=("IPv4", "IPv6"),
                  load_balancer_ip="10.0.0.1"))
    check(world, {"ns/b": ("10.0.0.1",)})
    world.pools = [pool("p", "10.0.0.0/30", "fd00:8::/126"), world.pools[1]]
    world.put(svc("ns/b", 80, ip_family_policy="PreferDualStack", ip_families=("IPv4", "IPv6")))
    check(world, {"ns/b": ("10.0.0.1", "fd00:8::"), "ns/a": ("10.0.1.0", "fd00:9::")})


def test_require_dual_stack_holder_moves_when_its_pool_loses_a_family() -> None:
    world = World(pool("a", "10.0.0.0/30", "fd00:a::/126"), pool("b", "10.0.1.0/30", "fd00:b::/126"))
    world.put(svc("ns/r", 80, ip_family_policy="RequireDualStack"),
              svc("ns/p", 80, ip_family_policy="PreferDualStack", ip_families=("IPv4", "IPv6")))
    check(world, {"ns/p": ("10.0.0.0", "fd00:a::"), "ns/r": ("10.0.0.1", "fd00:a::1")})
    world.pools = [pool("a", "10.0.0.0/30"), world.pools[1]]
    check(world, {"ns/p": ("10.0.0.0",), "ns/r": ("10.0.1.0", "fd00:b::")},
          revoked={"ns/p": "pool a no longer contains fd00:a::",
                   "ns/r": "RequireDualStack: pool a has no free IPv6 address to pair with 10.0.0.1"})


def test_family_policy_change_revokes_the_extra_family() -> None:
    world = World(pool("p", "10.0.0.0/30", "fd00::/126"))
    world.put(svc("ns/a", 80, ip_family_policy="RequireDualStack"))
    check(world, {"ns/a": ("10.0.0.0", "fd00::")})
    world.put(svc("ns/a", 80))
    check(world, {"ns/a": ("10.0.0.0",)}, revoked={"ns/a": "ns/a is IPv4 single-stack"})


def test_an_ip_freed_behind_the_cursor_is_reused_first() -> None:
    # ns/a completes its dual stack first (the v4 cursor moves past .0, held by ns/b, to .1);
    # ns/a2 finds IPv4 full; then ns/b finds no IPv6 to pair with and gives .0 back: the pool
    # is no longer full, and ns/c must get .0.
    prefer = {"ip_family_policy": "PreferDualStack", "ip_families": ("IPv6", "IPv4")}
    world = World(pool("p", "10.0.0.0/31", "fd00::/127"))
    world.services.update({
        "ns/a": svc("ns/a", 80, ingress=("fd00::",), **prefer),
        "ns/a2": svc("ns/a2", 80, ingress=("fd00::1",), **prefer),
        "ns/b": svc("ns/b", 80, ip_family_policy="RequireDualStack", ingress=("10.0.0.0", "fd00::9")),
        "ns/c": svc("ns/c", 80),
    })
    check(world, {"ns/a": ("fd00::", "10.0.0.1"), "ns/a2": ("fd00::1",),
                  "ns/b": "pending: no free IPv4 and IPv6 address pair in p", "ns/c": ("10.0.0.0",)},
          revoked={"ns/b": "RequireDualStack: pool p has no free IPv6 address to pair with 10.0.0.0; "
                           "no pool contains fd00::9"})


def test_local_policy_services_share_only_with_the_same_pods() -> None:
    world = World(pool("p", "10.0.0.0/30"))
    local = {"external_traffic_policy": "Local", "share": "k"}
    world.put(svc("ns/a", 80, selector={"app": "a"}, ips="10.0.0.2", **local),
              svc("ns/b", 443, selector={"app": "b"}, ips="10.0.0.2", **local),
              svc("ns/c", 8080, ips="10.0.0.2", share="k"))
    check(world, {"ns/a": ("10.0.0.2",),
                  "ns/b": "pending: requested 10.0.0.2 is held by ns/a with externalTrafficPolicy Local and "
                          "other pods (selector app=a)",
                  "ns/c": "pending: requested 10.0.0.2 is held by ns/a with externalTrafficPolicy Local"})
    # b's pods change to a's: it may join; c, with Cluster policy, is still refused.
    world.put(svc("ns/b", 443, selector={"app": "a"}, ips="10.0.0.2", **local))
    check(world, {"ns/a": ("10.0.0.2",), "ns/b": ("10.0.0.2",), "ns/c": "pending: externalTrafficPolicy Local"})
    # a holder whose pods change while others share its IP loses it, visibly.
    world.put(svc("ns/b", 443, selector={"app": "z"}, **local))
    check(world, {"ns/a": ("10.0.0.2",), "ns/b": ("10.0.0.0",)},
          revoked={"ns/b": "10.0.0.2 is held by ns/a with externalTrafficPolicy Local and other pods"})


# --- revocation: pools removed, shrunk, rescoped ---------------------------------------------------


def test_removed_pool_revokes_and_reassigns_visibly() -> None:
    world = World(pool("home", "192.168.1.0/30"), pool("spare", "192.168.2.0/30"))
    world.put(svc("ns/a", 80, pin="home"), svc("ns/b", 80))
    check(world, {"ns/a": ("192.168.1.0",), "ns/b": ("192.168.1.1",)})
    world.pools = [pool("spare", "192.168.2.0/30")]
    result = world.step()
    assert result["ns/b"] == Allocation("ns/b", ("192.168.2.0",), "spare", None, ("192.168.1.1",),
                                        "pool home was removed")
    assert result["ns/a"] == Allocation("ns/a", (), None, "pool home does not exist", ("192.168.1.0",),
                                        "pool home was removed")


def test_shrunk_pool_revokes_only_what_it_lost() -> None:
    world = World(pool("home", "192.168.1.0/29"))
    world.put(*(svc(f"ns/s{i}", 80) for i in range(8)))
    check(world, {f"ns/s{i}": (f"192.168.1.{i}",) for i in range(8)})
    world.pools = [pool("home", "192.168.1.0/30", "192.168.1.10-192.168.1.11")]
    check(world, {"ns/s0": ("192.168.1.0",), "ns/s3": ("192.168.1.3",), "ns/s4": ("192.168.1.10",),
                  "ns/s5": ("192.168.1.11",), "ns/s6": "pending: pool exhausted",
                  "ns/s7": "pending: pool exhausted"},
          revoked={f"ns/s{i}": f"pool home no longer contains 192.168.1.{i}" for i in range(4, 8)})


def test_ip_without_pool_record() -> None:
    world = World(pool("p", "10.0.0.0/30"))
    world.services["ns/a"] = svc("ns/a", 80, ingress=("172.16.0.1",))  # set by someone else
    check(world, {"ns/a": ("10.0.0.0",)}, revoked={"ns/a": "no pool contains 172.16.0.1"})


def test_pool_no_longer_serving_the_namespace() -> None:
    world = World(pool("p", "10.0.0.0/30"), pool("q", "10.0.1.0/30"))
    world.put(svc("dev/a", 80, pin="p"))
    check(world, {"dev/a": ("10.0.0.0",)})
    world.pools = [pool("p", "10.0.0.0/30", serviceAllocation={"namespaces": ["prod"]}), world.pools[1]]
    world.put(svc("dev/a", 80))
    check(world, {"dev/a": ("10.0.1.0",)}, revoked={"dev/a": "pool p serves only namespaces prod"})


def test_pinning_to_another_pool_moves_the_service() -> None:
    world = World(pool("p", "10.0.0.0/30"), pool("q", "10.0.1.0/30"))
    world.put(svc("ns/a", 80))
    check(world, {"ns/a": ("10.0.0.0",)})
    world.put(svc("ns/a", 80, pin="q"))
    check(world, {"ns/a": ("10.0.1.0",)},
          revoked={"ns/a": "ns/a is pinned to pool q, and 10.0.0.0 is from pool p"})


def test_conflicting_holders_lower_key_wins() -> None:
    world = World(pool("p", "10.0.0.0/30"))
    world.services["ns/b"] = svc("ns/b", 80, ingress=("10.0.0.0",))
    world.services["ns/a"] = svc("ns/a", 80, ingress=("10.0.0.0",))
    check(world, {"ns/a": ("10.0.0.0",), "ns/b": ("10.0.0.1",)},
          revoked={"ns/b": "10.0.0.0 is held by ns/a, and ns/b has no sharing key"})


def test_ip_moved_to_a_renamed_pool_is_kept() -> None:
    world = World(pool("old", "10.0.0.0/30"))
    world.put(svc("ns/a", 80))
    check(world, {"ns/a": ("10.0.0.0",)})
    world.pools = [pool("new", "10.0.0.0/30")]
    result = world.step()
    assert result["ns/a"] == Allocation("ns/a", ("10.0.0.0",), "new")


# --- invalid Services that already hold IPs ------------------------------------------------------


def test_invalid_service_keeps_its_ip_and_nobody_takes_it() -> None:
    world = World(pool("p", "10.0.0.0/31"))
    world.put(svc("ns/a", 80))
    check(world, {"ns/a": ("10.0.0.0",)})
    world.put(svc("ns/a", 80, ips="10.0.0.1", load_balancer_ip="10.0.0.1"), svc("ns/b", 80), svc("ns/c", 80))
    result = world.step()
    assert result["ns/a"].ips == ("10.0.0.0",)
    assert result["ns/a"].warning is not None and "both spec.loadBalancerIP" in result["ns/a"].warning
    assert result["ns/b"].ips == ("10.0.0.1",)
    assert result["ns/c"].pending_reason == "pool exhausted: no free IPv4 address in p"
    # Fixed: the request is honoured again.
    world.put(svc("ns/a", 80))
    check(world, {"ns/a": ("10.0.0.0",)})


def test_invalid_service_without_ip_is_pending() -> None:
    world = World(pool("p", "10.0.0.0/31"))
    world.put(svc("ns/a", 80, ips="10.0.0.1", load_balancer_ip="10.0.0.1"))
    check(world, {"ns/a": "pending: keep one"})


# --- allocate() on hand-written requests ---------------------------------------------------------


@pytest.mark.parametrize(("request_", "reason"), [
    (ServiceRequest("ns/a", "ns", ip_families=("IPv5",)), "unknown IP family 'IPv5'"),
    (ServiceRequest("ns/a", "ns", ip_family_policy="Sometimes"), "unknown ipFamilyPolicy 'Sometimes'"),
    (ServiceRequest("ns/a", "ns", requested=("10.0.0.1", "10.0.0.2")), "two IPv4 addresses requested"),
    (ServiceRequest("ns/a", "ns", requested=("10.0.0.1", "fd00::1", "10.0.0.2")), "3 addresses requested"),
    (ServiceRequest("ns/a", "ns", invalid="broken"), "broken"),
])
def test_invalid_requests(request_: ServiceRequest, reason: str) -> None:
    [result] = allocate([pool("p", "10.0.0.0/30", "fd00::/126")], [request_], {})
    assert result.ips == ()
    assert result.pending_reason is not None and reason in result.pending_reason


def test_a_holder_that_turns_invalid_is_told_why_it_loses_its_ip() -> None:
    request = ServiceRequest("ns/a", "ns", current=("10.0.0.1",), ip_families=("IPv5",))
    [result] = allocate([pool("p", "10.0.0.0/30")], [request], {})
    assert result == Allocation("ns/a", (), None, "unknown IP family 'IPv5' (expected IPv4 or IPv6)",
                                ("10.0.0.1",), "unknown IP family 'IPv5' (expected IPv4 or IPv6)")


def test_large_ipv6_pool_is_cheap() -> None:
    pools = [pool("v6", "fd00::/64")]
    requests = [ServiceRequest(f"ns/s{i:04d}", "ns", ip_families=("IPv6",)) for i in range(1000)]
    result = allocate(pools, requests, {})
    assert result[-1].ips == ("fd00::3e7",)


def test_revoked_ips_are_reused_lowest_first() -> None:
    pools = [pool("p", "10.0.0.0/29")]
    holders = [ServiceRequest(f"ns/h{i}", "ns", current=(f"10.0.0.{i}",), requested=(f"10.0.0.{i + 4}",))
               for i in range(2)]
    newcomers = [ServiceRequest("ns/z", "ns")]
    result = {a.key: a for a in allocate(pools, [*holders, *newcomers], {})}
    assert result["ns/h0"].ips == ("10.0.0.4",) and result["ns/h0"].revoked == ("10.0.0.0",)
    assert result["ns/z"].ips == ("10.0.0.0",)  # freed by h0 in this same run


def test_pools_may_overlap_without_breaking_lookup() -> None:
    # Validation forbids overlapping pools; the allocator must still be correct without it.
    pools = [pool("b", "10.0.0.0/24"), pool("a", "10.0.0.128/25")]
    [result] = allocate(pools, [ServiceRequest("ns/a", "ns", requested=("10.0.0.200",))], {})
    assert result.pool == "a"


# --- loadBalancerClass ----------------------------------------------------------------------------


def test_load_balancer_class() -> None:
    services = [svc("ns/none", 80), svc("ns/ours", 80, load_balancer_class=LOADBALANCER_CLASS),
                svc("ns/theirs", 80, load_balancer_class="example.com/other")]
    requests, rejected = service_requests(services, [])
    assert [r.key for r in requests] == ["ns/none", "ns/ours"] and rejected == []
    requests, _ = service_requests(services, [], lb_class="example.com/other")
    assert [r.key for r in requests] == ["ns/none", "ns/theirs"]


# --- a quick scale check (the numbers are measured by a bench script, not here) --------------------


def test_ten_thousand_services_over_64_pools() -> None:
    pools = [pool(f"p{i:02d}", f"10.{i}.0.0/24") for i in range(64)]
    requests: Sequence[ServiceRequest] = [ServiceRequest(f"ns/s{i:05d}", "ns") for i in range(10_000)]
    result = allocate(pools, requests, {})
    assert all(a.ips for a in result)
    assert len({a.ips for a in result}) == 10_000
    assert result[-1] == Allocation("ns/s09999", ("10.39.0.15",), "p39")
    sticky = [r._replace(current=a.ips) for r, a in zip(requests, result, strict=True)]
    assert allocate(pools, sticky, {}) == result
